//! The coordinator's change of a task's priority: a task that is not finished (pending or in
//! progress) gets the new priority; a finished one keeps its own.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reply::{Reply, TaskView};
use crate::rules::{Needs, Rule, State, replay, requeue_expired};
use crate::task::Priority;
use crate::time::Timestamp;

/// Change the priority of a task that is not finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPriority {
    /// The task.
    pub task: u64,
    /// Its new priority.
    pub priority: Priority,
}

impl Rule for SetPriority {
    fn needs(&self) -> Needs {
        Needs {
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let id = self.task;
        let i = st.task_index(id)?;
        let t = &st.tasks[i];
        if t.status.is_terminal() {
            return Err(Error::Conflict(format!(
                "task {id} is {}; only a task that is not finished can change its priority",
                t.status
            )));
        }
        if t.priority != self.priority {
            st.change(i, |t, _| t.priority = self.priority);
        }
        let view = TaskView::of(st.tasks[i].clone());
        requeue_expired(st, now);
        Ok(Reply::Task { task: view })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::task(st, self.task, key)
    }
}
