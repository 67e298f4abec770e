//! Reads: the board's status, its tasks (one, or a list), workers, progress, settings, the
//! message log and the questions. Each says what it needs loaded and answers from that alone,
//! so every store (and the server) answers a read the same way. A view of the board shows it as
//! the next change will see it: lapsed claims taken back, in memory only.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message::MessageFilter;
use crate::reply::{Reply, TaskView};
use crate::rules::{
    LogNeed, Needs, Query, State, questions, requeue_expired, status_report, task_views,
    worker_views,
};
use crate::sessions::task_totals;
use crate::task::StatusFilter;
use crate::time::Timestamp;

super::no_fields! {
    /// Counts and summary of the board.
    Status,
    /// All workers with their derived state.
    Workers,
    /// The progress record.
    Progress,
    /// The board's settings.
    Settings,
}

/// List tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tasks {
    /// Only tasks with this status (`blocked` selects blocked pending tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusFilter>,
    /// Include archived tasks.
    #[serde(default)]
    pub all: bool,
}

/// One task, from the queue or the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Show {
    /// The task.
    pub task: u64,
}

/// Read the message log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadMessages {
    /// Which entries.
    #[serde(default)]
    pub filter: MessageFilter,
}

/// Questions, open ones unless `all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Questions {
    /// Include answered questions.
    #[serde(default)]
    pub all: bool,
}

impl Query for Status {
    fn needs(&self) -> Needs {
        Needs {
            archive_counts: true,
            log: LogNeed::Questions,
            sessions: true,
            ..Needs::board()
        }
    }

    fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        requeue_expired(st, now);
        // Tasks on the queue that are also at the archive's tail (a compaction that was cut
        // off, or one that ran between two reads) are counted once.
        let tail = std::mem::take(&mut st.archive_tail);
        st.tasks.retain(|t| !tail.contains(&t.id));
        let open = questions(std::mem::take(&mut st.log), false).len();
        Ok(Reply::Status {
            report: status_report(st, &st.archived_counts, open, now),
        })
    }
}

impl Query for Tasks {
    fn needs(&self) -> Needs {
        Needs {
            archive_all: self.all,
            ..Needs::board()
        }
    }

    fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let status = self.status;
        requeue_expired(st, now);
        let mut tasks = Vec::new();
        if self.all {
            let on_queue: HashSet<u64> = st.tasks.iter().map(|t| t.id).collect();
            for t in std::mem::take(&mut st.archived_tasks).into_values() {
                // An archived task is finished, so never blocked.
                let matches = status.is_none_or(|f| f.matches(t.status, false));
                if matches && !on_queue.contains(&t.id) {
                    tasks.push(TaskView::archived(t));
                }
            }
        }
        tasks.extend(task_views(st, status, now));
        tasks.sort_by_key(|v| v.task.id);
        Ok(Reply::Tasks { tasks })
    }
}

impl Query for Show {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            sessions: true,
            ..Needs::board()
        }
    }

    fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        requeue_expired(st, now);
        let mut view = match task_views(st, None, now)
            .into_iter()
            .find(|v| v.task.id == self.task)
        {
            Some(v) => v,
            None => match st.archived_tasks.remove(&self.task) {
                Some(t) => TaskView::archived(t),
                None => return Err(Error::UnknownTask(self.task)),
            },
        };
        let cost = task_totals(&st.sessions, self.task);
        view.cost = (cost.runs > 0).then_some(cost);
        Ok(Reply::Task { task: view })
    }
}

impl Query for Workers {
    fn needs(&self) -> Needs {
        Needs::board()
    }

    fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        requeue_expired(st, now);
        Ok(Reply::Workers {
            workers: worker_views(st, now),
        })
    }
}

impl Query for Progress {
    fn needs(&self) -> Needs {
        Needs {
            progress: true,
            ..Needs::default()
        }
    }

    fn answer(self, st: &mut State, _now: Timestamp) -> Result<Reply> {
        Ok(Reply::Progress {
            progress: std::mem::take(&mut st.progress),
        })
    }
}

impl Query for Settings {
    fn needs(&self) -> Needs {
        Needs {
            settings: true,
            ..Needs::default()
        }
    }

    fn answer(self, st: &mut State, _now: Timestamp) -> Result<Reply> {
        Ok(Reply::Settings {
            settings: std::mem::take(&mut st.settings),
        })
    }
}

impl Query for ReadMessages {
    fn needs(&self) -> Needs {
        Needs {
            log: LogNeed::Matching(self.filter.clone()),
            ..Needs::default()
        }
    }

    fn answer(self, st: &mut State, _now: Timestamp) -> Result<Reply> {
        Ok(Reply::Messages {
            messages: self.filter.select(std::mem::take(&mut st.log)),
        })
    }
}

impl Query for Questions {
    fn needs(&self) -> Needs {
        Needs {
            log: LogNeed::Questions,
            ..Needs::default()
        }
    }

    fn answer(self, st: &mut State, _now: Timestamp) -> Result<Reply> {
        Ok(Reply::Questions {
            questions: questions(std::mem::take(&mut st.log), self.all),
        })
    }
}
