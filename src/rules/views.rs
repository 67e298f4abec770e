//! Read-only views of the state: blocked tasks, task and worker views, questions with their
//! answers, the status report.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::State;
use crate::message::{Message, MessageKind};
use crate::reply::{QuestionView, StatusReport, TaskView, WorkerView};
use crate::task::{StatusFilter, Task, TaskStatus};
use crate::time::Timestamp;

/// Ids of pending tasks that can never run because a dependency (directly or through others)
/// failed or was cancelled.
pub fn blocked_ids(tasks: &[Task], archived: &BTreeMap<u64, TaskStatus>) -> HashSet<u64> {
    let status: HashMap<u64, TaskStatus> = tasks.iter().map(|t| (t.id, t.status)).collect();
    let mut blocked: HashSet<u64> = HashSet::new();
    loop {
        let before = blocked.len();
        for t in tasks.iter().filter(|t| t.status == TaskStatus::Pending) {
            if blocked.contains(&t.id) {
                continue;
            }
            let dead = t.depends_on.iter().any(|d| {
                blocked.contains(d)
                    || matches!(
                        status.get(d).or_else(|| archived.get(d)),
                        Some(TaskStatus::Failed | TaskStatus::Cancelled)
                    )
            });
            if dead {
                blocked.insert(t.id);
            }
        }
        if blocked.len() == before {
            return blocked;
        }
    }
}

/// Views of the queue's tasks at `now`, optionally only those `status` shows.
pub fn task_views(state: &State, status: Option<StatusFilter>, now: Timestamp) -> Vec<TaskView> {
    let blocked = blocked_ids(&state.tasks, &state.archived);
    state
        .tasks
        .iter()
        .filter(|t| status.is_none_or(|f| f.matches(t.status, blocked.contains(&t.id))))
        .map(|t| {
            let blocked = blocked.contains(&t.id);
            TaskView {
                blocked,
                fallback: if blocked {
                    None
                } else {
                    super::eligibility::fallback(t, state, now)
                },
                ..TaskView::of(t.clone())
            }
        })
        .collect()
}

/// The view of one worker.
pub(crate) fn worker_view(state: &State, id: &str, now: Timestamp) -> WorkerView {
    let tasks: Vec<u64> = state
        .held_by(id)
        .into_iter()
        .map(|i| state.tasks[i].id)
        .collect();
    let worker = state
        .workers
        .get(id)
        .cloned()
        .unwrap_or_else(|| crate::worker::Worker::new(Vec::new(), now));
    WorkerView {
        id: id.to_string(),
        state: worker.state(!tasks.is_empty(), state.settings.stale_after_secs, now),
        tasks,
        worker,
    }
}

/// Views of every worker, by id.
pub fn worker_views(state: &State, now: Timestamp) -> Vec<WorkerView> {
    state
        .workers
        .keys()
        .map(|id| worker_view(state, id, now))
        .collect()
}

/// The status report of the queue plus archived counts (`archived_counts` by status).
pub fn status_report(
    state: &State,
    archived_counts: &BTreeMap<TaskStatus, usize>,
    open_questions: usize,
    now: Timestamp,
) -> StatusReport {
    let mut counts = TaskStatus::count(&state.tasks);
    let mut archived = 0;
    for (st, n) in archived_counts {
        *counts.entry(*st).or_insert(0) += n;
        archived += n;
    }
    let get = |s: TaskStatus| counts.get(&s).copied().unwrap_or(0);
    let mut workers = BTreeMap::new();
    for w in worker_views(state, now) {
        *workers.entry(w.state.as_str().to_string()).or_insert(0) += 1;
    }
    StatusReport {
        pending: get(TaskStatus::Pending),
        in_progress: get(TaskStatus::InProgress),
        completed: get(TaskStatus::Completed),
        failed: get(TaskStatus::Failed),
        cancelled: get(TaskStatus::Cancelled),
        total: counts.values().sum(),
        blocked: blocked_ids(&state.tasks, &state.archived).len(),
        archived,
        workers,
        open_questions,
        progress: state.progress.clone(),
        claude: crate::reply::ClaudeSpend::of(&state.sessions),
    }
}

/// Questions with their answers, from log entries oldest first; only unanswered ones unless
/// `all`.
pub fn questions(log: Vec<Message>, all: bool) -> Vec<QuestionView> {
    let mut qs: BTreeMap<u64, QuestionView> = BTreeMap::new();
    for m in log {
        match (m.kind, m.seq, m.reply_to) {
            (MessageKind::Question, Some(s), _) => {
                qs.insert(
                    s,
                    QuestionView {
                        question: m,
                        answers: vec![],
                    },
                );
            }
            (MessageKind::Answer, _, Some(q)) => {
                if let Some(v) = qs.get_mut(&q) {
                    v.answers.push(m);
                }
            }
            _ => {}
        }
    }
    qs.into_values()
        .filter(|q| all || q.answers.is_empty())
        .collect()
}

/// A description folded onto one line (files written by others may hold newlines).
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
