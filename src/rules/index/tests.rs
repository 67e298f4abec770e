//! The queue's index and the undo journal against the plain scans and a copy of the state:
//! random op sequences (keyed or not, alone or in batches with undo, with the clock moving and
//! a store taking tasks off the queue, replacing it or changing a task in place) applied to two
//! states, one indexed and one that the rules must scan (its index dropped before every op,
//! a refused op of a batch undone from a whole copy, as before the index), must give the same
//! replies and the same states, and the index must always be what a fresh build gives.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::error::Result;
use crate::op::{self, NewTask, Op, PlanTask, Reminder};
use crate::reply::Reply;
use crate::rules::Dirty;
use crate::rules::eligibility::best;
use crate::rules::replay::apply_keyed;
use crate::rules::{apply_in_batch, archivable};
use crate::task::Priority;
use crate::time::{Timestamp, add_secs};

/// The last is not a valid id: its ops are refused, some after lapsed claims were taken back
/// (which undoing must put back).
const WORKERS: [&str; 5] = ["w0", "w1", "w2", "w3", "bad id"];
const CAPS: [&str; 2] = ["gpu", "py"];
const KEYS: [&str; 3] = ["k0", "k1", "k2"];

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn board() -> State {
    State {
        settings: Settings {
            lease_secs: 60,
            stale_after_secs: 90,
            max_retries: 1,
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 15,
            ..Settings::default()
        },
        ..State::default()
    }
}

/// One step, with task references resolved against the queue when it runs.
#[derive(Debug, Clone)]
enum Step {
    /// An op (see [`Step::op`]), keyed or not.
    Op(Kind, Option<usize>),
    /// Several ops in one batch, each with undo.
    Batch(Vec<(Kind, Option<usize>)>),
    /// The clock moves on.
    Advance(u64),
    /// The store takes archivable tasks off the queue.
    Archive,
    /// The store replaces the queue with an equal one.
    Replace,
    /// The store changes a task's priority in place and says so.
    InPlace(usize),
}

#[derive(Debug, Clone)]
enum Kind {
    Add {
        priority: u8,
        cap: Option<usize>,
        assign: Option<usize>,
        after: Vec<usize>,
        strict: bool,
        fallback: Option<u64>,
    },
    Plan(usize),
    Claim(usize),
    Complete(usize, usize, bool),
    Fail(usize, usize, bool),
    Release(usize, usize),
    Cancel(usize),
    Retry(usize),
    Priority(usize, u8),
    Register(usize, Option<usize>),
    Heartbeat(usize),
    Deregister(usize),
    ShouldContinue(usize),
    Turn(usize, bool, bool),
    RequeueStale,
    Ask(usize, bool),
    Answer(usize),
}

fn priority(n: u8) -> Priority {
    match n % 3 {
        0 => Priority::High,
        1 => Priority::Normal,
        _ => Priority::Low,
    }
}

/// The id of the `k`th task on the queue (an unknown id on an empty queue).
fn task_ref(st: &State, k: usize) -> u64 {
    if st.tasks.is_empty() {
        999
    } else {
        st.tasks[k % st.tasks.len()].id
    }
}

