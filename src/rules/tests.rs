//! Unit tests of the pure rules: every op with a fixed clock and a hand-built state.

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::message::MessageFilter;
use crate::message::MessageKind;
use crate::op::{self, NewTask, Op, PlanTask};
use crate::reply::Reply;
use crate::task::{Priority, StatusFilter};
use crate::time::{add_secs, epoch_ms};
use crate::validate;
use crate::worker::{ACTIVE, OFFLINE};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The fixed clock every test starts from.
fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// `t0` plus `secs` seconds.
fn at(secs: u64) -> Timestamp {
    add_secs(t0(), secs)
}

/// A board with short, round settings: 60 s leases, 120 s stale limit, 2 retries,
/// backoff 10 s doubling up to 100 s.
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

fn nt(desc: &str) -> NewTask {
    NewTask {
        description: desc.into(),
        ..NewTask::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Applies `op` the way the store does: on error, everything but the outbox is discarded.
fn run(st: &mut State, op: Op, now: Timestamp) -> Result<Reply> {
    let before = st.clone();
    let r = apply(st, op, now);
    if r.is_err() {
        let outbox = std::mem::take(&mut st.outbox);
        *st = before;
        st.outbox = outbox;
    }
    r
}

/// Adds a task and returns its id.
fn add_task(st: &mut State, task: NewTask, now: Timestamp) -> u64 {
    match run(st, Op::Add(op::Add { task }), now).expect("add") {
        Reply::Added { tasks } => tasks[0].id,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn add(st: &mut State, desc: &str, now: Timestamp) -> u64 {
    add_task(st, nt(desc), now)
}

fn register(st: &mut State, worker: &str, caps: &[&str], now: Timestamp) {
    run(
        st,
        Op::Register(op::Register {
            worker: worker.into(),
            capabilities: strings(caps),
            session_id: None,
        }),
        now,
    )
    .expect("register");
}

/// Claims for `worker`; returns the claimed task's id, or None.
fn claim(st: &mut State, worker: &str, now: Timestamp) -> Option<u64> {
    match run(
        st,
        Op::Claim(op::Claim {
            worker: worker.into(),
        }),
        now,
    )
    .expect("claim")
    {
        Reply::Claimed { claim, .. } => claim.map(|c| c.task.id),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn claim_reason(st: &mut State, worker: &str, now: Timestamp) -> String {
    match run(
        st,
        Op::Claim(op::Claim {
            worker: worker.into(),
        }),
        now,
    )
    .expect("claim")
    {
        Reply::Claimed {
            claim: None,
            reason: Some(r),
        } => r,
        other => panic!("expected no claim, got {other:?}"),
    }
}

fn complete(st: &mut State, id: u64, worker: &str, now: Timestamp) -> Result<Reply> {
    run(
        st,
        Op::Complete(op::Complete {
            task: id,
            worker: worker.into(),
            attempt: None,
            result: None,
        }),
        now,
    )
}

fn fail(st: &mut State, id: u64, worker: &str, no_retry: bool, now: Timestamp) -> Result<Reply> {
    run(
        st,
        Op::Fail(op::Fail {
            task: id,
            worker: worker.into(),
            attempt: None,
            error: "boom".into(),
            no_retry,
        }),
        now,
    )
}

fn release(st: &mut State, id: u64, worker: &str, now: Timestamp) -> Result<Reply> {
    run(
        st,
        Op::Release(op::Release {
            task: id,
            worker: worker.into(),
            attempt: None,
        }),
        now,
    )
}

fn cancel(st: &mut State, id: u64, now: Timestamp) -> Result<Reply> {
    run(
        st,
        Op::Cancel(op::Cancel {
            task: id,
            reason: None,
        }),
        now,
    )
}

fn retry(st: &mut State, id: u64, now: Timestamp) -> Result<Reply> {
    run(st, Op::Retry(op::Retry { task: id }), now)
}

fn heartbeat(st: &mut State, worker: &str, now: Timestamp) {
    run(
        st,
        Op::Heartbeat(op::Heartbeat {
            worker: worker.into(),
        }),
        now,
    )
    .expect("heartbeat");
}

fn requeue(st: &mut State, now: Timestamp) -> Vec<u64> {
    match run(st, Op::RequeueStale(op::RequeueStale), now).expect("requeue") {
        Reply::Requeued { tasks } => tasks,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// (continue, reason, task) of a should-continue.
fn should_continue(
    st: &mut State,
    worker: &str,
    max_idle_secs: u64,
    now: Timestamp,
) -> (bool, String, Option<u64>) {
    match run(
        st,
        Op::ShouldContinue(op::ShouldContinue {
            worker: worker.into(),
            max_idle_secs,
        }),
        now,
    )
    .expect("should-continue")
    {
        Reply::Decision {
            keep_going,
            reason,
            task,
        } => (keep_going, reason, task),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn task(st: &State, id: u64) -> &Task {
    st.tasks
        .iter()
        .find(|t| t.id == id)
        .expect("task on the queue")
}

fn status(st: &State, id: u64) -> TaskStatus {
    task(st, id).status
}

fn is_invalid<T: std::fmt::Debug>(r: &Result<T>) -> bool {
    matches!(r, Err(Error::Invalid(_)))
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T>) -> bool {
    matches!(r, Err(Error::Conflict(_)))
}

/// The parts of the state an op may change (State itself is not comparable).
type Snapshot = (
    Vec<Task>,
    BTreeMap<String, Worker>,
    u64,
    Vec<(String, String)>,
    Dirty,
);

fn snapshot(st: &State) -> Snapshot {
    (
        st.tasks.clone(),
        st.workers.clone(),
        st.min_next_id,
        st.files.clone(),
        st.dirty,
    )
}

/// Applies `op` directly (no store) and checks it fails as Invalid without changing anything.
fn assert_invalid_untouched(st: &mut State, op: Op, now: Timestamp) {
    let before = snapshot(st);
    let what = format!("{op:?}");
    let r = apply(st, op, now);
    assert!(is_invalid(&r), "{what}: expected Invalid, got {r:?}");
    assert!(
        snapshot(st) == before,
        "{what}: the state changed on a validation error"
    );
    assert!(st.outbox.is_empty(), "{what}: nothing is logged");
}

// ---------------------------------------------------------------------------------------------
// add
// ---------------------------------------------------------------------------------------------

#[test]
fn add_creates_a_pending_task_with_every_field() {
    let mut st = board();
    let mut meta = serde_json::Map::new();
    meta.insert("dir".into(), json!("src/api"));
    let task = NewTask {
        description: "  Build the API  ".into(),
        instructions: Some("do it well".into()),
        context_files: strings(&["docs/spec.md"]),
        assign: Some("w1".into()),
        priority: Priority::High,
        requires: strings(&["rust"]),
        max_retries: Some(5),
        lease_secs: Some(300),
        metadata: meta.clone(),
        ..NewTask::default()
    };
    let r = run(&mut st, Op::Add(op::Add { task }), t0()).unwrap();
    let Reply::Added { tasks } = r else {
        panic!("expected Added")
    };
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t.id, epoch_ms(&t0()));
    assert_eq!(t.description, "Build the API", "the description is trimmed");
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.created_at, Some(t0()));
    assert_eq!(t.assigned_to.as_deref(), Some("w1"));
    assert_eq!(t.priority, Priority::High);
    assert_eq!(t.requires, strings(&["rust"]));
    assert_eq!(t.max_retries, Some(5));
    assert_eq!(t.lease_secs, Some(300));
    assert_eq!(t.metadata, meta);
    assert_eq!(t.attempts, 0);
    assert!(t.claimed_by.is_none() && t.lease_expires_at.is_none());
    let path = Task::instruction_path(t.id);
    assert_eq!(t.instruction_file.as_deref(), Some(path.as_str()));
    assert_eq!(st.files, vec![(path, "do it well".to_string())]);
    assert_eq!(st.tasks, tasks);
    assert_eq!(st.min_next_id, t.id + 1);
    assert!(st.dirty.tasks);
}

#[test]
fn same_millisecond_adds_get_distinct_increasing_ids() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    let b = add(&mut st, "b", t0());
    let c = add(&mut st, "c", t0());
    let ms = epoch_ms(&t0());
    assert_eq!((a, b, c), (ms, ms + 1, ms + 2));
    // A later clock that is still below the next free id does not reuse an id.
    let d = add(
        &mut st,
        "d",
        add_secs(t0(), 0) + chrono::TimeDelta::milliseconds(1),
    );
    assert_eq!(d, ms + 3);
    // A clock further ahead wins.
    let e = add(&mut st, "e", at(10));
    assert_eq!(e, epoch_ms(&at(10)));
    // min_next_id above the clock (ids the archive used) wins too.
    let mut st = board();
    st.min_next_id = ms + 1_000_000;
    assert_eq!(add(&mut st, "x", t0()), ms + 1_000_000);
    assert_eq!(add(&mut st, "y", t0()), ms + 1_000_001);
}

#[test]
fn plan_ids_are_consecutive_and_keys_become_dependencies() {
    let mut st = board();
    let before = add(&mut st, "existing", t0());
    let plan = vec![
        PlanTask {
            key: Some("a".into()),
            task: nt("a"),
            after_keys: vec![],
        },
        PlanTask {
            key: Some("b".into()),
            task: NewTask {
                after: vec![before],
                ..nt("b")
            },
            after_keys: strings(&["a"]),
        },
        PlanTask {
            key: None,
            task: nt("c"),
            after_keys: strings(&["a", "b"]),
        },
    ];
    let Reply::Added { tasks } =
        run(&mut st, Op::AddPlan(op::AddPlan { tasks: plan }), t0()).unwrap()
    else {
        panic!("expected Added")
    };
    let ids: Vec<u64> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![before + 1, before + 2, before + 3]);
    assert!(tasks[0].depends_on.is_empty());
    assert_eq!(tasks[1].depends_on, vec![before, ids[0]]);
    assert_eq!(tasks[2].depends_on, vec![ids[0], ids[1]]);
    assert_eq!(st.tasks.len(), 4);
    assert_eq!(st.min_next_id, ids[2] + 1);
}

#[test]
fn bad_plans_are_rejected_and_leave_the_state_untouched() {
    let mut st = board();
    add(&mut st, "existing", t0());
    st.dirty = Dirty::default();
    let entry = |key: &str, after: &[&str]| PlanTask {
        key: Some(key.into()),
        task: nt(key),
        after_keys: strings(after),
    };
    let bad_plans = vec![
        // A cycle a -> b -> c -> a.
        vec![entry("a", &["c"]), entry("b", &["a"]), entry("c", &["b"])],
        // A two-entry cycle behind a good entry.
        vec![entry("ok", &[]), entry("x", &["y"]), entry("y", &["x"])],
        // An unknown key.
        vec![entry("a", &[]), entry("b", &["nope"])],
        // A self-dependency.
        vec![entry("a", &["a"])],
        // A key used twice.
        vec![entry("a", &[]), entry("a", &[])],
        // An empty key.
        vec![entry("", &[])],
        // An empty plan.
        vec![],
        // A bad entry after good ones: all or nothing.
        vec![entry("a", &[]), PlanTask::default()],
    ];
    for plan in bad_plans {
        assert_invalid_untouched(&mut st, Op::AddPlan(op::AddPlan { tasks: plan }), at(1));
    }
    assert_eq!(st.tasks.len(), 1);
}

#[test]
fn add_validates_its_input_and_changes_nothing_on_error() {
    let mut st = board();
    add(&mut st, "existing", t0());
    register(&mut st, "w1", &["rust"], t0());
    st.dirty = Dirty::default();
    let bad: Vec<NewTask> = vec![
        nt(""),
        nt("   \n"),
        nt(&"x".repeat(validate::MAX_DESCRIPTION + 1)),
        NewTask {
            instruction_file: Some("/etc/passwd".into()),
            ..nt("abs")
        },
        NewTask {
            instruction_file: Some("../outside.md".into()),
            ..nt("dotdot")
        },
        NewTask {
            context_files: strings(&["docs/ok.md", "a/../../b"]),
            ..nt("ctx dotdot")
        },
        NewTask {
            context_files: strings(&["C:stuff"]),
            ..nt("ctx drive")
        },
        NewTask {
            context_files: strings(&["/abs"]),
            ..nt("ctx abs")
        },
        NewTask {
            instructions: Some("text".into()),
            instruction_file: Some("tasks/x.md".into()),
            ..nt("both")
        },
        NewTask {
            assign: Some("bad worker".into()),
            ..nt("assign")
        },
        NewTask {
            requires: strings(&["ok", "no/slash"]),
            ..nt("caps")
        },
        NewTask {
            lease_secs: Some(0),
            ..nt("lease 0")
        },
        NewTask {
            lease_secs: Some(30 * 86_400 + 1),
            ..nt("lease too long")
        },
        NewTask {
            max_retries: Some(1001),
            ..nt("retries")
        },
        NewTask {
            context_files: vec!["a.md".to_string(); validate::MAX_LIST + 1],
            ..nt("too many files")
        },
    ];
    for task in bad {
        assert_invalid_untouched(&mut st, Op::Add(op::Add { task }), at(1));
    }
    // The limits themselves are accepted.
    add(&mut st, &"x".repeat(validate::MAX_DESCRIPTION), at(1));
    add_task(
        &mut st,
        NewTask {
            lease_secs: Some(30 * 86_400),
            max_retries: Some(1000),
            ..nt("limits")
        },
        at(1),
    );
}

#[test]
fn dependencies_must_exist_or_be_archived_completed() {
    let mut st = board();
    let on_queue = add(&mut st, "dep", t0());
    st.archived.insert(7, TaskStatus::Completed);
    st.archived.insert(8, TaskStatus::Cancelled);
    st.archived.insert(9, TaskStatus::Failed);
    // On the queue (any status) or archived completed: accepted.
    let a = add_task(
        &mut st,
        NewTask {
            after: vec![on_queue, 7],
            ..nt("a")
        },
        at(1),
    );
    assert_eq!(task(&st, a).depends_on, vec![on_queue, 7]);
    // Archived cancelled or failed: the task could never run.
    for dep in [8, 9] {
        assert_invalid_untouched(
            &mut st,
            Op::Add(op::Add {
                task: NewTask {
                    after: vec![dep],
                    ..nt("never")
                },
            }),
            at(2),
        );
    }
    // Unknown: UnknownTask, nothing added.
    let before = snapshot(&st);
    let r = run(
        &mut st,
        Op::Add(op::Add {
            task: NewTask {
                after: vec![on_queue, 12345],
                ..nt("unknown")
            },
        }),
        at(2),
    );
    assert!(matches!(r, Err(Error::UnknownTask(12345))), "{r:?}");
    assert!(snapshot(&st) == before);
}

// ---------------------------------------------------------------------------------------------
// claim
// ---------------------------------------------------------------------------------------------

#[test]
fn claim_takes_the_task_and_starts_a_lease() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    let b = add_task(
        &mut st,
        NewTask {
            lease_secs: Some(500),
            ..nt("b")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "w1", at(5)), Some(a));
    let t = task(&st, a);
    assert_eq!(t.status, TaskStatus::InProgress);
    assert_eq!(t.claimed_by.as_deref(), Some("w1"));
    assert_eq!(t.claimed_at, Some(at(5)));
    assert_eq!(t.attempts, 1);
    assert_eq!(
        t.lease_expires_at,
        Some(at(65)),
        "board lease when the task sets none"
    );
    // An unknown worker is registered by its first claim.
    let w = &st.workers["w1"];
    assert_eq!(w.status, ACTIVE);
    assert_eq!(w.last_task_claimed, Some(at(5)));
    assert_eq!(w.current_task, Some(a));
    assert!(st.holds_task("w1"));

    assert_eq!(claim(&mut st, "w1", at(6)), Some(b));
    assert_eq!(
        task(&st, b).lease_expires_at,
        Some(at(506)),
        "the task's own lease"
    );
    assert_eq!(st.workers["w1"].current_task, Some(b), "the latest claim");
    assert_eq!(claim(&mut st, "w2", at(7)), None);
}

#[test]
fn claim_with_nothing_to_do_says_why() {
    let mut st = board();
    assert_eq!(claim_reason(&mut st, "w1", t0()), "no pending tasks");
    register(&mut st, "w1", &[], t0());
    add_task(
        &mut st,
        NewTask {
            requires: strings(&["gpu"]),
            ..nt("gpu")
        },
        t0(),
    );
    let reason = claim_reason(&mut st, "w1", t0());
    assert!(reason.contains("1 pending task"), "{reason}");
    assert!(reason.contains("capabilities"), "{reason}");
    let r = run(
        &mut st,
        Op::Claim(op::Claim {
            worker: "no good".into(),
        }),
        t0(),
    );
    assert!(is_invalid(&r));
}

#[test]
fn priority_beats_age() {
    let mut st = board();
    let old_low = add_task(
        &mut st,
        NewTask {
            priority: Priority::Low,
            ..nt("old low")
        },
        t0(),
    );
    let normal = add(&mut st, "normal", at(1));
    let new_high = add_task(
        &mut st,
        NewTask {
            priority: Priority::High,
            ..nt("new high")
        },
        at(2),
    );
    assert_eq!(claim(&mut st, "w1", at(3)), Some(new_high));
    assert_eq!(claim(&mut st, "w1", at(3)), Some(normal));
    assert_eq!(claim(&mut st, "w1", at(3)), Some(old_low));
}

#[test]
fn the_id_breaks_ties_whatever_the_timestamps() {
    let mut st = board();
    // Ids follow the order tasks were added in; `created_at` follows the clock of whoever
    // added them, which may be wrong: a task stamped an hour early is not put first.
    let mut added_first = Task::new(10, "added first", at(5));
    added_first.priority = Priority::High;
    let mut stamped_early = Task::new(20, "added second, stamped early", at(1));
    stamped_early.priority = Priority::High;
    st.tasks = vec![stamped_early, added_first];
    assert_eq!(
        claim(&mut st, "w1", at(6)),
        Some(10),
        "the smaller id first"
    );
    assert_eq!(claim(&mut st, "w1", at(6)), Some(20));
    // Same created_at: the smaller id first.
    let mut st = board();
    let a = add(&mut st, "a", t0());
    let b = add(&mut st, "b", t0());
    assert!(a < b);
    st.tasks.reverse();
    assert_eq!(claim(&mut st, "w1", at(1)), Some(a));
    assert_eq!(claim(&mut st, "w1", at(1)), Some(b));
}

#[test]
fn capabilities_filter_claims() {
    let mut st = board();
    register(&mut st, "plain", &[], t0());
    register(&mut st, "rusty", &["rust"], t0());
    register(&mut st, "full", &["rust", "gpu"], t0());
    let both = add_task(
        &mut st,
        NewTask {
            requires: strings(&["rust", "gpu"]),
            priority: Priority::High,
            ..nt("both")
        },
        t0(),
    );
    let rust = add_task(
        &mut st,
        NewTask {
            requires: strings(&["rust"]),
            priority: Priority::High,
            ..nt("rust")
        },
        t0(),
    );
    let any = add(&mut st, "any", t0());
    assert_eq!(
        claim(&mut st, "plain", at(1)),
        Some(any),
        "skips what it cannot do"
    );
    assert_eq!(claim(&mut st, "rusty", at(1)), Some(rust));
    assert_eq!(claim(&mut st, "rusty", at(1)), None);
    // An unregistered worker has no capabilities.
    assert_eq!(claim(&mut st, "stranger", at(1)), None);
    assert_eq!(claim(&mut st, "full", at(1)), Some(both));
}

#[test]
fn dependencies_gate_claims() {
    let mut st = board();
    st.archived.insert(7, TaskStatus::Completed);
    let dep = add_task(
        &mut st,
        NewTask {
            priority: Priority::Low,
            ..nt("dep")
        },
        t0(),
    );
    let after = add_task(
        &mut st,
        NewTask {
            after: vec![dep, 7],
            priority: Priority::High,
            ..nt("after")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "w1", at(1)), Some(dep), "waits for dep");
    assert_eq!(claim(&mut st, "w2", at(1)), None, "dep in progress");
    complete(&mut st, dep, "w1", at(2)).unwrap();
    assert_eq!(
        claim(&mut st, "w2", at(3)),
        Some(after),
        "archived completed dep counts"
    );

    // A dependency absent from the queue and from the archive map was archived after completing.
    let mut st = board();
    let mut t = Task::new(50, "orphan dep", t0());
    t.depends_on = vec![49];
    st.tasks.push(t);
    assert_eq!(claim(&mut st, "w1", at(1)), Some(50));

    // An archived failed or cancelled dependency blocks.
    for s in [TaskStatus::Cancelled, TaskStatus::Failed] {
        let mut st = board();
        st.archived.insert(49, s);
        let mut t = Task::new(50, "blocked", t0());
        t.depends_on = vec![49];
        st.tasks.push(t);
        let reason = claim_reason(&mut st, "w1", at(1));
        assert!(reason.contains("blocked"), "{reason}");
    }

    // A dependency on the queue that failed or was cancelled blocks.
    let mut st = board();
    let dep = add(&mut st, "dep", t0());
    let after = add_task(
        &mut st,
        NewTask {
            after: vec![dep],
            ..nt("after")
        },
        t0(),
    );
    cancel(&mut st, dep, at(1)).unwrap();
    let statuses: HashMap<u64, TaskStatus> = st.tasks.iter().map(|t| (t.id, t.status)).collect();
    assert_eq!(
        eligibility(task(&st, after), "w1", None, &st, &statuses, at(2)),
        Err(Ineligible::Blocked)
    );
}

#[test]
fn assigned_tasks_go_to_their_worker_unless_it_is_offline_or_stale() {
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    register(&mut st, "other", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        t0(),
    );
    // The owner is alive: nobody else may take it.
    assert_eq!(claim(&mut st, "other", at(1)), None);
    assert!(claim_reason(&mut st, "other", at(1)).contains("assigned to other workers"));
    // Just at the stale limit the owner is still alive...
    assert_eq!(claim(&mut st, "other", at(120)), None);
    // ...one second past it, the owner is stale and the task is up for grabs.
    assert_eq!(claim(&mut st, "other", at(121)), Some(id));

    // An offline owner: takeable at once.
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        t0(),
    );
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "owner".into(),
        }),
        at(1),
    )
    .unwrap();
    assert_eq!(claim(&mut st, "other", at(2)), Some(id));

    // The owner itself may always take it.
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "owner", at(500)), Some(id));

    // An owner that never registered may still come, for the fallback time after the task
    // was added; then anyone may take it.
    let mut st = board();
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("later".into()),
            ..nt("for later")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "other", at(120)), None);
    assert_eq!(claim(&mut st, "other", at(121)), Some(id));

    // A heartbeat brings a stale owner back.
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        t0(),
    );
    heartbeat(&mut st, "owner", at(200));
    assert_eq!(claim(&mut st, "other", at(201)), None);
    assert_eq!(claim(&mut st, "owner", at(202)), Some(id));
}

