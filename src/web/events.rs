//! `GET /events`: a Server-Sent Events stream that says "the board changed" to every open
//! control-room page, which then fetches itself again (`assets/app.js`).
//!
//! Two signals feed it, both `tokio::sync::watch` channels, so an open page costs the board's
//! writer nothing: the writer thread's own signal after each batch that changed the queue or
//! the workers (`server/board.rs`), and one watch of the board directory per server (inotify,
//! through `notify`) for everything else — a question or answer appended to the log, the
//! progress record, and changes made beside the server (a local board under
//! `vine dashboard`, where workers write the files themselves). The directory watch counts
//! changes of the board, not writes of its files: [`SETTLE`] after a write it stamps the board
//! (`store::stamp`) and moves on only if the stamp moved, so the checkpoint that rewrites the
//! files after a change (the same board) does not make every page fetch itself again. Where
//! the directory cannot be watched, one thread stamps the board once a second instead.
//!
//! A stream sends one event [`MIN_GAP`] after a change, for every change within that gap
//! (coalesced by the watch channels), and a keep-alive comment every 15 s.

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::watch;

use crate::server::App;
use crate::store::paths::{ARCHIVE, BOARD, JOURNAL, LOG, PROGRESS, QUEUE, WORKERS};
use crate::store::stamp::{self, Stamp};

/// How long a stream gathers changes before it sends their one event.
pub const MIN_GAP: Duration = Duration::from_millis(250);
/// A comment is sent this often on a quiet stream, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the board is stamped where the directory cannot be watched.
const POLL: Duration = Duration::from_secs(1);
/// How long after a board file's write the board is stamped (the writes of one change or one
/// checkpoint come together; the stamp is taken once for them).
pub const SETTLE: Duration = Duration::from_millis(25);
/// The board files whose change a page shows.
const FILES: &[&str] = &[QUEUE, WORKERS, PROGRESS, LOG, ARCHIVE, BOARD, JOURNAL];

/// Where the board stands: the writer's change count and the directory watch's. A page
/// carries the version it was made from; its stream reports a change at once if the board has
/// moved on since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    writer: u64,
    files: u64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.writer, self.files)
    }
}

impl Version {
    /// Reads `12-40` (what `Display` writes).
    pub fn parse(s: &str) -> Option<Version> {
        let (w, f) = s.split_once('-')?;
        Some(Version {
            writer: w.parse().ok()?,
            files: f.parse().ok()?,
        })
    }
}

/// The change signals of one server.
pub struct Changes {
    /// The writer thread's signal (absent without a board).
    writer: Option<watch::Receiver<u64>>,
    /// Bumped by the directory watch (or the poll).
    files: watch::Sender<u64>,
    /// The directory watch; events stop when it is dropped.
    _watcher: Option<notify::RecommendedWatcher>,
    /// Held while the server lives; the poll (where there is one) stops when it is gone.
    _alive: Arc<()>,
}

impl Changes {
    /// Starts watching the board in `dir` (if there is one) beside the writer's signal.
    pub fn start(dir: Option<&Path>, writer: Option<watch::Receiver<u64>>) -> Self {
        let files = watch::Sender::new(0u64);
        let alive = Arc::new(());
        let watcher = dir.and_then(|d| match watch_dir(d, files.clone()) {
            Some(w) => Some(w),
            None => {
                poll_dir(d.to_path_buf(), files.clone(), Arc::downgrade(&alive));
                None
            }
        });
        Changes {
            writer,
            files,
            _watcher: watcher,
            _alive: alive,
        }
    }

    /// Where the board stands now.
    pub fn version(&self) -> Version {
        Version {
            writer: self.writer.as_ref().map_or(0, |w| *w.borrow()),
            files: *self.files.borrow(),
        }
    }

    /// A listener for the changes after now.
    fn subscribe(&self) -> Subscription {
        let mut writer = self.writer.clone();
        if let Some(w) = &mut writer {
            w.mark_unchanged();
        }
        Subscription {
            writer,
            files: self.files.subscribe(),
        }
    }
}

/// True for events that change a board file (not reads: every page's own look at the board
/// opens the files).
fn is_a_change(ev: &notify::Event) -> bool {
    let changes = matches!(
        ev.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    ev.need_rescan()
        || (changes
            && ev.paths.iter().any(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| FILES.contains(&n))
            }))
}