impl Kind {
    fn op(&self, st: &State) -> Op {
        let w = |i: &usize| WORKERS[i % WORKERS.len()].to_string();
        match self {
            Kind::Add {
                priority: p,
                cap,
                assign,
                after,
                strict,
                fallback,
            } => {
                let requires: Vec<String> = cap.iter().map(|c| CAPS[c % 2].to_string()).collect();
                let specialist = !requires.is_empty() || assign.is_some();
                Op::Add(op::Add {
                    task: NewTask {
                        description: "a task".into(),
                        priority: priority(*p),
                        requires,
                        assign: assign.as_ref().map(w),
                        after: after.iter().map(|k| task_ref(st, *k)).collect(),
                        strict: *strict && specialist,
                        fallback_after_secs: fallback.filter(|_| specialist && !*strict),
                        ..NewTask::default()
                    },
                })
            }
            Kind::Plan(n) => {
                let tasks = (0..(n % 3) + 1)
                    .map(|i| PlanTask {
                        key: Some(format!("p{i}")),
                        task: NewTask {
                            description: format!("step {i}"),
                            instructions: Some("do it".into()),
                            ..NewTask::default()
                        },
                        after_keys: if i > 0 {
                            vec![format!("p{}", i - 1)]
                        } else {
                            vec![]
                        },
                    })
                    .collect();
                Op::AddPlan(op::AddPlan { tasks })
            }
            Kind::Claim(i) => Op::Claim(op::Claim { worker: w(i) }),
            Kind::Complete(i, k, right) => {
                let task = task_ref(st, *k);
                let attempt = st.position(task).map(|p| st.tasks[p].attempts);
                Op::Complete(op::Complete {
                    task,
                    worker: w(i),
                    attempt: attempt.map(|a| if *right { a } else { a + 1 }),
                    result: Some(serde_json::Value::String("done".into())),
                })
            }
            Kind::Fail(i, k, no_retry) => Op::Fail(op::Fail {
                task: task_ref(st, *k),
                worker: w(i),
                attempt: None,
                error: "broke".into(),
                no_retry: *no_retry,
            }),
            Kind::Release(i, k) => Op::Release(op::Release {
                task: task_ref(st, *k),
                worker: w(i),
                attempt: None,
            }),
            Kind::Cancel(k) => Op::Cancel(op::Cancel {
                task: task_ref(st, *k),
                reason: None,
            }),
            Kind::Retry(k) => Op::Retry(op::Retry {
                task: task_ref(st, *k),
            }),
            Kind::Priority(k, p) => Op::SetPriority(op::SetPriority {
                task: task_ref(st, *k),
                priority: priority(*p),
            }),
            Kind::Register(i, cap) => Op::Register(op::Register {
                worker: w(i),
                capabilities: cap.iter().map(|c| CAPS[c % 2].to_string()).collect(),
                session_id: None,
            }),
            Kind::Heartbeat(i) => Op::Heartbeat(op::Heartbeat { worker: w(i) }),
            Kind::Deregister(i) => Op::Deregister(op::Deregister { worker: w(i) }),
            Kind::ShouldContinue(i) => Op::ShouldContinue(op::ShouldContinue {
                worker: w(i),
                max_idle_secs: 30,
            }),
            Kind::Turn(i, pooled, stalled) => {
                let me = w(i);
                let reminded = st.first_held(&me).filter(|_| *stalled).map(|p| Reminder {
                    task: st.tasks[p].id,
                    attempt: st.tasks[p].attempts,
                    tool_calls: 0,
                });
                Op::TurnEnded(op::TurnEnded {
                    worker: me,
                    max_idle_secs: 30,
                    tool_calls: 0,
                    reminded,
                    wait_secs: 0,
                    pooled: *pooled,
                })
            }
            Kind::RequeueStale => Op::RequeueStale(op::RequeueStale),
            Kind::Ask(i, wait) => Op::Ask(op::Ask {
                agent: w(i),
                question: "which?".into(),
                task: None,
                wait_secs: wait.then_some(100),
            }),
            Kind::Answer(k) => Op::Answer(op::Answer {
                agent: "boss".into(),
                question: *k as u64 % st.next_seq.max(1),
                answer: "this one".into(),
            }),
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    let i = 0..5usize;
    let k = 0..16usize;
    prop_oneof![
        4 => (0..3u8, prop::option::of(0..2usize), prop::option::weighted(0.2, 0..4usize),
              prop::collection::vec(0..16usize, 0..3), prop::bool::weighted(0.2),
              prop::option::weighted(0.3, prop_oneof![Just(0u64), Just(30)]))
            .prop_map(|(priority, cap, assign, after, strict, fallback)| Kind::Add {
                priority, cap, assign, after, strict, fallback
            }),
        1 => (0..3usize).prop_map(Kind::Plan),
        5 => i.clone().prop_map(Kind::Claim),
        3 => (i.clone(), k.clone(), prop::bool::weighted(0.8))
            .prop_map(|(i, k, r)| Kind::Complete(i, k, r)),
        1 => (i.clone(), k.clone(), any::<bool>()).prop_map(|(i, k, n)| Kind::Fail(i, k, n)),
        1 => (i.clone(), k.clone()).prop_map(|(i, k)| Kind::Release(i, k)),
        1 => k.clone().prop_map(Kind::Cancel),
        1 => k.clone().prop_map(Kind::Retry),
        1 => (k.clone(), 0..3u8).prop_map(|(k, p)| Kind::Priority(k, p)),
        1 => (i.clone(), prop::option::of(0..2usize)).prop_map(|(i, c)| Kind::Register(i, c)),
        2 => i.clone().prop_map(Kind::Heartbeat),
        1 => i.clone().prop_map(Kind::Deregister),
        1 => i.clone().prop_map(Kind::ShouldContinue),
        2 => (i, any::<bool>(), any::<bool>()).prop_map(|(i, p, s)| Kind::Turn(i, p, s)),
        1 => Just(Kind::RequeueStale),
        1 => (0..5usize, any::<bool>()).prop_map(|(i, w)| Kind::Ask(i, w)),
        1 => (0..8usize).prop_map(Kind::Answer),
    ]
}

fn key() -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.3, 0..KEYS.len())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => (kind(), key()).prop_map(|(k, key)| Step::Op(k, key)),
        4 => prop::collection::vec((kind(), key()), 2..6).prop_map(Step::Batch),
        3 => prop_oneof![Just(1u64), Just(5), Just(30), Just(61), Just(100)].prop_map(Step::Advance),
        1 => Just(Step::Archive),
        1 => Just(Step::Replace),
        1 => (0..16usize).prop_map(Step::InPlace),
    ]
}

