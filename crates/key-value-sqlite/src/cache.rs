//! Recently read values, kept in front of the SQLite store.
//!
//! Every pixel event reads the same records (the pixel, who owns it), every API call the
//! same key and organization, and each SQLite read is a transaction of its own (locks,
//! a B-tree search). The host is the only writer of its data file (a second one is
//! refused at start), so it sees every change: a commit drops the keys it wrote before
//! its writers are answered, and a read that overlapped a commit does not keep what it
//! read (the generation moved meanwhile), so a cached value is never older than the last
//! commit a caller was told about.

use foldhash::HashMap;
use std::sync::Mutex;

/// Values larger than this are not kept (a big value is rarely the hot one).
const MAX_VALUE: usize = 16 << 10;
/// Bytes kept in all; past it the cache starts empty again (cheap, and rare when the hot
/// set is small, which is the case it serves).
const MAX_BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct ValueCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Moves at every commit.
    generation: u64,
    /// By store, then key.
    stores: HashMap<String, HashMap<String, Vec<u8>>>,
    bytes: usize,
}

/// What a lookup found.
pub enum Cached {
    Hit(Vec<u8>),
    /// Not kept; pass the generation to [`ValueCache::fill`] with what the store says.
    Miss(u64),
}

impl ValueCache {
    pub fn get(&self, store: &str, key: &str) -> Cached {
        let inner = self.lock();
        match inner.stores.get(store).and_then(|keys| keys.get(key)) {
            Some(value) => Cached::Hit(value.clone()),
            None => Cached::Miss(inner.generation),
        }
    }

    /// Keeps a value read from the store, unless a commit happened since `generation`
    /// (the value may predate it). Absent keys are not kept: most are one-off lookups
    /// (dedup marks) that would only crowd out the hot records.
    pub fn fill(&self, store: &str, key: &str, value: &[u8], generation: u64) {
        if value.len() > MAX_VALUE {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.bytes + key.len() + value.len() > MAX_BYTES {
            inner.stores.clear();
            inner.bytes = 0;
        }
        inner.bytes += key.len() + value.len();
        let old = inner
            .stores
            .entry(store.to_string())
            .or_default()
            .insert(key.to_string(), value.to_vec());
        if let Some(old) = old {
            inner.bytes -= key.len() + old.len();
        }
    }

    /// Forgets `keys` of `store`, just committed (or tried), before their writers hear.
    pub fn written<'a>(&self, writes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut inner = self.lock();
        inner.generation += 1;
        let Inner { stores, bytes, .. } = &mut *inner;
        for (store, key) in writes {
            if let Some(old) = stores.get_mut(store).and_then(|keys| keys.remove(key)) {
                *bytes -= key.len() + old.len();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(c: &ValueCache, store: &str, key: &str) -> Option<Vec<u8>> {
        match c.get(store, key) {
            Cached::Hit(v) => Some(v),
            Cached::Miss(_) => None,
        }
    }

    fn generation(c: &ValueCache) -> u64 {
        match c.get("none", "none") {
            Cached::Miss(g) => g,
            Cached::Hit(_) => unreachable!(),
        }
    }

    #[test]
    fn a_commit_drops_what_it_wrote_and_a_read_that_overlapped_it_is_not_kept() {
        let c = ValueCache::default();
        let g = generation(&c);
        c.fill("s", "k", b"v1", g);
        c.fill("other", "k", b"o", g);
        assert_eq!(hit(&c, "s", "k").as_deref(), Some(&b"v1"[..]));
        let before = generation(&c);
        c.written([("s", "k")]);
        assert_eq!(hit(&c, "s", "k"), None, "dropped by the commit");
        assert_eq!(
            hit(&c, "other", "k").as_deref(),
            Some(&b"o"[..]),
            "other store kept"
        );
        // A read that started before the commit may have seen the old value.
        c.fill("s", "k", b"v1", before);
        assert_eq!(hit(&c, "s", "k"), None, "a stale read is not kept");
        c.fill("s", "k", b"v2", generation(&c));
        assert_eq!(hit(&c, "s", "k").as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn big_values_are_not_kept_and_the_cache_stays_within_its_bytes() {
        let c = ValueCache::default();
        c.fill("s", "big", &vec![0; MAX_VALUE + 1], generation(&c));
        assert_eq!(hit(&c, "s", "big"), None);
        let value = vec![7; MAX_VALUE];
        for i in 0..(2 * MAX_BYTES / MAX_VALUE) {
            c.fill("s", &format!("k{i}"), &value, generation(&c));
            assert!(c.lock().bytes <= MAX_BYTES);
        }
        let last = 2 * MAX_BYTES / MAX_VALUE - 1;
        assert!(hit(&c, "s", &format!("k{last}")).is_some());
        c.fill("s", "k0", b"x", generation(&c));
        c.fill("s", "k0", b"yy", generation(&c));
        c.written([("s", "k0")]);
        let expected: usize = c.lock().stores["s"]
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert_eq!(
            c.lock().bytes,
            expected,
            "replacing and dropping keep the count"
        );
    }
}
