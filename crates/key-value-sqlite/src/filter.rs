//! Which keys are certainly absent, kept in front of the SQLite store.
//!
//! Every new pixel event looks up its dedup mark and finds nothing. Each such lookup was
//! a SQLite read transaction on a connection whose page cache the last commit had
//! dropped: a B-tree descent through fresh reads, and locks. Skipping them (an incorrect
//! experiment, as an upper bound) made single events and 50-event batches about 25 %
//! faster. This filter answers "absent" for most such keys without SQLite: single events
//! +10-15 %, batches +1-12 % (the guest still makes the call).
//!
//! It is a Bloom filter over (store, key): a key it has never seen is certainly absent;
//! one it has seen may be present (or deleted since, or a false positive), and is read.
//! It never forgets a key that may be stored, by three rules:
//!
//! - every write that may create a key adds it **before its commit**, under the writer's
//!   lock, so no reader can find a committed key that the filter lacks;
//! - a build first registers its new, empty filter (under the writer's lock, so no commit
//!   is half done), then scans the table into it: a key committed before that is in the
//!   scan (or was deleted before the scan reached it), one committed after was added to
//!   the new filter by its commit;
//! - the new filter replaces the old one under the writer's lock; until the first build
//!   is done, every lookup goes to SQLite.
//!
//! Deleted keys stay in the filter, and it fills; past half its bits set (about 1 % false
//! positives) it is rebuilt from a scan. Until the rebuild is done the old one goes on
//! answering, correctly, just less often "absent".
//!
//! A build scans the table twice: a first scan counts the keys, the filter is sized for
//! twice as many, and the second scan and the commits meanwhile fill it directly. So a
//! build holds nothing per key but the filter's 2.5 bytes. (Builds used to collect the
//! scan's hashes first, 8 bytes a key, and stopped filtering at 8M keys: a load of
//! 50-event batches fell from about 42k to 31k events/s there, two minutes in. Sizing from
//! the full filter being replaced, without a count, would grow it at every rebuild of a
//! store whose size holds steady, as deleted keys stay in a filter.)

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bits per key at the capacity a filter is built for.
const BITS_PER_KEY: usize = 10;
/// Bits set per key, all in one 512-bit block (one cache line).
const PROBES: u32 = 7;
const BLOCK_WORDS: usize = 8;
/// Least capacity added to twice the keys stored, so a small store is not rebuilt
/// constantly (the store may ask for more: [`Bloom::for_keys`]).
pub const MIN_HEADROOM: usize = 100_000;

/// A key's place in the filter: (store, key) hashed with this process's random seed (a
/// client choosing keys cannot aim at collisions across restarts). foldhash, made for
/// hash maps and Bloom filters, rather than std's SipHash: every key a commit writes and
/// every key a read looks up is hashed, and SipHash was 3 % of the server's time under
/// 50-event batches. Collisions someone engineered would cost extra reads, never a
/// wrong answer.
#[derive(Clone, Default)]
pub struct KeyHasher(foldhash::fast::RandomState);

impl KeyHasher {
    pub fn hash(&self, store: &str, key: &str) -> u64 {
        self.0.hash_one((store, key))
    }
}

/// A blocked Bloom filter whose bits are set concurrently with lookups.
pub struct Bloom {
    words: Vec<AtomicU64>,
    /// Bits set so far, to know when it is too full to be useful.
    set_bits: AtomicUsize,
}

