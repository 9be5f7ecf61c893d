//! `spin:variables/variables@3.0.0` (Spin 4, spin-sdk 7): async functions.

use super::{LookupError, VarsData, VarsView};
use bindings::spin::variables::variables;
use wasmtime::Result;
use wasmtime::component::{Accessor, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world vars { import spin:variables/variables@3.0.0; }",
        path: ["wit/spin-variables-v3"],
    });
}

pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> VarsView<'_>,
) -> Result<()> {
    variables::add_to_linker::<T, VarsData>(linker, get)
}

impl variables::Host for VarsView<'_> {}

impl<T: Send> variables::HostWithStore<T> for VarsData {
    async fn get(
        acc: &Accessor<T, Self>,
        name: String,
    ) -> std::result::Result<String, variables::Error> {
        use variables::Error;
        acc.with(|mut a| a.get().vars.get(&name))
            .map_err(|e| match e {
                LookupError::InvalidName(m) => Error::InvalidName(m),
                LookupError::Undefined(m) => Error::Undefined(m),
            })
    }
}
