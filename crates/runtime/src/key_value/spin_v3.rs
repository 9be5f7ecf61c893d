//! `spin:key-value/key-value@3.0.0` (Spin 4, spin-sdk 7): async functions.

use super::{KeyValueAccess, KvData, KvView, all_keys};
use bindings::spin::key_value::key_value as kv;
use tiktok_edge_kv::KvError;
use wasmtime::Result;
use wasmtime::component::{Accessor, FutureReader, Linker, Resource, StreamReader};

mod bindings {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world kv { import spin:key-value/key-value@3.0.0; }",
        path: ["wit/spin-key-value-v3"],
        with: { "spin:key-value/key-value.store": crate::key_value::OpenStore },
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
            let stream = StreamReader::new(&mut a, keys).expect("concurrency support is enabled");
            let future =
                FutureReader::new(&mut a, async move { Ok::<_, wasmtime::Error>(outcome) })
                    .expect("concurrency support is enabled");
            (stream, future)
        })
    }
}