#[test]
fn backoff_delays_the_next_claim() {
    let mut st = board();
    let id = add(&mut st, "flaky", t0());
    claim(&mut st, "w1", at(1));
    fail(&mut st, id, "w1", false, at(2)).unwrap();
    assert_eq!(task(&st, id).not_before, Some(at(12)));
    assert_eq!(claim(&mut st, "w1", at(11)), None);
    assert!(claim_reason(&mut st, "w1", at(11)).contains("retry delay"));
    assert_eq!(claim(&mut st, "w1", at(12)), Some(id));
    assert_eq!(task(&st, id).not_before, None);
    assert_eq!(task(&st, id).attempts, 2);
}

// ---------------------------------------------------------------------------------------------
// complete, fail, release, cancel, retry
// ---------------------------------------------------------------------------------------------

#[test]
fn complete_by_the_claimant() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(1));
    let r = run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            result: Some(json!({"ok": true})),
        }),
        at(2),
    )
    .unwrap();
    let Reply::Task { task: view } = r else {
        panic!("expected Task")
    };
    assert_eq!(view.task.status, TaskStatus::Completed);
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.completed_by.as_deref(), Some("w1"));
    assert_eq!(t.completed_at, Some(at(2)));
    assert_eq!(t.result, Some(json!({"ok": true})));
    assert_eq!(t.lease_expires_at, None);
    assert_eq!(t.attempts, 1);
    let w = &st.workers["w1"];
    assert_eq!(w.last_task_completed, Some(at(2)));
    assert_eq!(w.current_task, None);
    assert!(!st.holds_task("w1"));
    assert!(st.outbox.is_empty());
}

