//! The coordinator's decisions on a task: cancel it (not once completed), or retry a failed
//! one with its attempts reset.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reply::{Reply, TaskView};
use crate::rules::{Needs, Rule, State, refresh_current_task, replay, requeue_expired};
use crate::task::TaskStatus;
use crate::time::Timestamp;
use crate::validate;

/// Cancel a task that has not completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// The task.
    pub task: u64,
    /// Why (kept as the task's last error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Put a failed task back to pending with its attempts reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// The task.
    pub task: u64,
}

impl Rule for Cancel {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let id = self.task;
        if let Some(r) = &self.reason {
            validate::size("the reason", r, validate::MAX_MESSAGE)?;
        }
        let i = st.task_index(id)?;
        let status = st.tasks[i].status;
        if matches!(status, TaskStatus::Completed | TaskStatus::Cancelled) {
            return Err(Error::Conflict(format!("task {id} is already {status}")));
        }
        let (claimant, view) = st.change(i, |t, _| {
            let claimant = t.claimed_by.take();
            t.status = TaskStatus::Cancelled;
            t.ended_at = Some(now);
            t.lease_expires_at = None;
            t.not_before = None;
            t.claimed_at = None;
            if let Some(r) = self.reason {
                t.last_error = Some(format!("cancelled: {r}"));
            }
            (claimant, TaskView::of(t.clone()))
        });
        if let Some(w) = claimant {
            st.dirty.workers = true;
            refresh_current_task(st, &w);
        }
        requeue_expired(st, now);
        Ok(Reply::Task { task: view })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::task(st, self.task, key)
    }
}

impl Rule for Retry {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let id = self.task;
        let i = st.task_index(id)?;
        let status = st.tasks[i].status;
        if status != TaskStatus::Failed {
            return Err(Error::Conflict(format!(
                "task {id} is {status}; only failed tasks can be retried"
            )));
        }
        let view = st.change(i, |t, _| {
            t.status = TaskStatus::Pending;
            t.attempts = 0;
            t.not_before = None;
            t.ended_at = None;
            TaskView::of(t.clone())
        });
        requeue_expired(st, now);
        Ok(Reply::Task { task: view })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::task(st, self.task, key)
    }
}
