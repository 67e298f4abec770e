//! Watching a local board for changes: the queue or the workers file replaced (the rename
//! that puts a new version in place) or the journal grown, seen through the file system's
//! change notifications (inotify on Linux, through the `notify` crate). A waiter asks
//! [`Changes::wait`] to return at the next change or after a time, whichever comes first. A
//! write is a change only if it moved the board's stamp (`store::stamp`): the checkpoint that
//! rewrites the files after a change holds the same board and does not wake the waiter. Where
//! the directory cannot be watched (no inotify, too many watches), it returns after a short
//! poll instead.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecursiveMode, Watcher};

use super::paths::{JOURNAL, QUEUE, WORKERS};
use super::stamp::{self, Stamp};

/// How long a wait lasts at most where the board cannot be watched.
pub const UNWATCHED_POLL: Duration = Duration::from_millis(250);

/// Changes to one board directory, from when [`Changes::watch`] was called.
pub struct Changes {
    /// The watcher (events stop when it is dropped) and the channel its events arrive on.
    watch: Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)>,
    /// The board directory.
    dir: PathBuf,
    /// The board's stamp when last looked at (from when watching started).
    seen: Mutex<Stamp>,
}

impl Changes {
    /// Starts watching the board in `dir`. Call it before looking at the board, so that no
    /// change made after that look is missed.
    pub fn watch(dir: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            let relevant = match res {
                Ok(ev) => {
                    ev.need_rescan()
                        || (is_a_change(&ev.kind) && ev.paths.iter().any(|p| names_a_board_file(p)))
                }
                // The watch itself failed (its queue overflowed): anything may have changed.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        });
        let watch = watcher
            .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w))
            .ok()
            .map(|w| (w, rx));
        Changes {
            watch,
            dir: dir.to_path_buf(),
            seen: Mutex::new(stamp::look(dir)),
        }
    }

    /// True if changes are seen as they happen (not by polling).
    #[cfg(test)]
    pub fn is_watched(&self) -> bool {
        self.watch.is_some()
    }

    /// Returns at the next change since the last call (at once if one came meanwhile), or
    /// after `at_most`. The caller must not hold the board lock (the stamp is taken under it).
    pub fn wait(&self, at_most: Duration) {
        let Some((_, rx)) = &self.watch else {
            std::thread::sleep(at_most.min(UNWATCHED_POLL));
            return;
        };
        let until = Instant::now() + at_most;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                return;
            }
            // One look after a burst of writes is enough: what came before it is seen.
            while rx.try_recv().is_ok() {}
            let now = stamp::look(&self.dir);
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen != now {
                *seen = now;
                return;
            }
        }
    }
}

/// True for events that change a file (created, written, renamed, removed); reading one (an
/// open, an access, a close without writing — every look at the board, the waiter's own among
/// them) is not a change and must not wake the waiter.
fn is_a_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    )
}

/// True for the files whose change may give a waiting worker something to do: the queue
/// (tasks added, released, failed, cancelled) and the workers (a deregistration, a specialist
/// gone offline).
fn names_a_board_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == QUEUE || n == WORKERS || n == JOURNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reading_the_board_does_not_wake_the_waiter() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::durable::replace(dir.path(), QUEUE, b"[]\n", true).unwrap();
        let changes = Changes::watch(dir.path());
        let d = dir.path().to_path_buf();
        let reader = std::thread::spawn(move || {
            for _ in 0..20 {
                let _ = std::fs::read(d.join(QUEUE)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let started = Instant::now();
        changes.wait(Duration::from_millis(400));
        assert!(
            started.elapsed() >= Duration::from_millis(350),
            "woken by a read of the queue"
        );
        reader.join().unwrap();
    }

    #[test]
    fn a_checkpoint_does_not_wake_the_waiter_and_a_change_does() {
        use crate::op::{self, NewTask, Op};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::local::LocalStore::init(dir.path(), None).unwrap();
        let add = |d: &str| {
            let task = NewTask {
                description: d.into(),
                ..NewTask::default()
            };
            store
                .execute_keyed(Op::Add(op::Add { task }), None)
                .unwrap();
        };
        add("a");
        let changes = Changes::watch(dir.path());
        assert!(changes.is_watched(), "inotify is available here");
        let d = dir.path().to_path_buf();
        let compact = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let other = crate::store::local::LocalStore::open(&d).unwrap();
            other.execute_keyed(Op::Compact(op::Compact), None).unwrap();
        });
        let started = Instant::now();
        changes.wait(Duration::from_millis(600));
        assert!(
            started.elapsed() >= Duration::from_millis(550),
            "woken by a checkpoint after {:?}",
            started.elapsed()
        );
        compact.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(JOURNAL))
                .unwrap()
                .trim_end_matches('\0')
                .lines()
                .count(),
            1,
            "the compaction left the journal with its header alone"
        );
        add("b");
        let started = Instant::now();
        changes.wait(Duration::from_secs(20));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not woken by a change"
        );
    }

    #[test]
    fn a_replaced_queue_wakes_the_waiter_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let changes = Changes::watch(dir.path());
        assert!(changes.is_watched(), "inotify is available here");
        crate::store::durable::replace(dir.path(), "progress.json", b"{}", false).unwrap();
        let started = Instant::now();
        changes.wait(Duration::from_millis(300));
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "woken by another file"
        );
        let d = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            crate::store::durable::replace(&d, QUEUE, b"[]\n", true).unwrap();
        });
        let started = Instant::now();
        changes.wait(Duration::from_secs(20));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not woken by the queue"
        );
        writer.join().unwrap();
    }
}
