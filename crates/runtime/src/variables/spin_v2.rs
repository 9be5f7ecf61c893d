//! `fermyon:spin/variables@2.0.0` (Spin 2 and 3 apps).

use super::{LookupError, VarsData, VarsView};
use bindings::fermyon::spin::variables;
use wasmtime::Result;
use wasmtime::component::Linker;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world vars { import fermyon:spin/variables@2.0.0; }",
        path: ["wit/spin-v2"],
        imports: { default: trappable },
    });
}

pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> VarsView<'_>,
) -> Result<()> {
    variables::add_to_linker::<T, VarsData>(linker, get)
}

impl variables::Host for VarsView<'_> {
    fn get(&mut self, name: String) -> Result<std::result::Result<String, variables::Error>> {
        use variables::Error;
        Ok(self.vars.get(&name).map_err(|e| match e {
            LookupError::InvalidName(m) => Error::InvalidName(m),
            LookupError::Undefined(m) => Error::Undefined(m),
        }))
    }
}
