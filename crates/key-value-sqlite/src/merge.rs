//! Merging the write buffer into the table in key order, many keys per page, in short
//! transactions that leave the writer's lock to group commits between them; and the
//! replay, at open, of what a crash left in the buffer's log.

use crate::*;

/// A merge round starts once the buffer is three quarters full (the last quarter takes
/// the new keys that come while the round runs) ...
pub(crate) const MERGE_AT_FULL: (usize, usize) = (3, 4);
/// ... or once no key has been buffered for this long (a burst is over: the merge costs
/// it nothing) ...
pub(crate) const MERGE_WHEN_QUIET: Duration = Duration::from_secs(1);
/// ... or this long after the last round, so a steady trickle is merged too (and a crash
/// leaves little to replay at the next open).
pub(crate) const MERGE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the merger looks at the clock while keys are buffered.
pub(crate) const MERGE_POLL: Duration = Duration::from_millis(250);
/// Pause after a merge round failed, before the next tries again.
pub(crate) const MERGE_RETRY: Duration = Duration::from_secs(1);
/// Most keys one merge transaction copies to the table. The writer's lock is held
/// meanwhile (group commits wait), so it is kept to about [`MERGE_HOLD`]: at 1,024 keys,
/// single events had p99 10 ms against 6.6 ms. Keys share pages as much in small chunks:
/// that depends on how many keys a round has, not a chunk.
pub(crate) const MERGE_CHUNK: usize = 256;
/// Fewest keys a merge transaction copies, however slow the last one was.
pub(crate) const MIN_MERGE_CHUNK: usize = 16;
/// How long a merge transaction should hold the writer's lock. A chunk is sized from how
/// long the last one took: once the table outgrows the page cache, a key costs a page
/// read and write of its own, and 256 keys held the lock 3-4 ms a minute into a load of
/// single events, whose p99 rose past 10 ms.
pub(crate) const MERGE_HOLD: Duration = Duration::from_millis(1);
/// The merger's pause between two chunks, so the group commits waiting for the
/// writer's lock get it (a mutex is not fair: a thread that releases it and takes it
/// again at once mostly wins).
pub(crate) const MERGE_PAUSE: Duration = Duration::from_micros(500);
/// Log rows one transaction deletes at the end of a merge round.
pub(crate) const RETIRE_CHUNK: i64 = 4096;

