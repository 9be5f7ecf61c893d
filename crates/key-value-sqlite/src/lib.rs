//! The embedded default backend: one SQLite file (WAL) in the data directory.
//!
//! Values are committed before the call returns, so a guest that acknowledges after a
//! `set` has its data on disk; WAL with `synchronous=NORMAL` survives a killed process.
//! The layout is Spin's own (`spin_key_value(store, key, value)`, counters as
//! little-endian i64), so a data file moves between Spin and tiktok-edge.
//!
//! **Group commit.** A guest's writes ([`KeyValueBackend::write`]) are queued, and the
//! guest waits without holding a thread. The first write to find no commit pending
//! starts one: a task that first lets the other runnable requests reach their own
//! writes, then applies every write waiting in one transaction, commits, and answers
//! them all. Under load one commit (and one WAL append of each page touched) serves many
//! requests instead of one write each. (A dedicated committer thread was measured too:
//! faster for big batches, but the hand-offs between threads cost single events 10 %.)
//!
//! **Checkpoints off the write path.** SQLite's automatic checkpoint copies the WAL into
//! the database inside a commit, so every thousandth commit stalled its writers for the
//! copy and an fsync: that was the p99. A checkpointer thread with its own connection
//! copies in the background instead (readers and the writer go on meanwhile). Under
//! constant writes it never catches up to the last commit, and the WAL only starts over
//! once fully copied; so past [`RESTART_FRAMES`] the next group commit first copies the
//! little that is left itself.
//!
//! **Reads beside writes.** A read uses the writer's connection when no commit holds it
//! (its cache is warm), else a reader connection of its own (WAL readers see the last
//! commit), so a guest's read never waits behind a group commit. Hot values are served
//! from memory ([`super::cache`]): the host is the file's only writer, so it knows when
//! one changes. Keys that are certainly absent (a new event's dedup mark) are answered
//! from a Bloom filter of every stored key without a read ([`super::filter`]); a thread
//! of its own builds it from a scan at start and rebuilds it as it fills.
//!
//! **New small keys are buffered.** A random key's insert dirties a page of its own; a
//! small value under a key the filter says is new is appended to a log table instead,
//! kept in memory for reads, and merged into the table later in key order, many keys
//! per page ([`super::buffer`]).

mod buffer;
mod cache;
mod checkpoint;
mod commit;
mod filter;
mod key_scan;
mod merge;
mod open;

use crate::checkpoint::open_checkpointer;
use crate::commit::{DELETE, SELECT, UPSERT};
use crate::merge::recover_buffer;
use crate::open::{open_reader, take_ownership};

#[cfg(test)]
mod tests;

use crate::buffer::{Change, Held, WriteBuffer};
use crate::cache::{Cached, ValueCache};
use crate::filter::{Bloom, KeyFilter, Presence};
use foldhash::HashMap;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tiktok_edge_kv::{
    KeyPage, KeyValue, KeyValueBackend, KvError, Write, WriteFuture, Written, check_key,
};

/// Most keys one `list_keys` call returns, whatever the caller asks.
pub const MAX_PAGE: usize = 10_000;
/// WAL length (pages, 128 MiB) past which a group commit first finishes a checkpoint
/// itself. That catch-up stalls the writes of the moment (a copy and two fsyncs); at
/// 8,192 pages it came every second under load and made the p99 (up to 79 ms for single
/// events). Its fsync is short now that the checkpointer flushes as it copies (20 s of
/// single events at 14.5k/s: p99 5.2 ms and max 10 ms, against 26-28 ms and 60 ms).
const RESTART_FRAMES: i64 = 32_768;
/// SQLite's own checkpoint-in-commit, kept only as a backstop (a checkpointer that
/// keeps failing): past [`RESTART_FRAMES`].
const BACKSTOP_FRAMES: i64 = 2 * RESTART_FRAMES;
/// After a restart, the WAL file is truncated to this size (a little over
/// [`RESTART_FRAMES`], so it is not shrunk and regrown each time).
const WAL_SIZE_LIMIT: i64 = 160 << 20;
/// The writer's page cache, in KiB (SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: i64 = -32 * 1024;
/// Idle read connections kept open.
const IDLE_READERS: usize = 8;

pub struct SqliteBackend {
    shared: Arc<Shared>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    filter_builder: Option<std::thread::JoinHandle<()>>,
    merger: Option<std::thread::JoinHandle<()>>,
}