impl Bloom {
    /// A filter sized for `keys` keys stored now, as many to come, and `headroom` more
    /// (at least [`MIN_HEADROOM`]).
    pub fn for_keys(keys: usize, headroom: usize) -> Self {
        let capacity = keys
            .saturating_mul(2)
            .saturating_add(headroom.max(MIN_HEADROOM));
        let blocks = (capacity * BITS_PER_KEY).div_ceil(BLOCK_WORDS * 64);
        Bloom {
            words: (0..blocks * BLOCK_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            set_bits: AtomicUsize::new(0),
        }
    }

    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// The words to set or test, and the bit in each, all in one block.
    fn probes(&self, hash: u64) -> impl Iterator<Item = (usize, u64)> {
        let blocks = (self.words.len() / BLOCK_WORDS) as u128;
        let block = ((hash as u128 * blocks) >> 64) as usize * BLOCK_WORDS;
        // The block came from the hash's high bits; the probes from all of it, mixed
        // (SplitMix64's finalizer), 9 bits each.
        let mut mixed = hash ^ (hash >> 30);
        mixed = mixed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed ^= mixed >> 27;
        mixed = mixed.wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        (0..PROBES).map(move |i| {
            let bit = (mixed >> (9 * i)) as usize & 511;
            (block + bit / 64, 1u64 << (bit % 64))
        })
    }

    pub fn insert(&self, hash: u64) {
        for (word, bit) in self.probes(hash) {
            if self.words[word].fetch_or(bit, Ordering::Release) & bit == 0 {
                self.set_bits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// False only for a hash never inserted.
    pub fn may_contain(&self, hash: u64) -> bool {
        self.probes(hash)
            .all(|(word, bit)| self.words[word].load(Ordering::Acquire) & bit != 0)
    }

    /// Past half its bits set, about 1 % of absent keys look present: time to rebuild.
    pub fn is_full(&self) -> bool {
        self.set_bits.load(Ordering::Relaxed) * 2 > self.words.len() * 64
    }
}

/// The filter in use, and the one being built.
#[derive(Default)]
pub struct KeyFilter {
    hasher: KeyHasher,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `None` until the first build is done (or when the store is too big to filter):
    /// every lookup then goes to SQLite.
    active: Option<Arc<Bloom>>,
    /// The filter a build is scanning the table into, which commits add their keys to
    /// as well; `None` when no build is under way.
    building: Option<Arc<Bloom>>,
}

/// What a lookup in the filter says.
#[derive(Debug, PartialEq, Eq)]
pub enum Presence {
    Absent,
    /// In the filter, or no filter yet: ask the store.
    Maybe,
}

impl KeyFilter {
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// The filter to look keys up in, for one call (it stays correct for the call even
    /// if a rebuild replaces it meanwhile).
    pub fn lookup(&self) -> Option<Lookup<'_>> {
        let bloom = self.lock().active.clone()?;
        Some(Lookup {
            bloom,
            hasher: &self.hasher,
        })
    }

    /// The hashes of the keys a commit may create, for [`Self::add`]; computed before
    /// the writer's lock is taken, so the commit holds it no longer.
    pub fn hashes<'a>(&self, keys: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<u64> {
        keys.map(|(s, k)| self.hasher.hash(s, k)).collect()
    }

    /// Adds the keys a commit may create (by [`Self::hashes`]). Call with the writer's
    /// lock held and before the commit. Returns true when the filter in use is full (time
    /// to rebuild).
    pub fn add(&self, hashes: Vec<u64>) -> bool {
        if hashes.is_empty() {
            return false;
        }
        let (active, building) = {
            let state = self.lock();
            (state.active.clone(), state.building.clone())
        };
        if let Some(building) = building {
            hashes.iter().for_each(|h| building.insert(*h));
        }
        match active {
            Some(bloom) => {
                hashes.iter().for_each(|h| bloom.insert(*h));
                bloom.is_full()
            }
            None => false,
        }
    }

    /// Starts a build into `bloom`, which commits add their keys to from now on. Call
    /// with the writer's lock held, then scan the store into it.
    pub fn begin_build(&self, bloom: Arc<Bloom>) {
        self.lock().building = Some(bloom);
    }

    /// Puts the filter built since [`Self::begin_build`] in use. Call with the writer's
    /// lock held.
    pub fn finish_build(&self) {
        let mut state = self.lock();
        if let Some(built) = state.building.take() {
            state.active = Some(built);
        }
    }

    /// The size of the filter in use.
    #[cfg(test)]
    pub fn bytes(&self) -> Option<usize> {
        self.lock().active.as_ref().map(|b| b.bytes())
    }

    /// Whether a build is due: no filter in use, or a full one.
    pub fn needs_build(&self) -> bool {
        self.lock().active.as_ref().is_none_or(|b| b.is_full())
    }

    /// Gives up a build that failed; the filter in use (if any) stays correct.
    pub fn abandon_build(&self) {
        self.lock().building = None;
    }

    /// Whether a build is under way, which commits add their keys to.
    #[cfg(test)]
    pub fn building(&self) -> bool {
        self.lock().building.is_some()
    }

    /// Stops filtering (a store too big to filter): every lookup goes to SQLite.
    pub fn disable(&self) {
        let mut state = self.lock();
        state.building = None;
        state.active = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A filter taken for one call.
pub struct Lookup<'a> {
    bloom: Arc<Bloom>,
    hasher: &'a KeyHasher,
}

impl Lookup<'_> {
    pub fn presence(&self, store: &str, key: &str) -> Presence {
        self.presence_of(self.hasher.hash(store, key))
    }

    /// The presence of a key already hashed by [`KeyFilter::hashes`].
    pub fn presence_of(&self, hash: u64) -> Presence {
        if self.bloom.may_contain(hash) {
            Presence::Maybe
        } else {
            Presence::Absent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_key_is_found_and_few_others_are() {
        let hasher = KeyHasher::default();
        let keys = 200_000;
        let bloom = Bloom::for_keys(keys / 2, 0);
        for i in 0..keys {
            bloom.insert(hasher.hash("default", &format!("present/{i}")));
        }
        for i in 0..keys {
            assert!(bloom.may_contain(hasher.hash("default", &format!("present/{i}"))));
        }
        // At capacity (twice the keys it was built for, plus headroom): about 1 %.
        let false_positives = (0..keys)
            .filter(|i| bloom.may_contain(hasher.hash("default", &format!("absent/{i}"))))
            .count();
        assert!(
            false_positives < keys * 3 / 100,
            "{false_positives} false positives in {keys}"
        );
        // The store is part of the key.
        let other_store = (0..1000)
            .filter(|i| bloom.may_contain(hasher.hash("other", &format!("present/{i}"))))
            .count();
        assert!(other_store < 50, "{other_store}");
    }

    #[test]
    fn a_filter_is_full_once_it_holds_its_capacity() {
        let hasher = KeyHasher::default();
        let bloom = Bloom::for_keys(0, 0);
        let mut n = 0;
        while !bloom.is_full() {
            bloom.insert(hasher.hash("s", &n.to_string()));
            n += 1;
        }
        // Capacity is MIN_HEADROOM keys here; half the bits are set near it.
        assert!((60_000..160_000).contains(&n), "full after {n} keys");
    }

    #[test]
    fn a_build_keeps_what_commits_wrote_during_its_scan() {
        let filter = KeyFilter::default();
        assert!(
            filter.lookup().is_none(),
            "no filter before the first build"
        );
        let scanned = Arc::new(Bloom::for_keys(1, 0));
        filter.begin_build(scanned.clone());
        scanned.insert(filter.hasher().hash("s", "before"));
        // Written while the scan runs: the scan may not see it.
        filter.add(filter.hashes([("s", "during")].into_iter()));
        assert!(filter.lookup().is_none(), "in use before the build is done");
        filter.finish_build();
        let lookup = filter.lookup().expect("built");
        assert_eq!(lookup.presence("s", "before"), Presence::Maybe);
        assert_eq!(lookup.presence("s", "during"), Presence::Maybe);
        // After the build, commits add to the filter in use.
        filter.add(filter.hashes([("s", "after")].into_iter()));
        assert_eq!(
            filter.lookup().unwrap().presence("s", "after"),
            Presence::Maybe
        );
        filter.disable();
        assert!(filter.lookup().is_none());
    }
}
