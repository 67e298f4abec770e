//! Keeping a worker alive on the board for as long as its Claude Code process lives.
//!
//! A worker in a long tool call (a ten-minute test run) makes no PostToolUse heartbeat, so
//! heartbeats from tool calls alone would make a live worker look stale. The SessionStart
//! hook therefore starts a small detached process, `vine hook keepalive`, that heartbeats the
//! worker every third of the board's stale limit while the `claude` process that ran the hook
//! lives, and exits when it is gone ([`run`]). `vine worker` heartbeats its worker itself
//! while its `claude` child runs ([`beat`] on a thread) and sets `VINE_KEEPALIVE=0` so the
//! hooks start none. One `claude` process gets at most one keepalive: each holds a lock file
//! named after that process in the hooks' runtime directory ([`lock`]).
//!
//! These heartbeats keep the worker and its leases alive; they are not progress: the Stop
//! hook counts tool calls, not heartbeats (see [`super::session`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::board::Board;
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::worker::OFFLINE;

use super::process;

/// How often to heartbeat: a third of the board's stale limit (so two beats may be lost before
/// the worker looks stale), at least 1 s and at most 10 min.
pub fn interval(settings: &Settings) -> Duration {
    Duration::from_secs((settings.stale_after_secs / 3).clamp(1, 600))
}

/// What one [`beat`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The worker was heartbeaten.
    Sent,
    /// The worker is offline (deregistered, or let go after its idle limit): left alone, since
    /// a heartbeat would bring it back.
    Offline,
    /// The worker is not registered (yet): left alone; the SessionStart hook registers it.
    Unregistered,
}

/// Heartbeats `worker` unless it is offline or not registered.
pub fn beat(board: &Board, worker: &str) -> Result<Beat> {
    match board.workers()?.into_iter().find(|w| w.id == worker) {
        None => Ok(Beat::Unregistered),
        Some(w) if w.worker.status == OFFLINE => Ok(Beat::Offline),
        Some(_) => {
            board.heartbeat(worker)?;
            Ok(Beat::Sent)
        }
    }
}

/// The lock file of the keepalive for process `pid` started at `start`.
pub fn lock_path(dir: &Path, pid: u32, start: u64) -> PathBuf {
    dir.join(format!("keepalive-{pid}-{start}.lock"))
}

/// Takes the keepalive lock of a process: `None` if another keepalive holds it. The lock is
/// released when the returned file is closed, also when the holder is killed.
pub fn lock(dir: &Path, pid: u32, start: u64) -> Result<Option<File>> {
    super::session::ensure_private_dir(dir)?;
    let path = lock_path(dir, pid, start);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("opening", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", &path, e)),
    }
}

/// What [`run`] keeps alive and for how long.
#[derive(Debug, Clone)]
pub struct Keepalive {
    /// The worker to heartbeat.
    pub worker: String,
    /// The `claude` process: its pid...
    pub pid: u32,
    /// ... and its start time (see [`process::Proc::start`]).
    pub start: u64,
    /// The runtime directory holding the lock.
    pub dir: PathBuf,
    /// How often to look whether the process still lives.
    pub check: Duration,
}

/// Heartbeats the worker every [`interval`] while the process lives; returns when it is gone,
/// when another keepalive already serves it, or when the (local) board is gone. Board errors
/// (a server down for a while) are skipped: the next beat tries again.
pub fn run(k: &Keepalive, open: &dyn Fn() -> Result<Board>) -> Result<()> {
    let Some(_lock) = lock(&k.dir, k.pid, k.start)? else {
        return Ok(());
    };
    // The first round only reads the settings (the SessionStart hook has just registered the
    // worker); then a beat every interval.
    let mut every: Option<Duration> = None;
    let mut next = Instant::now();
    let mut first = true;
    while process::alive(k.pid, k.start) {
        if Instant::now() >= next {
            match open() {
                Ok(board) => {
                    if every.is_none() {
                        every = board.settings().ok().map(|s| interval(&s));
                    }
                    if !first {
                        let _ = beat(&board, &k.worker);
                    }
                }
                // The board itself is gone (a local board removed): nothing left to keep alive.
                Err(Error::NoBoard(_)) => break,
                Err(_) => {}
            }
            first = false;
            next = Instant::now() + every.unwrap_or(Duration::from_secs(60));
        }
        let until_next = next.saturating_duration_since(Instant::now());
        std::thread::sleep(k.check.min(until_next).max(Duration::from_millis(50)));
    }
    // Only this keepalive's process is gone (or its board): nobody will want this lock again.
    let _ = std::fs::remove_file(lock_path(&k.dir, k.pid, k.start));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_third_of_the_stale_limit_within_bounds() {
        let s = |secs| Settings {
            stale_after_secs: secs,
            ..Settings::default()
        };
        assert_eq!(interval(&s(180)), Duration::from_secs(60));
        assert_eq!(interval(&s(3)), Duration::from_secs(1));
        assert_eq!(interval(&s(0)), Duration::from_secs(1));
        assert_eq!(interval(&s(86_400)), Duration::from_secs(600));
    }

    #[test]
    fn one_lock_per_process() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        let first = lock(&dir, 42, 7).unwrap();
        assert!(first.is_some());
        assert!(lock(&dir, 42, 7).unwrap().is_none(), "held");
        assert!(lock(&dir, 42, 8).unwrap().is_some(), "another process");
        drop(first);
        assert!(lock(&dir, 42, 7).unwrap().is_some(), "released");
    }
}
