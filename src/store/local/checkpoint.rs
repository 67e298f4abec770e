//! Checkpoints: the JSON files rewritten from the live board (only those the journal's
//! records changed), then the journal replaced by an empty one whose header says which change
//! the files now hold. A crash before the new journal is in place leaves the old one, whose
//! records applied again over the new files give the same board (see `store::journal`).
//!
//! When: after a change, once the journal is as large as the files it follows (at least
//! [`MIN_BYTES`], at most [`MAX_BYTES`]) — so a checkpoint costs each change about what its
//! record cost, whatever the size of the board — or its oldest record is [`MAX_AGE`] old;
//! at `vine compact`; and, for a handle that lives on, when the board has been quiet for
//! [`QUIET`] (a thread waits for that) and when its last clone is dropped. So while such a
//! handle runs, the JSON files are [`QUIET`] behind a board that stopped changing (plus the
//! time a checkpoint takes), and at most [`MAX_AGE`] behind one that keeps changing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::live::{Live, Loaded};
use crate::error::{Error, Result};
use crate::store::damage::Damages;
use crate::store::durable;
use crate::store::json_file::to_pretty;
use crate::store::paths::{LOG, PROGRESS, QUEUE, SESSIONS, WORKERS};
use crate::store::queue_file;

/// A checkpoint is written once the journal is as large as the files it follows, and at least
/// this large ...
pub const MIN_BYTES: u64 = 256 << 10;
/// ... or this large whatever the files (loading a board reads the whole journal) ...
pub const MAX_BYTES: u64 = 64 << 20;
/// ... or its oldest record is this old.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// A handle that lives on writes a checkpoint once no change came for this long.
pub const QUIET: Duration = Duration::from_millis(200);

/// Writes the checkpoint of `b` (the caller holds the lock and `b` is current). `bump`: the
/// board holds a change no record holds (the files are its only copy), so the new journal
/// follows change `seq + 1`.
pub(super) fn write(dir: &Path, b: &mut Loaded, bump: bool) -> Result<()> {
    let _checkpoint = tracing::trace_span!("checkpoint").entered();
    if b.since.messages {
        // The log entries were appended without an fsync: the records held them until now.
        let log = dir.join(LOG);
        std::fs::File::open(&log)
            .and_then(|f| f.sync_data())
            .map_err(|e| Error::io("syncing", &log, e))?;
    }
    write_files(dir, b, true)?;
    let base = b.seq + u64::from(bump);
    if b.has_journal() {
        b.start_journal(dir, base)?;
    } else {
        b.files_written(dir)?;
    }
    Ok(())
}

/// Writes the files whose content `b.since` says changed (all of them durably when
/// `durable`, else the worker file softly as it always was), then fsyncs the directory.
pub(super) fn write_files(dir: &Path, b: &mut Loaded, durable_workers: bool) -> Result<()> {
    let since = b.since.clone();
    if since.tasks {
        let _queue = tracing::trace_span!("queue").entered();
        let encoded = tracing::trace_span!("encode")
            .in_scope(|| queue_file::encode(&b.tasks, &b.touched, &b.queue_lines))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        b.queue_lines.clear();
        durable::replace(dir, QUEUE, &encoded.bytes, true)?;
        b.queue_lines.set_written(encoded);
        b.touched.clear();
    }
    if since.workers {
        let _workers = tracing::trace_span!("workers").entered();
        durable::replace(dir, WORKERS, &to_pretty(&b.workers)?, durable_workers)?;
    }
    if since.progress {
        durable::replace(dir, PROGRESS, &to_pretty(&b.progress)?, true)?;
    }
    if since.sessions {
        durable::replace(dir, SESSIONS, &to_pretty(&b.sessions)?, true)?;
    }
    durable::sync_dir(dir)
}

/// Whether the journal of `b` is due a checkpoint at `now_ms`.
pub(super) fn due(b: &Loaded, now_ms: i64) -> bool {
    let bytes = b.journal_bytes();
    bytes >= b.checkpoint_bytes().clamp(MIN_BYTES, MAX_BYTES)
        || b.since
            .oldest_ms
            .is_some_and(|t| now_ms - t >= MAX_AGE.as_millis() as i64)
}

/// Writes a checkpoint when a handle's board has been quiet for [`QUIET`] (or its oldest
/// unsaved change is [`MAX_AGE`] old), from a thread started at the first record; and a last
/// one when the handle's last clone is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    dir: PathBuf,
    live: Weak<Mutex<Live>>,
    /// Whether the thread writes checkpoints when the board is quiet (tests that count
    /// records turn it off).
    quiet: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    /// When the first change not in a checkpoint was appended (`None`: nothing pending).
    first: Option<Instant>,
    /// When the last one was.
    last: Option<Instant>,
    /// Whether the thread runs.
    running: bool,
    /// The handle is gone: the thread ends.
    stop: bool,
}

