//! The pure rules' own cost per op, by backlog, on criterion: no file, no lock, no parse.
//!
//! A `rules::State` is built in memory with 10, 1,000 and 10,000 pending tasks (a mix: one in
//! ten high priority and one in five low; one in seven waits on a dependency, pending, in
//! progress or completed; one in ten needs `gpu` and one in twenty `py`; one in fifty is
//! assigned to a worker), 16 workers (four with `gpu`, four with `py`), 8 tasks in progress
//! and 100 completed ones (below the board's `archive_after`). It is kept for the whole run,
//! as a store that keeps its state between ops does, and every op goes through the stores'
//! own entry point, `rules::apply_in_batch`:
//!
//! - `claim`, `complete`, `add`, `heartbeat`, `turn-ended` (a hand-over): one op alone, without
//!   a request key and without undo, as a local board applies it;
//! - `batch16`: 16 keyed ops in one batch, each with undo, as `vine serve`'s group commit
//!   applies them: workers 0 to 7 complete the task each holds, workers 8 to 15 claim (the
//!   time per op is reported; a state with 10 pending tasks could not give 16 claims).
//!
//! Only the op is timed. What keeps the state steady is not: a claimed task is released, a
//! completed one replaced by a new task (claimed again by a worker of the batch), an added
//! one cancelled, and every 100 finished tasks
//! leave the queue (as the store's archive takes them); after each op the state is cleared of
//! what a store's commit takes (outbox, files, touched, dirty).
//!
//! `reload` times a claim right after the queue was replaced by an equal one (as a store that
//! loads it again, or whose archive took tasks off it, has it): the rules scan the queue; the
//! table's `index build` row is the op after it (a release), which builds the index first.
//! Its `after archive` row is the op (a heartbeat) right after 100 finished tasks were taken
//! off the queue in place: it takes them off the index first.
//!
//! Run with `cargo bench --bench rules` (about two minutes); it prints the table of medians
//! (µs per op) at the end. Without `--bench` (as under `cargo test --benches`) every benchmark
//! runs once on the smallest state, as a check.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentvine::op::{self, NewTask, Op, Reply};
use agentvine::rules::{Dirty, State, apply_in_batch};
use agentvine::task::{Priority, Task, TaskStatus};
use agentvine::time::Timestamp;
use agentvine::worker::Worker;
use chrono::{TimeDelta, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion};
use serde_json::{Map, Value};

/// Pending tasks of the states measured.
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Workers on the board.
const WORKERS: usize = 16;
/// Tasks in progress (held by workers 0 to 7).
const IN_PROGRESS: usize = 8;
/// Completed tasks kept on the queue.
const HISTORY: usize = 100;
/// Finished tasks after which the bench takes them off the queue (as the archive does).
const ARCHIVE_EVERY: usize = 100;
/// The first task id (the history's).
const FIRST_ID: u64 = 1_700_000_000_000;
/// The worker whose ops are measured: no capability, holds nothing.
const ME: &str = "worker-12";

/// The ops measured, in the order of the table.
const OPS: [&str; 7] = [
    "claim",
    "complete",
    "add",
    "heartbeat",
    "turn-ended",
    "batch16",
    "reload",
];

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn worker(n: usize) -> String {
    format!("worker-{n}")
}

/// The board clock of the whole run.
fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

fn ago(secs: i64) -> Timestamp {
    now() - TimeDelta::seconds(secs)
}

/// A realistic task as a coordinator adds it: description, an instruction file, two context
/// files and two metadata fields.
fn new_task(n: u64) -> NewTask {
    let mut metadata = Map::new();
    metadata.insert(
        "working_directory".into(),
        Value::String(format!("src/module_{n}")),
    );
    metadata.insert(
        "acceptance".into(),
        Value::String("cargo test passes; no new warnings".into()),
    );
    NewTask {
        description: format!("Implement module {n}: the endpoint, its tests and its docs"),
        instruction_file: Some("tasks/shared-instructions.md".into()),
        context_files: vec!["docs/api-spec.md".into(), format!("src/module_{n}/mod.rs")],
        metadata,
        ..NewTask::default()
    }
}

