//! Unit tests of the turn-ended rule: every decision with a fixed clock and a hand-built state.

use chrono::{TimeZone, Utc};

use super::*;
use crate::op::{self, NewTask, Op};
use crate::rules::{Dirty, apply, apply_keyed};
use crate::settings::Settings;
use crate::task::TaskStatus;
use crate::time::add_secs;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn at(secs: u64) -> Timestamp {
    add_secs(t0(), secs)
}

/// A board with a 120 s stale limit (a waiting worker's sign of life is renewed every 40 s)
/// and a 10 s retry backoff.
fn board() -> State {
    State {
        settings: Settings {
            lease_secs: 60,
            stale_after_secs: 120,
            max_retries: 2,
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 100,
            ..Settings::default()
        },
        ..State::default()
    }
}

fn add(st: &mut State, desc: &str, now: Timestamp) -> u64 {
    let task = NewTask {
        description: desc.into(),
        ..NewTask::default()
    };
    match apply(st, Op::Add(op::Add { task }), now).expect("add") {
        Reply::Added { tasks } => tasks[0].id,
        other => panic!("{other:?}"),
    }
}

fn register(st: &mut State, worker: &str, now: Timestamp) {
    let op = op::Register {
        worker: worker.into(),
        capabilities: vec![],
        session_id: None,
    };
    apply(st, Op::Register(op), now).expect("register");
}

fn ended(worker: &str, max_idle_secs: u64) -> TurnEnded {
    TurnEnded {
        worker: worker.into(),
        max_idle_secs,
        tool_calls: 0,
        reminded: None,
        wait_secs: 0,
        pooled: false,
    }
}

/// Applies the op as the store does (a fresh `dirty` each time) and returns its turn.
fn turn(st: &mut State, op: TurnEnded, now: Timestamp) -> Turn {
    st.dirty = Dirty::default();
    match apply(st, Op::TurnEnded(op), now).expect("turn-ended") {
        Reply::Turn(t) => t,
        other => panic!("{other:?}"),
    }
}

fn task(st: &State, id: u64) -> &Task {
    st.tasks.iter().find(|t| t.id == id).expect("on the queue")
}

#[test]
fn a_pending_task_is_claimed_and_handed_over() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let id = add(&mut st, "Write hello.txt", t0());
    let t = turn(&mut st, ended("w1", 600), at(5));
    let Next::HandOver { claim } = t.next else {
        panic!("{t:?}")
    };
    assert_eq!((claim.task.id, claim.task.attempts), (id, 1));
    assert_eq!(t.failed, None);
    let held = task(&st, id);
    assert_eq!(held.status, TaskStatus::InProgress);
    assert_eq!(held.claimed_by.as_deref(), Some("w1"));
}

#[test]
fn a_held_task_is_reminded_then_failed_only_without_progress() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let id = add(&mut st, "Never finished", t0());
    turn(&mut st, ended("w1", 600), at(1));
    // First turn-end while holding it: a reminder, and nothing is written.
    let t = turn(&mut st, ended("w1", 600), at(2));
    let Next::Remind { task: held } = &t.next else {
        panic!("{t:?}")
    };
    assert_eq!((held.id, held.attempts), (id, 1));
    assert_eq!(st.dirty, Dirty::default());
    let reminder = Reminder {
        task: id,
        attempt: 1,
        tool_calls: 3,
    };
    // A tool call since the reminder is progress: reminded again.
    let worked = TurnEnded {
        tool_calls: 4,
        reminded: Some(reminder),
        ..ended("w1", 600)
    };
    assert!(matches!(
        turn(&mut st, worked, at(3)).next,
        Next::Remind { .. }
    ));
    // A reminder of another attempt (or task) does not count against this one.
    let other = TurnEnded {
        tool_calls: 3,
        reminded: Some(Reminder {
            attempt: 2,
            ..reminder
        }),
        ..ended("w1", 600)
    };
    assert!(matches!(
        turn(&mut st, other, at(3)).next,
        Next::Remind { .. }
    ));
    assert_eq!(task(&st, id).status, TaskStatus::InProgress);
    // No tool call since the reminder: the attempt is failed (retried after the backoff), and
    // the worker, with nothing else to claim, waits.
    let stalled = TurnEnded {
        tool_calls: 3,
        reminded: Some(reminder),
        ..ended("w1", 600)
    };
    let t = turn(&mut st, stalled, at(4));
    assert_eq!(t.failed, Some(id));
    assert!(matches!(t.next, Next::Wait { .. }), "{t:?}");
    let failed = task(&st, id);
    assert_eq!(failed.status, TaskStatus::Pending);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.last_error.as_deref(), Some(STALLED));
    assert_eq!(failed.not_before, Some(at(14)));
    // After the backoff the same worker may get it again.
    let t = turn(&mut st, ended("w1", 600), at(15));
    assert!(
        matches!(&t.next, Next::HandOver { claim } if claim.task.id == id && claim.task.attempts == 2),
        "{t:?}"
    );
}

