//! The key-value seam: one backend trait behind every key-value interface a guest may
//! import (`wasi:keyvalue` draft and draft2, Spin's 2.0 and 3.0 key-value), the writes a
//! guest asks for as values, and the limits every backend enforces alike.
//!
//! A backend serves many named stores (separate namespaces); which of them a component
//! may open is the runtime's business (`tiktok-edge-runtime`).

use std::pin::Pin;

/// Largest key a guest may use, in bytes (Spin's limit too).
pub const MAX_KEY_BYTES: usize = 255;
/// Largest value a guest may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("no such store")]
    NoSuchStore,
    #[error("access to this store is not granted to the component")]
    AccessDenied,
    #[error("key longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong,
    #[error("value larger than {MAX_VALUE_BYTES} bytes")]
    ValueTooLarge,
    #[error("value at key is not a 64-bit counter")]
    NotACounter,
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// A key and its value, if it has one.
pub type KeyValue = (String, Option<Vec<u8>>);

/// A page of keys and the cursor for the next page (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// A write a guest asks for, as one value so it can wait in a queue for a group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Set {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    Increment {
        key: String,
        delta: i64,
    },
    CompareAndSwap {
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
}

impl Write {
    /// The keys this write may change.
    pub fn keys(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Write::Set { key, .. }
            | Write::Delete { key }
            | Write::Increment { key, .. }
            | Write::CompareAndSwap { key, .. } => Box::new(std::iter::once(key.as_str())),
            Write::SetMany(pairs) => Box::new(pairs.iter().map(|(k, _)| k.as_str())),
            Write::DeleteMany(keys) => Box::new(keys.iter().map(String::as_str)),
        }
    }

    /// The keys this write may create (all but those of deletes).
    pub fn added_keys(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Write::Delete { .. } | Write::DeleteMany(_) => Box::new(std::iter::empty()),
            _ => self.keys(),
        }
    }

    /// The key and value limits, checked before the write is queued.
    pub fn check(&self) -> Result<(), KvError> {
        match self {
            Write::Set { key, value } => check_key(key).and(check_value(value)),
            Write::Delete { key } | Write::Increment { key, .. } => check_key(key),
            Write::CompareAndSwap { key, new, .. } => check_key(key).and(check_value(new)),
            Write::SetMany(pairs) => pairs
                .iter()
                .try_for_each(|(k, v)| check_key(k).and(check_value(v))),
            Write::DeleteMany(keys) => keys.iter().try_for_each(|k| check_key(k)),
        }
    }
}

/// What a [`Write`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The counter's new value (`Increment`).
    Counter(i64),
    /// Whether the compare-and-swap took place.
    Swapped(bool),
}

impl Written {
    /// The error for an answer of the wrong kind (a backend bug, not the guest's).
    pub fn unexpected(self) -> KvError {
        KvError::Backend(format!("unexpected write answer {self:?}"))
    }
}

/// A write in flight: resolves once it is durable.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<Written, KvError>> + Send>>;

/// Applies `op` with the backend's synchronous methods.
pub fn apply_sync<B: KeyValueBackend + ?Sized>(
    backend: &B,
    store: &str,
    op: Write,
) -> Result<Written, KvError> {
    match op {
        Write::Set { key, value } => backend.set(store, &key, &value).map(|()| Written::Done),
        Write::Delete { key } => backend.delete(store, &key).map(|()| Written::Done),
        Write::Increment { key, delta } => {
            backend.increment(store, &key, delta).map(Written::Counter)
        }
        Write::CompareAndSwap { key, expected, new } => backend
            .compare_and_swap(store, &key, expected.as_deref(), &new)
            .map(Written::Swapped),
        Write::SetMany(pairs) => backend.set_many(store, &pairs).map(|()| Written::Done),
        Write::DeleteMany(keys) => backend.delete_many(store, &keys).map(|()| Written::Done),
    }
}

/// Where key-value data lives. Implementations must be safe to share between requests.
pub trait KeyValueBackend: Send + Sync + 'static {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, store: &str, key: &str) -> Result<(), KvError>;
    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError>;
    /// Keys in ascending order after `cursor` (exclusive), at most `limit`.
    fn list_keys(
        &self,
        store: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError>;
    /// Adds `delta` to the little-endian i64 at `key` (0 when absent), atomically.
    fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Sets `key` to `new` only if its current value is `expected` (`None` = absent).
    fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError>;
    fn get_many(&self, store: &str, keys: &[String]) -> Result<Vec<KeyValue>, KvError>;
    /// Sets all pairs in one transaction.
    fn set_many(&self, store: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError>;
    fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError>;

    /// Applies `op`; the future resolves once it is durable. A guest waits on it without
    /// holding a thread, so a backend can commit the writes of concurrent requests
    /// together (the SQLite backend does). By default the synchronous method runs now.
    fn write(&self, store: &str, op: Write) -> WriteFuture {
        let result = apply_sync(self, store, op);
        Box::pin(std::future::ready(result))
    }
}

pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        Err(KvError::KeyTooLong)
    } else {
        Ok(())
    }
}

pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        Err(KvError::ValueTooLarge)
    } else {
        Ok(())
    }
}
