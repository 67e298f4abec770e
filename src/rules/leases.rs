//! Leases and taking claims back: a claim lapses when its lease expires or its holder shows no
//! sign of life for the stale limit (never while the holder waits for an answer); heartbeats
//! and answers extend leases. Also how an attempt ends (retry after backoff, at once, or fail
//! for good) and how a claim is given back.

use super::{State, refresh_current_task};
use crate::settings::Settings;
use crate::task::{Task, TaskStatus};
use crate::time::{Timestamp, add_secs, format_duration, secs_between};

/// The retry delay after `attempts` attempts: base, doubling, capped.
pub fn backoff_secs(settings: &Settings, attempts: u32) -> u64 {
    let shift = attempts.saturating_sub(1).min(40);
    settings
        .retry_backoff_secs
        .saturating_mul(1u64 << shift)
        .min(settings.retry_backoff_max_secs)
}

/// What happens to a task after an attempt that did not complete it (while retries remain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Again {
    /// Back to pending after the retry delay (a failed attempt).
    AfterBackoff,
    /// Back to pending, claimable at once (taken back from a dead worker: not the task's fault).
    AtOnce,
    /// Failed for good (`--no-retry`).
    Never,
}

/// Ends the current attempt of a claimed task: back to pending (after a delay, or at once),
/// or failed when out of retries.
pub(crate) fn end_attempt(
    t: &mut Task,
    error: String,
    again: Again,
    settings: &Settings,
    now: Timestamp,
) {
    let max = t.max_retries.unwrap_or(settings.max_retries);
    t.last_error = Some(error);
    t.claimed_by = None;
    t.claimed_at = None;
    t.lease_expires_at = None;
    if again != Again::Never && t.attempts <= max {
        t.status = TaskStatus::Pending;
        t.not_before = match again {
            Again::AfterBackoff => Some(add_secs(now, backoff_secs(settings, t.attempts))),
            Again::AtOnce | Again::Never => None,
        };
    } else {
        t.status = TaskStatus::Failed;
        t.not_before = None;
        t.ended_at = Some(now);
    }
}

/// Puts the claimed task at `i` back to pending, undoing its attempt count.
pub(crate) fn release_at(state: &mut State, i: usize) {
    state.change(i, |t, _| {
        t.status = TaskStatus::Pending;
        t.claimed_by = None;
        t.claimed_at = None;
        t.lease_expires_at = None;
        t.attempts = t.attempts.saturating_sub(1);
    });
}

/// Starts the leases of `id`'s tasks again from `now`: always when `restart`, otherwise (a
/// heartbeat) only when that moves a lease by a tenth of its length or more.
pub(crate) fn extend_leases(state: &mut State, id: &str, now: Timestamp, restart: bool) {
    let default_lease = state.settings.lease_secs;
    for i in state.held_by(id) {
        let t = &state.tasks[i];
        let lease = t.lease_secs.unwrap_or(default_lease);
        let new_end = add_secs(now, lease);
        let due = match t.lease_expires_at {
            None => true,
            Some(end) => {
                let moved_ms = (new_end - end).num_milliseconds();
                let tenth_ms = i64::try_from(lease.saturating_mul(100)).unwrap_or(i64::MAX);
                restart || end <= now || moved_ms >= tenth_ms
            }
        };
        if due {
            state.change(i, |t, _| t.lease_expires_at = Some(new_end));
        }
    }
}

/// When the claim on `t` lapses: its lease, or (for claims the original plan made) claim time + lease.
fn lease_end(t: &Task, settings: &Settings) -> Option<Timestamp> {
    t.lease_expires_at.or_else(|| {
        t.claimed_at
            .map(|c| add_secs(c, t.lease_secs.unwrap_or(settings.lease_secs)))
    })
}

/// Why a claim is taken back from its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakeBack {
    /// The lease ran out without a heartbeat extending it.
    Lease,
    /// The holder showed no sign of life for longer than the stale limit (this many seconds).
    Stale(u64),
}

/// Whether the claim on `t` must be taken back at `now`, and why.
///
/// Never while its holder waits on an open question (`vine ask --wait`). Otherwise when the
/// lease has expired, or when the holder is stale. A holder without a worker entry (boards of
/// the original plan) or without any recorded time is judged by its lease only.
fn take_back_cause(t: &Task, state: &State, now: Timestamp) -> Option<TakeBack> {
    if t.status != TaskStatus::InProgress {
        return None;
    }
    let holder = t.claimed_by.as_deref().and_then(|w| state.workers.get(w));
    if holder.is_some_and(|w| w.waits_on(now).is_some()) {
        return None;
    }
    if lease_end(t, &state.settings).is_some_and(|end| end <= now) {
        return Some(TakeBack::Lease);
    }
    let seen = holder.and_then(|w| w.last_seen())?;
    let silent = secs_between(seen, now);
    (silent > state.settings.stale_after_secs).then_some(TakeBack::Stale(silent))
}

/// The `last_error` of a claim taken back from `who`.
fn take_back_error(cause: TakeBack, who: &str, settings: &Settings) -> String {
    match cause {
        TakeBack::Lease => lease_error(who),
        TakeBack::Stale(silent) => format!(
            "{}{} (stale limit {})",
            stale_error_prefix(who),
            format_duration(silent),
            format_duration(settings.stale_after_secs)
        ),
    }
}

fn lease_error(who: &str) -> String {
    format!("lease expired while claimed by {who}")
}

fn stale_error_prefix(who: &str) -> String {
    format!("taken back from {who}, who showed no sign of life for ")
}

/// Why `worker`'s claim on `t` was taken back ("when its lease expired", ...), read from the
/// task's last error; None if it was not taken back from `worker`.
pub(crate) fn taken_back_why(t: &Task, worker: &str, settings: &Settings) -> Option<String> {
    let e = t.last_error.as_deref()?;
    if e == lease_error(worker) {
        Some("when its lease expired".into())
    } else if e.starts_with(&stale_error_prefix(worker)) {
        Some(format!(
            "because {worker} showed no sign of life for longer than the stale limit ({}); \
             a worker must heartbeat at least that often (`vine heartbeat`)",
            format_duration(settings.stale_after_secs)
        ))
    } else {
        None
    }
}

/// Takes back every claim whose lease has expired or whose holder is stale (see
/// `take_back_cause`) and returns their ids.
///
/// Each such task loses the attempt (it counts towards max retries, so a task that kills every
/// worker still ends failed) but is claimable again at once: a dead worker is not the task's
/// failure. Applied lazily by every write, by `requeue-stale`, and in memory by reads.
pub fn requeue_expired(state: &mut State, now: Timestamp) -> Vec<u64> {
    let causes: Vec<(usize, TakeBack)> = state
        .in_progress()
        .into_iter()
        .filter_map(|i| take_back_cause(&state.tasks[i], state, now).map(|c| (i, c)))
        .collect();
    if causes.is_empty() {
        return Vec::new();
    }
    let mut ids = Vec::with_capacity(causes.len());
    let mut holders = Vec::with_capacity(causes.len());
    for (i, cause) in causes {
        let (id, who) = state.change(i, |t, settings| {
            let who = t.claimed_by.clone().unwrap_or_else(|| "?".into());
            let error = take_back_error(cause, &who, settings);
            end_attempt(t, error, Again::AtOnce, settings, now);
            (t.id, who)
        });
        ids.push(id);
        holders.push(who);
    }
    // The claims leave the queue's record: persist the merged worker facts.
    state.dirty.workers = true;
    for w in holders {
        refresh_current_task(state, &w);
    }
    ids
}
