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
    /// The open question it waits on (`vine ask --wait`): while it waits, its tasks are not
    /// taken back, whether or not it shows signs of life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn active() -> String {
    ACTIVE.to_string()
}

/// A question a worker waits on, and until when it waits at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The question's sequence number in the message log.
    pub question: u64,
    /// When the wait ends without an answer (the asker's timeout, on the board's clock).
    #[serde(with = "crate::time::ts")]
    pub until: Timestamp,
}

/// What a worker is doing, derived from its entry, its tasks and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Holds at least one task and heartbeats.
    Working,
    /// Holds no task and heartbeats.
    Idle,
    /// Waits for the answer to a question (`vine ask --wait`); keeps its tasks meanwhile.
    Waiting,
    /// No heartbeat for longer than the board's stale limit.
    Stale,
    /// Deregistered or stopped.
    Offline,
}

impl WorkerState {
    /// Every state, busiest first.
    pub const ALL: [WorkerState; 5] = [
        WorkerState::Working,
        WorkerState::Idle,
        WorkerState::Waiting,
        WorkerState::Stale,
        WorkerState::Offline,
    ];

    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Working => "working",
            WorkerState::Idle => "idle",
            WorkerState::Waiting => "waiting",
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
            waiting: None,
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

    /// The question this worker waits on at `now`, if its wait has not ended.
    pub fn waits_on(&self, now: Timestamp) -> Option<u64> {
        self.waiting.filter(|w| w.until > now).map(|w| w.question)
    }

    /// The last time this worker counts as alive at `now`: now while it waits on a question
    /// (a parked worker shows no signs of life but is not gone), else its last sign of life.
    pub fn alive_at(&self, now: Timestamp) -> Option<Timestamp> {
        if self.waits_on(now).is_some() {
            Some(now)
        } else {
            self.last_seen()
        }
    }

    /// True if the worker showed no sign of life for longer than `stale_after_secs` (a worker
    /// without any recorded time counts as stale; one waiting on a question never does).
    pub fn is_stale(&self, stale_after_secs: u64, now: Timestamp) -> bool {
        match self.alive_at(now) {
            Some(t) => secs_between(t, now) > stale_after_secs,
            None => true,
        }
    }

    /// The state of this worker at `now`, given whether it holds a task.
    pub fn state(&self, holds_task: bool, stale_after_secs: u64, now: Timestamp) -> WorkerState {
        if self.status == OFFLINE {
            return WorkerState::Offline;
        }
        if self.waits_on(now).is_some() {
            return WorkerState::Waiting;
        }
        if self.is_stale(stale_after_secs, now) {
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
