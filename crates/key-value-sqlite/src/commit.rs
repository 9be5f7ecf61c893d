//! Group commit: a guest's writes wait in a queue without holding a thread; one
//! transaction commits every write waiting and answers each once it is durable, and each
//! write goes to the table or, for a certainly new small key, to the write buffer.

use crate::checkpoint::checkpoint;
use crate::merge::round_due;
use crate::*;

/// Most writes one group commit takes; the rest wait for the next.
const MAX_GROUP: usize = 512;

impl Shared {
    /// Starts a commit task (see the module docs); without a runtime, commits now.
    pub(crate) fn start_commit(self: &Arc<Self>) {
        match tokio::runtime::Handle::try_current() {
            // Commit after the other requests this thread can run now have had their
            // turn: their writes join the group instead of waiting for the next one.
            Ok(runtime) => {
                let commit = CommitOnDrop(self.clone());
                runtime.spawn(async move {
                    tokio::task::yield_now().await;
                    drop(commit);
                });
            }
            Err(_) => self.lead(),
        }
    }

    /// Commits the waiting writes, one group at a time. Within a runtime it commits one
    /// group and hands the thread back, starting a new commit task if more writes wait:
    /// a leader that kept committing while other threads kept writing would starve the
    /// requests queued on its own thread (hundreds of milliseconds at p99).
    pub(crate) fn lead(self: &Arc<Self>) {
        let _leadership = Leadership(&self.queue);
        loop {
            let group = {
                let mut q = lock(&self.queue);
                if q.waiting.is_empty() {
                    q.leader = false;
                    return;
                }
                let take = q.waiting.len().min(MAX_GROUP);
                q.waiting.drain(..take).collect::<Vec<_>>()
            };
            self.commit(group);
            if tokio::runtime::Handle::try_current().is_ok()
                && !lock(&self.queue).waiting.is_empty()
            {
                // Still the leader: the new task takes over.
                self.start_commit();
                return;
            }
        }
    }

    /// Commits one group, answers each write, and tells the checkpointer.
    pub(crate) fn commit(&self, group: Vec<Queued>) {
        let added = self.filter.hashes(
            group
                .iter()
                .flat_map(|w| w.op.added_keys().map(|k| (w.store.as_str(), k))),
        );
        let mut writer = lock(&self.writer);
        if self.catch_up.swap(false, Ordering::Relaxed) {
            // Copies the tail the checkpointer has not reached; with nothing left to
            // copy, this group's commit starts the WAL over from its beginning.
            match checkpoint(&writer) {
                Ok((false, log, copied)) if copied >= log => {}
                Ok(_) => self.catch_up.store(true, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "checkpoint before a group failed"),
            }
        }
        let new = self.new_keys(&added);
        self.filter_adds(added);
        let results = self.commit_group(&mut writer, &group, &new);
        drop(writer);
        self.cache.written(
            group
                .iter()
                .flat_map(|w| w.op.keys().map(|k| (w.store.as_str(), k))),
        );
        for (write, result) in group.into_iter().zip(results) {
            // A caller that gave up (its request timed out) no longer listens.
            let _ = write.reply.send(result);
        }
        lock(&self.checkpoints).commits += 1;
        self.checkpoint_wake.notify_one();
    }
}

/// Commits the waiting group when dropped: after the task's yield, or when a runtime
/// that is shutting down drops the task unrun, so no write is left waiting.
pub(crate) struct CommitOnDrop(Arc<Shared>);

impl Drop for CommitOnDrop {
    fn drop(&mut self) {
        self.0.lead();
    }
}

/// Hands leadership back if the leader panics, so later writes are not left waiting
/// for a leader that is gone.
pub(crate) struct Leadership<'a>(&'a Mutex<Pending>);

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.0).leader = false;
        }
    }
}

impl Shared {
    /// For each key a commit may create (hashed by [`KeyFilter::hashes`]), whether it
    /// is certainly new, so its write may be buffered. Call with the writer's lock held,
    /// before [`Self::filter_adds`] puts them in the filter.
    pub(crate) fn new_keys(&self, hashes: &[u64]) -> Vec<bool> {
        match (&self.buffer, self.filter.lookup()) {
            (Some(_), Some(filter)) => hashes
                .iter()
                .map(|h| filter.presence_of(*h) == Presence::Absent)
                .collect(),
            _ => vec![false; hashes.len()],
        }
    }

