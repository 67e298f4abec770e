//! A batch of changes (the server's group commit) on PostgreSQL, as `LocalStore::execute_batch`
//! does it on files: apply each op as if alone (a failed op leaves no change but the log
//! entries it must keep), write what changed, commit; replies go out only after the commit.
//!
//! A batch that needs nothing beyond the server's copy of the live board (no log, no archived
//! task, no instruction file to check) is decided on the copy as it is, and committed by one
//! statement that writes only if the board is still at the copy's version: one round trip,
//! which also brings back the claimed tasks' instruction files. When another server committed
//! first, nothing was written; the copy takes back the batch's own changes (the tasks it added
//! are dropped, the ones it touched loaded again) with what the other server changed, and the
//! batch is tried again ([`OPTIMISTIC_TRIES`] times in all). Any other batch, and one that keeps
//! losing, runs under the board row's lock: `BEGIN` with the lock (one simple query), a load
//! of what changed since the copy and of what the ops need, the write, and `COMMIT`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

use chrono::DateTime;
use postgres::SimpleQueryMessage;
use postgres::types::Json;

use super::conn::Target;
use super::mirror::{self, Mirror};
use super::sql::{Conn, LOCK, Shape};
use super::{PgStore, Writer, locked, read};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::op::{ClaimedTask, Op, Reply};
use crate::rules::{self, LogNeed, Needs, State};
use crate::settings::Settings;
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;
use crate::validate;

/// How many of the log's last entries a keyed send or ask searches for an earlier
/// application (as on files).
const RECENT_KEYED: i64 = 1000;

/// The board row as locked: the counters and the database's clock.
struct Locked {
    version: i64,
    next_id: i64,
    next_seq: i64,
    clock_ms: Option<i64>,
    db_ms: i64,
}

/// A batch's outcome before its instructions are added.
struct Outcome {
    replies: Vec<Result<Reply>>,
    /// The version committed, if anything was.
    committed: Option<i64>,
    /// The board files the claims' instruction files name (by key), as of the commit; `None`
    /// when nothing was committed.
    files: Option<Vec<(String, Vec<u8>)>>,
}

/// What [`write`] did.
enum Written {
    /// No row changed: nothing was sent.
    Nothing,
    /// The rows were written (and, without the lock, committed), with the board files asked
    /// for; whether worker rows were among them.
    Committed {
        files: Vec<(String, Vec<u8>)>,
        workers: bool,
    },
    /// Without the lock: the board was not at the copy's version, or the clocks disagree;
    /// nothing was written.
    Conflict,
}

