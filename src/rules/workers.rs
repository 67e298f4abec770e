//! Worker registration, heartbeats, and whether an idle worker should keep going.

use super::claim::{best, nothing_reason};
use super::tasks::release_at;
use super::views::worker_view;
use super::{State, refresh_current_task};
use crate::error::{Error, Result};
use crate::op::Reply;
use crate::task::TaskStatus;
use crate::time::{Timestamp, add_secs, format_duration, secs_between};
use crate::validate;
use crate::worker::{ACTIVE, OFFLINE, Waiting, Worker};

/// Registers a worker, or refreshes an existing one (capabilities replaced, idle clock reset).
pub(crate) fn register(
    state: &mut State,
    id: &str,
    capabilities: Vec<String>,
    session_id: Option<String>,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("worker id", id)?;
    validate::list_len("capabilities", &capabilities)?;
    for c in &capabilities {
        validate::name("capability", c)?;
    }
    if let Some(s) = &session_id {
        validate::size("the session id", s, validate::MAX_PATH)?;
    }
    let w = state
        .workers
        .entry(id.to_string())
        .or_insert_with(|| Worker::new(Vec::new(), now));
    w.capabilities = capabilities;
    w.status = ACTIVE.into();
    w.offline_reason = None;
    w.registered_at = Some(now);
    w.last_heartbeat = Some(now);
    if session_id.is_some() {
        w.session_id = session_id;
    }
    state.dirty.workers = true;
    refresh_current_task(state, id);
    Ok(Reply::Worker {
        worker: worker_view(state, id, now),
        released: vec![],
    })
}

/// Records a sign of life and extends the leases of the worker's tasks.
///
/// A lease is only rewritten when that moves it by a tenth of its length or more, so frequent
/// heartbeats (one per tool call) cost a soft write of the worker file, not a durable queue write.
pub(crate) fn heartbeat(state: &mut State, id: &str, now: Timestamp) -> Result<Reply> {
    validate::name("worker id", id)?;
    extend_leases(state, id, now, false);
    let w = state
        .workers
        .entry(id.to_string())
        .or_insert_with(|| Worker::new(Vec::new(), now));
    w.last_heartbeat = Some(now);
    if w.status != ACTIVE {
        w.status = ACTIVE.into();
        w.offline_reason = None;
    }
    state.dirty.workers = true;
    refresh_current_task(state, id);
    Ok(Reply::Worker {
        worker: worker_view(state, id, now),
        released: vec![],
    })
}

/// Starts the leases of `id`'s tasks again from `now`: always when `restart`, otherwise (a
/// heartbeat) only when that moves a lease by a tenth of its length or more.
pub(crate) fn extend_leases(state: &mut State, id: &str, now: Timestamp, restart: bool) {
    let default_lease = state.settings.lease_secs;
    for t in state.tasks.iter_mut() {
        if t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(id) {
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
                t.lease_expires_at = Some(new_end);
                state.dirty.tasks = true;
                state.touched.insert(t.id);
            }
        }
    }
}

/// Records that worker `id` waits for the answer to `question` until `until`: its tasks are
/// not taken back meanwhile. Only a registered worker waits; the ask is a sign of life.
pub(crate) fn start_wait(
    state: &mut State,
    id: &str,
    question: u64,
    until: Timestamp,
    now: Timestamp,
) {
    if let Some(w) = state.workers.get_mut(id) {
        w.waiting = Some(Waiting { question, until });
        w.last_heartbeat = Some(now);
        state.dirty.workers = true;
    }
}

/// Ends every wait on `question` (it has been answered). A worker still waiting then gets its
/// clocks restarted: fresh leases, and the answer counts as its sign of life, so a worker
/// parked for hours is not taken over the moment its answer arrives.
pub(crate) fn answered(state: &mut State, question: u64, now: Timestamp) {
    let waiting: Vec<(String, bool)> = state
        .workers
        .iter()
        .filter(|(_, w)| w.waiting.is_some_and(|x| x.question == question))
        .map(|(id, w)| (id.clone(), w.waits_on(now).is_some()))
        .collect();
    for (id, still) in waiting {
        if still {
            extend_leases(state, &id, now, true);
        }
        if let Some(w) = state.workers.get_mut(&id) {
            w.waiting = None;
            if still {
                w.last_heartbeat = Some(now);
            }
            state.dirty.workers = true;
        }
    }
}

