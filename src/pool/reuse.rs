//! Whether a slot's next task resumes its previous Claude session (`claude -p --resume ID`)
//! or starts a fresh one. A resumed session keeps its context (files read, decisions made),
//! which pays off only for related work and only while the context is recent:
//!
//! - same worker, session not ended;
//! - younger than `max_age` (1 h) and idle for less than `max_idle` (30 min);
//! - the task is related to the session's last task: the same `group` (set by the
//!   coordinator), or it depends on that task, or they share a required capability.
//!
//! Every choice says why, so the decision can be recorded and shown.

use std::time::Duration;

use crate::time::{Timestamp, format_duration};

/// The session a slot ran last, as far as the choice needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastSession<'a> {
    /// The Claude session id.
    pub id: &'a str,
    /// The worker it ran for.
    pub worker: &'a str,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last activity (the end of its last run).
    pub last_active_at: Timestamp,
    /// Why it ended, if it has.
    pub ended: Option<&'a str>,
    /// The last task it worked on.
    pub task: TaskTraits<'a>,
}

/// What of a task decides whether it is related to another.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskTraits<'a> {
    /// The task id.
    pub id: u64,
    /// Capabilities it requires.
    pub requires: &'a [String],
    /// Tasks it depends on.
    pub depends_on: &'a [u64],
    /// The coordinator's group, if any.
    pub group: Option<&'a str>,
}

/// The limits of reuse (`vine pool --session-max-age`, `--session-max-idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A session older than this is not resumed.
    pub max_age: Duration,
    /// A session idle longer than this is not resumed (and is ended).
    pub max_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_age: Duration::from_secs(3600),
            max_idle: Duration::from_secs(1800),
        }
    }
}

/// The choice for the next task, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Resume this session.
    Resume {
        /// The session id.
        session: String,
        /// Why.
        why: String,
    },
    /// Start a fresh session.
    Fresh {
        /// Why.
        why: String,
    },
}

/// Chooses how `worker` runs `next`, given the session the slot ran last (if any).
pub fn choose(
    last: Option<&LastSession<'_>>,
    worker: &str,
    next: &TaskTraits<'_>,
    limits: Limits,
    now: Timestamp,
) -> Choice {
    let fresh = |why: String| Choice::Fresh { why };
    let Some(s) = last else {
        return fresh("no earlier session".into());
    };
    if let Some(reason) = s.ended {
        return fresh(format!("session {} ended ({reason})", s.id));
    }
    if s.worker != worker {
        return fresh(format!(
            "session {} ran for {}, not {worker}",
            s.id, s.worker
        ));
    }
    if let Some(why) = expired(s.id, s.started_at, s.last_active_at, limits, now) {
        return fresh(why);
    }
    match related(&s.task, next) {
        Some(how) => Choice::Resume {
            session: s.id.to_string(),
            why: format!("task {} {how}", next.id),
        },
        None => fresh(format!(
            "task {} is unrelated to task {}, the session's last (no shared group, dependency or capability)",
            next.id, s.task.id
        )),
    }
}

/// Why session `id` (started at `started_at`, last active at `last_active_at`) may not be
/// resumed any more: older than `max_age` or idle longer than `max_idle`; `None` while it may.
pub fn expired(
    id: &str,
    started_at: Timestamp,
    last_active_at: Timestamp,
    limits: Limits,
    now: Timestamp,
) -> Option<String> {
    let age = elapsed(started_at, now);
    if age > limits.max_age {
        return Some(format!(
            "session {id} is {} old, over the {} limit",
            format_duration(age.as_secs()),
            format_duration(limits.max_age.as_secs())
        ));
    }
    let idle = elapsed(last_active_at, now);
    (idle > limits.max_idle).then(|| {
        format!(
            "session {id} has been idle {}, over the {} limit",
            format_duration(idle.as_secs()),
            format_duration(limits.max_idle.as_secs())
        )
    })
}

/// How `next` is related to `prev`, if it is.
fn related(prev: &TaskTraits<'_>, next: &TaskTraits<'_>) -> Option<String> {
    if let (Some(a), Some(b)) = (prev.group, next.group)
        && a == b
    {
        return Some(format!("is in group {a:?} like task {}", prev.id));
    }
    if next.depends_on.contains(&prev.id) {
        return Some(format!("depends on task {}", prev.id));
    }
    next.requires
        .iter()
        .find(|c| prev.requires.contains(c))
        .map(|c| format!("needs {c:?} like task {}", prev.id))
}

