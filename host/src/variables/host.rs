//! Guest-facing variable interfaces: `wasi:config/store` (two versions) and Spin's
//! `variables` (2.0 sync, 3.0 async), all over one [`ComponentVariables`].

use super::{ComponentVariables, LookupError};
use crate::bindings::{config_2024_09_27, config_rc1, spin_v2, spin_v3};
use std::sync::Arc;
use wasmtime::Result;
use wasmtime::component::{Accessor, HasData, Linker};

pub struct VarsView<'a> {
    pub vars: &'a Arc<ComponentVariables>,
}

pub struct VarsData;

impl HasData for VarsData {
    type Data<'a> = VarsView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> VarsView<'_>,
) -> Result<()> {
    config_2024_09_27::wasi::config::store::add_to_linker::<T, VarsData>(linker, get)?;
    config_rc1::wasi::config::store::add_to_linker::<T, VarsData>(linker, get)?;
    spin_v2::fermyon::spin::variables::add_to_linker::<T, VarsData>(linker, get)?;
    spin_v3::spin::variables::variables::add_to_linker::<T, VarsData>(linker, get)?;
    Ok(())
}

impl config_2024_09_27::wasi::config::store::Host for VarsView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> Result<std::result::Result<Option<String>, config_2024_09_27::wasi::config::store::Error>>
    {
        Ok(Ok(self.vars.get(&key).ok()))
    }
    fn get_all(
        &mut self,
    ) -> Result<
        std::result::Result<Vec<(String, String)>, config_2024_09_27::wasi::config::store::Error>,
    > {
        Ok(Ok(self.vars.all()))
    }
}

impl config_rc1::wasi::config::store::Host for VarsView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> Result<std::result::Result<Option<String>, config_rc1::wasi::config::store::Error>> {
        Ok(Ok(self.vars.get(&key).ok()))
    }
    fn get_all(
        &mut self,
    ) -> Result<std::result::Result<Vec<(String, String)>, config_rc1::wasi::config::store::Error>>
    {
        Ok(Ok(self.vars.all()))
    }
}

impl spin_v2::fermyon::spin::variables::Host for VarsView<'_> {
    fn get(
        &mut self,
        name: String,
    ) -> Result<std::result::Result<String, spin_v2::fermyon::spin::variables::Error>> {
        use spin_v2::fermyon::spin::variables::Error;
        Ok(self.vars.get(&name).map_err(|e| match e {
            LookupError::InvalidName(m) => Error::InvalidName(m),
            LookupError::Undefined(m) => Error::Undefined(m),
        }))
    }
}

impl spin_v3::spin::variables::variables::Host for VarsView<'_> {}

impl<T: Send> spin_v3::spin::variables::variables::HostWithStore<T> for VarsData {
    async fn get(
        acc: &Accessor<T, Self>,
        name: String,
    ) -> std::result::Result<String, spin_v3::spin::variables::variables::Error> {
        use spin_v3::spin::variables::variables::Error;
        acc.with(|mut a| a.get().vars.get(&name))
            .map_err(|e| match e {
                LookupError::InvalidName(m) => Error::InvalidName(m),
                LookupError::Undefined(m) => Error::Undefined(m),
            })
    }
}