impl PgStore {
    /// Carries out the changes in `ops` as one transaction; see the module's doc.
    pub(super) fn write_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        let n = ops.len();
        let _write = tracing::trace_span!("write", ops = n).entered();
        let target = &self.inner.target;
        let mut w = locked(&self.inner.writer);
        let Writer { conn, mirror } = &mut *w;
        // The latest version this server knows of (its own commits, other servers' notified).
        let known = i64::try_from(self.inner.changes.load(Ordering::Acquire)).unwrap_or(i64::MAX);
        // A connection that went stale while idle (the database restarted) fails at the first
        // statement; when that could not have committed anything (the lock, or a read) the
        // batch is tried once more on a new connection.
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                *conn = None;
                match Conn::open(target) {
                    Ok(c) => *conn = Some(c),
                    Err(e) => return fail_all(e, n),
                }
            }
            let Some(c) = conn.as_mut() else {
                return fail_all(Error::Protocol("no connection to the board".into()), n);
            };
            match batch(c, mirror, target, &ops, known) {
                Ok(o) => break o,
                Err(f) => {
                    // Nothing of the batch is committed (or its commit's outcome is unknown):
                    // the copy of the board may hold changes the database does not.
                    *mirror = None;
                    let e = f.error();
                    if c.client.is_closed() || matches!(e, Error::Unreachable(_)) {
                        *conn = None;
                    } else {
                        let _ = c.client.batch_execute("ROLLBACK");
                    }
                    match f {
                        Failure::Unsent(Error::Unreachable(_)) if tries == 1 => continue,
                        f => return fail_all(f.into_error(), n),
                    }
                }
            }
        };
        let mut replies = outcome.replies;
        if let Some(v) = outcome.committed {
            self.saw(v);
        }
        // Instruction files come with the commit (the write statement returns them); read
        // apart only when the batch committed nothing.
        let wanted = claimed_files(&replies);
        if !wanted.is_empty() {
            let files = match outcome.files {
                Some(found) => Ok(found),
                None => {
                    let _span = tracing::trace_span!("instructions").entered();
                    match conn.as_mut() {
                        Some(c) => read::board_files(c, target, &wanted),
                        None => Err(Error::Protocol("no connection to the board".into())),
                    }
                }
            };
            for r in replies.iter_mut() {
                if let Some(c) = r.as_mut().ok().and_then(Reply::claimed_task_mut) {
                    add_instructions(c, &files, target);
                }
            }
        }
        replies
    }

    /// Replaces the board's settings in a transaction of its own (a `/deploy` of
    /// `board.json`), under the board row's lock like any change.
    pub(super) fn write_settings(&self, settings: Settings) -> Result<()> {
        let target = &self.inner.target;
        let mut w = locked(&self.inner.writer);
        let Writer { conn, mirror } = &mut *w;
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            *conn = Some(Conn::open(target)?);
        }
        let Some(c) = conn.as_mut() else {
            return Err(Error::Protocol("no connection to the board".into()));
        };
        let err = |e| target.error("writing the settings to", e);
        let done = (|| {
            let mut tx = c.client.transaction().map_err(err)?;
            let row = tx
                .query_one(
                    "UPDATE board SET settings = $1, version = version + 1 WHERE id = 1 \
                     RETURNING version, pg_notify('vine_board', version::text)::text",
                    &[&Json(&settings)],
                )
                .map_err(err)?;
            let v: i64 = row.try_get(0).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(v)
        })();
        match done {
            Ok(v) => {
                self.saw(v);
                Ok(())
            }
            Err(e) => {
                *mirror = None;
                if c.client.is_closed() || matches!(e, Error::Unreachable(_)) {
                    *conn = None;
                }
                Err(e)
            }
        }
    }
}

