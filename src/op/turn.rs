//! A worker's turn ended (its Stop hook ran): what it does next, decided in one op. It is
//! handed the task claimed for it, reminded of the task it holds (or, on a second turn-end
//! with no progress, that attempt is failed first), told to wait while it has been idle for
//! less than its limit, or let go.
//!
//! The session's own state (its tool calls, the last reminder it was given) lives beside the
//! session, not on the board: the hook passes what the rule needs, and the rule stays pure.
//!
//! The op may carry a bounded wait (`wait_secs`): while the answer is [`Next::Wait`], the store
//! holds the op and applies it again whenever the board changes (a file-change wait on a local
//! board, a long-poll on `vine serve`), and at least every [`RECHECK`] for what time alone
//! changes (a backoff ending, a lease expiring), until there is something else to answer or
//! the wait is over.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::workers::{Idle, go_offline, idle, not_registered, touch};
use super::{Claim, Fail};
use crate::error::Result;
use crate::reply::{Next, Reply, Turn};
use crate::rules::{Rule, State, replay, requeue_expired};
use crate::task::Task;
use crate::time::{Timestamp, secs_between};
use crate::validate;
use crate::worker::{ACTIVE, OFFLINE};

/// A worker's turn ended: hand it a task, remind it, let it wait, or let it go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnEnded {
    /// The worker id.
    pub worker: String,
    /// Idle seconds after which it is let go (and taken offline).
    pub max_idle_secs: u64,
    /// Tool calls its session has made so far (its progress, counted by the PostToolUse hook).
    #[serde(default)]
    pub tool_calls: u64,
    /// The last reminder its session was given, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded: Option<Reminder>,
    /// How long the store may hold the op for work to arrive before it answers (seconds; 0:
    /// answer at once; at most [`MAX_WAIT_SECS`]). A store holding it applies it again with
    /// the time left (see [`TurnEnded::with_wait_left`]).
    #[serde(default)]
    pub wait_secs: u64,
    /// The worker runs under `vine pool`, which hands out tasks itself: the session is never
    /// handed another task or kept waiting. A held task is reminded of (then its attempt
    /// failed) as usual, except while the worker waits on a question about it: the session
    /// is let go, parked, and the pool resumes it with the answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pooled: bool,
}

/// A reminder of a held task: which task and attempt, and how many tool calls the session had
/// made when it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// The task.
    pub task: u64,
    /// Its attempt.
    pub attempt: u32,
    /// The session's tool calls when the reminder was given.
    pub tool_calls: u64,
}

/// The error a stalled attempt is failed with.
pub const STALLED: &str = "the worker ended its turn twice without completing the task";

/// The longest wait a store grants one op (seconds).
pub const MAX_WAIT_SECS: u64 = 3600;

/// While it waits, a store applies the op again at least this often, for what time alone
/// changes (a backoff ending, a lease expiring, a specialist absent long enough).
pub const RECHECK: Duration = Duration::from_secs(2);

impl TurnEnded {
    /// True if the session was reminded of this very attempt of held task `t` and has made no
    /// tool call since: its attempt is failed.
    pub fn stalled(&self, t: &Task) -> bool {
        self.reminded.is_some_and(|r| {
            r.task == t.id && r.attempt == t.attempts && r.tool_calls == self.tool_calls
        })
    }

    /// The wait this op asks for, within [`MAX_WAIT_SECS`].
    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_secs.min(MAX_WAIT_SECS))
    }

    /// The op as a store holding it applies it `left` before its wait is over (`wait_secs`
    /// counts down, in whole seconds rounded up; 0 for the last look, which gives the final
    /// answer).
    pub fn with_wait_left(&self, left: Duration) -> TurnEnded {
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        TurnEnded {
            wait_secs: secs,
            ..self.clone()
        }
    }
}

