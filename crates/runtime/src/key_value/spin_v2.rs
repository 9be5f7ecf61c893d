//! `fermyon:spin/key-value@2.0.0` (Spin 2 and 3 apps).

use super::{KvData, KvView, all_keys};
use bindings::fermyon::spin::key_value as kv;
use tiktok_edge_kv::KvError;
use wasmtime::Result;
use wasmtime::component::{Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world kv { import fermyon:spin/key-value@2.0.0; }",
        path: ["wit/spin-v2"],
        with: { "fermyon:spin/key-value.store": crate::key_value::OpenStore },
        imports: { default: trappable },
    });
}

pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> Result<()> {
    kv::add_to_linker::<T, KvData>(linker, get)
}

fn err(e: KvError) -> kv::Error {
    match e {
        KvError::NoSuchStore => kv::Error::NoSuchStore,
        KvError::AccessDenied => kv::Error::AccessDenied,
        e => kv::Error::Other(e.to_string()),
    }
}

impl kv::Host for KvView<'_> {}

impl kv::HostStore for KvView<'_> {
    fn open(
        &mut self,
        label: String,
    ) -> Result<std::result::Result<Resource<kv::Store>, kv::Error>> {
        Ok(self.open_store(&label).map_err(err))
    }
    fn get(
        &mut self,
        s: Resource<kv::Store>,
        key: String,
    ) -> Result<std::result::Result<Option<Vec<u8>>, kv::Error>> {
        let label = self.label(&s)?;
        Ok(self.access.backend().get(&label, &key).map_err(err))
    }
    fn set(
        &mut self,
        s: Resource<kv::Store>,
        key: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), kv::Error>> {
        let label = self.label(&s)?;
        Ok(self.access.backend().set(&label, &key, &value).map_err(err))
    }
    fn delete(
        &mut self,
        s: Resource<kv::Store>,
        key: String,
    ) -> Result<std::result::Result<(), kv::Error>> {
        let label = self.label(&s)?;
        Ok(self.access.backend().delete(&label, &key).map_err(err))
    }
    fn exists(
        &mut self,
        s: Resource<kv::Store>,
        key: String,
    ) -> Result<std::result::Result<bool, kv::Error>> {
        let label = self.label(&s)?;
        Ok(self.access.backend().exists(&label, &key).map_err(err))
    }
    fn get_keys(
        &mut self,
        s: Resource<kv::Store>,
    ) -> Result<std::result::Result<Vec<String>, kv::Error>> {
        let label = self.label(&s)?;
        Ok(all_keys(self.access, &label).map_err(err))
    }
    fn drop(&mut self, s: Resource<kv::Store>) -> Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}