/// The instruction files of the tasks claimed in `replies`.
fn claimed_files(replies: &[Result<Reply>]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter_map(Reply::claimed_task)
        .filter_map(|c| c.task.instruction_file.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Gives a claim the text of its instruction file, or why it could not be read.
fn add_instructions(c: &mut ClaimedTask, files: &Result<Vec<(String, Vec<u8>)>>, target: &Target) {
    let Some(f) = c.task.instruction_file.clone() else {
        return;
    };
    let key = read::file_key(&f);
    match files {
        Ok(found) => match found.iter().find(|(p, _)| *p == key) {
            Some((_, bytes)) => match String::from_utf8(bytes.clone()) {
                Ok(text) => c.instructions = Some(text),
                Err(_) => c.instructions_error = Some(format!("{f} is not UTF-8 text")),
            },
            None => {
                c.instructions_error = Some(format!(
                    "reading {} file {f}: {}",
                    target.location(),
                    std::io::Error::from(std::io::ErrorKind::NotFound)
                ))
            }
        },
        Err(e) => c.instructions_error = Some(e.to_string()),
    }
}

/// The same error for every op of a batch that could not run.
fn fail_all(e: Error, n: usize) -> Vec<Result<Reply>> {
    let msg = e.to_string();
    let again = |e: &Error| match e {
        Error::Unreachable(_) => Error::Unreachable(msg.clone()),
        _ => Error::io("committing", "", std::io::Error::other(msg.clone())),
    };
    let mut v: Vec<Result<Reply>> = (1..n).map(|_| Err(again(&e))).collect();
    v.insert(0, Err(e));
    v
}

/// Why a batch failed: before anything sent could commit (at the lock, or reading), or later.
enum Failure {
    Unsent(Error),
    Later(Error),
}

impl Failure {
    fn error(&self) -> &Error {
        match self {
            Failure::Unsent(e) | Failure::Later(e) => e,
        }
    }

    fn into_error(self) -> Error {
        match self {
            Failure::Unsent(e) | Failure::Later(e) => e,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Later(e)
    }
}

/// How many times a batch is tried on the server's copy of the board before it takes the
/// board row's lock (each try that finds another server's commit first loads what it changed).
const OPTIMISTIC_TRIES: usize = 3;

/// How a batch's commit is kept from overwriting another server's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Under the board row's lock, taken first (`LOCK`): the copy is the database, and the
    /// write, then `COMMIT`, cannot conflict.
    Locked,
    /// On the server's copy as it is, with no lock: one statement writes and commits, but
    /// only if the board is still at the copy's version and the database's clock agrees with
    /// the time the batch was stamped with; otherwise it writes nothing.
    Optimistic,
}

/// A batch tried once.
enum Step {
    /// Carried out (committed, or nothing to commit); whether the copy is still the board's.
    Done { outcome: Outcome, copy_kept: bool },
    /// Another server committed first, or the clocks disagree: nothing was written. The
    /// copy holds the batch's uncommitted changes to the tasks `retake` names (to be loaded
    /// again as they are), or, when `None`, cannot be put back.
    Conflict { retake: Option<Vec<i64>> },
}

/// Carries out a batch: first on the server's copy without a lock, when the ops need nothing
/// beyond it (one round trip, the commit, for a claim or a completion); else, or when other
/// servers keep committing first, under the board row's lock. An error leaves a transaction
/// to be rolled back by the caller.
fn batch(
    c: &mut Conn,
    slot: &mut Option<Mirror>,
    target: &Target,
    ops: &[(Op, Option<String>)],
    known: i64,
) -> std::result::Result<Outcome, Failure> {
    let need = batch_needs(ops);
    if copy_suffices(ops, &need) {
        for _ in 0..OPTIMISTIC_TRIES {
            let Some(mut m) = slot.take() else { break };
            // A change this server was told of (another server's, notified) is loaded first:
            // a claim is never decided on a copy known to be old.
            if m.version() < known {
                refresh(c, &mut m, target, &[])?;
            }
            if !need
                .task_ids
                .iter()
                .all(|id| m.tasks.iter().any(|t| t.id == *id))
            {
                // An archived task is named: the locked path loads it.
                *slot = Some(m);
                break;
            }
            let at = Locked::from_copy(&m);
            match step(c, &mut m, target, ops, &need, &at, Mode::Optimistic)? {
                Step::Done { outcome, copy_kept } => {
                    if copy_kept {
                        *slot = Some(m);
                    }
                    return Ok(outcome);
                }
                Step::Conflict { retake } => {
                    let before = m.version();
                    let Some(retake) = retake else {
                        // The copy cannot be put back: the locked path loads the board.
                        break;
                    };
                    refresh(c, &mut m, target, &retake)?;
                    let moved = m.version() != before;
                    *slot = Some(m);
                    if !moved {
                        // Nothing changed: the clocks disagree, and the lock uses the database's.
                        break;
                    }
                }
            }
        }
    }
    let lock = tracing::trace_span!("lock")
        .in_scope(|| lock(c, target))
        .map_err(Failure::Unsent)?;
    // The copy of the board, brought to the locked version (nothing to load when this server
    // made the last change).
    let mut m = match slot.take() {
        Some(m) if m.version() == lock.version => m,
        Some(mut m) if m.version() < lock.version => {
            let d = tracing::trace_span!("load changed")
                .in_scope(|| mirror::load(c, target, Some(m.version())))?;
            m.apply(d);
            m
        }
        _ => Mirror::full(
            tracing::trace_span!("load all").in_scope(|| mirror::load(c, target, None))?,
        ),
    };
    if m.version() != lock.version {
        return Err(Failure::Later(Error::Protocol(format!(
            "the board's database {} changed under its lock (version {} after {})",
            target.location(),
            m.version(),
            lock.version
        ))));
    }
    match step(c, &mut m, target, ops, &need, &lock, Mode::Locked)? {
        Step::Done { outcome, copy_kept } => {
            if copy_kept {
                *slot = Some(m);
            }
            Ok(outcome)
        }
        Step::Conflict { .. } => Err(Failure::Later(Error::Protocol(format!(
            "the board's database {} refused a write under its lock",
            target.location()
        )))),
    }
}

/// Whether a batch can be decided on the server's copy alone: no op reads the log, names an
/// instruction file, compacts or repairs (archived tasks it names are checked on the copy).
fn copy_suffices(ops: &[(Op, Option<String>)], need: &Needs) -> bool {
    need.log == LogNeed::None
        && need.instruction_files.is_empty()
        && !ops
            .iter()
            .any(|(op, _)| matches!(op, Op::Compact(_) | Op::Repair(_)))
}

/// Brings the copy up to the board's version with what changed, and takes the tasks among
/// `retake` again as they are (a read on its own; nothing is sent that could commit).
fn refresh(
    c: &mut Conn,
    m: &mut Mirror,
    target: &Target,
    retake: &[i64],
) -> std::result::Result<(), Failure> {
    let d = tracing::trace_span!("load changed")
        .in_scope(|| mirror::load_with(c, target, Some(m.version()), retake))
        .map_err(Failure::Unsent)?;
    m.apply(d);
    Ok(())
}

impl Locked {
    /// The counters as the copy holds them, for a batch tried without the lock: the
    /// database's clock is taken to be this server's (the conditional write checks it).
    fn from_copy(m: &Mirror) -> Locked {
        Locked {
            version: m.version(),
            next_id: m.board.next_id,
            next_seq: m.board.next_seq,
            clock_ms: m.board.clock_ms,
            db_ms: crate::time::now().timestamp_millis(),
        }
    }
}

/// Applies the batch to the copy `m` at the counters `lock`, writes what changed and commits
/// (see [`Mode`]); on success the copy is what was committed.
fn step(
    c: &mut Conn,
    m: &mut Mirror,
    target: &Target,
    ops: &[(Op, Option<String>)],
    need: &Needs,
    lock: &Locked,
    mode: Mode,
) -> std::result::Result<Step, Failure> {
    let n = ops.len();
    let err = |action: &'static str| move |e| target.error(action, e);
    // The rules change the queue in place: only the tasks they touch, new ones added at the
    // end. A batch tried without the lock that finds a conflict puts the copy back from that.
    let queued = m.tasks.len();
    let mut st = State {
        tasks: std::mem::take(&mut m.tasks),
        workers: m.workers.clone(),
        progress: m.board.progress.clone(),
        sessions: if need.sessions {
            m.sessions.clone()
        } else {
            Vec::new()
        },
        settings: m.board.settings.clone(),
        next_seq: u64::try_from(lock.next_seq).unwrap_or(1),
        derived: std::mem::take(&mut m.derived),
        ..State::default()
    };
    prepare(&mut st, lock);
    let present = match mode {
        Mode::Locked => tracing::trace_span!("load").in_scope(|| load(c, target, &mut st, need))?,
        Mode::Optimistic => HashSet::new(),
    };
    let now = now(lock);
    let mut replies = Vec::with_capacity(n);
    let mut applied = 0;
    let mut archived: Vec<Task> = Vec::new();
    for (op, key) in ops.iter().cloned() {
        match op {
            Op::Compact(_) => {
                let (take, kept) = rules::archivable(&st.tasks);
                let moved = move_to_archive(&mut st, &take, &mut archived);
                replies.push(Ok(Reply::Compacted {
                    archived: moved,
                    kept,
                }));
                continue;
            }
            Op::Repair(_) => {
                replies.push(Err(Error::Invalid(format!(
                    "the board is kept in PostgreSQL ({}), which has no board files to repair: \
                     `vine repair` is for a board kept in files",
                    target.location()
                ))));
                continue;
            }
            _ => {}
        }
        if let Err(e) = precheck(&op.needs(), &present) {
            replies.push(Err(e));
            continue;
        }
        // Alone, a failed op is simply not committed; in a batch, undo it before the next.
        let reply = rules::apply_in_batch(&mut st, op, key.as_deref(), now, n > 1);
        applied += usize::from(reply.is_ok());
        replies.push(reply);
    }
    let changed = applied > 0 || !archived.is_empty();
    // Finished tasks beyond the board's `archive_after` move to the archive in the same commit.
    if changed && st.dirty.tasks {
        let (take, _kept) = rules::archivable(&st.tasks);
        if take.len() > st.settings.archive_after {
            move_to_archive(&mut st, &take, &mut archived);
        }
    }
    // The instruction files the batch's claims read: from the batch itself when it writes
    // them (its last content of a path), else from the database with the commit.
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    let mut wanted: Vec<String> = Vec::new();
    for key in claimed_files(&replies).iter().map(|f| read::file_key(f)) {
        match st
            .files
            .iter()
            .rev()
            .find(|(rel, _)| read::file_key(rel) == key)
        {
            Some((_, text)) => written.push((key, text.as_bytes().to_vec())),
            None => wanted.push(key),
        }
    }
    let kept = st.touched.is_empty() && !st.dirty.tasks;
    if !changed && st.outbox.is_empty() {
        if mode == Mode::Locked {
            tracing::trace_span!("commit")
                .in_scope(|| c.client.batch_execute("ROLLBACK"))
                .map_err(err("ending a transaction on"))?;
        }
        // A failed op alone may have changed the tasks in memory: then they are loaded again.
        if kept {
            m.tasks = st.tasks;
            m.derived = st.derived;
        }
        return Ok(Step::Done {
            outcome: Outcome {
                replies,
                committed: None,
                files: None,
            },
            copy_kept: kept,
        });
    }
    // A batch that changed no row (a worker told to keep waiting, a heartbeat that moves
    // no lease) commits nothing: the version stays, so nobody is woken for nothing.
    let version = lock.version + 1;
    let wrote = tracing::trace_span!("commit").in_scope(|| {
        let w = write(
            c, target, m, &mut st, &archived, changed, version, now, lock, mode, &wanted,
        )?;
        if mode == Mode::Locked {
            let end = if matches!(w, Written::Committed { .. }) {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            c.client.batch_execute(end).map_err(err("committing to"))?;
        }
        Ok::<_, Failure>(w)
    })?;
    let mut wrote_workers = false;
    let files = match wrote {
        Written::Conflict => {
            // Put the copy back: drop the added tasks, take the touched ones again. Tasks
            // moved to the archive left the queue, so their places are lost.
            let retake = archived.is_empty().then(|| {
                st.tasks.truncate(queued);
                m.tasks = std::mem::take(&mut st.tasks);
                st.touched
                    .iter()
                    .filter_map(|id| i64::try_from(*id).ok())
                    .collect()
            });
            return Ok(Step::Conflict { retake });
        }
        Written::Nothing => None,
        Written::Committed {
            files: mut found,
            workers,
        } => {
            found.extend(written);
            wrote_workers = workers;
            Some(found)
        }
    };
    let wrote = files.is_some();
    // The copy is now what was committed.
    if wrote {
        m.board.version = version;
        m.board.next_seq = lock.next_seq + i64::try_from(st.outbox.len()).unwrap_or(0);
    }
    let copy_kept = if changed {
        if wrote {
            m.board.next_id = m.board.next_id.max(next_id(&st, &archived));
            m.board.clock_ms = Some(now.timestamp_millis());
        }
        for t in &archived {
            match t.status {
                TaskStatus::Completed => m.board.archived_completed += 1,
                TaskStatus::Cancelled => m.board.archived_cancelled += 1,
                _ => {}
            }
        }
        if st.dirty.progress {
            m.board.progress = st.progress.clone();
        }
        if st.dirty.sessions && need.sessions {
            m.sessions = std::mem::take(&mut st.sessions);
        }
        // Workers not written stay in the copy as stored (their queue facts are merged
        // again from the queue at every use).
        if wrote_workers {
            m.workers = std::mem::take(&mut st.workers);
            m.workers_written = Some(std::time::Instant::now());
        }
        m.tasks = std::mem::take(&mut st.tasks);
        m.derived = std::mem::take(&mut st.derived);
        true
    } else if kept {
        m.tasks = std::mem::take(&mut st.tasks);
        m.derived = std::mem::take(&mut st.derived);
        true
    } else {
        false
    };
    Ok(Step::Done {
        outcome: Outcome {
            replies,
            committed: wrote.then_some(version),
            files,
        },
        copy_kept,
    })
}

/// `BEGIN` and the board row's lock, in one round trip.
fn lock(c: &mut Conn, target: &Target) -> Result<Locked> {
    let msgs = c
        .client
        .simple_query(LOCK)
        .map_err(|e| target.error("locking the board in", e))?;
    let row = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let Some(row) = row else {
        return Err(Error::Protocol(format!(
            "the board's database {} has no board row",
            target.location()
        )));
    };
    let num = |i: usize| -> Result<Option<i64>> {
        match row.try_get(i) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => s.parse().map(Some).map_err(|_| {
                Error::Protocol(format!("the board row holds {s:?} where a number belongs"))
            }),
            Err(e) => Err(target.error("locking the board in", e)),
        }
    };
    let need = |i: usize| -> Result<i64> {
        num(i)?.ok_or_else(|| Error::Protocol("the board row lacks a counter".into()))
    };
    Ok(Locked {
        version: need(0)?,
        next_id: need(1)?,
        next_seq: need(2)?,
        clock_ms: num(3)?,
        db_ms: need(4)?,
    })
}

/// The board clock: this server's time while it agrees with the database's, else the
/// database's; never before the last change's.
fn now(lock: &Locked) -> Timestamp {
    let own = crate::time::now();
    let Some(db) = DateTime::from_timestamp_millis(lock.db_ms) else {
        return own;
    };
    let last = lock.clock_ms.and_then(DateTime::from_timestamp_millis);
    crate::store::clock::change_time(own, db, "the board's database", last)
}

/// What the ops of a batch need beyond the live board, as `LocalStore::load_change` unites it.
fn batch_needs(ops: &[(Op, Option<String>)]) -> Needs {
    let mut need = Needs::default();
    let mut recent = false;
    for (op, key) in ops {
        let n = op.needs();
        need.progress |= n.progress;
        need.sessions |= n.sessions;
        need.next_id |= n.next_id;
        need.next_seq |= n.next_seq;
        match n.log {
            LogNeed::All => need.log = LogNeed::All,
            LogNeed::RecentWhenKeyed => recent |= key.is_some(),
            LogNeed::None | LogNeed::Matching(_) | LogNeed::Questions => {}
        }
        need.task_ids.extend(n.task_ids);
        need.instruction_files.extend(n.instruction_files);
    }
    if need.log == LogNeed::None && recent {
        need.log = LogNeed::RecentWhenKeyed;
    }
    need
}

/// Readies the state for the rules: the queue's facts merged into the workers, and the
/// lowest id a new task may take.
fn prepare(st: &mut State, lock: &Locked) {
    rules::merge_queue_facts(st);
    let max_queue = st.tasks.iter().map(|t| t.id).max().unwrap_or(0);
    st.min_next_id = max_queue
        .saturating_add(1)
        .max(u64::try_from(lock.next_id).unwrap_or(1));
}

/// Loads what the batch needs beyond the live board (the log, archived tasks it names) and
/// gives the instruction files among those it names that are on the board.
fn load(c: &mut Conn, target: &Target, st: &mut State, need: &Needs) -> Result<HashSet<String>> {
    let err = |e| target.error("reading the board from", e);
    match need.log {
        LogNeed::All => st.log = read::messages(c.client.query(&c.st.log_all, &[]).map_err(err)?)?,
        LogNeed::RecentWhenKeyed => {
            st.log = read::messages(
                c.client
                    .query(&c.st.log_recent, &[&RECENT_KEYED])
                    .map_err(err)?,
            )?
        }
        _ => {}
    }
    read::load_archived(c, target, st, &need.task_ids)?;
    let mut present = HashSet::new();
    if !need.instruction_files.is_empty() {
        let wanted: Vec<String> = need
            .instruction_files
            .iter()
            .filter(|f| validate::board_path("instruction file", f).is_ok())
            .cloned()
            .collect();
        for (path, _) in read::board_files(c, target, &wanted)? {
            present.insert(path);
        }
    }
    Ok(present)
}

/// Checks what the rules cannot: that a named instruction file is on the board, and that
/// instruction and context files are board paths.
fn precheck(needs: &Needs, present: &HashSet<String>) -> Result<()> {
    for f in &needs.instruction_files {
        validate::board_path("instruction file", f)?;
        if !present.contains(&read::file_key(f)) {
            return Err(Error::Invalid(format!(
                "instruction file {f:?} is not on the board; write it first, or pass the text with --instructions-from"
            )));
        }
    }
    for f in &needs.context_files {
        validate::board_path("context file", f)?;
    }
    Ok(())
}

/// Moves the tasks at `take` from the queue to `archived` (written with `archived = true`).
fn move_to_archive(st: &mut State, take: &[usize], archived: &mut Vec<Task>) -> usize {
    if take.is_empty() {
        return 0;
    }
    let set: HashSet<usize> = take.iter().copied().collect();
    let mut kept = Vec::with_capacity(st.tasks.len().saturating_sub(take.len()));
    for (i, t) in std::mem::take(&mut st.tasks).into_iter().enumerate() {
        if set.contains(&i) {
            archived.push(t);
        } else {
            kept.push(t);
        }
    }
    st.tasks = kept;
    st.dirty.tasks = true;
    // The archived claims and completions leave the queue: the worker entries keep the
    // merged facts, so they are written now (not left for a second, as facts the queue
    // still records are).
    st.dirty.workers = true;
    take.len()
}

/// Above every id the batch wrote.
fn next_id(st: &State, archived: &[Task]) -> i64 {
    let max = st
        .touched
        .iter()
        .copied()
        .chain(archived.iter().map(|t| t.id))
        .max()
        .unwrap_or(0);
    i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX)
}

/// Writes what the batch changed at `version`: touched and archived tasks, workers and
/// sessions that differ from the copy, progress, instruction files, the outbox (numbered
/// from the board's next sequence number), and the board row; notifies; and reads the board
/// files `wanted` (keys). Without the lock ([`Mode::Optimistic`]) the one statement is the
/// commit, and writes only if the board is still at `version - 1`.
#[allow(clippy::too_many_arguments)]
fn write(
    c: &mut Conn,
    target: &Target,
    m: &Mirror,
    st: &mut State,
    archived: &[Task],
    changed: bool,
    version: i64,
    now: Timestamp,
    lock: &Locked,
    mode: Mode,
    wanted: &[String],
) -> std::result::Result<Written, Failure> {
    let bad_id = |id: u64| Error::Invalid(format!("task id {id} is too large for the database"));
    let now_ms = now.timestamp_millis();
    let mut t_id: Vec<i64> = Vec::new();
    let mut t_status: Vec<&str> = Vec::new();
    let mut t_archived: Vec<bool> = Vec::new();
    let mut t_at: Vec<Option<i64>> = Vec::new();
    let mut t_body: Vec<Json<&Task>> = Vec::new();
    let mut w_id: Vec<&str> = Vec::new();
    let mut w_body = Vec::new();
    let mut s_id: Vec<&str> = Vec::new();
    let mut s_ord: Vec<i64> = Vec::new();
    let mut s_body = Vec::new();
    let mut f_path: Vec<String> = Vec::new();
    let mut f_content: Vec<&[u8]> = Vec::new();
    let mut progress = None;
    let (mut done, mut cancelled) = (0i64, 0i64);
    // Numbered from the board's end, as the log file numbers its appends.
    let first = u64::try_from(lock.next_seq).unwrap_or(1);
    for (seq, msg) in (first..).zip(st.outbox.iter_mut()) {
        msg.seq = Some(seq);
    }
    if changed {
        let at: HashMap<u64, usize> = if st.touched.len() > 8 {
            st.tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id, i))
                .collect()
        } else {
            HashMap::new()
        };
        for id in &st.touched {
            let pos = if at.is_empty() {
                st.position(*id)
            } else {
                at.get(id).copied()
            };
            // A touched task that moved to the archive is written there.
            if let Some(t) = pos.map(|i| &st.tasks[i]) {
                t_id.push(i64::try_from(t.id).map_err(|_| bad_id(t.id))?);
                t_status.push(t.status.as_str());
                t_archived.push(false);
                t_at.push(None);
                t_body.push(Json(t));
            }
        }
        for t in archived {
            t_id.push(i64::try_from(t.id).map_err(|_| bad_id(t.id))?);
            t_status.push(t.status.as_str());
            t_archived.push(true);
            t_at.push(Some(now_ms));
            t_body.push(Json(t));
            match t.status {
                TaskStatus::Completed => done += 1,
                TaskStatus::Cancelled => cancelled += 1,
                _ => {}
            }
        }
        // As on files: workers that changed only in what the queue records wait for a change
        // of their own, or for a second since the last worker write.
        let soft_only = !st.dirty.workers
            && m.workers_written
                .is_some_and(|t| t.elapsed() < crate::store::SOFT_WRITE_EVERY);
        for (id, w) in st.workers.iter().filter(|_| !soft_only) {
            if m.workers.get(id) != Some(w) {
                w_id.push(id);
                w_body.push(Json(w));
            }
        }
        if st.dirty.sessions {
            for (i, s) in st.sessions.iter().enumerate() {
                if m.sessions.iter().find(|x| x.id == s.id) != Some(s) {
                    s_id.push(&s.id);
                    s_ord.push(i64::try_from(i).unwrap_or(i64::MAX));
                    s_body.push(Json(s));
                }
            }
        }
        if st.dirty.progress {
            progress = Some(Json(&st.progress));
        }
        // The last content of a path wins.
        let mut files: BTreeMap<String, &[u8]> = BTreeMap::new();
        for (rel, text) in &st.files {
            validate::board_path("instruction file", rel)?;
            files.insert(read::file_key(rel), text.as_bytes());
        }
        for (p, content) in files {
            f_path.push(p);
            f_content.push(content);
        }
    }
    let mut m_seq: Vec<i64> = Vec::new();
    let mut m_kind: Vec<&str> = Vec::new();
    let mut m_task: Vec<Option<i64>> = Vec::new();
    let mut m_body: Vec<Json<&Message>> = Vec::new();
    for msg in &st.outbox {
        m_seq.push(msg.seq.and_then(|s| i64::try_from(s).ok()).unwrap_or(0));
        m_kind.push(msg.kind.as_str());
        m_task.push(msg.task_id.and_then(|t| i64::try_from(t).ok()));
        m_body.push(Json(msg));
    }
    if t_id.is_empty()
        && w_id.is_empty()
        && s_id.is_empty()
        && f_path.is_empty()
        && m_seq.is_empty()
        && progress.is_none()
    {
        return Ok(Written::Nothing);
    }
    let next_seq = lock.next_seq + i64::try_from(st.outbox.len()).unwrap_or(0);
    let next_id = if changed { next_id(st, archived) } else { 0 };
    let clock = changed.then_some(now_ms);
    let conditional = mode == Mode::Optimistic;
    let shape = Shape {
        tasks: !t_id.is_empty(),
        workers: !w_id.is_empty(),
        sessions: !s_id.is_empty(),
        messages: !m_seq.is_empty(),
        files: !f_path.is_empty(),
        reads: !wanted.is_empty(),
    };
    let statement = c
        .write_statement(shape)
        .map_err(|e| Failure::Unsent(target.error("preparing a statement on", e)))?;
    let rows = c
        .client
        .query(
            &statement,
            &[
                &version,
                &t_id,
                &t_status,
                &t_archived,
                &t_at,
                &t_body,
                &w_id,
                &w_body,
                &s_id,
                &s_ord,
                &s_body,
                &m_seq,
                &m_kind,
                &m_task,
                &m_body,
                &f_path,
                &f_content,
                &next_id,
                &next_seq,
                &clock,
                &progress,
                &done,
                &cancelled,
                &conditional,
                &now_ms,
                &wanted,
                &crate::store::clock::TOLERANCE_MS,
            ],
        )
        .map_err(|e| {
            // An error the database answered with (not a lost connection) ends the statement's
            // own transaction uncommitted.
            let answered = conditional && e.as_db_error().is_some();
            let e = target.error("writing to", e);
            if answered {
                Failure::Unsent(e)
            } else {
                Failure::Later(e)
            }
        })?;
    let err = |e| target.error("writing to", e);
    let changed_rows: i64 = match rows.first() {
        Some(r) => r.try_get(0).map_err(err)?,
        None => 0,
    };
    match changed_rows {
        1 => {}
        0 if conditional => return Ok(Written::Conflict),
        _ => {
            return Err(Failure::Later(Error::Protocol(format!(
                "the board's database {} has no board row",
                target.location()
            ))));
        }
    }
    let mut found = Vec::new();
    for r in &rows {
        let path: Option<String> = r.try_get(1).map_err(err)?;
        let content: Option<Vec<u8>> = r.try_get(2).map_err(err)?;
        if let (Some(p), Some(c)) = (path, content) {
            found.push((p, c));
        }
    }
    Ok(Written::Committed {
        files: found,
        workers: shape.workers,
    })
}
