//! `sessions.json`: the Claude sessions that worked on the board — which worker ran each, the
//! tasks it did in order, every run with its turns, tokens and cost, why the session was
//! started fresh or resumed, and why it ended. Written by `vine pool` (ops `record-run` and
//! `end-session`), read by `vine sessions`, `vine show` (a task's cost) and the control room.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::{Timestamp, ts};

/// Tokens a run used, as Claude's result reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Input tokens not read from or written to the prompt cache.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Every input token, cached or not.
    pub fn input_total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// The sum of two runs' usage.
    pub fn plus(self, o: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(o.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(o.cache_read_input_tokens),
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// A run of it is going on.
    Active,
    /// Between runs: it may be resumed.
    Idle,
    /// It will not be resumed.
    Ended,
}

/// One `claude -p` run of a session, on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRun {
    /// The task it worked on.
    pub task: u64,
    /// The task's attempt.
    pub attempt: u32,
    /// When the run ended (was recorded).
    #[serde(with = "ts")]
    pub at: Timestamp,
    /// True if the run resumed the session (`--resume`), false for its first run.
    pub resumed: bool,
    /// Why the session was started or resumed for this run.
    pub why: String,
    /// How the run ended: Claude's result subtype (`success`, `error_max_turns`, ...).
    pub outcome: String,
    /// Model turns.
    pub turns: u32,
    /// Cost in US dollars, as Claude Code computed it.
    pub cost_usd: f64,
    /// Tokens.
    pub usage: Usage,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The request key of the `record-run` that recorded it, so a retry is not counted twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
}

/// A Claude session's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Claude's session id.
    pub id: String,
    /// The worker it runs for.
    pub worker: String,
    /// Where it is in its life.
    pub state: SessionState,
    /// When its first run was recorded.
    #[serde(with = "ts")]
    pub created_at: Timestamp,
    /// When it was last active.
    #[serde(with = "ts")]
    pub last_active_at: Timestamp,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
    /// Its runs, in order.
    #[serde(default)]
    pub runs: Vec<SessionRun>,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionRecord {
    /// The tasks it worked on, in order, each once.
    pub fn tasks(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for r in &self.runs {
            if out.last() != Some(&r.task) && !out.contains(&r.task) {
                out.push(r.task);
            }
        }
        out
    }

    /// Its totals over every run.
    pub fn totals(&self) -> Totals {
        Totals::of(self.runs.iter())
    }

    /// How often it was reused: the task attempts it started, and how many of those it
    /// started after an earlier one (by resuming the session rather than starting afresh).
    pub fn reuse(&self) -> Reuse {
        let mut reuse = Reuse::default();
        let mut last: Option<(u64, u32)> = None;
        for r in &self.runs {
            let this = (r.task, r.attempt);
            if last != Some(this) {
                reuse.task_starts += 1;
                if last.is_some() {
                    reuse.reused += 1;
                }
            }
            last = Some(this);
        }
        reuse
    }
}

/// Session reuse: of the task attempts the sessions started, how many ran in a session that
/// had already worked on another one (resumed with `--resume` instead of a fresh session).
/// A run that resumes the same attempt (after a parked question, or a reminder) is not a
/// start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reuse {
    /// Task attempts started.
    pub task_starts: u64,
    /// Of those, started in a session that had done an earlier one.
    pub reused: u64,
}

impl Reuse {
    /// The sum of two counts.
    pub fn plus(self, o: Reuse) -> Reuse {
        Reuse {
            task_starts: self.task_starts.saturating_add(o.task_starts),
            reused: self.reused.saturating_add(o.reused),
        }
    }

    /// The share of task starts that reused a session (none without a start).
    pub fn rate(&self) -> Option<f64> {
        (self.task_starts > 0).then(|| self.reused as f64 / self.task_starts as f64)
    }
}

/// Sums over runs: what a session, a task, a worker or the board has spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Runs.
    pub runs: u32,
    /// Model turns.
    pub turns: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// Tokens.
    pub usage: Usage,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl Totals {
    /// The sum of two totals.
    pub fn plus(self, o: Totals) -> Totals {
        Totals {
            runs: self.runs.saturating_add(o.runs),
            turns: self.turns.saturating_add(o.turns),
            cost_usd: self.cost_usd + o.cost_usd,
            usage: self.usage.plus(o.usage),
            duration_ms: self.duration_ms.saturating_add(o.duration_ms),
        }
    }

    /// The totals of `runs`.
    pub fn of<'a>(runs: impl Iterator<Item = &'a SessionRun>) -> Totals {
        runs.fold(Totals::default(), |t, r| Totals {
            runs: t.runs.saturating_add(1),
            turns: t.turns.saturating_add(u64::from(r.turns)),
            cost_usd: t.cost_usd + r.cost_usd,
            usage: t.usage.plus(r.usage),
            duration_ms: t.duration_ms.saturating_add(r.duration_ms),
        })
    }
}

/// What the runs of every session spent on task `id`.
pub fn task_totals(sessions: &[SessionRecord], id: u64) -> Totals {
    Totals::of(
        sessions
            .iter()
            .flat_map(|s| s.runs.iter())
            .filter(|r| r.task == id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(task: u64, attempt: u32, resumed: bool) -> SessionRun {
        SessionRun {
            task,
            attempt,
            at: crate::time::now(),
            resumed,
            why: String::new(),
            outcome: "success".into(),
            turns: 1,
            cost_usd: 0.0,
            usage: Usage::default(),
            duration_ms: 0,
            request_key: None,
        }
    }

    #[test]
    fn reuse_counts_task_starts_not_resumes_of_the_same_attempt() {
        let s = SessionRecord {
            id: "s".into(),
            worker: "w".into(),
            state: SessionState::Idle,
            created_at: crate::time::now(),
            last_active_at: crate::time::now(),
            ended_reason: None,
            // Task 1, parked and resumed; task 2 in the same session; task 1 again (a retry).
            runs: vec![
                run(1, 1, false),
                run(1, 1, true),
                run(2, 1, true),
                run(1, 2, true),
            ],
            extra: Map::new(),
        };
        let r = s.reuse();
        assert_eq!((r.task_starts, r.reused), (3, 2));
        assert_eq!(r.rate(), Some(2.0 / 3.0));
        assert_eq!(Reuse::default().rate(), None);
    }

    #[test]
    fn usage_adds_up_without_overflow() {
        let a = Usage {
            input_tokens: 1,
            output_tokens: 2,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: u64::MAX,
        };
        let s = a.plus(a);
        assert_eq!(s.input_tokens, 2);
        assert_eq!(s.cache_read_input_tokens, u64::MAX);
        assert_eq!(s.input_total(), u64::MAX);
    }
}
