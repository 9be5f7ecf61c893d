//! A write buffer in front of the SQLite table, for small new keys (dedup marks).
//!
//! Every accepted pixel event stores a dedup mark under a random key. In a B-tree each
//! random insert lands on its own 4 KiB page, so a group commit wrote one WAL page per
//! mark (and the checkpointer copied it once more): with the marks skipped (an incorrect
//! experiment, as an upper bound), 50-event batches went 2.2 times as fast.
//!
//! So a small value under a key that is certainly new (the key filter says so) is not
//! inserted into `spin_key_value` at its commit. It is appended to a log table instead
//! (`tiktok_edge_kv_buffer`, in seq order: a few new pages per commit, whatever the
//! keys) and kept here in memory, where reads find it first. A merger thread later moves
//! the buffered keys into `spin_key_value` **in key order**, a chunk at a time, so each
//! page it touches takes many keys at once. Measured against the table alone
//! (alternating 5 s runs): 50-event batches 993/997 -> 1,426/1,414 req/s, single events
//! 18.9/19.0k -> 22.2/22.4k req/s. The gain shrinks as the table grows far past what one
//! round holds (keys then share fewer pages), and it costs up to its capacity in keys
//! of memory ([`DEFAULT_CAPACITY`]).
//!
//! A round waits for a burst to end, or for the buffer to be three quarters full
//! (`round_due` in [`super::sqlite`]): a round every second, as at first, took a third
//! of the server's CPU in 10 s of 50-event batches. Waiting, with a capacity of 1.8M
//! keys instead of 128K: 50-event batches 1,605-1,737 -> 2,449-2,787 req/s, p99 53-66
//! -> 42-47 ms; peak RSS 205 -> about 410 MB.
//!
//! Rules that keep every answer right:
//! - once a key is buffered, every write to it goes through the buffer (and the log)
//!   until it is retired, so the buffer always holds its newest value;
//! - a merge round copies every entry up to a seq, then deletes those log rows (oldest
//!   first, in short transactions) and only then retires those entries; an entry
//!   rewritten meanwhile has a newer seq and stays. Until retired, an entry shadows the
//!   table, and a crash before the retirement replays what is left of the log, whose
//!   newest row per key is still right;
//! - a merge drops the cached values of the keys it writes, so a read that found an
//!   older copy in the table is not served once the entry is retired;
//! - at open, what a crash left in the log is merged before anything else runs, and at
//!   close everything is merged, so a data file at rest is Spin's layout alone.

use foldhash::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Largest value kept in memory; a bigger one written to a buffered key stays in its
/// log row and is read from there.
pub const MAX_HELD_VALUE: usize = 64;
/// Most keys buffered at once by default. Past it, new keys go straight to the table
/// until a merge round retires some. Sized for bursts: 1.8M dedup marks are 12 s of
/// 50-event batches at 150,000 events/s, or an hour at 500 events/s (see the merge
/// policy in [`super::sqlite`]). About 160 bytes of memory a key (its slot in the map,
/// the key, the value); 64 times 7/8 of a power of two, the most keys hashbrown keeps
/// in 2^15 slots, so a full buffer's shards ([`Keys`]) are mostly not doubled for
/// their last keys. (The maps are not sized up front: their slots are touched at
/// random, so all of them would be resident long before they are full, 112 MB more
/// for single events.)
pub const DEFAULT_CAPACITY: usize = 7 << 18;

/// Most entries one lock of [`WriteBuffer::retire`] takes out.
const RETIRE_CHUNK: usize = 16 * 1024;

pub const CREATE_LOG: &str = "CREATE TABLE IF NOT EXISTS tiktok_edge_kv_buffer (
    seq   INTEGER PRIMARY KEY,
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB
)";
/// One buffered write; a NULL value is a delete.
pub const APPEND: &str =
    "INSERT INTO tiktok_edge_kv_buffer (seq, store, key, value) VALUES (?1, ?2, ?3, ?4)";
