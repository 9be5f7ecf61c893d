//! Guest-facing key-value interfaces, every version on the same [`KeyValueAccess`].

use super::{KeyValueAccess, KvError, OpenStore, Write, Written};
use crate::bindings::{keyvalue_draft, keyvalue_draft2, spin_v2, spin_v3};
use wasmtime::Result;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

/// Keys per page for `list-keys`.
const KEY_PAGE: usize = 1000;

/// What a key-value host call needs from the store data.
pub struct KvView<'a> {
    pub access: &'a KeyValueAccess,
    pub table: &'a mut ResourceTable,
}

/// [`HasData`] marker for linking the key-value interfaces.
pub struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

/// A `wasi:keyvalue/atomics.cas` handle: the value seen when it was made.
pub struct CasHandle {
    store: String,
    key: String,
    seen: Option<Vec<u8>>,
}

impl KvView<'_> {
    fn open_store(&mut self, label: &str) -> std::result::Result<Resource<OpenStore>, KvError> {
        let store = self.access.open(label)?;
        self.table
            .push(store)
            .map_err(|e| KvError::Backend(e.to_string()))
    }

    fn label(&self, store: &Resource<OpenStore>) -> Result<String> {
        Ok(self.table.get(store)?.label.clone())
    }
}

fn other(e: &KvError) -> String {
    e.to_string()
}

/// Adds every key-value interface version to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> Result<()> {
    keyvalue_draft2::wasi::keyvalue::store::add_to_linker::<T, KvData>(linker, get)?;
    keyvalue_draft2::wasi::keyvalue::atomics::add_to_linker::<T, KvData>(linker, get)?;
    keyvalue_draft2::wasi::keyvalue::batch::add_to_linker::<T, KvData>(linker, get)?;
    keyvalue_draft::wasi::keyvalue::store::add_to_linker::<T, KvData>(linker, get)?;
    keyvalue_draft::wasi::keyvalue::atomics::add_to_linker::<T, KvData>(linker, get)?;
    keyvalue_draft::wasi::keyvalue::batch::add_to_linker::<T, KvData>(linker, get)?;
    spin_v2::fermyon::spin::key_value::add_to_linker::<T, KvData>(linker, get)?;
    spin_v3::spin::key_value::key_value::add_to_linker::<T, KvData>(linker, get)?;
    Ok(())
}

// ---- wasi:keyvalue@0.2.0-draft2 -------------------------------------------------------

mod draft2 {
    use super::*;
    use keyvalue_draft2::wasi::keyvalue::{atomics, batch, store};

