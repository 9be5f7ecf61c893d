//! `wasi:keyvalue@0.2.0-draft2` with errors mapped to [`ApiError`].

use crate::ApiError;
use crate::wasi::keyvalue::{atomics, batch, store};

/// An open key-value bucket.
pub struct Store {
    bucket: store::Bucket,
}

fn storage(e: store::Error) -> ApiError {
    match e {
        store::Error::NoSuchStore => ApiError::Storage("no such key-value store".into()),
        store::Error::AccessDenied => {
            ApiError::Storage("key-value store not granted to this component".into())
        }
        store::Error::Other(m) => ApiError::Storage(m),
    }
}

impl Store {
    /// Opens a store granted to this component in the manifest (`key_value_stores`).
    pub fn open(name: &str) -> Result<Self, ApiError> {
        store::open(name)
            .map(|bucket| Store { bucket })
            .map_err(storage)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.bucket.get(key).map_err(storage)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.bucket.set(key, value).map_err(storage)
    }

    pub fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.bucket.delete(key).map_err(storage)
    }

    /// Adds `delta` to the number stored at `key` (0 if absent) atomically; returns the new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError> {
        atomics::increment(&self.bucket, key, delta).map_err(storage)
    }
}

impl Store {
    /// Writes `new` only if the value is still `expected` (`None` = absent).
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ApiError> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(storage)?;
        if cas.current().map_err(storage)?.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(storage(e)),
        }
    }
}

impl tiktok_edge_core::platform::kv::KeyValue for Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Store::get(self, key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        Store::set(self, key, value)
    }

    fn delete(&self, key: &str) -> Result<(), ApiError> {
        Store::delete(self, key)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError> {
        Store::increment(self, key, delta)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ApiError> {
        Store::compare_and_swap(self, key, expected, new)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
        let found = batch::get_many(&self.bucket, keys).map_err(storage)?;
        // Hosts may answer in any order or leave out absent keys: match by key.
        let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> =
            found.into_iter().collect();
        Ok(keys.iter().map(|k| by_key.remove(k).flatten()).collect())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), ApiError> {
        batch::set_many(&self.bucket, entries).map_err(storage)
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), ApiError> {
        batch::delete_many(&self.bucket, keys).map_err(storage)
    }
}
