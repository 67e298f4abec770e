//! Reads on PostgreSQL: no lock. The reads' copy of the live board is brought up to the
//! database's version (one statement that loads only what changed), then what else the read
//! needs (the log, the archive, the history) is loaded, each part no older than the copy, and
//! the read's pure `answer` answers, as on files. Also the helpers the writer shares: log
//! entries, archived tasks by id, board files.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::DateTime;
use postgres::Row;
use postgres::types::Json;

use super::conn::Target;
use super::mirror::{self, Mirror};
use super::sql::Conn;
use super::{PgStore, locked};
use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};
use crate::metrics::{History, TaskTimes};
use crate::op::{Op, Reply};
use crate::rules::{self, LogNeed, Needs, State};
use crate::task::{Task, TaskStatus};

/// The history the figures read, and how far it has been brought: the last board version
/// whose archived tasks it holds, the last log entry it has looked at.
#[derive(Debug, Default)]
pub(crate) struct HistoryCache {
    archive_version: i64,
    log_seq: i64,
    history: Arc<History>,
}

impl PgStore {
    /// Answers a read with the pure rules, from what it needs loaded.
    /// A kept connection that went stale (the database restarted) is replaced and the read
    /// tried once more.
    pub(super) fn read(&self, op: Op) -> Result<Reply> {
        let need = op.needs();
        let mut tries = 0;
        let loaded = loop {
            tries += 1;
            let mut conn = self.reader()?;
            let loaded = self.load_read(&mut conn, &need);
            // A broken connection is dropped, not kept.
            self.give_back(conn);
            match loaded {
                Err(Error::Unreachable(_)) if tries == 1 => continue,
                loaded => break loaded,
            }
        };
        loaded.and_then(|mut st| rules::read(&mut st, op, crate::time::now()))
    }

    /// Loads what a read needs: the live board from the reads' copy (brought up to date
    /// first), the rest from the database.
    fn load_read(&self, c: &mut Conn, need: &Needs) -> Result<State> {
        let target = &self.inner.target;
        let mut st = State::default();
        let live =
            need.queue || need.progress || need.settings || need.sessions || need.archive_counts;
        if live {
            let since = locked(&self.inner.read_mirror)
                .as_ref()
                .map(Mirror::version);
            let delta = mirror::load(c, target, since)?;
            self.saw(delta.version());
            let mut slot = locked(&self.inner.read_mirror);
            let m = match slot.take() {
                // Another read brought it further meanwhile: it is newer, and as whole.
                Some(m) if m.version() >= delta.version() => slot.insert(m),
                Some(mut m) if since.is_some() => {
                    m.apply(delta);
                    slot.insert(m)
                }
                _ => slot.insert(Mirror::full(delta)),
            };
            if need.queue {
                st.tasks = m.tasks.clone();
                st.workers = m.workers.clone();
            }
            if need.progress {
                st.progress = m.board.progress.clone();
            }
            if need.settings {
                st.settings = m.board.settings.clone();
            }
            if need.sessions {
                st.sessions = m.sessions.clone();
            }
            if need.archive_counts {
                let count = |n: i64| usize::try_from(n).unwrap_or(0);
                for (status, n) in [
                    (TaskStatus::Completed, m.board.archived_completed),
                    (TaskStatus::Cancelled, m.board.archived_cancelled),
                ] {
                    if n > 0 {
                        st.archived_counts.insert(status, count(n));
                    }
                }
            }
        }
        if need.queue {
            rules::merge_queue_facts(&mut st);
        }
        let err = |e| target.error("reading the board from", e);
        match &need.log {
            LogNeed::None => {}
            LogNeed::RecentWhenKeyed => {
                st.log = messages(c.client.query(&c.st.log_recent, &[&1000i64]).map_err(err)?)?
            }
            LogNeed::All => st.log = messages(c.client.query(&c.st.log_all, &[]).map_err(err)?)?,
            LogNeed::Questions => {
                st.log = messages(c.client.query(&c.st.log_questions, &[]).map_err(err)?)?
            }
            LogNeed::Matching(f) => {
                // The conditions the database can check; the read filters again.
                let exact = f.since.is_none() && f.agent.is_none() && f.reply_to.is_none();
                let task = f.task.and_then(|t| i64::try_from(t).ok());
                let kind = f.kind.map(MessageKind::as_str);
                let after = f.after_seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
                let limit = f
                    .limit
                    .filter(|_| exact)
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
                st.log = messages(
                    c.client
                        .query(&c.st.log_matching, &[&task, &kind, &after, &limit])
                        .map_err(err)?,
                )?;
            }
        }
        if need.archive_all {
            let rows = c.client.query(&c.st.archive_all, &[]).map_err(err)?;
            for row in rows {
                let t = task(&row, 0, target)?;
                st.archived_tasks.insert(t.id, t);
            }
        }
        if need.history {
            st.history = self.history(c)?;
        }
        load_archived(c, target, &mut st, &need.task_ids)?;
        Ok(st)
    }

