//! Watching a local board for changes: the queue or the workers file replaced (the rename
//! that puts a new version in place), seen through the file system's change notifications
//! (inotify on Linux, through the `notify` crate). A waiter asks [`Changes::wait`] to return
//! at the next change or after a time, whichever comes first. Where the directory cannot be
//! watched (no inotify, too many watches), it returns after a short poll instead.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};

use super::paths::{JOURNAL, QUEUE, WORKERS};

/// How long a wait lasts at most where the board cannot be watched.
pub const UNWATCHED_POLL: Duration = Duration::from_millis(250);

/// Changes to one board directory, from when [`Changes::watch`] was called.
pub struct Changes {
    /// The watcher (events stop when it is dropped) and the channel its events arrive on.
    watch: Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)>,
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
        Changes { watch }
    }

    /// True if changes are seen as they happen (not by polling).
    #[cfg(test)]
    pub fn is_watched(&self) -> bool {
        self.watch.is_some()
    }

    /// Returns at the next change since the last call (at once if one came meanwhile), or
    /// after `at_most`.
    pub fn wait(&self, at_most: Duration) {
        match &self.watch {
            Some((_, rx)) => {
                let _ = rx.recv_timeout(at_most);
                // One look after a burst of changes is enough: what came before it is seen.
                while rx.try_recv().is_ok() {}
            }
            None => std::thread::sleep(at_most.min(UNWATCHED_POLL)),
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