#[test]
fn only_the_claimant_may_finish_a_task() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    let pending = add(&mut st, "b", t0());
    st.archived.insert(7, TaskStatus::Completed);
    claim(&mut st, "w1", at(1));
    let before = snapshot(&st);
    assert!(is_conflict(&complete(&mut st, id, "w2", at(2))));
    assert!(is_conflict(&fail(&mut st, id, "w2", false, at(2))));
    assert!(is_conflict(&release(&mut st, id, "w2", at(2))));
    assert!(is_conflict(&complete(&mut st, pending, "w1", at(2))));
    assert!(matches!(
        complete(&mut st, 999, "w1", at(2)),
        Err(Error::UnknownTask(999))
    ));
    assert!(
        is_conflict(&complete(&mut st, 7, "w1", at(2))),
        "archived tasks cannot change"
    );
    assert!(is_invalid(&complete(&mut st, id, "w 1", at(2))));
    assert!(snapshot(&st) == before);
    // The refused fail's error was kept in the outbox (from the fail by w2).
    assert!(
        st.outbox
            .iter()
            .any(|m| m.kind == MessageKind::Result && m.agent == "w2" && m.message == "boom")
    );
    complete(&mut st, id, "w1", at(3)).unwrap();
    assert!(
        is_conflict(&complete(&mut st, id, "w1", at(4))),
        "no second completion"
    );
}

#[test]
fn a_stale_attempt_number_is_a_conflict() {
    let mut st = board();
    st.settings.retry_backoff_secs = 0;
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(1));
    // The lease lapses and the same worker claims again: attempt 2.
    assert_eq!(requeue(&mut st, at(61)), vec![id]);
    assert_eq!(claim(&mut st, "w1", at(61)), Some(id));
    assert_eq!(task(&st, id).attempts, 2);
    for op in [
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            result: None,
        }),
        Op::Fail(op::Fail {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            error: "e".into(),
            no_retry: false,
        }),
        Op::Release(op::Release {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
        }),
    ] {
        let r = run(&mut st, op, at(62));
        assert!(is_conflict(&r), "{r:?}");
        let Err(e) = r else { unreachable!() };
        assert!(e.to_string().contains("attempt 2"), "{e}");
        assert_eq!(status(&st, id), TaskStatus::InProgress);
    }
    run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(2),
            result: None,
        }),
        at(62),
    )
    .unwrap();
    assert_eq!(status(&st, id), TaskStatus::Completed);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let s = board().settings; // 10 s doubling, capped at 100 s
    let delays: Vec<u64> = (1..=7).map(|a| backoff_secs(&s, a)).collect();
    assert_eq!(delays, vec![10, 20, 40, 80, 100, 100, 100]);
    assert_eq!(backoff_secs(&s, 0), 10, "attempt 0 is treated as the first");
    assert_eq!(backoff_secs(&s, u32::MAX), 100, "no overflow");

    // Through the rules: each failed attempt waits twice as long, up to the cap.
    let mut st = board();
    let id = add_task(
        &mut st,
        NewTask {
            max_retries: Some(10),
            ..nt("flaky")
        },
        t0(),
    );
    let mut now = 0;
    for expected in [10, 20, 40, 80, 100, 100] {
        assert_eq!(claim(&mut st, "w1", at(now)), Some(id));
        fail(&mut st, id, "w1", false, at(now)).unwrap();
        let t = task(&st, id);
        assert_eq!(t.status, TaskStatus::Pending);
        assert_eq!(t.not_before, Some(at(now + expected)));
        assert_eq!(t.last_error.as_deref(), Some("boom"));
        assert!(t.claimed_by.is_none() && t.lease_expires_at.is_none());
        now += expected;
    }
}

#[test]
fn failing_past_the_retries_fails_for_good() {
    let mut st = board();
    st.settings.retry_backoff_secs = 0;
    // Board default: 2 retries, so the third failed attempt is final.
    let id = add(&mut st, "flaky", t0());
    for attempt in 1..=3 {
        assert_eq!(claim(&mut st, "w1", at(attempt)), Some(id));
        fail(&mut st, id, "w1", false, at(attempt)).unwrap();
        let expected = if attempt <= 2 {
            TaskStatus::Pending
        } else {
            TaskStatus::Failed
        };
        assert_eq!(status(&st, id), expected, "after attempt {attempt}");
    }
    let t = task(&st, id);
    assert_eq!(t.attempts, 3);
    assert_eq!(t.ended_at, Some(at(3)));
    assert_eq!(t.not_before, None);
    assert_eq!(claim(&mut st, "w1", at(100)), None);

    // max_retries 0: the first failure is final.
    let once = add_task(
        &mut st,
        NewTask {
            max_retries: Some(0),
            ..nt("once")
        },
        at(200),
    );
    claim(&mut st, "w1", at(200));
    fail(&mut st, once, "w1", false, at(201)).unwrap();
    assert_eq!(status(&st, once), TaskStatus::Failed);

    // no_retry: final whatever the retries left.
    let nr = add_task(
        &mut st,
        NewTask {
            max_retries: Some(9),
            ..nt("no retry")
        },
        at(300),
    );
    claim(&mut st, "w1", at(300));
    fail(&mut st, nr, "w1", true, at(301)).unwrap();
    assert_eq!(status(&st, nr), TaskStatus::Failed);
    assert_eq!(task(&st, nr).attempts, 1);
}

#[test]
fn fail_needs_an_error_text() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(1));
    for error in ["", "  ", &"e".repeat(validate::MAX_MESSAGE + 1)] {
        assert_invalid_untouched(
            &mut st,
            Op::Fail(op::Fail {
                task: id,
                worker: "w1".into(),
                attempt: None,
                error: error.to_string(),
                no_retry: false,
            }),
            at(2),
        );
    }
}

#[test]
fn release_gives_the_task_back_without_counting_the_attempt() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(1));
    release(&mut st, id, "w1", at(2)).unwrap();
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.attempts, 0);
    assert!(t.claimed_by.is_none() && t.claimed_at.is_none() && t.lease_expires_at.is_none());
    assert_eq!(t.not_before, None, "no backoff after a release");
    assert_eq!(st.workers["w1"].current_task, None);
    assert_eq!(claim(&mut st, "w2", at(2)), Some(id));
    assert_eq!(task(&st, id).attempts, 1);
    assert!(is_conflict(&release(&mut st, id, "w1", at(3))));
}

#[test]
fn cancel_ends_anything_not_finished() {
    let mut st = board();
    let pending = add(&mut st, "pending", t0());
    let claimed = add_task(
        &mut st,
        NewTask {
            priority: Priority::High,
            ..nt("claimed")
        },
        t0(),
    );
    let failed = add_task(
        &mut st,
        NewTask {
            max_retries: Some(0),
            priority: Priority::High,
            ..nt("failed")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "w1", at(1)), Some(claimed));
    assert_eq!(claim(&mut st, "w2", at(1)), Some(failed));
    fail(&mut st, failed, "w2", false, at(2)).unwrap();
    assert_eq!(status(&st, failed), TaskStatus::Failed);

    run(
        &mut st,
        Op::Cancel(op::Cancel {
            task: pending,
            reason: Some("not needed".into()),
        }),
        at(3),
    )
    .unwrap();
    let t = task(&st, pending);
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(t.ended_at, Some(at(3)));
    assert_eq!(t.last_error.as_deref(), Some("cancelled: not needed"));

    cancel(&mut st, claimed, at(3)).unwrap();
    let t = task(&st, claimed);
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(t.claimed_by.is_none() && t.lease_expires_at.is_none());
    assert_eq!(st.workers["w1"].current_task, None);
    assert!(!st.holds_task("w1"));

    cancel(&mut st, failed, at(3)).unwrap();
    assert_eq!(status(&st, failed), TaskStatus::Cancelled);

    // Already cancelled, or completed: conflict.
    assert!(is_conflict(&cancel(&mut st, pending, at(4))));
    let done = add(&mut st, "done", at(5));
    claim(&mut st, "w1", at(5));
    complete(&mut st, done, "w1", at(6)).unwrap();
    assert!(is_conflict(&cancel(&mut st, done, at(7))));
    assert!(matches!(
        cancel(&mut st, 4242, at(7)),
        Err(Error::UnknownTask(4242))
    ));

    // The former claimant's late result is refused but kept.
    let r = run(
        &mut st,
        Op::Complete(op::Complete {
            task: claimed,
            worker: "w1".into(),
            attempt: None,
            result: Some(json!("late")),
        }),
        at(8),
    );
    assert!(is_conflict(&r));
    assert!(
        st.outbox
            .iter()
            .any(|m| m.kind == MessageKind::Result && m.task_id == Some(claimed))
    );
}

#[test]
fn retry_puts_a_failed_task_back() {
    let mut st = board();
    let id = add_task(
        &mut st,
        NewTask {
            max_retries: Some(0),
            ..nt("a")
        },
        t0(),
    );
    assert!(
        is_conflict(&retry(&mut st, id, at(1))),
        "pending cannot be retried"
    );
    claim(&mut st, "w1", at(1));
    assert!(
        is_conflict(&retry(&mut st, id, at(1))),
        "in progress cannot be retried"
    );
    fail(&mut st, id, "w1", false, at(2)).unwrap();
    retry(&mut st, id, at(3)).unwrap();
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.attempts, 0);
    assert_eq!(t.not_before, None);
    assert_eq!(t.ended_at, None);
    assert_eq!(claim(&mut st, "w1", at(3)), Some(id));
    complete(&mut st, id, "w1", at(4)).unwrap();
    assert!(
        is_conflict(&retry(&mut st, id, at(5))),
        "completed cannot be retried"
    );
    assert!(matches!(
        retry(&mut st, 4242, at(5)),
        Err(Error::UnknownTask(4242))
    ));
    st.archived.insert(7, TaskStatus::Failed);
    assert!(
        is_conflict(&retry(&mut st, 7, at(5))),
        "archived tasks cannot change"
    );
}

fn set_priority(st: &mut State, id: u64, p: Priority, now: Timestamp) -> Result<Reply> {
    run(
        st,
        Op::SetPriority(op::SetPriority {
            task: id,
            priority: p,
        }),
        now,
    )
}

#[test]
fn set_priority_changes_what_is_claimed_first_until_the_task_is_finished() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    let b = add(&mut st, "b", at(1));
    // Raised, b is claimed before the older a.
    let r = set_priority(&mut st, b, Priority::High, at(2)).unwrap();
    assert!(matches!(&r, Reply::Task { task } if task.task.priority == Priority::High));
    assert_eq!(task(&st, b).priority, Priority::High);
    assert!(st.touched.contains(&b) && st.dirty.tasks);
    // Setting the priority it has changes nothing that must be written.
    st.touched.clear();
    st.dirty = Dirty::default();
    set_priority(&mut st, b, Priority::High, at(2)).unwrap();
    assert!(st.touched.is_empty() && !st.dirty.tasks);
    // A claimed task may change too; its claim stays as it was.
    assert_eq!(claim(&mut st, "w1", at(3)), Some(b));
    set_priority(&mut st, b, Priority::Low, at(4)).unwrap();
    let t = task(&st, b);
    assert_eq!(
        (t.priority, t.status, t.claimed_by.as_deref(), t.attempts),
        (Priority::Low, TaskStatus::InProgress, Some("w1"), 1)
    );
    // Lowered, a waits behind a newer normal task.
    let c = add(&mut st, "c", at(5));
    set_priority(&mut st, a, Priority::Low, at(6)).unwrap();
    assert_eq!(claim(&mut st, "w2", at(7)), Some(c));
    assert_eq!(claim(&mut st, "w3", at(8)), Some(a));
    // Finished tasks keep their priority: completed, failed, cancelled.
    complete(&mut st, b, "w1", at(9)).unwrap();
    fail(&mut st, c, "w2", true, at(9)).unwrap();
    cancel(&mut st, a, at(9)).unwrap();
    for id in [a, b, c] {
        let before = snapshot(&st);
        let r = set_priority(&mut st, id, Priority::High, at(10));
        assert!(is_conflict(&r), "{id}: {r:?}");
        assert!(snapshot(&st) == before, "a refused change changes nothing");
    }
    // Unknown and archived tasks.
    assert!(matches!(
        set_priority(&mut st, 4242, Priority::High, at(10)),
        Err(Error::UnknownTask(4242))
    ));
    st.archived.insert(7, TaskStatus::Completed);
    assert!(is_conflict(&set_priority(
        &mut st,
        7,
        Priority::High,
        at(10)
    )));
}

