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

use super::buffer::{self, Change, Held, WriteBuffer};
use super::cache::{Cached, ValueCache};
use super::filter::{Bloom, KeyFilter, Presence};
use super::{KeyPage, KeyValue, KeyValueBackend, KvError, Write, WriteFuture, Written, check_key};
use foldhash::HashMap;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Most keys one `list_keys` call returns, whatever the caller asks.
pub const MAX_PAGE: usize = 10_000;
/// Most writes one group commit takes; the rest wait for the next.
const MAX_GROUP: usize = 512;
/// The checkpointer waits this long after a commit before copying, so a page that many
/// groups in a row rewrite is copied to the database once.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(20);
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
/// Keys the key filter's scan reads per query (each its own short read transaction, so
/// the scan never holds the WAL back for long).
const SCAN_PAGE: i64 = 10_000;
/// Above this many keys the store goes unfiltered: a filter takes 2.5 bytes per key it is
/// built for (80 MiB here, and the one it replaces up to as much again until the build is
/// done). Every lookup then reads SQLite, as before the filter, and no new key is
/// buffered; the count is checked again after [`UNFILTERED_RETRY`].
const MAX_FILTERED_KEYS: usize = 32 << 20;
const UNFILTERED_RETRY: Duration = Duration::from_secs(600);
/// A merge round starts once the buffer is three quarters full (the last quarter takes
/// the new keys that come while the round runs) ...
const MERGE_AT_FULL: (usize, usize) = (3, 4);
/// ... or once no key has been buffered for this long (a burst is over: the merge costs
/// it nothing) ...
const MERGE_WHEN_QUIET: Duration = Duration::from_secs(1);
/// ... or this long after the last round, so a steady trickle is merged too (and a crash
/// leaves little to replay at the next open).
const MERGE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the merger looks at the clock while keys are buffered.
const MERGE_POLL: Duration = Duration::from_millis(250);
/// Pause after a merge round failed, before the next tries again.
const MERGE_RETRY: Duration = Duration::from_secs(1);
/// Most keys one merge transaction copies to the table. The writer's lock is held
/// meanwhile (group commits wait), so it is kept to about [`MERGE_HOLD`]: at 1,024 keys,
/// single events had p99 10 ms against 6.6 ms. Keys share pages as much in small chunks:
/// that depends on how many keys a round has, not a chunk.
const MERGE_CHUNK: usize = 256;
/// Fewest keys a merge transaction copies, however slow the last one was.
const MIN_MERGE_CHUNK: usize = 16;
/// How long a merge transaction should hold the writer's lock. A chunk is sized from how
/// long the last one took: once the table outgrows the page cache, a key costs a page
/// read and write of its own, and 256 keys held the lock 3-4 ms a minute into a load of
/// single events, whose p99 rose past 10 ms.
const MERGE_HOLD: Duration = Duration::from_millis(1);
/// The merger's pause between two chunks, so the group commits waiting for the
/// writer's lock get it (a mutex is not fair: a thread that releases it and takes it
/// again at once mostly wins).
const MERGE_PAUSE: Duration = Duration::from_micros(500);
/// Log rows one transaction deletes at the end of a merge round.
const RETIRE_CHUNK: i64 = 4096;
/// Least time between two builds of the key filter, so a filter that fills quickly
/// (a store that doubles fast) costs at most one scan each second.
const MIN_BUILD_INTERVAL: Duration = Duration::from_secs(1);

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

/// Locks `{path}.lock` for the life of the store (the kernel drops it if the process
/// dies). SQLite's own locks would let a second host share the file; a second `up` on
/// the same data dir is a mistake (two schedulers, two caches writing the same files),
/// so it is refused at start with a clear error.
fn take_ownership(path: &Path) -> Result<std::fs::File, KvError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| {
            KvError::Backend(format!("cannot open {}: {e}", Path::new(&name).display()))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(KvError::Backend(format!(
            "{} is in use by another process (another tiktok-edge on the same data dir?)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(KvError::Backend(format!(
            "cannot lock {}: {e}",
            Path::new(&name).display()
        ))),
    }
}

fn open_reader(path: &Path) -> Result<Connection, KvError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    Ok(conn)
}

fn open_checkpointer(path: &Path) -> Result<Connection, KvError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    Ok(conn)
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what no reader still needs, waits for
/// nobody. Returns (SQLite was busy, WAL pages, pages copied).
fn checkpoint(conn: &Connection) -> rusqlite::Result<(bool, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?))
    })
}

