//! `wasi:keyvalue@0.2.0-draft2` (Spin 3's, and what our components import). Writes wait
//! for the backend's (group) commit without holding a thread.

use super::{CasHandle, KEY_PAGE, KvData, KvView};
use bindings::wasi::keyvalue::{atomics, batch, store};
use tiktok_edge_kv::{KvError, Write, Written};
use wasmtime::Result;
use wasmtime::component::{Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world kv { import wasi:keyvalue/store@0.2.0-draft2; import wasi:keyvalue/atomics@0.2.0-draft2; import wasi:keyvalue/batch@0.2.0-draft2; }",
        path: ["../../wit/deps/keyvalue@0.2.0-draft2"],
        with: {
            "wasi:keyvalue/store.bucket": crate::key_value::OpenStore,
            "wasi:keyvalue/atomics.cas": crate::key_value::CasHandle,
        },
        // Writes wait for the store's group commit without holding a thread.
        imports: {
            "wasi:keyvalue/store.[method]bucket.set": async | trappable,
            "wasi:keyvalue/store.[method]bucket.delete": async | trappable,
            "wasi:keyvalue/atomics.increment": async | trappable,
            "wasi:keyvalue/atomics.swap": async | trappable,
            "wasi:keyvalue/batch.set-many": async | trappable,
            "wasi:keyvalue/batch.delete-many": async | trappable,
            default: trappable,
        },
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

impl KvView<'_> {
    /// A guest write, through the backend's (group-committing) queue.
    fn write(
        &self,
        label: &str,
        op: Write,
    ) -> impl Future<Output = std::result::Result<Written, store::Error>> + Send + 'static {
        let written = self.access.backend().write(label, op);
        async move { written.await.map_err(err) }
    }
}

pub(super) fn err(e: KvError) -> store::Error {
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
    async fn set(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self
            .write(&label, Write::Set { key, value })
            .await
            .map(drop))
    }
    async fn delete(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self.write(&label, Write::Delete { key }).await.map(drop))
    }
    fn exists(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
    ) -> Result<std::result::Result<bool, store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().exists(&label, &key).map_err(err))
    }
    fn list_keys(
        &mut self,
        b: Resource<store::Bucket>,
        cursor: Option<String>,
    ) -> Result<std::result::Result<store::KeyResponse, store::Error>> {
        let label = self.label(&b)?;
        Ok(self
            .access
            .backend()
            .list_keys(&label, cursor.as_deref(), KEY_PAGE)
            .map(|p| store::KeyResponse {
                keys: p.keys,
                cursor: p.cursor,
            })
            .map_err(err))
    }
    fn drop(&mut self, b: Resource<store::Bucket>) -> Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
        delta: i64,
    ) -> Result<std::result::Result<i64, store::Error>> {
        let label = self.label(&b)?;
        Ok(
            match self.write(&label, Write::Increment { key, delta }).await {
                Ok(Written::Counter(n)) => Ok(n),
                Ok(other) => Err(err(other.unexpected())),
                Err(e) => Err(e),
            },
        )
    }
    async fn swap(
        &mut self,
        cas: Resource<atomics::Cas>,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        let op = Write::CompareAndSwap {
            key: handle.key.clone(),
            expected: handle.seen,
            new: value,
        };
        let swapped = self.access.backend().write(&handle.store, op).await;
        match swapped {
            Ok(Written::Swapped(true)) => Ok(Ok(())),
            Ok(Written::Swapped(false)) => {
                let seen = match self.access.backend().get(&handle.store, &handle.key) {
                    Ok(seen) => seen,
                    Err(e) => return Ok(Err(atomics::CasError::StoreError(err(e)))),
                };
                let fresh = self.table.push(CasHandle {
                    store: handle.store,
                    key: handle.key,
                    seen,
                })?;
                Ok(Err(atomics::CasError::CasFailed(fresh)))
            }
            Ok(other) => Ok(Err(atomics::CasError::StoreError(err(other.unexpected())))),
            Err(e) => Ok(Err(atomics::CasError::StoreError(err(e)))),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    fn new(
        &mut self,
        b: Resource<store::Bucket>,
        key: String,
    ) -> Result<std::result::Result<Resource<atomics::Cas>, store::Error>> {
        let label = self.label(&b)?;
        let seen = match self.access.backend().get(&label, &key) {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(err(e))),
        };
        Ok(Ok(self.table.push(CasHandle {
            store: label,
            key,
            seen,
        })?))
    }
    fn current(
        &mut self,
        cas: Resource<atomics::Cas>,
    ) -> Result<std::result::Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }
    fn drop(&mut self, cas: Resource<atomics::Cas>) -> Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    fn get_many(
        &mut self,
        b: Resource<store::Bucket>,
        keys: Vec<String>,
    ) -> Result<std::result::Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        let label = self.label(&b)?;
        Ok(self.access.backend().get_many(&label, &keys).map_err(err))
    }
    async fn set_many(
        &mut self,
        b: Resource<store::Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self.write(&label, Write::SetMany(pairs)).await.map(drop))
    }
    async fn delete_many(
        &mut self,
        b: Resource<store::Bucket>,
        keys: Vec<String>,
    ) -> Result<std::result::Result<(), store::Error>> {
        let label = self.label(&b)?;
        Ok(self.write(&label, Write::DeleteMany(keys)).await.map(drop))
    }
}