#[test]
fn a_retried_set_priority_is_answered_from_the_board() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    let op = Op::SetPriority(op::SetPriority {
        task: id,
        priority: Priority::High,
    });
    let first = apply_keyed(&mut st, op.clone(), Some("k-1"), at(1)).unwrap();
    assert_eq!(task(&st, id).request_key.as_deref(), Some("k-1"));
    // Meanwhile someone else lowers it; the retry of the first request does not raise it again.
    set_priority(&mut st, id, Priority::Low, at(2)).unwrap();
    let again = apply_keyed(&mut st, op, Some("k-1"), at(3)).unwrap();
    assert!(matches!(&again, Reply::Task { task } if task.task.id == id));
    assert_eq!(task(&st, id).priority, Priority::Low);
    assert!(
        matches!(&first, Reply::Task { task } if task.task.request_key.as_deref() == Some("k-1"))
    );
}

// ---------------------------------------------------------------------------------------------
// leases
// ---------------------------------------------------------------------------------------------

#[test]
fn an_expired_lease_counts_an_attempt_and_requeues_without_delay() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    assert_eq!(
        requeue(&mut st, at(59)),
        Vec::<u64>::new(),
        "not yet expired"
    );
    assert_eq!(
        requeue(&mut st, at(60)),
        vec![id],
        "expired at the lease end"
    );
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.attempts, 1, "the lapsed attempt counts");
    assert_eq!(
        t.not_before, None,
        "a dead worker is not the task's failure"
    );
    assert!(t.claimed_by.is_none() && t.lease_expires_at.is_none());
    assert_eq!(
        t.last_error.as_deref(),
        Some("lease expired while claimed by w1")
    );
    assert_eq!(st.workers["w1"].current_task, None);
}

#[test]
fn lease_expiry_ends_in_failed_when_retries_are_exhausted() {
    let mut st = board();
    st.settings.retry_backoff_secs = 0;
    let id = add_task(
        &mut st,
        NewTask {
            max_retries: Some(1),
            ..nt("a")
        },
        t0(),
    );
    claim(&mut st, "w1", at(0));
    assert_eq!(requeue(&mut st, at(60)), vec![id]);
    assert_eq!(status(&st, id), TaskStatus::Pending);
    claim(&mut st, "w1", at(60));
    assert_eq!(requeue(&mut st, at(120)), vec![id]);
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.attempts, 2);
    assert_eq!(t.ended_at, Some(at(120)));
}

#[test]
fn a_requeued_claimants_result_is_refused_but_kept() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    requeue(&mut st, at(61));
    let before = snapshot(&st);
    let r = run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            result: Some(json!("all done")),
        }),
        at(62),
    );
    let Err(Error::Conflict(msg)) = r else {
        panic!("expected Conflict, got {r:?}")
    };
    assert!(msg.contains("lease expired"), "{msg}");
    assert!(snapshot(&st) == before, "the task is not completed");
    assert_eq!(st.outbox.len(), 1);
    let m = &st.outbox[0];
    assert_eq!(m.kind, MessageKind::Result);
    assert_eq!(m.task_id, Some(id));
    assert_eq!(m.agent, "w1");
    assert_eq!(m.message, "all done");
    assert_eq!(m.seq, Some(0));
    assert!(m.extra.contains_key("note"));

    // A JSON result is kept as its JSON text.
    let r = run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: None,
            result: Some(json!({"n": 1})),
        }),
        at(63),
    );
    assert!(is_conflict(&r));
    assert_eq!(st.outbox[1].message, r#"{"n":1}"#);
}

#[test]
fn the_claimants_own_late_write_wins_before_the_requeue() {
    // Expired, but no write op has requeued it yet: the claimant's complete goes through.
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    complete(&mut st, id, "w1", at(100)).unwrap();
    assert_eq!(status(&st, id), TaskStatus::Completed);

    // Same for a heartbeat: it extends the lapsed lease instead of losing the claim.
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    heartbeat(&mut st, "w1", at(100));
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::InProgress);
    assert_eq!(t.lease_expires_at, Some(at(160)));
}

#[test]
fn every_write_op_requeues_expired_leases() {
    let ops: Vec<(&str, Op)> = vec![
        (
            "add",
            Op::Add(op::Add {
                task: nt("another"),
            }),
        ),
        (
            "claim",
            Op::Claim(op::Claim {
                worker: "w2".into(),
            }),
        ),
        (
            "heartbeat",
            Op::Heartbeat(op::Heartbeat {
                worker: "w2".into(),
            }),
        ),
        (
            "register",
            Op::Register(op::Register {
                worker: "w2".into(),
                capabilities: vec![],
                session_id: None,
            }),
        ),
        (
            "should-continue",
            Op::ShouldContinue(op::ShouldContinue {
                worker: "w2".into(),
                max_idle_secs: 600,
            }),
        ),
        ("requeue-stale", Op::RequeueStale(op::RequeueStale)),
    ];
    for (name, op) in ops {
        let mut st = board();
        let id = add(&mut st, "a", t0());
        let other = add(&mut st, "b", t0());
        claim(&mut st, "w1", at(0));
        run(&mut st, op, at(60)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = task(&st, id);
        if name == "claim" {
            // Taken back, then claimed at once (no retry delay after a lapsed lease).
            assert_eq!(t.status, TaskStatus::InProgress, "{name} requeues first");
            assert_eq!(t.claimed_by.as_deref(), Some("w2"));
            assert_eq!(t.attempts, 2, "{name}");
        } else {
            assert_eq!(t.status, TaskStatus::Pending, "{name} requeues");
            assert_eq!(t.attempts, 1, "{name}");
        }
        let _ = other;
    }
    // Ops on other tasks too: cancel, complete, fail, release, retry.
    let mut st = board();
    st.settings.retry_backoff_secs = 0;
    let a = add(&mut st, "a", t0());
    let b = add_task(
        &mut st,
        NewTask {
            lease_secs: Some(1000),
            ..nt("b")
        },
        t0(),
    );
    let c = add(&mut st, "c", t0());
    claim(&mut st, "w1", at(0));
    claim(&mut st, "w2", at(0));
    complete(&mut st, b, "w2", at(60)).unwrap();
    assert_eq!(status(&st, a), TaskStatus::Pending, "complete requeues");
    claim(&mut st, "w1", at(60)); // a again, attempt 2
    cancel(&mut st, c, at(120)).unwrap();
    assert_eq!(status(&st, a), TaskStatus::Pending, "cancel requeues");
    assert_eq!(task(&st, a).attempts, 2);
}

#[test]
fn a_claim_requeues_before_it_picks() {
    let mut st = board();
    st.settings.retry_backoff_secs = 0;
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    assert_eq!(
        claim(&mut st, "w2", at(60)),
        Some(id),
        "the lapsed task is taken over"
    );
    let t = task(&st, id);
    assert_eq!(t.claimed_by.as_deref(), Some("w2"));
    assert_eq!(t.attempts, 2);
    assert_eq!(st.workers["w1"].current_task, None);
    assert_eq!(st.workers["w2"].current_task, Some(id));
    // The first claimant is refused, with its attempt or without.
    assert!(is_conflict(&complete(&mut st, id, "w1", at(61))));
}

#[test]
fn heartbeats_extend_leases_by_a_tenth_or_more() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    let other = add(&mut st, "b", t0());
    claim(&mut st, "w1", at(0));
    claim(&mut st, "w2", at(0));
    st.dirty = Dirty::default();
    // 5 s later the lease would move by 5 s < 6 s: only the worker file is written.
    heartbeat(&mut st, "w1", at(5));
    assert_eq!(task(&st, id).lease_expires_at, Some(at(60)));
    assert!(!st.dirty.tasks && st.dirty.workers);
    assert_eq!(st.workers["w1"].last_heartbeat, Some(at(5)));
    // 6 s later it moves by 6 s = lease/10: extended.
    heartbeat(&mut st, "w1", at(6));
    assert_eq!(task(&st, id).lease_expires_at, Some(at(66)));
    assert!(st.dirty.tasks);
    // Only the heartbeating worker's tasks are extended.
    assert_eq!(task(&st, other).lease_expires_at, Some(at(60)));
    // w2's lease lapses at 60 and is requeued by w1's heartbeat; w1's survives.
    heartbeat(&mut st, "w1", at(60));
    assert_eq!(status(&st, other), TaskStatus::Pending);
    assert_eq!(task(&st, id).lease_expires_at, Some(at(120)));
    assert!(is_invalid(&run(
        &mut st,
        Op::Heartbeat(op::Heartbeat {
            worker: String::new()
        }),
        at(61)
    )));
}

// ---------------------------------------------------------------------------------------------
// workers
// ---------------------------------------------------------------------------------------------

#[test]
fn register_sets_and_replaces_capabilities() {
    let mut st = board();
    register(&mut st, "w1", &["rust", "py"], t0());
    let w = &st.workers["w1"];
    assert_eq!(w.capabilities, strings(&["rust", "py"]));
    assert_eq!(w.status, ACTIVE);
    assert_eq!(w.registered_at, Some(t0()));
    register(&mut st, "w1", &["go"], at(10));
    let w = &st.workers["w1"];
    assert_eq!(w.capabilities, strings(&["go"]));
    assert_eq!(w.registered_at, Some(at(10)), "the idle clock restarts");
    for (worker, caps) in [
        ("", vec![]),
        ("a b", vec![]),
        ("w1", vec!["bad cap".to_string()]),
    ] {
        assert_invalid_untouched(
            &mut st,
            Op::Register(op::Register {
                worker: worker.into(),
                capabilities: caps,
                session_id: None,
            }),
            at(11),
        );
    }
}

#[test]
fn deregister_releases_the_workers_tasks() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    let b = add(&mut st, "b", t0());
    let c = add(&mut st, "c", t0());
    claim(&mut st, "w1", at(0));
    claim(&mut st, "w1", at(0));
    claim(&mut st, "w2", at(0));
    let r = run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "w1".into(),
        }),
        at(5),
    )
    .unwrap();
    let Reply::Worker { worker, released } = r else {
        panic!("expected Worker")
    };
    assert_eq!(released, vec![a, b]);
    assert_eq!(worker.state, crate::worker::WorkerState::Offline);
    for id in [a, b] {
        let t = task(&st, id);
        assert_eq!(t.status, TaskStatus::Pending);
        assert_eq!(t.attempts, 0);
        assert!(t.claimed_by.is_none());
    }
    assert_eq!(status(&st, c), TaskStatus::InProgress, "w2 keeps its task");
    let w = &st.workers["w1"];
    assert_eq!(w.status, OFFLINE);
    assert_eq!(w.offline_reason.as_deref(), Some("deregistered"));
    assert_eq!(w.current_task, None);
    assert_invalid_untouched(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "ghost".into(),
        }),
        at(6),
    );
}

#[test]
fn should_continue_while_holding_or_with_work_or_not_idle_long() {
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    // Idle since registration: 100 s < 300 s.
    let (go, reason, task_id) = should_continue(&mut st, "w1", 300, at(100));
    assert!(go && task_id.is_none(), "{reason}");
    assert!(reason.starts_with("idle for 1m40s of 5m"), "{reason}");
    // Heartbeats do not reset the idle clock; at 300 s it stops and goes offline.
    heartbeat(&mut st, "w1", at(250));
    let (go, reason, _) = should_continue(&mut st, "w1", 300, at(300));
    assert!(!go, "{reason}");
    assert!(reason.contains("now offline"), "{reason}");
    let w = &st.workers["w1"];
    assert_eq!(w.status, OFFLINE);
    assert_eq!(w.offline_reason.as_deref(), Some("idle for 5m"));

    // Work appears: continue, naming the task, and the worker is active again.
    let id = add(&mut st, "work", at(301));
    let (go, _, task_id) = should_continue(&mut st, "w1", 300, at(302));
    assert!(go);
    assert_eq!(task_id, Some(id));
    assert_eq!(st.workers["w1"].status, ACTIVE);
    assert_eq!(
        status(&st, id),
        TaskStatus::Pending,
        "should-continue does not claim"
    );

    // Holding a task: continue, naming it, however long ago the claim was.
    claim(&mut st, "w1", at(303));
    heartbeat(&mut st, "w1", at(340));
    let (go, reason, task_id) = should_continue(&mut st, "w1", 1, at(350));
    assert!(go && task_id == Some(id), "{reason}");
    assert!(reason.contains("holds task"), "{reason}");

    // The idle clock starts again at the last completion.
    complete(&mut st, id, "w1", at(360)).unwrap();
    assert!(should_continue(&mut st, "w1", 100, at(459)).0);
    assert!(!should_continue(&mut st, "w1", 100, at(460)).0);

    // An unregistered worker is told to stop and is not created.
    let (go, reason, _) = should_continue(&mut st, "ghost", 100, at(500));
    assert!(!go && reason.contains("not registered"), "{reason}");
    assert!(!st.workers.contains_key("ghost"));
}