impl Shared {
    /// Starts a commit task (see the module docs); without a runtime, commits now.
    fn start_commit(self: &Arc<Self>) {
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
    fn lead(self: &Arc<Self>) {
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
    fn commit(&self, group: Vec<Queued>) {
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

    /// The checkpointer thread: after commits, waits [`CHECKPOINT_DELAY`] and copies
    /// the WAL into the database on its own connection, until the backend is dropped.
    ///
    /// It also flushes the database file after each copy. SQLite syncs it only when a
    /// checkpoint reaches the end of the WAL, which under constant writes never happens
    /// here (commits go on during the copy) but only in the catch-up, inside a group
    /// commit: that fsync then wrote back every page copied since the last restart, and
    /// the stall grew with them (20-60 ms, every second at 16k single events/s).
    fn checkpoint_until_closed(&self, conn: Connection) {
        let mut seen = 0;
        let mut flushed = 0;
        loop {
            {
                let mut c = lock(&self.checkpoints);
                while c.commits == seen && !c.closing {
                    c = self
                        .checkpoint_wake
                        .wait(c)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if c.closing {
                    return;
                }
                seen = c.commits;
            }
            std::thread::sleep(CHECKPOINT_DELAY);
            match checkpoint(&conn) {
                Ok((_, log, copied)) => {
                    // First, so the catch-up is not delayed by the flush (it then
                    // flushes at most this one copy's pages itself).
                    if log >= self.restart_frames {
                        self.catch_up.store(true, Ordering::Relaxed)
                    }
                    if copied != flushed
                        && let Some(file) = &self.data_file
                    {
                        match file.sync_data() {
                            Ok(()) => flushed = copied,
                            Err(e) => tracing::warn!(error = %e, "flushing the database failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "background checkpoint failed"),
            }
        }
    }
}

impl Shared {
    /// Adds the keys a commit may create (hashed by [`KeyFilter::hashes`]) to the key
    /// filter; call with the writer's lock held, before the commit. Wakes the builder
    /// when the filter is full.
    fn filter_adds(&self, hashes: Vec<u64>) {
        if self.filter.add(hashes) {
            lock(&self.builds).wanted = true;
            self.build_wake.notify_one();
        }
    }

    /// The key filter's thread: builds it at start, then again whenever it is full, at
    /// most once per [`MIN_BUILD_INTERVAL`], until the backend is dropped.
    fn filter_keys_until_closed(&self, conn: Connection) {
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
    fn build_filter_guarded(
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
    fn build_filter(
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
    fn filter_headroom(&self) -> usize {
        self.buffer
            .as_ref()
            .map_or(0, |b| b.capacity().saturating_mul(2).min(MAX_FILTERED_KEYS))
    }

    fn too_many_keys(&self) -> Built {
        self.filter.disable();
        Built::TooManyKeys
    }

    /// Calls `each` with every key a guest could have written (store and key are
    /// strings), in pages of [`SCAN_PAGE`] keys, each its own read transaction; stops
    /// past `max_keys` such keys, or when the backend closes.
    fn scan_keys(
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

impl Shared {
    /// The merger thread: a merge round whenever [`round_due`] says so, until the
    /// backend is dropped.
    fn merge_until_closed(&self) {
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
    fn merge_all(&self) {
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
    fn merge_round(&self) -> rusqlite::Result<()> {
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
    fn merge_chunks(&self) -> rusqlite::Result<i64> {
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
    fn retire_merged(&self, upto: i64) -> rusqlite::Result<()> {
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
const MERGE_LOGGED: &str = "INSERT INTO spin_key_value (store, key, value)
     SELECT store, key, value FROM tiktok_edge_kv_buffer WHERE seq = ?1
     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";

/// At open: merges what a crash left in the write buffer's log into the table (the
/// newest write of each key) and empties the log. Returns the log rows found.
fn recover_buffer(conn: &Connection) -> rusqlite::Result<usize> {
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commits the waiting group when dropped: after the task's yield, or when a runtime
/// that is shutting down drops the task unrun, so no write is left waiting.
struct CommitOnDrop(Arc<Shared>);

impl Drop for CommitOnDrop {
    fn drop(&mut self) {
        self.0.lead();
    }
}

/// Hands leadership back if the leader panics, so later writes are not left waiting
/// for a leader that is gone.
struct Leadership<'a>(&'a Mutex<Pending>);

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
    fn new_keys(&self, hashes: &[u64]) -> Vec<bool> {
        match (&self.buffer, self.filter.lookup()) {
            (Some(_), Some(filter)) => hashes
                .iter()
                .map(|h| filter.presence_of(*h) == Presence::Absent)
                .collect(),
            _ => vec![false; hashes.len()],
        }
    }

    fn routing<'c>(&self, c: &'c Connection) -> Routing<'_, 'c> {
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
    fn commit_group(&self, conn: &mut Connection, group: &[Queued], new: &[bool]) -> Answers {
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

    fn run_alone(
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
    fn buffered(&self, changes: Vec<Change>) {
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
fn round_due(len: usize, capacity: usize, quiet: Duration, since_round: Duration) -> bool {
    let (num, den) = MERGE_AT_FULL;
    len > 0
        && (len.saturating_mul(den) >= capacity.saturating_mul(num)
            || quiet >= MERGE_WHEN_QUIET
            || since_round >= MERGE_INTERVAL)
}

/// The keys of the next merge transaction, after one of `keys` held the writer's lock for
/// `held`: as many as fit in [`MERGE_HOLD`] at that pace.
fn next_chunk(keys: usize, held: Duration) -> usize {
    let per_key = held.as_secs_f64() / keys.max(1) as f64;
    let fit = MERGE_HOLD.as_secs_f64() / per_key.max(1e-9);
    (fit as usize).clamp(MIN_MERGE_CHUNK, MERGE_CHUNK)
}

/// Each write's answer, in order.
type Answers = Vec<Result<Written, KvError>>;

/// Where a transaction's writes go: the table, or the write buffer ([`super::buffer`]).
struct Routing<'a, 'c> {
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
    fn upsert(&mut self) -> rusqlite::Result<&mut rusqlite::CachedStatement<'c>> {
        if self.upsert.is_none() {
            self.upsert = Some(self.c.prepare_cached(UPSERT)?);
        }
        Ok(self.upsert.as_mut().expect("just prepared"))
    }

    fn append_statement(&mut self) -> rusqlite::Result<&mut rusqlite::CachedStatement<'c>> {
        if self.append.is_none() {
            self.append = Some(self.c.prepare_cached(buffer::APPEND)?);
        }
        Ok(self.append.as_mut().expect("just prepared"))
    }

    /// This transaction's buffered writes, releasing its statements (so it can commit).
    fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// The key's newest buffered (seq, value), this transaction's writes first; `None`
    /// when it is not buffered.
    fn buffered(&self, store: &str, key: &str) -> Option<(i64, Held)> {
        let buffer = self.buffer?;
        if let Some(&i) = self.pending.get(store).and_then(|keys| keys.get(key)) {
            let change = &self.changes[i];
            return Some((change.seq, change.held.clone()));
        }
        buffer.entry(store, key).map(|e| (e.seq, e.held))
    }

    /// The key's newest buffered value: `None` when it is not buffered, `Some(None)`
    /// when it was deleted.
    fn current(&self, store: &str, key: &str) -> rusqlite::Result<Option<Option<Vec<u8>>>> {
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

    fn is_buffered(&self, store: &str, key: &str) -> bool {
        self.buffer.is_some_and(|b| {
            self.pending
                .get(store)
                .is_some_and(|keys| keys.contains_key(key))
                || b.contains(store, key)
        })
    }

    /// Whether a new key's value may be buffered: small, and room left.
    fn takes_new(&self, value: &[u8]) -> bool {
        self.buffer.is_some_and(|b| {
            value.len() <= buffer::MAX_HELD_VALUE && b.len() + self.changes.len() < b.capacity()
        })
    }

    fn append(&mut self, store: &str, key: &str, value: Option<&[u8]>) -> rusqlite::Result<()> {
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
    fn set(&mut self, store: &str, key: &str, value: &[u8], new: bool) -> rusqlite::Result<()> {
        if self.is_buffered(store, key) || (new && self.takes_new(value)) {
            self.append(store, key, Some(value))
        } else {
            self.upsert()?.execute(params![store, key, value]).map(drop)
        }
    }

    fn delete(&mut self, store: &str, key: &str) -> rusqlite::Result<()> {
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

const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";
const SELECT: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const DELETE: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";

/// Applies one (checked) write inside the caller's transaction. The outer error is
/// SQLite failing (the transaction must not commit); the inner result is the write's own
/// answer, an error only for a counter that is not one. `new`: for each key the write
/// may create, whether it is certainly new ([`Shared::new_keys`]).
fn apply(
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

    #[tokio::test]
    async fn a_read_after_any_write_sees_it_though_the_old_value_was_cached() {
        let b = SqliteBackend::in_memory().unwrap();
        let read = |key: &str| {
            b.get_many("s", &[key.to_string()]).unwrap()[0]
                .1
                .clone()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let writes: Vec<(Write, &str, Option<&str>)> = vec![
            (
                Write::Set {
                    key: "k".into(),
                    value: b"v2".to_vec(),
                },
                "k",
                Some("v2"),
            ),
            (
                Write::CompareAndSwap {
                    key: "k".into(),
                    expected: Some(b"v2".to_vec()),
                    new: b"v3".to_vec(),
                },
                "k",
                Some("v3"),
            ),
            (
                Write::SetMany(vec![("k".into(), b"v4".to_vec())]),
                "k",
                Some("v4"),
            ),
            (Write::DeleteMany(vec!["k".into()]), "k", None),
            (
                Write::Set {
                    key: "k".into(),
                    value: b"v5".to_vec(),
                },
                "k",
                Some("v5"),
            ),
            (Write::Delete { key: "k".into() }, "k", None),
        ];
        b.set("s", "k", b"v1").unwrap();
        for (write, key, expected) in writes {
            let before = read(key);
            assert_eq!(
                b.get("s", key)
                    .unwrap()
                    .map(|v| String::from_utf8(v).unwrap()),
                before
            );
            b.write("s", write.clone()).await.unwrap();
            assert_eq!(read(key).as_deref(), expected, "after {write:?}");
            assert_eq!(b.get("s", key).unwrap().is_some(), expected.is_some());
        }
        b.set("s", "n", &1i64.to_le_bytes()).unwrap();
        assert_eq!(b.get("s", "n").unwrap(), Some(1i64.to_le_bytes().to_vec()));
        b.write(
            "s",
            Write::Increment {
                key: "n".into(),
                delta: 2,
            },
        )
        .await
        .unwrap();
        assert_eq!(b.get("s", "n").unwrap(), Some(3i64.to_le_bytes().to_vec()));
        b.set("s", "n", &7i64.to_le_bytes()).unwrap();
        assert_eq!(
            b.get("s", "n").unwrap(),
            Some(7i64.to_le_bytes().to_vec()),
            "sync writes too"
        );
    }

    #[tokio::test]
    async fn a_write_sqlite_refuses_fails_alone_and_the_rest_of_its_group_commits() {
        let b = SqliteBackend::in_memory().unwrap();
        // SQLite refusing one write (as a full disk or a bad page would) rolls back its
        // whole group's transaction.
        lock(&b.shared.writer)
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON spin_key_value
                 WHEN NEW.key = 'refused' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        let set = |key: &str, value: &[u8]| Write::Set {
            key: key.into(),
            value: value.to_vec(),
        };
        let writes = vec![
            b.write("s", set("before", b"1")),
            b.write("s", set("refused", b"2")),
            b.write(
                "s",
                Write::Increment {
                    key: "n".into(),
                    delta: 5,
                },
            ),
            b.write("s", set("after", b"3")),
        ];
        assert_eq!(lock(&b.shared.queue).waiting.len(), 4, "one group");
        let answers = futures::future::join_all(writes).await;
        assert_eq!(answers[0], Ok(Written::Done));
        assert!(
            matches!(&answers[1], Err(KvError::Backend(m)) if m.contains("refused by the test")),
            "{:?}",
            answers[1]
        );
        assert_eq!(answers[2], Ok(Written::Counter(5)));
        assert_eq!(answers[3], Ok(Written::Done));
        assert_eq!(b.get("s", "before").unwrap(), Some(b"1".to_vec()));
        assert_eq!(b.get("s", "after").unwrap(), Some(b"3".to_vec()));
        assert_eq!(b.get("s", "refused").unwrap(), None);
        assert_eq!(
            b.increment("s", "n", 0).unwrap(),
            5,
            "applied once, not once per try"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_in_groups_with_their_own_answers() {
        let b = Arc::new(SqliteBackend::in_memory().unwrap());
        b.set("s", "text", b"not a counter").unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let counter = b
                    .write(
                        "s",
                        Write::Increment {
                            key: "n".into(),
                            delta: 1,
                        },
                    )
                    .await;
                let own = b
                    .write(
                        "s",
                        Write::Set {
                            key: format!("k{i}"),
                            value: vec![i as u8],
                        },
                    )
                    .await;
                let claimed = b
                    .write(
                        "s",
                        Write::CompareAndSwap {
                            key: "claim".into(),
                            expected: None,
                            new: vec![i as u8],
                        },
                    )
                    .await;
                // A bad write in someone's group answers for itself only.
                let bad = b
                    .write(
                        "s",
                        Write::Increment {
                            key: "text".into(),
                            delta: 1,
                        },
                    )
                    .await;
                (counter, own, claimed, bad)
            }));
        }
        let mut counters = Vec::new();
        let mut claims = 0;
        for t in tasks {
            let (counter, own, claimed, bad) = t.await.unwrap();
            match counter.unwrap() {
                Written::Counter(n) => counters.push(n),
                other => panic!("{other:?}"),
            }
            assert_eq!(own.unwrap(), Written::Done);
            if claimed.unwrap() == Written::Swapped(true) {
                claims += 1;
            }
            assert_eq!(bad, Err(KvError::NotACounter));
        }
        counters.sort();
        assert_eq!(
            counters,
            (1..=200).collect::<Vec<_>>(),
            "every increment saw its own value"
        );
        assert_eq!(claims, 1, "exactly one compare-and-swap from absent wins");
        assert_eq!(b.increment("s", "n", 0).unwrap(), 200);
        for i in 0..200 {
            assert_eq!(b.get("s", &format!("k{i}")).unwrap(), Some(vec![i as u8]));
        }
        assert_eq!(
            b.write(
                "s",
                Write::Set {
                    key: "k".repeat(256),
                    value: vec![]
                }
            )
            .await,
            Err(KvError::KeyTooLong),
            "limits are checked before a write is queued"
        );
    }

    #[test]
    fn a_write_queued_as_its_runtime_shuts_down_is_still_committed() {
        let b = SqliteBackend::in_memory().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pending = {
            let _inside = runtime.enter();
            b.write(
                "s",
                Write::Set {
                    key: "k".into(),
                    value: b"v".to_vec(),
                },
            )
        };
        drop(runtime); // its commit task never ran
        let answer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), pending).await
            });
        assert_eq!(
            answer,
            Ok(Ok(Written::Done)),
            "the write was answered, not left waiting"
        );
        assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(
            b.write_now_for_test(),
            Ok(Written::Done),
            "leadership was handed back: a later write commits too"
        );
    }

    impl SqliteBackend {
        fn write_now_for_test(&self) -> Result<Written, KvError> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(self.write("s", Write::Delete { key: "k".into() }))
        }
    }

    #[test]
    fn a_second_store_on_the_same_file_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        let first = SqliteBackend::open(&path).unwrap();
        let Err(KvError::Backend(e)) = SqliteBackend::open(&path) else {
            panic!("a second store opened the same file");
        };
        assert!(e.contains("in use by another process"), "{e}");
        drop(first);
        SqliteBackend::open(&path).unwrap();
    }

    #[test]
    fn reads_do_not_wait_for_a_commit_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("kv.sqlite")).unwrap();
        b.set("s", "k", b"committed").unwrap();
        let _committing = lock(&b.shared.writer);
        assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"committed"[..]));
        assert_eq!(b.get_many("s", &["k".into()]).unwrap().len(), 1);
        assert!(b.exists("s", "k").unwrap());
        assert_eq!(b.list_keys("s", None, 10).unwrap().keys, ["k"]);
    }

    /// Pages in the WAL, as a checkpoint on a fresh connection reports it.
    fn wal_pages(path: &Path) -> i64 {
        checkpoint(&open_checkpointer(path).unwrap()).unwrap().1
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_copied_in_the_background_and_starts_over_under_constant_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        let b =
            Arc::new(SqliteBackend::open_with(&path, &SqliteOptions::default(), 64, true).unwrap());
        // Writers that never pause: without the committer's catch-up the background
        // copies never reach the last commit, and the WAL grows without end.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..800 {
                        b.write(
                            "s",
                            Write::Set {
                                key: format!("w{w}/{}", i % 50),
                                value: vec![i as u8; 4096],
                            },
                        )
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        // 3,200 writes of a 4 KiB value: over 6,400 pages appended in all. How far the
        // WAL got between restarts depends on the machine's timing (about 1,000-1,400
        // pages seen), so the bound only tells restarts from none.
        let pages = wal_pages(&path);
        assert!(
            pages < 3_200,
            "the WAL kept {pages} pages: it never started over"
        );
        // The WAL started over after copies: the last value of each key reads back.
        assert_eq!(
            b.get("s", "w3/49").unwrap(),
            Some(vec![(799 % 256) as u8; 4096])
        );
    }

    #[tokio::test]
    async fn a_queued_write_is_on_disk_when_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        let b = SqliteBackend::open(&path).unwrap();
        b.write(
            "s",
            Write::SetMany(vec![
                ("a".into(), b"1".to_vec()),
                ("b".into(), b"2".to_vec()),
            ]),
        )
        .await
        .unwrap();
        b.write("s", Write::DeleteMany(vec!["a".into()]))
            .await
            .unwrap();
        drop(b);
        let again = SqliteBackend::open(&path).unwrap();
        assert_eq!(again.get("s", "a").unwrap(), None);
        assert_eq!(again.get("s", "b").unwrap().as_deref(), Some(&b"2"[..]));
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

    /// A file-backed store whose key filter only this test builds.
    fn unfiltered(dir: &tempfile::TempDir) -> SqliteBackend {
        unfiltered_with(dir, &SqliteOptions::default())
    }

    fn unfiltered_with(dir: &tempfile::TempDir, options: &SqliteOptions) -> SqliteBackend {
        SqliteBackend::open_with(
            &dir.path().join("kv.sqlite"),
            options,
            RESTART_FRAMES,
            false,
        )
        .unwrap()
    }

    fn build_filter(b: &SqliteBackend, scanned: &mut dyn FnMut()) {
        let conn = open_reader(b.shared.path.as_ref().unwrap()).unwrap();
        match b
            .shared
            .build_filter(&conn, MAX_FILTERED_KEYS, scanned)
            .unwrap()
        {
            Built::Filter { .. } => {}
            _ => panic!("no filter built"),
        }
    }

    fn absent_in_filter(b: &SqliteBackend, store: &str, key: &str) -> bool {
        b.shared.filter.lookup().unwrap().presence(store, key) == Presence::Absent
    }

    #[test]
    fn keys_stored_before_the_filter_is_built_are_found_and_most_absent_ones_skip_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered(&dir);
        // More keys than one scan page, in two stores.
        let keys: Vec<String> = (0..(SCAN_PAGE as usize * 2 + 17))
            .map(|i| format!("k{i}"))
            .collect();
        let pairs: Vec<(String, Vec<u8>)> =
            keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        b.set_many("s", &pairs).unwrap();
        b.set("other", "only-here", b"v").unwrap();
        drop(b);
        let b = unfiltered(&dir);
        build_filter(&b, &mut || {});
        let found = b.get_many("s", &keys).unwrap();
        assert!(
            found.iter().all(|(_, v)| v.is_some()),
            "a stored key read as absent"
        );
        assert!(b.exists("other", "only-here").unwrap());
        assert_eq!(b.get("other", "k1").unwrap(), None, "stores stay apart");
        let absent: Vec<String> = (0..1000).map(|i| format!("absent{i}")).collect();
        assert!(
            b.get_many("s", &absent)
                .unwrap()
                .iter()
                .all(|(_, v)| v.is_none())
        );
        let skipped = absent
            .iter()
            .filter(|k| absent_in_filter(&b, "s", k))
            .count();
        assert!(
            skipped > 950,
            "only {skipped} of 1000 absent keys skip SQLite"
        );
    }

    #[tokio::test]
    async fn a_key_created_by_any_write_is_found_once_the_write_answers() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered(&dir);
        build_filter(&b, &mut || {});
        let creating = |key: &str| {
            vec![
                Write::Set {
                    key: format!("{key}-set"),
                    value: b"v".to_vec(),
                },
                Write::SetMany(vec![(format!("{key}-many"), b"v".to_vec())]),
                Write::Increment {
                    key: format!("{key}-counter"),
                    delta: 1,
                },
                Write::CompareAndSwap {
                    key: format!("{key}-swapped"),
                    expected: None,
                    new: b"v".to_vec(),
                },
            ]
        };
        let check = |write: &Write| {
            let key = write.keys().next().unwrap().to_string();
            assert!(b.get("s", &key).unwrap().is_some(), "after {write:?}");
            assert!(b.exists("s", &key).unwrap(), "after {write:?}");
            assert!(b.get_many("s", &[key]).unwrap()[0].1.is_some());
        };
        // Each key was read (and found absent) first.
        for write in creating("grouped") {
            let key = write.keys().next().unwrap().to_string();
            assert_eq!(b.get("s", &key).unwrap(), None);
            b.write("s", write.clone()).await.unwrap();
            check(&write);
        }
        for write in creating("alone") {
            let key = write.keys().next().unwrap().to_string();
            assert_eq!(b.get("s", &key).unwrap(), None);
            b.run("s", &write).unwrap();
            check(&write);
        }
        // Deleted and created again.
        b.delete("s", "alone-set").unwrap();
        assert_eq!(b.get("s", "alone-set").unwrap(), None);
        b.set("s", "alone-set", b"again").unwrap();
        assert_eq!(
            b.get("s", "alone-set").unwrap().as_deref(),
            Some(&b"again"[..])
        );
    }

    #[test]
    fn keys_written_behind_the_scans_back_are_in_the_new_filter() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered(&dir);
        b.set("s", "before", b"v").unwrap();
        let b = Arc::new(b);
        let writer = b.clone();
        // Committed after the scan read the table, before the filter is in use (no
        // runtime here: the grouped write commits on this thread).
        build_filter(&b, &mut || {
            writer.set("s", "during-alone", b"v").unwrap();
            let group = writer.write(
                "s",
                Write::SetMany(vec![("during-grouped".into(), b"v".to_vec())]),
            );
            futures::executor::block_on(group).unwrap();
        });
        for key in ["before", "during-alone", "during-grouped"] {
            assert!(
                !absent_in_filter(&b, "s", key),
                "{key} missing from the filter"
            );
            assert!(b.get("s", key).unwrap().is_some(), "{key} read as absent");
        }
    }

    #[tokio::test]
    async fn a_full_filter_is_rebuilt_bigger_without_losing_a_key() {
        let dir = tempfile::tempdir().unwrap();
        // A small buffer, so the filter's room is the least there is.
        let options = SqliteOptions {
            write_buffer_keys: 1_000,
        };
        let b = SqliteBackend::open_with_options(&dir.path().join("kv.sqlite"), &options).unwrap();
        let built = |b: &SqliteBackend| b.shared.filter.bytes();
        let deadline = Instant::now() + Duration::from_secs(20);
        while built(&b).is_none() {
            assert!(
                Instant::now() < deadline,
                "the first filter was never built"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let first = built(&b).unwrap();
        // Twice the empty filter's capacity, through group commits.
        let keys: Vec<String> = (0..200_000).map(|i| format!("mark/{i}")).collect();
        for chunk in keys.chunks(5_000) {
            let pairs = chunk.iter().map(|k| (k.clone(), b"1".to_vec())).collect();
            b.write("s", Write::SetMany(pairs)).await.unwrap();
        }
        while built(&b) == Some(first) {
            assert!(
                Instant::now() < deadline,
                "the full filter was never rebuilt"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(built(&b).unwrap() > first);
        let found = b.get_many("s", &keys).unwrap();
        assert!(
            found.iter().all(|(_, v)| v.is_some()),
            "a stored key read as absent"
        );
    }

    #[test]
    fn a_store_with_too_many_keys_goes_unfiltered_and_every_key_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered(&dir);
        build_filter(&b, &mut || {});
        assert!(b.shared.filter.lookup().is_some());
        let keys: Vec<String> = (0..(SCAN_PAGE as usize + 1))
            .map(|i| format!("k{i}"))
            .collect();
        let pairs: Vec<(String, Vec<u8>)> =
            keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        b.set_many("s", &pairs).unwrap();
        // New small keys are buffered; the scan reads the table.
        b.shared.merge_round().unwrap();
        // A rebuild that finds more keys than it may hold drops the filter it had.
        let conn = open_reader(b.shared.path.as_ref().unwrap()).unwrap();
        let built = b
            .shared
            .build_filter(&conn, SCAN_PAGE as usize, &mut || {})
            .unwrap();
        assert!(matches!(built, Built::TooManyKeys));
        assert!(
            b.shared.filter.lookup().is_none(),
            "a filter is still in use"
        );
        assert!(b.shared.filter.needs_build());
        // A write does not bring a filter back.
        b.set("s", "after", b"v").unwrap();
        assert!(b.shared.filter.lookup().is_none());
        let found = b.get_many("s", &keys).unwrap();
        assert!(found.iter().all(|(_, v)| v.is_some()));
        assert!(b.exists("s", "after").unwrap());
        assert_eq!(b.get("s", "never").unwrap(), None);
        // Without a filter, a build counts the keys first, and stops there.
        let built = b
            .shared
            .build_filter(&conn, SCAN_PAGE as usize, &mut || {})
            .unwrap();
        assert!(matches!(built, Built::TooManyKeys));
        assert!(b.shared.filter.lookup().is_none());
        // With room, the filter comes back, sized for the keys counted.
        let built = b
            .shared
            .build_filter(&conn, MAX_FILTERED_KEYS, &mut || {})
            .unwrap();
        let stored = keys.len() + 1;
        assert!(
            matches!(built, Built::Filter { keys, bytes } if keys == stored && bytes == Bloom::for_keys(stored, b.shared.filter_headroom()).bytes()),
            "not a filter for {stored} keys"
        );
        assert!(!absent_in_filter(&b, "s", "after"));
        assert!(keys.iter().all(|k| !absent_in_filter(&b, "s", k)));
    }

    #[test]
    fn the_filter_keeps_room_for_twice_the_write_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let sized = |keys: usize| {
            let b = unfiltered_with(
                &dir,
                &SqliteOptions {
                    write_buffer_keys: keys,
                },
            );
            build_filter(&b, &mut || {});
            b.shared.filter.bytes().unwrap()
        };
        // A fresh store's filter takes up to 3.67M new keys before its first rebuild.
        assert_eq!(sized(1_835_008), Bloom::for_keys(0, 3_670_016).bytes());
        assert!(sized(1_835_008) > sized(1_000));
        // Without a buffer (or a small one), the least room there is.
        assert_eq!(sized(0), Bloom::for_keys(0, 0).bytes());
        assert_eq!(sized(1_000), sized(0));
        // A huge buffer setting does not size the filter past what is ever filtered.
        assert_eq!(
            sized(usize::MAX),
            Bloom::for_keys(0, MAX_FILTERED_KEYS).bytes()
        );
    }

    #[test]
    fn a_store_whose_size_holds_steady_gets_a_filter_of_the_same_size_at_each_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered(&dir);
        let keys =
            |prefix: &str| -> Vec<String> { (0..20_000).map(|i| format!("{prefix}{i}")).collect() };
        let write = |keys: &[String]| {
            let pairs: Vec<(String, Vec<u8>)> =
                keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
            b.set_many("s", &pairs).unwrap();
            b.shared.merge_round().unwrap();
        };
        write(&keys("old/"));
        build_filter(&b, &mut || {});
        let first = b.shared.filter.bytes().unwrap();
        assert_eq!(
            first,
            Bloom::for_keys(20_000, b.shared.filter_headroom()).bytes()
        );
        // Marks expire as new ones come: as many keys as before, all of them new.
        b.delete_many("s", &keys("old/")).unwrap();
        write(&keys("new/"));
        build_filter(&b, &mut || {});
        assert_eq!(
            b.shared.filter.bytes(),
            Some(first),
            "sized for the deleted keys too"
        );
        assert!(keys("new/").iter().all(|k| !absent_in_filter(&b, "s", k)));
    }

    #[test]
    fn a_scan_moves_past_keys_no_guest_could_write() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(unfiltered(&dir));
        // A data file written by another tool: a full scan page of BLOB keys and keys that
        // are not UTF-8, before the one a guest wrote (store "t" sorts after "s").
        lock(&b.shared.writer)
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO spin_key_value (store, key, value)
                 SELECT 's', CASE WHEN i % 2 = 0 THEN randomblob(16)
                                  ELSE CAST(X'ff' || randomblob(16) AS TEXT) END, X'00' FROM n",
                params![SCAN_PAGE],
            )
            .unwrap();
        b.set("t", "kept", b"v").unwrap();
        let (done, built) = std::sync::mpsc::channel();
        let scanner = b.clone();
        std::thread::spawn(move || {
            build_filter(&scanner, &mut || {});
            let _ = done.send(());
        });
        built
            .recv_timeout(Duration::from_secs(60))
            .expect("the scan never finished");
        assert!(!absent_in_filter(&b, "t", "kept"));
        assert_eq!(b.get("t", "kept").unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// A file store with a key filter and no threads: the test merges.
    fn buffering(dir: &tempfile::TempDir) -> SqliteBackend {
        let b = unfiltered(dir);
        build_filter(&b, &mut || {});
        b
    }

    fn in_table(b: &SqliteBackend, key: &str) -> Option<Vec<u8>> {
        lock(&b.shared.writer)
            .query_row(SELECT, params!["s", key], |r| r.get(0))
            .optional()
            .unwrap()
    }

    fn log_rows(b: &SqliteBackend) -> i64 {
        lock(&b.shared.writer)
            .query_row("SELECT count(*) FROM tiktok_edge_kv_buffer", [], |r| {
                r.get(0)
            })
            .unwrap()
    }

    fn buffered(b: &SqliteBackend) -> usize {
        b.shared.buffer.as_ref().unwrap().len()
    }

    /// A value the buffer keeps in its log row, not in memory.
    fn too_big_to_hold() -> Vec<u8> {
        vec![b'x'; buffer::MAX_HELD_VALUE + 1]
    }

    /// The seq of a buffered key's newest write.
    fn buffered_seq(b: &SqliteBackend, key: &str) -> i64 {
        b.shared
            .buffer
            .as_ref()
            .unwrap()
            .entry("s", key)
            .unwrap()
            .seq
    }

    /// As a killed process leaves it: no merge at close.
    fn crash(b: SqliteBackend) {
        lock(&b.shared.merges).merge_at_close = false;
        drop(b);
    }

    #[test]
    fn new_small_keys_are_buffered_read_first_and_merged_into_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        b.set("s", "old", b"in the table").unwrap();
        b.shared.merge_round().unwrap();
        let marks: Vec<(String, Vec<u8>)> = (0..100)
            .map(|i| (format!("m{i:03}"), i.to_string().into_bytes()))
            .collect();
        let big = too_big_to_hold();
        let mut pairs = marks.clone();
        pairs.push(("big".into(), big.clone()));
        b.set_many("s", &pairs).unwrap();
        // The marks are in the log and the buffer only; a new big value and a key the
        // table had before went to the table.
        assert_eq!((buffered(&b), log_rows(&b)), (100, 100));
        assert_eq!(in_table(&b, "m000"), None);
        assert_eq!(in_table(&b, "big"), Some(big.clone()));
        for (k, v) in &marks {
            assert_eq!(b.get("s", k).unwrap().as_ref(), Some(v), "{k}");
        }
        assert!(b.exists("s", "m042").unwrap());
        let many = b
            .get_many("s", &["m001".into(), "none".into(), "old".into()])
            .unwrap();
        assert_eq!(many[0].1.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            (many[1].1.as_deref(), many[2].1.as_deref()),
            (None, Some(&b"in the table"[..]))
        );

        // Every kind of write to a buffered key goes through the buffer.
        b.set("s", "n", &1i64.to_le_bytes()).unwrap();
        assert_eq!(b.increment("s", "n", 2).unwrap(), 3);
        assert!(
            !b.compare_and_swap("s", "m001", Some(b"nope"), b"x")
                .unwrap()
        );
        assert!(
            b.compare_and_swap("s", "m001", Some(b"1"), b"swapped")
                .unwrap()
        );
        b.delete("s", "m002").unwrap();
        b.delete_many("s", &["m003".into()]).unwrap();
        b.set("s", "m004", &big).unwrap();
        assert_eq!(in_table(&b, "n"), None, "a buffered counter stays buffered");
        assert_eq!(
            in_table(&b, "m004"),
            None,
            "a big value on a buffered key is logged"
        );
        assert_eq!(
            b.get("s", "m004").unwrap(),
            Some(big.clone()),
            "read from its log row"
        );
        assert_eq!(
            b.get("s", "m001").unwrap().as_deref(),
            Some(&b"swapped"[..])
        );
        assert_eq!(b.get("s", "m002").unwrap(), None);
        assert!(!b.exists("s", "m003").unwrap());
        let listed = b.list_keys("s", None, MAX_PAGE).unwrap().keys;
        assert_eq!(listed.len(), 100 - 2 + 3, "{listed:?}");
        assert!(!listed.contains(&"m002".to_string()) && listed.contains(&"n".to_string()));

        b.shared.merge_round().unwrap();
        assert_eq!((buffered(&b), log_rows(&b)), (0, 0));
        assert_eq!(in_table(&b, "m000").as_deref(), Some(&b"0"[..]));
        assert_eq!(in_table(&b, "m001").as_deref(), Some(&b"swapped"[..]));
        assert_eq!((in_table(&b, "m002"), in_table(&b, "m003")), (None, None));
        assert_eq!(in_table(&b, "m004"), Some(big));
        assert_eq!(b.increment("s", "n", 0).unwrap(), 3);
        assert_eq!(b.list_keys("s", None, MAX_PAGE).unwrap().keys, listed);
    }

    #[tokio::test]
    async fn grouped_writes_buffer_too_and_a_repeat_in_the_group_stays_newest() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        let set = |k: &str, v: &[u8]| Write::Set {
            key: k.into(),
            value: v.to_vec(),
        };
        let writes = vec![
            b.write("s", set("a", b"1")),
            b.write("s", set("a", b"2")),
            b.write("s", Write::DeleteMany(vec!["b".into()])),
            b.write(
                "s",
                Write::SetMany(vec![
                    ("b".into(), b"3".to_vec()),
                    ("c".into(), b"4".to_vec()),
                ]),
            ),
        ];
        for answer in futures::future::join_all(writes).await {
            answer.unwrap();
        }
        assert_eq!(buffered(&b), 3);
        assert_eq!(b.get("s", "a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(b.get("s", "b").unwrap().as_deref(), Some(&b"3"[..]));
        b.shared.merge_round().unwrap();
        assert_eq!(in_table(&b, "a").as_deref(), Some(&b"2"[..]));
        assert_eq!(in_table(&b, "c").as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn a_crash_loses_no_buffered_write_even_mid_merge() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        b.set("s", "kept", b"1").unwrap();
        b.set("s", "gone", b"2").unwrap();
        b.set("s", "changed", b"3").unwrap();
        // Copied to the table, not yet retired; then written again: the newer writes
        // must win over the copies when the log is replayed.
        b.shared.merge_chunks().unwrap();
        assert_eq!(in_table(&b, "gone").as_deref(), Some(&b"2"[..]));
        b.delete("s", "gone").unwrap();
        b.set("s", "changed", b"4").unwrap();
        b.set("s", "late", b"5").unwrap();
        crash(b);
        let again = SqliteBackend::open(&dir.path().join("kv.sqlite")).unwrap();
        assert_eq!(again.get("s", "kept").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(again.get("s", "gone").unwrap(), None);
        assert_eq!(
            again.get("s", "changed").unwrap().as_deref(),
            Some(&b"4"[..])
        );
        assert_eq!(again.get("s", "late").unwrap().as_deref(), Some(&b"5"[..]));
        assert_eq!(log_rows(&again), 0, "merged at open");
    }

    #[test]
    fn a_logged_value_whose_row_is_retired_is_read_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        let big = too_big_to_hold();
        b.set("s", "k", b"v").unwrap();
        b.set("s", "k", &big).unwrap();
        let upto = b.shared.merge_chunks().unwrap();
        // The end of a round: the log rows are deleted before the entries go.
        lock(&b.shared.writer)
            .execute(buffer::RETIRE, [0, upto])
            .unwrap();
        assert_eq!(buffered(&b), 1);
        assert_eq!(b.get("s", "k").unwrap(), Some(big.clone()));
        assert!(b.compare_and_swap("s", "k", Some(&big), b"new").unwrap());
        assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn a_merge_drops_what_the_cache_read_from_the_table_before() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        let big = too_big_to_hold();
        // One write puts the key in the table (too big to buffer) and then in the buffer.
        b.set_many(
            "s",
            &[("k".into(), big.clone()), ("k".into(), b"small".to_vec())],
        )
        .unwrap();
        assert_eq!(in_table(&b, "k"), Some(big.clone()));
        // A read that found the table's copy (a reader that missed the buffer just
        // before the write) kept it.
        let Cached::Miss(generation) = b.shared.cache.get("s", "k") else {
            panic!("cached")
        };
        b.shared.cache.fill("s", "k", &big, generation);
        b.shared.merge_round().unwrap();
        assert_eq!(buffered(&b), 0);
        assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"small"[..]));
    }

    #[test]
    fn a_logged_value_written_again_is_read_from_its_newer_entry() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        let big = too_big_to_hold();
        b.set("s", "k", b"v").unwrap();
        b.set("s", "k", &big).unwrap();
        let old = buffered_seq(&b, "k");
        // A reader took that entry; then the key was written again and the old row
        // retired before the reader read it.
        b.set("s", "k", b"newer").unwrap();
        lock(&b.shared.writer)
            .execute(buffer::RETIRE, [old, old])
            .unwrap();
        assert_eq!(
            b.logged_value("s", "k", old).unwrap(),
            Some(Some(b"newer".to_vec()))
        );
        b.set("s", "k", &big).unwrap();
        let newer = buffered_seq(&b, "k");
        assert_eq!(b.logged_value("s", "k", old).unwrap(), Some(Some(big)));
        // Same seq, row gone: merged and retired, the table has it.
        lock(&b.shared.writer)
            .execute(buffer::RETIRE, [newer, newer])
            .unwrap();
        assert_eq!(b.logged_value("s", "k", newer).unwrap(), None);
    }

    #[test]
    fn a_round_keeps_what_was_written_during_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        b.set("s", "a", b"1").unwrap();
        b.set("s", "b", b"1").unwrap();
        // Nothing copied yet: nothing retired.
        b.shared.retire_merged(2).unwrap();
        assert_eq!((buffered(&b), log_rows(&b)), (2, 2));
        b.delete("s", "b").unwrap();
        let upto = b.shared.merge_chunks().unwrap();
        b.set("s", "a", b"2").unwrap();
        b.shared.retire_merged(upto).unwrap();
        assert_eq!(buffered(&b), 1, "the newer write stays buffered");
        assert_eq!(b.get("s", "a").unwrap().as_deref(), Some(&b"2"[..]));
        b.shared.merge_round().unwrap();
        assert_eq!((buffered(&b), log_rows(&b)), (0, 0));
        assert_eq!(in_table(&b, "a").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn list_keys_pages_merge_the_buffer_with_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        let big = too_big_to_hold();
        // Even keys in the table (big values are not buffered), odd ones buffered.
        for i in (0..40).step_by(2) {
            b.set("s", &format!("k{i:02}"), &big).unwrap();
        }
        for i in (1..40).step_by(2) {
            b.set("s", &format!("k{i:02}"), b"v").unwrap();
        }
        // Copied to the table but still buffered, then deleted: hidden from the table.
        b.set("s", "k40", b"v").unwrap();
        b.set("s", "k41", b"v").unwrap();
        b.shared.merge_chunks().unwrap();
        b.delete("s", "k40").unwrap();
        b.delete("s", "k41").unwrap();
        b.set("s", "k42", b"v").unwrap();
        let expected: Vec<String> = (0..40).chain([42]).map(|i| format!("k{i:02}")).collect();
        for limit in [1, 3, 7, 100] {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = b.list_keys("s", cursor.as_deref(), limit).unwrap();
                assert!(page.keys.len() <= limit);
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(keys, expected, "pages of {limit}");
        }
    }

    #[test]
    fn keys_merged_after_a_filter_rebuild_are_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let b = buffering(&dir);
        b.set("s", "mark", b"1").unwrap();
        // The rebuild scans the table, where the mark is not yet; the buffer has it.
        build_filter(&b, &mut || {});
        assert_eq!(buffered(&b), 1);
        assert_eq!(b.get("s", "mark").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(b.exists("s", "mark").unwrap());
        b.set("s", "mark", &[7; 100]).unwrap();
        assert_eq!(b.get("s", "mark").unwrap().as_deref(), Some(&[7; 100][..]));
        b.shared.merge_round().unwrap();
        assert_eq!(buffered(&b), 0);
        assert!(!absent_in_filter(&b, "s", "mark"));
        assert_eq!(b.get("s", "mark").unwrap().as_deref(), Some(&[7; 100][..]));
        assert!(b.exists("s", "mark").unwrap());
    }

    #[test]
    fn a_full_buffer_sends_new_keys_to_the_table() {
        const KEYS: usize = 1000;
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered_with(
            &dir,
            &SqliteOptions {
                write_buffer_keys: KEYS,
            },
        );
        build_filter(&b, &mut || {});
        let pairs: Vec<(String, Vec<u8>)> = (0..KEYS + 10)
            .map(|i| (format!("m{i}"), b"v".to_vec()))
            .collect();
        b.set_many("s", &pairs).unwrap();
        assert_eq!(buffered(&b), KEYS);
        assert_eq!(in_table(&b, "m999").as_deref(), None);
        assert_eq!(
            in_table(&b, &format!("m{}", KEYS + 9)).as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(b.get("s", "m0").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(
            b.get("s", &format!("m{}", KEYS + 9)).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn a_store_with_no_write_buffer_writes_every_key_to_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered_with(
            &dir,
            &SqliteOptions {
                write_buffer_keys: 0,
            },
        );
        build_filter(&b, &mut || {});
        b.set("s", "mark", b"1").unwrap();
        assert!(b.shared.buffer.is_none());
        assert_eq!(in_table(&b, "mark").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn a_merge_round_waits_for_a_burst_to_end_or_the_buffer_to_fill() {
        let (second, none) = (Duration::from_secs(1), Duration::ZERO);
        // Nothing buffered: nothing to do, however long.
        assert!(!round_due(0, 100, MERGE_INTERVAL, MERGE_INTERVAL));
        // Keys still coming, buffer below three quarters: wait.
        assert!(!round_due(74, 100, none, none));
        assert!(!round_due(74, 100, second / 2, MERGE_INTERVAL - second));
        // Three quarters full, quiet for a second, or a minute since the last round.
        assert!(round_due(75, 100, none, none));
        assert!(round_due(1, 100, MERGE_WHEN_QUIET, none));
        assert!(round_due(1, 100, none, MERGE_INTERVAL));
        // A huge capacity does not overflow.
        assert!(!round_due(1, usize::MAX, none, none));
    }

    /// Writers on their own keys, each checking every answer against a model of them,
    /// while merge rounds and key filter rebuilds run; then a crash and a reopen.
    #[test]
    fn writers_agree_with_a_model_through_merges_rebuilds_and_a_crash() {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(buffering(&dir));
        let stop = Arc::new(AtomicBool::new(false));
        let background = {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut rounds, mut most_buffered) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    most_buffered = most_buffered.max(buffered(&b));
                    b.shared.merge_round().unwrap();
                    if rounds % 4 == 0 {
                        build_filter(&b, &mut || {});
                    }
                    rounds += 1;
                }
                (rounds, most_buffered)
            })
        };
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t);
                    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                    let prefix = format!("w{t}/");
                    for step in 0..1500 {
                        let key = format!("{prefix}{:02}", rng.usize(..40));
                        let value = match rng.u8(..4) {
                            0 => too_big_to_hold(),
                            _ => format!("{step}").into_bytes(),
                        };
                        let op = match rng.u8(..6) {
                            0 => Write::Delete { key: key.clone() },
                            1 => Write::DeleteMany(vec![key.clone()]),
                            2 => Write::SetMany(vec![(key.clone(), value.clone())]),
                            3 if model.get(&key).is_none_or(|v| v.len() == 8) => Write::Increment {
                                key: key.clone(),
                                delta: 3,
                            },
                            4 => Write::CompareAndSwap {
                                key: key.clone(),
                                expected: model.get(&key).cloned(),
                                new: value.clone(),
                            },
                            _ => Write::Set {
                                key: key.clone(),
                                value: value.clone(),
                            },
                        };
                        let answer = if step % 2 == 0 {
                            b.run("s", &op).unwrap()
                        } else {
                            futures::executor::block_on(b.write("s", op.clone())).unwrap()
                        };
                        match &op {
                            Write::Delete { .. } | Write::DeleteMany(_) => {
                                model.remove(&key);
                            }
                            Write::Increment { delta, .. } => {
                                let n = model
                                    .get(&key)
                                    .map_or(0, |v| i64::from_le_bytes(v[..].try_into().unwrap()))
                                    + delta;
                                assert_eq!(answer, Written::Counter(n), "{key}");
                                model.insert(key.clone(), n.to_le_bytes().to_vec());
                            }
                            Write::CompareAndSwap { new, .. } => {
                                assert_eq!(answer, Written::Swapped(true), "{key}");
                                model.insert(key.clone(), new.clone());
                            }
                            _ => {
                                model.insert(key.clone(), value);
                            }
                        }
                        assert_eq!(
                            b.get("s", &key).unwrap(),
                            model.get(&key).cloned(),
                            "{key} at {step}"
                        );
                        assert_eq!(b.exists("s", &key).unwrap(), model.contains_key(&key));
                        if step % 50 == 0 {
                            let listed: Vec<String> = b
                                .list_keys("s", Some(&format!("w{t}")), MAX_PAGE)
                                .unwrap()
                                .keys
                                .into_iter()
                                .filter(|k| k.starts_with(&prefix))
                                .collect();
                            assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
                            let keys: Vec<String> = model.keys().cloned().collect();
                            let many = b.get_many("s", &keys).unwrap();
                            assert!(many.iter().all(|(k, v)| v.as_ref() == model.get(k)));
                        }
                    }
                    model
                })
            })
            .collect();
        let models: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        let (rounds, most_buffered) = background.join().unwrap();
        assert!(
            rounds > 1 && most_buffered > 0,
            "{rounds} rounds, {most_buffered}"
        );
        crash(Arc::into_inner(b).unwrap());
        let again = SqliteBackend::open(&dir.path().join("kv.sqlite")).unwrap();
        let total: usize = models.iter().map(BTreeMap::len).sum();
        for model in models {
            for (k, v) in &model {
                assert_eq!(again.get("s", k).unwrap().as_ref(), Some(v), "{k}");
            }
        }
        let stored = again.list_keys("s", None, MAX_PAGE).unwrap().keys;
        assert_eq!(stored.len(), total, "no deleted key came back");
    }

    #[test]
    fn a_merge_transaction_is_sized_to_hold_the_writers_lock_about_a_millisecond() {
        // At the pace of a small table, chunks stay at their most.
        assert_eq!(
            next_chunk(MERGE_CHUNK, Duration::from_micros(400)),
            MERGE_CHUNK
        );
        // Four times too slow: a quarter as many keys next time.
        assert_eq!(next_chunk(256, MERGE_HOLD * 4), 64);
        // A stall (a page fault, a checkpoint's fsync) never stops the merge.
        assert_eq!(next_chunk(16, Duration::from_secs(2)), MIN_MERGE_CHUNK);
        // A chunk of nothing, or one that took no time, is no evidence of slowness.
        assert_eq!(next_chunk(0, Duration::ZERO), MERGE_CHUNK);
        assert_eq!(next_chunk(64, Duration::ZERO), MERGE_CHUNK);
    }

    #[test]
    fn a_filter_build_that_panics_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let b = unfiltered(&dir);
        b.set("s", "k", b"v").unwrap();
        let conn = open_reader(b.shared.path.as_ref().unwrap()).unwrap();
        let failed = b
            .shared
            .build_filter_guarded(&conn, MAX_FILTERED_KEYS, &mut || panic!("a test panic"));
        assert_eq!(failed.err().as_deref(), Some("the build panicked"));
        assert!(
            !b.shared.filter.building(),
            "commits stopped adding to the build"
        );
        assert!(b.shared.filter.lookup().is_none());
        assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(matches!(
            b.shared
                .build_filter_guarded(&conn, MAX_FILTERED_KEYS, &mut || {}),
            Ok(Built::Filter { .. })
        ));
        assert!(!absent_in_filter(&b, "s", "k"));
    }
}
