//! Building the key filter: a thread scans every stored key in short read transactions
//! and builds the Bloom filter that answers "certainly absent" without a read.

use crate::*;

/// Keys the key filter's scan reads per query (each its own short read transaction, so
/// the scan never holds the WAL back for long).
pub(crate) const SCAN_PAGE: i64 = 10_000;
/// Above this many keys the store goes unfiltered: a filter takes 2.5 bytes per key it is
/// built for (80 MiB here, and the one it replaces up to as much again until the build is
/// done). Every lookup then reads SQLite, as before the filter, and no new key is
/// buffered; the count is checked again after [`UNFILTERED_RETRY`].
pub(crate) const MAX_FILTERED_KEYS: usize = 32 << 20;
pub(crate) const UNFILTERED_RETRY: Duration = Duration::from_secs(600);
/// Least time between two builds of the key filter, so a filter that fills quickly
/// (a store that doubles fast) costs at most one scan each second.
pub(crate) const MIN_BUILD_INTERVAL: Duration = Duration::from_secs(1);

impl Shared {
    /// Adds the keys a commit may create (hashed by [`KeyFilter::hashes`]) to the key
    /// filter; call with the writer's lock held, before the commit. Wakes the builder
    /// when the filter is full.
    pub(crate) fn filter_adds(&self, hashes: Vec<u64>) {
        if self.filter.add(hashes) {
            lock(&self.builds).wanted = true;
            self.build_wake.notify_one();
        }
    }

    /// The key filter's thread: builds it at start, then again whenever it is full, at
    /// most once per [`MIN_BUILD_INTERVAL`], until the backend is dropped.
    pub(crate) fn filter_keys_until_closed(&self, conn: Connection) {
        let mut next_build = Instant::now();
        loop {
            {
                let mut builds = lock(&self.builds);
                loop {
                    if builds.closing {
                        return;
                    }
                    let now = Instant::now();
                    if builds.wanted && now >= next_build {
                        builds.wanted = false;
                        break;
                    }
                    builds = if builds.wanted {
                        self.build_wake
                            .wait_timeout(builds, next_build - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    } else {
                        self.build_wake
                            .wait(builds)
                            .unwrap_or_else(|p| p.into_inner())
                    };
                }
            }
            // Commits that found the old filter full during the last build asked again.
            if !self.filter.needs_build() {
                continue;
            }
            let started = Instant::now();
            next_build = started + MIN_BUILD_INTERVAL;
            match self.build_filter_guarded(&conn, MAX_FILTERED_KEYS, &mut || {}) {
                Ok(Built::Filter { keys, bytes }) => tracing::debug!(
                    keys,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "key filter built"
                ),
                Ok(Built::Closing) => return,
                Ok(Built::TooManyKeys) => {
                    tracing::info!(
                        max = MAX_FILTERED_KEYS,
                        "the store holds too many keys to filter; every lookup reads it"
                    );
                    next_build = started + UNFILTERED_RETRY;
                    lock(&self.builds).wanted = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "building the key filter failed");
                    next_build = started + UNFILTERED_RETRY;
                    lock(&self.builds).wanted = true;
                }
            }
        }
    }

