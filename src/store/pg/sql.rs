//! The board's SQL: every statement, prepared once per connection ([`Conn`]), so each use is
//! one round trip.

use std::collections::HashMap;

use postgres::types::Type;
use postgres::{Client, Statement};

use super::conn::Target;
use crate::error::Result;

/// The board row as JSON (the mirror's `BoardRow`).
const BOARD_ROW: &str = "SELECT 0::smallint, NULL::bigint, false, NULL::text, \
     json_build_object('version', version, 'next_id', next_id, 'next_seq', next_seq, \
       'clock_ms', clock_ms, 'archived_completed', archived_completed, \
       'archived_cancelled', archived_cancelled, 'settings', settings, 'progress', progress), \
     0::bigint FROM board WHERE id = 1";

/// Locks the board row for a batch of changes, in the same round trip as `BEGIN`; gives the
/// counters and the database's clock (epoch ms). Sent as a simple query (no parameters).
pub(crate) const LOCK: &str = "BEGIN; SELECT version, next_id, next_seq, clock_ms, \
     (extract(epoch from clock_timestamp()) * 1000)::bigint FROM board WHERE id = 1 FOR UPDATE";

/// Which kinds of rows a batch writes, and whether it reads board files: each kind is a part
/// of the write statement, left out when the batch has none (a claim writes a task, a worker
/// and a log entry, and reads its instruction file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    /// Tasks ($2-$6).
    pub tasks: bool,
    /// Workers ($7-$8).
    pub workers: bool,
    /// Sessions ($9-$11).
    pub sessions: bool,
    /// Log entries ($12-$15).
    pub messages: bool,
    /// Board files ($16-$17).
    pub files: bool,
    /// Board files to read ($26).
    pub reads: bool,
}

/// The parameters' types of every write statement (each shape uses some of them).
const WRITE_TYPES: [Type; 27] = [
    Type::INT8,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::BOOL_ARRAY,
    Type::INT8_ARRAY,
    Type::JSON_ARRAY,
    Type::TEXT_ARRAY,
    Type::JSON_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::JSON_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::JSON_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::JSON,
    Type::INT8,
    Type::INT8,
    Type::BOOL,
    Type::INT8,
    Type::TEXT_ARRAY,
    Type::INT8,
];

/// The statement that writes what a batch changed at board version $1, of the kinds `shape`
/// names, notifies every server listening, and gives the board files among the paths $26 (a
/// claim's instruction files). A new task's `ord` is its id (above every id before it, so new
/// tasks come last in the queue's order).
///
/// With $24 true the write is conditional: the board row is changed only if it is still at
/// version $1 - 1 and the database's clock is within $27 ms of $25 (the time the batch was
/// stamped with); otherwise nothing at all is written. The first column of every returned
/// row is how many board rows were changed (1, or 0 when the condition failed); the file rows
/// come only when it is 1.
pub(crate) fn write_sql(shape: Shape) -> String {
    let mut sql = String::from(
        "WITH \
  b AS (UPDATE board SET version = $1, next_id = greatest(next_id, $18), \
          next_seq = greatest(next_seq, $19), clock_ms = coalesce($20, clock_ms), \
          progress = coalesce($21, progress), archived_completed = archived_completed + $22, \
          archived_cancelled = archived_cancelled + $23 \
        WHERE id = 1 AND (NOT $24 OR (version = $1 - 1 AND \
          abs((extract(epoch from clock_timestamp()) * 1000)::bigint - $25) <= $27)) \
        RETURNING pg_notify('vine_board', $1::text)), \
  ok AS (SELECT count(*) AS n FROM b)",
    );
    if shape.tasks {
        sql.push_str(
            ", t AS (INSERT INTO tasks (id, ord, status, archived, archived_at, version, body) \
        SELECT id, id, status, archived, archived_at, $1, body \
        FROM unnest($2, $3, $4, $5, $6) AS x(id, status, archived, archived_at, body) \
        WHERE (SELECT n FROM ok) = 1 \
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, archived = EXCLUDED.archived, \
           archived_at = EXCLUDED.archived_at, version = EXCLUDED.version, body = EXCLUDED.body)",
        );
    }
    if shape.workers {
        sql.push_str(
            ", w AS (INSERT INTO workers (id, version, body) \
        SELECT id, $1, body FROM unnest($7, $8) AS x(id, body) \
        WHERE (SELECT n FROM ok) = 1 \
        ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body)",
        );
    }
    if shape.sessions {
        sql.push_str(
            ", s AS (INSERT INTO sessions (id, ord, version, body) \
        SELECT id, ord, $1, body FROM unnest($9, $10, $11) AS x(id, ord, body) \
        WHERE (SELECT n FROM ok) = 1 \
        ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body)",
        );
    }
    if shape.messages {
        sql.push_str(
            ", m AS (INSERT INTO messages (seq, kind, task, body) \
        SELECT * FROM unnest($12, $13, $14, $15) WHERE (SELECT n FROM ok) = 1)",
        );
    }
    if shape.files {
        sql.push_str(
            ", f AS (INSERT INTO files (path, version, content) \
        SELECT path, $1, content FROM unnest($16, $17) AS x(path, content) \
        WHERE (SELECT n FROM ok) = 1 \
        ON CONFLICT (path) DO UPDATE SET version = EXCLUDED.version, content = EXCLUDED.content)",
        );
    }
    if shape.reads {
        sql.push_str(
            " SELECT ok.n, files.path, files.content FROM ok \
  LEFT JOIN files ON ok.n = 1 AND files.path = ANY($26)",
        );
    } else {
        sql.push_str(" SELECT ok.n, NULL::text, NULL::bytea FROM ok");
    }
    sql
}

