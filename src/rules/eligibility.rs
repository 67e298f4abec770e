//! Which task a worker may claim: eligibility (dependencies, backoff, assignees and
//! capabilities, with the fallback from an absent specialist), the best task, and why none is.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::State;
use super::index::Class;
use crate::error::Result;
use crate::reply::Fallback;
use crate::task::{Task, TaskStatus};
use crate::time::{Timestamp, add_secs, format_duration, secs_between};
use crate::worker::{OFFLINE, Worker};

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
    /// Assigned to another worker that is alive, or absent for less than the fallback time,
    /// or assigned strictly.
    AssignedElsewhere,
    /// The worker lacks a required capability, and a worker that has it was seen within the
    /// fallback time (or the task is strict).
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
    check(
        task,
        worker_id,
        worker,
        state,
        |id| statuses.get(&id).copied(),
        now,
    )
}

/// [`eligibility`], with the status of a queue task by id from `status`.
fn check(
    task: &Task,
    worker_id: &str,
    worker: Option<&Worker>,
    state: &State,
    status: impl Fn(u64) -> Option<TaskStatus>,
    now: Timestamp,
) -> Result<(), Ineligible> {
    if task.status != TaskStatus::Pending {
        return Err(Ineligible::NotPending);
    }
    for dep in &task.depends_on {
        // A dependency that is no longer on the queue was archived after completing:
        // the archive never takes a finished task that an unfinished one depends on.
        match status(*dep).or_else(|| state.archived.get(dep).copied()) {
            None | Some(TaskStatus::Completed) => {}
            Some(TaskStatus::Failed | TaskStatus::Cancelled) => return Err(Ineligible::Blocked),
            Some(TaskStatus::Pending | TaskStatus::InProgress) => {
                return Err(Ineligible::Waiting);
            }
        }
    }
    if let Some(assigned) = assignee(task)
        && assigned != worker_id
        && !absent_assignee(task, assigned, state, now).open_by(now)
    {
        return Err(Ineligible::AssignedElsewhere);
    }
    let caps_ok = match worker {
        Some(w) => w.can_do(&task.requires),
        None => task.requires.is_empty(),
    };
    if !caps_ok && !absent_capability(task, state, now).open_by(now) {
        return Err(Ineligible::MissingCapability);
    }
    if task.not_before.is_some_and(|t| t > now) {
        return Err(Ineligible::Backoff);
    }
    Ok(())
}

/// The worker a task is assigned to, if any.
fn assignee(task: &Task) -> Option<&str> {
    task.assigned_to.as_deref().filter(|a| !a.is_empty())
}

/// The specialist a pending task is meant for, as seen by a worker that is not one.
struct Absence {
    /// The specialist's last sign of life: a waiting specialist counts as seen now; `None`
    /// when none was ever seen (or every one is offline).
    seen: Option<Timestamp>,
    /// The assignee is offline (deregistered or told to stop): anyone may take its tasks.
    offline: bool,
    /// From when any worker may take the task instead; `None` for a strict task.
    open_at: Option<Timestamp>,
}

impl Absence {
    /// True if any worker may take the task at `now`.
    fn open_by(&self, now: Timestamp) -> bool {
        self.open_at.is_some_and(|t| t <= now)
    }
}

/// The earliest possible time, for tasks that are open to anyone at once.
const LONG_AGO: Timestamp = DateTime::<Utc>::MIN_UTC;

/// When any worker may take `task` whose specialist was last seen at `seen`: once no live
/// specialist has been seen for longer than the fallback time, counted from the later of the
/// task's creation and that last sign of life.
fn open_from(task: &Task, seen: Option<Timestamp>, state: &State) -> Option<Timestamp> {
    if task.strict {
        return None;
    }
    let fallback = task
        .fallback_after_secs
        .unwrap_or_else(|| state.settings.fallback_after());
    // "Longer than" in whole seconds, as for the stale limit: one second past the limit.
    Some(match task.created_at.max(seen) {
        Some(since) => add_secs(since, fallback.saturating_add(1)),
        None => LONG_AGO,
    })
}