#[test]
fn a_deregistered_worker_is_let_go_even_with_work_waiting() {
    let mut st = board();
    register(&mut st, "w1", t0());
    add(&mut st, "Work that remains", t0());
    apply(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "w1".into(),
        }),
        at(1),
    )
    .expect("deregister");
    let t = turn(&mut st, ended("w1", 600), at(2));
    assert_eq!(
        t.next,
        Next::LetGo {
            reason: "w1 was deregistered; the session may end".into()
        }
    );
    assert!(st.tasks.iter().all(|t| t.status == TaskStatus::Pending));
}

#[test]
fn an_unknown_worker_gets_work_or_is_let_go() {
    let mut st = board();
    let t = turn(&mut st, ended("ghost", 600), t0());
    assert!(
        matches!(&t.next, Next::LetGo { reason } if reason.contains("not registered")),
        "{t:?}"
    );
    assert!(st.workers.is_empty(), "nobody registered");
    let id = add(&mut st, "x", t0());
    let t = turn(&mut st, ended("ghost", 600), at(1));
    assert!(matches!(&t.next, Next::HandOver { claim } if claim.task.id == id));
    assert!(st.workers.contains_key("ghost"), "a claim registers");
}

#[test]
fn an_idle_worker_waits_below_its_limit_then_goes_offline() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let t = turn(&mut st, ended("w1", 100), at(30));
    let Next::Wait {
        reason,
        idle_left_secs,
    } = &t.next
    else {
        panic!("{t:?}")
    };
    assert_eq!(*idle_left_secs, 70);
    assert!(
        reason.starts_with("idle for 30s of 1m40s; waiting for work (no pending tasks"),
        "{reason}"
    );
    let t = turn(&mut st, ended("w1", 100), at(100));
    assert!(
        matches!(&t.next, Next::LetGo { reason } if reason.contains("is now offline")),
        "{t:?}"
    );
    let w = &st.workers["w1"];
    assert_eq!(w.status, OFFLINE);
    assert_eq!(w.offline_reason.as_deref(), Some("idle for 1m40s"));
    assert!(st.dirty.workers);
}

#[test]
fn waiting_writes_only_a_sign_of_life_older_than_a_third_of_the_stale_limit() {
    let mut st = board();
    register(&mut st, "w1", t0());
    turn(&mut st, ended("w1", 600), at(39));
    assert_eq!(st.dirty, Dirty::default(), "a fresh heartbeat is kept");
    turn(&mut st, ended("w1", 600), at(40));
    assert!(st.dirty.workers, "renewed at a third of 120 s");
    assert_eq!(st.workers["w1"].last_heartbeat, Some(at(40)));
    turn(&mut st, ended("w1", 600), at(41));
    assert_eq!(st.dirty, Dirty::default());
}

#[test]
fn a_keyed_hand_over_is_answered_again_not_applied_twice() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let first = add(&mut st, "first", t0());
    let second = add(&mut st, "second", t0());
    let op = || Op::TurnEnded(ended("w1", 600));
    let a = apply_keyed(&mut st, op(), Some("k-1"), at(1)).expect("first");
    let again = apply_keyed(&mut st, op(), Some("k-1"), at(2)).expect("retry");
    assert_eq!(a, again);
    let Reply::Turn(Turn {
        next: Next::HandOver { claim },
        ..
    }) = again
    else {
        panic!("{again:?}")
    };
    assert_eq!(claim.task.id, first);
    assert_eq!(claim.task.request_key.as_deref(), Some("k-1"));
    assert_eq!(task(&st, second).status, TaskStatus::Pending);
}

