//! Concurrency and crash-safety tests with real `vine` processes.
//!
//! Every test drives the `vine` binary on a fresh board in a temp directory. Random choices
//! (which process to SIGKILL, when) come from a seeded xorshift generator: the seed is printed
//! at the start of each test and can be forced with `RACE_SEED=N cargo test --test race`.
//! No assertion depends on timing; sleeps only let leases and retry delays run out.

#![cfg(unix)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{Files, Run, TestBoard, VINE, assert_log_sane, ids_of, jsonl, vine_std};

/// Longest a drain may take before the test gives up (a guard against hangs, not an assertion
/// on speed).
const DRAIN_GUARD: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// A seeded PRNG.

/// xorshift64*: small, fast, good enough to pick kill moments.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Mix the seed so that seeds 1, 2, 3... give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seed of a test: `$RACE_SEED`, else the clock. Printed so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let s = std::env::var("RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (replay with RACE_SEED={s})");
    s
}

// ---------------------------------------------------------------------------------------------
// Running `vine`.

/// `vine --dir DIR --json ARGS...`, isolated from the caller's environment.
fn vine_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = vine_std();
    c.arg("--dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `vine` to the end.
fn run(dir: &Path, args: &[&str]) -> Run {
    support::run(&mut vine_cmd(dir, args))
}

/// Runs `vine`, SIGKILLing it after `kill_after` when given (it may have finished by then);
/// with `journal`, its change goes to the board journal (`VINE_COMMIT=journal`: a record,
/// and a checkpoint when it exits), so kills also land in appends and checkpoints.
fn run_killable(dir: &Path, args: &[&str], kill_after: Option<Duration>, journal: bool) -> Run {
    let mut cmd = vine_cmd(dir, args);
    if journal {
        cmd.env("VINE_COMMIT", "journal");
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {VINE}: {e}"));
    if let Some(d) = kill_after {
        if !d.is_zero() {
            thread::sleep(d);
        }
        // Child::kill sends SIGKILL; the child is not reaped yet, so its pid cannot be reused.
        let _ = child.kill();
    }
    Run::from(child.wait_with_output().expect("waiting for vine"))
}

/// Runs `vine` and insists on exit 0; returns its JSON.
fn run_ok(dir: &Path, args: &[&str]) -> Value {
    let out = run(dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "`vine {}` failed\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    let v = out.stdout_json();
    assert_eq!(v["ok"], json!(true), "`vine {}`: {v}", args.join(" "));
    v
}

// ---------------------------------------------------------------------------------------------
// Boards.

/// What the race tests do with a board beyond [`TestBoard`]'s own methods.
impl TestBoard {
    /// Makes retries immediate-ish (1 s) so a drain after chaos does not wait out the default
    /// 10 s..15 min backoff. There is no flag for this; `board.json` is the settings file.
    fn short_backoff(&self) {
        self.set_setting("retry_backoff_secs", json!(1));
        self.set_setting("retry_backoff_max_secs", json!(1));
    }

    /// Adds the plan `entries` with `vine add --plan`; returns the new ids in order.
    fn add_plan(&self, name: &str, entries: &[Value]) -> Vec<u64> {
        let path = self.tmp.path().join(name);
        fs::write(
            &path,
            serde_json::to_vec(&Value::Array(entries.to_vec())).unwrap(),
        )
        .unwrap();
        let v = run_ok(&self.dir, &["add", "--plan", path.to_str().unwrap()]);
        let ids = ids_of(&v["tasks"]);
        assert_eq!(ids.len(), entries.len(), "plan {name}: {v}");
        ids
    }

    fn status(&self) -> Value {
        run_ok(&self.dir, &["status"])
    }

    /// `vine tasks --all`: every task, queue and archive.
    fn all_tasks(&self) -> Vec<Value> {
        run_ok(&self.dir, &["tasks", "--all"])["tasks"]
            .as_array()
            .expect("tasks")
            .clone()
    }
}

/// Asserts that every worker that received a claim is in `worker-status.json`.
fn assert_workers_known(files: &Files, seen: &Seen, ctx: &str) {
    for c in &seen.claims {
        assert!(
            files.workers.get(&c.worker).is_some_and(Value::is_object),
            "{ctx}: worker {} claimed task {} but is not in worker-status.json",
            c.worker,
            c.id
        );
    }
}

/// Asserts that each id of `added` appears exactly once across queue and archive files, and
/// no other id does.
fn assert_ids_once(files: &Files, added: &[u64], ctx: &str) {
    let counts = files.id_counts();
    let dups: Vec<_> = counts.iter().filter(|&(_, &n)| n != 1).collect();
    assert!(
        dups.is_empty(),
        "{ctx}: ids not exactly once across queue + archive: {dups:?}"
    );
    let want: BTreeSet<u64> = added.iter().copied().collect();
    let have: BTreeSet<u64> = counts.keys().copied().collect();
    let lost: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(lost.is_empty(), "{ctx}: tasks lost: {lost:?}");
    assert!(extra.is_empty(), "{ctx}: unknown tasks appeared: {extra:?}");
}

/// Asserts that a task record is internally consistent for its status (no half-made claim,
/// no completion without a completer...).
fn assert_task_consistent(t: &Value, ctx: &str) {
    let st = t["status"].as_str().unwrap_or("?");
    let has = |k: &str| !t[k].is_null();
    let attempts = t["attempts"].as_u64().unwrap_or(0);
    match st {
        "pending" => {
            assert!(
                !has("claimed_by") && !has("lease_expires_at") && !has("completed_by"),
                "{ctx}: pending task with claim or completion left over: {t}"
            );
        }
        "in_progress" => {
            assert!(
                has("claimed_by") && has("claimed_at") && has("lease_expires_at") && attempts >= 1,
                "{ctx}: in_progress task without a whole claim: {t}"
            );
            assert!(
                !has("completed_by"),
                "{ctx}: in_progress task with a completer: {t}"
            );
        }
        "completed" => {
            assert!(
                has("completed_by") && has("completed_at") && attempts >= 1,
                "{ctx}: completed task without completer: {t}"
            );
            assert_eq!(
                t["completed_by"], t["claimed_by"],
                "{ctx}: completed by another worker than the claimant: {t}"
            );
            assert!(
                !has("lease_expires_at"),
                "{ctx}: completed task still leased: {t}"
            );
        }
        other => panic!("{ctx}: task in unexpected status {other}: {t}"),
    }
}

/// Plan entries `prefix 0..n` with an optional per-task lease.
fn plan_entries(prefix: &str, range: std::ops::Range<usize>, lease: Option<&str>) -> Vec<Value> {
    range
        .map(|i| {
            let mut e = json!({"description": format!("{prefix} {i}")});
            if let Some(l) = lease {
                e["lease"] = json!(l);
            }
            e
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workers.

/// A claim a worker saw succeed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Claimed {
    id: u64,
    worker: String,
    attempt: u64,
}

/// What the workers of a chaos run saw.
#[derive(Debug, Default)]
struct Seen {
    /// Claims whose reply arrived.
    claims: Vec<Claimed>,
    /// Completes that exited 0: the board acknowledged them.
    completed: Vec<Claimed>,
    /// Processes killed by the test.
    kills: usize,
    /// Exits nobody should see (1, 2, 5, or garbage on stdout).
    unexpected: Vec<String>,
}

fn claimed_of(v: &Value, worker: &str) -> Claimed {
    let t = &v["claim"]["task"];
    assert_eq!(t["claimed_by"], json!(worker), "claim reply: {v}");
    assert_eq!(t["status"], json!("in_progress"), "claim reply: {v}");
    Claimed {
        id: t["id"].as_u64().expect("claimed id"),
        worker: worker.to_string(),
        attempt: t["attempts"].as_u64().expect("attempts"),
    }
}

/// Claims and completes with `worker` until nothing is left, with no kills. Between empty
/// claims it requeues stale claims and waits out retry delays. Returns what it did.
fn drain(board: &TestBoard, worker: &str) -> Seen {
    let dir = &board.dir;
    let mut seen = Seen::default();
    let start = Instant::now();
    loop {
        let out = run(dir, &["claim", "--worker", worker]);
        match out.status.code() {
            Some(0) => {
                let c = claimed_of(&out.stdout_json(), worker);
                let attempt = c.attempt.to_string();
                let id = c.id.to_string();
                let result = format!("drained by {worker}");
                let args = [
                    "complete",
                    &id,
                    "--worker",
                    worker,
                    "--attempt",
                    &attempt,
                    "--result",
                    &result,
                ];
                let done = run(dir, &args);
                seen.claims.push(c.clone());
                match done.status.code() {
                    Some(0) => seen.completed.push(c),
                    // The 2 s lease ran out first (a very slow machine): claim again.
                    Some(4) => {}
                    _ => panic!(
                        "drain: complete exited {:?}\n{}\n{}",
                        done.status, done.stdout, done.stderr
                    ),
                }
            }
            Some(3) => {
                let s = board.status();
                if s["pending"] == json!(0) && s["in_progress"] == json!(0) {
                    return seen;
                }
                run_ok(dir, &["requeue-stale"]);
                assert!(
                    start.elapsed() < DRAIN_GUARD,
                    "drain made no progress for {DRAIN_GUARD:?}; status {s}"
                );
                thread::sleep(Duration::from_millis(150));
            }
            _ => panic!(
                "drain: claim exited {:?}\nstdout: {}\nstderr: {}",
                out.status, out.stdout, out.stderr
            ),
        }
    }
}

/// How a chaos worker picks kill moments.
#[derive(Debug, Clone, Copy)]
struct Chaos {
    /// Loop iterations (claim + complete) per worker.
    rounds: usize,
    /// Chance in percent that a claim process is killed.
    kill_claim: u64,
    /// Chance in percent that a complete process is killed.
    kill_complete: u64,
    /// Kills land uniformly in `0..max_delay_us` after the spawn.
    max_delay_us: u64,
    /// The workers' changes go to the journal (see [`run_killable`]).
    journal: bool,
}

/// A worker loop that SIGKILLs its own `vine` processes at random moments.
fn chaos_worker(dir: &Path, worker: &str, mut rng: Rng, chaos: Chaos, seen: &Mutex<Seen>) {
    let kill = |rng: &mut Rng, percent: u64| -> Option<Duration> {
        rng.chance(percent)
            .then(|| Duration::from_micros(rng.below(chaos.max_delay_us)))
    };
    let mut local = Seen::default();
    for _ in 0..chaos.rounds {
        let k = kill(&mut rng, chaos.kill_claim);
        let out = run_killable(dir, &["claim", "--worker", worker], k, chaos.journal);
        if out.killed() {
            local.kills += 1;
            continue;
        }
        let c = match out.status.code() {
            Some(0) => claimed_of(&out.stdout_json(), worker),
            Some(3) => {
                // Nothing claimable now: others hold the rest, or retry delays run.
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            _ => {
                local.unexpected.push(format!(
                    "{worker} claim: {:?} {} {}",
                    out.status, out.stdout, out.stderr
                ));
                continue;
            }
        };
        local.claims.push(c.clone());
        let id = c.id.to_string();
        let attempt = c.attempt.to_string();
        let result = format!("{worker} attempt {attempt}");
        let k = kill(&mut rng, chaos.kill_complete);
        let out = run_killable(
            dir,
            &[
                "complete",
                &id,
                "--worker",
                worker,
                "--attempt",
                &attempt,
                "--result",
                &result,
            ],
            k,
            chaos.journal,
        );
        if out.killed() {
            local.kills += 1;
            continue;
        }
        match out.status.code() {
            Some(0) => {
                let v = out.stdout_json();
                assert_eq!(v["task"]["status"], json!("completed"), "{v}");
                local.completed.push(c);
            }
            // The lease ran out before the complete arrived and the claim was taken back.
            Some(4) => {}
            _ => local.unexpected.push(format!(
                "{worker} complete {id}: {:?} {} {}",
                out.status, out.stdout, out.stderr
            )),
        }
    }
    let mut s = seen.lock().unwrap();
    s.claims.extend(local.claims);
    s.completed.extend(local.completed);
    s.kills += local.kills;
    s.unexpected.extend(local.unexpected);
}

/// Runs `workers` chaos workers at once; returns what they saw.
fn run_chaos(board: &TestBoard, workers: usize, chaos: Chaos, seed: u64) -> Seen {
    let seen = Mutex::new(Seen::default());
    thread::scope(|s| {
        for w in 0..workers {
            let seen = &seen;
            let dir = board.dir.clone();
            let rng = Rng::new(seed.wrapping_add(w as u64 + 1));
            s.spawn(move || chaos_worker(&dir, &format!("c{w}"), rng, chaos, seen));
        }
    });
    seen.into_inner().unwrap()
}

/// Checks claims and completions the workers saw against the final task records:
/// no (task, attempt) was handed out twice, every acknowledged completion is the one the
/// board kept, and every final record is a claim some worker really received.
fn assert_history(seen: &Seen, finals: &BTreeMap<u64, Value>, ctx: &str) {
    let mut handed: HashMap<(u64, u64), &str> = HashMap::new();
    for c in &seen.claims {
        if let Some(other) = handed.insert((c.id, c.attempt), &c.worker) {
            panic!(
                "{ctx}: task {} attempt {} was claimed twice, by {other} and {}",
                c.id, c.attempt, c.worker
            );
        }
    }
    let mut acked: HashSet<u64> = HashSet::new();
    for c in &seen.completed {
        assert!(
            acked.insert(c.id),
            "{ctx}: task {} completed twice (acknowledged twice)",
            c.id
        );
        let t = &finals[&c.id];
        assert_eq!(
            (t["completed_by"].as_str(), t["attempts"].as_u64()),
            (Some(c.worker.as_str()), Some(c.attempt)),
            "{ctx}: `vine complete {} --worker {} --attempt {}` exited 0, but the board keeps another completion: {t}",
            c.id,
            c.worker,
            c.attempt
        );
    }
    for (id, t) in finals {
        let key = (*id, t["attempts"].as_u64().unwrap_or(0));
        assert_eq!(
            handed.get(&key).copied(),
            t["completed_by"].as_str(),
            "{ctx}: task {id} is completed by a claim no worker received: {t}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Eight workers race for 1,000 tasks.

#[test]
fn eight_workers_race_for_a_thousand_tasks() {
    const TASKS: usize = 1000;
    const WORKERS: usize = 8;
    let board = TestBoard::with_init(&[]);
    let mut added = Vec::new();
    for b in 0..4 {
        let entries = plan_entries("race task", b * 250..(b + 1) * 250, None);
        added.extend(board.add_plan(&format!("plan-{b}.json"), &entries));
    }
    let unique: HashSet<u64> = added.iter().copied().collect();
    assert_eq!(unique.len(), TASKS, "ids of added tasks are not unique");

    // Per worker: the ids it claimed, in order, and any unexpected outcome.
    let stop_observer = AtomicBool::new(false);
    let results: Vec<(String, Vec<u64>, Vec<String>)> = thread::scope(|s| {
        let observer = {
            let dir = board.dir.clone();
            let stop = &stop_observer;
            // Reads take no lock: they must never see a damaged or half-written file.
            s.spawn(move || {
                let mut reads = 0;
                let mut odd_status = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let args: &[&str] = if reads % 2 == 0 {
                        &["status"]
                    } else {
                        &["tasks", "--all"]
                    };
                    let out = run(&dir, args);
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "`vine {}` during the race failed: {}\n{}",
                        args.join(" "),
                        out.stdout,
                        out.stderr
                    );
                    let v = out.stdout_json();
                    if reads % 2 == 0 {
                        if v["total"] != json!(TASKS) {
                            odd_status.push(v["total"].clone());
                        }
                    } else {
                        // The archive is appended before the queue is rewritten and this
                        // reads the queue first: every task shows, and shows once.
                        let ids: HashSet<u64> = v["tasks"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|t| t["id"].as_u64().unwrap())
                            .collect();
                        assert_eq!(
                            (ids.len(), v["tasks"].as_array().unwrap().len()),
                            (TASKS, TASKS),
                            "`vine tasks --all` during the race"
                        );
                    }
                    reads += 1;
                    thread::sleep(Duration::from_millis(150));
                }
                (reads, odd_status)
            })
        };
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let dir = board.dir.clone();
                s.spawn(move || {
                    let worker = format!("w{w}");
                    let mut claimed = Vec::new();
                    let mut errors = Vec::new();
                    loop {
                        let out = run(&dir, &["claim", "--worker", &worker]);
                        match out.status.code() {
                            Some(0) => {}
                            Some(3) => break,
                            _ => {
                                errors.push(format!(
                                    "claim: {:?} {} {}",
                                    out.status, out.stdout, out.stderr
                                ));
                                break;
                            }
                        }
                        let c = claimed_of(&out.stdout_json(), &worker);
                        claimed.push(c.id);
                        let id = c.id.to_string();
                        let result = format!("done by {worker}");
                        let out = run(
                            &dir,
                            &["complete", &id, "--worker", &worker, "--result", &result],
                        );
                        if out.status.code() != Some(0) {
                            errors.push(format!(
                                "complete {id}: {:?} {} {}",
                                out.status, out.stdout, out.stderr
                            ));
                        }
                    }
                    (worker, claimed, errors)
                })
            })
            .collect();
        // Join every worker before unwrapping, so that a failing worker still stops the observer.
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        stop_observer.store(true, Ordering::Relaxed);
        let results: Vec<_> = joined.into_iter().map(|r| r.unwrap()).collect();
        let (reads, odd_status) = observer.join().unwrap();
        // Not asserted: reads take no lock and are atomic per file only, so a status read
        // that falls between an archive append and the queue rewrite may count some tasks twice.
        eprintln!(
            "observer made {reads} lock-free reads during the race; status totals other than {TASKS}: {odd_status:?}"
        );
        results
    });

    let mut claimant: HashMap<u64, String> = HashMap::new();
    for (worker, ids, errors) in &results {
        assert!(errors.is_empty(), "{worker}: {errors:#?}");
        for id in ids {
            if let Some(other) = claimant.insert(*id, worker.clone()) {
                panic!("task {id} was claimed by both {other} and {worker}");
            }
        }
    }
    let claimed: BTreeSet<u64> = claimant.keys().copied().collect();
    assert_eq!(
        claimed,
        unique.iter().copied().collect(),
        "claimed ids != added ids"
    );
    let per_worker: Vec<(String, usize)> = results
        .iter()
        .map(|(w, ids, _)| (w.clone(), ids.len()))
        .collect();
    eprintln!("claims per worker: {per_worker:?}");

    let s = board.status();
    assert_eq!(s["completed"], json!(TASKS), "status: {s}");
    assert_eq!(s["total"], json!(TASKS), "status: {s}");
    assert_eq!(s["pending"], json!(0), "status: {s}");
    assert_eq!(s["in_progress"], json!(0), "status: {s}");

    let files = Files::read(&board.dir);
    assert!(
        !files.archive.is_empty(),
        "automatic archiving should have moved tasks"
    );
    assert_ids_once(&files, &added, "after the race");
    for (id, t) in files.tasks_once() {
        assert_task_consistent(&t, "after the race");
        assert_eq!(t["status"], json!("completed"), "task {id}: {t}");
        let w = &claimant[&id];
        assert_eq!(
            t["completed_by"],
            json!(w),
            "task {id} completed by another worker: {t}"
        );
        assert_eq!(t["result"], json!(format!("done by {w}")), "task {id}: {t}");
        assert_eq!(
            t["attempts"],
            json!(1),
            "task {id} claimed more than once: {t}"
        );
    }

    let all = board.all_tasks();
    assert_eq!(all.len(), TASKS, "tasks --all");
    let shown: BTreeSet<u64> = all.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(shown.len(), TASKS, "tasks --all shows an id twice");
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL chaos during claims and completes.

#[test]
fn kill_nine_chaos_loses_and_duplicates_nothing() {
    kill_nine_chaos("kill_nine_chaos", false);
}

/// The same with every change a journal record and a checkpoint as each process exits: kills
/// land in appends (torn records), between a checkpoint's files and its new journal, and
/// between a record and its log entries.
#[test]
fn kill_nine_chaos_on_the_journal_loses_and_duplicates_nothing() {
    kill_nine_chaos("kill_nine_chaos_journal", true);
}

fn kill_nine_chaos(name: &str, journal: bool) {
    const TASKS: usize = 300;
    let seed = seed(name);
    // No automatic archiving here (the compaction test covers it): the queue is the board.
    let board = TestBoard::with_init(&["--max-retries", "1000", "--archive-after", "100000"]);
    board.short_backoff();
    let added = board.add_plan(
        "plan.json",
        &plan_entries("chaos task", 0..TASKS, Some("2s")),
    );

    let chaos = Chaos {
        rounds: 45,
        kill_claim: 35,
        kill_complete: 35,
        max_delay_us: 12_000,
        journal,
    };
    let seen = run_chaos(&board, 4, chaos, seed);
    eprintln!(
        "chaos: {} kills, {} claims received, {} completes acknowledged",
        seen.kills,
        seen.claims.len(),
        seen.completed.len()
    );
    assert!(
        seen.unexpected.is_empty(),
        "seed {seed}: {:#?}",
        seen.unexpected
    );

    // Right after the chaos: every file parses, every task is there once, and in a whole state
    // (after the journal, if a killed process left records, is written into the files).
    if journal {
        let s = board.status();
        assert_eq!(
            s["total"],
            json!(TASKS),
            "seed {seed}, from the journal: {s}"
        );
        run_ok(&board.dir, &["compact"]);
    }
    let files = Files::read(&board.dir);
    assert_ids_once(&files, &added, &format!("seed {seed}, after the chaos"));
    let in_progress: Vec<u64> = files
        .queue
        .iter()
        .inspect(|t| assert_task_consistent(t, &format!("seed {seed}, after the chaos")))
        .filter(|t| t["status"] == json!("in_progress"))
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let s = board.status();
    assert_eq!(s["total"], json!(TASKS), "seed {seed}: {s}");
    eprintln!("after the chaos: {s}");

    // Let every lease run out, take the claims back, and drain with a clean worker.
    thread::sleep(Duration::from_millis(2500));
    let requeued = run_ok(&board.dir, &["requeue-stale"]);
    let requeued: BTreeSet<u64> = requeued["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let stuck: BTreeSet<u64> = in_progress.iter().copied().collect();
    assert!(
        stuck.is_subset(&requeued),
        "seed {seed}: expired claims {stuck:?} were not all requeued: {requeued:?}"
    );
    let mut all_seen = seen;
    let drained = drain(&board, "cleaner");
    eprintln!("drain completed {} tasks", drained.completed.len());
    all_seen.claims.extend(drained.claims);
    all_seen.completed.extend(drained.completed);

    let files = Files::read(&board.dir);
    assert_ids_once(&files, &added, &format!("seed {seed}, after the drain"));
    let finals = files.tasks_once();
    for t in finals.values() {
        assert_task_consistent(t, &format!("seed {seed}, after the drain"));
        assert_eq!(t["status"], json!("completed"), "seed {seed}: {t}");
    }
    for id in &in_progress {
        let t = &finals[id];
        assert!(
            t["attempts"].as_u64().unwrap() >= 2,
            "seed {seed}: task {id} was held by a killed claim, so it needed another attempt: {t}"
        );
    }
    let retried = finals
        .values()
        .filter(|t| t["attempts"].as_u64() > Some(1))
        .count();
    eprintln!(
        "{} tasks were in progress after the chaos; {retried} tasks took more than one attempt",
        in_progress.len()
    );
    assert_history(&all_seen, &finals, &format!("seed {seed}"));
    assert_log_sane(&files, &format!("seed {seed}"));
    assert_workers_known(&files, &all_seen, &format!("seed {seed}"));
    let s = board.status();
    assert_eq!(
        (s["completed"].clone(), s["total"].clone()),
        (json!(TASKS), json!(TASKS)),
        "{s}"
    );
    let all = board.all_tasks();
    assert_eq!(all.len(), TASKS, "seed {seed}: tasks --all");
}

// ---------------------------------------------------------------------------------------------
// 3. A torn line in the message log.

#[test]
fn torn_log_line_is_skipped_then_repaired() {
    let board = TestBoard::with_init(&[]);
    run_ok(&board.dir, &["msg", "send", "first", "--as", "w1"]);
    run_ok(&board.dir, &["msg", "send", "second", "--as", "w2"]);
    let log = board.dir.join("agent-comms.jsonl");
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(br#"{"seq":3,"agent":"w3","type":"message","mess"#)
        .unwrap();
    drop(f);

    let read = run_ok(&board.dir, &["msg", "read"]);
    let texts: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"], "{read}");

    let sent = run_ok(&board.dir, &["msg", "send", "third", "--as", "w1"]);
    assert_eq!(sent["message"]["seq"], json!(3), "{sent}");
    let bytes = fs::read(&log).unwrap();
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "the log must end with a newline"
    );
    let (lines, torn) = jsonl(&log);
    assert!(!torn);
    let texts: Vec<&str> = lines
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second", "third"]);
    let read = run_ok(&board.dir, &["msg", "read"]);
    assert_eq!(read["messages"].as_array().unwrap().len(), 3, "{read}");
    assert_eq!(read["messages"][2]["message"], json!("third"), "{read}");
}

#[test]
fn whole_entry_without_newline_is_dropped_by_readers_and_writers_alike() {
    // A writer killed just before the final newline leaves a line that parses but is torn:
    // readers must not show what the next writer cuts away.
    let board = TestBoard::with_init(&[]);
    let sent = run_ok(&board.dir, &["msg", "send", "kept", "--as", "w1"]);
    let mut entry = sent["message"].clone();
    entry["seq"] = json!(2);
    entry["message"] = json!("never finished");
    let log = board.dir.join("agent-comms.jsonl");
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(serde_json::to_string(&entry).unwrap().as_bytes())
        .unwrap();
    drop(f);

    let read = run_ok(&board.dir, &["msg", "read"]);
    assert_eq!(read["messages"].as_array().unwrap().len(), 1, "{read}");
    let sent = run_ok(&board.dir, &["msg", "send", "next", "--as", "w2"]);
    assert_eq!(sent["message"]["seq"], json!(2), "{sent}");
    let (lines, torn) = jsonl(&log);
    assert!(!torn);
    let texts: Vec<&str> = lines
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["kept", "next"]);
}

#[test]
fn torn_archive_line_is_skipped_then_repaired() {
    let board = TestBoard::with_init(&["--archive-after", "1"]);
    let added = board.add_plan("plan.json", &plan_entries("archived", 0..4, None));
    let complete_next = |w: &str| {
        let c = claimed_of(&run_ok(&board.dir, &["claim", "--worker", w]), w);
        run_ok(&board.dir, &["complete", &c.id.to_string(), "--worker", w]);
    };
    complete_next("w1");
    complete_next("w1"); // two finished > 1: both move to the archive
    let archive = board.dir.join("task-archive.jsonl");
    assert_eq!(jsonl(&archive).0.len(), 2);
    let mut f = fs::OpenOptions::new().append(true).open(&archive).unwrap();
    f.write_all(br#"{"archived_at":"2026-01-01T00:00:00.000Z","totals":{"comp"#)
        .unwrap();
    drop(f);

    assert_eq!(board.all_tasks().len(), 4);
    let s = board.status();
    assert_eq!(
        (s["completed"].clone(), s["total"].clone()),
        (json!(2), json!(4)),
        "{s}"
    );
    complete_next("w2");
    complete_next("w2");
    let (lines, torn) = jsonl(&archive);
    assert!(!torn, "the next archive append must cut the torn line");
    assert_eq!(lines.len(), 4);
    let files = Files::read(&board.dir);
    assert_ids_once(&files, &added, "after repairing the archive");
    let s = board.status();
    assert_eq!(
        (s["completed"].clone(), s["total"].clone()),
        (json!(4), json!(4)),
        "{s}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Concurrent adds.

#[test]
fn concurrent_adds_get_unique_ids_and_none_is_lost() {
    const PROCS: usize = 8;
    const SINGLES: usize = 8;
    let board = TestBoard::with_init(&[]);
    // (description, id) for every task any process added.
    let added: Vec<(String, u64, Vec<u64>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..PROCS)
            .map(|p| {
                let board = &board;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..SINGLES {
                        let d = format!("adder {p} single {i}");
                        let v = run_ok(&board.dir, &["add", &d]);
                        let t = &v["tasks"][0];
                        assert_eq!(t["description"], json!(d), "{v}");
                        out.push((d, t["id"].as_u64().unwrap(), vec![]));
                        if i == SINGLES / 2 {
                            // A plan with a dependency inside it, added amid the singles.
                            let entries = vec![
                                json!({"key": "a", "description": format!("adder {p} plan a")}),
                                json!({"key": "b", "description": format!("adder {p} plan b"), "after": ["a"]}),
                            ];
                            let ids = board.add_plan(&format!("plan-{p}.json"), &entries);
                            out.push((format!("adder {p} plan a"), ids[0], vec![]));
                            out.push((format!("adder {p} plan b"), ids[1], vec![ids[0]]));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = PROCS * (SINGLES + 2);
    assert_eq!(added.len(), total);
    let ids: Vec<u64> = added.iter().map(|a| a.1).collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), total, "two adds got the same id");

    let files = Files::read(&board.dir);
    assert_ids_once(&files, &ids, "after concurrent adds");
    let queue_ids: Vec<u64> = files
        .queue
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert!(
        queue_ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase in queue order: {queue_ids:?}"
    );
    let by_id = files.tasks_once();
    for (d, id, deps) in &added {
        let t = &by_id[id];
        assert_eq!(t["description"], json!(d), "task {id}: {t}");
        assert_eq!(t["status"], json!("pending"), "task {id}: {t}");
        let got: Vec<u64> = t["depends_on"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_u64().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(&got, deps, "task {id} dependencies: {t}");
    }
    let s = board.status();
    assert_eq!(
        (s["pending"].clone(), s["total"].clone()),
        (json!(total), json!(total)),
        "{s}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Kills during compaction.

#[test]
fn kills_during_compaction_keep_each_task_once() {
    const TASKS: usize = 150;
    let seed = seed("kills_during_compaction");
    let board = TestBoard::with_init(&["--archive-after", "5", "--max-retries", "1000"]);
    board.short_backoff();
    let added = board.add_plan(
        "plan.json",
        &plan_entries("compaction task", 0..TASKS, Some("2s")),
    );

    let chaos = Chaos {
        rounds: 40,
        kill_claim: 10,
        kill_complete: 60,
        max_delay_us: 15_000,
        journal: false,
    };
    let seen = run_chaos(&board, 3, chaos, seed);
    eprintln!(
        "chaos: {} kills, {} claims received, {} completes acknowledged",
        seen.kills,
        seen.claims.len(),
        seen.completed.len()
    );
    assert!(
        seen.unexpected.is_empty(),
        "seed {seed}: {:#?}",
        seen.unexpected
    );

    let files = Files::read(&board.dir);
    let raw = files.id_counts();
    let raw_dups = raw.values().filter(|&&n| n > 1).count();
    eprintln!(
        "after the chaos: {} archive lines, {raw_dups} ids both on the queue and in the archive",
        files.archive.len()
    );
    let shown = board.all_tasks();
    let shown_ids: Vec<u64> = shown.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let shown_set: BTreeSet<u64> = shown_ids.iter().copied().collect();
    assert_eq!(
        shown_ids.len(),
        shown_set.len(),
        "seed {seed}: tasks --all shows an id twice"
    );
    assert_eq!(
        shown_set,
        added.iter().copied().collect(),
        "seed {seed}: tasks --all after the chaos"
    );
    // Properties checked softly here, so that a failure below still shows them.
    let mut problems = Vec::new();
    // A cut-off compaction may leave a task both in the archive and on the queue; that is
    // only harmless if both copies are the same record.
    let on_queue: HashMap<u64, &Value> = files
        .queue
        .iter()
        .map(|t| (t["id"].as_u64().unwrap(), t))
        .collect();
    for l in &files.archive {
        let a = &l["task"];
        if let Some(q) = on_queue.get(&a["id"].as_u64().unwrap())
            && *q != a
        {
            problems.push(format!(
                "task {} is archived as {} by {} (attempt {}) but the queue has it {} (claimed by {}, attempt {})",
                a["id"], a["status"], a["completed_by"], a["attempts"], q["status"], q["claimed_by"], q["attempts"]
            ));
        }
    }
    let s = board.status();
    if s["total"] != json!(TASKS) {
        problems.push(format!(
            "status must count each task once after the chaos: {s}"
        ));
    }
    for p in &problems {
        eprintln!("seed {seed}: {p}");
    }

    thread::sleep(Duration::from_millis(2500));
    run_ok(&board.dir, &["requeue-stale"]);
    let mut all_seen = seen;
    let drained = drain(&board, "cleaner");
    all_seen.claims.extend(drained.claims);
    all_seen.completed.extend(drained.completed);

    let files = Files::read(&board.dir);
    for l in &files.archive {
        assert_task_consistent(&l["task"], &format!("seed {seed}, archive"));
    }
    let shown = board.all_tasks();
    let mut finals = BTreeMap::new();
    for t in shown {
        let id = t["id"].as_u64().unwrap();
        assert_task_consistent(&t, &format!("seed {seed}, tasks --all"));
        assert_eq!(t["status"], json!("completed"), "seed {seed}: {t}");
        assert!(
            finals.insert(id, t).is_none(),
            "seed {seed}: tasks --all shows {id} twice"
        );
    }
    assert_eq!(
        finals.keys().copied().collect::<BTreeSet<_>>(),
        added.iter().copied().collect(),
        "seed {seed}: tasks --all after the drain"
    );
    assert_history(&all_seen, &finals, &format!("seed {seed}"));
    assert_log_sane(&files, &format!("seed {seed}"));
    assert_workers_known(&files, &all_seen, &format!("seed {seed}"));
    let s = board.status();
    assert_eq!(
        (s["completed"].clone(), s["total"].clone()),
        (json!(TASKS), json!(TASKS)),
        "seed {seed}: {s}"
    );
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
}

// ---------------------------------------------------------------------------------------------
// A compaction cut off between its archive append and its queue rewrite, made deterministic.
//
// A SIGKILL can land between the archive append and the queue rewrite (the chaos test above
// hits it now and then). To get exactly that on-disk state every time, the queue's temp path
// is taken by a directory: creating the temp file fails right after the archive append, the
// process exits 1, and nothing after that point is written, as if it had been killed there.

/// Blocks the queue rewrite while `f` runs.
fn with_queue_rewrite_blocked<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    let blocker = dir.join(".task-queue.json.tmp");
    let _ = fs::remove_file(&blocker);
    fs::create_dir(&blocker).unwrap();
    let out = f();
    fs::remove_dir(&blocker).unwrap();
    out
}

/// Claims and completes the next task as `worker`.
fn complete_next(dir: &Path, worker: &str) -> Claimed {
    let c = claimed_of(&run_ok(dir, &["claim", "--worker", worker]), worker);
    run_ok(dir, &["complete", &c.id.to_string(), "--worker", worker]);
    c
}

#[test]
fn status_counts_each_task_once_after_a_cut_off_compact() {
    let board = TestBoard::with_init(&[]);
    let dir = &board.dir;
    let added = board.add_plan("plan.json", &plan_entries("compact", 0..4, None));
    for _ in 0..3 {
        complete_next(dir, "w1");
    }
    let out = with_queue_rewrite_blocked(dir, || run(dir, &["compact"]));
    assert_ne!(
        out.status.code(),
        Some(0),
        "the cut-off compact must fail: {}",
        out.stdout
    );
    assert_eq!(
        jsonl(&dir.join("task-archive.jsonl")).0.len(),
        3,
        "the archive append happened"
    );

    let shown = board.all_tasks();
    assert_eq!(shown.len(), 4, "tasks --all shows each task once");
    let s = board.status();
    assert_eq!(
        (
            s["completed"].clone(),
            s["pending"].clone(),
            s["total"].clone()
        ),
        (json!(3), json!(1), json!(4)),
        "status counts the tasks of a cut-off compaction twice (queue + archive): {s}"
    );

    // The next compaction finishes the job without writing the tasks twice.
    run_ok(dir, &["compact"]);
    let files = Files::read(dir);
    assert_ids_once(&files, &added, "after the second compact");
    let s = board.status();
    assert_eq!(
        (s["completed"].clone(), s["total"].clone()),
        (json!(3), json!(4)),
        "{s}"
    );
}

/// Requeues w1's expired claim on the third task and has w2 claim and complete it.
fn w2_redoes_the_third_task(dir: &Path, third: &Claimed) {
    // w1 is gone: its 1 s lease runs out, and w2 does the task; the board acknowledges w2.
    thread::sleep(Duration::from_millis(1200));
    run_ok(dir, &["requeue-stale"]);
    thread::sleep(Duration::from_millis(1100)); // the 1 s retry delay
    let c = claimed_of(&run_ok(dir, &["claim", "--worker", "w2"]), "w2");
    assert_eq!((c.id, c.attempt), (third.id, 2));
    let id = third.id.to_string();
    let done = run_ok(
        dir,
        &[
            "complete",
            &id,
            "--worker",
            "w2",
            "--attempt",
            "2",
            "--result",
            "from w2",
        ],
    );
    assert_eq!(done["task"]["completed_by"], json!("w2"));
}

/// Board with `archive_after` 2, two tasks completed, and a third claimed by w1 whose
/// complete was cut off after the automatic archive append. Returns the board and the claim.
/// `more` tasks are added after the first four.
fn cut_off_auto_archive(more: usize) -> (TestBoard, Claimed) {
    let board = TestBoard::with_init(&["--archive-after", "2"]);
    board.short_backoff();
    let mut plan = vec![
        json!({"description": "one"}),
        json!({"description": "two"}),
        json!({"description": "three", "lease": "1s"}),
        json!({"description": "four"}),
    ];
    plan.extend(plan_entries("more", 0..more, None));
    let added = board.add_plan("plan.json", &plan);
    let dir = &board.dir;
    complete_next(dir, "w1");
    complete_next(dir, "w1");
    let third = claimed_of(&run_ok(dir, &["claim", "--worker", "w1"]), "w1");
    assert_eq!(third.id, added[2]);
    // The complete makes three finished tasks (> 2): it archives them, then the queue rewrite
    // is cut off.
    let id = third.id.to_string();
    let out = with_queue_rewrite_blocked(dir, || {
        run(
            dir,
            &["complete", &id, "--worker", "w1", "--result", "from w1"],
        )
    });
    assert_ne!(
        out.status.code(),
        Some(0),
        "the cut-off complete must not report success: {}",
        out.stdout
    );
    (board, third)
}

#[test]
fn a_complete_cut_off_during_auto_archiving_is_not_recorded() {
    let (board, third) = cut_off_auto_archive(0);
    let dir = &board.dir;
    let shown = run_ok(dir, &["show", &third.id.to_string()]);
    assert_eq!(shown["task"]["status"], json!("in_progress"), "{shown}");
    let files = Files::read(dir);
    let phantom: Vec<&Value> = files
        .archive
        .iter()
        .filter(|l| l["task"]["id"] == json!(third.id))
        .collect();
    assert!(
        phantom.is_empty(),
        "the archive records a complete that failed (the queue still says in_progress): {phantom:?}"
    );
    let s = board.status();
    assert_eq!(
        (
            s["completed"].clone(),
            s["in_progress"].clone(),
            s["total"].clone()
        ),
        (json!(2), json!(1), json!(4)),
        "status after a cut-off automatic archive: {s}"
    );
}

#[test]
fn the_acknowledged_completion_wins_over_a_cut_off_one() {
    let (board, third) = cut_off_auto_archive(0);
    let dir = &board.dir;
    let id = third.id.to_string();
    w2_redoes_the_third_task(dir, &third);

    // What the board keeps must be the completion it acknowledged, not the one it refused.
    let want = (json!("w2"), json!(2), json!("from w2"));
    let shown = run_ok(dir, &["show", &id]);
    let t = &shown["task"];
    assert_eq!(
        (
            t["completed_by"].clone(),
            t["attempts"].clone(),
            t["result"].clone()
        ),
        want,
        "`vine show`: the board keeps w1's refused completion instead of w2's acknowledged one: {shown}"
    );
    let all = board.all_tasks();
    let t = all.iter().find(|t| t["id"] == json!(third.id)).unwrap();
    assert_eq!(
        (
            t["completed_by"].clone(),
            t["attempts"].clone(),
            t["result"].clone()
        ),
        want,
        "tasks --all: {t}"
    );
    let s = board.status();
    assert_eq!(
        (s["completed"].clone(), s["total"].clone()),
        (json!(3), json!(4)),
        "{s}"
    );
}

#[test]
fn archive_totals_stay_right_after_a_cut_off_auto_archive() {
    // As above, but the cut-off record is no longer at the archive's tail when the real
    // completion is archived, so the archive gets the task a second time.
    let (board, third) = cut_off_auto_archive(4);
    let dir = &board.dir;
    for _ in 0..4 {
        complete_next(dir, "w1"); // "four" and three more; compactions run meanwhile
    }
    w2_redoes_the_third_task(dir, &third);
    complete_next(dir, "w1");
    run_ok(dir, &["compact"]);

    let all = board.all_tasks();
    assert_eq!(all.len(), 8, "tasks --all");
    let t = all.iter().find(|t| t["id"] == json!(third.id)).unwrap();
    assert_eq!(t["completed_by"], json!("w2"), "tasks --all: {t}");
    let s = board.status();
    assert_eq!(
        (
            s["completed"].clone(),
            s["archived"].clone(),
            s["total"].clone()
        ),
        (json!(8), json!(8), json!(8)),
        "status counts a task twice for good: {s}"
    );
}

// ---------------------------------------------------------------------------------------------
// The lock file deleted under running workers.

/// `board.lock` is removed every 2 ms while six workers claim and complete 150 tasks: every
/// task is still claimed exactly once and every acknowledged completion is on the board.
#[test]
fn deleting_the_lock_file_under_workers_breaks_nothing() {
    const TASKS: usize = 150;
    const WORKERS: usize = 6;
    let board = TestBoard::with_init(&["--archive-after", "100000"]);
    let added = board.add_plan("plan.json", &plan_entries("lock task", 0..TASKS, None));
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let removed = thread::scope(|s| {
        let remover = {
            let lock = board.dir.join("board.lock");
            let stop = &stop;
            s.spawn(move || {
                let mut removed = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if fs::remove_file(&lock).is_ok() {
                        removed += 1;
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                removed
            })
        };
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let dir = board.dir.clone();
                let seen = &seen;
                s.spawn(move || {
                    let worker = format!("w{w}");
                    let mut local = Seen::default();
                    loop {
                        let out = run(&dir, &["claim", "--worker", &worker]);
                        match out.status.code() {
                            Some(0) => {}
                            Some(3) => break,
                            _ => {
                                local.unexpected.push(format!(
                                    "{worker} claim: {:?} {} {}",
                                    out.status, out.stdout, out.stderr
                                ));
                                break;
                            }
                        }
                        let c = claimed_of(&out.stdout_json(), &worker);
                        local.claims.push(c.clone());
                        let (id, attempt) = (c.id.to_string(), c.attempt.to_string());
                        let args = ["complete", &id, "--worker", &worker, "--attempt", &attempt];
                        let out = run(&dir, &args);
                        match out.status.code() {
                            Some(0) => local.completed.push(c),
                            _ => local.unexpected.push(format!(
                                "{worker} complete {id}: {:?} {} {}",
                                out.status, out.stdout, out.stderr
                            )),
                        }
                    }
                    let mut s = seen.lock().unwrap();
                    s.claims.extend(local.claims);
                    s.completed.extend(local.completed);
                    s.unexpected.extend(local.unexpected);
                })
            })
            .collect();
        let joined: Vec<_> = workers.into_iter().map(|h| h.join()).collect();
        stop.store(true, Ordering::Relaxed);
        let removed = remover.join().unwrap();
        joined.into_iter().for_each(|r| r.unwrap());
        removed
    });
    let seen = seen.into_inner().unwrap();
    eprintln!(
        "board.lock removed {removed} times; {} claims, {} completions",
        seen.claims.len(),
        seen.completed.len()
    );
    assert!(removed > 0, "the lock file was never removed");
    let mut claimant: HashMap<u64, &str> = HashMap::new();
    for c in &seen.claims {
        if let Some(other) = claimant.insert(c.id, &c.worker) {
            panic!(
                "task {} was claimed twice, by {other} and {}",
                c.id, c.worker
            );
        }
    }
    assert!(seen.unexpected.is_empty(), "{:#?}", seen.unexpected);
    let files = Files::read(&board.dir);
    assert_ids_once(&files, &added, "after deleting the lock file");
    let finals = files.tasks_once();
    assert_history(&seen, &finals, "after deleting the lock file");
    for t in finals.values() {
        assert_eq!(t["status"], json!("completed"), "{t}");
    }
    assert_eq!(seen.completed.len(), TASKS);
}