#[test]
fn should_continue_requeues_first() {
    let mut st = board();
    let id = add_task(
        &mut st,
        NewTask {
            max_retries: Some(0),
            ..nt("a")
        },
        t0(),
    );
    claim(&mut st, "w1", at(0));
    // The lease lapsed: w1 no longer holds it, it failed for good, and w1 idles since the claim.
    let (go, reason, task_id) = should_continue(&mut st, "w1", 30, at(60));
    assert!(!go, "{reason}");
    assert_eq!(task_id, None);
    assert_eq!(status(&st, id), TaskStatus::Failed);
    assert_eq!(st.workers["w1"].status, OFFLINE);
}

#[test]
fn an_offline_worker_comes_back_by_claiming_or_heartbeating() {
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "w1".into(),
        }),
        at(1),
    )
    .unwrap();
    heartbeat(&mut st, "w1", at(2));
    assert_eq!(st.workers["w1"].status, ACTIVE);
    assert_eq!(st.workers["w1"].offline_reason, None);
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "w1".into(),
        }),
        at(3),
    )
    .unwrap();
    add(&mut st, "a", at(4));
    claim(&mut st, "w1", at(5));
    assert_eq!(st.workers["w1"].status, ACTIVE);
}

// ---------------------------------------------------------------------------------------------
// views and archiving
// ---------------------------------------------------------------------------------------------

#[test]
fn blocked_ids_are_transitive() {
    let mk = |id: u64, status: TaskStatus, deps: &[u64]| {
        let mut t = Task::new(id, format!("t{id}"), t0());
        t.status = status;
        t.depends_on = deps.to_vec();
        t
    };
    let tasks = vec![
        mk(1, TaskStatus::Cancelled, &[]),
        mk(2, TaskStatus::Pending, &[1]),    // directly blocked
        mk(3, TaskStatus::Pending, &[2]),    // through 2
        mk(4, TaskStatus::Pending, &[3, 6]), // through 3
        mk(5, TaskStatus::Failed, &[]),
        mk(6, TaskStatus::Pending, &[]),     // free
        mk(7, TaskStatus::Pending, &[6]),    // waiting, not blocked
        mk(8, TaskStatus::Pending, &[5]),    // failed dep
        mk(9, TaskStatus::Pending, &[100]),  // archived cancelled
        mk(10, TaskStatus::Pending, &[101]), // archived completed
        mk(11, TaskStatus::Pending, &[102]), // absent: counts as completed
        mk(12, TaskStatus::InProgress, &[]),
        mk(13, TaskStatus::Pending, &[12, 9]), // through 9
        mk(14, TaskStatus::Cancelled, &[1]),   // not pending: never "blocked"
    ];
    let mut archived = BTreeMap::new();
    archived.insert(100, TaskStatus::Cancelled);
    archived.insert(101, TaskStatus::Completed);
    let mut got: Vec<u64> = blocked_ids(&tasks, &archived).into_iter().collect();
    got.sort_unstable();
    assert_eq!(got, vec![2, 3, 4, 8, 9, 13]);

    // Order on the queue does not matter (dependents before their dependencies).
    let mut reversed = tasks.clone();
    reversed.reverse();
    let mut got2: Vec<u64> = blocked_ids(&reversed, &archived).into_iter().collect();
    got2.sort_unstable();
    assert_eq!(got2, got);

    let mut st = board();
    st.tasks = tasks;
    st.archived = archived;
    let views = task_views(&st, Some(StatusFilter::Blocked), t0());
    assert_eq!(views.len(), 6);
    assert!(views.iter().all(|v| v.blocked));
    let report = status_report(&st, &BTreeMap::new(), 0, t0());
    assert_eq!(report.blocked, 6);
}

#[test]
fn archivable_keeps_what_unfinished_tasks_need_and_never_failed_tasks() {
    let mk = |id: u64, status: TaskStatus, deps: &[u64]| {
        let mut t = Task::new(id, format!("t{id}"), t0());
        t.status = status;
        t.depends_on = deps.to_vec();
        t
    };
    let tasks = vec![
        mk(1, TaskStatus::Completed, &[]), // needed by pending 5: kept
        mk(2, TaskStatus::Completed, &[]), // needed by in-progress 6: kept
        mk(3, TaskStatus::Completed, &[]), // needed only by completed 7: taken
        mk(4, TaskStatus::Failed, &[]),    // failed: never taken
        mk(5, TaskStatus::Pending, &[1, 8]),
        mk(6, TaskStatus::InProgress, &[2]),
        mk(7, TaskStatus::Completed, &[3]), // taken
        mk(8, TaskStatus::Cancelled, &[]),  // needed by pending 5: kept
        mk(9, TaskStatus::Cancelled, &[]),  // taken
        mk(10, TaskStatus::Failed, &[11]),  // failed, and its dep is not needed
        mk(11, TaskStatus::Completed, &[]), // taken: only a failed task depends on it
    ];
    let (take, kept) = archivable(&tasks);
    let taken: Vec<u64> = take.iter().map(|&i| tasks[i].id).collect();
    assert_eq!(taken, vec![3, 7, 9, 11]);
    assert_eq!(kept, 3);
    assert!(taken.iter().all(|id| {
        let t = tasks.iter().find(|t| t.id == *id).unwrap();
        t.status != TaskStatus::Failed
    }));
}

#[test]
fn archived_dependencies_after_compaction_still_work() {
    // Compaction takes completed tasks nothing unfinished needs; the dependents that stay
    // behind see them as archived (or absent) and are claimable.
    let mut st = board();
    let dep = add(&mut st, "dep", t0());
    claim(&mut st, "w1", at(1));
    complete(&mut st, dep, "w1", at(2)).unwrap();
    let after = add_task(
        &mut st,
        NewTask {
            after: vec![dep],
            ..nt("after")
        },
        at(3),
    );
    let (take, kept) = archivable(&st.tasks);
    assert!(
        take.is_empty() && kept == 1,
        "dep is needed by a pending task"
    );
    // Pretend the store archived it anyway (as if loaded for another op): still claimable.
    st.tasks.retain(|t| t.id != dep);
    st.archived.insert(dep, TaskStatus::Completed);
    assert_eq!(claim(&mut st, "w2", at(4)), Some(after));
}

// ---------------------------------------------------------------------------------------------
// validation and misc
// ---------------------------------------------------------------------------------------------

#[test]
fn validation_errors_are_invalid_and_change_nothing() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    register(&mut st, "w1", &[], t0());
    claim(&mut st, "w1", at(1));
    st.dirty = Dirty::default();
    let long = "w".repeat(validate::MAX_NAME + 1);
    let bad_ops = vec![
        Op::Claim(op::Claim {
            worker: "bad/id".into(),
        }),
        Op::Claim(op::Claim { worker: long }),
        Op::Complete(op::Complete {
            task: id,
            worker: "".into(),
            attempt: None,
            result: None,
        }),
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: None,
            result: Some(json!("r".repeat(validate::MAX_RESULT + 1))),
        }),
        Op::Release(op::Release {
            task: id,
            worker: "w 1".into(),
            attempt: None,
        }),
        Op::Cancel(op::Cancel {
            task: id,
            reason: Some("r".repeat(validate::MAX_MESSAGE + 1)),
        }),
        Op::Heartbeat(op::Heartbeat {
            worker: "w\n1".into(),
        }),
        Op::ShouldContinue(op::ShouldContinue {
            worker: "w:1".into(),
            max_idle_secs: 10,
        }),
        Op::Send(op::Send {
            agent: "w1".into(),
            message: " ".into(),
            task: None,
        }),
        Op::Ask(op::Ask {
            agent: "bad agent".into(),
            question: "q".into(),
            task: None,
            wait_secs: None,
        }),
    ];
    for op in bad_ops {
        assert_invalid_untouched(&mut st, op, at(2));
    }
    assert_eq!(status(&st, id), TaskStatus::InProgress);
}

#[test]
fn messages_and_answers() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    st.next_seq = 5;
    let Reply::Message { message: q } = run(
        &mut st,
        Op::Ask(op::Ask {
            agent: "w1".into(),
            question: "which db?".into(),
            task: Some(id),
            wait_secs: None,
        }),
        at(1),
    )
    .unwrap() else {
        panic!("expected Message")
    };
    assert_eq!(q.seq, Some(5));
    assert_eq!(q.kind, MessageKind::Question);
    assert!(matches!(
        run(
            &mut st,
            Op::Send(op::Send {
                agent: "w1".into(),
                message: "hi".into(),
                task: Some(999)
            }),
            at(1)
        ),
        Err(Error::UnknownTask(999))
    ));
    st.log = st.outbox.clone();
    let Reply::Message { message: a } = run(
        &mut st,
        Op::Answer(op::Answer {
            agent: "lead".into(),
            question: 5,
            answer: "postgres".into(),
        }),
        at(2),
    )
    .unwrap() else {
        panic!("expected Message")
    };
    assert_eq!(a.reply_to, Some(5));
    assert_eq!(a.task_id, Some(id));
    assert_eq!(a.seq, Some(6));
    st.log = st.outbox.clone();
    assert!(is_invalid(&run(
        &mut st,
        Op::Answer(op::Answer {
            agent: "lead".into(),
            question: 6,
            answer: "x".into()
        }),
        at(3)
    )));
    assert!(is_invalid(&run(
        &mut st,
        Op::Answer(op::Answer {
            agent: "lead".into(),
            question: 77,
            answer: "x".into()
        }),
        at(3)
    )));
}

#[test]
fn reads_and_store_ops_are_not_rules() {
    let mut st = board();
    for op in [
        Op::Status(op::Status),
        Op::Compact(op::Compact),
        Op::Repair(op::Repair),
        Op::Workers(op::Workers),
    ] {
        assert!(matches!(apply(&mut st, op, t0()), Err(Error::Protocol(_))));
    }
}

#[test]
fn claims_of_the_original_plan_expire_from_their_claim_time() {
    // The original plan's files have claimed_at but no lease_expires_at.
    let mut st = board();
    let mut t = Task::new(5, "old claim", t0());
    t.status = TaskStatus::InProgress;
    t.claimed_by = Some("w1".into());
    t.claimed_at = Some(t0());
    t.attempts = 1;
    st.tasks.push(t.clone());
    assert_eq!(requeue(&mut st, at(59)), Vec::<u64>::new());
    assert_eq!(requeue(&mut st, at(60)), vec![5]);
    assert_eq!(status(&st, 5), TaskStatus::Pending);

    // A heartbeat gives such a claim a lease.
    let mut st = board();
    st.tasks.push(t);
    heartbeat(&mut st, "w1", at(10));
    assert_eq!(task(&st, 5).lease_expires_at, Some(at(70)));
}

#[test]
fn a_worker_entry_without_any_time_is_stale_and_never_seen() {
    let mut st = board();
    let mut w = Worker::new(vec![], t0());
    w.registered_at = None;
    w.last_heartbeat = None;
    assert_eq!(w.state(false, 120, t0()), crate::worker::WorkerState::Stale);
    st.workers.insert("ghost".into(), w);
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("ghost".into()),
            ..nt("for ghost")
        },
        t0(),
    );
    // Like an assignee that never registered: its task falls back after the fallback time.
    assert_eq!(claim(&mut st, "other", at(120)), None);
    assert_eq!(claim(&mut st, "other", at(121)), Some(id));
}