    pub(crate) fn routing<'c>(&self, c: &'c Connection) -> Routing<'_, 'c> {
        Routing {
            c,
            upsert: None,
            append: None,
            buffer: self.buffer.as_ref(),
            next_seq: &self.next_seq,
            changes: Vec::new(),
            pending: HashMap::default(),
        }
    }

    /// Applies a group in one transaction. If SQLite fails on one of them (a full disk,
    /// say) none is committed, and each is then tried alone so it gets its own answer.
    /// `new`: [`Self::new_keys`] of the group's added keys, in order.
    pub(crate) fn commit_group(
        &self,
        conn: &mut Connection,
        group: &[Queued],
        new: &[bool],
    ) -> Answers {
        // Each write's share of `new`, split once for both paths.
        let mut rest = new;
        let flags: Vec<&[bool]> = group
            .iter()
            .map(|w| {
                let (own, after) = rest.split_at(w.op.added_keys().count());
                rest = after;
                own
            })
            .collect();
        let mut together = || -> rusqlite::Result<(Answers, Vec<Change>)> {
            let tx = conn.transaction()?;
            let mut routing = self.routing(&tx);
            let results = group
                .iter()
                .zip(&flags)
                .map(|(w, new)| apply(&mut routing, &w.store, &w.op, new))
                .collect::<rusqlite::Result<Answers>>()?;
            let changes = routing.into_changes();
            tx.commit()?;
            Ok((results, changes))
        };
        match together() {
            Ok((results, changes)) => {
                self.buffered(changes);
                results
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = group.len(), "group commit failed; committing its writes one by one");
                group
                    .iter()
                    .zip(&flags)
                    .map(|(w, new)| self.run_alone(conn, &w.store, &w.op, new))
                    .collect()
            }
        }
    }

    pub(crate) fn run_alone(
        &self,
        conn: &mut Connection,
        store: &str,
        op: &Write,
        new: &[bool],
    ) -> Result<Written, KvError> {
        let tx = conn.transaction().map_err(backend)?;
        let mut routing = self.routing(&tx);
        let result = apply(&mut routing, store, op, new).map_err(backend)?;
        let changes = routing.into_changes();
        tx.commit().map_err(backend)?;
        self.buffered(changes);
        result
    }

    /// Takes a committed transaction's buffered writes into the buffer (before their
    /// writers are answered), and wakes the merger if it is full enough.
    pub(crate) fn buffered(&self, changes: Vec<Change>) {
        if let Some(buffer) = &self.buffer
            && !changes.is_empty()
        {
            buffer.apply(changes);
            lock(&self.merges).last_buffered = Instant::now();
            if round_due(
                buffer.len(),
                buffer.capacity(),
                Duration::ZERO,
                Duration::ZERO,
            ) {
                self.merge_wake.notify_one();
            }
        }
    }
}

/// Each write's answer, in order.
pub(crate) type Answers = Vec<Result<Written, KvError>>;

/// Where a transaction's writes go: the table, or the write buffer ([`super::buffer`]).
pub(crate) struct Routing<'a, 'c> {
    /// The transaction's connection.
    c: &'c Connection,
    buffer: Option<&'a WriteBuffer>,
    next_seq: &'a AtomicI64,
    /// This transaction's buffered writes, in order.
    changes: Vec<Change>,
    /// The newest of them by store and key (an index into `changes`).
    pending: HashMap<String, HashMap<String, usize>>,
    /// The statements every key of a batch runs, taken from the connection's cache once
    /// per transaction rather than per key (each take hashes the SQL text and reorders
    /// the cache: 1 % of the server's time under 50-event batches).
    upsert: Option<rusqlite::CachedStatement<'c>>,
    append: Option<rusqlite::CachedStatement<'c>>,
}