/// The statements of one connection.
pub(crate) struct Stmts {
    /// Everything live: the board row, the queue, the workers, the sessions (rows of
    /// `kind, id, archived, name, body, ord`).
    pub full: Statement,
    /// What changed after board version $1, archived tasks included (without their body),
    /// and the tasks among the ids $2 as they are.
    pub delta: Statement,
    /// The write statements prepared so far, by shape (see [`write_sql`]).
    pub writes: HashMap<Shape, Statement>,
    /// The whole log, oldest first.
    pub log_all: Statement,
    /// The last $1 entries of the log, oldest first.
    pub log_recent: Statement,
    /// The questions and answers, oldest first.
    pub log_questions: Statement,
    /// Entries by task ($1), kind ($2), after a sequence number ($3), the last $4 of them
    /// (each condition off when NULL).
    pub log_matching: Statement,
    /// Questions and answers after sequence number $1, oldest first (for the figures).
    pub log_questions_after: Statement,
    /// Archived tasks among the ids $1.
    pub archived_by_id: Statement,
    /// Every archived task, oldest archived first.
    pub archive_all: Statement,
    /// Archived tasks moved at board versions after $1, in archive order, with their
    /// `archived_at` (epoch ms) and the version.
    pub archived_after: Statement,
    /// Board files among the paths $1: path and content.
    pub files: Statement,
}

/// A connection and its prepared statements.
pub(crate) struct Conn {
    /// The connection.
    pub client: Client,
    /// Its statements.
    pub st: Stmts,
}

impl Conn {
    /// The write statement of `shape`, prepared on first use.
    pub(crate) fn write_statement(
        &mut self,
        shape: Shape,
    ) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.st.writes.get(&shape) {
            return Ok(s.clone());
        }
        let s = self.client.prepare_typed(&write_sql(shape), &WRITE_TYPES)?;
        self.st.writes.insert(shape, s.clone());
        Ok(s)
    }

    /// Connects and prepares every statement.
    pub(crate) fn open(target: &Target) -> Result<Conn> {
        Conn::prepared(target.connect()?, target)
    }

    /// Prepares every statement on `client` (whose database has the board's tables).
    pub(crate) fn prepared(mut client: Client, target: &Target) -> Result<Conn> {
        let st = prepare(&mut client).map_err(|e| target.error("preparing statements on", e))?;
        Ok(Conn { client, st })
    }
}

fn prepare(c: &mut Client) -> std::result::Result<Stmts, postgres::Error> {
    // The statements are planned once, not at every use: their plans do not depend on the
    // values (arrays of rows, ids), and planning the write costs more than running it
    // (`EXPLAIN ANALYZE`). PostgreSQL would otherwise keep planning each use anew when it
    // estimates a custom plan cheaper.
    c.batch_execute("SET plan_cache_mode = force_generic_plan")?;
    let full = format!(
        "{BOARD_ROW} \
         UNION ALL SELECT 1::smallint, id, false, NULL::text, body, ord FROM tasks WHERE NOT archived \
         UNION ALL SELECT 2::smallint, NULL::bigint, false, id, body, 0::bigint FROM workers \
         UNION ALL SELECT 3::smallint, NULL::bigint, false, id, body, ord FROM sessions \
         ORDER BY 1, 6"
    );
    let delta = format!(
        "{BOARD_ROW} \
         UNION ALL SELECT 1::smallint, id, archived, NULL::text, \
                          CASE WHEN archived THEN NULL ELSE body END, ord \
                   FROM tasks WHERE version > $1 OR id = ANY($2::bigint[]) \
         UNION ALL SELECT 2::smallint, NULL::bigint, false, id, body, 0::bigint FROM workers WHERE version > $1 \
         UNION ALL SELECT 3::smallint, NULL::bigint, false, id, body, ord FROM sessions WHERE version > $1 \
         ORDER BY 1, 6"
    );
    Ok(Stmts {
        full: c.prepare(&full)?,
        delta: c.prepare(&delta)?,
        writes: HashMap::new(),
        log_all: c.prepare("SELECT body FROM messages ORDER BY seq")?,
        log_recent: c.prepare(
            "SELECT body FROM (SELECT seq, body FROM messages ORDER BY seq DESC LIMIT $1) m ORDER BY seq",
        )?,
        log_questions: c.prepare(
            "SELECT body FROM messages WHERE kind IN ('question', 'answer') ORDER BY seq",
        )?,
        log_matching: c.prepare(
            "SELECT body FROM (SELECT seq, body FROM messages \
               WHERE ($1::bigint IS NULL OR task = $1) AND ($2::text IS NULL OR kind = $2) \
                 AND ($3::bigint IS NULL OR seq > $3) \
               ORDER BY seq DESC LIMIT $4) m ORDER BY seq",
        )?,
        log_questions_after: c.prepare(
            "SELECT seq, body FROM messages WHERE kind IN ('question', 'answer') AND seq > $1 ORDER BY seq",
        )?,
        archived_by_id: c.prepare("SELECT body FROM tasks WHERE archived AND id = ANY($1)")?,
        archive_all: c.prepare("SELECT body FROM tasks WHERE archived ORDER BY version, ord")?,
        archived_after: c.prepare(
            "SELECT version, archived_at, body FROM tasks WHERE archived AND version > $1 ORDER BY version, ord",
        )?,
        files: c.prepare("SELECT path, content FROM files WHERE path = ANY($1)")?,
    })
}
