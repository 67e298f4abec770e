//! A board kept in PostgreSQL (`vine serve --store postgres://...`): any number of servers
//! share one database, each applying ops with the same pure rules as the files.
//!
//! One board row holds the version (bumped by every commit), the counters, the settings, the
//! progress record and the board clock; tasks, workers, sessions, log entries and board files
//! are rows of their own (`migrations/`). A batch of changes (the server's group commit,
//! `write.rs`) is applied, op by op as `LocalStore` does it, to the server's copy of the live
//! board (`mirror.rs`, brought up to date by loading only the rows that changed), and the rows
//! it changed are written in one statement that moves the board row's version and notifies
//! (`NOTIFY vine_board`): committed on its own if the board is still at the copy's version (one
//! round trip), or, after conflicts and for ops that need more than the copy, under the board
//! row's lock (`SELECT ... FOR UPDATE`, which serializes writers across servers). Reads (`read.rs`) take no lock: they
//! bring a second copy up to date the same way and answer from it. A thread listening for the
//! notifications (`listen.rs`) wakes the server's long-polls and live pages on changes made
//! through other servers.
//!
//! One server leads (`lead.rs`): the others hand it their batches (`server/forward.rs`), so
//! that the servers' copies do not keep colliding.
//!
//! The module's parts: `conn.rs` (connection strings, connecting, what an error means),
//! `schema.rs` (migrations), `sql.rs` (the statements), `mirror.rs`, `write.rs`, `read.rs`,
//! `listen.rs`, `lead.rs`, `pool.rs` (read connections), `tls.rs` (`sslmode=require`),
//! `transfer.rs` (export and import).

mod conn;
mod lead;
mod listen;
mod mirror;
mod pool;
mod read;
mod schema;
mod sql;
mod tls;
mod transfer;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::op::{Op, Reply};
use crate::settings::Settings;
use crate::store::{BatchStore, Transport};
use conn::Target;
use mirror::Mirror;
use sql::Conn;

pub use transfer::Moved;

/// The schema version this binary writes (`vine_schema`).
pub const SCHEMA_VERSION: i32 = schema::LATEST;

/// A board in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.target.location())
            .finish()
    }
}

/// What the handle's clones share.
struct Inner {
    target: Target,
    /// The writer's connection and copy of the live board (used under the board row's lock).
    writer: Mutex<Writer>,
    /// The reads' connections.
    readers: pool::Pool,
    /// The reads' copy of the live board.
    read_mirror: Mutex<Option<Mirror>>,
    /// The history the figures read, brought up to date with what was archived and asked since.
    history: Mutex<read::HistoryCache>,
    /// The highest board version this server has committed or been told of.
    changes: AtomicU64,
    /// Called with the new version when another server changed the board.
    wakers: Mutex<Vec<Waker>>,
    /// Which server leads (see `lead.rs`).
    lead: lead::Lead,
}

/// Told the new change count when the board changed other than through this handle.
type Waker = Box<dyn Fn(u64) + Send + Sync>;