impl<'c> Routing<'_, 'c> {
    pub(crate) fn upsert(&mut self) -> rusqlite::Result<&mut rusqlite::CachedStatement<'c>> {
        if self.upsert.is_none() {
            self.upsert = Some(self.c.prepare_cached(UPSERT)?);
        }
        Ok(self.upsert.as_mut().expect("just prepared"))
    }

    pub(crate) fn append_statement(
        &mut self,
    ) -> rusqlite::Result<&mut rusqlite::CachedStatement<'c>> {
        if self.append.is_none() {
            self.append = Some(self.c.prepare_cached(buffer::APPEND)?);
        }
        Ok(self.append.as_mut().expect("just prepared"))
    }

    /// This transaction's buffered writes, releasing its statements (so it can commit).
    pub(crate) fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// The key's newest buffered (seq, value), this transaction's writes first; `None`
    /// when it is not buffered.
    pub(crate) fn buffered(&self, store: &str, key: &str) -> Option<(i64, Held)> {
        let buffer = self.buffer?;
        if let Some(&i) = self.pending.get(store).and_then(|keys| keys.get(key)) {
            let change = &self.changes[i];
            return Some((change.seq, change.held.clone()));
        }
        buffer.entry(store, key).map(|e| (e.seq, e.held))
    }

    /// The key's newest buffered value: `None` when it is not buffered, `Some(None)`
    /// when it was deleted.
    pub(crate) fn current(
        &self,
        store: &str,
        key: &str,
    ) -> rusqlite::Result<Option<Option<Vec<u8>>>> {
        let c = self.c;
        Ok(match self.buffered(store, key) {
            None => None,
            Some((_, Held::Value(v))) => Some(Some(v)),
            Some((_, Held::Deleted)) => Some(None),
            Some((seq, Held::Logged)) => Some(
                match c
                    .prepare_cached(buffer::LOGGED_VALUE)?
                    .query_row([seq], |r| r.get(0))
                    .optional()?
                {
                    Some(value) => value,
                    // Merged, and its log row retired (the entry goes next): the table
                    // has the value.
                    None => c
                        .prepare_cached(SELECT)?
                        .query_row(params![store, key], |r| r.get(0))
                        .optional()?,
                },
            ),
        })
    }

    pub(crate) fn is_buffered(&self, store: &str, key: &str) -> bool {
        self.buffer.is_some_and(|b| {
            self.pending
                .get(store)
                .is_some_and(|keys| keys.contains_key(key))
                || b.contains(store, key)
        })
    }

    /// Whether a new key's value may be buffered: small, and room left.
    pub(crate) fn takes_new(&self, value: &[u8]) -> bool {
        self.buffer.is_some_and(|b| {
            value.len() <= buffer::MAX_HELD_VALUE && b.len() + self.changes.len() < b.capacity()
        })
    }

    pub(crate) fn append(
        &mut self,
        store: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> rusqlite::Result<()> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.append_statement()?
            .execute(params![seq, store, key, value])?;
        let index = self.changes.len();
        match self.pending.get_mut(store) {
            Some(keys) => {
                keys.insert(key.to_string(), index);
            }
            None => {
                let keys = HashMap::from_iter([(key.to_string(), index)]);
                self.pending.insert(store.to_string(), keys);
            }
        }
        self.changes.push(Change {
            store: store.to_string(),
            key: key.to_string(),
            seq,
            held: Held::of(value),
        });
        Ok(())
    }

    /// `new`: the key is certainly not stored (nor buffered) before this transaction.
    /// A stale `true` (a group retried write by write, or a key written twice in one
    /// group) only puts a key in both places, which is harmless: the buffer shadows the
    /// table, and the merge overwrites it (dropping any cached copy).
    pub(crate) fn set(
        &mut self,
        store: &str,
        key: &str,
        value: &[u8],
        new: bool,
    ) -> rusqlite::Result<()> {
        if self.is_buffered(store, key) || (new && self.takes_new(value)) {
            self.append(store, key, Some(value))
        } else {
            self.upsert()?.execute(params![store, key, value]).map(drop)
        }
    }

    pub(crate) fn delete(&mut self, store: &str, key: &str) -> rusqlite::Result<()> {
        if self.is_buffered(store, key) {
            self.append(store, key, None)
        } else {
            self.c
                .prepare_cached(DELETE)?
                .execute(params![store, key])
                .map(drop)
        }
    }
}

pub(crate) const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";
pub(crate) const SELECT: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
pub(crate) const DELETE: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";

/// Applies one (checked) write inside the caller's transaction. The outer error is
/// SQLite failing (the transaction must not commit); the inner result is the write's own
/// answer, an error only for a counter that is not one. `new`: for each key the write
/// may create, whether it is certainly new ([`Shared::new_keys`]).
pub(crate) fn apply(
    routing: &mut Routing,
    store: &str,
    op: &Write,
    new: &[bool],
) -> rusqlite::Result<Result<Written, KvError>> {
    let is_new = |i: usize| new.get(i).copied().unwrap_or(false);
    let c = routing.c;
    Ok(Ok(match op {
        Write::Set { key, value } => {
            routing.set(store, key, value, is_new(0))?;
            Written::Done
        }
        Write::Delete { key } => {
            routing.delete(store, key)?;
            Written::Done
        }
        Write::Increment { key, delta } => {
            let current = match routing.current(store, key)? {
                Some(buffered) => buffered,
                None => c
                    .prepare_cached(SELECT)?
                    .query_row(params![store, key], |r| r.get(0))
                    .optional()?,
            };
            let current = match current.as_deref().map(decode_counter).transpose() {
                Ok(current) => current.unwrap_or(0),
                Err(e) => return Ok(Err(e)),
            };
            let Some(new) = current.checked_add(*delta) else {
                return Ok(Err(KvError::Backend("counter overflow".into())));
            };
            // A counter stays where it is: in the buffer if it is there, else the table.
            routing.set(store, key, &new.to_le_bytes(), false)?;
            Written::Counter(new)
        }
        Write::CompareAndSwap { key, expected, new } => {
            if let Some(current) = routing.current(store, key)? {
                let swapped = current == *expected;
                if swapped {
                    routing.append(store, key, Some(new))?;
                }
                Written::Swapped(swapped)
            } else {
                let changed = match expected {
                    Some(old) => c
                        .prepare_cached("UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3")?
                        .execute(params![store, key, old, new])?,
                    None => c
                        .prepare_cached("INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
                        .execute(params![store, key, new])?,
                };
                Written::Swapped(changed == 1)
            }
        }
        Write::SetMany(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                routing.set(store, k, v, is_new(i))?;
            }
            Written::Done
        }
        Write::DeleteMany(keys) => {
            for k in keys {
                routing.delete(store, k)?;
            }
            Written::Done
        }
    }))
}