impl Shared {
    /// The merger thread: a merge round whenever [`round_due`] says so, until the
    /// backend is dropped.
    pub(crate) fn merge_until_closed(&self) {
        let Some(buffer) = &self.buffer else {
            return;
        };
        loop {
            {
                let mut merges = lock(&self.merges);
                loop {
                    if merges.closing {
                        return;
                    }
                    if round_due(
                        buffer.len(),
                        buffer.capacity(),
                        merges.last_buffered.elapsed(),
                        merges.last_round.elapsed(),
                    ) {
                        break;
                    }
                    merges = self
                        .merge_wake
                        .wait_timeout(merges, MERGE_POLL)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            // A panic too: the merger must go on (no write is lost meanwhile, but the
            // buffer would fill and stay full).
            let merged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.merge_round().map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("the merge round panicked".into()));
            lock(&self.merges).last_round = Instant::now();
            if let Err(e) = merged {
                // The log keeps every write; the next round tries again.
                tracing::warn!(error = %e, "merging buffered writes into the table failed");
                std::thread::sleep(MERGE_RETRY);
            }
        }
    }

    /// Merges until the buffer is empty (at close), a few rounds at most: writes may
    /// still come from commit tasks that outlive the backend, and what is left is
    /// merged at the next open.
    pub(crate) fn merge_all(&self) {
        for _ in 0..3 {
            if self.buffer.as_ref().is_none_or(WriteBuffer::is_empty) {
                return;
            }
            if let Err(e) = self.merge_round() {
                tracing::warn!(error = %e, "merging buffered writes at close failed; the next open merges them");
                return;
            }
        }
    }

    /// Copies every write buffered so far into the table, a chunk of keys per
    /// transaction (group commits run in between), folder by folder in key order
    /// ([`WriteBuffer::round`]), then deletes their log rows and retires them (see
    /// [`super::buffer`] for why no write is lost).
    pub(crate) fn merge_round(&self) -> rusqlite::Result<()> {
        let started = Instant::now();
        let keys = self.buffer.as_ref().map_or(0, WriteBuffer::len);
        let upto = self.merge_chunks()?;
        self.retire_merged(upto)?;
        tracing::debug!(
            keys,
            ms = started.elapsed().as_millis() as u64,
            "merged buffered writes into the table"
        );
        Ok(())
    }

    /// A merge round's copying; returns the last seq it covered.
    pub(crate) fn merge_chunks(&self) -> rusqlite::Result<i64> {
        // Under the writer's lock, so no transaction holds a seq it has not committed.
        let upto = {
            let _writer = lock(&self.writer);
            self.next_seq.load(Ordering::Relaxed) - 1
        };
        let Some(buffer) = &self.buffer else {
            return Ok(upto);
        };
        let round = buffer.round(upto);
        let mut chunk_keys = MERGE_CHUNK;
        let mut rest = &round[..];
        while !rest.is_empty() {
            let (keys, after) = rest.split_at(chunk_keys.min(rest.len()));
            rest = after;
            // An entry written again after this read has a newer seq: the table gets
            // the older value now, and the newer one, which shadows it, next round.
            let chunk = buffer.to_copy(keys, upto);
            let added = self.filter.hashes(
                chunk
                    .iter()
                    .filter(|(_, _, e)| e.held != Held::Deleted)
                    .map(|(s, k, _)| (&**s, &**k)),
            );
            let mut writer = lock(&self.writer);
            let held = Instant::now();
            // The keys are in the filter already, unless it was rebuilt from a scan of
            // the table since: a build in progress takes them too.
            self.filter_adds(added);
            let tx = writer.transaction()?;
            {
                // Taken from the statement cache once per chunk, not once per key.
                let mut upsert = tx.prepare_cached(UPSERT)?;
                let mut logged = tx.prepare_cached(MERGE_LOGGED)?;
                let mut delete = tx.prepare_cached(DELETE)?;
                for (store, key, entry) in &chunk {
                    match &entry.held {
                        Held::Value(v) => upsert.execute(params![store, key, v])?,
                        Held::Logged => logged.execute([entry.seq])?,
                        Held::Deleted => delete.execute(params![store, key])?,
                    };
                }
            }
            tx.commit()?;
            // The table's value changed: a read of it that overlapped this (it may have
            // found an older copy) must not be kept, nor a value cached before.
            self.cache
                .written(chunk.iter().map(|(s, k, _)| (&**s, &**k)));
            buffer.merged(
                &chunk
                    .into_iter()
                    .map(|(s, k, e)| (s, k, e.seq))
                    .collect::<Vec<_>>(),
            );
            drop(writer);
            chunk_keys = next_chunk(keys.len(), held.elapsed());
            lock(&self.checkpoints).commits += 1;
            self.checkpoint_wake.notify_one();
            std::thread::sleep(MERGE_PAUSE);
        }
        Ok(upto)
    }

    /// A merge round's end: deletes the log rows up to `upto` and retires their entries,
    /// if every one of them was copied to the table.
    pub(crate) fn retire_merged(&self, upto: i64) -> rusqlite::Result<()> {
        let Some(buffer) = &self.buffer else {
            return Ok(());
        };
        // Only this thread marks entries merged, and a write to a key gives it a seq
        // past `upto`: the answer holds while the rows go.
        if !buffer.all_merged_upto(upto) {
            return Ok(());
        }
        let first: Option<i64> = lock(&self.writer).query_row(
            "SELECT min(seq) FROM tiktok_edge_kv_buffer",
            [],
            |r| r.get(0),
        )?;
        // A range per transaction, so commits never wait long. A crash midway leaves
        // rows of keys still buffered; replayed in seq order at the next open, they
        // still end at each key's newest value.
        let mut from = first.unwrap_or(upto + 1);
        while from <= upto {
            let to = (from + RETIRE_CHUNK - 1).min(upto);
            lock(&self.writer)
                .prepare_cached(buffer::RETIRE)?
                .execute([from, to])?;
            from = to + 1;
        }
        // Not under the writer's lock: an entry retired while a transaction runs was
        // merged, so a write that saw it buffered logs a newer entry, and one that did
        // not writes the table; a read that misses it finds the table's copy.
        buffer.retire(upto);
        Ok(())
    }
}

/// A buffered value too big to keep in memory, copied from its log row.
pub(crate) const MERGE_LOGGED: &str = "INSERT INTO spin_key_value (store, key, value)
     SELECT store, key, value FROM tiktok_edge_kv_buffer WHERE seq = ?1
     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";

/// At open: merges what a crash left in the write buffer's log into the table (the
/// newest write of each key) and empties the log. Returns the log rows found.
pub(crate) fn recover_buffer(conn: &Connection) -> rusqlite::Result<usize> {
    let rows: i64 = conn.query_row("SELECT count(*) FROM tiktok_edge_kv_buffer", [], |r| {
        r.get(0)
    })?;
    if rows == 0 {
        return Ok(0);
    }
    // In SQL, so a log of big values is never held in memory at once.
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "CREATE TEMP TABLE newest AS
             SELECT store, key, value FROM tiktok_edge_kv_buffer
             WHERE seq IN (SELECT max(seq) FROM tiktok_edge_kv_buffer GROUP BY store, key);
         INSERT INTO spin_key_value (store, key, value)
             SELECT store, key, value FROM newest WHERE value IS NOT NULL ORDER BY store, key
             ON CONFLICT(store, key) DO UPDATE SET value = excluded.value;
         DELETE FROM spin_key_value
             WHERE (store, key) IN (SELECT store, key FROM newest WHERE value IS NULL);
         DELETE FROM tiktok_edge_kv_buffer;
         DROP TABLE newest;",
    )?;
    tx.commit()?;
    Ok(rows as usize)
}