/// The reference: the rules scanning the queue (no index), a refused op of a batch undone
/// from a copy of the whole state, as `apply_in_batch` did before the index.
fn reference(
    st: &mut State,
    op: Op,
    key: Option<&str>,
    now: Timestamp,
    undo: bool,
) -> Result<Reply> {
    st.derived.index = TaskIndex::default();
    let copy = undo.then(|| st.clone());
    let logged = st.outbox.len();
    let r = apply_keyed(st, op, key, now);
    assert!(!st.is_indexed(), "the reference must scan");
    match r {
        Ok(reply) => {
            if !st.log.is_empty() || key.is_some() {
                let new: Vec<_> = st.outbox[logged..].to_vec();
                st.log.extend(new);
            }
            Ok(reply)
        }
        Err(e) => {
            if let Some(mut before) = copy {
                before.outbox = std::mem::take(&mut st.outbox);
                before.next_seq = st.next_seq;
                *st = before;
            }
            Err(e)
        }
    }
}

fn same_state(a: &State, b: &State) -> std::result::Result<(), String> {
    let diff = |what: &str| Err(format!("{what} differ"));
    if a.tasks != b.tasks {
        return diff("tasks");
    }
    if a.workers != b.workers {
        return diff("workers");
    }
    if a.outbox != b.outbox || a.log != b.log || a.next_seq != b.next_seq {
        return diff("log entries");
    }
    if a.files != b.files || a.min_next_id != b.min_next_id || a.progress != b.progress {
        return diff("files, next id or progress");
    }
    if a.dirty != b.dirty || a.touched != b.touched {
        return diff("dirty or touched");
    }
    Ok(())
}