/// The same task as it sits on the queue.
fn queued(id: u64, n: u64, created: Timestamp) -> Task {
    let nt = new_task(n);
    let mut t = Task::new(id, nt.description, created);
    t.instruction_file = nt.instruction_file;
    t.context_files = nt.context_files;
    t.metadata = nt.metadata;
    t
}

/// The state measured: `pending` pending tasks in the mix above, 8 in progress, 100 completed.
fn build(pending: usize) -> State {
    let mut tasks = Vec::new();
    let mut id = FIRST_ID;
    let mut history = Vec::new();
    for k in 0..HISTORY {
        let mut t = queued(id, k as u64, ago(7200));
        let w = worker(k % WORKERS);
        t.status = TaskStatus::Completed;
        t.attempts = 1;
        t.claimed_by = Some(w.clone());
        t.claimed_at = Some(ago(3600));
        t.first_claimed_at = t.claimed_at;
        t.completed_by = Some(w);
        t.completed_at = Some(ago(3000));
        t.result = Some(Value::String("done".into()));
        history.push(id);
        tasks.push(t);
        id += 1;
    }
    let mut held = Vec::new();
    for w in 0..IN_PROGRESS {
        let mut t = queued(id, (HISTORY + w) as u64, ago(600));
        t.status = TaskStatus::InProgress;
        t.attempts = 1;
        t.claimed_by = Some(worker(w));
        t.claimed_at = Some(ago(10));
        t.first_claimed_at = t.claimed_at;
        t.lease_expires_at = Some(ago(10) + TimeDelta::seconds(1800));
        held.push(id);
        tasks.push(t);
        id += 1;
    }
    let mut earlier: Vec<u64> = Vec::new();
    for k in 0..pending {
        let mut t = queued(id, (HISTORY + IN_PROGRESS + k) as u64, ago(300));
        t.priority = match k % 10 {
            0 => Priority::High,
            1 | 6 => Priority::Low,
            _ => Priority::Normal,
        };
        if k % 10 == 3 {
            t.requires = vec!["gpu".into()];
        } else if k % 20 == 7 {
            t.requires = vec!["py".into()];
        }
        if k % 50 == 11 {
            t.assigned_to = Some(worker(3));
        }
        if k % 7 == 2 {
            t.depends_on = vec![match k % 3 {
                0 => history[k % HISTORY],
                1 => held[k % IN_PROGRESS],
                _ => earlier.last().copied().unwrap_or(history[0]),
            }];
        }
        earlier.push(id);
        tasks.push(t);
        id += 1;
    }
    let mut workers = BTreeMap::new();
    for n in 0..WORKERS {
        let caps = match n {
            0..4 => vec!["gpu".to_string()],
            4..8 => vec!["py".to_string()],
            _ => vec![],
        };
        let mut w = Worker::new(caps, ago(3600));
        w.last_heartbeat = Some(ago(5));
        if let Some(&task) = held.get(n) {
            w.last_task_claimed = Some(ago(10));
            w.current_task = Some(task);
        }
        workers.insert(worker(n), w);
    }
    State {
        tasks,
        workers,
        min_next_id: id,
        ..State::default()
    }
}

/// A state being measured, kept for the whole run.
struct Bench {
    pending: usize,
    st: State,
    /// Number of the next task added.
    next: u64,
    /// Tasks finished by the bench since they last left the queue.
    finished: usize,
    /// Every timed op (µs), by op.
    times: BTreeMap<&'static str, Vec<f64>>,
    /// Claims of a batch that found nothing to claim.
    empty_claims: usize,
}

impl Bench {
    fn new(pending: usize) -> Bench {
        Bench {
            pending,
            st: build(pending),
            next: 1_000_000,
            finished: 0,
            times: BTreeMap::new(),
            empty_claims: 0,
        }
    }

    /// Applies one op as a store does alone (no key, no undo) and clears what a commit takes.
    fn apply(&mut self, op: impl Into<Op>) -> R<Reply> {
        let r = apply_in_batch(&mut self.st, op.into(), None, now(), false);
        self.committed();
        Ok(r?)
    }

    /// Applies one op, timed.
    fn timed(&mut self, op: impl Into<Op>) -> R<(Reply, Duration)> {
        let op = op.into();
        let t = Instant::now();
        let r = apply_in_batch(&mut self.st, op, None, now(), false);
        let d = t.elapsed();
        self.committed();
        Ok((r?, d))
    }