/// Whether a merge round is due, with `len` keys buffered of `capacity`, the last one
/// buffered `quiet` ago and the last round `since_round` ago.
///
/// Merging a key into the table is a B-tree insert at a random place, a few µs of CPU
/// and a page write of its own once the table outgrows the cache: under a flat-out
/// burst of 50-event batches, rounds every second took a third of the server's CPU
/// (with the filter's builds and the checkpoints they cause). So a burst goes to the
/// buffer alone, and the merge waits for the burst to end, or for the buffer to fill.
/// Under load that never lets up, the rounds come at three quarters full: then the
/// store ingests new keys as fast as it merges them, as before, but a round takes more
/// keys per page.
pub(crate) fn round_due(
    len: usize,
    capacity: usize,
    quiet: Duration,
    since_round: Duration,
) -> bool {
    let (num, den) = MERGE_AT_FULL;
    len > 0
        && (len.saturating_mul(den) >= capacity.saturating_mul(num)
            || quiet >= MERGE_WHEN_QUIET
            || since_round >= MERGE_INTERVAL)
}

/// The keys of the next merge transaction, after one of `keys` held the writer's lock for
/// `held`: as many as fit in [`MERGE_HOLD`] at that pace.
pub(crate) fn next_chunk(keys: usize, held: Duration) -> usize {
    let per_key = held.as_secs_f64() / keys.max(1) as f64;
    let fit = MERGE_HOLD.as_secs_f64() / per_key.max(1e-9);
    (fit as usize).clamp(MIN_MERGE_CHUNK, MERGE_CHUNK)
}
