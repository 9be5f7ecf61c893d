//! Opening the file: the ownership lock that keeps a second host out, and the read
//! connections.

use crate::*;

/// Locks `{path}.lock` for the life of the store (the kernel drops it if the process
/// dies). SQLite's own locks would let a second host share the file; a second `up` on
/// the same data dir is a mistake (two schedulers, two caches writing the same files),
/// so it is refused at start with a clear error.
pub(crate) fn take_ownership(path: &Path) -> Result<std::fs::File, KvError> {
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

pub(crate) fn open_reader(path: &Path) -> Result<Connection, KvError> {
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
