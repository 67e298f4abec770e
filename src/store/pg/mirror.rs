//! A server's copy of the board's live part (the board row, the queue, the workers, the
//! sessions) at one board version, brought up to date by loading only the rows whose version
//! is above it: a claim on an unchanged board loads nothing, and one after another server's
//! commit loads just what that commit changed. The writer keeps one (under the board row's
//! lock it is exactly the database), the reads another.

use std::collections::{BTreeMap, HashMap};

use postgres::Row;
use postgres::types::Json;
use serde::Deserialize;

use super::conn::Target;
use super::sql::Conn;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rules;
use crate::sessions::SessionRecord;
use crate::settings::Settings;
use crate::task::Task;
use crate::worker::Worker;

/// The board row.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BoardRow {
    /// Bumped by every commit.
    pub version: i64,
    /// Above every task id the board has used.
    pub next_id: i64,
    /// The sequence number of the next log entry.
    pub next_seq: i64,
    /// The board clock's last time (epoch ms).
    pub clock_ms: Option<i64>,
    /// Completed tasks in the archive.
    pub archived_completed: i64,
    /// Cancelled tasks in the archive.
    pub archived_cancelled: i64,
    /// The settings.
    pub settings: Settings,
    /// The progress record.
    pub progress: Progress,
}

/// The live part of the board at `board.version`.
#[derive(Debug)]
pub(crate) struct Mirror {
    /// The board row.
    pub board: BoardRow,
    /// The queue, in its order.
    pub tasks: Vec<Task>,
    /// The workers, as stored.
    pub workers: BTreeMap<String, Worker>,
    /// When this server last wrote worker rows (changes only in what the queue also records
    /// are written at most every [`crate::store::SOFT_WRITE_EVERY`], as on files).
    pub workers_written: Option<std::time::Instant>,
    /// The sessions, in the order they were first recorded.
    pub sessions: Vec<SessionRecord>,
    /// What the rules keep beside `tasks` between batches (the queue's index, so a claim
    /// does not scan the queue), as `LocalStore` keeps it; dropped when a load changes tasks
    /// in place.
    pub derived: rules::Derived,
}

impl Clone for Mirror {
    /// A copy (the rules build the copy's index again).
    fn clone(&self) -> Self {
        Mirror {
            board: self.board.clone(),
            tasks: self.tasks.clone(),
            workers: self.workers.clone(),
            workers_written: self.workers_written,
            sessions: self.sessions.clone(),
            derived: rules::Derived::default(),
        }
    }
}

/// What changed since a version (or everything, for a full load).
pub(crate) struct Delta {
    board: BoardRow,
    /// Tasks by id: the task, or `None` for one that moved to the archive.
    tasks: Vec<(u64, Option<Task>)>,
    workers: Vec<(String, Worker)>,
    sessions: Vec<SessionRecord>,
}

impl Delta {
    /// The board version it brings a mirror to.
    pub(crate) fn version(&self) -> i64 {
        self.board.version
    }
}

/// Loads the rows changed after version `since`, or everything live when `None`, in one
/// statement (one snapshot).
pub(crate) fn load(conn: &mut Conn, target: &Target, since: Option<i64>) -> Result<Delta> {
    load_with(conn, target, since, &[])
}

/// [`load`], with the tasks among `ids` as they are even if they did not change after
/// `since` (a copy whose own changes to them were not committed takes them back).
pub(crate) fn load_with(
    conn: &mut Conn,
    target: &Target,
    since: Option<i64>,
    ids: &[i64],
) -> Result<Delta> {
    let err = |e| target.error("reading the board from", e);
    let rows = match since {
        Some(v) => conn.client.query(&conn.st.delta, &[&v, &ids]),
        None => conn.client.query(&conn.st.full, &[]),
    }
    .map_err(err)?;
    let mut board = None;
    let mut delta_tasks = Vec::new();
    let mut workers = Vec::new();
    let mut sessions = Vec::new();
    for row in &rows {
        let kind: i16 = row.try_get(0).map_err(err)?;
        match kind {
            0 => board = Some(body::<BoardRow>(row, target, "the board row")?),
            1 => {
                let id: i64 = row.try_get(1).map_err(err)?;
                let archived: bool = row.try_get(2).map_err(err)?;
                let id = u64::try_from(id).map_err(|_| bad(target, "a task id", id))?;
                let task = if archived {
                    None
                } else {
                    Some(body::<Task>(row, target, "a task")?)
                };
                delta_tasks.push((id, task));
            }
            2 => {
                let w: Worker = body(row, target, "a worker")?;
                let id: String = row.try_get(3).map_err(err)?;
                workers.push((id, w));
            }
            3 => sessions.push(body::<SessionRecord>(row, target, "a session")?),
            other => return Err(bad(target, "a row kind", other)),
        }
    }
    let board = board.ok_or_else(|| {
        Error::Protocol(format!(
            "the board's database {} has no board row",
            target.location()
        ))
    })?;
    Ok(Delta {
        board,
        tasks: delta_tasks,
        workers,
        sessions,
    })
}

