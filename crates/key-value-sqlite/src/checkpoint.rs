//! Checkpoints off the write path: a thread with its own connection copies the WAL into
//! the database after commits, so no writer stalls for the copy.

use crate::*;

/// The checkpointer waits this long after a commit before copying, so a page that many
/// groups in a row rewrite is copied to the database once.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(20);

pub(crate) fn open_checkpointer(path: &Path) -> Result<Connection, KvError> {
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
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<(bool, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?))
    })
}

impl Shared {
    /// The checkpointer thread: after commits, waits [`CHECKPOINT_DELAY`] and copies
    /// the WAL into the database on its own connection, until the backend is dropped.
    ///
    /// It also flushes the database file after each copy. SQLite syncs it only when a
    /// checkpoint reaches the end of the WAL, which under constant writes never happens
    /// here (commits go on during the copy) but only in the catch-up, inside a group
    /// commit: that fsync then wrote back every page copied since the last restart, and
    /// the stall grew with them (20-60 ms, every second at 16k single events/s).
    pub(crate) fn checkpoint_until_closed(&self, conn: Connection) {
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