/// What the rules look up, asked of both states.
fn same_lookups(a: &State, b: &State, now: Timestamp) -> std::result::Result<(), String> {
    for w in WORKERS {
        for t in [0, 1, 11, 31, 91, 200].map(|s| add_secs(now, s)) {
            if best(a, w, t) != best(b, w, t) {
                return Err(format!("best task for {w} at {t}"));
            }
        }
        if a.held_by(w) != b.held_by(w) || a.first_held(w) != b.first_held(w) {
            return Err(format!("tasks held by {w}"));
        }
    }
    for k in KEYS {
        if a.with_key(k) != b.with_key(k) {
            return Err(format!("tasks with key {k}"));
        }
    }
    let ids: Vec<u64> = a.tasks.iter().map(|t| t.id).chain([999]).collect();
    for id in &ids {
        if a.position(*id) != b.position(*id) || a.status_of(*id) != b.status_of(*id) {
            return Err(format!("position of task {id}"));
        }
    }
    if a.positions_of(&ids) != b.positions_of(&ids)
        || a.in_progress() != b.in_progress()
        || a.finished_on_queue() != b.finished_on_queue()
    {
        return Err("positions, tasks in progress or finished tasks".into());
    }
    Ok(())
}

/// What a store's commit takes from the state (the log entries written join the log, as the
/// store's next load would read them).
fn committed(st: &mut State) {
    for m in std::mem::take(&mut st.outbox) {
        if !st.log.contains(&m) {
            st.log.push(m);
        }
    }
    st.files.clear();
    st.touched.clear();
    st.dirty = Dirty::default();
}

fn run(steps: Vec<Step>) -> std::result::Result<usize, TestCaseError> {
    let mut a = board();
    let mut b = board();
    let mut now = t0();
    let mut indexed = 0;
    for (n, step) in steps.iter().enumerate() {
        let ctx = format!("step {n}: {step:?}\nall: {steps:?}");
        match step {
            Step::Op(kind, key) => {
                let op = kind.op(&a);
                let key = key.map(|k| KEYS[k]);
                let ra = apply_in_batch(&mut a, op.clone(), key, now, false);
                let rb = reference(&mut b, op, key, now, false);
                prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "reply\n{}", ctx);
            }
            Step::Batch(ops) => {
                for (kind, key) in ops {
                    let op = kind.op(&a);
                    let key = key.map(|k| KEYS[k]);
                    let ra = apply_in_batch(&mut a, op.clone(), key, now, true);
                    let rb = reference(&mut b, op, key, now, true);
                    prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "reply\n{}", ctx);
                    if let Err(e) = same_state(&a, &b) {
                        return Err(TestCaseError::fail(format!("{e} in a batch\n{ctx}")));
                    }
                }
            }
            Step::Advance(secs) => now = add_secs(now, *secs),
            Step::Archive => {
                for st in [&mut a, &mut b] {
                    let (take, _) = archivable(&st.tasks);
                    let mut i = 0;
                    st.tasks.retain(|_| {
                        i += 1;
                        !take.contains(&(i - 1))
                    });
                }
            }
            Step::Replace => a.tasks = a.tasks.clone(),
            Step::InPlace(k) => {
                if !a.tasks.is_empty() {
                    let i = k % a.tasks.len();
                    for st in [&mut a, &mut b] {
                        st.tasks[i].priority = priority(st.tasks[i].priority.rank() + 1);
                    }
                    a.tasks_changed();
                }
            }
        }
        if let Err(e) = same_state(&a, &b) {
            return Err(TestCaseError::fail(format!("{e}\n{ctx}")));
        }
        if let Err(e) = same_lookups(&a, &b, now) {
            return Err(TestCaseError::fail(format!("{e}\n{ctx}")));
        }
        if let Some(built) = a.derived.index.built(&a.tasks) {
            let fresh = Built::build(&a.tasks);
            prop_assert!(fresh.as_ref() == Some(built), "index stale\n{}", ctx);
            indexed += 1;
        }
        committed(&mut a);
        committed(&mut b);
    }
    Ok(indexed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_index_and_the_undo_change_nothing(steps in prop::collection::vec(step(), 1..60)) {
        let long = steps.len() >= 20;
        let indexed = run(steps)?;
        // Long sequences run most of their ops on the index.
        prop_assert!(!long || indexed > 0, "never indexed");
    }
}