    /// What a store's commit takes from the state.
    fn committed(&mut self) {
        self.st.outbox.clear();
        self.st.files.clear();
        self.st.touched.clear();
        self.st.log.clear();
        self.st.dirty = Dirty::default();
    }

    /// Takes the tasks the bench finished off the queue every [`ARCHIVE_EVERY`] (not timed).
    fn finished_one(&mut self) {
        self.finished += 1;
        if self.finished >= ARCHIVE_EVERY {
            self.archive();
        }
    }

    fn archive(&mut self) {
        self.st
            .tasks
            .retain(|t| !t.status.is_terminal() || t.id < FIRST_ID + HISTORY as u64);
        self.finished = 0;
        // The op after it takes the archived tasks off the index first.
        if let Ok((_, d)) = self.timed(op::Heartbeat { worker: worker(0) }) {
            self.record("after archive", d);
        }
    }

    fn record(&mut self, op: &'static str, d: Duration) -> Duration {
        self.times
            .entry(op)
            .or_default()
            .push(d.as_secs_f64() * 1e6);
        d
    }

    fn claim_id(reply: &Reply) -> R<(u64, u32)> {
        match reply {
            Reply::Claimed { claim: Some(c), .. } => Ok((c.task.id, c.task.attempts)),
            Reply::Turn(op::Turn {
                next: op::Next::HandOver { claim },
                ..
            }) => Ok((claim.task.id, claim.task.attempts)),
            other => Err(format!("expected a claim, got {other:?}").into()),
        }
    }

    fn release(&mut self, task: u64, who: &str) -> R<()> {
        self.apply(op::Release {
            task,
            worker: who.into(),
            attempt: None,
        })?;
        Ok(())
    }

    /// The task `who` holds (the first on the queue) and its attempt.
    fn held(&self, who: &str) -> Option<(u64, u32)> {
        self.st
            .tasks
            .iter()
            .find(|t| t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(who))
            .map(|t| (t.id, t.attempts))
    }

    /// One measured op of kind `op`; returns its time.
    fn one(&mut self, op: &'static str) -> R<Duration> {
        let d = match op {
            "claim" => {
                let (r, d) = self.timed(op::Claim { worker: ME.into() })?;
                let (id, _) = Self::claim_id(&r)?;
                self.release(id, ME)?;
                d
            }
            "complete" => {
                let r = self.apply(op::Claim { worker: ME.into() })?;
                let (id, attempt) = Self::claim_id(&r)?;
                let (_, d) = self.timed(op::Complete {
                    task: id,
                    worker: ME.into(),
                    attempt: Some(attempt),
                    result: Some(Value::String(format!("module {id} done; tests pass"))),
                })?;
                self.next += 1;
                self.apply(op::Add {
                    task: new_task(self.next),
                })?;
                self.finished_one();
                d
            }
            "add" => {
                self.next += 1;
                let (r, d) = self.timed(op::Add {
                    task: new_task(self.next),
                })?;
                let Reply::Added { tasks } = r else {
                    return Err(format!("expected added tasks, got {r:?}").into());
                };
                self.apply(op::Cancel {
                    task: tasks[0].id,
                    reason: None,
                })?;
                self.finished_one();
                d
            }
            "heartbeat" => {
                let (_, d) = self.timed(op::Heartbeat { worker: worker(0) })?;
                d
            }
            "turn-ended" => {
                let (r, d) = self.timed(op::TurnEnded {
                    worker: ME.into(),
                    max_idle_secs: 600,
                    tool_calls: 0,
                    reminded: None,
                    wait_secs: 0,
                    pooled: false,
                })?;
                let (id, _) = Self::claim_id(&r)?;
                self.release(id, ME)?;
                d
            }
            "batch16" => {
                // Workers 0 to 7 complete the task each holds, workers 8 to 15 claim: 16 keyed
                // ops in one batch, each with undo.
                self.next += 1;
                let mut ops = Vec::with_capacity(WORKERS);
                for w in 0..WORKERS {
                    let op = match self.held(&worker(w)) {
                        Some((task, attempt)) if w < IN_PROGRESS => Op::Complete(op::Complete {
                            task,
                            worker: worker(w),
                            attempt: Some(attempt),
                            result: Some(Value::String(format!("module {task} done"))),
                        }),
                        _ => Op::Claim(op::Claim { worker: worker(w) }),
                    };
                    ops.push((op, format!("op-{}-{w}", self.next)));
                }
                let t = Instant::now();
                let replies: Vec<_> = ops
                    .into_iter()
                    .map(|(op, key)| apply_in_batch(&mut self.st, op, Some(&key), now(), true))
                    .collect();
                let d = t.elapsed() / WORKERS as u32;
                self.committed();
                for (w, r) in replies.into_iter().enumerate() {
                    match r? {
                        Reply::Task { .. } => {
                            self.next += 1;
                            self.apply(op::Add {
                                task: new_task(self.next),
                            })?;
                            let (id, _) =
                                Self::claim_id(&self.apply(op::Claim { worker: worker(w) })?)?;
                            let _ = id;
                            self.finished_one();
                        }
                        Reply::Claimed { claim: Some(c), .. } => {
                            self.release(c.task.id, &worker(w))?
                        }
                        Reply::Claimed { claim: None, .. } => self.empty_claims += 1,
                        other => return Err(format!("unexpected reply {other:?}").into()),
                    }
                }
                d
            }
            "reload" => {
                // The queue replaced by an equal one, as by a store that loads it again: the
                // claim scans it, and the next op (a release) builds the index first.
                let tasks = self.st.tasks.clone();
                self.st.tasks = tasks;
                let (r, d) = self.timed(op::Claim { worker: ME.into() })?;
                let (id, _) = Self::claim_id(&r)?;
                let (_, build) = self.timed(op::Release {
                    task: id,
                    worker: ME.into(),
                    attempt: None,
                })?;
                self.record("index build", build);
                d
            }
            other => return Err(format!("unknown op {other}").into()),
        };
        Ok(self.record(op, d))
    }