#[test]
fn only_a_wait_is_held_and_never_past_the_idle_limit() {
    let wait = |idle_left_secs| {
        Ok(Reply::Turn(Turn {
            next: Next::Wait {
                reason: "r".into(),
                idle_left_secs,
            },
            failed: None,
        }))
    };
    let left = Duration::from_secs(30);
    assert_eq!(wait_more(&wait(600), left), Some(left));
    assert_eq!(wait_more(&wait(5), left), Some(Duration::from_secs(5)));
    assert_eq!(wait_more(&wait(0), left), None);
    assert_eq!(wait_more(&wait(600), Duration::ZERO), None);
    let go = Ok(Reply::Turn(Turn {
        next: Next::LetGo { reason: "r".into() },
        failed: None,
    }));
    assert_eq!(wait_more(&go, left), None);
    assert_eq!(
        wait_more(&Err(crate::error::Error::Invalid("x".into())), left),
        None
    );
    let long = TurnEnded {
        wait_secs: u64::MAX,
        ..ended("w1", 1)
    };
    assert_eq!(long.wait(), Duration::from_secs(MAX_WAIT_SECS));
}

#[test]
fn a_worker_not_on_the_board_waits_while_the_op_may_wait_then_is_let_go() {
    let mut st = board();
    let waiting = TurnEnded {
        wait_secs: 30,
        ..ended("ghost", 600)
    };
    let t = turn(&mut st, waiting.clone(), t0());
    assert!(
        matches!(&t.next, Next::Wait { idle_left_secs: 30, reason } if reason.contains("not registered")),
        "{t:?}"
    );
    let last = waiting.with_wait_left(Duration::ZERO);
    assert!(matches!(
        turn(&mut st, last, at(30)).next,
        Next::LetGo { .. }
    ));
    assert_eq!(
        waiting
            .with_wait_left(Duration::from_millis(1500))
            .wait_secs,
        2,
        "rounded up"
    );
}

fn pooled(worker: &str) -> TurnEnded {
    TurnEnded {
        pooled: true,
        wait_secs: 0,
        ..ended(worker, 600)
    }
}

#[test]
fn a_pooled_session_is_never_handed_another_task() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let id = add(&mut st, "Waiting for the pool", t0());
    let t = turn(&mut st, pooled("w1"), at(5));
    let Next::LetGo { reason } = &t.next else {
        panic!("{t:?}")
    };
    assert!(reason.contains("vine pool"), "{reason}");
    assert_eq!(task(&st, id).status, TaskStatus::Pending, "not claimed");
}

#[test]
fn a_pooled_session_holding_a_task_is_reminded_then_let_go_after_the_failed_attempt() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let id = add(&mut st, "Never finished", t0());
    let other = add(&mut st, "Also pending", t0());
    turn(&mut st, ended("w1", 600), at(1));
    assert!(matches!(
        turn(&mut st, pooled("w1"), at(2)).next,
        Next::Remind { .. }
    ));
    let stalled = TurnEnded {
        tool_calls: 3,
        reminded: Some(Reminder {
            task: id,
            attempt: 1,
            tool_calls: 3,
        }),
        ..pooled("w1")
    };
    let t = turn(&mut st, stalled, at(3));
    assert!(matches!(t.next, Next::LetGo { .. }), "{t:?}");
    assert_eq!(t.failed, Some(id));
    assert_eq!(task(&st, other).status, TaskStatus::Pending, "not claimed");
}

#[test]
fn a_pooled_session_waiting_on_a_question_is_parked_with_its_task() {
    let mut st = board();
    register(&mut st, "w1", t0());
    let id = add(&mut st, "Needs a decision", t0());
    turn(&mut st, ended("w1", 600), at(1));
    let ask = op::Ask {
        agent: "w1".into(),
        question: "Which database?".into(),
        task: Some(id),
        wait_secs: Some(86_400),
    };
    apply(&mut st, Op::Ask(ask), at(2)).expect("ask");
    let t = turn(&mut st, pooled("w1"), at(3));
    let Next::LetGo { reason } = &t.next else {
        panic!("{t:?}")
    };
    assert!(
        reason.contains("parked") && reason.contains("question #"),
        "{reason}"
    );
    assert_eq!(t.failed, None);
    let held = task(&st, id);
    assert_eq!(held.status, TaskStatus::InProgress);
    assert_eq!(held.claimed_by.as_deref(), Some("w1"));
    // Not pooled, the same worker would be reminded instead.
    assert!(matches!(
        turn(&mut st, ended("w1", 600), at(4)).next,
        Next::Remind { .. }
    ));
}