pub const LOGGED_VALUE: &str = "SELECT value FROM tiktok_edge_kv_buffer WHERE seq = ?1";
pub const RETIRE: &str = "DELETE FROM tiktok_edge_kv_buffer WHERE seq BETWEEN ?1 AND ?2";

/// A buffered key's newest value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Value(Vec<u8>),
    /// Too big to keep in memory: in the log row of the entry's seq.
    Logged,
    Deleted,
}

impl Held {
    pub fn of(value: Option<&[u8]>) -> Held {
        match value {
            Some(v) if v.len() <= MAX_HELD_VALUE => Held::Value(v.to_vec()),
            Some(_) => Held::Logged,
            None => Held::Deleted,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The log row holding this value.
    pub seq: i64,
    pub held: Held,
    /// Copied to the table by the current merge round (and not written since).
    pub merged: bool,
}

/// One buffered write of a transaction, applied to the buffer once it commits.
#[derive(Debug, Clone)]
pub struct Change {
    pub store: String,
    pub key: String,
    pub seq: i64,
    pub held: Held,
}

/// Buffered keys by store, then key (both looked up by `&str`). Hashed, not ordered: a
/// batch's reads look up dozens of keys that share a long prefix, which an ordered map
/// compares again at every level; the rare ordered uses sort what they take. foldhash
/// as in the key filter ([`super::filter::KeyHasher`]). Keys are shared (`Arc<str>`) so
/// a merge round's list of up to millions of keys copies a pointer each, not the key.
type Stores = HashMap<Arc<str>, Keys>;

/// Shards of one store's keys ([`Keys`]).
const SHARDS: usize = 64;

/// One store's buffered keys, in [`SHARDS`] maps picked by the key's hash. A map grows
/// by doubling, moving every key under the buffer's lock, and every commit and read
/// waits meanwhile: one map of a million keys held them 29, 53 and 107 ms as it grew
/// past 229K, 458K and 917K keys in ten seconds of 50-event batches, and those were
/// their p99.9. Sharded, each doubling moves a 64th of that. (An extra hash of the key
/// picks the shard.)
struct Keys {
    shards: Vec<HashMap<Arc<str>, Entry>>,
    pick: foldhash::fast::RandomState,
}

impl Keys {
    fn new() -> Self {
        Keys {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            pick: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: &str) -> usize {
        use std::hash::BuildHasher;
        // Multiply-shift: the top bits pick the shard; the shard's own map, seeded
        // apart, spreads its keys anew.
        ((u128::from(self.pick.hash_one(key)) * SHARDS as u128) >> 64) as usize
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.shards[self.shard(key)].get(key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.shards[self.shard(key)].contains_key(key)
    }

    /// Sets `key`'s entry; true when the key is new.
    fn set(&mut self, key: &str, entry: Entry) -> bool {
        let shard = self.shard(key);
        // One lookup, not a search then an insert: most keys are new ones (dedup
        // marks), which need their `Arc` anyway, and each lookup in a map of a million
        // keys is a cache miss.
        match self.shards[shard].entry(Arc::from(key)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                *e.get_mut() = entry;
                false
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(entry);
                true
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.shards.iter().flatten()
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// Moves out the entries with seq at most `upto`, as they are reached.
    fn take_upto(&mut self, upto: i64) -> impl Iterator<Item = (Arc<str>, Entry)> + '_ {
        self.shards
            .iter_mut()
            .flat_map(move |s| s.extract_if(move |_, e| e.seq <= upto))
    }
}

/// A merge round's keys, in order ([`WriteBuffer::round`]).
pub type RoundKeys = Vec<RoundKey>;

/// A key of a merge round, with what sorts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundKey {
    pub store: Arc<str>,
    pub key: Arc<str>,
    /// The rank of (store, the key's folder): all of the key but its last segment.
    folder: u32,
    /// The first 20 bytes of the key's last segment, big-endian, zero-padded: most
    /// keys of a folder differ in them (dedup marks do, by 128 bits of a digest).
    name: (u64, u64, u32),
}

impl RoundKey {
    /// The order a round copies keys in. Keys sharing a folder are contiguous in the
    /// table's (store, key) order, and sorted within it by their names; so the table
    /// takes the keys of each folder page by page. (Folders themselves are in
    /// (store, folder) order, which is the table's own but for a folder's keys that
    /// sort among a sibling folder's: locality is all that needs.)
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        (self.folder, self.name)
            .cmp(&(other.folder, other.name))
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// Bytes of a key's last segment that sort it without reading the key.
const NAME_BYTES: usize = 20;

fn name_order(name: &[u8]) -> (u64, u64, u32) {
    let mut bytes = [0u8; NAME_BYTES];
    let n = name.len().min(NAME_BYTES);
    bytes[..n].copy_from_slice(&name[..n]);
    (
        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
        u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
        u32::from_be_bytes(bytes[16..].try_into().expect("4 bytes")),
    )
}

/// Where a key's last segment starts (after its last `/`).
fn folder_len(key: &str) -> usize {
    key.rfind('/').map_or(0, |i| i + 1)
}

pub struct WriteBuffer {
    entries: RwLock<Stores>,
    len: AtomicUsize,
    /// Most keys held at once ([`DEFAULT_CAPACITY`]).
    capacity: usize,
}

impl WriteBuffer {
    pub fn new(capacity: usize) -> Self {
        WriteBuffer {
            entries: RwLock::default(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Stores> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Stores> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of each key (`None`: not buffered), under one lock.
    pub fn entries<'k>(
        &self,
        store: &str,
        keys: impl Iterator<Item = &'k str>,
    ) -> Vec<Option<Entry>> {
        if self.is_empty() {
            return keys.map(|_| None).collect();
        }
        let entries = self.read();
        let store = entries.get(store);
        keys.map(|k| store.and_then(|s| s.get(k)).cloned())
            .collect()
    }

    /// Whether the key is buffered (a lookup that copies nothing).
    pub fn contains(&self, store: &str, key: &str) -> bool {
        !self.is_empty() && self.read().get(store).is_some_and(|s| s.contains_key(key))
    }

    pub fn entry(&self, store: &str, key: &str) -> Option<Entry> {
        self.entries(store, std::iter::once(key)).pop().flatten()
    }

    /// Buffered keys of `store` after `cursor`, in order, with whether each is live
    /// (not deleted).
    pub fn keys_after(&self, store: &str, cursor: Option<&str>) -> Vec<(String, bool)> {
        if self.is_empty() {
            return Vec::new();
        }
        let entries = self.read();
        let Some(keys) = entries.get(store) else {
            return Vec::new();
        };
        let mut after: Vec<(String, bool)> = keys
            .iter()
            .filter(|(k, _)| cursor.is_none_or(|c| &***k > c))
            .map(|(k, e)| (k.to_string(), e.held != Held::Deleted))
            .collect();
        after.sort_unstable();
        after
    }

    /// Takes in a committed transaction's changes, in their order.
    pub fn apply(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut entries = self.write();
        for c in changes {
            let entry = Entry {
                seq: c.seq,
                held: c.held,
                merged: false,
            };
            // Looked up first: the store's name is only copied for its first key.
            if !entries.contains_key(c.store.as_str()) {
                entries.insert(Arc::from(c.store.as_str()), Keys::new());
            }
            let keys = entries.get_mut(c.store.as_str()).expect("just inserted");
            if keys.set(&c.key, entry) {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The keys a merge round up to seq `upto` copies (those not merged yet), folder
    /// by folder, each in key order ([`RoundKey::order`]), so the table takes them page
    /// by page.
    ///
    /// The lock is taken once per shard, not for all of them: collecting a full
    /// buffer's 1.4M keys at once held every commit up to 91 ms. An entry written
    /// meanwhile has a seq past `upto`, and is left for the next round either way.
    ///
    /// Sorting compares numbers kept beside each key, not the keys: 1.4M keys scattered
    /// over the heap took 0.65-0.75 s to sort by (store, key), one cache miss per key
    /// compared; now the whole round takes 0.25-0.4 s. Its CPU is taken from the
    /// requests of the moment.
    pub fn round(&self, upto: i64) -> RoundKeys {
        let mut keys: RoundKeys = Vec::with_capacity(self.len());
        // (store, folder) of each rank given out so far, and the last one looked up:
        // a round's keys are in few folders, mostly one.
        let mut folders: Vec<(Arc<str>, Box<str>)> = Vec::new();
        // By folder, then store: looked up by `&str`, with no allocation.
        let mut index: HashMap<Box<str>, Vec<u32>> = HashMap::default();
        let mut last: Option<u32> = None;
        for shard in 0..SHARDS {
            let entries = self.read();
            for (store, store_keys) in entries.iter() {
                for (key, _) in store_keys.shards[shard]
                    .iter()
                    .filter(|(_, e)| !e.merged && e.seq <= upto)
                {
                    let split = folder_len(key);
                    let (folder, name) = key.split_at(split);
                    let same = |f: u32| {
                        let (s, d) = &folders[f as usize];
                        Arc::ptr_eq(s, store) && **d == *folder
                    };
                    let known = last.filter(|f| same(*f)).or_else(|| {
                        index
                            .get(folder)
                            .and_then(|ranks| ranks.iter().copied().find(|f| same(*f)))
                    });
                    let rank = known.unwrap_or_else(|| {
                        let rank = folders.len() as u32;
                        folders.push((store.clone(), folder.into()));
                        index.entry(folder.into()).or_default().push(rank);
                        rank
                    });
                    last = Some(rank);
                    keys.push(RoundKey {
                        store: store.clone(),
                        key: key.clone(),
                        folder: rank,
                        name: name_order(name.as_bytes()),
                    });
                }
            }
        }
        // Folders numbered in (store, folder) order.
        let mut sorted: Vec<u32> = (0..folders.len() as u32).collect();
        sorted.sort_unstable_by(|a, b| folders[*a as usize].cmp(&folders[*b as usize]));
        let mut rank_of = vec![0u32; folders.len()];
        for (rank, folder) in sorted.into_iter().enumerate() {
            rank_of[folder as usize] = rank as u32;
        }
        for key in &mut keys {
            key.folder = rank_of[key.folder as usize];
        }
        keys.sort_unstable_by(RoundKey::order);
        keys
    }

    /// The entries of `keys` (from [`Self::round`]) that are still to copy: not written
    /// again since, past `upto`.
    pub fn to_copy(&self, keys: &[RoundKey], upto: i64) -> Vec<(Arc<str>, Arc<str>, Entry)> {
        let entries = self.read();
        keys.iter()
            .filter_map(|RoundKey { store, key, .. }| {
                let e = entries.get(&**store)?.get(key)?;
                (!e.merged && e.seq <= upto).then(|| (store.clone(), key.clone(), e.clone()))
            })
            .collect()
    }

    /// Notes entries copied to the table, unless written again since (a newer seq).
    pub fn merged(&self, copied: &[(Arc<str>, Arc<str>, i64)]) {
        let mut entries = self.write();
        for (store, key, seq) in copied {
            if let Some(e) = entries.get_mut(&**store).and_then(|s| s.get_mut(key))
                && e.seq == *seq
            {
                e.merged = true;
            }
        }
    }

    /// Whether every entry with seq at most `upto` has been merged (its log rows may go).
    pub fn all_merged_upto(&self, upto: i64) -> bool {
        self.read()
            .values()
            .flat_map(|s| s.values())
            .all(|e| e.seq > upto || e.merged)
    }

    /// Drops the entries with seq at most `upto` (merged, their log rows deleted).
    ///
    /// A chunk of [`RETIRE_CHUNK`] entries at a time, each moved out under the lock and
    /// freed after it is released: every read and commit waits while the lock is held,
    /// and a round retires up to a million keys (all at once, 0.35-0.7 s under load).
    pub fn retire(&self, upto: i64) {
        loop {
            let retired: Vec<(Arc<str>, Entry)> = {
                let mut entries = self.write();
                let retired: Vec<_> = entries
                    .values_mut()
                    .flat_map(|keys| keys.take_upto(upto))
                    .take(RETIRE_CHUNK)
                    .collect();
                self.len.fetch_sub(retired.len(), Ordering::Relaxed);
                retired
            };
            let done = retired.len() < RETIRE_CHUNK;
            drop(retired);
            if done {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(store: &str, key: &str, seq: i64, value: Option<&[u8]>) -> Change {
        Change {
            store: store.into(),
            key: key.into(),
            seq,
            held: Held::of(value),
        }
    }

    #[test]
    fn newest_write_wins_and_big_values_stay_logged() {
        let b = WriteBuffer::new(DEFAULT_CAPACITY);
        b.apply(vec![
            change("s", "a", 1, Some(b"1")),
            change("s", "a", 2, Some(b"2")),
            change("s", "big", 3, Some(&[7; MAX_HELD_VALUE + 1])),
            change("s", "gone", 4, None),
        ]);
        assert_eq!(b.len(), 3);
        let got = b.entries("s", ["a", "big", "gone", "none"].into_iter());
        assert_eq!(got[0].as_ref().unwrap().held, Held::Value(b"2".to_vec()));
        assert_eq!(got[0].as_ref().unwrap().seq, 2);
        assert_eq!(got[1].as_ref().unwrap().held, Held::Logged);
        assert_eq!(got[2].as_ref().unwrap().held, Held::Deleted);
        assert!(got[3].is_none());
        assert!(b.entry("other", "a").is_none(), "stores are separate");
        assert_eq!(
            b.keys_after("s", Some("a")),
            vec![("big".to_string(), true), ("gone".to_string(), false)]
        );
    }

    #[test]
    fn a_round_retires_only_what_it_merged() {
        let b = WriteBuffer::new(DEFAULT_CAPACITY);
        b.apply(
            (1..=5)
                .map(|i| change("s", &format!("k{i}"), i, Some(b"v")))
                .collect(),
        );
        b.apply(vec![change("t", "k0", 6, Some(b"v"))]);
        // The round covers seq <= 5, in key order; t/k0 has a seq past it.
        let round = b.round(5);
        let keys: Vec<_> = round.iter().map(|k| &*k.key).collect();
        assert_eq!(keys, ["k1", "k2", "k3", "k4", "k5"]);
        let first = b.to_copy(&round[..2], 5);
        b.merged(
            &first
                .iter()
                .map(|(s, k, e)| (s.clone(), k.clone(), e.seq))
                .collect::<Vec<_>>(),
        );
        // k2 and k3 are written again: k2 after its copy (the newer value stays for the
        // next round), k3 before (not copied in this round).
        b.apply(vec![
            change("s", "k2", 7, Some(b"new")),
            change("s", "k3", 8, Some(b"new")),
        ]);
        let rest = b.to_copy(&round[2..], 5);
        let keys: Vec<_> = rest.iter().map(|(_, k, _)| &**k).collect();
        assert_eq!(keys, ["k4", "k5"]);
        assert!(!b.all_merged_upto(5));
        b.merged(
            &rest
                .iter()
                .map(|(s, k, e)| (s.clone(), k.clone(), e.seq))
                .collect::<Vec<_>>(),
        );
        assert!(b.all_merged_upto(5));
        b.retire(5);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.entry("s", "k2").unwrap().held,
            Held::Value(b"new".to_vec())
        );
        assert!(!b.entry("s", "k2").unwrap().merged);
        assert!(b.entry("t", "k0").is_some());
        assert!(b.entry("s", "k1").is_none());
    }

    #[test]
    fn retiring_more_than_a_chunk_keeps_exactly_the_newer_entries() {
        let b = WriteBuffer::new(DEFAULT_CAPACITY);
        let n = RETIRE_CHUNK as i64 * 2 + 10;
        b.apply(
            (1..=n)
                .map(|i| {
                    change(
                        if i % 2 == 0 { "s" } else { "t" },
                        &format!("k{i}"),
                        i,
                        Some(b"v"),
                    )
                })
                .collect(),
        );
        b.retire(n - 5);
        assert_eq!(b.len(), 5);
        assert!(b.entry("t", &format!("k{}", n - 5)).is_none());
        for i in n - 4..=n {
            let store = if i % 2 == 0 { "s" } else { "t" };
            assert_eq!(b.entry(store, &format!("k{i}")).unwrap().seq, i);
        }
        b.retire(n);
        assert!(b.is_empty());
    }

    #[test]
    fn keys_spread_over_the_shards_read_list_and_merge_as_one_map() {
        let b = WriteBuffer::new(DEFAULT_CAPACITY);
        let n = 5_000;
        b.apply(
            (0..n)
                .map(|i| change("s", &format!("k{i:05}"), i, Some(b"v")))
                .collect(),
        );
        b.apply(vec![change("s", "k00007", n, None)]);
        assert_eq!(b.len(), n as usize);
        {
            let entries = b.read();
            let keys = entries.get("s").unwrap();
            assert!(
                keys.shards
                    .iter()
                    .all(|s| s.len() > n as usize / SHARDS / 2),
                "shards unevenly used"
            );
        }
        assert_eq!(b.entry("s", "k00007").unwrap().held, Held::Deleted);
        assert_eq!(b.entry("s", "k04999").unwrap().seq, 4999);
        assert!(b.contains("s", "k00000") && !b.contains("s", "k99999"));
        let listed = b.keys_after("s", Some("k04990"));
        let expected: Vec<(String, bool)> = (4991..n).map(|i| (format!("k{i:05}"), true)).collect();
        assert_eq!(listed, expected);
        let round = b.round(n);
        assert_eq!(round.len(), n as usize);
        assert!(
            round.windows(2).all(|w| w[0].key < w[1].key),
            "in key order"
        );
        b.retire(n / 2);
        assert_eq!(b.len(), n as usize / 2);
        assert!(b.entry("s", "k02500").is_none() && b.entry("s", "k02501").is_some());
    }

    #[test]
    fn a_round_takes_keys_folder_by_folder_each_in_key_order() {
        let b = WriteBuffer::new(DEFAULT_CAPACITY);
        let long = "n".repeat(NAME_BYTES);
        let mut keys: Vec<(&str, String)> = Vec::new();
        for store in ["s", "t", "default"] {
            for folder in ["pq/px_2/dedup/", "pq/px_1/dedup/", "pq/px_1/", "a/b/", ""] {
                for name in ["b", "a", "ab", "", "a\u{0}", "Z", "é"] {
                    keys.push((store, format!("{folder}{name}")));
                    // Names alike in their first NAME_BYTES bytes.
                    keys.push((store, format!("{folder}{long}{name}")));
                }
            }
            keys.push((store, "a/b0".into()));
        }
        b.apply(
            keys.iter()
                .zip(1..)
                .map(|((store, key), seq)| change(store, key, seq, Some(b"v")))
                .collect(),
        );
        let round: Vec<(String, String)> = b
            .round(i64::MAX)
            .into_iter()
            .map(|k| (k.store.to_string(), k.key.to_string()))
            .collect();
        let folder = |key: &str| key[..folder_len(key)].to_string();
        let mut expected: Vec<(String, String)> = keys
            .iter()
            .map(|(s, k)| (s.to_string(), k.clone()))
            .collect();
        expected.sort_by_key(|(s, k)| (s.clone(), folder(k), k.clone()));
        assert_eq!(round, expected);
    }

    #[test]
    fn a_copy_of_a_value_written_again_meanwhile_is_not_noted_as_merged() {
        let b = WriteBuffer::new(DEFAULT_CAPACITY);
        b.apply(vec![change("s", "k", 1, Some(b"old"))]);
        let copied = b.to_copy(&b.round(1), 1);
        b.apply(vec![change("s", "k", 2, Some(b"new"))]);
        b.merged(&[("s".into(), "k".into(), copied[0].2.seq)]);
        assert!(!b.entry("s", "k").unwrap().merged);
        assert!(!b.all_merged_upto(2));
    }
}
