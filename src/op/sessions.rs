//! The Claude sessions' records (`sessions.json`): `record-run` (a `claude -p` run of a
//! session ended: its figures, and why it was started or resumed), `end-session` (it will not
//! be resumed, and why), and the read `sessions`. Written by `vine pool`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::rules::{Needs, Query, Rule, State, requeue_expired};
use crate::sessions::{SessionRecord, SessionRun, SessionState, Usage};
use crate::time::Timestamp;
use crate::validate;

/// A `claude -p` run of a session ended: record it on the session (created by its first run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordRun {
    /// Claude's session id.
    pub session: String,
    /// The worker it ran for.
    pub worker: String,
    /// The task it worked on.
    pub task: u64,
    /// The task's attempt.
    pub attempt: u32,
    /// True if the run resumed the session.
    #[serde(default)]
    pub resumed: bool,
    /// Why the session was started or resumed for this run.
    #[serde(default)]
    pub why: String,
    /// Claude's result subtype (`success`, `error_max_turns`, ...).
    #[serde(default)]
    pub outcome: String,
    /// Model turns.
    #[serde(default)]
    pub turns: u32,
    /// Cost in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
    /// Tokens.
    #[serde(default)]
    pub usage: Usage,
    /// Wall time in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

/// A session will not be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndSession {
    /// Claude's session id.
    pub session: String,
    /// Why it ended (idle too long, too old, the pool stopped, ...).
    pub reason: String,
}

/// The sessions' records, newest activity last; only those not ended unless `all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    /// Only this worker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Include ended sessions.
    #[serde(default)]
    pub all: bool,
}

impl RecordRun {
    fn check(&self) -> Result<()> {
        validate::name("session id", &self.session)?;
        validate::name("worker id", &self.worker)?;
        validate::size("why", &self.why, validate::MAX_MESSAGE)?;
        validate::size("outcome", &self.outcome, validate::MAX_NAME)?;
        if !self.cost_usd.is_finite() || self.cost_usd < 0.0 {
            return Err(Error::Invalid(format!(
                "cost_usd must be a number of dollars, 0 or more (got {})",
                self.cost_usd
            )));
        }
        Ok(())
    }
}

impl Rule for RecordRun {
    fn needs(&self) -> Needs {
        Needs {
            sessions: true,
            task_ids: vec![self.task],
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        self.check()?;
        // The task must exist (on the queue or archived); an archived one can still be
        // charged: the record is the session's.
        if st.position(self.task).is_none() && !st.archived.contains_key(&self.task) {
            return Err(Error::UnknownTask(self.task));
        }
        let run = SessionRun {
            task: self.task,
            attempt: self.attempt,
            at: now,
            resumed: self.resumed,
            why: self.why,
            outcome: self.outcome,
            turns: self.turns,
            cost_usd: self.cost_usd,
            usage: self.usage,
            duration_ms: self.duration_ms,
            request_key: None,
        };
        let i = match st.sessions.iter().position(|s| s.id == self.session) {
            Some(i) => {
                let s = &st.sessions[i];
                if s.worker != self.worker {
                    return Err(Error::Conflict(format!(
                        "session {} runs for {}, not {}",
                        s.id, s.worker, self.worker
                    )));
                }
                if s.state == SessionState::Ended {
                    return Err(Error::Conflict(format!(
                        "session {} has ended ({}); start a fresh one",
                        s.id,
                        s.ended_reason.as_deref().unwrap_or("no reason given")
                    )));
                }
                i
            }
            None => {
                st.sessions.push(SessionRecord {
                    id: self.session,
                    worker: self.worker,
                    state: SessionState::Idle,
                    created_at: now,
                    last_active_at: now,
                    ended_reason: None,
                    runs: Vec::new(),
                    extra: Default::default(),
                });
                st.sessions.len() - 1
            }
        };
        let s = &mut st.sessions[i];
        s.runs.push(run);
        s.last_active_at = now;
        s.state = SessionState::Idle;
        let session = s.clone();
        st.dirty.sessions = true;
        requeue_expired(st, now);
        Ok(Reply::Session { session })
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        st.sessions
            .iter()
            .find(|s| s.runs.iter().any(|r| r.request_key.as_deref() == Some(key)))
            .map(|s| Reply::Session { session: s.clone() })
    }
}

impl Rule for EndSession {
    fn needs(&self) -> Needs {
        Needs {
            sessions: true,
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        validate::name("session id", &self.session)?;
        validate::size("reason", &self.reason, validate::MAX_MESSAGE)?;
        let Some(s) = st.sessions.iter_mut().find(|s| s.id == self.session) else {
            return Err(Error::Invalid(format!(
                "no session {} on this board; list them with `vine sessions --all`",
                self.session
            )));
        };
        // Ending an ended session changes nothing (a retried request is answered the same).
        if s.state != SessionState::Ended {
            s.state = SessionState::Ended;
            s.ended_reason = Some(self.reason);
            s.last_active_at = now;
            st.dirty.sessions = true;
        }
        let session = s.clone();
        requeue_expired(st, now);
        Ok(Reply::SessionEnded { session })
    }
}

impl Query for Sessions {
    fn needs(&self) -> Needs {
        Needs {
            sessions: true,
            ..Needs::default()
        }
    }