#[test]
fn a_state_used_again_is_indexed_and_one_used_once_is_not() {
    let mut st = board();
    let add = |st: &mut State| {
        let task = NewTask {
            description: "x".into(),
            ..NewTask::default()
        };
        apply_in_batch(st, Op::Add(op::Add { task }), None, t0(), false).expect("add")
    };
    add(&mut st);
    assert!(!st.is_indexed(), "one op: scanned");
    add(&mut st);
    assert!(st.is_indexed(), "two ops on the same queue: indexed");
    // The store takes tasks off in place: the next op takes them off the index.
    add(&mut st);
    st.tasks.remove(1);
    assert!(!st.is_indexed(), "stale until the next op");
    add(&mut st);
    assert!(st.is_indexed(), "brought up to date");
    st.check_index();
    // The store replaces the queue: the rules scan until the next op builds the index again.
    st.tasks = st.tasks.clone();
    assert!(!st.is_indexed());
    add(&mut st);
    assert!(!st.is_indexed());
    add(&mut st);
    assert!(st.is_indexed());
    // A copy builds its own at its first op.
    let mut copy = st.clone();
    assert!(!copy.is_indexed());
    copy.sync_index();
    assert!(copy.is_indexed());
    copy.check_index();
}

#[test]
fn a_queue_with_two_tasks_under_one_id_is_scanned() {
    let mut st = board();
    let mut a = crate::task::Task::new(7, "a", t0());
    a.priority = Priority::Low;
    let b = crate::task::Task::new(7, "b", t0());
    st.tasks = vec![a, b];
    for _ in 0..3 {
        st.sync_index();
        assert!(!st.is_indexed());
    }
    let claim = Op::Claim(op::Claim {
        worker: "w0".into(),
    });
    let r = apply_in_batch(&mut st, claim, None, t0(), false).expect("claim");
    let Reply::Claimed { claim: Some(c), .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(c.task.description, "b", "the better of the two");
}

#[test]
fn a_queue_reordered_or_edited_at_its_ends_is_seen() {
    let mut st = board();
    let task = NewTask {
        description: "x".into(),
        ..NewTask::default()
    };
    let add = Op::Add(op::Add { task });
    for _ in 0..3 {
        apply_in_batch(&mut st, add.clone(), None, t0(), false).expect("add");
    }
    assert!(st.is_indexed());
    st.tasks.reverse();
    let last = st.tasks[2].id;
    st.tasks[0].status = crate::task::TaskStatus::Cancelled;
    st.sync_index();
    assert_eq!(st.position(last), Some(2));
    assert_eq!(st.finished_on_queue(), 1);
    st.check_index();
}

#[test]
fn a_task_put_by_a_store_is_indexed() {
    let mut st = board();
    let task = NewTask {
        description: "x".into(),
        ..NewTask::default()
    };
    let add = Op::Add(op::Add { task });
    for _ in 0..2 {
        apply_in_batch(&mut st, add.clone(), None, t0(), false).expect("add");
    }
    assert!(st.is_indexed());
    // Made elsewhere: the first task claimed, a new one added.
    let mut claimed = st.tasks[0].clone();
    claimed.status = crate::task::TaskStatus::InProgress;
    claimed.claimed_by = Some("w9".into());
    st.put_task(claimed);
    st.put_task(crate::task::Task::new(5, "new", t0()));
    assert!(st.is_indexed());
    assert_eq!(st.held_by("w9"), vec![0]);
    assert_eq!(st.position(5), Some(2));
    assert!(
        st.touched.len() == 2,
        "only the rules' own adds are touched"
    );
    st.check_index();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "stale")]
fn debug_builds_catch_a_task_changed_in_place_unsaid() {
    let mut st = board();
    let task = NewTask {
        description: "x".into(),
        ..NewTask::default()
    };
    let add = Op::Add(op::Add { task });
    apply_in_batch(&mut st, add.clone(), None, t0(), false).expect("add");
    apply_in_batch(&mut st, add.clone(), None, t0(), false).expect("add");
    assert!(st.is_indexed());
    // The first task's status changed in place is seen (the first, middle and last are
    // compared before every op); its priority is not, but debug builds see it.
    st.tasks[0].priority = Priority::High;
    let _ = apply_in_batch(&mut st, add, None, t0(), false);
}