impl Checkpointer {
    /// A checkpointer for the board in `dir` whose live board is `live`.
    pub fn new(dir: &Path, live: &Arc<Mutex<Live>>) -> Arc<Checkpointer> {
        Arc::new(Checkpointer {
            shared: Arc::default(),
            dir: dir.to_path_buf(),
            live: Arc::downgrade(live),
            quiet: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Turns the checkpoints of a quiet board on or off.
    #[cfg(test)]
    pub fn set_quiet(&self, on: bool) {
        self.quiet.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Notes that a record was appended (starts the thread if it is not running).
    pub fn appended(&self) {
        let mut p = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // A thread waiting for a deadline finds the later `last` when it wakes; only one
        // waiting for the first change needs waking.
        let idle = p.first.is_none();
        p.first.get_or_insert(now);
        p.last = Some(now);
        if !p.running && self.quiet.load(std::sync::atomic::Ordering::Relaxed) {
            let shared = Arc::clone(&self.shared);
            let (dir, live) = (self.dir.clone(), self.live.clone());
            let started = std::thread::Builder::new()
                .name("vine-checkpoint".into())
                .spawn(move || run(&shared, &dir, &live));
            p.running = started.is_ok();
        }
        drop(p);
        if idle {
            self.shared.wake.notify_all();
        }
    }

    /// Notes that a checkpoint was written (nothing pending).
    pub fn written(&self) {
        let mut p = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        p.first = None;
        p.last = None;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let pending = {
            let mut p = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            p.stop = true;
            p.first.is_some()
        };
        self.shared.wake.notify_all();
        if pending && let Some(live) = self.live.upgrade() {
            let _ = checkpoint_now(&self.dir, &live);
        }
    }
}

/// The thread: waits for a quiet moment after a change, then writes the checkpoint.
fn run(shared: &Shared, dir: &Path, live: &Weak<Mutex<Live>>) {
    let mut p = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if p.stop {
            p.running = false;
            return;
        }
        let (Some(first), Some(last)) = (p.first, p.last) else {
            p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        // Quiet means no record from anyone: another process's last append counts too.
        let last = last.max(last_append_anywhere(dir).unwrap_or(last));
        let due = (last + QUIET).min(first + MAX_AGE);
        let now = Instant::now();
        if now < due {
            p = shared
                .wake
                .wait_timeout(p, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        p.first = None;
        p.last = None;
        drop(p);
        let Some(live) = live.upgrade() else {
            let mut p = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            p.running = false;
            return;
        };
        if checkpoint_now(dir, &live).is_err() {
            // Tried again after the next change (and by the next change itself when due).
        }
        drop(live);
        p = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    }
}

/// When the journal was last appended to, by any process, as an instant of this process's
/// clock (`None` when it cannot be told).
fn last_append_anywhere(dir: &Path) -> Option<Instant> {
    let modified = std::fs::metadata(dir.join(crate::store::paths::JOURNAL))
        .and_then(|m| m.modified())
        .ok()?;
    let ago = modified.elapsed().unwrap_or_default();
    Instant::now().checked_sub(ago)
}

/// Takes the board lock and writes a checkpoint if the journal holds records.
fn checkpoint_now(dir: &Path, live: &Mutex<Live>) -> Result<()> {
    let _lock = crate::store::lock::lock(dir)?;
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    let b = match live.refresh(dir, true, &mut Damages::refuse()) {
        Ok(b) => b,
        Err(e) => {
            live.forget();
            return Err(e);
        }
    };
    if b.since.records == 0 {
        return Ok(());
    }
    let written = write(dir, b, false);
    if written.is_err() {
        live.forget();
    }
    written
}

impl super::LocalStore {
    /// Writes a checkpoint if the journal holds records, so the JSON files are the whole
    /// board (before something reads or replaces them directly). The caller holds the lock.
    pub fn checkpoint_held(&self) -> Result<()> {
        let mut live = self.live();
        let written = live
            .refresh(&self.dir, true, &mut Damages::refuse())
            .and_then(|b| match b.since.records {
                0 => Ok(()),
                _ => write(&self.dir, b, false),
            });
        match &written {
            Ok(()) => self.checkpointer.written(),
            Err(_) => live.forget(),
        }
        written
    }
}