    fn answer(self, st: &mut State, _now: Timestamp) -> Result<Reply> {
        let mut sessions: Vec<SessionRecord> = std::mem::take(&mut st.sessions)
            .into_iter()
            .filter(|s| self.all || s.state != SessionState::Ended)
            .filter(|s| self.worker.as_ref().is_none_or(|w| *w == s.worker))
            .collect();
        sessions.sort_by_key(|s| s.last_active_at);
        Ok(Reply::Sessions { sessions })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::op::{self, NewTask, Op};
    use crate::rules::{apply, apply_keyed, read};
    use crate::task::TaskStatus;
    use crate::time::add_secs;

    fn at(secs: u64) -> Timestamp {
        add_secs(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(), secs)
    }

    fn board_with_task() -> (State, u64) {
        let mut st = State::default();
        let task = NewTask {
            description: "d".into(),
            ..NewTask::default()
        };
        let id = match apply(&mut st, Op::Add(op::Add { task }), at(0)).unwrap() {
            Reply::Added { tasks } => tasks[0].id,
            r => panic!("{r:?}"),
        };
        st.dirty = Default::default();
        (st, id)
    }

    fn run(session: &str, worker: &str, task: u64, cost: f64, turns: u32) -> RecordRun {
        RecordRun {
            session: session.into(),
            worker: worker.into(),
            task,
            attempt: 1,
            resumed: false,
            why: "no earlier session".into(),
            outcome: "success".into(),
            turns,
            cost_usd: cost,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 10,
                ..Usage::default()
            },
            duration_ms: 1000,
        }
    }

    fn session_of(r: Reply) -> SessionRecord {
        match r {
            Reply::Session { session } | Reply::SessionEnded { session } => session,
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn runs_make_a_session_and_add_up() {
        let (mut st, id) = board_with_task();
        let s = session_of(apply(&mut st, run("s1", "w1", id, 0.5, 3), at(10)).unwrap());
        assert_eq!(
            (s.state, s.created_at, s.runs.len()),
            (SessionState::Idle, at(10), 1)
        );
        assert!(st.dirty.sessions && !st.dirty.tasks);
        let mut second = run("s1", "w1", id, 0.25, 2);
        second.resumed = true;
        second.why = "task depends on the last".into();
        let s = session_of(apply(&mut st, second, at(20)).unwrap());
        assert_eq!((s.created_at, s.last_active_at), (at(10), at(20)));
        let t = s.totals();
        assert_eq!((t.runs, t.turns, t.duration_ms), (2, 5, 2000));
        assert!((t.cost_usd - 0.75).abs() < 1e-12);
        assert_eq!(t.usage.input_tokens, 200);
        assert_eq!(s.tasks(), vec![id]);
        assert!(s.runs[1].resumed && s.runs[1].why.contains("depends"));
        assert_eq!(st.sessions.len(), 1);
        // A task's cost is read by `show`.
        let v = match read(&mut st, Op::Show(op::Show { task: id }), at(30)).unwrap() {
            Reply::Task { task } => task,
            r => panic!("{r:?}"),
        };
        let c = v.cost.expect("the task's cost");
        assert_eq!((c.runs, c.turns), (2, 5));
    }

    #[test]
    fn a_run_is_refused_for_another_worker_an_ended_session_or_an_unknown_task() {
        let (mut st, id) = board_with_task();
        apply(&mut st, run("s1", "w1", id, 0.1, 1), at(10)).unwrap();
        let e = apply(&mut st, run("s1", "w2", id, 0.1, 1), at(11)).unwrap_err();
        assert!(
            matches!(e, Error::Conflict(ref m) if m.contains("runs for w1")),
            "{e}"
        );
        let e = apply(&mut st, run("s2", "w1", 999, 0.1, 1), at(11)).unwrap_err();
        assert!(matches!(e, Error::UnknownTask(999)), "{e}");
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = apply(&mut st, run("s2", "w1", id, bad, 1), at(11)).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e}");
        }
        let e = apply(&mut st, run("bad id!", "w1", id, 0.1, 1), at(11)).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let end = EndSession {
            session: "s1".into(),
            reason: "idle 31m".into(),
        };
        let s = session_of(apply(&mut st, end.clone(), at(20)).unwrap());
        assert_eq!(s.state, SessionState::Ended);
        assert_eq!(s.ended_reason.as_deref(), Some("idle 31m"));
        // Ending again changes nothing.
        st.dirty = Default::default();
        let again = session_of(apply(&mut st, end, at(30)).unwrap());
        assert_eq!(again.last_active_at, at(20));
        assert!(!st.dirty.sessions);
        let e = apply(&mut st, run("s1", "w1", id, 0.1, 1), at(31)).unwrap_err();
        assert!(
            matches!(e, Error::Conflict(ref m) if m.contains("has ended")),
            "{e}"
        );
        let e = apply(
            &mut st,
            EndSession {
                session: "nope".into(),
                reason: "r".into(),
            },
            at(31),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.contains("no session nope")),
            "{e}"
        );
        // Only the refused ops' sessions are unchanged: one session, one run.
        assert_eq!(st.sessions.len(), 1);
        assert_eq!(st.sessions[0].runs.len(), 1);
    }