    /// The history for the figures, with what was archived and asked since the last look.
    fn history(&self, c: &mut Conn) -> Result<Arc<History>> {
        let target = &self.inner.target;
        let err = |e| target.error("reading the board's history from", e);
        let mut cache = locked(&self.inner.history);
        let archived = c
            .client
            .query(&c.st.archived_after, &[&cache.archive_version])
            .map_err(err)?;
        let asked = c
            .client
            .query(&c.st.log_questions_after, &[&cache.log_seq])
            .map_err(err)?;
        if archived.is_empty() && asked.is_empty() {
            return Ok(Arc::clone(&cache.history));
        }
        let mut archive_version = cache.archive_version;
        let mut log_seq = cache.log_seq;
        let h = Arc::make_mut(&mut cache.history);
        for row in &archived {
            let version: i64 = row.try_get(0).map_err(err)?;
            let at: Option<i64> = row.try_get(1).map_err(err)?;
            let times: TaskTimes = row
                .try_get::<_, Json<TaskTimes>>(2)
                .map(|j| j.0)
                .map_err(|e| unparsable(target, "an archived task", e))?;
            let at = at
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default();
            h.add_archived(times, at);
            archive_version = archive_version.max(version);
        }
        for row in &asked {
            let seq: i64 = row.try_get(0).map_err(err)?;
            let m: Message = row
                .try_get::<_, Json<Message>>(1)
                .map(|j| j.0)
                .map_err(|e| unparsable(target, "a log entry", e))?;
            match (m.kind, m.seq, m.reply_to) {
                (MessageKind::Question, Some(q), _) => h.add_question(q, m.timestamp),
                (MessageKind::Answer, _, Some(q)) => h.add_answer(q, m.timestamp),
                _ => {}
            }
            log_seq = log_seq.max(seq);
        }
        h.seal();
        cache.archive_version = archive_version;
        cache.log_seq = log_seq;
        Ok(Arc::clone(&cache.history))
    }
}

/// Log entries from rows whose first column is the body.
pub(crate) fn messages(rows: Vec<Row>) -> Result<Vec<Message>> {
    rows.iter()
        .map(|r| {
            r.try_get::<_, Json<Message>>(0).map(|j| j.0).map_err(|e| {
                Error::Protocol(format!("a log entry in the database does not parse: {e}"))
            })
        })
        .collect()
}

/// The task in column `i` of a row.
fn task(row: &Row, i: usize, target: &Target) -> Result<Task> {
    row.try_get::<_, Json<Task>>(i)
        .map(|j| j.0)
        .map_err(|e| unparsable(target, "a task", e))
}

fn unparsable(target: &Target, what: &str, e: postgres::Error) -> Error {
    Error::io(
        "reading",
        target.location().to_string(),
        std::io::Error::other(format!("{what} does not parse: {e}")),
    )
}

/// Looks the tasks among `ids` that are not on the queue up in the archive.
pub(crate) fn load_archived(
    c: &mut Conn,
    target: &Target,
    st: &mut State,
    ids: &[u64],
) -> Result<()> {
    let missing: HashSet<u64> = ids
        .iter()
        .copied()
        .filter(|id| st.position(*id).is_none())
        .collect();
    let wanted: Vec<i64> = missing
        .iter()
        .filter_map(|id| i64::try_from(*id).ok())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let rows = c
        .client
        .query(&c.st.archived_by_id, &[&wanted])
        .map_err(|e| target.error("reading the archive from", e))?;
    for row in rows {
        let t = task(&row, 0, target)?;
        st.archived.insert(t.id, t.status);
        st.archived_tasks.insert(t.id, t);
    }
    Ok(())
}

/// The board files among `paths` (board-relative) that exist: (path as stored, content).
pub(crate) fn board_files(
    c: &mut Conn,
    target: &Target,
    paths: &[String],
) -> Result<Vec<(String, Vec<u8>)>> {
    let keys: Vec<String> = paths.iter().map(|p| file_key(p)).collect();
    let rows = c
        .client
        .query(&c.st.files, &[&keys])
        .map_err(|e| target.error("reading board files from", e))?;
    rows.iter()
        .map(|r| {
            let path: String = r
                .try_get(0)
                .map_err(|e| target.error("reading board files from", e))?;
            let content: Vec<u8> = r
                .try_get(1)
                .map_err(|e| target.error("reading board files from", e))?;
            Ok((path, content))
        })
        .collect()
}

/// A board path as stored: without empty and `.` parts (`./tasks//a.md` is `tasks/a.md`),
/// as the file system would resolve it.
pub(crate) fn file_key(rel: &str) -> String {
    rel.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}
