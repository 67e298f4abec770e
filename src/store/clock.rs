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
//! The board clock never runs backwards: each change writes its time into the lock file, and
//! the next change is stamped no earlier than that. So two processes whose clocks differ by
//! less than the tolerance, or a file system whose times are coarser than a millisecond (some
//! keep whole seconds), still stamp changes in the order they were made.
//!
//! Reads take no lock and keep the reader's own clock: states derived from time (a worker
//! shown `stale`) are as the reader sees them, and change nothing on the board.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::time::{Timestamp, format_duration};

/// How far (in milliseconds) this process's clock may be from the file system's before the
/// file system's time is used. Above the coarsest modification-time step of common file
/// systems (1 s), below any lease.
pub const TOLERANCE_MS: i64 = 2000;

/// The time of a change made under the lock held through `lock_file`: no earlier than the
/// last [`record`]ed one.
pub fn now(lock_file: &File) -> Timestamp {
    now_kept(lock_file, &Cell::new(None))
}

/// How long a comparison of this process's clock with the file system's is trusted.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How far this process's clock may move apart from its monotonic clock between two changes
/// before the file system's clock is compared again (a clock set, or one that jumped).
const JUMP_MS: i64 = 100;
/// The file system's clock, as notes name it.
const FS_CLOCK: &str = "the board's file system";

/// When this process's clock last agreed with the file system's, and by how much they were
/// apart (see [`now_kept`]).
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    /// When, by the monotonic clock.
    at: Instant,
    /// This process's time then.
    own: Timestamp,
    /// The file system's time minus this process's, in milliseconds.
    fs_ahead_ms: i64,
}

/// [`now`] for a lock file kept open between changes: the file system's clock (a write and a
/// look at the lock file) is compared with this process's at most once every [`RECHECK`]
/// while they agree, and at once when this process's clock moved apart from its monotonic
/// clock (set, or jumped) since. `agreed` keeps the last comparison.
pub fn now_kept(lock_file: &File, agreed: &Cell<Option<Agreement>>) -> Timestamp {
    let last = last_stamp(lock_file);
    let own = crate::time::now();
    let mono = Instant::now();
    if let Some(a) = agreed.get() {
        let ran = mono.saturating_duration_since(a.at);
        let moved_ms = (own - a.own).num_milliseconds();
        let ran_ms = i64::try_from(ran.as_millis()).unwrap_or(i64::MAX);
        if ran < RECHECK && (moved_ms - ran_ms).abs() <= JUMP_MS {
            let fs = own + chrono::Duration::milliseconds(a.fs_ahead_ms);
            return change_time(own, fs, FS_CLOCK, last);
        }
    }
    let Some(fs) = file_system_time(lock_file, last) else {
        agreed.set(None);
        return own;
    };
    let fs_ahead_ms = (fs - own).num_milliseconds();
    agreed.set((fs_ahead_ms.abs() <= TOLERANCE_MS).then_some(Agreement {
        at: mono,
        own,
        fs_ahead_ms,
    }));
    change_time(own, fs, FS_CLOCK, last)
}

/// The time of a change: this process's time `own` while it agrees with the `reference`
/// clock (the board's file system's, or its database's), else the reference's; never before
/// `last`, the last change's time, unless `last` is from the future (written by hand, or
/// before the reference clock was set back).
pub(crate) fn change_time(
    own: Timestamp,
    reference: Timestamp,
    name: &str,
    last: Option<Timestamp>,
) -> Timestamp {
    let last = last.filter(|l| (*l - reference).num_milliseconds() <= TOLERANCE_MS);
    let chosen = chosen(own, reference, name);
    last.map_or(chosen, |l| std::cmp::max(chosen, l))
}

/// This process's time while it agrees with the reference clock (named `name`), else the
/// reference's.
fn chosen(own: Timestamp, fs: Timestamp, name: &str) -> Timestamp {
    let ahead_ms = (own - fs).num_milliseconds();
    if ahead_ms.abs() <= TOLERANCE_MS {
        return own;
    }
    static NOTED: AtomicBool = AtomicBool::new(false);
    if !NOTED.swap(true, Ordering::Relaxed) {
        let off = format_duration(ahead_ms.unsigned_abs().saturating_add(500) / 1000);
        let dir = if ahead_ms > 0 { "ahead of" } else { "behind" };
        eprintln!(
            "vine: note: this process's clock is {off} {dir} {name}; \
             using its time for changes to the board"
        );
    }
    fs
}

/// Records the board clock's time in a lock file that holds no stamp yet (a new board, or
/// one an older `vine` used); leaves a recorded stamp as it is.
pub fn start(lock_file: &File) {
    if last_stamp(lock_file).is_none() {
        record(lock_file, now(lock_file));
    }
}

