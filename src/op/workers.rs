//! Workers: registering, heartbeats (which extend leases), deregistering (which gives their
//! tasks back), and whether an idle worker should keep its session alive.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::rules::eligibility::{best, nothing_reason};
use crate::rules::leases::{extend_leases, release_at};
use crate::rules::views::{one_line, worker_view};
use crate::rules::{Rule, State, refresh_current_task, requeue_expired};
use crate::time::{Timestamp, format_duration, secs_between};
use crate::validate;
use crate::worker::{ACTIVE, OFFLINE, Worker};

/// Register (or re-register) a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The worker id.
    pub worker: String,
    /// Its capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The Claude Code session it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A sign of life; extends the leases of the worker's tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker id.
    pub worker: String,
}

/// Take a worker offline; its claimed tasks go back to the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deregister {
    /// The worker id.
    pub worker: String,
}

/// Ask whether an idle worker should keep its session alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShouldContinue {
    /// The worker id.
    pub worker: String,
    /// Idle seconds after which it should stop.
    pub max_idle_secs: u64,
}

impl Rule for Register {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let reply = register(st, &self.worker, self.capabilities, self.session_id, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }
}

impl Rule for Heartbeat {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let reply = heartbeat(st, &self.worker, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }
}

impl Rule for Deregister {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let reply = deregister(st, &self.worker, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }
}

impl Rule for ShouldContinue {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        // Lapsed claims first: a task taken back now is work for this worker.
        requeue_expired(st, now);
        should_continue(st, &self.worker, self.max_idle_secs, now)
    }
}

/// Registers a worker, or refreshes an existing one (capabilities replaced, idle clock reset).
fn register(
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
fn heartbeat(state: &mut State, id: &str, now: Timestamp) -> Result<Reply> {
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

/// Takes a worker offline and returns its claimed tasks to the queue.
fn deregister(state: &mut State, id: &str, now: Timestamp) -> Result<Reply> {
    validate::name("worker id", id)?;
    if !state.workers.contains_key(id) {
        return Err(Error::Invalid(format!(
            "no worker {id:?} is registered; see `vine workers`"
        )));
    }
    let held = state.held_by(id);
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
fn should_continue(
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
    if !state.workers.contains_key(id) {
        return Ok(decision(false, not_registered(id), None));
    }
    if let Some(t) = state.first_held(id).map(|i| &state.tasks[i]) {
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
    match idle(state, id, max_idle_secs, now) {
        Idle::Below { reason, .. } => {
            touch(state, id, now);
            Ok(decision(true, reason, None))
        }
        Idle::Over { reason, offline } => {
            go_offline(state, id, offline, now);
            Ok(decision(false, reason, None))
        }
    }
}

/// The idle time of a registered worker with nothing to claim, against its limit.
pub(crate) enum Idle {
    /// Below the limit: it may wait for work.
    Below {
        /// One line, e.g. "idle for 3s of 10m; waiting for work (no pending tasks)".
        reason: String,
        /// Seconds until the limit.
        left_secs: u64,
    },
    /// At or past the limit: it should stop.
    Over {
        /// One line saying so.
        reason: String,
        /// Its `offline_reason` once it stops, e.g. "idle for 10m".
        offline: String,
    },
}

/// How long worker `id` (registered, with nothing to claim) has been idle against
/// `max_idle_secs`, and why there is nothing to claim. Changes nothing.
pub(crate) fn idle(state: &State, id: &str, max_idle_secs: u64, now: Timestamp) -> Idle {
    let idle = state
        .workers
        .get(id)
        .and_then(Worker::idle_since)
        .map_or(u64::MAX, |t| secs_between(t, now));
    let why_none = nothing_reason(state, id, now);
    if idle < max_idle_secs {
        return Idle::Below {
            reason: format!(
                "idle for {} of {}; waiting for work ({why_none})",
                format_duration(idle),
                format_duration(max_idle_secs)
            ),
            left_secs: max_idle_secs - idle,
        };
    }
    let idle_text = if idle == u64::MAX {
        "ever".to_string()
    } else {
        format_duration(idle)
    };
    Idle::Over {
        reason: format!(
            "idle for {idle_text} (limit {}) with nothing to claim ({why_none}); {id} is now offline",
            format_duration(max_idle_secs)
        ),
        offline: format!("idle for {idle_text}"),
    }
}

/// The reason a worker that is not on the board is given.
pub(crate) fn not_registered(id: &str) -> String {
    format!(
        "worker {id} is not registered on this board; register with `vine register --worker {id}`"
    )
}

/// Takes worker `id` offline for `why` (it stopped by itself).
pub(crate) fn go_offline(state: &mut State, id: &str, why: String, now: Timestamp) {
    if let Some(w) = state.workers.get_mut(id) {
        w.status = OFFLINE.into();
        w.offline_reason = Some(why);
        w.last_heartbeat = Some(now);
        state.dirty.workers = true;
    }
}

/// Marks the worker alive (a should-continue call is a sign of life).
pub(crate) fn touch(state: &mut State, id: &str, now: Timestamp) {
    if let Some(w) = state.workers.get_mut(id) {
        w.last_heartbeat = Some(now);
        if w.status != ACTIVE {
            w.status = ACTIVE.into();
            w.offline_reason = None;
        }
        state.dirty.workers = true;
    }
}