/// "Expired leases requeue on every write op" (rule text; ARCHITECTURE.md: "Expiry is applied
/// lazily by every write"). Message and progress ops are writes too.
#[test]
fn message_and_progress_writes_requeue_expired_leases_too() {
    let ops: Vec<(&str, Op)> = vec![
        (
            "send",
            Op::Send(op::Send {
                agent: "w2".into(),
                message: "hi".into(),
                task: None,
            }),
        ),
        (
            "ask",
            Op::Ask(op::Ask {
                agent: "w2".into(),
                question: "why?".into(),
                task: None,
                wait_secs: None,
            }),
        ),
        (
            "set-progress",
            Op::SetProgress(op::SetProgress {
                current_step: Some(json!(1)),
                total_steps: None,
                status: None,
                metadata: serde_json::Map::new(),
            }),
        ),
        (
            "answer",
            Op::Answer(op::Answer {
                agent: "lead".into(),
                question: 0,
                answer: "because".into(),
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, op) in ops {
        let mut st = board();
        let mut q = Message::new(MessageKind::Question, "w2", "why?", t0());
        q.seq = Some(0);
        st.log = vec![q];
        let id = add(&mut st, "a", t0());
        claim(&mut st, "w1", at(0));
        run(&mut st, op, at(60)).unwrap_or_else(|e| panic!("{name}: {e}"));
        if status(&st, id) != TaskStatus::Pending {
            wrong.push(name);
        }
    }
    assert!(
        wrong.is_empty(),
        "these write ops left an expired lease in place: {wrong:?}"
    );
}

/// A claimant whose lease expired and was requeued gets a conflict and its result is kept, even
/// when the task has since been finished by another worker and moved to the archive.
#[test]
fn a_late_result_for_a_since_archived_task_is_kept() {
    let mut st = board();
    st.settings.retry_backoff_secs = 0;
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    assert_eq!(
        claim(&mut st, "w2", at(60)),
        Some(id),
        "requeued and taken over"
    );
    complete(&mut st, id, "w2", at(61)).unwrap();
    // The store archives it (compaction) and loads its archived status for w1's late write.
    st.tasks.clear();
    st.archived.insert(id, TaskStatus::Completed);
    let r = run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            result: Some(json!("w1's work")),
        }),
        at(62),
    );
    assert!(is_conflict(&r), "{r:?}");
    assert!(
        st.outbox
            .iter()
            .any(|m| m.kind == MessageKind::Result && m.task_id == Some(id)),
        "the late result was dropped: {:?}",
        st.outbox
    );
}

#[test]
fn the_heartbeat_threshold_is_an_exact_tenth_of_the_lease() {
    // A 15 s lease: a tenth is 1.5 s, so a 1 s move is not enough and a 2 s move is.
    let mut st = board();
    let id = add_task(
        &mut st,
        NewTask {
            lease_secs: Some(15),
            ..nt("short")
        },
        t0(),
    );
    claim(&mut st, "w1", at(0));
    heartbeat(&mut st, "w1", at(1));
    assert_eq!(task(&st, id).lease_expires_at, Some(at(15)));
    heartbeat(&mut st, "w1", at(2));
    assert_eq!(task(&st, id).lease_expires_at, Some(at(17)));
}

#[test]
fn descriptions_are_one_line() {
    let mut st = board();
    for desc in ["two\nlines", "tab\there", "bell\u{7}"] {
        assert_invalid_untouched(&mut st, Op::Add(op::Add { task: nt(desc) }), t0());
    }
    // Surrounding whitespace (including a trailing newline) is trimmed, not refused.
    let id = add(&mut st, "  one line\n", t0());
    assert_eq!(task(&st, id).description, "one line");
}

// ---------------------------------------------------------------------------------------------
// Request keys: retried requests are answered, not applied twice
// ---------------------------------------------------------------------------------------------

fn keyed(st: &mut State, op: Op, key: &str, now: Timestamp) -> Result<Reply> {
    let r = apply_keyed(st, op, Some(key), now);
    // The store moves the outbox to the log; a keyed send searches the log.
    let out = std::mem::take(&mut st.outbox);
    st.log.extend(out);
    r
}

#[test]
fn a_retried_add_creates_one_task() {
    let mut st = board();
    let op = Op::Add(op::Add { task: nt("once") });
    let a = keyed(&mut st, op.clone(), "k1", t0()).unwrap();
    let b = keyed(&mut st, op.clone(), "k1", at(1)).unwrap();
    assert_eq!(a, b);
    assert_eq!(st.tasks.len(), 1);
    keyed(&mut st, op, "k2", at(2)).unwrap();
    assert_eq!(st.tasks.len(), 2, "another key is another request");
}

#[test]
fn a_retried_add_is_answered_after_a_worker_claimed_its_task() {
    // The add's reply was lost; before the retry came, a waiting worker claimed the task
    // (with a key of its own, which the task now carries as its last op's).
    let mut st = board();
    let op = Op::Add(op::Add { task: nt("once") });
    let Reply::Added { tasks } = keyed(&mut st, op.clone(), "add-1", t0()).unwrap() else {
        panic!("not added");
    };
    let claim = Op::Claim(op::Claim {
        worker: "w1".into(),
    });
    keyed(&mut st, claim, "claim-1", at(1)).unwrap();
    assert_eq!(st.tasks[0].request_key.as_deref(), Some("claim-1"));
    let again = keyed(&mut st, op, "add-1", at(2)).unwrap();
    assert_eq!(st.tasks.len(), 1, "the retry added no second task");
    let Reply::Added { tasks: replayed } = again else {
        panic!("not answered as an add: {again:?}");
    };
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].id, tasks[0].id);
    assert_eq!(
        replayed[0].claimed_by.as_deref(),
        Some("w1"),
        "the task as it is now"
    );
}

#[test]
fn a_retried_claim_returns_the_same_task_and_claims_no_second() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    add(&mut st, "b", t0());
    let claim = |st: &mut State, key: &str| match keyed(
        st,
        Op::Claim(op::Claim {
            worker: "w1".into(),
        }),
        key,
        at(1),
    ) {
        Ok(Reply::Claimed { claim: Some(c), .. }) => c.task,
        other => panic!("{other:?}"),
    };
    let first = claim(&mut st, "c1");
    let again = claim(&mut st, "c1");
    assert_eq!(first.id, a);
    assert_eq!(again, first);
    assert_eq!(
        st.tasks
            .iter()
            .filter(|t| t.status == TaskStatus::InProgress)
            .count(),
        1
    );
    assert_ne!(claim(&mut st, "c2").id, a, "a new key claims the next task");
}

#[test]
fn a_retried_complete_succeeds_instead_of_conflicting() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    keyed(
        &mut st,
        Op::Claim(op::Claim {
            worker: "w1".into(),
        }),
        "c",
        at(1),
    )
    .unwrap();
    let op = Op::Complete(op::Complete {
        task: id,
        worker: "w1".into(),
        attempt: None,
        result: Some(json!("done")),
    });
    let first = keyed(&mut st, op.clone(), "d", at(2)).unwrap();
    assert_eq!(keyed(&mut st, op.clone(), "d", at(3)).unwrap(), first);
    // Without the key, completing twice is a conflict.
    assert!(matches!(run(&mut st, op, at(4)), Err(Error::Conflict(_))));
}

#[test]
fn a_retried_send_writes_one_message() {
    let mut st = board();
    let op = Op::Send(op::Send {
        agent: "w1".into(),
        message: "hello".into(),
        task: None,
    });
    let a = keyed(&mut st, op.clone(), "m", t0()).unwrap();
    let b = keyed(&mut st, op, "m", at(1)).unwrap();
    assert_eq!(a, b);
    assert_eq!(st.log.len(), 1);
    assert_eq!(st.log[0].key.as_deref(), Some("m"));
}

#[test]
fn request_keys_are_bounded() {
    let mut st = board();
    let op = Op::Add(op::Add { task: nt("x") });
    assert!(matches!(
        apply_keyed(&mut st, op.clone(), Some(""), t0()),
        Err(Error::Invalid(_))
    ));
    let long = "k".repeat(MAX_KEY + 1);
    assert!(matches!(
        apply_keyed(&mut st, op, Some(&long), t0()),
        Err(Error::Invalid(_))
    ));
    assert!(st.tasks.is_empty());
}

// ---------------------------------------------------------------------------------------------
// dead, absent and waiting workers
// ---------------------------------------------------------------------------------------------

/// A board whose leases (1000 s) outlast the stale limit (120 s), so staleness shows alone.
fn long_leases() -> State {
    let mut st = board();
    st.settings.lease_secs = 1000;
    st
}

fn conflict_message(r: Result<Reply>) -> String {
    match r {
        Err(Error::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn a_stale_holders_task_is_taken_back_before_its_lease_ends() {
    let mut st = long_leases();
    register(&mut st, "w1", &[], t0());
    let id = add(&mut st, "a", t0());
    assert_eq!(claim(&mut st, "w1", at(0)), Some(id));
    // Seen within the stale limit: kept.
    assert_eq!(requeue(&mut st, at(120)), Vec::<u64>::new());
    // One second past it: taken back, long before the lease ends.
    assert_eq!(requeue(&mut st, at(121)), vec![id]);
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.attempts, 1, "the lost attempt counts");
    assert!(t.claimed_by.is_none() && t.lease_expires_at.is_none());
    let err = t.last_error.clone().unwrap_or_default();
    assert!(err.contains("w1") && err.contains("stale"), "{err}");
    assert_eq!(st.workers["w1"].current_task, None);
    // The late holder is told why, and its result is kept.
    let msg = conflict_message(run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            result: Some(json!("late")),
        }),
        at(122),
    ));
    assert!(
        msg.contains("no sign of life") && msg.contains("2m"),
        "{msg}"
    );
    assert!(!msg.contains("lease expired"), "{msg}");
    assert_eq!(st.outbox.last().map(|m| m.message.as_str()), Some("late"));
    assert_eq!(claim(&mut st, "w2", at(122)), Some(id));

    // A heartbeat is a sign of life: the clock starts again from it.
    let mut st = long_leases();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    heartbeat(&mut st, "w1", at(100));
    assert_eq!(requeue(&mut st, at(220)), Vec::<u64>::new());
    assert_eq!(requeue(&mut st, at(221)), vec![id]);

    // Any write by someone else takes it back on the way (here a claim, which then takes it).
    let mut st = long_leases();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    assert_eq!(claim(&mut st, "w2", at(121)), Some(id));
    assert_eq!(task(&st, id).attempts, 2);

    // A holder without a worker entry (a board of the original plan) goes by its lease only.
    let mut st = long_leases();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    st.workers.clear();
    assert_eq!(requeue(&mut st, at(999)), Vec::<u64>::new());
    assert_eq!(requeue(&mut st, at(1000)), vec![id]);
    let err = task(&st, id).last_error.clone().unwrap_or_default();
    assert_eq!(err, "lease expired while claimed by w1");
}

#[test]
fn an_expired_lease_says_so_in_the_conflict() {
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    // Seen recently (heartbeats without extending... none here): the lease ends first.
    assert_eq!(requeue(&mut st, at(60)), vec![id]);
    let msg = conflict_message(complete(&mut st, id, "w1", at(61)));
    assert!(msg.contains("lease expired"), "{msg}");
    // Claimed again by the same worker: the stale attempt number still says why.
    claim(&mut st, "w1", at(61));
    let msg = conflict_message(run(
        &mut st,
        Op::Complete(op::Complete {
            task: id,
            worker: "w1".into(),
            attempt: Some(1),
            result: None,
        }),
        at(62),
    ));
    assert!(
        msg.contains("attempt 1") && msg.contains("lease expired"),
        "{msg}"
    );
}

#[test]
fn a_task_taken_back_from_a_dead_worker_is_claimable_at_once_but_counts_the_attempt() {
    // An expired lease: no retry delay.
    let mut st = board();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    assert_eq!(requeue(&mut st, at(60)), vec![id]);
    assert_eq!(task(&st, id).not_before, None);
    assert_eq!(claim(&mut st, "w2", at(60)), Some(id));
    assert_eq!(task(&st, id).attempts, 2);

    // A stale holder: no retry delay either.
    let mut st = long_leases();
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    assert_eq!(requeue(&mut st, at(121)), vec![id]);
    assert_eq!(task(&st, id).not_before, None);
    assert_eq!(claim(&mut st, "w2", at(121)), Some(id));

    // A task that kills every worker still ends in the dead-letter list: max retries 2, so
    // the third lost attempt fails it for good.
    let mut st = board();
    let id = add(&mut st, "poison", t0());
    for (n, w) in ["w1", "w2", "w3"].into_iter().enumerate() {
        let start = n as u64 * 60;
        assert_eq!(claim(&mut st, w, at(start)), Some(id), "attempt {}", n + 1);
        assert_eq!(requeue(&mut st, at(start + 60)), vec![id]);
    }
    let t = task(&st, id);
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.attempts, 3);
    assert_eq!(claim(&mut st, "w4", at(200)), None);

    // `fail` keeps its backoff.
    let mut st = board();
    let id = add(&mut st, "flaky", t0());
    claim(&mut st, "w1", at(0));
    fail(&mut st, id, "w1", false, at(1)).unwrap();
    assert_eq!(task(&st, id).not_before, Some(at(11)));
}

