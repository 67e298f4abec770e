//! A worker's entry in `worker-status.json`, and the state derived from it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task::null_default;
use crate::time::{Timestamp, opt_ts, secs_between};

/// The stored status of a worker that is registered and running.
pub const ACTIVE: &str = "active";
/// The stored status of a worker that deregistered or was told to stop.
pub const OFFLINE: &str = "offline";

/// One worker of `worker-status.json`. Unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// `active` or `offline` (what the original plan called status).
    #[serde(default = "active")]
    pub status: String,
    /// What this worker can do; tasks may require some of them.
    #[serde(default, deserialize_with = "null_default")]
    pub capabilities: Vec<String>,
    /// When it registered.
    #[serde(default, with = "opt_ts")]
    pub registered_at: Option<Timestamp>,
    /// Its last sign of life.
    #[serde(default, with = "opt_ts")]
    pub last_heartbeat: Option<Timestamp>,
    /// When it last claimed a task.
    #[serde(default, with = "opt_ts")]
    pub last_task_claimed: Option<Timestamp>,
    /// When it last completed a task.
    #[serde(default, with = "opt_ts")]
    pub last_task_completed: Option<Timestamp>,
    /// The task it most recently claimed and still holds.
    #[serde(default)]
    pub current_task: Option<u64>,
    /// The Claude Code session id it runs in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Why it went offline, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_reason: Option<String>,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn active() -> String {
    ACTIVE.to_string()
}

/// What a worker is doing, derived from its entry, its tasks and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Holds at least one task and heartbeats.
    Working,
    /// Holds no task and heartbeats.
    Idle,
    /// No heartbeat for longer than the board's stale limit.
    Stale,
    /// Deregistered or stopped.
    Offline,
}

impl WorkerState {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Working => "working",
            WorkerState::Idle => "idle",
            WorkerState::Stale => "stale",
            WorkerState::Offline => "offline",
        }
    }
}

impl Worker {
    /// A freshly registered worker.
    pub fn new(capabilities: Vec<String>, now: Timestamp) -> Self {
        Worker {
            status: ACTIVE.into(),
            capabilities,
            registered_at: Some(now),
            last_heartbeat: Some(now),
            last_task_claimed: None,
            last_task_completed: None,
            current_task: None,
            session_id: None,
            offline_reason: None,
            extra: Map::new(),
        }
    }

    /// The last time this worker showed any sign of life.
    pub fn last_seen(&self) -> Option<Timestamp> {
        [
            self.last_heartbeat,
            self.last_task_claimed,
            self.last_task_completed,
            self.registered_at,
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// The state of this worker at `now`, given whether it holds a task.
    pub fn state(&self, holds_task: bool, stale_after_secs: u64, now: Timestamp) -> WorkerState {
        if self.status == OFFLINE {
            return WorkerState::Offline;
        }
        let stale = match self.last_seen() {
            Some(t) => secs_between(t, now) > stale_after_secs,
            None => true,
        };
        if stale {
            WorkerState::Stale
        } else if holds_task {
            WorkerState::Working
        } else {
            WorkerState::Idle
        }
    }

    /// When this worker's idle time started: the later of last claim, last completion and registration.
    pub fn idle_since(&self) -> Option<Timestamp> {
        [
            self.last_task_claimed,
            self.last_task_completed,
            self.registered_at,
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// True if the worker has every capability in `required`.
    pub fn can_do(&self, required: &[String]) -> bool {
        required.iter().all(|c| self.capabilities.contains(c))
    }
}