    /// [`Self::build_filter`], with a failure or a panic giving the build up: else the
    /// keys commits record for it would grow until the next build, and a panic would
    /// end the builder thread.
    pub(crate) fn build_filter_guarded(
        &self,
        conn: &Connection,
        max_keys: usize,
        scanned: &mut dyn FnMut(),
    ) -> Result<Built, String> {
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.build_filter(conn, max_keys, scanned)
        }));
        let failure = match built {
            Ok(Ok(built)) => return Ok(built),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the build panicked".to_string(),
        };
        self.filter.abandon_build();
        Err(failure)
    }

    /// Builds the key filter from a scan on `conn` and puts it in use (see
    /// [`super::filter`] for why no key can be missed); past `max_keys` keys, stops
    /// filtering instead. `scanned` runs after the scan, before the filter is put in use
    /// (tests write there, behind the scan's back).
    pub(crate) fn build_filter(
        &self,
        conn: &Connection,
        max_keys: usize,
        scanned: &mut dyn FnMut(),
    ) -> rusqlite::Result<Built> {
        // A first scan counts the keys, so the filter is sized before the second one fills
        // it (see [`super::filter`]).
        let counted = match self.scan_keys(conn, max_keys, &mut |_, _| {})? {
            Scanned::Keys(keys) => keys,
            Scanned::TooMany => return Ok(self.too_many_keys()),
            Scanned::Closing => return Ok(Built::Closing),
        };
        // Buffered keys are not in the table yet, and come to the filter as they merge.
        let buffered = self.buffer.as_ref().map_or(0, WriteBuffer::len);
        let bloom = Arc::new(Bloom::for_keys(counted + buffered, self.filter_headroom()));
        {
            // No commit is half done while the build registers.
            let _writer = lock(&self.writer);
            self.filter.begin_build(bloom.clone());
        }
        let hasher = self.filter.hasher();
        let keys = match self.scan_keys(conn, max_keys, &mut |store, key| {
            bloom.insert(hasher.hash(store, key))
        })? {
            Scanned::Keys(keys) => keys,
            Scanned::TooMany => return Ok(self.too_many_keys()),
            Scanned::Closing => {
                self.filter.abandon_build();
                return Ok(Built::Closing);
            }
        };
        scanned();
        let _writer = lock(&self.writer);
        self.filter.finish_build();
        Ok(Built::Filter {
            keys,
            bytes: bloom.bytes(),
        })
    }

    /// Room the key filter keeps for new keys beyond twice those stored: twice what the
    /// write buffer holds. The buffer takes new keys, so a store that uses it grows by
    /// about its capacity between merge rounds, and a build scans the whole table twice.
    /// With only [`super::filter::MIN_HEADROOM`], a fresh store under 50-event batches was
    /// rebuilt at 100K, 300K, 700K and 1.5M keys in its first ten seconds, the filter's
    /// thread taking 4.5 % of the server's time. This room costs 2.5 bytes a key (4.6
    /// MiB at the default capacity, under 2 % of the full buffer's memory). At most
    /// [`MAX_FILTERED_KEYS`]: the filter is allocated whole, at start, so a huge
    /// `write_buffer_keys` (memory the buffer only takes as it fills) must not size it.
    pub(crate) fn filter_headroom(&self) -> usize {
        self.buffer
            .as_ref()
            .map_or(0, |b| b.capacity().saturating_mul(2).min(MAX_FILTERED_KEYS))
    }

    pub(crate) fn too_many_keys(&self) -> Built {
        self.filter.disable();
        Built::TooManyKeys
    }

    /// Calls `each` with every key a guest could have written (store and key are
    /// strings), in pages of [`SCAN_PAGE`] keys, each its own read transaction; stops
    /// past `max_keys` such keys, or when the backend closes.
    pub(crate) fn scan_keys(
        &self,
        conn: &Connection,
        max_keys: usize,
        each: &mut dyn FnMut(&str, &str),
    ) -> rusqlite::Result<Scanned> {
        let mut keys = 0;
        // Where the last page ended, as stored, so the scan always moves on.
        let mut last: Option<(Stored, Stored)> = None;
        let mut first = conn
            .prepare_cached("SELECT store, key FROM spin_key_value ORDER BY store, key LIMIT ?1")?;
        let mut next = conn.prepare_cached(
            "SELECT store, key FROM spin_key_value WHERE (store, key) > (?2, ?3) ORDER BY store, key LIMIT ?1",
        )?;
        loop {
            let mut rows = match &last {
                None => first.query(params![SCAN_PAGE])?,
                Some((store, key)) => next.query(params![SCAN_PAGE, store, key])?,
            };
            let mut page = 0;
            while let Some(row) = rows.next()? {
                page += 1;
                let (store, key) = (row.get_ref(0)?, row.get_ref(1)?);
                // Guests name keys with strings; anything else cannot be looked up.
                if let (Ok(store), Ok(key)) = (store.as_str(), key.as_str()) {
                    each(store, key);
                    keys += 1;
                }
                last = Some((store.into(), key.into()));
            }
            drop(rows);
            if keys > max_keys {
                return Ok(Scanned::TooMany);
            }
            if lock(&self.builds).closing {
                return Ok(Scanned::Closing);
            }
            if page < SCAN_PAGE {
                return Ok(Scanned::Keys(keys));
            }
        }
    }
}