/// The writer's connection and copy of the live board.
#[derive(Default)]
struct Writer {
    conn: Option<Conn>,
    mirror: Option<Mirror>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PgStore {
    /// Opens the board in the database `url` names (a URL or key=value connection string):
    /// connects, creates or updates the schema, makes the board row if there is none, and
    /// starts listening for changes made through other servers. An unreachable database is
    /// [`Error::Unreachable`]; a schema newer than this binary knows, [`Error::Incompatible`].
    pub fn open(url: &str) -> Result<PgStore> {
        let target = Target::parse(url)?;
        let mut conn = target.connect()?;
        schema::migrate(&mut conn, &target)?;
        let conn = Conn::prepared(conn, &target)?;
        let store = PgStore {
            inner: Arc::new(Inner {
                target,
                writer: Mutex::new(Writer {
                    conn: Some(conn),
                    mirror: None,
                }),
                readers: pool::Pool::default(),
                read_mirror: Mutex::new(None),
                history: Mutex::default(),
                changes: AtomicU64::new(0),
                wakers: Mutex::new(Vec::new()),
                lead: lead::Lead::default(),
            }),
        };
        listen::start(Arc::downgrade(&store.inner), store.inner.target.clone());
        lead::start(Arc::downgrade(&store.inner), store.inner.target.clone());
        Ok(store)
    }

    /// The schema version of the database `url` names (0 when it has none), without changing
    /// anything.
    pub fn schema_version(url: &str) -> Result<i32> {
        let target = Target::parse(url)?;
        let mut client = target.connect()?;
        schema::version(&mut client, &target)
    }

    /// Records that the board reached `version` (committed here or told by a notification);
    /// true if that is news.
    fn saw(&self, version: i64) -> bool {
        saw(&self.inner, version)
    }

    /// A connection for a read (see `pool.rs`).
    fn reader(&self) -> Result<Conn> {
        self.inner.readers.take(&self.inner.target)
    }

    /// Gives a read connection back.
    fn give_back(&self, conn: Conn) {
        self.inner.readers.give(conn);
    }
}

/// See [`PgStore::saw`]: news wakes the waiters (a change this server made, one another
/// server made and notified, or one a read found first).
fn saw(inner: &Inner, version: i64) -> bool {
    let v = u64::try_from(version).unwrap_or(0);
    let news = inner.changes.fetch_max(v, Ordering::AcqRel) < v;
    if news {
        let now = inner.changes.load(Ordering::Acquire);
        for wake in locked(&inner.wakers).iter() {
            wake(now);
        }
    }
    news
}

impl Transport for PgStore {
    /// Carries out one op: a read without a lock, a change as a batch of one. A turn-ended op
    /// that asks for a wait is applied once (the server holds it, see `server/board.rs`).
    fn execute(&self, op: Op) -> Result<Reply> {
        if op.is_read_only() {
            return self.read(op);
        }
        self.write_batch(vec![(op, None)])
            .pop()
            .unwrap_or_else(|| Err(Error::Protocol("a batch of one gave no reply".into())))
    }

    fn location(&self) -> String {
        self.inner.target.location().to_string()
    }
}

impl BatchStore for PgStore {
    fn execute_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        crate::store::split_batch(ops, |op| self.read(op), |ops| self.write_batch(ops))
    }

    fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Acquire)
    }

    fn on_outside_change(&self, wake: Box<dyn Fn(u64) + Send + Sync>) {
        locked(&self.inner.wakers).push(wake);
    }

    fn read_board_file(&self, rel: &str) -> Result<String> {
        let mut conn = self.reader()?;
        let found = read::board_files(&mut conn, &self.inner.target, &[rel.to_string()]);
        self.give_back(conn);
        let text = found?.into_iter().next().map(|(_, bytes)| bytes);
        match text {
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| Error::Invalid(format!("board file {rel:?} is not UTF-8 text"))),
            None => Err(Error::io(
                "reading",
                format!("{} file {rel}", self.inner.target.location()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )),
        }
    }

    fn set_settings(&self, settings: Settings) -> Result<()> {
        self.write_settings(settings)
    }

    fn stand_for_lead(&self, url: &str) {
        self.inner.lead.stand(url);
    }

    fn leader(&self) -> Option<String> {
        self.inner.lead.other()
    }

    fn leading(&self) -> bool {
        self.inner.lead.leading()
    }

    fn saw_change(&self, changes: u64) {
        self.saw(i64::try_from(changes).unwrap_or(i64::MAX));
    }

    fn put_board_file(&self, rel: &str, content: &[u8]) -> Result<()> {
        crate::validate::board_path("board file", rel)?;
        let mut conn = self.reader()?;
        let done = conn
            .client
            .execute(
                "INSERT INTO files (path, version, content) \
                 VALUES ($1, (SELECT version FROM board WHERE id = 1), $2) \
                 ON CONFLICT (path) DO UPDATE SET version = EXCLUDED.version, content = EXCLUDED.content",
                &[&read::file_key(rel), &content],
            )
            .map(|_| ())
            .map_err(|e| self.inner.target.error("writing a board file to", e));
        self.give_back(conn);
        done
    }
}