    /// Checks that the state is as built: as many pending tasks, 8 in progress.
    fn check(&self) -> R<()> {
        let count = |s: TaskStatus| self.st.tasks.iter().filter(|t| t.status == s).count();
        let (p, i) = (count(TaskStatus::Pending), count(TaskStatus::InProgress));
        if p != self.pending || i != IN_PROGRESS {
            return Err(format!(
                "the state drifted: {p} pending (built with {}), {i} in progress",
                self.pending
            )
            .into());
        }
        Ok(())
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() -> R<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if benchmarking { &SIZES } else { &SIZES[..1] };
    let benches: Vec<RefCell<Bench>> = sizes.iter().map(|&n| RefCell::new(Bench::new(n))).collect();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    for op in OPS {
        let mut g = c.benchmark_group(format!("rules/{op}"));
        for b in &benches {
            let pending = b.borrow().pending;
            g.bench_function(BenchmarkId::from_parameter(pending), |bench| {
                bench.iter_custom(|iters| {
                    let mut b = b.borrow_mut();
                    (0..iters)
                        .map(|_| {
                            b.one(op)
                                .unwrap_or_else(|e| panic!("{op} at {pending} pending: {e}"))
                        })
                        .sum()
                })
            });
        }
        g.finish();
    }
    c.final_summary();
    for b in &benches {
        let mut b = b.borrow_mut();
        b.archive();
        b.check()?;
        if b.empty_claims > 0 {
            println!(
                "{} pending: {} claims of a batch found nothing",
                b.pending, b.empty_claims
            );
        }
    }
    println!();
    println!("rules: median µs per op (of every timed op), by pending tasks");
    print!("{:<14}", "op");
    for &n in sizes {
        print!("{:>12}", n);
    }
    println!("{:>14}", "last/first");
    for op in OPS.into_iter().chain(["index build", "after archive"]) {
        print!("{op:<14}");
        let medians: Vec<f64> = benches
            .iter()
            .map(|b| median(b.borrow().times.get(op).map_or(&[][..], |v| v)))
            .collect();
        for m in &medians {
            print!("{m:>12.2}");
        }
        println!("{:>14.2}", medians[medians.len() - 1] / medians[0]);
    }
    Ok(())
}
