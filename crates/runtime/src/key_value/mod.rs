//! Key-value for guests: every interface version a guest may import, one file each, all
//! over one [`KeyValueAccess`] (the backend plus the stores the manifest grants).
//!
//! A store label names a separate namespace; a component can open only the labels its
//! manifest grants (`key_value_stores`), anything else is `access-denied`.

mod spin_v2;
mod spin_v3;
mod wasi_draft;
mod wasi_draft2;

use std::collections::HashSet;
use std::sync::Arc;
use tiktok_edge_kv::{KeyValueBackend, KvError};
use wasmtime::Result;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// Keys per page for `list-keys`.
const KEY_PAGE: usize = 1000;

/// A component's view of key-value: the backend plus the labels it was granted.
#[derive(Clone)]
pub struct KeyValueAccess {
    backend: Arc<dyn KeyValueBackend>,
    granted: Arc<HashSet<String>>,
}

impl KeyValueAccess {
    pub fn new(
        backend: Arc<dyn KeyValueBackend>,
        granted: impl IntoIterator<Item = String>,
    ) -> Self {
        KeyValueAccess {
            backend,
            granted: Arc::new(granted.into_iter().collect()),
        }
    }

    /// Checks a label before a store handle is given to the guest.
    pub fn open(&self, label: &str) -> Result<OpenStore, KvError> {
        if self.granted.contains(label) {
            Ok(OpenStore {
                label: label.to_string(),
            })
        } else {
            Err(KvError::AccessDenied)
        }
    }

    pub fn backend(&self) -> &dyn KeyValueBackend {
        &*self.backend
    }
}

/// A store handle held in the guest's resource table.
#[derive(Debug, Clone)]
pub struct OpenStore {
    pub label: String,
}

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

/// Adds every key-value interface version to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> Result<()> {
    wasi_draft2::add_to_linker(linker, get)?;
    wasi_draft::add_to_linker(linker, get)?;
    spin_v2::add_to_linker(linker, get)?;
    spin_v3::add_to_linker(linker, get)
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
