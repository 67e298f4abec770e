//! The board clock: the time a change is stamped with.
//!
//! Every change runs under the board lock, and taking the time touches the lock file: the file
//! system stamps its modification time with *its* clock (the kernel's on a local disk, the
//! server's on NFS), which is read back with `fstat`. While this process's clock agrees with
//! it (within [`TOLERANCE_MS`]), the process's own, finer clock is used. When it does not (a
//! clock set wrong, or one that jumped), the file system's time is used instead, so a process
//! whose clock is an hour ahead cannot expire live leases, and one whose clock is behind cannot
//! stamp its tasks as older than they are. One note on stderr says so, once per process.
//!
//! Reads take no lock and keep the reader's own clock: states derived from time (a worker
//! shown `stale`) are as the reader sees them, and change nothing on the board.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use crate::time::{Timestamp, format_duration};

/// How far (in milliseconds) this process's clock may be from the file system's before the
/// file system's time is used. Above the coarsest modification-time step of common file
/// systems (1 s), below any lease.
pub const TOLERANCE_MS: i64 = 2000;

/// The time of a change made under the lock held through `lock_file`.
pub fn now(lock_file: &File) -> Timestamp {
    let own = crate::time::now();
    let Some(fs) = file_system_time(lock_file) else {
        return own;
    };
    let ahead_ms = (own - fs).num_milliseconds();
    if ahead_ms.abs() <= TOLERANCE_MS {
        return own;
    }
    static NOTED: AtomicBool = AtomicBool::new(false);
    if !NOTED.swap(true, Ordering::Relaxed) {
        let off = format_duration(ahead_ms.unsigned_abs().saturating_add(500) / 1000);
        let dir = if ahead_ms > 0 { "ahead of" } else { "behind" };
        eprintln!(
            "vine: note: this process's clock is {off} {dir} the board's file system; \
             using the file system's time for changes to the board"
        );
    }
    fs
}

/// The file system's current time: the modification time of the lock file just after writing
/// to it. `None` when the lock file cannot be written or its time cannot be read.
fn file_system_time(mut lock_file: &File) -> Option<Timestamp> {
    lock_file.seek(SeekFrom::Start(0)).ok()?;
    lock_file.write_all(b"\n").ok()?;
    let modified = lock_file.metadata().ok()?.modified().ok()?;
    let t = DateTime::<Utc>::from(modified);
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_time_is_close_to_the_real_clock() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("board.lock"))
            .unwrap();
        let fs = file_system_time(&f).expect("the lock file's time");
        let real = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        assert!(
            (real - fs).num_milliseconds().abs() < TOLERANCE_MS,
            "{real} vs {fs}"
        );
    }
}