/// The assignee of `task` as seen by another worker: an offline assignee gives its tasks to
/// anyone at once (unless strict); one that has not shown a sign of life for the fallback
/// time does too, counted from the task's creation at the earliest (an assignee that never
/// registered has never been seen).
fn absent_assignee(task: &Task, assigned: &str, state: &State, now: Timestamp) -> Absence {
    let w = state.workers.get(assigned);
    let offline = w.is_some_and(|w| w.status == OFFLINE);
    let seen = w.and_then(|w| w.alive_at(now));
    let open_at = if offline && !task.strict {
        Some(LONG_AGO)
    } else {
        open_from(task, seen, state)
    };
    Absence {
        seen,
        offline,
        open_at,
    }
}

/// The workers able to do `task` as seen by one that is not: the last sign of life of any
/// live (not offline) worker with every required capability decides when anyone may take it.
fn absent_capability(task: &Task, state: &State, now: Timestamp) -> Absence {
    let seen = capable_seen(&task.requires, state, now);
    Absence {
        seen,
        offline: false,
        open_at: open_from(task, seen, state),
    }
}

/// The last sign of life of any live (not offline) worker with every capability in `requires`.
fn capable_seen(requires: &[String], state: &State, now: Timestamp) -> Option<Timestamp> {
    state
        .workers
        .values()
        .filter(|w| w.status != OFFLINE && w.can_do(requires))
        .filter_map(|w| w.alive_at(now))
        .max()
}

/// For a pending task meant for a specialist (an assignee or required capabilities): who it
/// waits for and when any worker may take it instead, in one line.
pub(crate) fn fallback(task: &Task, state: &State, now: Timestamp) -> Option<Fallback> {
    if task.status != TaskStatus::Pending {
        return None;
    }
    let ago = |t: Timestamp| format_duration(secs_between(t, now));
    let mut parts = Vec::new();
    let mut absences = Vec::new();
    if let Some(a) = assignee(task) {
        let abs = absent_assignee(task, a, state, now);
        let waits = state
            .workers
            .get(a)
            .is_some_and(|w| w.waits_on(now).is_some());
        parts.push(match abs.seen {
            _ if abs.offline => format!("assigned to {a}, who is offline"),
            _ if waits => format!("assigned to {a}, who waits for an answer"),
            Some(t) => format!("assigned to {a}, last seen {} ago", ago(t)),
            None => format!("assigned to {a}, who has not been seen"),
        });
        absences.push((a.to_string(), abs));
    }
    if !task.requires.is_empty() {
        let caps = task.requires.join(", ");
        let abs = absent_capability(task, state, now);
        parts.push(match abs.seen {
            Some(t) => format!(
                "needs {caps}; a worker with {} was last seen {} ago",
                if task.requires.len() == 1 {
                    "it"
                } else {
                    "them"
                },
                ago(t)
            ),
            None => format!("needs {caps}, which no live worker has"),
        });
        absences.push((format!("a worker with {caps}"), abs));
    }
    if absences.is_empty() {
        return None;
    }
    // Anyone may take it once every specialist it is meant for is absent long enough.
    let open_at = absences
        .iter()
        .map(|(_, a)| a.open_at)
        .try_fold(LONG_AGO, |acc, t| t.map(|t| acc.max(t)));
    let tail = match open_at {
        None => {
            let only: Vec<&str> = absences
                .iter()
                .filter(|(_, a)| a.open_at.is_none())
                .map(|(who, _)| who.as_str())
                .collect();
            format!("only {} may take it (strict)", only.join(" and "))
        }
        Some(t) if t <= now => "any worker may take it now".into(),
        Some(t) => {
            let ms = (t - now).num_milliseconds().max(0);
            let secs = u64::try_from(ms).unwrap_or(0).div_ceil(1000);
            let alive = absences.iter().any(|(_, a)| a.seen.is_some());
            format!(
                "any worker may take it in {}{}",
                format_duration(secs),
                if alive {
                    " unless it shows a sign of life"
                } else {
                    ""
                }
            )
        }
    };
    Some(Fallback {
        note: format!("{}; {tail}", parts.join("; ")),
        // Open from the start (an offline assignee): since the task exists.
        at: open_at.map(|t| {
            if t == LONG_AGO {
                task.created_at.unwrap_or(now)
            } else {
                t
            }
        }),
    })
}