    impl KvView<'_> {
        /// A guest write, through the backend's (group-committing) queue.
        fn write(
            &self,
            label: &str,
            op: Write,
        ) -> impl Future<Output = std::result::Result<Written, store::Error>> + Send + 'static
        {
            let written = self.access.backend().write(label, op);
            async move { written.await.map_err(err) }
        }
    }

    pub(super) fn err(e: KvError) -> store::Error {
        match e {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::AccessDenied => store::Error::AccessDenied,
            e => store::Error::Other(other(&e)),
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
}

// ---- wasi:keyvalue@0.2.0-draft (wasmtime's) -------------------------------------------

mod draft {
    use super::*;
    use keyvalue_draft::wasi::keyvalue::{atomics, batch, store};

    fn err(e: KvError) -> store::Error {
        match e {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::AccessDenied => store::Error::AccessDenied,
            e => store::Error::Other(other(&e)),
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
                    break crate::kv::KeyPage {
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
}

// ---- fermyon:spin/key-value@2.0.0 -------------------------------------------------------

mod spin2 {
    use super::*;
    use spin_v2::fermyon::spin::key_value as kv;

    fn err(e: KvError) -> kv::Error {
        match e {
            KvError::NoSuchStore => kv::Error::NoSuchStore,
            KvError::AccessDenied => kv::Error::AccessDenied,
            e => kv::Error::Other(other(&e)),
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
}

/// Most keys `get-keys` (Spin's key-value, which has no paging) returns: a store with
/// more is an error rather than unbounded host memory.
pub const MAX_ALL_KEYS: usize = 100_000;

fn all_keys(access: &KeyValueAccess, label: &str) -> std::result::Result<Vec<String>, KvError> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = access
            .backend()
            .list_keys(label, cursor.as_deref(), KEY_PAGE)?;
        keys.extend(page.keys);
        if keys.len() > MAX_ALL_KEYS {
            return Err(KvError::Backend(format!(
                "the store has more than {MAX_ALL_KEYS} keys; list them with wasi:keyvalue list-keys"
            )));
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(keys),
        }
    }
}

// ---- spin:key-value/key-value@3.0.0 (async) -------------------------------------------

mod spin3 {
    use super::*;
    use spin_v3::spin::key_value::key_value as kv;

    fn err(e: KvError) -> kv::Error {
        match e {
            KvError::NoSuchStore => kv::Error::NoSuchStore,
            KvError::AccessDenied => kv::Error::AccessDenied,
            e => kv::Error::Other(other(&e)),
        }
    }

    /// Runs `f` against the backend for store `s`: a table error is a guest bug.
    fn with_store<T, R>(
        acc: &Accessor<T, KvData>,
        s: &Resource<kv::Store>,
        f: impl FnOnce(&KeyValueAccess, &str) -> std::result::Result<R, KvError>,
    ) -> std::result::Result<R, kv::Error> {
        acc.with(|mut a| {
            let view = a.get();
            let label = view
                .table
                .get(s)
                .map_err(|e| kv::Error::Other(e.to_string()))?
                .label
                .clone();
            f(view.access, &label).map_err(err)
        })
    }

    impl kv::Host for KvView<'_> {}

    impl kv::HostStore for KvView<'_> {
        fn drop(&mut self, s: Resource<kv::Store>) -> Result<()> {
            self.table.delete(s)?;
            Ok(())
        }
    }

    impl<T: Send> kv::HostStoreWithStore<T> for KvData {
        async fn open(
            acc: &Accessor<T, Self>,
            label: String,
        ) -> std::result::Result<Resource<kv::Store>, kv::Error> {
            acc.with(|mut a| a.get().open_store(&label).map_err(err))
        }
        async fn get(
            acc: &Accessor<T, Self>,
            s: Resource<kv::Store>,
            key: String,
        ) -> std::result::Result<Option<Vec<u8>>, kv::Error> {
            with_store(acc, &s, |kv, label| kv.backend().get(label, &key))
        }
        async fn set(
            acc: &Accessor<T, Self>,
            s: Resource<kv::Store>,
            key: String,
            value: Vec<u8>,
        ) -> std::result::Result<(), kv::Error> {
            with_store(acc, &s, |kv, label| kv.backend().set(label, &key, &value))
        }
        async fn delete(
            acc: &Accessor<T, Self>,
            s: Resource<kv::Store>,
            key: String,
        ) -> std::result::Result<(), kv::Error> {
            with_store(acc, &s, |kv, label| kv.backend().delete(label, &key))
        }
        async fn exists(
            acc: &Accessor<T, Self>,
            s: Resource<kv::Store>,
            key: String,
        ) -> std::result::Result<bool, kv::Error> {
            with_store(acc, &s, |kv, label| kv.backend().exists(label, &key))
        }
        async fn get_keys(
            acc: &Accessor<T, Self>,
            s: Resource<kv::Store>,
        ) -> (
            StreamReader<String>,
            FutureReader<std::result::Result<(), kv::Error>>,
        ) {
            let listed = with_store(acc, &s, all_keys);
            acc.with(|mut a| {
                let (keys, outcome) = match listed {
                    Ok(keys) => (keys, Ok(())),
                    Err(e) => (Vec::new(), Err(e)),
                };
                let stream =
                    StreamReader::new(&mut a, keys).expect("concurrency support is enabled");
                let future =
                    FutureReader::new(&mut a, async move { Ok::<_, wasmtime::Error>(outcome) })
                        .expect("concurrency support is enabled");
                (stream, future)
            })
        }
    }
}