fn watch_dir(dir: &Path, tx: watch::Sender<u64>) -> Option<notify::RecommendedWatcher> {
    let (wrote, writes) = std::sync::mpsc::channel::<()>();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // A failed watch (its queue overflowed) may have missed anything: the stamp tells.
        if res.as_ref().map_or(true, is_a_change) {
            let _ = wrote.send(());
        }
    })
    .ok()?;
    w.watch(dir, RecursiveMode::NonRecursive).ok()?;
    let dir = dir.to_path_buf();
    // Taken before `start` returns: every change after it is seen as one.
    let mut seen = stamp::look(&dir);
    // Ends when the watcher (and with it the sender) is dropped.
    std::thread::spawn(move || {
        while writes.recv().is_ok() {
            std::thread::sleep(SETTLE);
            while writes.try_recv().is_ok() {}
            moved_on(&tx, &mut seen, stamp::look(&dir));
        }
    });
    Some(w)
}

/// Moves the file signal on if the board's stamp is not the one seen last.
fn moved_on(tx: &watch::Sender<u64>, seen: &mut Stamp, now: Stamp) {
    if now != *seen {
        *seen = now;
        tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Where the directory cannot be watched: one thread stamps the board once a second, while
/// the server lives.
fn poll_dir(dir: PathBuf, tx: watch::Sender<u64>, alive: std::sync::Weak<()>) {
    let mut seen = stamp::look(&dir);
    std::thread::spawn(move || {
        while alive.strong_count() > 0 {
            std::thread::sleep(POLL);
            moved_on(&tx, &mut seen, stamp::look(&dir));
        }
    });
}

/// One stream's receivers.
struct Subscription {
    writer: Option<watch::Receiver<u64>>,
    files: watch::Receiver<u64>,
}

impl Subscription {
    /// Takes every change so far as seen.
    fn mark_seen(&mut self) {
        if let Some(w) = &mut self.writer {
            w.mark_unchanged();
        }
        self.files.mark_unchanged();
    }

    /// Waits for the next change; false once no signal is left.
    async fn changed(&mut self) -> bool {
        loop {
            let Subscription { writer, files } = self;
            let writer_gone = tokio::select! {
                r = async {
                    match writer.as_mut() {
                        Some(w) => w.changed().await,
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(()) => return true,
                    Err(_) => true,
                },
                r = files.changed() => return r.is_ok(),
            };
            if writer_gone {
                // The writer stopped: the directory watch still sees the files.
                self.writer = None;
            }
        }
    }
}

/// The query of `/events`: the version the page was made from.
#[derive(Deserialize)]
pub struct Since {
    since: Option<String>,
}

/// `GET /events?since=VERSION`: an event `change` (its data the board's new version) after
/// each change of the board, at once if the board changed since `VERSION`.
pub async fn stream(State(app): State<Arc<App>>, Query(q): Query<Since>) -> Response {
    let changes = &app.web.changes;
    let sub = changes.subscribe();
    let now = changes.version();
    let behind = q
        .since
        .as_deref()
        .and_then(Version::parse)
        .is_some_and(|v| v != now);
    let app_for_version = app.clone();
    let events = futures_util::stream::unfold((sub, behind), move |(mut sub, pending)| {
        let app = app_for_version.clone();
        async move {
            if !pending && !sub.changed().await {
                return None;
            }
            // One change often comes on both signals (the writer's, then the file's), and
            // a busy board changes many times a second: what comes within the gap is one
            // event, so a page fetches itself once for it.
            tokio::time::sleep(MIN_GAP).await;
            sub.mark_seen();
            let version = app.web.changes.version().to_string();
            let event = Event::default().event("change").data(version);
            Some((Ok::<_, Infallible>(event), (sub, false)))
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_back_what_they_write() {
        let v = Version {
            writer: 12,
            files: 40,
        };
        assert_eq!(v.to_string(), "12-40");
        assert_eq!(Version::parse("12-40"), Some(v));
        assert_eq!(Version::parse("12"), None);
        assert_eq!(Version::parse("a-b"), None);
    }

    #[tokio::test]
    async fn a_board_file_written_beside_the_server_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let changes = Changes::start(Some(dir.path()), None);
        let before = changes.version();
        let mut sub = changes.subscribe();
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        std::fs::write(dir.path().join(LOG), "{}\n").unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), sub.changed()).await;
        assert_eq!(seen, Ok(true));
        assert_ne!(changes.version(), before);
    }

    #[tokio::test]
    async fn the_writers_signal_is_a_change() {
        let (tx, rx) = watch::channel(0u64);
        let changes = Changes::start(None, Some(rx));
        let mut sub = changes.subscribe();
        tx.send_replace(1);
        let seen = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await;
        assert_eq!(seen, Ok(true));
        assert_eq!(changes.version().writer, 1);
    }
}
