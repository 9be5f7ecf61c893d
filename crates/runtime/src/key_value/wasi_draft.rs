//! `wasi:keyvalue@0.2.0-draft` (what `wasmtime serve` speaks).

use super::{KEY_PAGE, KvData, KvView};
use bindings::wasi::keyvalue::{atomics, batch, store};
use tiktok_edge_kv::{KeyPage, KvError};
use wasmtime::Result;
use wasmtime::component::{Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world kv { import wasi:keyvalue/store@0.2.0-draft; import wasi:keyvalue/atomics@0.2.0-draft; import wasi:keyvalue/batch@0.2.0-draft; }",
        path: ["wit/keyvalue-draft"],
        with: { "wasi:keyvalue/store.bucket": crate::key_value::OpenStore },
        imports: { default: trappable },
    });
}

pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> Result<()> {
    store::add_to_linker::<T, KvData>(linker, get)?;
    atomics::add_to_linker::<T, KvData>(linker, get)?;
    batch::add_to_linker::<T, KvData>(linker, get)
}

fn err(e: KvError) -> store::Error {
    match e {
        KvError::NoSuchStore => store::Error::NoSuchStore,
        KvError::AccessDenied => store::Error::AccessDenied,
        e => store::Error::Other(e.to_string()),
    }
}

impl store::Host for KvView<'_> {
    fn open(
        &mut self,
        identifier: String,
    ) -> Result<std::result::Result<Resource<store::Bucket>, store::Error>> {
        Ok(self.open_store(&identifier).map_err(err))
    }
}

impl store::HostBucket for KvView<'_> {
    fn get(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
    ) -> Result<std::result::Result<Option<Vec<u8>>, store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().get(&label, &key).map_err(err))
    }
    fn set(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().set(&label, &key, &value).map_err(err))
    }
    fn delete(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().delete(&label, &key).map_err(err))
    }
    fn exists(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
    ) -> Result<std::result::Result<bool, store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().exists(&label, &key).map_err(err))
    }
    /// This version's cursor is a numeric offset into the ordered keys.
    fn list_keys(
        &mut self,
        b: Resource<store::Bucket>,
        cursor: Option<u64>,
    ) -> Result<std::result::Result<store::KeyResponse, store::Error>> {
        let label = self.label(&b)?;
        // Walk the ordered keys a page at a time up to the offset: memory stays bounded
        // whatever offset a guest passes.
        let offset = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let mut skipped = 0usize;
        let mut after: Option<String> = None;
        let page = loop {
            let want = (offset - skipped).min(KEY_PAGE);
            let page = match self.access.backend().list_keys(
                &label,
                after.as_deref(),
                if want == 0 { KEY_PAGE } else { want },
            ) {
                Ok(p) => p,
                Err(e) => return Ok(Err(err(e))),
            };
            if skipped == offset {
                break page;
            }
            skipped += page.keys.len();
            after = page.keys.last().cloned();
            if page.cursor.is_none() {
                break KeyPage {
                    keys: Vec::new(),
                    cursor: None,
                };
            }
        };
        let keys = page.keys;
        let cursor = page.cursor.map(|_| (offset + keys.len()) as u64);
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }
    fn drop(&mut self, b: Resource<store::Bucket>) -> Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    fn increment(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
        delta: u64,
    ) -> Result<std::result::Result<u64, store::Error>> {
        let label = self.label(&b)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(store::Error::Other(
                "delta larger than i64::MAX".into(),
            )));
        };
        Ok(self
            .access
            .backend()
            .increment(&label, &key, delta)
            .map(|v| v as u64)
            .map_err(err))
    }
}

impl batch::Host for KvView<'_> {
    fn get_many(
        &mut self,
        b: Resource<store::Bucket>,
        keys: Vec<String>,
    ) -> Result<std::result::Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let label = self.label(&b)?;
        Ok(self
            .access
            .backend()
            .get_many(&label, &keys)
            .map(|pairs| pairs.into_iter().map(|(k, v)| v.map(|v| (k, v))).collect())
            .map_err(err))
    }
    fn set_many(
        &mut self,
        b: Resource<store::Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().set_many(&label, &pairs).map_err(err))
    }
    fn delete_many(
        &mut self,
        b: Resource<store::Bucket>,
        keys: Vec<String>,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self
            .access
            .backend()
            .delete_many(&label, &keys)
            .map_err(err))
    }
}