#[test]
fn a_task_for_an_absent_assignee_falls_back_to_any_worker() {
    // Assigned to a worker that never registered: anyone may take it once the fallback time
    // (the stale limit, 120 s) has passed since it was added.
    let mut st = board();
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("ghost".into()),
            ..nt("for ghost")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "w1", at(100)), None);
    let why = claim_reason(&mut st, "w1", at(100));
    assert!(
        why.contains("assigned to ghost, who has not been seen")
            && why.contains("any worker may take it in 21s"),
        "{why}"
    );
    assert_eq!(claim(&mut st, "w1", at(120)), None);
    assert_eq!(claim(&mut st, "w1", at(121)), Some(id));

    // Assigned to a registered worker that went silent: from its last sign of life.
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    heartbeat(&mut st, "owner", at(50));
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        at(10),
    );
    assert_eq!(claim(&mut st, "w1", at(170)), None);
    assert_eq!(claim(&mut st, "w1", at(171)), Some(id));

    // A task added later than the assignee's last sign: from the task's creation.
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        at(500),
    );
    assert_eq!(claim(&mut st, "w1", at(620)), None);
    assert_eq!(claim(&mut st, "w1", at(621)), Some(id));
}

#[test]
fn a_task_needing_an_absent_capability_falls_back_to_any_worker() {
    // Nobody has `backend`: after the fallback time, a worker without it may take the task.
    let mut st = board();
    register(&mut st, "w1", &["python"], t0());
    let id = add_task(
        &mut st,
        NewTask {
            requires: strings(&["backend"]),
            ..nt("api")
        },
        t0(),
    );
    assert_eq!(claim(&mut st, "w1", at(120)), None);
    let why = claim_reason(&mut st, "w1", at(60));
    assert!(
        why.contains("backend") && why.contains("any worker may take it in 1m1s"),
        "{why}"
    );
    assert_eq!(claim(&mut st, "w1", at(121)), Some(id));

    // A live worker with the capability holds the task for itself.
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    register(&mut st, "be", &["backend", "db"], t0());
    let id = add_task(
        &mut st,
        NewTask {
            requires: strings(&["backend"]),
            ..nt("api")
        },
        t0(),
    );
    heartbeat(&mut st, "be", at(100));
    assert_eq!(claim(&mut st, "w1", at(220)), None);
    assert_eq!(claim(&mut st, "w1", at(221)), Some(id));
}

#[test]
fn strict_tasks_never_fall_back_and_each_task_may_set_its_own_time() {
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "owner".into(),
        }),
        t0(),
    )
    .unwrap();
    let only_owner = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            strict: true,
            ..nt("only the owner")
        },
        t0(),
    );
    let only_gpu = add_task(
        &mut st,
        NewTask {
            requires: strings(&["gpu"]),
            strict: true,
            ..nt("only gpu")
        },
        t0(),
    );
    let soon = add_task(
        &mut st,
        NewTask {
            assign: Some("ghost".into()),
            fallback_after_secs: Some(5),
            ..nt("soon")
        },
        t0(),
    );
    let late = add_task(
        &mut st,
        NewTask {
            requires: strings(&["gpu"]),
            fallback_after_secs: Some(3600),
            ..nt("late")
        },
        t0(),
    );
    assert!(task(&st, only_owner).strict);
    assert_eq!(task(&st, late).fallback_after_secs, Some(3600));
    assert_eq!(claim(&mut st, "w1", at(5)), None);
    assert_eq!(claim(&mut st, "w1", at(6)), Some(soon));
    complete(&mut st, soon, "w1", at(7)).unwrap();
    assert_eq!(claim(&mut st, "w1", at(3600)), None);
    assert_eq!(claim(&mut st, "w1", at(3601)), Some(late));
    complete(&mut st, late, "w1", at(3602)).unwrap();
    // Even an offline assignee keeps a strict task; days later it still waits.
    assert_eq!(claim(&mut st, "w1", at(999_999)), None);
    let why = claim_reason(&mut st, "w1", at(999_999));
    assert!(why.contains("only owner may take it (strict)"), "{why}");
    assert!(
        why.contains("only a worker with gpu may take it (strict)"),
        "{why}"
    );
    // The specialists themselves still may.
    register(&mut st, "gpu1", &["gpu"], at(999_999));
    assert_eq!(claim(&mut st, "gpu1", at(999_999)), Some(only_gpu));
    assert_eq!(claim(&mut st, "owner", at(999_999)), Some(only_owner));
}

#[test]
fn strict_and_fallback_after_are_validated() {
    let mut st = board();
    for (task, what) in [
        (
            NewTask {
                strict: true,
                ..nt("x")
            },
            "strict without a specialist",
        ),
        (
            NewTask {
                fallback_after_secs: Some(60),
                ..nt("x")
            },
            "fallback-after without a specialist",
        ),
        (
            NewTask {
                assign: Some("w1".into()),
                strict: true,
                fallback_after_secs: Some(60),
                ..nt("x")
            },
            "strict and fallback-after",
        ),
        (
            NewTask {
                requires: strings(&["gpu"]),
                fallback_after_secs: Some(31 * 86_400),
                ..nt("x")
            },
            "a fallback time over 30 days",
        ),
    ] {
        let r = run(&mut st, Op::Add(op::Add { task }), t0());
        assert!(is_invalid(&r), "{what}: {r:?}");
    }
    assert!(st.tasks.is_empty());
}

#[test]
fn offline_workers_with_the_capability_do_not_hold_a_task_back() {
    let mut st = board();
    register(&mut st, "be", &["backend"], t0());
    register(&mut st, "w1", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            requires: strings(&["backend"]),
            ..nt("api")
        },
        t0(),
    );
    // `be` is live: w1 waits.
    assert_eq!(claim(&mut st, "w1", at(100)), None);
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "be".into(),
        }),
        at(100),
    )
    .unwrap();
    // `be` is offline: it no longer counts; the fallback runs from the task's creation.
    assert_eq!(claim(&mut st, "w1", at(120)), None);
    assert_eq!(claim(&mut st, "w1", at(121)), Some(id));
}

#[test]
fn task_views_say_who_a_pending_task_waits_for() {
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    let live = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("live owner")
        },
        t0(),
    );
    let ghost = add_task(
        &mut st,
        NewTask {
            assign: Some("ghost".into()),
            ..nt("ghost")
        },
        t0(),
    );
    let plain = add(&mut st, "anyone", t0());
    let view = |st: &State, id: u64, now: Timestamp| {
        task_views(st, None, now)
            .into_iter()
            .find(|v| v.task.id == id)
            .unwrap()
            .fallback
    };
    let f = view(&st, live, at(30)).unwrap();
    assert_eq!(
        f.note,
        "assigned to owner, last seen 30s ago; any worker may take it in 1m31s unless it shows a sign of life"
    );
    assert_eq!(f.at, Some(at(121)));
    let f = view(&st, ghost, at(200)).unwrap();
    assert_eq!(
        f.note,
        "assigned to ghost, who has not been seen; any worker may take it now"
    );
    assert!(view(&st, plain, at(30)).is_none());
    // Offline: at once.
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "owner".into(),
        }),
        at(40),
    )
    .unwrap();
    let f = view(&st, live, at(41)).unwrap();
    assert_eq!(
        f.note,
        "assigned to owner, who is offline; any worker may take it now"
    );
    assert_eq!(f.at, Some(t0()), "open since the task was added");
    // A claimed task has no fallback.
    claim(&mut st, "w1", at(41));
    assert!(view(&st, live, at(42)).is_none());
}

/// Asks `question` as `worker`, waiting `wait` seconds; returns the question's number.
fn ask_waiting(st: &mut State, worker: &str, wait: Option<u64>, now: Timestamp) -> u64 {
    match run(
        st,
        Op::Ask(op::Ask {
            agent: worker.into(),
            question: "Which port?".into(),
            task: None,
            wait_secs: wait,
        }),
        now,
    )
    .expect("ask")
    {
        Reply::Message { message } => message.seq.unwrap(),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Answers question `seq` (the store loads the log for answers; here: the outbox so far).
fn answer(st: &mut State, seq: u64, now: Timestamp) {
    st.log = st.outbox.clone();
    run(
        st,
        Op::Answer(op::Answer {
            agent: "coordinator".into(),
            question: seq,
            answer: "5000".into(),
        }),
        now,
    )
    .expect("answer");
}

#[test]
fn a_waiting_worker_keeps_its_tasks_until_the_answer() {
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    let id = add(&mut st, "needs a human", t0());
    claim(&mut st, "w1", at(0));
    let q = ask_waiting(&mut st, "w1", Some(600), at(10));
    let w = &st.workers["w1"];
    assert_eq!(w.waits_on(at(10)), Some(q));
    assert_eq!(
        w.state(true, 120, at(500)),
        crate::worker::WorkerState::Waiting
    );
    // Far past the lease (60 s) and the stale limit (120 s): nothing is taken back.
    assert_eq!(requeue(&mut st, at(500)), Vec::<u64>::new());
    assert_eq!(claim(&mut st, "w2", at(500)), None);
    // The answer ends the wait and restarts the clocks: a fresh lease, and a sign of life.
    answer(&mut st, q, at(550));
    let w = &st.workers["w1"];
    assert_eq!(w.waiting, None);
    assert_eq!(w.last_heartbeat, Some(at(550)));
    assert_eq!(task(&st, id).lease_expires_at, Some(at(610)));
    assert_eq!(status(&st, id), TaskStatus::InProgress);
    assert_eq!(requeue(&mut st, at(609)), Vec::<u64>::new());
    complete(&mut st, id, "w1", at(600)).unwrap();
    assert_eq!(task(&st, id).attempts, 1);
}

#[test]
fn a_wait_ends_at_its_timeout_and_at_the_workers_own_next_move() {
    // The timeout: then the usual rules apply.
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    let id = add(&mut st, "a", t0());
    claim(&mut st, "w1", at(0));
    ask_waiting(&mut st, "w1", Some(100), at(0));
    assert_eq!(requeue(&mut st, at(99)), Vec::<u64>::new());
    assert_eq!(
        st.workers["w1"].state(true, 120, at(100)),
        crate::worker::WorkerState::Working
    );
    assert_eq!(
        requeue(&mut st, at(100)),
        vec![id],
        "the lease ended at 60 s"
    );

    // Its own claim, complete, fail or release ends it.
    for op in ["claim", "complete", "fail", "release"] {
        let mut st = board();
        register(&mut st, "w1", &[], t0());
        let id = add(&mut st, "a", t0());
        add(&mut st, "b", t0());
        claim(&mut st, "w1", at(0));
        ask_waiting(&mut st, "w1", Some(600), at(1));
        let r = match op {
            "claim" => run(
                &mut st,
                Op::Claim(op::Claim {
                    worker: "w1".into(),
                }),
                at(2),
            ),
            "complete" => complete(&mut st, id, "w1", at(2)),
            "fail" => fail(&mut st, id, "w1", false, at(2)),
            _ => release(&mut st, id, "w1", at(2)),
        };
        r.unwrap();
        assert_eq!(st.workers["w1"].waiting, None, "{op} ends the wait");
        assert!(
            st.dirty.workers || op == "claim",
            "{op}: the worker file is written"
        );
    }

    // An answer after the wait timed out just clears the record, without restarting clocks.
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    let q = ask_waiting(&mut st, "w1", Some(10), at(0));
    answer(&mut st, q, at(50));
    assert_eq!(st.workers["w1"].waiting, None);
    assert_eq!(st.workers["w1"].last_heartbeat, Some(at(0)));

    // Deregistering ends it too.
    let mut st = board();
    register(&mut st, "w1", &[], t0());
    ask_waiting(&mut st, "w1", Some(600), at(0));
    run(
        &mut st,
        Op::Deregister(op::Deregister {
            worker: "w1".into(),
        }),
        at(1),
    )
    .unwrap();
    assert_eq!(st.workers["w1"].waiting, None);
}

#[test]
fn only_registered_workers_wait_and_waits_are_bounded() {
    let mut st = board();
    ask_waiting(&mut st, "coordinator", Some(600), t0());
    assert!(st.workers.is_empty(), "asking does not register anyone");
    register(&mut st, "w1", &[], t0());
    let r = run(
        &mut st,
        Op::Ask(op::Ask {
            agent: "w1".into(),
            question: "q".into(),
            task: None,
            wait_secs: Some(31 * 86_400),
        }),
        t0(),
    );
    assert!(is_invalid(&r), "{r:?}");
    // A question without a wait makes nobody wait.
    ask_waiting(&mut st, "w1", None, t0());
    assert_eq!(st.workers["w1"].waiting, None);
}

#[test]
fn a_waiting_assignee_is_not_absent() {
    let mut st = board();
    register(&mut st, "owner", &[], t0());
    let id = add_task(
        &mut st,
        NewTask {
            assign: Some("owner".into()),
            ..nt("mine")
        },
        t0(),
    );
    ask_waiting(&mut st, "owner", Some(10_000), at(1));
    assert_eq!(claim(&mut st, "w1", at(5000)), None);
    let why = claim_reason(&mut st, "w1", at(5000));
    assert!(why.contains("owner, who waits for an answer"), "{why}");
    assert_eq!(claim(&mut st, "w1", at(10_001 + 121)), Some(id));
}

// ---------------------------------------------------------------------------------------------
// Reads: answered from what they asked to load, by the same pure rules for every store
// ---------------------------------------------------------------------------------------------

/// Answers the read `op` from a copy of `st` (a read's state is never written back).
fn read_op(st: &State, op: Op, now: Timestamp) -> Result<Reply> {
    read(&mut st.clone(), op, now)
}

#[test]
fn reads_show_the_board_as_the_next_change_sees_it() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    register(&mut st, "w1", &[], t0());
    assert_eq!(claim(&mut st, "w1", t0()), Some(a));
    // Past the 60 s lease the claim is taken back in what the read shows, not in the state.
    let shown = match read_op(&st, Op::Show(op::Show { task: a }), at(61)).unwrap() {
        Reply::Task { task } => task,
        other => panic!("{other:?}"),
    };
    assert_eq!(shown.task.status, TaskStatus::Pending);
    assert_eq!(status(&st, a), TaskStatus::InProgress);
    let workers = read_op(&st, Op::Workers(op::Workers), at(61)).unwrap();
    let Reply::Workers { workers } = workers else {
        panic!("{workers:?}")
    };
    assert_eq!(workers[0].tasks, Vec::<u64>::new());
}

#[test]
fn show_finds_queue_then_archived_tasks() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    let mut old = Task::new(5, "old", t0());
    old.status = TaskStatus::Completed;
    st.archived_tasks.insert(5, old);
    let show = |id| read_op(&st, Op::Show(op::Show { task: id }), t0());
    assert!(matches!(show(a), Ok(Reply::Task { task }) if task.task.id == a && !task.archived));
    assert!(matches!(show(5), Ok(Reply::Task { task }) if task.task.id == 5 && task.archived));
    assert!(matches!(show(6), Err(Error::UnknownTask(6))));
}