/// How much longer a store may hold a waiting op after `outcome`, given `left` of its wait:
/// `None` when the outcome is the answer (anything but a wait, or the wait is over). The idle
/// limit bounds the wait, so that the worker is let go when it is reached.
pub fn wait_more(outcome: &Result<Reply>, left: Duration) -> Option<Duration> {
    match outcome {
        Ok(Reply::Turn(Turn {
            next: Next::Wait { idle_left_secs, .. },
            ..
        })) => Some(left.min(Duration::from_secs(*idle_left_secs))).filter(|d| !d.is_zero()),
        _ => None,
    }
}

fn answer(next: Next, failed: Option<u64>) -> Reply {
    Reply::Turn(Turn { next, failed })
}

impl Rule for TurnEnded {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        validate::name("worker id", &self.worker)?;
        // Lapsed claims first: a task taken back now is work for this worker.
        requeue_expired(st, now);
        let me = self.worker.as_str();
        let deregistered = st.workers.get(me).is_some_and(|w| {
            w.status == OFFLINE && w.offline_reason.as_deref() == Some("deregistered")
        });
        if deregistered {
            let reason = format!("{me} was deregistered; the session may end");
            return Ok(answer(Next::LetGo { reason }, None));
        }
        let mut failed = None;
        if let Some(t) = st.first_held(me).map(|i| &st.tasks[i]) {
            if self.pooled
                && let Some(q) = st.workers.get(me).and_then(|w| w.waits_on(now))
            {
                let reason = format!(
                    "{me} waits on question #{q} about task {}: parked until the answer comes",
                    t.id
                );
                return Ok(answer(Next::LetGo { reason }, None));
            }
            if !self.stalled(t) {
                return Ok(answer(Next::Remind { task: t.clone() }, None));
            }
            let (task, attempt) = (t.id, t.attempts);
            Fail {
                task,
                worker: me.to_string(),
                attempt: Some(attempt),
                error: STALLED.into(),
                no_retry: false,
            }
            .apply(st, now)?;
            failed = Some(task);
        }
        if self.pooled {
            // The pool decides what the slot does next (and in which session).
            let reason = format!("{me} runs under vine pool, which hands out its next task");
            return Ok(answer(Next::LetGo { reason }, failed));
        }
        let claim = Claim {
            worker: me.to_string(),
        };
        if let Reply::Claimed { claim: Some(c), .. } = claim.apply(st, now)? {
            return Ok(answer(Next::HandOver { claim: c }, failed));
        }
        if !st.workers.contains_key(me) {
            // Not on the board (its registration failed?): it may wait for work to claim,
            // which registers it; with none, it is let go once the wait is over.
            let reason = not_registered(me);
            let next = match self.wait_secs {
                0 => Next::LetGo { reason },
                left => Next::Wait {
                    reason,
                    idle_left_secs: left,
                },
            };
            return Ok(answer(next, failed));
        }
        Ok(match idle(st, me, self.max_idle_secs, now) {
            Idle::Below { reason, left_secs } => {
                keep_alive(st, me, now);
                let idle_left_secs = left_secs;
                answer(
                    Next::Wait {
                        reason,
                        idle_left_secs,
                    },
                    failed,
                )
            }
            Idle::Over { reason, offline } => {
                go_offline(st, me, offline, now);
                answer(Next::LetGo { reason }, failed)
            }
        })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        match replay::claimed(st, &self.worker, key)? {
            Reply::Claimed { claim: Some(c), .. } => {
                Some(answer(Next::HandOver { claim: c }, None))
            }
            _ => None,
        }
    }
}

/// A waiting worker is alive: its sign of life is renewed when it is older than a third of the
/// stale limit (as often as a keepalive beats), not at every look, so that a store applying a
/// waiting op again and again writes nothing most of the time.
fn keep_alive(st: &mut State, id: &str, now: Timestamp) {
    let every = (st.settings.stale_after_secs / 3).max(1);
    let fresh = st.workers.get(id).is_some_and(|w| {
        w.status == ACTIVE
            && w.last_heartbeat
                .is_some_and(|t| secs_between(t, now) < every)
    });
    if !fresh {
        touch(st, id, now);
    }
}

#[cfg(test)]
#[path = "turn_tests.rs"]
mod tests;
