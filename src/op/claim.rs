//! Claiming: the best eligible task for a worker (see `rules/eligibility.rs` for which tasks
//! are), or why there is none.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::reply::{ClaimedTask, Reply};
use crate::rules::eligibility::{best, nothing_reason};
use crate::rules::{Rule, State, refresh_current_task, replay, requeue_expired};
use crate::task::TaskStatus;
use crate::time::{Timestamp, add_secs};
use crate::validate;
use crate::worker::Worker;

/// Claim the best eligible task for a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The claiming worker.
    pub worker: String,
}

impl Rule for Claim {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        // Lapsed claims first: a task taken back now may be the one to claim.
        requeue_expired(st, now);
        claim(st, &self.worker, now)
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::claimed(st, &self.worker, key)
    }
}

/// Claims the best eligible task for `worker_id` (registering the worker if it is new).
fn claim(state: &mut State, worker_id: &str, now: Timestamp) -> Result<Reply> {
    validate::name("worker id", worker_id)?;
    let Some(i) = best(state, worker_id, now) else {
        return Ok(Reply::Claimed {
            claim: None,
            reason: Some(nothing_reason(state, worker_id, now)),
        });
    };
    let claimed = state.change(i, |task, settings| {
        let lease = task.lease_secs.unwrap_or(settings.lease_secs);
        task.status = TaskStatus::InProgress;
        task.claimed_by = Some(worker_id.to_string());
        task.claimed_at = Some(now);
        task.first_claimed_at.get_or_insert(now);
        task.attempts = task.attempts.saturating_add(1);
        task.lease_expires_at = Some(add_secs(now, lease));
        task.not_before = None;
        task.clone()
    });

    // The claim itself is recorded in the queue; the worker file must be written only when
    // the worker is new or comes back from offline (see `merge_queue_facts`).
    let is_new = !state.workers.contains_key(worker_id);
    let w = state
        .workers
        .entry(worker_id.to_string())
        .or_insert_with(|| Worker::new(Vec::new(), now));
    let was_offline = w.status != crate::worker::ACTIVE;
    let was_waiting = w.waiting.take().is_some();
    w.status = crate::worker::ACTIVE.into();
    w.offline_reason = None;
    w.last_task_claimed = Some(now);
    w.last_heartbeat = Some(now);
    if is_new || was_offline || was_waiting {
        state.dirty.workers = true;
    } else {
        state.dirty.workers_soft = true;
    }
    refresh_current_task(state, worker_id);
    Ok(Reply::Claimed {
        claim: Some(ClaimedTask {
            task: claimed,
            instructions: None,
            instructions_error: None,
        }),
        reason: None,
    })
}
