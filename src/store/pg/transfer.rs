//! Moving a board between files and PostgreSQL (`vine board export` / `vine board import`).
//!
//! Export reads the whole board in one snapshot (servers may keep running) and writes the
//! original files into a new directory: `board.json`, `task-queue.json`, `worker-status.json`,
//! `progress.json`, `sessions.json`, `agent-comms.jsonl` (each entry's text as it was stored),
//! `task-archive.jsonl` (in archive order, with the running totals), and the board files
//! (instruction files). Import reads a file board under its lock (refusing damage, as a change
//! would) and loads it into a database whose board is empty, in one transaction. Nothing is
//! lost either way: an import of an export gives the same board, and an export of an import
//! the same files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use postgres::IsolationLevel;
use postgres::types::Json;

use super::read::file_key;
use super::{PgStore, locked};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::progress::Progress;
use crate::sessions::SessionRecord;
use crate::settings::{BoardFile, Settings};
use crate::store::archive::{ArchiveLine, Totals};
use crate::store::damage::Damages;
use crate::store::json_file::{read_bytes, read_json, to_pretty};
use crate::store::local::LocalStore;
use crate::store::paths::{
    self, ARCHIVE, BOARD, LOG, PROGRESS, QUEUE, SESSIONS, TASKS_DIR, WORKERS,
};
use crate::store::{durable, jsonl, log, queue_file};
use crate::task::{Task, TaskStatus};
use crate::worker::Worker;

/// What a move carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Moved {
    /// Tasks on the queue.
    pub tasks: usize,
    /// Archived tasks.
    pub archived: usize,
    /// Workers.
    pub workers: usize,
    /// Log entries.
    pub messages: usize,
    /// Claude sessions' records.
    pub sessions: usize,
    /// Board files (instruction files).
    pub files: usize,
}

/// Imports one statement at a time: text bodies cast to `json`, kept as written.
const IMPORT_TASKS: &str = "INSERT INTO tasks (id, ord, status, archived, archived_at, version, body) \
     SELECT id, ord, status, archived, archived_at, 1, body::json \
     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bool[], $5::bigint[], $6::text[]) \
          AS x(id, ord, status, archived, archived_at, body)";
const IMPORT_WORKERS: &str = "INSERT INTO workers (id, version, body) \
     SELECT id, 1, body::json FROM unnest($1::text[], $2::text[]) AS x(id, body)";
const IMPORT_SESSIONS: &str = "INSERT INTO sessions (id, ord, version, body) \
     SELECT id, ord, 1, body::json FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(id, ord, body)";
const IMPORT_MESSAGES: &str = "INSERT INTO messages (seq, kind, task, body) \
     SELECT seq, kind, task, body::json FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) \
          AS x(seq, kind, task, body)";
const IMPORT_FILES: &str = "INSERT INTO files (path, version, content) \
     SELECT path, 1, content FROM unnest($1::text[], $2::bytea[]) AS x(path, content)";