#[test]
fn tasks_lists_archived_ones_with_the_queue_in_id_order_and_checks_the_status() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    for (id, s) in [(3, TaskStatus::Completed), (a, TaskStatus::Completed)] {
        let mut t = Task::new(id, "archived", t0());
        t.status = s;
        st.archived_tasks.insert(id, t);
    }
    let list = |status: Option<StatusFilter>, all| {
        let op = Op::Tasks(op::Tasks { status, all });
        match read_op(&st, op, t0()) {
            Ok(Reply::Tasks { tasks }) => Ok(tasks
                .iter()
                .map(|v| (v.task.id, v.archived))
                .collect::<Vec<_>>()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    // A task both on the queue and archived (a compaction cut off) is shown once, from the queue.
    assert_eq!(list(None, true).unwrap(), vec![(3, true), (a, false)]);
    assert_eq!(list(None, false).unwrap(), vec![(a, false)]);
    assert_eq!(
        list(Some(StatusFilter::Completed), true).unwrap(),
        vec![(3, true)]
    );
    assert_eq!(list(Some(StatusFilter::InProgress), true).unwrap(), vec![]);
    // The status is checked where the op is made: an unknown one is not an op at all.
    for bad in [
        json!({"op": "tasks", "status": "done"}),
        json!({"op": "tasks", "status": 1}),
    ] {
        assert!(serde_json::from_value::<Op>(bad).is_err());
    }
    let ok: Op = serde_json::from_value(json!({"op": "tasks", "status": "in-progress"})).unwrap();
    assert_eq!(
        ok,
        Op::Tasks(op::Tasks {
            status: Some(StatusFilter::InProgress),
            all: false
        })
    );
}

#[test]
fn status_counts_the_archive_and_a_task_at_its_tail_once() {
    let mut st = board();
    let a = add(&mut st, "a", t0());
    add(&mut st, "b", t0());
    register(&mut st, "w1", &[], t0());
    assert_eq!(claim(&mut st, "w1", t0()), Some(a));
    complete(&mut st, a, "w1", t0()).unwrap();
    // `a` was archived too, but the queue was not rewritten yet.
    st.archived_counts = BTreeMap::from([(TaskStatus::Completed, 3), (TaskStatus::Cancelled, 1)]);
    st.archive_tail = HashSet::from([a]);
    let mut q = Message::new(MessageKind::Question, "w1", "open?", t0());
    q.seq = Some(1);
    let mut q2 = Message::new(MessageKind::Question, "w1", "answered?", t0());
    q2.seq = Some(2);
    let mut ans = Message::new(MessageKind::Answer, "lead", "yes", t0());
    ans.seq = Some(3);
    ans.reply_to = Some(2);
    st.log = vec![q, q2, ans];
    let Reply::Status { report } = read_op(&st, Op::Status(op::Status), t0()).unwrap() else {
        panic!()
    };
    assert_eq!(
        (report.pending, report.completed, report.cancelled),
        (1, 3, 1)
    );
    assert_eq!((report.total, report.archived), (5, 4));
    assert_eq!(report.open_questions, 1);
    assert_eq!(report.workers.get("idle"), Some(&1));
}

#[test]
fn questions_and_messages_are_chosen_from_the_loaded_log() {
    let mut st = board();
    let entry = |kind, seq: u64, reply_to: Option<u64>| {
        let agent = if seq.is_multiple_of(2) { "b" } else { "a" };
        let mut m = Message::new(kind, agent, &format!("m{seq}"), at(seq));
        m.seq = Some(seq);
        m.reply_to = reply_to;
        m.task_id = (seq <= 3).then_some(7);
        m
    };
    st.log = vec![
        entry(MessageKind::Question, 1, None),
        entry(MessageKind::Message, 2, None),
        entry(MessageKind::Answer, 3, Some(1)),
        entry(MessageKind::Question, 4, None),
        entry(MessageKind::Answer, 5, Some(9)),
    ];
    let questions = |all| match read_op(&st, Op::Questions(op::Questions { all }), t0()) {
        Ok(Reply::Questions { questions }) => questions
            .iter()
            .map(|q| (q.question.seq, q.answers.len()))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(questions(false), vec![(Some(4), 0)]);
    assert_eq!(questions(true), vec![(Some(1), 1), (Some(4), 0)]);
    let read = |filter| match read_op(&st, Op::ReadMessages(op::ReadMessages { filter }), t0()) {
        Ok(Reply::Messages { messages }) => messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(read(MessageFilter::default()).len(), 5);
    let after_1_last_2 = MessageFilter {
        after_seq: Some(1),
        limit: Some(2),
        ..MessageFilter::default()
    };
    assert_eq!(read(after_1_last_2), vec![Some(4), Some(5)]);
    let answers_to_1 = MessageFilter {
        reply_to: Some(1),
        ..MessageFilter::default()
    };
    assert_eq!(read(answers_to_1), vec![Some(3)]);
    let since = MessageFilter {
        since: Some(at(3)),
        ..MessageFilter::default()
    };
    assert_eq!(read(since), vec![Some(4), Some(5)]);
    // By task, agent and kind.
    let about = |task: Option<u64>, agent: Option<&str>, kind: Option<MessageKind>| MessageFilter {
        task,
        agent: agent.map(str::to_string),
        kind,
        ..MessageFilter::default()
    };
    let all = read(MessageFilter::default());
    let seqs_where = |f: &dyn Fn(&Message) -> bool| -> Vec<Option<u64>> {
        st.log.iter().filter(|m| f(m)).map(|m| m.seq).collect()
    };
    assert_eq!(all.len(), st.log.len());
    for m in &st.log {
        if let Some(t) = m.task_id {
            assert_eq!(
                read(about(Some(t), None, None)),
                seqs_where(&|x| x.task_id == Some(t))
            );
        }
        assert_eq!(
            read(about(None, Some(&m.agent), None)),
            seqs_where(&|x| x.agent == m.agent)
        );
        assert_eq!(
            read(about(None, None, Some(m.kind))),
            seqs_where(&|x| x.kind == m.kind)
        );
    }
    assert_eq!(
        read(about(Some(7), None, None)),
        vec![Some(1), Some(2), Some(3)]
    );
    assert_eq!(read(about(None, Some("b"), None)), vec![Some(2), Some(4)]);
    assert_eq!(
        read(about(Some(7), Some("a"), Some(MessageKind::Answer))),
        vec![Some(3)]
    );
    assert_eq!(read(about(Some(999_999), None, None)), vec![]);
}

#[test]
fn progress_and_settings_are_read_as_loaded_and_changes_are_not_reads() {
    let mut st = board();
    st.progress.status = Some("halfway".into());
    let r = read_op(&st, Op::Progress(op::Progress), t0());
    assert!(
        matches!(r, Ok(Reply::Progress { progress }) if progress.status.as_deref() == Some("halfway"))
    );
    let r = read_op(&st, Op::Settings(op::Settings), t0());
    assert!(matches!(r, Ok(Reply::Settings { settings }) if settings.lease_secs == 60));
    let r = read_op(
        &st,
        Op::Claim(op::Claim {
            worker: "w1".into(),
        }),
        t0(),
    );
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
}

#[test]
fn each_op_says_what_it_needs_loaded() {
    let plan = Op::AddPlan(op::AddPlan {
        tasks: vec![PlanTask {
            task: NewTask {
                after: vec![7],
                instruction_file: Some("docs/i.md".into()),
                context_files: vec!["docs/c.md".into()],
                ..nt("x")
            },
            ..PlanTask::default()
        }],
    });
    let n = plan.needs();
    assert!(n.next_id && !n.next_seq && n.log == LogNeed::None);
    assert_eq!(n.task_ids, vec![7]);
    assert_eq!(n.instruction_files, vec!["docs/i.md".to_string()]);
    assert_eq!(n.context_files, vec!["docs/c.md".to_string()]);
    let send = Op::Send(op::Send {
        agent: "a".into(),
        message: "m".into(),
        task: Some(3),
    });
    let n = send.needs();
    assert!(n.next_seq && n.log == LogNeed::RecentWhenKeyed && n.task_ids == vec![3]);
    let answer = Op::Answer(op::Answer {
        agent: "a".into(),
        question: 1,
        answer: "x".into(),
    });
    assert_eq!(answer.needs().log, LogNeed::All);
    let progress = Op::SetProgress(op::SetProgress {
        current_step: None,
        total_steps: None,
        status: None,
        metadata: Default::default(),
    });
    assert!(progress.needs().progress);
    let fail = Op::Fail(op::Fail {
        task: 4,
        worker: "w".into(),
        attempt: None,
        error: "e".into(),
        no_retry: false,
    });
    assert_eq!(fail.needs().task_ids, vec![4]);
    assert_eq!(
        Op::Claim(op::Claim { worker: "w".into() }).needs(),
        Needs::default()
    );
    // Reads: the views of the board read all of its state files; others only their own.
    assert_eq!(Op::Workers(op::Workers).needs(), Needs::board());
    let status = Op::Status(op::Status).needs();
    assert!(status.queue && status.archive_counts && status.log == LogNeed::Questions);
    assert!(
        Op::Tasks(op::Tasks {
            status: None,
            all: true
        })
        .needs()
        .archive_all
    );
    assert!(!Op::Progress(op::Progress).needs().queue);
}
