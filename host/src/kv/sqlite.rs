//! The embedded default backend: one SQLite file (WAL) in the data directory.
//!
//! Values are committed before the call returns, so a guest that acknowledges after a
//! `set` has its data on disk; WAL with `synchronous=NORMAL` survives a killed process.
//! The layout is Spin's own (`spin_key_value(store, key, value)`, counters as
//! little-endian i64), so a data file moves between Spin and tiktok-edge.

use super::{KeyPage, KeyValue, KeyValueBackend, KvError, check_key, check_value};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

/// Most keys one `list_keys` call returns, whatever the caller asks.
pub const MAX_PAGE: usize = 10_000;

pub struct SqliteBackend {
    conn: Mutex<Connection>,
}

fn backend(e: rusqlite::Error) -> KvError {
    KvError::Backend(e.to_string())
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests and embedders that want no files.
    pub fn in_memory() -> Result<Self, KvError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(conn: Connection) -> Result<Self, KvError> {
        // One process owns the file (the host; its CLI goes through the HTTP API): taking
        // the lock once, instead of fcntl locks around every transaction, and keeping the
        // WAL index in heap memory makes a small write cheaper. A second
        // host started on the same data dir fails at start instead of sharing the file.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            ) WITHOUT ROWID;",
        )
        .map_err(backend)?;
        Ok(SqliteBackend {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KvError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(backend)
    }
}

fn decode_counter(bytes: &[u8]) -> Result<i64, KvError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| KvError::NotACounter)?;
    Ok(i64::from_le_bytes(arr))
}

impl KeyValueBackend for SqliteBackend {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        self.with(|c| {
            c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .query_row(params![store, key], |r| r.get(0))
                .optional()
        })
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        check_value(value)?;
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![store, key, value])
            .map(drop)
        })
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .execute(params![store, key])
                .map(drop)
        })
    }

    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .exists(params![store, key])
        })
    }

    fn list_keys(
        &self,
        store: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut keys: Vec<String> = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key FROM spin_key_value WHERE store = ?1 AND (?2 IS NULL OR key > ?2) ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![store, cursor, (limit + 1) as i64], |r| r.get(0))?;
            rows.collect()
        })?;
        let cursor = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
    }

    fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction().map_err(backend)?;
            let current: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row(params![store, key], |r| r.get(0)).optional())
                .map_err(backend)?;
            let current = current
                .as_deref()
                .map(decode_counter)
                .transpose()?
                .unwrap_or(0);
            let new = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Backend("counter overflow".into()))?;
            tx.prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute(params![store, key, new.to_le_bytes().as_slice()]))
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(new)
        }
    }

    fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        check_key(key)?;
        check_value(new)?;
        self.with(|c| {
            let changed = match expected {
                Some(old) => c
                    .prepare_cached("UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3")?
                    .execute(params![store, key, old, new])?,
                None => c
                    .prepare_cached("INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
                    .execute(params![store, key, new])?,
            };
            Ok(changed == 1)
        })
    }

    fn get_many(&self, store: &str, keys: &[String]) -> Result<Vec<KeyValue>, KvError> {
        keys.iter().try_for_each(|k| check_key(k))?;
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
            keys.iter()
                .map(|k| {
                    Ok((
                        k.clone(),
                        stmt.query_row(params![store, k], |r| r.get(0)).optional()?,
                    ))
                })
                .collect()
        })
    }

    fn set_many(&self, store: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (k, v) in pairs {
            check_key(k)?;
            check_value(v)?;
        }
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                )?;
                for (k, v) in pairs {
                    stmt.execute(params![store, k, v])?;
                }
            }
            tx.commit()
        })
    }

    fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError> {
        keys.iter().try_for_each(|k| check_key(k))?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
                for k in keys {
                    stmt.execute(params![store, k])?;
                }
            }
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_exists() {
        let b = SqliteBackend::in_memory().unwrap();
        assert_eq!(b.get("s", "k").unwrap(), None);
        b.set("s", "k", b"v1").unwrap();
        b.set("s", "k", b"v2").unwrap();
        assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(b.exists("s", "k").unwrap());
        assert_eq!(
            b.get("other", "k").unwrap(),
            None,
            "stores are separate namespaces"
        );
        b.delete("s", "k").unwrap();
        assert!(!b.exists("s", "k").unwrap());
    }

    #[test]
    fn counters_are_spins_little_endian_i64() {
        let b = SqliteBackend::in_memory().unwrap();
        assert_eq!(b.increment("s", "n", 5).unwrap(), 5);
        assert_eq!(b.increment("s", "n", -2).unwrap(), 3);
        assert_eq!(b.get("s", "n").unwrap().unwrap(), 3i64.to_le_bytes());
        b.set("s", "text", b"hello").unwrap();
        assert_eq!(b.increment("s", "text", 1), Err(KvError::NotACounter));
    }

    #[test]
    fn list_keys_pages_in_order() {
        let b = SqliteBackend::in_memory().unwrap();
        for k in ["c", "a", "b", "d", "e", ""] {
            b.set("s", k, b"x").unwrap();
        }
        let p1 = b.list_keys("s", None, 2).unwrap();
        assert_eq!(p1.keys, ["", "a"], "the empty key is listed too");
        let p2 = b.list_keys("s", p1.cursor.as_deref(), 2).unwrap();
        assert_eq!(p2.keys, ["b", "c"]);
        let p3 = b.list_keys("s", p2.cursor.as_deref(), 2).unwrap();
        assert_eq!(p3.keys, ["d", "e"]);
        assert_eq!(p3.cursor, None);
        let all = b.list_keys("s", None, usize::MAX).unwrap();
        assert_eq!(all.keys.len(), 6, "a huge limit is clamped, not overflowed");
    }

    #[test]
    fn compare_and_swap_only_when_unchanged() {
        let b = SqliteBackend::in_memory().unwrap();
        assert!(b.compare_and_swap("s", "k", None, b"1").unwrap());
        assert!(!b.compare_and_swap("s", "k", None, b"2").unwrap());
        assert!(!b.compare_and_swap("s", "k", Some(b"0"), b"2").unwrap());
        assert!(b.compare_and_swap("s", "k", Some(b"1"), b"2").unwrap());
        assert_eq!(b.get("s", "k").unwrap().unwrap(), b"2");
    }

    #[test]
    fn batches_and_limits() {
        let b = SqliteBackend::in_memory().unwrap();
        b.set_many(
            "s",
            &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        )
        .unwrap();
        let got = b.get_many("s", &["a".into(), "zz".into()]).unwrap();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), Some(b"1".to_vec())),
                ("zz".to_string(), None)
            ]
        );
        b.delete_many("s", &["a".into(), "b".into()]).unwrap();
        assert!(!b.exists("s", "a").unwrap());
        assert_eq!(b.set("s", &"k".repeat(256), b"x"), Err(KvError::KeyTooLong));
        assert_eq!(
            b.set("s", "k", &vec![0; super::super::MAX_VALUE_BYTES + 1]),
            Err(KvError::ValueTooLarge)
        );
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        SqliteBackend::open(&path)
            .unwrap()
            .set("s", "k", b"kept")
            .unwrap();
        assert_eq!(
            SqliteBackend::open(&path)
                .unwrap()
                .get("s", "k")
                .unwrap()
                .unwrap(),
            b"kept"
        );
    }
}
