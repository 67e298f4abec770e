//! The board lock: what every change holds while it reads, applies and writes.
//!
//! Two locks are taken, in this order, and held together:
//!
//! 1. an exclusive lock on the board **directory** itself. A directory that holds files cannot
//!    be removed or replaced by `rm -f board.lock` (or by anything short of removing the whole
//!    board), so this lock excludes every other `vine` whatever happens to the lock file. Where
//!    the file system cannot lock a directory (NFS-style file systems emulate `flock` with
//!    record locks, which need a file open for writing), this step is skipped.
//! 2. an exclusive lock on `board.lock`, which older `vine` versions take alone. After locking
//!    it, the locked file is checked to still be the file at `board.lock` (same device and
//!    inode); if it was removed or replaced while we waited, the lock guards nothing and is
//!    taken again on the file now at the path.
//!
//! A long-lived handle keeps both files open between changes ([`KeptLock`]): a change then
//! locks and unlocks them instead of opening and closing them, and the check of step 2 still
//! runs every time.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::paths::LOCK;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The exclusive board lock; released when dropped.
#[derive(Debug)]
pub struct LockGuard<'a> {
    held: Held<'a>,
}

/// The files a lock holds: its own (closed when it is dropped), or a handle's kept ones.
#[derive(Debug)]
enum Held<'a> {
    Own(Files),
    /// The kept files, taken out of their place (given back, unlocked, when dropped).
    Kept {
        files: Option<Files>,
        place: MutexGuard<'a, Option<Files>>,
    },
}

/// The locked lock file, and the board directory where it could be locked.
#[derive(Debug)]
struct Files {
    lock: File,
    dir: Option<File>,
    /// The board clock's last comparison with the file system's (see `clock::now_kept`).
    agreed: std::cell::Cell<Option<super::clock::Agreement>>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Held::Kept { files, place } = &mut self.held {
            // Unlocked in the reverse order; files that cannot be unlocked are closed, which
            // unlocks them.
            let files = files.take().filter(|f| {
                f.lock.unlock().is_ok() && f.dir.as_ref().is_none_or(|d| d.unlock().is_ok())
            });
            **place = files;
        }
    }
}

/// The board lock's files kept open between changes (see the module doc). One per handle,
/// shared by its clones; a change in this process waits here for another one's turn.
#[derive(Debug, Default)]
pub struct KeptLock {
    files: Mutex<Option<Files>>,
}

impl KeptLock {
    /// Takes the exclusive lock of the board in `dir` through the kept files (opened the
    /// first time, and again when the lock file was removed or replaced).
    pub fn lock(&self, dir: &Path) -> Result<LockGuard<'_>> {
        let mut place = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let path = dir.join(LOCK);
        if let Some(mut f) = place.take() {
            if f.dir.is_none() {
                f.dir = open_dir(dir);
            }
            let dir_locked = f.dir.as_ref().is_some_and(|d| d.lock().is_ok());
            if !dir_locked {
                f.dir = None;
            }
            f.lock.lock().map_err(|e| Error::io("locking", &path, e))?;
            if is_at(&f.lock, &path)? {
                return Ok(LockGuard {
                    held: Held::Kept {
                        files: Some(f),
                        place,
                    },
                });
            }
            // Removed or replaced since: closing the old files lets go of their locks.
            drop(f);
        }
        let files = lock_files(dir)?;
        Ok(LockGuard {
            held: Held::Kept {
                files: Some(files),
                place,
            },
        })
    }
}

impl LockGuard<'_> {
    /// The locked files.
    fn files(&self) -> Option<&Files> {
        match &self.held {
            Held::Own(f) => Some(f),
            Held::Kept { files, .. } => files.as_ref(),
        }
    }

    /// The locked lock file.
    fn file(&self) -> Option<&File> {
        self.files().map(|f| &f.lock)
    }

    /// The board clock: the time of this change (see [`super::clock`]).
    pub fn now(&self) -> Timestamp {
        // (The guard holds its file until it is dropped.)
        self.files().map_or_else(crate::time::now, |f| {
            super::clock::now_kept(&f.lock, &f.agreed)
        })
    }

    /// Gives a lock file without a recorded time one (see [`super::clock::start`]).
    pub fn start_clock(&self) {
        if let Some(f) = self.file() {
            super::clock::start(f);
        }
    }

    /// Records `stamp` as the time of the last committed change (see [`super::clock`]).
    pub fn record(&self, stamp: Timestamp) {
        if let Some(f) = self.file() {
            super::clock::record(f, stamp);
        }
    }
}