/// The connections and the write queue, shared with the commit tasks and the
/// checkpointer thread.
struct Shared {
    writer: Mutex<Connection>,
    /// Where readers connect; `None` for a private in-memory database, whose only
    /// connection is the writer.
    path: Option<PathBuf>,
    idle_readers: Mutex<Vec<Connection>>,
    /// Recently read values; every commit drops the keys it wrote.
    cache: ValueCache,
    /// Every stored key (and some deleted ones); every commit adds the keys it wrote.
    filter: KeyFilter,
    /// Wakes the filter's builder when the filter is full, or at close.
    builds: Mutex<Builds>,
    build_wake: Condvar,
    /// New small keys not yet in the table; `None` for the in-memory database (no
    /// filter to tell new keys, and nothing to gain).
    buffer: Option<WriteBuffer>,
    /// The seq of the next buffered write; changed under the writer's lock.
    next_seq: AtomicI64,
    /// Wakes the merger when the buffer has filled, or at close.
    merges: Mutex<Merges>,
    merge_wake: Condvar,
    queue: Mutex<Pending>,
    checkpoints: Mutex<Checkpoints>,
    /// Wakes the checkpointer after a commit, or at close.
    checkpoint_wake: Condvar,
    /// Set by the checkpointer when the WAL is past `restart_frames`.
    catch_up: AtomicBool,
    /// [`RESTART_FRAMES`], lower in tests.
    restart_frames: i64,
    /// Held while the file is open (the last commit task may outlive the backend): a
    /// second host on the same data dir fails at start.
    _owner: Option<std::fs::File>,
    /// The database file, for the checkpointer to flush what it copied (see
    /// [`Shared::checkpoint_until_closed`]). Declared last so it closes after every
    /// connection: closing a descriptor drops all the process's POSIX locks on the
    /// file, SQLite's included.
    data_file: Option<std::fs::File>,
}

/// Writes waiting for a commit, and whether a leader is committing.
#[derive(Default)]
struct Pending {
    waiting: Vec<Queued>,
    leader: bool,
}

/// Commits made, for the checkpointer to know when there is something to copy.
#[derive(Default)]
struct Checkpoints {
    commits: u64,
    closing: bool,
}

/// The merger's state; `merge_at_close` is set false by tests that leave the buffer as
/// a crash would.
struct Merges {
    closing: bool,
    merge_at_close: bool,
    /// When a commit last buffered a key.
    last_buffered: Instant,
    /// When the last merge round ended (or the store opened).
    last_round: Instant,
}

/// Settings of the SQLite store: `[key_value]` in the runtime config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteOptions {
    /// Most new small keys (dedup marks) held in the write buffer ([`super::buffer`]):
    /// about 160 bytes of memory each, 280 MiB at the default 1,835,008; 0 turns the
    /// buffer off.
    pub write_buffer_keys: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            write_buffer_keys: buffer::DEFAULT_CAPACITY,
        }
    }
}

/// Whether the key filter wants building.
#[derive(Default)]
struct Builds {
    wanted: bool,
    closing: bool,
}

/// What a build of the key filter did.
enum Built {
    Filter { keys: usize, bytes: usize },
    TooManyKeys,
    Closing,
}

/// How a scan of the table's keys ended.
enum Scanned {
    Keys(usize),
    TooMany,
    Closing,
}

/// A column value kept as SQLite stored it: text that is not UTF-8 (a file written by
/// another tool) too, which `rusqlite::types::Value` cannot hold.
enum Stored {
    Text(Vec<u8>),
    Other(rusqlite::types::Value),
}

impl From<rusqlite::types::ValueRef<'_>> for Stored {
    fn from(value: rusqlite::types::ValueRef<'_>) -> Self {
        match value {
            rusqlite::types::ValueRef::Text(text) => Stored::Text(text.to_vec()),
            other => Stored::Other(other.into()),
        }
    }
}

impl rusqlite::ToSql for Stored {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            Stored::Text(text) => rusqlite::types::ValueRef::Text(text),
            Stored::Other(value) => value.into(),
        }))
    }
}

/// A write waiting for its group commit.
struct Queued {
    store: String,
    op: Write,
    reply: tokio::sync::oneshot::Sender<Result<Written, KvError>>,
}

