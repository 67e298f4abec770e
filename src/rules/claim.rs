//! Which task a worker may claim, and the claim itself.

use std::collections::HashMap;

use super::{State, refresh_current_task};
use crate::error::Result;
use crate::op::{Claim, Reply};
use crate::task::{Task, TaskStatus};
use crate::time::{Timestamp, add_secs};
use crate::validate;
use crate::worker::{Worker, WorkerState};

/// Why a pending task cannot be claimed by a given worker right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ineligible {
    /// Not pending.
    NotPending,
    /// In retry backoff until `not_before`.
    Backoff,
    /// A dependency has not completed yet.
    Waiting,
    /// A dependency failed or was cancelled; it never will be claimable.
    Blocked,
    /// Assigned to another worker that is alive (or not yet registered).
    AssignedElsewhere,
    /// The worker lacks a required capability.
    MissingCapability,
}

/// Whether `worker_id` may claim `task` now. `statuses` maps queue task ids to their status.
pub fn eligibility(
    task: &Task,
    worker_id: &str,
    worker: Option<&Worker>,
    state: &State,
    statuses: &HashMap<u64, TaskStatus>,
    now: Timestamp,
) -> Result<(), Ineligible> {
    if task.status != TaskStatus::Pending {
        return Err(Ineligible::NotPending);
    }
    for dep in &task.depends_on {
        // A dependency that is no longer on the queue was archived after completing:
        // the archive never takes a finished task that an unfinished one depends on.
        match statuses
            .get(dep)
            .copied()
            .or_else(|| state.archived.get(dep).copied())
        {
            None | Some(TaskStatus::Completed) => {}
            Some(TaskStatus::Failed | TaskStatus::Cancelled) => return Err(Ineligible::Blocked),
            Some(TaskStatus::Pending | TaskStatus::InProgress) => {
                return Err(Ineligible::Waiting);
            }
        }
    }
    if let Some(assigned) = task.assigned_to.as_deref()
        && !assigned.is_empty()
        && assigned != worker_id
    {
        let takeable = state.workers.get(assigned).is_some_and(|w| {
            matches!(
                w.state(false, state.settings.stale_after_secs, now),
                WorkerState::Offline | WorkerState::Stale
            )
        });
        if !takeable {
            return Err(Ineligible::AssignedElsewhere);
        }
    }
    let caps_ok = match worker {
        Some(w) => w.can_do(&task.requires),
        None => task.requires.is_empty(),
    };
    if !caps_ok {
        return Err(Ineligible::MissingCapability);
    }
    if task.not_before.is_some_and(|t| t > now) {
        return Err(Ineligible::Backoff);
    }
    Ok(())
}

/// The index of the best task `worker_id` may claim: priority first, then oldest (ids follow
/// the order tasks were added in, whatever the clocks of the processes that added them).
pub(crate) fn best(state: &State, worker_id: &str, now: Timestamp) -> Option<usize> {
    let statuses: HashMap<u64, TaskStatus> = state.tasks.iter().map(|t| (t.id, t.status)).collect();
    let worker = state.workers.get(worker_id);
    state
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| eligibility(t, worker_id, worker, state, &statuses, now).is_ok())
        .min_by_key(|(_, t)| (t.priority.rank(), t.id))
        .map(|(i, _)| i)
}

/// Explains, in one line, why nothing is claimable for `worker_id`.
pub(crate) fn nothing_reason(state: &State, worker_id: &str, now: Timestamp) -> String {
    let statuses: HashMap<u64, TaskStatus> = state.tasks.iter().map(|t| (t.id, t.status)).collect();
    let worker = state.workers.get(worker_id);
    let mut counts: HashMap<Ineligible, usize> = HashMap::new();
    let mut pending = 0;
    for t in state
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Pending)
    {
        pending += 1;
        if let Err(why) = eligibility(t, worker_id, worker, state, &statuses, now) {
            *counts.entry(why).or_insert(0) += 1;
        }
    }
    if pending == 0 {
        return "no pending tasks".into();
    }
    let mut parts = Vec::new();
    for (why, label) in [
        (Ineligible::Waiting, "wait for dependencies"),
        (Ineligible::Backoff, "wait out a retry delay"),
        (
            Ineligible::AssignedElsewhere,
            "are assigned to other workers",
        ),
        (
            Ineligible::MissingCapability,
            "need capabilities this worker lacks",
        ),
        (
            Ineligible::Blocked,
            "are blocked by failed or cancelled dependencies",
        ),
    ] {
        if let Some(n) = counts.get(&why) {
            parts.push(format!("{n} {label}"));
        }
    }
    format!(
        "{pending} pending task{} but none claimable by {worker_id}: {}",
        if pending == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// Claims the best eligible task for `worker_id` (registering the worker if it is new).
pub(crate) fn claim(state: &mut State, worker_id: &str, now: Timestamp) -> Result<Reply> {
    validate::name("worker id", worker_id)?;
    let Some(i) = best(state, worker_id, now) else {
        return Ok(Reply::Claimed {
            claim: None,
            reason: Some(nothing_reason(state, worker_id, now)),
        });
    };
    let lease = state.tasks[i]
        .lease_secs
        .unwrap_or(state.settings.lease_secs);
    let task = &mut state.tasks[i];
    task.status = TaskStatus::InProgress;
    task.claimed_by = Some(worker_id.to_string());
    task.claimed_at = Some(now);
    task.attempts = task.attempts.saturating_add(1);
    task.lease_expires_at = Some(add_secs(now, lease));
    task.not_before = None;
    let claimed = task.clone();
    state.touch(claimed.id);

    // The claim itself is recorded in the queue; the worker file must be written only when
    // the worker is new or comes back from offline (see `merge_queue_facts`).
    let is_new = !state.workers.contains_key(worker_id);
    let w = state
        .workers
        .entry(worker_id.to_string())
        .or_insert_with(|| Worker::new(Vec::new(), now));
    let was_offline = w.status != crate::worker::ACTIVE;
    w.status = crate::worker::ACTIVE.into();
    w.offline_reason = None;
    w.last_task_claimed = Some(now);
    w.last_heartbeat = Some(now);
    if is_new || was_offline {
        state.dirty.workers = true;
    } else {
        state.dirty.workers_soft = true;
    }
    refresh_current_task(state, worker_id);
    Ok(Reply::Claimed {
        claim: Some(Claim {
            task: claimed,
            instructions: None,
            instructions_error: None,
        }),
        reason: None,
    })
}
