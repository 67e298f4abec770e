//! The SQLite peer: a minimal task queue in one SQLite database in WAL mode with
//! `synchronous=FULL`, the comparison issue #12 states its targets against.
//!
//! One table, one row per task (about the size of a task on the file queue: description,
//! about 700 bytes of instructions, context files and metadata as JSON text), and a partial
//! index on the pending tasks in claim order. A claim is one `BEGIN IMMEDIATE` transaction
//! (`SELECT ... WHERE status = 'pending' ORDER BY priority, id LIMIT 1`, `UPDATE` that row,
//! `COMMIT`), and so is a complete; with `synchronous=FULL` every commit appends to the WAL
//! and fsyncs it. Every connection waits up to 10 s for the write lock (busy timeout, with
//! SQLite's own busy handler).
//! Finished tasks stay in the table.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::common::{R, instructions_text};

/// How long a connection waits for another's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows inserted per transaction while a queue is built.
const BUILD_BATCH: usize = 1_000;

/// One connection to a SQLite task queue.
pub struct SqliteQueue {
    conn: Connection,
    /// Number of the next task added by this connection (one more than the largest id when
    /// it opened: only one connection at a time adds).
    next: i64,
}

/// A claimed task: what a worker needs to start.
pub struct SqliteClaim {
    pub id: i64,
    pub description: String,
    pub instructions: String,
}

impl SqliteQueue {
    /// Creates the queue in a new database at `path` with `history` completed tasks and
    /// `pending` pending ones.
    pub fn create(path: &Path, history: usize, pending: usize) -> R<SqliteQueue> {
        if path.exists() {
            return Err(format!("{} already exists", path.display()).into());
        }
        let mut q = SqliteQueue::open(path)?;
        let mode: String = q
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite would not use WAL (journal_mode = {mode})").into());
        }
        q.conn.execute_batch(
            "CREATE TABLE tasks (
                 id INTEGER PRIMARY KEY,
                 status TEXT NOT NULL,
                 priority INTEGER NOT NULL,
                 description TEXT NOT NULL,
                 instructions TEXT NOT NULL,
                 context_files TEXT NOT NULL,
                 metadata TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 claimed_by TEXT,
                 claimed_at INTEGER,
                 completed_at INTEGER,
                 result TEXT,
                 attempts INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX tasks_claimable ON tasks (priority, id) WHERE status = 'pending';",
        )?;
        let mut left = history;
        while left > 0 {
            let k = left.min(BUILD_BATCH);
            q.insert(k, "completed")?;
            left -= k;
        }
        let mut left = pending;
        while left > 0 {
            let k = left.min(BUILD_BATCH);
            q.insert(k, "pending")?;
            left -= k;
        }
        Ok(q)
    }

    /// Opens the queue at `path` (a connection with `synchronous=FULL` and the busy timeout;
    /// WAL mode is a property of the database, set by [`SqliteQueue::create`]).
    pub fn open(path: &Path) -> R<SqliteQueue> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let next = conn
            .query_row("SELECT coalesce(max(id), 0) + 1 FROM tasks", [], |r| {
                r.get(0)
            })
            .unwrap_or(1);
        Ok(SqliteQueue { conn, next })
    }

    /// Makes this connection wait for the write lock by trying again every 100 µs (up to
    /// 10 s) instead of SQLite's own busy handler, which backs off to 100 ms sleeps: the
    /// bench's feeder uses it, so that it is not starved by busy workers while it keeps the
    /// backlog (the workers keep SQLite's handler, as an application would).
    pub fn poll_for_lock(&mut self) -> R<()> {
        const EVERY: Duration = Duration::from_micros(100);
        let tries = (BUSY_TIMEOUT.as_micros() / EVERY.as_micros()) as i32;
        self.conn.busy_handler(Some(move |n: i32| {
            std::thread::sleep(EVERY);
            n < tries
        }))?;
        Ok(())
    }

    /// Claims the first pending task (highest priority, then oldest) for `worker`: one
    /// `BEGIN IMMEDIATE` transaction; `None` when nothing is pending.
    pub fn claim(&mut self, worker: &str) -> R<Option<SqliteClaim>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let task = tx
            .prepare_cached(
                "SELECT id, description, instructions FROM tasks
                 WHERE status = 'pending' ORDER BY priority, id LIMIT 1",
            )?
            .query_row([], |r| {
                Ok(SqliteClaim {
                    id: r.get(0)?,
                    description: r.get(1)?,
                    instructions: r.get(2)?,
                })
            })
            .optional()?;
        if let Some(t) = &task {
            tx.prepare_cached(
                "UPDATE tasks SET status = 'in_progress', claimed_by = ?1, claimed_at = ?2,
                     attempts = attempts + 1
                 WHERE id = ?3",
            )?
            .execute(params![worker, now_ms(), t.id])?;
        }
        tx.commit()?;
        Ok(task)
    }

    /// Completes task `id`, claimed by `worker`, with `result`: one `BEGIN IMMEDIATE`
    /// transaction; fails when the task is not in progress for `worker`.
    pub fn complete(&mut self, id: i64, worker: &str, result: &str) -> R<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx
            .prepare_cached(
                "UPDATE tasks SET status = 'completed', completed_at = ?1, result = ?2
                 WHERE id = ?3 AND claimed_by = ?4 AND status = 'in_progress'",
            )?
            .execute(params![now_ms(), result, id, worker])?;
        if changed != 1 {
            return Err(format!("task {id} is not in progress for {worker}").into());
        }
        tx.commit()?;
        Ok(())
    }

    /// Pending tasks (a read, no write lock).
    pub fn pending(&self) -> R<usize> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM tasks WHERE status = 'pending'")?
            .query_row([], |r| r.get(0))?;
        Ok(usize::try_from(n)?)
    }

    /// Adds `count` pending tasks in one `BEGIN IMMEDIATE` transaction.
    pub fn add(&mut self, count: usize) -> R<()> {
        self.insert(count, "pending")
    }

    /// Inserts `count` tasks with `status` in one transaction.
    fn insert(&mut self, count: usize, status: &str) -> R<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tasks (id, status, priority, description, instructions,
                     context_files, metadata, created_at, claimed_by, claimed_at, completed_at,
                     result, attempts)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
            )?;
            let now = now_ms();
            for _ in 0..count {
                let n = self.next;
                self.next += 1;
                let done = status == "completed";
                insert.execute(params![
                    n,
                    status,
                    format!("Implement module {n}: the endpoint, its tests and its docs"),
                    instructions_text(n as u64),
                    format!(r#"["docs/api-spec.md","src/module_{n}/mod.rs"]"#),
                    format!(
                        r#"{{"working_directory":"src/module_{n}","acceptance":"cargo test passes; no new warnings"}}"#
                    ),
                    now,
                    done.then_some("history"),
                    done.then_some(now),
                    done.then(|| format!(
                        "Done: task {n} implemented, 12 tests added, docs updated"
                    )),
                    i64::from(done),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