/// How many bytes a recorded stamp takes in the lock file: milliseconds since the epoch,
/// right-aligned, and a newline.
const STAMP_LEN: usize = 21;

/// The stamp of the last change, as the lock file records it; `None` when it records none
/// (a new lock file, or one an older `vine` wrote).
fn last_stamp(lock_file: &File) -> Option<Timestamp> {
    let mut buf = [0u8; STAMP_LEN];
    let n = lock_file.read_at(&mut buf, 0).ok()?;
    let millis: i64 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
    DateTime::from_timestamp_millis(millis)
}

/// Records `stamp` as the time of the last change, once it is committed (best effort: a lock
/// file that cannot be written only loses the ordering guarantee, never the change). A change
/// that is refused records nothing, so it leaves the lock file's content as it was.
pub fn record(lock_file: &File, stamp: Timestamp) {
    let text = format!(
        "{:>width$}\n",
        stamp.timestamp_millis(),
        width = STAMP_LEN - 1
    );
    let _ = lock_file.write_all_at(text.as_bytes(), 0);
}

/// The file system's current time: the modification time of the lock file just after writing
/// to it (the last stamp, written back unchanged). `None` when the lock file cannot be
/// written or its time cannot be read.
fn file_system_time(lock_file: &File, last: Option<Timestamp>) -> Option<Timestamp> {
    let text = match last {
        Some(l) => format!("{:>width$}\n", l.timestamp_millis(), width = STAMP_LEN - 1),
        None => "\n".to_owned(),
    };
    lock_file.write_all_at(text.as_bytes(), 0).ok()?;
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
        let fs = file_system_time(&f, None).expect("the lock file's time");
        let real = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        assert!(
            (real - fs).num_milliseconds().abs() < TOLERANCE_MS,
            "{real} vs {fs}"
        );
    }

    fn lock_file(dir: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("board.lock"))
            .unwrap()
    }

    #[test]
    fn the_board_clock_never_runs_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let f = lock_file(dir.path());
        let first = now(&f);
        record(&f, first);
        // A change stamped a second ahead (a clock within the tolerance, or a coarse file
        // system): the next change is not stamped earlier.
        let ahead = first + chrono::Duration::milliseconds(1000);
        record(&f, ahead);
        assert_eq!(last_stamp(&f), Some(ahead));
        let next = now(&f);
        assert!(next >= ahead, "{next} < {ahead}");
        // Taking the time changes nothing; recording it does.
        assert_eq!(last_stamp(&f), Some(ahead));
        record(&f, next);
        assert_eq!(last_stamp(&f), Some(next));
    }

    #[test]
    fn a_kept_lock_file_is_looked_at_for_the_time_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let f = lock_file(dir.path());
        let agreed = Cell::new(None);
        let mtime = || f.metadata().unwrap().modified().unwrap();
        let first = now_kept(&f, &agreed);
        assert!(agreed.get().is_some(), "the clocks agree here");
        record(&f, first);
        // The time of the next change comes from the comparison kept, so it writes nothing
        // to the lock file; it is still no earlier than the last recorded.
        std::thread::sleep(Duration::from_millis(30));
        let ahead = first + chrono::Duration::milliseconds(500);
        f.write_all_at(format!("{:>20}\n", ahead.timestamp_millis()).as_bytes(), 0)
            .unwrap();
        let written = mtime();
        std::thread::sleep(Duration::from_millis(30));
        let second = now_kept(&f, &agreed);
        assert_eq!(
            mtime(),
            written,
            "the file system's clock was looked at again"
        );
        assert!(second >= ahead, "{second} < {ahead}");
        // After RECHECK it is looked at again (the lock file is written to read its time).
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        let third = now_kept(&f, &agreed);
        assert_ne!(mtime(), written);
        assert!(third >= second);
    }

    #[test]
    fn a_stamp_from_the_future_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let f = lock_file(dir.path());
        let hour_ahead = crate::time::now() + chrono::Duration::hours(1);
        record(&f, hour_ahead);
        let t = now(&f);
        assert!((t - crate::time::now()).num_seconds().abs() < 5, "{t}");
    }

    #[test]
    fn a_lock_file_an_older_vine_wrote_is_read_as_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("board.lock"), "\n").unwrap();
        let f = lock_file(dir.path());
        assert_eq!(last_stamp(&f), None);
        let t = now(&f);
        assert_eq!(last_stamp(&f), None);
        record(&f, t);
        assert_eq!(last_stamp(&f), Some(t));
    }
}
