//! The end of a claim, reported by its holder: complete, fail (retried after a backoff, or
//! failed for good), release (given back without counting the attempt). A result or error
//! sent for a claim that was taken back is kept in the log.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};
use crate::reply::{Reply, TaskView};
use crate::rules::leases::{Again, end_attempt, release_at, taken_back_why};
use crate::rules::waits::end_wait;
use crate::rules::{Needs, Rule, State, refresh_current_task, replay, requeue_expired};
use crate::task::TaskStatus;
use crate::time::Timestamp;
use crate::validate;

/// Mark a claimed task completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Complete {
    /// The task.
    pub task: u64,
    /// The claimant.
    pub worker: String,
    /// The attempt the claim was for; a mismatch means the claim was taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What the worker reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Report a failed attempt; the task is retried with backoff or fails for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fail {
    /// The task.
    pub task: u64,
    /// The claimant.
    pub worker: String,
    /// The attempt the claim was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What went wrong.
    pub error: String,
    /// Fail for good at once instead of retrying.
    #[serde(default)]
    pub no_retry: bool,
}

/// Give a claimed task back without counting an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The task.
    pub task: u64,
    /// The claimant.
    pub worker: String,
    /// The attempt the claim was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl Rule for Complete {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let Complete {
            task,
            worker,
            attempt,
            result,
        } = self;
        validate::name("worker id", &worker)?;
        if let Some(r) = &result {
            validate::json_size("the result", r, validate::MAX_RESULT)?;
        }
        let body = result.as_ref().map(|r| match r {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let i = claimed_index(st, task, &worker, attempt, body.map(|b| ("result", b)), now)?;
        end_wait(st, &worker);
        let view = st.change(i, |t, _| {
            t.status = TaskStatus::Completed;
            t.completed_by = Some(worker.clone());
            t.completed_at = Some(now);
            t.result = result;
            t.lease_expires_at = None;
            TaskView::of(t.clone())
        });
        if let Some(w) = st.workers.get_mut(&worker) {
            // Recorded in the queue too (completed_by/at): a soft change.
            w.last_task_completed = Some(now);
            w.last_heartbeat = Some(now);
            st.dirty.workers_soft = true;
        }
        refresh_current_task(st, &worker);
        requeue_expired(st, now);
        Ok(Reply::Task { task: view })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::task(st, self.task, key)
    }
}

impl Rule for Fail {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let Fail {
            task,
            worker,
            attempt,
            error,
            no_retry,
        } = self;
        validate::name("worker id", &worker)?;
        if error.trim().is_empty() {
            return Err(Error::Invalid("say what went wrong with --error".into()));
        }
        validate::size("the error", &error, validate::MAX_MESSAGE)?;
        let sent = Some(("error", error.clone()));
        let i = claimed_index(st, task, &worker, attempt, sent, now)?;
        end_wait(st, &worker);
        let again = if no_retry {
            Again::Never
        } else {
            Again::AfterBackoff
        };
        let view = st.change(i, |t, settings| {
            end_attempt(t, error, again, settings, now);
            TaskView::of(t.clone())
        });
        if let Some(w) = st.workers.get_mut(&worker) {
            w.last_heartbeat = Some(now);
            st.dirty.workers = true;
        }
        refresh_current_task(st, &worker);
        requeue_expired(st, now);
        Ok(Reply::Task { task: view })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::task(st, self.task, key)
    }
}

impl Rule for Release {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let worker = self.worker.as_str();
        validate::name("worker id", worker)?;
        let i = st.task_index(self.task)?;
        check_claimant(st, i, worker, self.attempt)?;
        end_wait(st, worker);
        release_at(st, i);
        let view = TaskView::of(st.tasks[i].clone());
        if let Some(w) = st.workers.get_mut(worker) {
            w.last_heartbeat = Some(now);
            st.dirty.workers = true;
        }
        refresh_current_task(st, worker);
        requeue_expired(st, now);
        Ok(Reply::Task { task: view })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::task(st, self.task, key)
    }
}

/// Checks that `worker` holds the current claim on task at `i`; otherwise explains why not.
fn check_claimant(state: &State, i: usize, worker: &str, attempt: Option<u32>) -> Result<()> {
    let t = &state.tasks[i];
    let id = t.id;
    let taken_back = taken_back_why(t, worker, &state.settings);
    if t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(worker) {
        if let Some(a) = attempt
            && a != t.attempts
        {
            return Err(Error::Conflict(format!(
                "your claim on task {id} (attempt {a}) was taken back{}; the task is now on \
                 attempt {}. Claim again with `vine claim --worker {worker}`",
                taken_back.map(|w| format!(" {w}")).unwrap_or_default(),
                t.attempts
            )));
        }
        return Ok(());
    }
    let why = match (t.status, t.claimed_by.as_deref(), taken_back) {
        (TaskStatus::InProgress, Some(other), _) => {
            format!("task {id} is claimed by {other}, not {worker}")
        }
        (TaskStatus::Pending | TaskStatus::Failed, _, Some(why)) => {
            format!(
                "your claim on task {id} was taken back {why}; it is {} now. \
                 Claim again with `vine claim --worker {worker}`",
                t.status
            )
        }
        (st, _, _) => format!("task {id} is {st}, not claimed by {worker}"),
    };
    Err(Error::Conflict(why))
}

/// The queue index of task `id` if `worker` holds its claim. On a conflict, what the worker
/// sent (`(what, text)`) is kept in the log, also when the task has been archived since.
fn claimed_index(
    state: &mut State,
    id: u64,
    worker: &str,
    attempt: Option<u32>,
    sent: Option<(&str, String)>,
    now: Timestamp,
) -> Result<usize> {
    let checked = state
        .task_index(id)
        .and_then(|i| check_claimant(state, i, worker, attempt).map(|()| i));
    if let (Err(Error::Conflict(why)), Some((what, text))) = (&checked, sent) {
        keep_orphan(state, id, worker, what, text, why, now);
    }
    checked
}

/// Keeps a result or error that arrived for a claim the worker no longer holds.
fn keep_orphan(
    state: &mut State,
    task: u64,
    worker: &str,
    what: &str,
    body: String,
    why: &str,
    now: Timestamp,
) {
    let mut m = Message::new(MessageKind::Result, worker, &body, now);
    m.task_id = Some(task);
    m.extra.insert(
        "note".into(),
        Value::String(format!("{what} kept from a refused write: {why}")),
    );
    state.log(m);
}