    #[test]
    fn a_retried_run_is_counted_once() {
        let (mut st, id) = board_with_task();
        let first = apply_keyed(&mut st, run("s1", "w1", id, 0.5, 3), Some("k1"), at(10)).unwrap();
        let again = apply_keyed(&mut st, run("s1", "w1", id, 0.5, 3), Some("k1"), at(11)).unwrap();
        assert_eq!(first, again);
        assert_eq!(st.sessions[0].runs.len(), 1);
        assert_eq!(st.sessions[0].runs[0].request_key.as_deref(), Some("k1"));
    }

    #[test]
    fn a_finished_tasks_run_is_still_recorded() {
        let (mut st, id) = board_with_task();
        st.tasks[0].status = TaskStatus::Completed;
        apply(&mut st, run("s1", "w1", id, 0.5, 3), at(10)).unwrap();
        // Archived: known only to the archive.
        st.tasks.clear();
        st.archived.insert(id, TaskStatus::Completed);
        apply(&mut st, run("s1", "w1", id, 0.5, 3), at(11)).unwrap();
        assert_eq!(st.sessions[0].runs.len(), 2);
    }

    #[test]
    fn the_read_lists_live_sessions_by_last_activity() {
        let (mut st, id) = board_with_task();
        apply(&mut st, run("s1", "w1", id, 0.1, 1), at(30)).unwrap();
        apply(&mut st, run("s2", "w2", id, 0.1, 1), at(10)).unwrap();
        apply(&mut st, run("s3", "w1", id, 0.1, 1), at(20)).unwrap();
        let end = EndSession {
            session: "s3".into(),
            reason: "old".into(),
        };
        apply(&mut st, end, at(25)).unwrap();
        let ids = |st: &mut State, q: Sessions| match read(st, q, at(40)).unwrap() {
            Reply::Sessions { sessions } => sessions.into_iter().map(|s| s.id).collect::<Vec<_>>(),
            r => panic!("{r:?}"),
        };
        let live = ids(
            &mut st.clone(),
            Sessions {
                worker: None,
                all: false,
            },
        );
        assert_eq!(live, ["s2", "s1"]);
        let all = ids(
            &mut st.clone(),
            Sessions {
                worker: None,
                all: true,
            },
        );
        assert_eq!(all, ["s2", "s3", "s1"]);
        let w1 = ids(
            &mut st.clone(),
            Sessions {
                worker: Some("w1".into()),
                all: true,
            },
        );
        assert_eq!(w1, ["s3", "s1"]);
    }
}