impl PgStore {
    /// Writes the board out as a file board in `dir`, which must not hold one yet.
    pub fn export(&self, dir: &Path) -> Result<Moved> {
        if dir.join(BOARD).exists() || dir.join(QUEUE).exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a board; export into a new directory",
                dir.display()
            )));
        }
        let snapshot = self.snapshot()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let s = &snapshot;
        let board = BoardFile {
            settings: s.settings.clone(),
            ..BoardFile::default()
        };
        durable::replace(dir, BOARD, &to_pretty(&board)?, true)?;
        let queue = queue_file::encode(&s.tasks, &Default::default(), &Default::default())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        durable::replace(dir, QUEUE, &queue.bytes, true)?;
        durable::replace(dir, WORKERS, &to_pretty(&s.workers)?, true)?;
        durable::replace(dir, PROGRESS, &to_pretty(&s.progress)?, true)?;
        if !s.sessions.is_empty() {
            durable::replace(dir, SESSIONS, &to_pretty(&s.sessions)?, true)?;
        }
        let mut log_bytes = Vec::new();
        for line in &s.log {
            log_bytes.extend_from_slice(line.as_bytes());
            log_bytes.push(b'\n');
        }
        durable::replace(dir, LOG, &log_bytes, true)?;
        let mut archive = Vec::new();
        let mut totals = Totals::default();
        for (at, t) in &s.archived {
            match t.status {
                TaskStatus::Completed => totals.completed += 1,
                TaskStatus::Cancelled => totals.cancelled += 1,
                _ => {}
            }
            totals.max_id = totals.max_id.max(t.id);
            let line = ArchiveLine {
                archived_at: *at,
                totals,
                task: t.clone(),
            };
            serde_json::to_writer(&mut archive, &line)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            archive.push(b'\n');
        }
        if !archive.is_empty() {
            durable::replace(dir, ARCHIVE, &archive, true)?;
        }
        let mut places = Vec::with_capacity(s.files.len());
        for (rel, _) in &s.files {
            crate::validate::board_path("board file", rel)?;
            let p = dir.join(rel);
            let Some(parent) = p.parent() else {
                return Err(Error::Invalid(format!("bad board file path {rel:?}")));
            };
            std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
            // Created inside the new board only (no symlink there can lead out).
            paths::resolve(dir, rel)?;
            places.push(p);
        }
        // All written, then fsynced together, then renamed.
        let writes: Vec<(&Path, &[u8])> = places
            .iter()
            .zip(&s.files)
            .map(|(p, (_, content))| (p.as_path(), content.as_slice()))
            .collect();
        durable::replace_all(&writes)?;
        durable::sync_dir(dir)?;
        // The lock file and anything else a board has; the board clock goes on from the
        // database's last change (it never runs backwards).
        let local = LocalStore::init(dir, None)?;
        if let Some(last) = s.clock {
            let lock = local.lock()?;
            lock.record(std::cmp::max(lock.now(), last));
        }
        Ok(Moved {
            tasks: s.tasks.len(),
            archived: s.archived.len(),
            workers: s.workers.len(),
            messages: s.log.len(),
            sessions: s.sessions.len(),
            files: s.files.len(),
        })
    }

    /// The whole board in one snapshot.
    fn snapshot(&self) -> Result<Snapshot> {
        let target = &self.inner.target;
        let err = |e| target.error("reading the board from", e);
        let mut conn = self.reader()?;
        let got = (|| {
            let mut tx = conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(err)?;
            let b = tx
                .query_one(
                    "SELECT settings, progress, clock_ms FROM board WHERE id = 1",
                    &[],
                )
                .map_err(err)?;
            let settings: Json<Settings> = b.try_get(0).map_err(err)?;
            let progress: Json<Progress> = b.try_get(1).map_err(err)?;
            let clock_ms: Option<i64> = b.try_get(2).map_err(err)?;
            let mut s = Snapshot {
                settings: settings.0,
                progress: progress.0,
                clock: clock_ms.and_then(chrono::DateTime::from_timestamp_millis),
                ..Snapshot::default()
            };
            for r in tx
                .query(
                    "SELECT body FROM tasks WHERE NOT archived ORDER BY ord",
                    &[],
                )
                .map_err(err)?
            {
                s.tasks.push(r.try_get::<_, Json<Task>>(0).map_err(err)?.0);
            }
            for r in tx
                .query(
                    "SELECT archived_at, body FROM tasks WHERE archived ORDER BY version, ord",
                    &[],
                )
                .map_err(err)?
            {
                let at: Option<i64> = r.try_get(0).map_err(err)?;
                let at = at
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .unwrap_or_default();
                s.archived
                    .push((at, r.try_get::<_, Json<Task>>(1).map_err(err)?.0));
            }
            for r in tx.query("SELECT id, body FROM workers", &[]).map_err(err)? {
                let id: String = r.try_get(0).map_err(err)?;
                s.workers
                    .insert(id, r.try_get::<_, Json<Worker>>(1).map_err(err)?.0);
            }
            for r in tx
                .query("SELECT body FROM sessions ORDER BY ord", &[])
                .map_err(err)?
            {
                s.sessions
                    .push(r.try_get::<_, Json<SessionRecord>>(0).map_err(err)?.0);
            }
            for r in tx
                .query("SELECT body::text FROM messages ORDER BY seq", &[])
                .map_err(err)?
            {
                s.log.push(r.try_get(0).map_err(err)?);
            }
            for r in tx
                .query("SELECT path, content FROM files ORDER BY path", &[])
                .map_err(err)?
            {
                s.files
                    .push((r.try_get(0).map_err(err)?, r.try_get(1).map_err(err)?));
            }
            tx.commit().map_err(err)?;
            Ok(s)
        })();
        self.give_back(conn);
        got
    }

    /// Loads the file board in `dir` into this database, whose board must be empty.
    pub fn import(&self, dir: &Path) -> Result<Moved> {
        let local = LocalStore::open(dir)?;
        // Nobody changes the file board meanwhile.
        let lock = local.lock()?;
        // The journal's changes into the files, which are read from here on.
        local.checkpoint_held()?;
        let b = FileBoard::read(&local, dir)?;
        let target = &self.inner.target;
        let err = |e| target.error("importing into", e);
        let mut w = locked(&self.inner.writer);
        if w.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            w.conn = Some(super::sql::Conn::open(target)?);
        }
        let Some(conn) = w.conn.as_mut() else {
            return Err(Error::Protocol("no connection to the board".into()));
        };
        let mut tx = conn.client.transaction().map_err(err)?;
        let row = tx
            .query_one(
                "SELECT version, (SELECT count(*) FROM tasks) + (SELECT count(*) FROM workers) \
                   + (SELECT count(*) FROM messages) + (SELECT count(*) FROM sessions) \
                   + (SELECT count(*) FROM files) \
                 FROM board WHERE id = 1 FOR UPDATE",
                &[],
            )
            .map_err(err)?;
        let version: i64 = row.try_get(0).map_err(err)?;
        let rows: i64 = row.try_get(1).map_err(err)?;
        if version > 0 || rows > 0 {
            return Err(Error::Conflict(format!(
                "the database {} already holds a board (version {version}); import only into an empty one",
                target.location()
            )));
        }
        let big = |what: &str, n: u64| {
            i64::try_from(n)
                .map_err(|_| Error::Invalid(format!("{what} {n} is too large for the database")))
        };
        // Tasks: the queue in its order, then the archive in its order.
        let mut ids = Vec::new();
        let mut ords = Vec::new();
        let mut statuses = Vec::new();
        let mut archived = Vec::new();
        let mut ats: Vec<Option<i64>> = Vec::new();
        let mut bodies = Vec::new();
        for (i, t) in b.tasks.iter().enumerate() {
            ids.push(big("task id", t.id)?);
            ords.push(big("position", i as u64)?);
            statuses.push(t.status.as_str());
            archived.push(false);
            ats.push(None);
            bodies.push(serde_json::to_string(t).map_err(|e| Error::Protocol(e.to_string()))?);
        }
        for (i, l) in b.archived.iter().enumerate() {
            ids.push(big("task id", l.task.id)?);
            ords.push(big("position", i as u64)?);
            statuses.push(l.task.status.as_str());
            archived.push(true);
            ats.push(Some(l.archived_at.timestamp_millis()));
            bodies
                .push(serde_json::to_string(&l.task).map_err(|e| Error::Protocol(e.to_string()))?);
        }
        tx.execute(
            IMPORT_TASKS,
            &[&ids, &ords, &statuses, &archived, &ats, &bodies],
        )
        .map_err(err)?;
        let (w_ids, w_bodies): (Vec<&str>, Vec<String>) = b
            .workers
            .iter()
            .map(|(id, w)| Ok((id.as_str(), serde_json::to_string(w)?)))
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Error::Protocol(e.to_string()))?
            .into_iter()
            .unzip();
        tx.execute(IMPORT_WORKERS, &[&w_ids, &w_bodies])
            .map_err(err)?;
        let mut s_ids = Vec::new();
        let mut s_ords = Vec::new();
        let mut s_bodies = Vec::new();
        for (i, s) in b.sessions.iter().enumerate() {
            s_ids.push(s.id.as_str());
            s_ords.push(big("position", i as u64)?);
            s_bodies.push(serde_json::to_string(s).map_err(|e| Error::Protocol(e.to_string()))?);
        }
        tx.execute(IMPORT_SESSIONS, &[&s_ids, &s_ords, &s_bodies])
            .map_err(err)?;
        let mut seqs = Vec::new();
        let mut kinds = Vec::new();
        let mut tasks: Vec<Option<i64>> = Vec::new();
        let mut texts = Vec::new();
        for (seq, m, text) in &b.log {
            seqs.push(big("log entry", *seq)?);
            kinds.push(m.kind.as_str());
            tasks.push(m.task_id.and_then(|t| i64::try_from(t).ok()));
            texts.push(text.as_str());
        }
        tx.execute(IMPORT_MESSAGES, &[&seqs, &kinds, &tasks, &texts])
            .map_err(err)?;
        let (paths, contents): (Vec<&str>, Vec<&[u8]>) = b
            .files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .unzip();
        tx.execute(IMPORT_FILES, &[&paths, &contents])
            .map_err(err)?;
        let max_id = b
            .tasks
            .iter()
            .map(|t| t.id)
            .chain(b.archived.iter().map(|l| l.task.id))
            .max()
            .unwrap_or(0);
        let count = |s: TaskStatus| b.archived.iter().filter(|l| l.task.status == s).count() as i64;
        tx.execute(
            "UPDATE board SET version = 1, next_id = $1, next_seq = $2, settings = $3, progress = $4, \
               clock_ms = $5, archived_completed = $6, archived_cancelled = $7 WHERE id = 1",
            &[
                &big("task id", max_id.saturating_add(1))?,
                &big("log entry", b.next_seq)?,
                &Json(&b.settings),
                &Json(&b.progress),
                &lock.now().timestamp_millis(),
                &count(TaskStatus::Completed),
                &count(TaskStatus::Cancelled),
            ],
        )
        .map_err(err)?;
        tx.execute("SELECT pg_notify('vine_board', '1')", &[])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        // The writer's copy (if any) is of the empty board.
        w.mirror = None;
        drop(w);
        self.saw(1);
        Ok(Moved {
            tasks: b.tasks.len(),
            archived: b.archived.len(),
            workers: b.workers.len(),
            messages: b.log.len(),
            sessions: b.sessions.len(),
            files: b.files.len(),
        })
    }
}