/// The index of the best task `worker_id` may claim: priority first, then oldest (ids follow
/// the order tasks were added in, whatever the clocks of the processes that added them).
///
/// On an indexed queue only the candidates are looked at, in claim order, up to the first
/// eligible one (see [`State::candidates`]); otherwise every task.
pub(crate) fn best(state: &State, worker_id: &str, now: Timestamp) -> Option<usize> {
    let worker = state.workers.get(worker_id);
    if let Some(candidates) = state.candidates() {
        let status = |id| state.status_of(id);
        return candidates.first(
            |class, earliest| may_be_open(class, earliest, worker_id, worker, state, now),
            |i| check(&state.tasks[i], worker_id, worker, state, status, now).is_ok(),
        );
    }
    let statuses: HashMap<u64, TaskStatus> = state.tasks.iter().map(|t| (t.id, t.status)).collect();
    state
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| eligibility(t, worker_id, worker, state, &statuses, now).is_ok())
        .min_by_key(|(_, t)| (t.priority.rank(), t.id))
        .map(|(i, _)| i)
}

/// False if no pending task of `class` (the earliest created at `earliest`) can be eligible
/// for `worker_id` now, whatever its dependencies and retry delay: it is meant for another
/// worker, or needs a capability this one lacks, and the specialist was seen, or the earliest
/// task created, within the fallback time (or the class is strict). As [`check`] decides for
/// each task of the class.
fn may_be_open(
    class: &Class,
    earliest: Option<Timestamp>,
    worker_id: &str,
    worker: Option<&Worker>,
    state: &State,
    now: Timestamp,
) -> bool {
    let fallback = class
        .fallback_after_secs
        .unwrap_or_else(|| state.settings.fallback_after());
    // A task opens at max(created, seen) + fallback + 1 (see `open_from`; none is before
    // any): never before max(earliest, seen) + fallback + 1, never when strict.
    let closed = |seen: Option<Timestamp>| {
        class.strict
            || earliest
                .max(seen)
                .is_some_and(|s| add_secs(s, fallback.saturating_add(1)) > now)
    };
    if let Some(a) = class.assignee.as_deref()
        && a != worker_id
    {
        let w = state.workers.get(a);
        // An offline assignee gives its tasks to anyone at once, unless strict.
        let offline = w.is_some_and(|w| w.status == OFFLINE);
        if (class.strict || !offline) && closed(w.and_then(|w| w.alive_at(now))) {
            return false;
        }
    }
    let caps_ok = match worker {
        Some(w) => w.can_do(&class.requires),
        None => class.requires.is_empty(),
    };
    caps_ok || !closed(capable_seen(&class.requires, state, now))
}

/// Explains, in one line, why nothing is claimable for `worker_id`.
pub(crate) fn nothing_reason(state: &State, worker_id: &str, now: Timestamp) -> String {
    let statuses: HashMap<u64, TaskStatus> = state.tasks.iter().map(|t| (t.id, t.status)).collect();
    let worker = state.workers.get(worker_id);
    let mut counts: HashMap<Ineligible, usize> = HashMap::new();
    // Per reason, the task that falls back to any worker first (then the oldest).
    let mut soonest: HashMap<Ineligible, (Option<Timestamp>, &Task)> = HashMap::new();
    let mut pending = 0;
    for t in state
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Pending)
    {
        pending += 1;
        if let Err(why) = eligibility(t, worker_id, worker, state, &statuses, now) {
            *counts.entry(why).or_insert(0) += 1;
            if matches!(
                why,
                Ineligible::AssignedElsewhere | Ineligible::MissingCapability
            ) {
                let at = fallback(t, state, now).and_then(|f| f.at);
                // Strict tasks (never) sort after every time.
                let key = |a: Option<Timestamp>| (a.is_none(), a);
                soonest
                    .entry(why)
                    .and_modify(|cur| {
                        if key(at) < key(cur.0) {
                            *cur = (at, t);
                        }
                    })
                    .or_insert((at, t));
            }
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
            let mut part = format!("{n} {label}");
            if let Some((_, t)) = soonest.get(&why)
                && let Some(f) = fallback(t, state, now)
            {
                let which = if *n == 1 {
                    String::new()
                } else {
                    format!("task {}: ", t.id)
                };
                part.push_str(&format!(" ({which}{})", f.note));
            }
            parts.push(part);
        }
    }
    format!(
        "{pending} pending task{} but none claimable by {worker_id}: {}",
        if pending == 1 { "" } else { "s" },
        parts.join(", ")
    )
}
