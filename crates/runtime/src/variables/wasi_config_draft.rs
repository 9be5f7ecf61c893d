//! `wasi:config/store@0.2.0-draft-2024-09-27` (what Spin 3 and our components import).

use super::{VarsData, VarsView};
use bindings::wasi::config::store;
use wasmtime::Result;
use wasmtime::component::Linker;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world config { import wasi:config/store@0.2.0-draft-2024-09-27; }",
        path: ["../../wit/deps/config@0.2.0-draft-2024-09-27"],
        imports: { default: trappable },
    });
}

pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> VarsView<'_>,
) -> Result<()> {
    store::add_to_linker::<T, VarsData>(linker, get)
}

impl store::Host for VarsView<'_> {
    fn get(&mut self, key: String) -> Result<std::result::Result<Option<String>, store::Error>> {
        Ok(Ok(self.vars.get(&key).ok()))
    }
    fn get_all(&mut self) -> Result<std::result::Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.vars.all()))
    }
}