/// The body (column 4) of a row, parsed.
fn body<T: serde::de::DeserializeOwned>(row: &Row, target: &Target, what: &str) -> Result<T> {
    row.try_get::<_, Json<T>>(4).map(|j| j.0).map_err(|e| {
        Error::io(
            "reading",
            target.location().to_string(),
            std::io::Error::other(format!("{what} does not parse: {e}")),
        )
    })
}

fn bad(target: &Target, what: &str, value: impl std::fmt::Display) -> Error {
    Error::Protocol(format!(
        "the board's database {} holds {what} this vine cannot use: {value}",
        target.location()
    ))
}

impl Mirror {
    /// A mirror from a full load.
    pub(crate) fn full(d: Delta) -> Mirror {
        let mut m = Mirror {
            board: d.board.clone(),
            tasks: Vec::new(),
            workers: BTreeMap::new(),
            workers_written: None,
            sessions: Vec::new(),
            derived: rules::Derived::default(),
        };
        m.apply(d);
        m
    }

    /// The board version it holds.
    pub(crate) fn version(&self) -> i64 {
        self.board.version
    }

    /// Applies what changed after a version at or below this one's (a change seen twice is
    /// the same row, so applying it again does no harm). New tasks come last, in the order
    /// they were added (they were loaded in it).
    pub(crate) fn apply(&mut self, d: Delta) {
        self.board = d.board;
        if !d.tasks.is_empty() {
            // Tasks replaced in place, outside the rules: the index is built again.
            self.derived = rules::Derived::default();
            let mut at: HashMap<u64, usize> = self
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id, i))
                .collect();
            let mut gone = Vec::new();
            for (id, task) in d.tasks {
                match (at.get(&id), task) {
                    (Some(&i), Some(t)) => self.tasks[i] = t,
                    (Some(&i), None) => gone.push(i),
                    (None, Some(t)) => {
                        at.insert(id, self.tasks.len());
                        self.tasks.push(t);
                    }
                    (None, None) => {}
                }
            }
            if !gone.is_empty() {
                gone.sort_unstable();
                let mut i = 0;
                let mut next = gone.iter().peekable();
                self.tasks.retain(|_| {
                    let drop = next.peek().is_some_and(|&&g| g == i);
                    if drop {
                        next.next();
                    }
                    i += 1;
                    !drop
                });
            }
        }
        for (id, w) in d.workers {
            self.workers.insert(id, w);
        }
        for s in d.sessions {
            match self.sessions.iter_mut().find(|x| x.id == s.id) {
                Some(x) => *x = s,
                None => self.sessions.push(s),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(version: i64) -> BoardRow {
        BoardRow {
            version,
            next_id: 1,
            next_seq: 1,
            clock_ms: None,
            archived_completed: 0,
            archived_cancelled: 0,
            settings: Settings::default(),
            progress: Progress::default(),
        }
    }

    fn task(id: u64, d: &str) -> Task {
        Task::new(id, d, crate::time::now())
    }

    fn ids(m: &Mirror) -> Vec<(u64, String)> {
        m.tasks
            .iter()
            .map(|t| (t.id, t.description.clone()))
            .collect()
    }

    #[test]
    fn changes_replace_in_place_archived_tasks_leave_and_new_ones_come_last() {
        let mut m = Mirror::full(Delta {
            board: board(3),
            tasks: vec![
                (10, Some(task(10, "a"))),
                (11, Some(task(11, "b"))),
                (12, Some(task(12, "c"))),
                (13, Some(task(13, "d"))),
            ],
            workers: vec![("w1".into(), Worker::new(Vec::new(), crate::time::now()))],
            sessions: vec![],
        });
        m.apply(Delta {
            board: board(5),
            tasks: vec![
                (11, None),
                (12, Some(task(12, "c2"))),
                (13, None),
                (14, Some(task(14, "e"))),
                (9, None),
            ],
            workers: vec![],
            sessions: vec![],
        });
        assert_eq!(m.version(), 5);
        assert_eq!(
            ids(&m),
            vec![(10, "a".into()), (12, "c2".into()), (14, "e".into())]
        );
        assert_eq!(m.workers.len(), 1, "workers not in the change stay");
        // The same change seen again does no harm.
        let again = m.clone();
        m.apply(Delta {
            board: board(5),
            tasks: vec![(12, Some(task(12, "c2"))), (13, None)],
            workers: vec![],
            sessions: vec![],
        });
        assert_eq!(ids(&m), ids(&again));
    }
}