/// Time from `then` to `now` (zero if `then` is later).
fn elapsed(then: Timestamp, now: Timestamp) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn last<'a>(task: TaskTraits<'a>) -> LastSession<'a> {
        LastSession {
            id: "s1",
            worker: "w1",
            started_at: at(0),
            last_active_at: at(600),
            ended: None,
            task,
        }
    }

    fn resumes(c: &Choice) -> bool {
        matches!(c, Choice::Resume { session, .. } if session == "s1")
    }

    fn why(c: &Choice) -> &str {
        match c {
            Choice::Resume { why, .. } | Choice::Fresh { why } => why,
        }
    }

    #[test]
    fn related_tasks_resume_the_session_and_say_how() {
        let py = vec!["python".to_string()];
        let prev = TaskTraits {
            id: 1,
            requires: &py,
            group: Some("api"),
            ..TaskTraits::default()
        };
        let s = last(prev);
        let now = at(900);
        let l = Limits::default();
        let same_group = TaskTraits {
            id: 2,
            group: Some("api"),
            ..TaskTraits::default()
        };
        let c = choose(Some(&s), "w1", &same_group, l, now);
        assert!(resumes(&c) && why(&c).contains("group \"api\""), "{c:?}");
        let deps = [1];
        let dependent = TaskTraits {
            id: 3,
            depends_on: &deps,
            ..TaskTraits::default()
        };
        let c = choose(Some(&s), "w1", &dependent, l, now);
        assert!(
            resumes(&c) && why(&c).contains("depends on task 1"),
            "{c:?}"
        );
        let both = vec!["rust".to_string(), "python".to_string()];
        let same_cap = TaskTraits {
            id: 4,
            requires: &both,
            ..TaskTraits::default()
        };
        let c = choose(Some(&s), "w1", &same_cap, l, now);
        assert!(resumes(&c) && why(&c).contains("\"python\""), "{c:?}");
    }

    #[test]
    fn unrelated_old_idle_ended_or_foreign_sessions_start_fresh() {
        let py = vec!["python".to_string()];
        let prev = TaskTraits {
            id: 1,
            requires: &py,
            group: Some("api"),
            ..TaskTraits::default()
        };
        let l = Limits::default();
        let related = TaskTraits {
            id: 2,
            group: Some("api"),
            ..TaskTraits::default()
        };
        let unrelated = TaskTraits {
            id: 3,
            group: Some("docs"),
            ..TaskTraits::default()
        };
        let s = last(prev.clone());
        let c = choose(Some(&s), "w1", &unrelated, l, at(900));
        assert!(
            !resumes(&c) && why(&c).contains("unrelated to task 1"),
            "{c:?}"
        );
        let c = choose(None, "w1", &related, l, at(900));
        assert_eq!(why(&c), "no earlier session");
        let c = choose(Some(&s), "w2", &related, l, at(900));
        assert!(
            !resumes(&c) && why(&c).contains("ran for w1, not w2"),
            "{c:?}"
        );
        // Older than an hour, though active a minute ago.
        let mut busy = last(prev.clone());
        busy.last_active_at = at(3600);
        let c = choose(Some(&busy), "w1", &related, l, at(3660));
        assert!(!resumes(&c) && why(&c).contains("1h1m old"), "{c:?}");
        // Idle 31 minutes.
        let c = choose(Some(&s), "w1", &related, l, at(600 + 31 * 60));
        assert!(!resumes(&c) && why(&c).contains("idle 31m"), "{c:?}");
        // At the limits exactly, still resumed.
        let c = choose(Some(&s), "w1", &related, l, at(600 + 30 * 60));
        assert!(resumes(&c), "{c:?}");
        let mut ended = last(prev);
        ended.ended = Some("idle too long");
        let c = choose(Some(&ended), "w1", &related, l, at(900));
        assert!(
            !resumes(&c) && why(&c).contains("ended (idle too long)"),
            "{c:?}"
        );
    }

    #[test]
    fn tasks_without_requirements_are_not_related_by_capability() {
        let prev = TaskTraits {
            id: 1,
            ..TaskTraits::default()
        };
        let next = TaskTraits {
            id: 2,
            ..TaskTraits::default()
        };
        let c = choose(Some(&last(prev)), "w1", &next, Limits::default(), at(900));
        assert!(!resumes(&c), "{c:?}");
    }

    #[test]
    fn a_clock_that_went_back_counts_as_no_time() {
        let prev = TaskTraits {
            id: 1,
            group: Some("g"),
            ..TaskTraits::default()
        };
        let next = TaskTraits {
            id: 2,
            group: Some("g"),
            ..TaskTraits::default()
        };
        let c = choose(Some(&last(prev)), "w1", &next, Limits::default(), at(-100));
        assert!(resumes(&c), "{c:?}");
    }
}