fn backend(e: rusqlite::Error) -> KvError {
    KvError::Backend(e.to_string())
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path`, with the default settings.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        Self::open_with_options(path, &SqliteOptions::default())
    }

    /// Opens the database at `path` with the runtime config's `[key_value]` settings.
    pub fn open_with_options(path: &Path, options: &SqliteOptions) -> Result<Self, KvError> {
        Self::open_with(path, options, RESTART_FRAMES, true)
    }

    /// `filter_builds`: false in tests that build the key filter and merge the write
    /// buffer themselves (no threads for either).
    fn open_with(
        path: &Path,
        options: &SqliteOptions,
        restart_frames: i64,
        filter_builds: bool,
    ) -> Result<Self, KvError> {
        let owner = take_ownership(path)?;
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_FRAMES)
            .map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(backend)?;
        // SQLite's default 2 MiB cache misses on most random inserts (dedup marks) once
        // the table outgrows it, and a big group spills dirty pages mid-transaction:
        // 32 MiB made 50-event batches 6-13 % faster; 64 MiB did no better.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(backend)?;
        Self::init(
            conn,
            Some(path.to_path_buf()),
            Some(owner),
            options.write_buffer_keys,
            restart_frames,
            filter_builds,
        )
    }

    /// A private in-memory database, for tests and embedders that want no files.
    pub fn in_memory() -> Result<Self, KvError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        // Its one connection is always the writer's, warm: nothing to filter.
        Self::init(conn, None, None, 0, RESTART_FRAMES, false)
    }

    fn init(
        conn: Connection,
        path: Option<PathBuf>,
        owner: Option<std::fs::File>,
        buffer_keys: usize,
        restart_frames: i64,
        filter_builds: bool,
    ) -> Result<Self, KvError> {
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            ) WITHOUT ROWID;",
        )
        .map_err(backend)?;
        conn.execute_batch(buffer::CREATE_LOG).map_err(backend)?;
        // What a crash left buffered goes to the table before anything else runs.
        let recovered = recover_buffer(&conn).map_err(backend)?;
        if recovered > 0 {
            tracing::info!(
                writes = recovered,
                "merged the writes a previous run left buffered"
            );
        }
        let checkpointer = path.as_deref().map(open_checkpointer).transpose()?;
        let data_file = path
            .as_deref()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(p)
                    .map_err(|e| KvError::Backend(format!("cannot open {}: {e}", p.display())))
            })
            .transpose()?;
        // New keys are told by the key filter, which only a file store has.
        let buffering = path.is_some() && buffer_keys > 0;
        let shared = Arc::new(Shared {
            writer: Mutex::new(conn),
            path,
            idle_readers: Mutex::default(),
            cache: ValueCache::default(),
            filter: KeyFilter::default(),
            builds: Mutex::new(Builds {
                wanted: true,
                closing: false,
            }),
            build_wake: Condvar::new(),
            buffer: buffering.then(|| WriteBuffer::new(buffer_keys)),
            next_seq: AtomicI64::new(1),
            merges: Mutex::new(Merges {
                closing: false,
                merge_at_close: true,
                last_buffered: Instant::now(),
                last_round: Instant::now(),
            }),
            merge_wake: Condvar::new(),
            queue: Mutex::default(),
            checkpoints: Mutex::default(),
            checkpoint_wake: Condvar::new(),
            catch_up: AtomicBool::new(false),
            restart_frames,
            _owner: owner,
            data_file,
        });
        let checkpointer = checkpointer
            .map(|conn| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name("kv-checkpoint".into())
                    .spawn(move || shared.checkpoint_until_closed(conn))
                    .map_err(|e| {
                        KvError::Backend(format!("cannot start the checkpoint thread: {e}"))
                    })
            })
            .transpose()?;
        let filter_builder = match &shared.path {
            Some(path) if filter_builds => {
                let conn = open_reader(path)?;
                let shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name("kv-key-filter".into())
                    .spawn(move || shared.filter_keys_until_closed(conn))
                    .map_err(|e| {
                        KvError::Backend(format!("cannot start the key filter thread: {e}"))
                    })?;
                Some(thread)
            }
            _ => None,
        };
        let merger = match &shared.buffer {
            Some(_) if filter_builds => {
                let shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name("kv-merge".into())
                    .spawn(move || shared.merge_until_closed())
                    .map_err(|e| KvError::Backend(format!("cannot start the merge thread: {e}")))?;
                Some(thread)
            }
            _ => None,
        };
        Ok(SqliteBackend {
            shared,
            checkpointer,
            filter_builder,
            merger,
        })
    }

    /// A read that never waits for a commit in progress: on the writer's connection if
    /// it is free, else on an idle reader connection (a new one if none is idle).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, KvError> {
        let Some(path) = &self.shared.path else {
            return f(&lock(&self.shared.writer)).map_err(backend);
        };
        // The writer's cache is warm (a reader's is dropped at every commit it did not
        // make): use it when no commit holds it.
        if let Ok(writer) = self.shared.writer.try_lock() {
            return f(&writer).map_err(backend);
        }
        let idle = lock(&self.shared.idle_readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(path)?,
        };
        let result = f(&conn).map_err(backend);
        let mut idle = lock(&self.shared.idle_readers);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// One write in its own transaction, now, on the caller's thread.
    fn run(&self, store: &str, op: &Write) -> Result<Written, KvError> {
        op.check()?;
        let added = self
            .shared
            .filter
            .hashes(op.added_keys().map(|k| (store, k)));
        let mut writer = lock(&self.shared.writer);
        let new = self.shared.new_keys(&added);
        self.shared.filter_adds(added);
        let result = self.shared.run_alone(&mut writer, store, op, &new);
        self.shared.cache.written(op.keys().map(|k| (store, k)));
        result
    }

    /// The value of a buffered key too big to keep in memory, from the log row of
    /// `seq`. If that row is gone, the key was written again (its newer entry is read
    /// instead) or merged and retired: `None`, the table has the value.
    fn logged_value(
        &self,
        store: &str,
        key: &str,
        mut seq: i64,
    ) -> Result<Option<Option<Vec<u8>>>, KvError> {
        let Some(buffer) = &self.shared.buffer else {
            return Ok(None);
        };
        loop {
            let row: Option<Option<Vec<u8>>> = self.read(|c| {
                c.prepare_cached(buffer::LOGGED_VALUE)?
                    .query_row([seq], |r| r.get(0))
                    .optional()
            })?;
            if row.is_some() {
                return Ok(row);
            }
            match buffer.entry(store, key) {
                Some(entry) if entry.seq != seq => match entry.held {
                    Held::Value(v) => return Ok(Some(Some(v))),
                    Held::Deleted => return Ok(Some(None)),
                    Held::Logged => seq = entry.seq,
                },
                _ => return Ok(None),
            }
        }
    }

    /// Values of `keys`, from the cache when it has them, else read (and kept).
    fn cached_values(&self, store: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut values = Vec::with_capacity(keys.len());
        let mut missed = Vec::new();
        // Taken at the first miss: hot records are all hits.
        let mut filter = None;
        // Buffered keys are newer than the table; looked up first (the merger retires
        // an entry only after the table has its value).
        let buffered = match &self.shared.buffer {
            Some(buffer) => buffer.entries(store, keys.iter().map(String::as_str)),
            None => Vec::new(),
        };
        let mut logged = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(entry) = buffered.get(i).and_then(Option::as_ref) {
                values.push(match &entry.held {
                    Held::Value(v) => Some(v.clone()),
                    Held::Deleted => None,
                    Held::Logged => {
                        logged.push((i, entry.seq));
                        None
                    }
                });
                continue;
            }
            match self.shared.cache.get(store, key) {
                Cached::Hit(v) => values.push(Some(v)),
                Cached::Miss(generation) => {
                    values.push(None);
                    let absent = filter
                        .get_or_insert_with(|| self.shared.filter.lookup())
                        .as_ref()
                        .is_some_and(|f| f.presence(store, key) == Presence::Absent);
                    if !absent {
                        missed.push((i, generation));
                    }
                }
            }
        }
        for (i, seq) in logged {
            match self.logged_value(store, &keys[i], seq)? {
                Some(value) => values[i] = value,
                // Merged and retired since: the table has it (read, not kept: no
                // generation matches u64::MAX).
                None => missed.push((i, u64::MAX)),
            }
        }
        if missed.is_empty() {
            return Ok(values);
        }
        let read: Vec<Option<Vec<u8>>> = self.read(|c| {
            let mut stmt = c.prepare_cached(SELECT)?;
            missed
                .iter()
                .map(|(i, _)| {
                    stmt.query_row(params![store, keys[*i]], |r| r.get(0))
                        .optional()
                })
                .collect()
        })?;
        for ((i, generation), value) in missed.into_iter().zip(read) {
            if let Some(v) = &value {
                self.shared.cache.fill(store, &keys[i], v, generation);
            }
            values[i] = value;
        }
        Ok(values)
    }
}

impl Drop for SqliteBackend {
    /// Stops the threads, so the file is closed (and free to reopen) once the last
    /// commit task is done with it, and merges the write buffer, so the file at rest is
    /// Spin's layout alone.
    fn drop(&mut self) {
        lock(&self.shared.checkpoints).closing = true;
        self.shared.checkpoint_wake.notify_one();
        lock(&self.shared.builds).closing = true;
        self.shared.build_wake.notify_one();
        lock(&self.shared.merges).closing = true;
        self.shared.merge_wake.notify_one();
        for thread in [
            self.checkpointer.take(),
            self.filter_builder.take(),
            self.merger.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = thread.join();
        }
        if lock(&self.shared.merges).merge_at_close {
            self.shared.merge_all();
        }
        lock(&self.shared.idle_readers).clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode_counter(bytes: &[u8]) -> Result<i64, KvError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| KvError::NotACounter)?;
    Ok(i64::from_le_bytes(arr))
}

impl KeyValueBackend for SqliteBackend {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        let mut values = self.cached_values(store, std::slice::from_ref(&key.to_string()))?;
        Ok(values.pop().flatten())
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let op = Write::Set {
            key: key.to_string(),
            value: value.to_vec(),
        };
        self.run(store, &op).map(drop)
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        let op = Write::Delete {
            key: key.to_string(),
        };
        self.run(store, &op).map(drop)
    }

    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        if let Some(entry) = self
            .shared
            .buffer
            .as_ref()
            .and_then(|b| b.entry(store, key))
        {
            return Ok(entry.held != Held::Deleted);
        }
        if let Some(filter) = self.shared.filter.lookup()
            && filter.presence(store, key) == Presence::Absent
        {
            return Ok(false);
        }
        self.read(|c| {
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
        // The buffer first: an entry leaves it only once the table has it. A page is
        // not one snapshot (nor were pages before): a key written or deleted while it is
        // listed may or may not be in it.
        let buffered = match &self.shared.buffer {
            Some(buffer) => buffer.keys_after(store, cursor),
            None => Vec::new(),
        };
        let mut keys = Vec::new();
        let mut after = cursor.map(str::to_string);
        let mut buffered = buffered.into_iter().peekable();
        loop {
            let page: Vec<String> = self.read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT key FROM spin_key_value WHERE store = ?1 AND (?2 IS NULL OR key > ?2) ORDER BY key LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![store, after, (limit + 1) as i64], |r| r.get(0))?;
                rows.collect()
            })?;
            let last_page = page.len() <= limit;
            let page_end = page.last().cloned();
            // Merges this page with the buffered keys up to its end (all of them after
            // the last page); a buffered delete hides the table's key.
            let mut table = page.into_iter().peekable();
            loop {
                let from_table = match (table.peek(), buffered.peek()) {
                    (None, None) => break,
                    (Some(_), None) => true,
                    (None, Some(_)) if !last_page => break,
                    (None, Some(_)) => false,
                    (Some(t), Some((b, _))) => t < b,
                };
                if from_table {
                    keys.push(table.next().expect("peeked"));
                } else {
                    let (key, live) = buffered.next().expect("peeked");
                    if table.peek() == Some(&key) {
                        table.next();
                    }
                    if live {
                        keys.push(key);
                    }
                }
            }
            if last_page || keys.len() > limit {
                break;
            }
            // Buffered deletes hid all of a page: the next starts after its end.
            after = page_end;
        }
        let cursor = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
    }

    fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let op = Write::Increment {
            key: key.to_string(),
            delta,
        };
        match self.run(store, &op)? {
            Written::Counter(n) => Ok(n),
            other => Err(other.unexpected()),
        }
    }

    fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let op = Write::CompareAndSwap {
            key: key.to_string(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        match self.run(store, &op)? {
            Written::Swapped(swapped) => Ok(swapped),
            other => Err(other.unexpected()),
        }
    }

    fn get_many(&self, store: &str, keys: &[String]) -> Result<Vec<KeyValue>, KvError> {
        keys.iter().try_for_each(|k| check_key(k))?;
        let values = self.cached_values(store, keys)?;
        Ok(keys.iter().cloned().zip(values).collect())
    }

    fn set_many(&self, store: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.run(store, &Write::SetMany(pairs.to_vec())).map(drop)
    }

    fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError> {
        self.run(store, &Write::DeleteMany(keys.to_vec())).map(drop)
    }

    fn write(&self, store: &str, op: Write) -> WriteFuture {
        if let Err(e) = op.check() {
            return Box::pin(std::future::ready(Err(e)));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = lock(&self.shared.queue);
            q.waiting.push(Queued {
                store: store.to_string(),
                op,
                reply,
            });
            !std::mem::replace(&mut q.leader, true)
        };
        // The committer sleeps only on an empty queue; a busy one finds this write when
        // it takes its next group.
        if lead {
            self.shared.start_commit();
        }
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(KvError::Backend("the write was dropped".into())))
        })
    }
}
