//! The key-value store as core sees it: a small trait the guest implements over
//! `wasi:keyvalue` and tests implement in memory.
//!
//! Lists of ids (an organization's API keys, its connections) are JSON documents updated
//! with compare-and-swap, so two requests adding at once never lose one another's entry.

use crate::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// What core needs of a key-value bucket (`wasi:keyvalue` store + atomics).
pub trait KeyValue {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError>;
    fn delete(&self, key: &str) -> Result<(), ApiError>;
    /// Adds `delta` atomically to the number at `key` (0 when absent); returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError>;
    /// Writes `new` only if the value is still `expected` (`None` = absent); `false` if it changed.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ApiError>;

    /// Values of several keys at once (`wasi:keyvalue/batch`), in the order asked.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Writes several keys at once; hosts may commit them together.
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), ApiError> {
        entries.iter().try_for_each(|(k, v)| self.set(k, v))
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), ApiError> {
        keys.iter().try_for_each(|k| self.delete(k))
    }
}

/// How often a compare-and-swap update is retried before giving up under contention.
const CAS_ATTEMPTS: usize = 32;

/// Reads and decodes a JSON value; a value that does not decode is a storage error.
pub fn get_json<T: DeserializeOwned>(kv: &dyn KeyValue, key: &str) -> Result<Option<T>, ApiError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::Storage(format!("stored value at {key} is unreadable: {e}"))),
    }
}

pub fn set_json<T: Serialize>(kv: &dyn KeyValue, key: &str, value: &T) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    kv.set(key, &bytes)
}

/// Writes `value` only if nothing is stored at `key` yet; `false` if something is.
pub fn create_json<T: Serialize>(
    kv: &dyn KeyValue,
    key: &str,
    value: &T,
) -> Result<bool, ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    kv.compare_and_swap(key, None, &bytes)
}

/// Applies `change` to the JSON value at `key` atomically (compare-and-swap, retried).
/// `change` gets `None` when nothing is stored; returning `Ok(None)` leaves it unchanged.
pub fn update_json<T, R>(
    kv: &dyn KeyValue,
    key: &str,
    mut change: impl FnMut(Option<T>) -> Result<(Option<T>, R), ApiError>,
) -> Result<R, ApiError>
where
    T: Serialize + DeserializeOwned,
{
    for _ in 0..CAS_ATTEMPTS {
        let current = kv.get(key)?;
        let decoded = match &current {
            None => None,
            Some(bytes) => Some(serde_json::from_slice(bytes).map_err(|e| {
                ApiError::Storage(format!("stored value at {key} is unreadable: {e}"))
            })?),
        };
        let (next, result) = change(decoded)?;
        let Some(next) = next else {
            return Ok(result);
        };
        let bytes = serde_json::to_vec(&next).map_err(|e| ApiError::Internal(e.to_string()))?;
        if kv.compare_and_swap(key, current.as_deref(), &bytes)? {
            return Ok(result);
        }
    }
    Err(ApiError::Storage(format!(
        "{key} is changing too often; try again"
    )))
}

/// A set of ids stored as one JSON list at `key`.
pub struct IdIndex<'a> {
    kv: &'a dyn KeyValue,
    key: String,
}

impl<'a> IdIndex<'a> {
    pub fn new(kv: &'a dyn KeyValue, key: impl Into<String>) -> Self {
        IdIndex {
            kv,
            key: key.into(),
        }
    }

    pub fn list(&self) -> Result<Vec<String>, ApiError> {
        Ok(get_json::<BTreeSet<String>>(self.kv, &self.key)?
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    pub fn insert(&self, id: &str) -> Result<(), ApiError> {
        update_json(self.kv, &self.key, |ids: Option<BTreeSet<String>>| {
            let mut ids = ids.unwrap_or_default();
            Ok((ids.insert(id.to_string()).then_some(ids), ()))
        })
    }

    pub fn remove(&self, id: &str) -> Result<(), ApiError> {
        update_json(self.kv, &self.key, |ids: Option<BTreeSet<String>>| {
            let mut ids = ids.unwrap_or_default();
            Ok((ids.remove(id).then_some(ids), ()))
        })
    }
}

/// An in-memory [`KeyValue`] for tests and native benchmarks.
#[derive(Default)]
pub struct MemoryKv {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored key and value, for tests that inspect what was written.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl KeyValue for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.entries.lock().unwrap().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.entries
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.entries.lock().unwrap().remove(key);
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError> {
        let mut entries = self.entries.lock().unwrap();
        let current = match entries.get(key) {
            None => 0,
            Some(bytes) => {
                let raw: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| ApiError::Storage(format!("{key} is not a counter")))?;
                i64::from_le_bytes(raw)
            }
        };
        let next = current + delta;
        entries.insert(key.to_string(), next.to_le_bytes().to_vec());
        Ok(next)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ApiError> {
        let mut entries = self.entries.lock().unwrap();
        if entries.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        entries.insert(key.to_string(), new.to_vec());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_json_refuses_to_overwrite() {
        let kv = MemoryKv::new();
        assert!(create_json(&kv, "k", &1).unwrap());
        assert!(!create_json(&kv, "k", &2).unwrap());
        assert_eq!(get_json::<i32>(&kv, "k").unwrap(), Some(1));
    }

    #[test]
    fn update_json_retries_when_another_writer_got_there_first() {
        let kv = MemoryKv::new();
        set_json(&kv, "n", &1).unwrap();
        let mut interfered = false;
        update_json(&kv, "n", |n: Option<i32>| {
            if !interfered {
                interfered = true;
                set_json(&kv, "n", &10).unwrap();
            }
            Ok((Some(n.unwrap() + 1), ()))
        })
        .unwrap();
        assert_eq!(get_json::<i32>(&kv, "n").unwrap(), Some(11));
    }

    #[test]
    fn id_index_keeps_a_sorted_set() {
        let kv = MemoryKv::new();
        let index = IdIndex::new(&kv, "ids");
        index.insert("b").unwrap();
        index.insert("a").unwrap();
        index.insert("b").unwrap();
        assert_eq!(index.list().unwrap(), ["a", "b"]);
        index.remove("a").unwrap();
        assert_eq!(index.list().unwrap(), ["b"]);
    }

    #[test]
    fn unreadable_values_are_storage_errors() {
        let kv = MemoryKv::new();
        kv.set("k", b"not json").unwrap();
        assert_eq!(get_json::<i32>(&kv, "k").unwrap_err().status(), 503);
    }
}