/// Takes the exclusive lock of the board in `dir` (blocks until it is free), on files of its
/// own.
pub fn lock(dir: &Path) -> Result<LockGuard<'static>> {
    Ok(LockGuard {
        held: Held::Own(lock_files(dir)?),
    })
}

/// Opens and locks the directory (where it can be) and the lock file, in that order.
fn lock_files(dir: &Path) -> Result<Files> {
    let dir_lock = lock_dir(dir);
    let path = dir.join(LOCK);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening the lock", &path, e))?;
        file.lock().map_err(|e| Error::io("locking", &path, e))?;
        if is_at(&file, &path)? {
            return Ok(Files {
                lock: file,
                dir: dir_lock,
                agreed: std::cell::Cell::new(None),
            });
        }
        // Removed or replaced while we waited for it: lock the file that is there now.
    }
}

/// Locks the board directory, or `None` where the file system cannot lock a directory (the
/// lock file alone then excludes other writers, as it always has).
fn lock_dir(dir: &Path) -> Option<File> {
    let d = open_dir(dir)?;
    d.lock().ok()?;
    Some(d)
}

/// The board directory, opened for locking.
fn open_dir(dir: &Path) -> Option<File> {
    File::open(dir).ok()
}

/// Whether `file` is the file at `path` (same device and inode).
#[cfg(unix)]
fn is_at(file: &File, path: &Path) -> Result<bool> {
    // Without reading the lock file's times: every change writes it (`store::inode`).
    let (held, _) = super::inode::look_open(file, path)?;
    Ok(super::inode::look(path)?.is_some_and(|(at, _)| at == held))
}

/// Elsewhere an open file cannot be removed or replaced, so the locked file is the one there.
#[cfg(not(unix))]
fn is_at(_file: &File, _path: &Path) -> Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_lock_file_does_not_let_a_second_holder_in() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(LOCK)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            let second = lock(&d).unwrap();
            tx.send(()).unwrap();
            drop(second);
        });
        // While the first holder runs, the second waits (on the directory).
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "a second holder got the lock while the first held it"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second holder gets the lock once the first lets go");
        t.join().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_lock_file_is_not_the_one_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK);
        let f = File::create(&path).unwrap();
        assert!(is_at(&f, &path).unwrap());
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        assert!(!is_at(&f, &path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!is_at(&f, &path).unwrap());
    }

    /// Whether `lock` can be taken within 300 ms by another thread while `held` is held.
    fn second_gets_in(dir: &Path, second: impl FnOnce(&Path) + Send + 'static) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.to_path_buf();
        std::thread::spawn(move || {
            second(&d);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_ok()
    }

    #[test]
    fn kept_files_exclude_other_handles_and_are_locked_again_after_the_lock_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let kept = std::sync::Arc::new(KeptLock::default());
        for round in 0..3 {
            if round == 2 {
                // Replaced while nobody held it: the kept files are stale and are reopened.
                std::fs::remove_file(dir.path().join(LOCK)).unwrap();
            }
            let held = kept.lock(dir.path()).unwrap();
            assert!(
                !second_gets_in(dir.path(), |d| drop(lock(d).unwrap())),
                "round {round}: a lock of its own got in while the kept one was held"
            );
            let other = std::sync::Arc::new(KeptLock::default());
            assert!(
                !second_gets_in(dir.path(), move |d| drop(other.lock(d).unwrap())),
                "round {round}: another handle's kept lock got in"
            );
            let same = kept.clone();
            assert!(
                !second_gets_in(dir.path(), move |d| drop(same.lock(d).unwrap())),
                "round {round}: another thread of the same handle got in"
            );
            drop(held);
            // Every waiter above gets in once it is let go; then a fresh lock can be taken.
            let t = std::time::Instant::now();
            drop(lock(dir.path()).unwrap());
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
        }
        let files = kept.files.lock().unwrap();
        let f = files.as_ref().expect("the files are kept between changes");
        assert!(is_at(&f.lock, &dir.path().join(LOCK)).unwrap());
    }
}