/// A PostgreSQL board read whole.
#[derive(Default)]
struct Snapshot {
    settings: Settings,
    progress: Progress,
    tasks: Vec<Task>,
    archived: Vec<(crate::time::Timestamp, Task)>,
    workers: BTreeMap<String, Worker>,
    sessions: Vec<SessionRecord>,
    /// Each log entry's text as stored.
    log: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    /// The board clock's last time (its last change's).
    clock: Option<crate::time::Timestamp>,
}

/// A file board read whole, damage refused.
struct FileBoard {
    settings: Settings,
    progress: Progress,
    /// The queue, less tasks already at the archive's tail (a compaction cut off).
    tasks: Vec<Task>,
    /// The archive's lines, each id once (its last line), in archive order.
    archived: Vec<ArchiveLine>,
    workers: BTreeMap<String, Worker>,
    sessions: Vec<SessionRecord>,
    /// (sequence number, entry, its line's text): the entry's own number, or its line number
    /// for the original plan's unnumbered lines.
    log: Vec<(u64, Message, String)>,
    next_seq: u64,
    files: Vec<(String, Vec<u8>)>,
}

impl FileBoard {
    fn read(local: &LocalStore, dir: &Path) -> Result<FileBoard> {
        let dmg = &mut Damages::refuse();
        let settings = local.settings()?;
        let tasks = match read_bytes(&dir.join(QUEUE))? {
            Some(bytes) => {
                queue_file::decode(&bytes, &mut Default::default()).map_err(|e| Error::Damaged {
                    path: dir.join(QUEUE),
                    detail: crate::store::damage::detail(&bytes, e),
                })?
            }
            None => Vec::new(),
        };
        let workers: BTreeMap<String, Worker> = read_json(dir, WORKERS, dmg)?;
        let progress: Progress = read_json(dir, PROGRESS, dmg)?;
        let sessions: Vec<SessionRecord> = read_json(dir, SESSIONS, dmg)?;
        let lines: Vec<ArchiveLine> = jsonl::read_all(&dir.join(ARCHIVE), dmg)?;
        let mut last: HashMap<u64, usize> = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            last.insert(l.task.id, i);
        }
        let archived: Vec<ArchiveLine> = lines
            .into_iter()
            .enumerate()
            .filter(|(i, l)| last.get(&l.task.id) == Some(i))
            .map(|(_, l)| l)
            .collect();
        let in_archive: HashSet<u64> = archived.iter().map(|l| l.task.id).collect();
        let tasks: Vec<Task> = tasks
            .into_iter()
            .filter(|t| !in_archive.contains(&t.id))
            .collect();
        let mut log = Vec::new();
        let mut seen = HashSet::new();
        let mut bad = None;
        let mut line_no = 0u64;
        jsonl::scan(&dir.join(LOG), |_, body| {
            line_no += 1;
            match serde_json::from_slice::<Message>(body) {
                Ok(m) => {
                    let seq = m.seq.unwrap_or(line_no);
                    if !seen.insert(seq) {
                        bad = Some(format!("line {line_no}: entry {seq} appears twice"));
                        return false;
                    }
                    log.push((seq, m, String::from_utf8_lossy(body).into_owned()));
                    true
                }
                Err(e) => {
                    bad = Some(format!("line {line_no}: {e}"));
                    false
                }
            }
        })?;
        if let Some(detail) = bad {
            return Err(Error::Damaged {
                path: dir.join(LOG),
                detail,
            });
        }
        let next_seq = log::next_seq(&dir.join(LOG), dmg)?
            .max(log.iter().map(|(s, _, _)| s + 1).max().unwrap_or(1));
        let files = board_files(local, dir, &tasks, &archived)?;
        Ok(FileBoard {
            settings,
            progress,
            tasks,
            archived,
            workers,
            sessions,
            log,
            next_seq,
            files,
        })
    }
}

/// The board files to carry: every file under `tasks/`, and the instruction files tasks name
/// elsewhere on the board (those that exist), each confined to the board.
fn board_files(
    local: &LocalStore,
    dir: &Path,
    tasks: &[Task],
    archived: &[ArchiveLine],
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut wanted: Vec<String> = Vec::new();
    let mut stack = vec![dir.join(TASKS_DIR)];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("reading", &d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("reading", &d, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| Error::io("reading", entry.path(), e))?;
            let p = entry.path();
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file()
                && let Ok(rel) = p.strip_prefix(dir)
            {
                wanted.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    for t in tasks.iter().chain(archived.iter().map(|l| &l.task)) {
        if let Some(f) = &t.instruction_file {
            wanted.push(f.clone());
        }
    }
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for rel in wanted {
        if crate::validate::board_path("instruction file", &rel).is_err() {
            continue;
        }
        let key = file_key(&rel);
        if out.contains_key(&key) {
            continue;
        }
        // A path that is not there, or leads outside the board (a symlink), is not carried.
        match local.read_board_file_bytes(&key) {
            Ok(bytes) => {
                out.insert(key, bytes);
            }
            Err(Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) => {}
            Err(Error::Invalid(_) | Error::Forbidden(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out.into_iter().collect())
}
