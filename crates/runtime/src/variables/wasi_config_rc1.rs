//! `wasi:config/store@0.2.0-rc.1`.

use super::{VarsData, VarsView};
use bindings::wasi::config::store;
use wasmtime::Result;
use wasmtime::component::Linker;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world config { import wasi:config/store@0.2.0-rc.1; }",
        path: ["wit/config-rc1"],
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