/// Ends `id`'s wait, if it has one (its own claim, complete, fail or release: it is back).
pub(crate) fn end_wait(state: &mut State, id: &str) {
    if let Some(w) = state.workers.get_mut(id)
        && w.waiting.take().is_some()
    {
        state.dirty.workers = true;
    }
}

/// Takes a worker offline and returns its claimed tasks to the queue.
pub(crate) fn deregister(state: &mut State, id: &str, now: Timestamp) -> Result<Reply> {
    validate::name("worker id", id)?;
    if !state.workers.contains_key(id) {
        return Err(Error::Invalid(format!(
            "no worker {id:?} is registered; see `vine workers`"
        )));
    }
    let held: Vec<usize> = (0..state.tasks.len())
        .filter(|&i| {
            let t = &state.tasks[i];
            t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(id)
        })
        .collect();
    let released: Vec<u64> = held.iter().map(|&i| state.tasks[i].id).collect();
    for i in held {
        release_at(state, i);
    }
    if let Some(w) = state.workers.get_mut(id) {
        w.status = OFFLINE.into();
        w.offline_reason = Some("deregistered".into());
        w.last_heartbeat = Some(now);
        w.waiting = None;
    }
    state.dirty.workers = true;
    refresh_current_task(state, id);
    Ok(Reply::Worker {
        worker: worker_view(state, id, now),
        released,
    })
}

/// Decides whether an idle worker should keep its session alive; marks it offline when not.
pub(crate) fn should_continue(
    state: &mut State,
    id: &str,
    max_idle_secs: u64,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("worker id", id)?;
    let decision = |keep_going: bool, reason: String, task: Option<u64>| Reply::Decision {
        keep_going,
        reason,
        task,
    };
    let Some(worker) = state.workers.get(id) else {
        return Ok(decision(
            false,
            format!(
                "worker {id} is not registered on this board; register with `vine register --worker {id}`"
            ),
            None,
        ));
    };
    let idle_since = worker.idle_since();
    if let Some(t) = state
        .tasks
        .iter()
        .find(|t| t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(id))
    {
        let reason = format!("{id} holds task {}: {}", t.id, one_line(&t.description));
        let task = Some(t.id);
        touch(state, id, now);
        return Ok(decision(true, reason, task));
    }
    if let Some(i) = best(state, id, now) {
        let t = &state.tasks[i];
        let reason = format!(
            "task {} is ready for {id}: {}",
            t.id,
            one_line(&t.description)
        );
        let task = Some(t.id);
        touch(state, id, now);
        return Ok(decision(true, reason, task));
    }
    let idle = idle_since.map_or(u64::MAX, |t| secs_between(t, now));
    let why_none = nothing_reason(state, id, now);
    if idle < max_idle_secs {
        touch(state, id, now);
        return Ok(decision(
            true,
            format!(
                "idle for {} of {}; waiting for work ({why_none})",
                format_duration(idle),
                format_duration(max_idle_secs)
            ),
            None,
        ));
    }
    let idle_text = if idle == u64::MAX {
        "ever".to_string()
    } else {
        format_duration(idle)
    };
    if let Some(w) = state.workers.get_mut(id) {
        w.status = OFFLINE.into();
        w.offline_reason = Some(format!("idle for {idle_text}"));
        w.last_heartbeat = Some(now);
        state.dirty.workers = true;
    }
    Ok(decision(
        false,
        format!(
            "idle for {idle_text} (limit {}) with nothing to claim ({why_none}); {id} is now offline",
            format_duration(max_idle_secs)
        ),
        None,
    ))
}

/// Marks the worker alive (a should-continue call is a sign of life).
fn touch(state: &mut State, id: &str, now: Timestamp) {
    if let Some(w) = state.workers.get_mut(id) {
        w.last_heartbeat = Some(now);
        if w.status != ACTIVE {
            w.status = ACTIVE.into();
            w.offline_reason = None;
        }
        state.dirty.workers = true;
    }
}

/// A description folded onto one line (files written by others may hold newlines).
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
