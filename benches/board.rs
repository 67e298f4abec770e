//! Benchmark of the board: claim latency against the durable-write floor, claim cost as the
//! history grows, worker throughput with several processes, the cost of one `vine` process
//! per op, a breakdown of where a claim's time goes, and the same board behind `vine serve`
//! (remote cycle latency over loopback and throughput of remote worker processes, beside the
//! local figures of the same run).
//!
//! Run with `cargo bench --bench board` (90 to 110 s here). See BENCHMARKS.md for what is
//! measured and how, and for the latest numbers.
//!
//! `AGENTVINE_BENCH_HISTORIES=100,1000` measures other history sizes (comma-separated).
//! When the environment variable `AGENTVINE_BENCH_WORKER` is set, this binary is a worker
//! process of the throughput test instead (see [`worker_main`]), on a board directory or on
//! a server URL.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvine::op::{self, NewTask, Op, PlanTask, Reply};
use agentvine::remote::{Http, HttpOptions};
use agentvine::rules::{self, Dirty, State};
use agentvine::settings::{BoardFile, Settings};
use agentvine::store::local::LocalStore;
use agentvine::store::queue_file::{self, QueueCache};
use agentvine::store::{archive, damage, durable, log, paths};
use agentvine::task::{Task, TaskStatus};
use agentvine::wire::{OpRequest, parse_reply};
use agentvine::worker::Worker;
use agentvine::{Board, ClaimedTask};
use chrono::TimeDelta;
use serde::Serialize;
use serde_json::{Map, Value};

type R<T> = Result<T, Box<dyn Error>>;

/// Pending tasks kept on the board while claims are measured.
const POOL: usize = 50;
/// Tasks of history (added, claimed and completed before the measurement).
const HISTORIES: [usize; 3] = [100, 10_000, 100_000];
/// Workers the history was spread over (they stay in worker-status.json).
const HISTORY_WORKERS: usize = 4;
/// The worker whose claims are measured (one of the history workers).
const ME: &str = "worker-1";
/// Unrecorded rounds before the measurement (a multiple of `SIDE_EVERY`).
const WARMUP: usize = 21;
/// Recorded rounds (one measured claim per board each) = this many times `archive_after + 1`.
const MEASURED_PERIODS: usize = 3;
/// One breakdown claim and one cold-handle claim every this many rounds.
const SIDE_EVERY: usize = 3;
/// `vine` process claim+complete cycles (one period).
const PROCESS_PERIODS: usize = 1;
/// Runs of `vine --version` (process start and exit only).
const VERSION_RUNS: usize = 50;
/// Worker processes of the throughput test.
const WORKER_COUNTS: [usize; 3] = [1, 4, 16];
/// Rounds of throughput runs (each round runs every worker count once).
const THROUGHPUT_ROUNDS: usize = 3;
/// Wall time window of each throughput run.
const WINDOW_SECS: u64 = 3;
/// The informational variant board: this history...
const VARIANT_HISTORY: usize = 10_000;
/// ...with this `archive_after` instead of the default 200.
const VARIANT_ARCHIVE_AFTER: usize = 20;
/// History of the board the throughput and process tests use.
const THROUGHPUT_HISTORY: usize = 10_000;
/// The environment variable that turns this binary into a throughput worker.
const WORKER_ENV: &str = "AGENTVINE_BENCH_WORKER";
/// The instruction file the throughput feeder's tasks point at.
const SHARED_INSTRUCTIONS: &str = "tasks/bench-shared-instructions.md";

fn main() -> R<()> {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return worker_main(&spec);
    }
    let mut grouped: Vec<usize> =
        [&GROUP_REPLACE[..], &GROUP_CPU, &GROUP_WORKERS, &GROUP_IO].concat();
    grouped.sort_unstable();
    if grouped != (0..PHASES.len()).collect::<Vec<_>>() {
        return Err("the breakdown groups must cover every phase once".into());
    }
    let total = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("agentvine-bench-")
        .tempdir_in("/tmp")?;
    let settings = Settings::default();
    let period = settings.archive_after + 1;
    let machine = machine(root.path());
    let vine = vine_binary()?;
    eprintln!("agentvine bench: boards under {}", root.path().display());
    let vine_line = format!(
        "vine binary: {} ({})",
        vine.display(),
        if option_env!("CARGO_BIN_EXE_vine").is_some() {
            "CARGO_BIN_EXE_vine, built by cargo bench"
        } else {
            "target/release/vine"
        }
    );
    eprintln!("{vine_line}");

    let histories: Vec<usize> = match std::env::var("AGENTVINE_BENCH_HISTORIES") {
        Ok(v) => v
            .split(',')
            .map(|h| h.trim().parse())
            .collect::<Result<_, _>>()?,
        Err(_) => HISTORIES.to_vec(),
    };
    let load_start = loadavg();
    // Build every board first, then measure them interleaved (one cycle on each board in
    // turn), so that slow periods of the shared disk hit every history size alike.
    let mut benches = Vec::new();
    // The boards: one per history size with default settings, plus one variant with a smaller
    // `archive_after` (informational: how much the finished tasks kept on the queue cost).
    let mut boards: Vec<(usize, Settings, bool)> = histories
        .iter()
        .map(|&h| (h, settings.clone(), false))
        .collect();
    boards.push((
        VARIANT_HISTORY,
        Settings {
            archive_after: VARIANT_ARCHIVE_AFTER,
            ..settings.clone()
        },
        true,
    ));
    for (history, board_settings, variant) in boards {
        let label = if variant {
            format!("{history}/a{}", board_settings.archive_after)
        } else {
            history.to_string()
        };
        let dir = root
            .path()
            .join(format!("board-{}", label.replace('/', "-")));
        let t = Instant::now();
        let built = build_board(&dir, history, &board_settings)?;
        let build_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "board {label}: built in {build_secs:.1}s (queue: {} finished + {} pending, archive: {})",
            built.queue_finished, built.pending, built.archived
        );
        benches.push(LatencyRun {
            history,
            label,
            variant,
            built,
            build_secs,
            board: Some(Board::open(&dir)?),
            dir,
            next_task: 10_000_000,
            ..LatencyRun::default()
        });
    }
    // Every round runs one measured cycle on each board; every `SIDE_EVERY` rounds it also runs
    // one breakdown cycle and, in another round, one cold-handle claim, so that all of them
    // see the same disk conditions. Warm-up rounds run the same schedule, unrecorded.
    // Within a round the boards take turns for each kind of cycle, so that every timed claim
    // (measured, replica or cold) comes right after another board's cycle.
    for i in 0..WARMUP + period * MEASURED_PERIODS {
        let record = i >= WARMUP;
        let side = i % SIDE_EVERY;
        for b in benches.iter_mut() {
            latency_cycle(b, record, side == 0)?;
        }
        for b in benches.iter_mut() {
            match side {
                0 => breakdown_cycle(b, record)?,
                1 => cold_cycle(b, record)?,
                _ => {}
            }
        }
    }
    for b in &benches {
        eprintln!(
            "board {}: claim p50 {:.0} us, floor p50 {:.0} us",
            b.label,
            pct(&b.claim, 0.5),
            pct(&b.floor, 0.5)
        );
    }
    let process = match benches.iter_mut().find(|b| b.history == THROUGHPUT_HISTORY) {
        Some(b) => Some(measure_processes(&vine, b, period * PROCESS_PERIODS)?),
        None => None,
    };
    let at = || format!("[{:.0} s]", total.elapsed().as_secs_f64());
    eprintln!("{} vine process cycles done", at());
    // The handles are closed; the boards stay on disk until the end (deleting them here, with
    // the 100k board's 100 MB archive, would put the disk's work for it under what follows).
    for b in benches.iter_mut() {
        b.board = None;
    }
    let runs = benches;

    // Two boards built alike: one used through its files (local), one served by `vine serve`
    // (remote). They serve the remote latency comparison first, then the throughput runs.
    let tdir = root.path().join("board-throughput");
    let sdir = root.path().join("board-served");
    for dir in [&tdir, &sdir] {
        build_board(dir, THROUGHPUT_HISTORY, &settings)?;
        durable::replace(
            &dir.join(paths::TASKS_DIR),
            "bench-shared-instructions.md",
            instructions_text(0).as_bytes(),
            true,
        )?;
        durable::sync_dir(&dir.join(paths::TASKS_DIR))?;
    }
    let server = Server::start(&vine, &sdir)?;
    eprintln!(
        "{} vine serve: {} (root {})",
        at(),
        server.url,
        sdir.display()
    );
    let remote = measure_remote_latency(&tdir, &server.url, period * MEASURED_PERIODS)?;
    eprintln!(
        "{} remote cycle p50 {:.0} us, local cycle p50 {:.0} us, GET /test p50 {:.0} us",
        at(),
        pct(&remote.remote_cycle, 0.5),
        pct(&remote.local_cycle, 0.5),
        pct(&remote.round_trip, 0.5)
    );
    // Rounds of 1, 4, 16 workers in turn, each count local then remote, so a slow period of
    // the shared machine does not fall on one worker count or one kind of board only.
    let mut throughput = Vec::new();
    for round in 1..=THROUGHPUT_ROUNDS {
        for &n in &WORKER_COUNTS {
            for url in [None, Some(server.url.as_str())] {
                let t = measure_throughput(if url.is_some() { &sdir } else { &tdir }, url, n)?;
                eprintln!(
                    "{} round {round}, {n} {} workers: {:.0} cycles/s",
                    at(),
                    if t.remote { "remote" } else { "local" },
                    t.cycles as f64 / t.window
                );
                throughput.push(t);
            }
        }
    }
    let server_url = server.url.clone();
    drop(server);

    let machine = [
        machine,
        vec![
            vine_line,
            format!("load average at start: {load_start}; at end: {}", loadavg()),
        ],
    ]
    .concat();
    report(
        &machine,
        &runs,
        process.as_ref(),
        &throughput,
        (&remote, &server_url),
        period,
        total.elapsed(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Task shapes

/// A realistic task as a coordinator adds it: description, instruction text (written to
/// `tasks/task-<id>-instructions.md`), two context files and some metadata.
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
        instructions: Some(instructions_text(n)),
        context_files: vec!["docs/api-spec.md".into(), format!("src/module_{n}/mod.rs")],
        metadata,
        ..NewTask::default()
    }
}

/// The same task, pointing at one shared instruction file instead of writing its own (the
/// throughput feeder uses it so that adding tasks does not fsync one file per task).
fn shared_task(n: u64) -> PlanTask {
    let mut t = new_task(n);
    t.instructions = None;
    t.instruction_file = Some(SHARED_INSTRUCTIONS.into());
    PlanTask {
        task: t,
        ..PlanTask::default()
    }
}

/// About 700 bytes of instructions.
fn instructions_text(n: u64) -> String {
    format!(
        "# Module {n}\n\n\
         Implement the endpoint described in docs/api-spec.md, section {n}.\n\n\
         1. Read docs/api-spec.md and the existing handlers in src/.\n\
         2. Add the handler in src/module_{n}/mod.rs; validate every input field.\n\
         3. Write unit tests for the happy path and for each validation error.\n\
         4. Document the endpoint in docs/endpoints.md (request, response, errors).\n\
         5. Run `cargo test` and `cargo clippy -- -D warnings`; both must pass.\n\n\
         When done, complete the task with a one-line summary of what changed and the number\n\
         of tests added. If the spec is unclear, ask the coordinator with `vine ask` instead of\n\
         guessing, and keep working on the parts that are clear while you wait.\n"
    )
}

fn result_of(id: u64) -> Value {
    Value::String(format!(
        "Done: task {id} implemented, 12 tests added, docs updated"
    ))
}

fn pretty<T: Serialize>(v: &T) -> R<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(v)?;
    out.push(b'\n');
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Building a board with history

/// What a built board holds.
#[derive(Debug, Default, Clone, Copy)]
struct Built {
    queue_finished: usize,
    pending: usize,
    archived: usize,
}

/// Builds a board that has seen `history` tasks added, claimed and completed one at a time,
/// with `POOL` pending tasks, exactly as the library would have left it, but without doing
/// the file I/O of each op:
///
/// * the board is created with `Board::init_with` (default settings, `archive_after` 200);
/// * a `rules::State` is driven through the library's own pure `rules::apply` for every op of
///   the history: an `AddPlan` of `POOL` tasks, then `history` times {claim by worker-(i%4+1),
///   complete with a result, add one new task}, on a simulated clock advancing 1 s per op;
/// * after each op, exactly as `LocalStore::commit` does, when more than `archive_after`
///   finished tasks are archivable they are appended to `task-archive.jsonl` with
///   `archive::append` (stamped with the simulated time) and removed from the queue;
/// * at the end the queue and worker status are written in the store's formats through
///   `durable::replace`: the queue with `queue_file::encode` (one compact task per line), the
///   worker status as pretty JSON plus a newline, holding every fact (as right after a write of
///   it); the instruction files of the pending tasks are written. Instruction files of
///   finished tasks are not written (nothing reads them).
fn build_board(dir: &Path, history: usize, settings: &Settings) -> R<Built> {
    Board::init_with(dir, settings.clone())?;
    let archive_path = dir.join(paths::ARCHIVE);
    let mut clock = agentvine::time::now() - TimeDelta::seconds(3 * history as i64 + 10);
    let mut st = State {
        settings: settings.clone(),
        min_next_id: 1,
        ..State::default()
    };
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut n = 0u64;
    let plan = (0..POOL)
        .map(|_| {
            n += 1;
            PlanTask {
                task: new_task(n),
                ..PlanTask::default()
            }
        })
        .collect();
    sim(
        &mut st,
        Op::AddPlan(op::AddPlan { tasks: plan }),
        clock,
        &archive_path,
        &mut files,
    )?;
    for i in 0..history {
        let worker = format!("worker-{}", i % HISTORY_WORKERS + 1);
        clock += TimeDelta::seconds(1);
        let claim = match sim(
            &mut st,
            Op::Claim(op::Claim {
                worker: worker.clone(),
            }),
            clock,
            &archive_path,
            &mut files,
        )? {
            Reply::Claimed { claim: Some(c), .. } => c,
            other => return Err(format!("history claim {i} got {other:?}").into()),
        };
        if let Some(f) = &claim.task.instruction_file {
            files.remove(f);
        }
        clock += TimeDelta::seconds(1);
        let id = claim.task.id;
        sim(
            &mut st,
            Op::Complete(op::Complete {
                task: id,
                worker,
                attempt: None,
                result: Some(result_of(id)),
            }),
            clock,
            &archive_path,
            &mut files,
        )?;
        clock += TimeDelta::seconds(1);
        n += 1;
        sim(
            &mut st,
            Op::Add(op::Add { task: new_task(n) }),
            clock,
            &archive_path,
            &mut files,
        )?;
    }
    let queue = queue_file::encode(&st.tasks, &Default::default(), &QueueCache::default())?.bytes;
    durable::replace(dir, paths::QUEUE, &queue, true)?;
    durable::replace(dir, paths::WORKERS, &pretty(&st.workers)?, false)?;
    let tasks_dir = dir.join(paths::TASKS_DIR);
    for (rel, text) in &files {
        let name = rel
            .strip_prefix("tasks/")
            .ok_or_else(|| format!("unexpected instruction path {rel}"))?;
        durable::replace(&tasks_dir, name, text.as_bytes(), true)?;
    }
    durable::sync_dir(&tasks_dir)?;
    durable::sync_dir(dir)?;

    // Check the board reads back as intended.
    let status = Board::open(dir)?.status()?;
    let queue = LocalStore::open(dir)?.queue()?;
    let totals = archive::totals(&archive_path, &mut damage::Damages::refuse())?;
    let built = Built {
        queue_finished: queue
            .iter()
            .filter(|t| t.status == TaskStatus::Completed)
            .count(),
        pending: status.pending,
        archived: totals.completed,
    };
    if status.completed != history || status.pending != POOL || status.in_progress != 0 {
        return Err(format!("built board is off: {status:?}").into());
    }
    Ok(built)
}

/// Applies one op to the in-memory state as `LocalStore` would, archiving like
/// `LocalStore::commit`, and keeps the instruction files the op would write.
fn sim(
    st: &mut State,
    op: Op,
    now: agentvine::time::Timestamp,
    archive_path: &Path,
    files: &mut BTreeMap<String, String>,
) -> R<Reply> {
    let reply = rules::apply(st, op, now)?;
    files.extend(st.files.drain(..));
    if st.dirty.tasks {
        let (take, _kept) = rules::archivable(&st.tasks);
        if take.len() > st.settings.archive_after {
            let moving: Vec<Task> = take.iter().map(|&i| st.tasks[i].clone()).collect();
            archive::append(archive_path, &moving, now)?;
            let set: HashSet<usize> = take.into_iter().collect();
            let mut i = 0;
            st.tasks.retain(|_| {
                let keep = !set.contains(&i);
                i += 1;
                keep
            });
        }
    }
    st.dirty = Dirty::default();
    st.outbox.clear();
    Ok(reply)
}

// ---------------------------------------------------------------------------------------------
// Latency: in-process claims, the floor, and the breakdown

/// Phases of a claim, in the order `LocalStore::write_batch` (lock, `load` with `take_queue`,
/// `rules::apply_keyed`, `commit` with `write_queue`, `keep_queue`, unlock, instruction file)
/// runs them for one claim.
const PHASES: [&str; 22] = [
    "lock (open board.lock + flock)",
    "read board.json (parse only if changed)",
    "read task-queue.json",
    "take_queue: compare bytes, take tasks",
    "read worker-status.json (parse if changed)",
    "merge_queue_facts",
    "rules::apply_keyed(Claim) (requeue+pick)",
    "worker-status: age check (stat)",
    "worker-status: soft write when due",
    "write_queue: encode (touched only)",
    "write_queue: cache.clear()",
    "task-queue: create temp (unlink, O_EXCL)",
    "task-queue: write",
    "task-queue: fdatasync",
    "task-queue: close + rename",
    "write_queue: set_written",
    "fsync board dir",
    "log append (empty) + archivable",
    "keep_queue: tasks back to the cache",
    "unlock",
    "read instruction file (after unlock)",
    "drop the op's state (end of write)",
];

/// The replica's phases grouped: A, the queue replace (the floor's own steps).
const GROUP_REPLACE: [usize; 5] = [11, 12, 13, 14, 16];
/// B, CPU work on the queue and the state.
const GROUP_CPU: [usize; 9] = [3, 5, 6, 9, 10, 15, 17, 18, 21];
/// C, the worker-status file.
const GROUP_WORKERS: [usize; 2] = [7, 8];
/// D, the lock, the small reads and the instruction file.
const GROUP_IO: [usize; 6] = [0, 1, 2, 4, 19, 20];

/// Phases of the floor (`durable::replace` + `durable::sync_dir`, split).
const FLOOR_PHASES: [&str; 5] = [
    "floor: create temp (unlink, O_EXCL)",
    "floor: write",
    "floor: fdatasync",
    "floor: close + rename",
    "floor: fsync dir",
];

/// The floor's file: in the board directory, next to `task-queue.json` (the store never reads
/// it), so that the floor and the claim replace a file in the same directory.
const FLOOR_FILE: &str = "floor.json";

/// Alternatives measured outside the replica's total.
const ALTERNATIVES: [&str; 4] = [
    "catch-up: full parse + keep (before)",
    "decode with an empty cache (full parse)",
    "encode with an empty cache (serialize all)",
    "parse board.json + worker-status.json",
];

/// A small board file as the replica last parsed it, with the bytes it was parsed from (the
/// store's `Parsed<T>` behind its `Slot<T>`).
type Parsed<T> = Mutex<Option<(Vec<u8>, T)>>;

/// What the replica keeps across its claims besides the queue cache, as `LocalStore` does:
/// `board.json` and `worker-status.json` as last parsed, and the canonical board root.
#[derive(Default)]
struct ReplicaFiles {
    settings: Parsed<BoardFile>,
    workers: Parsed<BTreeMap<String, Worker>>,
    root: std::sync::OnceLock<PathBuf>,
}

/// The store's `read_cached`: reads the file, and reuses the last parse when the bytes are the
/// same (a clone of the value); otherwise parses and keeps the bytes and the value.
fn read_cached<T: serde::de::DeserializeOwned + Clone>(path: &Path, slot: &Parsed<T>) -> R<T> {
    let bytes = fs::read(path)?;
    let mut cached = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((b, v)) = cached.as_ref()
        && *b == bytes
    {
        return Ok(v.clone());
    }
    let value: T = serde_json::from_slice(&bytes)?;
    *cached = Some((bytes, value.clone()));
    Ok(value)
}

/// `durable::replace`'s temp file: a leftover one is removed, then it is created exclusively.
fn create_temp(tmp: &Path) -> R<File> {
    let _ = fs::remove_file(tmp);
    Ok(OpenOptions::new().write(true).create_new(true).open(tmp)?)
}

#[derive(Default)]
struct LatencyRun {
    history: usize,
    /// The history, or history/a<archive_after> for the variant board.
    label: String,
    /// Not default settings: left out of the targets.
    variant: bool,
    dir: PathBuf,
    /// The long-lived handle every measured claim, complete and add goes through.
    board: Option<Board>,
    /// Number for the next task added to keep the pool.
    next_task: u64,
    built: Built,
    build_secs: f64,
    queue_bytes: Vec<f64>,
    queue_tasks: Vec<f64>,
    claim: Vec<f64>,
    floor: Vec<f64>,
    complete: Vec<f64>,
    /// `Board::open` + `Board::claim` on a fresh handle (cold queue cache), per claim.
    cold: Vec<f64>,
    /// The replica's queue cache, kept across its claims behind a mutex, as `LocalStore` keeps
    /// its own (`Arc<Mutex<QueueCache>>`).
    replica_cache: Mutex<QueueCache>,
    /// The replica's parsed `board.json` and `worker-status.json` and canonical root.
    replica_files: ReplicaFiles,
    /// Time of the replica cache's catch-up (full parse + keep), waiting for the next
    /// breakdown cycle.
    catch_up: Option<f64>,
    /// During warm-up only: the queue bytes the catch-up saw, checked against the file right
    /// before the replica claim (the take must find the file unchanged).
    catch_up_bytes: Option<Vec<u8>>,
    /// Per breakdown claim: the phases in microseconds.
    phases: Vec<[f64; PHASES.len()]>,
    /// Per breakdown claim: the replica's total.
    replica: Vec<f64>,
    /// Breakdown claims that wrote worker-status.json (the deferred soft write was due).
    soft_writes: usize,
    /// Per breakdown claim: the alternatives (see `ALTERNATIVES`).
    alternatives: Vec<[f64; ALTERNATIVES.len()]>,
    /// Per breakdown claim: the floor's phases.
    floor_phases: Vec<[f64; FLOOR_PHASES.len()]>,
}

impl LatencyRun {
    fn board(&self) -> R<Board> {
        Ok(self.board.clone().ok_or("board closed")?)
    }

    /// Completes the claimed task and adds a new one through the long-lived handle, so the
    /// pool stays at `POOL` pending tasks. Returns the complete's time.
    fn complete_and_refill(&mut self, id: u64) -> R<f64> {
        let board = self.board()?;
        let t = Instant::now();
        board.complete(id, ME, Some(result_of(id)))?;
        let complete = us(t.elapsed());
        self.next_task += 1;
        board.add(new_task(self.next_task))?;
        Ok(complete)
    }
}

/// The floor: one durable replace (write temp + fdatasync + rename + directory fsync) of
/// `bytes` as `floor.json` in the board directory, with the store's own primitives.
fn floor(dir: &Path, bytes: &[u8]) -> R<f64> {
    let t = Instant::now();
    durable::replace(dir, FLOOR_FILE, bytes, true)?;
    durable::sync_dir(dir)?;
    Ok(us(t.elapsed()))
}

/// One measured cycle on a board, all through the long-lived `Board` handle: claim (timed),
/// the floor on a copy of the queue just written (timed), complete (timed), add one new task
/// (not timed), so the pool stays at `POOL`. With `catch_up`, the replica's cache then parses
/// the queue file the handle has just written and keeps the tasks, as the handle's own cache
/// holds them after that write (see [`breakdown_cycle`]).
fn latency_cycle(b: &mut LatencyRun, record: bool, catch_up: bool) -> R<()> {
    let board = b.board()?;
    let t = Instant::now();
    let c = board.claim(ME)?.ok_or("the pool ran dry")?;
    let claim = us(t.elapsed());
    check_claim(&c)?;
    let bytes = fs::read(b.dir.join(paths::QUEUE))?;
    let floor = floor(&b.dir, &bytes)?;
    let complete = b.complete_and_refill(c.task.id)?;
    if catch_up {
        let raw = fs::read(b.dir.join(paths::QUEUE))?;
        let t = Instant::now();
        {
            // The file is not what the replica's cache last saw (the handle wrote it): a full
            // parse, then the tasks are kept, as `keep_queue` does after an op.
            let mut cache = lock_cache(&b.replica_cache);
            let tasks = queue_file::decode(&raw, &mut cache)?;
            cache.keep(tasks);
        }
        b.catch_up = Some(us(t.elapsed()));
        b.catch_up_bytes = (!record).then_some(raw);
    }
    if record {
        b.claim.push(claim);
        b.floor.push(floor);
        b.complete.push(complete);
        b.queue_bytes.push(bytes.len() as f64);
        b.queue_tasks.push(
            bytes
                .split(|&c| c == b'\n')
                .filter(|l| l.starts_with(b"{"))
                .count() as f64,
        );
    }
    Ok(())
}

/// One claim through a freshly opened `Board` (empty queue cache: what every `vine` process
/// pays), timed from `Board::open`; then complete and add through the long-lived handle.
fn cold_cycle(b: &mut LatencyRun, record: bool) -> R<()> {
    let t = Instant::now();
    let fresh = Board::open(&b.dir)?;
    let c = fresh.claim(ME)?.ok_or("the pool ran dry")?;
    let cold = us(t.elapsed());
    drop(fresh);
    check_claim(&c)?;
    b.complete_and_refill(c.task.id)?;
    if record {
        b.cold.push(cold);
    }
    Ok(())
}

/// One breakdown cycle: the claim replica with its phases, the floor split into its steps,
/// then complete and add through the long-lived handle.
///
/// The replica keeps its own `QueueCache` across cycles. Since its last claim the long-lived
/// handle has written the queue several times (claims, completes, adds), so right after the
/// handle's last write (the add at the end of this board's measured cycle of the same round)
/// the replica's cache parses that file and keeps the tasks, outside the replica's total
/// (reported as "catch-up"). Its cache then holds what the long-lived handle's cache holds
/// after writing that file (the bytes, each task's line, the parsed tasks), so the replica's
/// `take_queue` hands the tasks over without parsing, as the measured claim's does; and the
/// replica's claim comes after the other boards' cycles exactly like a measured claim does.
fn breakdown_cycle(b: &mut LatencyRun, record: bool) -> R<()> {
    let catch_up = b
        .catch_up
        .take()
        .ok_or("no catch-up decode before the replica")?;
    if let Some(seen) = b.catch_up_bytes.take()
        && fs::read(b.dir.join(paths::QUEUE))? != seen
    {
        return Err("the queue changed between the catch-up and the replica claim".into());
    }
    let (c, phases, soft, alts) = claim_replica(&b.dir, ME, &b.replica_cache, &b.replica_files)?;
    let bytes = fs::read(b.dir.join(paths::QUEUE))?;
    let floor_phases = floor_replica(&b.dir, &bytes)?;
    b.complete_and_refill(c.task.id)?;
    if record {
        b.replica.push(phases.iter().sum());
        b.phases.push(phases);
        b.soft_writes += usize::from(soft);
        let mut a = [catch_up; ALTERNATIVES.len()];
        a[1..].copy_from_slice(&alts);
        b.alternatives.push(a);
        b.floor_phases.push(floor_phases);
    }
    Ok(())
}

fn check_claim(c: &ClaimedTask) -> R<()> {
    if c.instructions.is_none() {
        return Err(format!(
            "claimed task {} came without instructions: {:?}",
            c.task.id, c.instructions_error
        )
        .into());
    }
    Ok(())
}

/// The store's `cache()`: the mutex guard of the queue cache (a poisoned lock is taken anyway).
fn lock_cache(cache: &Mutex<QueueCache>) -> MutexGuard<'_, QueueCache> {
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// A claim done step by step the way `Board::claim` runs it in `LocalStore` as of commit
/// 8d1a0a5 (`write` -> `execute_batch` -> `write_batch` with one op: lock, `load` with
/// `take_queue`, `rules::apply_keyed` without a key, `commit` with `write_queue`, `keep_queue`,
/// unlock, instruction file), with each step timed: compare its total with `Board::claim`.
///
/// `cache` plays the store's `QueueCache`: `take_queue` decodes with it (handing its tasks over
/// when the file is byte for byte what it last saw), `write_queue` encodes only the touched
/// tasks against it, clears it, replaces the file and records what it wrote (`set_written`),
/// and `keep_queue` gives the tasks back. `files` plays the store's parsed `board.json` and
/// `worker-status.json` (reused while their bytes are unchanged) and its canonical root
/// (resolved once). Returns the claimed task, the phase times, whether the deferred
/// worker-status write was due and done, and alternatives measured after the claim, outside
/// the lock, not part of the sum: decode and encode of the same queue with an empty cache, and
/// a parse of the two small files.
fn claim_replica(
    dir: &Path,
    worker: &str,
    cache: &Mutex<QueueCache>,
    files: &ReplicaFiles,
) -> R<(ClaimedTask, [f64; PHASES.len()], bool, [f64; 3])> {
    let mut ph = [0.0; PHASES.len()];
    let mut t = Instant::now();
    // LocalStore::lock
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(paths::LOCK))?;
    lock.lock()?;
    ph[0] = lap(&mut t);
    // LocalStore::load: settings, queue (take_queue), workers, then merge_queue_facts.
    // (No progress, next id, log or archive lookups for a claim.) The settings and the
    // workers are `read_cached`: read, and parsed only when the bytes changed.
    let settings = read_cached(&dir.join(paths::BOARD), &files.settings)?.settings;
    ph[1] = lap(&mut t);
    // take_queue: queue_bytes, then decode under the cache's mutex; the bytes read are dropped
    // when take_queue returns.
    let raw = fs::read(dir.join(paths::QUEUE))?;
    ph[2] = lap(&mut t);
    let tasks = {
        let mut c = lock_cache(cache);
        queue_file::decode(&raw, &mut c)?
    };
    drop(raw);
    ph[3] = lap(&mut t);
    let workers = read_cached(&dir.join(paths::WORKERS), &files.workers)?;
    ph[4] = lap(&mut t);
    let mut st = State {
        tasks,
        workers,
        settings,
        ..State::default()
    };
    rules::merge_queue_facts(&mut st);
    ph[5] = lap(&mut t);
    // write_batch with one unkeyed op: no snapshot, `rules::apply_keyed` without a key.
    let reply = rules::apply_keyed(
        &mut st,
        Op::Claim(op::Claim {
            worker: worker.into(),
        }),
        None,
        agentvine::time::now(),
    )?;
    let Reply::Claimed {
        claim: Some(mut claim),
        ..
    } = reply
    else {
        return Err(format!("replica claim got {reply:?}").into());
    };
    ph[6] = lap(&mut t);
    // LocalStore::commit: no instruction files, no progress for a claim.
    let soft_due = !st.dirty.workers && st.dirty.workers_soft && {
        // LocalStore::workers_file_older_than(SOFT_WRITE_EVERY = 1.0)
        fs::metadata(dir.join(paths::WORKERS))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age.as_secs_f64() >= 1.0)
    };
    ph[7] = lap(&mut t);
    let wrote_workers = st.dirty.workers || soft_due;
    if wrote_workers {
        durable::replace(dir, paths::WORKERS, &pretty(&st.workers)?, false)?;
    }
    ph[8] = lap(&mut t);
    if !st.dirty.tasks || !st.touched.contains(&claim.task.id) {
        return Err("a claim that did not touch its task".into());
    }
    // LocalStore::write_queue, under the cache's mutex: encode against the cache, clear it,
    // durable::replace(dir, QUEUE, .., true) split into its steps, set_written.
    let mut c = lock_cache(cache);
    let encoded = queue_file::encode(&st.tasks, &st.touched, &c)?;
    ph[9] = lap(&mut t);
    c.clear();
    ph[10] = lap(&mut t);
    let tmp = dir.join(format!(".{}.tmp", paths::QUEUE));
    let target = dir.join(paths::QUEUE);
    let mut f = create_temp(&tmp)?;
    ph[11] = lap(&mut t);
    f.write_all(&encoded.bytes)?;
    ph[12] = lap(&mut t);
    f.sync_data()?;
    ph[13] = lap(&mut t);
    drop(f);
    fs::rename(&tmp, &target)?;
    drop((tmp, target));
    ph[14] = lap(&mut t);
    c.set_written(encoded);
    st.touched.clear();
    drop(c);
    ph[15] = lap(&mut t);
    durable::sync_dir(dir)?;
    ph[16] = lap(&mut t);
    log::append(&dir.join(paths::LOG), &mut st.outbox)?;
    let (take, _) = rules::archivable(&st.tasks);
    if take.len() > st.settings.archive_after {
        return Err("a claim would archive; the replica does not do that".into());
    }
    ph[17] = lap(&mut t);
    // write_batch: keep_queue(st, true) after a successful commit, still under the lock.
    {
        let mut c = lock_cache(cache);
        if st.touched.is_empty() {
            c.keep(std::mem::take(&mut st.tasks));
        } else {
            c.forget_tasks();
        }
    }
    ph[18] = lap(&mut t);
    drop(lock);
    ph[19] = lap(&mut t);
    if let Some(file) = claim.task.instruction_file.clone() {
        // LocalStore::read_board_file: the canonical root is resolved once per handle.
        let root = match files.root.get() {
            Some(r) => r,
            None => {
                let r = dir.canonicalize()?;
                files.root.get_or_init(|| r)
            }
        };
        let p = paths::resolve_in(root, &file)?;
        claim.instructions = Some(fs::read_to_string(p)?);
    }
    ph[20] = lap(&mut t);
    // LocalStore::write_batch returns here: what is left of the loaded state (workers,
    // settings; the tasks are in the cache) is dropped.
    drop(st);
    ph[21] = lap(&mut t);

    // Alternatives, outside the total: what the queue costs without the cache.
    let qbytes = fs::read(dir.join(paths::QUEUE))?;
    let mut alts = [0.0; 3];
    let t = Instant::now();
    let tasks = queue_file::decode(&qbytes, &mut QueueCache::default())?;
    alts[0] = us(t.elapsed());
    let t = Instant::now();
    let all = queue_file::encode(&tasks, &BTreeSet::new(), &QueueCache::default())?;
    alts[1] = us(t.elapsed());
    if all.bytes != qbytes {
        return Err("encoding every task differs from the file the replica wrote".into());
    }
    // What the reuse of the two small files saves: parsing them (the bytes are read already).
    let (board_bytes, worker_bytes) = (
        fs::read(dir.join(paths::BOARD))?,
        fs::read(dir.join(paths::WORKERS))?,
    );
    let t = Instant::now();
    let parsed: (BoardFile, BTreeMap<String, Worker>) = (
        serde_json::from_slice(&board_bytes)?,
        serde_json::from_slice(&worker_bytes)?,
    );
    alts[2] = us(t.elapsed());
    drop(parsed);
    Ok((claim, ph, wrote_workers, alts))
}

/// The floor split into its steps: create temp, write, fdatasync, close + rename, dir fsync
/// (`floor.json` in the board directory, like [`floor`]).
fn floor_replica(dir: &Path, bytes: &[u8]) -> R<[f64; FLOOR_PHASES.len()]> {
    let mut ph = [0.0; FLOOR_PHASES.len()];
    let mut t = Instant::now();
    let tmp = dir.join(format!(".{FLOOR_FILE}.tmp"));
    let mut f = create_temp(&tmp)?;
    ph[0] = lap(&mut t);
    f.write_all(bytes)?;
    ph[1] = lap(&mut t);
    f.sync_data()?;
    ph[2] = lap(&mut t);
    drop(f);
    fs::rename(&tmp, dir.join(FLOOR_FILE))?;
    ph[3] = lap(&mut t);
    durable::sync_dir(dir)?;
    ph[4] = lap(&mut t);
    Ok(ph)
}

// ---------------------------------------------------------------------------------------------
// One `vine` process per op

struct ProcessRun {
    version: Vec<f64>,
    status: Vec<f64>,
    claim: Vec<f64>,
    complete: Vec<f64>,
    /// In-process claims and completes on the same board, each right after a process cycle.
    lib_claim: Vec<f64>,
    lib_complete: Vec<f64>,
}

/// The `vine` binary Cargo built for this bench (`cargo bench` builds the package's binaries
/// and sets `CARGO_BIN_EXE_vine`); falls back to target/release/vine, building it if missing.
fn vine_binary() -> R<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_vine") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = manifest.join("target/release/vine");
    if !p.is_file() {
        let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "vine"])
            .current_dir(manifest)
            .status()?
            .success();
        if !ok {
            return Err("cargo build --release --bin vine failed".into());
        }
    }
    Ok(p)
}

/// Times `vine --dir D --json claim --worker W` and `vine --dir D --json complete ID --worker W
/// --result ...` as separate processes, each cycle followed by the same cycle in-process on
/// the same board.
fn measure_processes(vine: &Path, b: &mut LatencyRun, cycles: usize) -> R<ProcessRun> {
    let board = b.board.clone().ok_or("board closed")?;
    let dir = b.dir.clone();
    let dir = dir.as_path();
    let mut run = ProcessRun {
        version: Vec::new(),
        status: Vec::new(),
        claim: Vec::new(),
        complete: Vec::new(),
        lib_claim: Vec::new(),
        lib_complete: Vec::new(),
    };
    for i in 0..VERSION_RUNS + 5 {
        let t = Instant::now();
        let out = Command::new(vine).arg("--version").output()?;
        let e = us(t.elapsed());
        if !out.status.success() {
            return Err("vine --version failed".into());
        }
        let t = Instant::now();
        let out = Command::new(vine)
            .arg("--dir")
            .arg(dir)
            .arg("status")
            .output()?;
        let s = us(t.elapsed());
        if !out.status.success() {
            return Err("vine status failed".into());
        }
        if i >= 5 {
            run.version.push(e);
            run.status.push(s);
        }
    }
    let mut n = b.next_task;
    for i in 0..5 + cycles {
        let t = Instant::now();
        let out = Command::new(vine)
            .arg("--dir")
            .arg(dir)
            .args(["--json", "claim", "--worker", ME])
            .stderr(Stdio::inherit())
            .output()?;
        let claim = us(t.elapsed());
        if !out.status.success() {
            return Err(format!(
                "vine claim failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let id = v["claim"]["task"]["id"]
            .as_u64()
            .ok_or_else(|| format!("no task id in {v}"))?;
        let t = Instant::now();
        let out = Command::new(vine)
            .arg("--dir")
            .arg(dir)
            .args(["--json", "complete", &id.to_string(), "--worker", ME])
            .args([
                "--result",
                &format!("Done: task {id} implemented, 12 tests added, docs updated"),
            ])
            .stderr(Stdio::inherit())
            .output()?;
        let complete = us(t.elapsed());
        if !out.status.success() {
            return Err(format!(
                "vine complete failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        n += 1;
        board.add(new_task(n))?;
        // The same cycle in-process, right after, so both see the same disk conditions.
        let t = Instant::now();
        let c = board.claim(ME)?.ok_or("the pool ran dry")?;
        let lib_claim = us(t.elapsed());
        let t = Instant::now();
        board.complete(c.task.id, ME, Some(result_of(c.task.id)))?;
        let lib_complete = us(t.elapsed());
        n += 1;
        board.add(new_task(n))?;
        if i >= 5 {
            run.claim.push(claim);
            run.complete.push(complete);
            run.lib_claim.push(lib_claim);
            run.lib_complete.push(lib_complete);
        }
    }
    b.next_task = n;
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// The remote board: `vine serve` on loopback

/// A `vine serve` process; killed (and reaped) when dropped, also when the bench fails.
struct Server {
    child: Child,
    url: String,
    /// Its stdout, kept open so that a late line would not meet a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Server {
    /// Starts `vine serve --root ROOT --listen 127.0.0.1:0` without an API key (the variables
    /// that would give it one are removed) and waits for its `listening on URL` line.
    fn start(vine: &Path, root: &Path) -> R<Server> {
        let child = Command::new(vine)
            .arg("serve")
            .arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("VINE_API_KEY")
            .env_remove("VPS_API_KEY")
            .env_remove("VINE_API_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut server = Server {
            child,
            url: String::new(),
            _stdout: None,
        };
        let mut out = BufReader::new(server.child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        server.url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("vine serve printed {line:?}"))?
            .to_string();
        server._stdout = Some(out);
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Remote vs local cycles, one client, interleaved (all in microseconds).
#[derive(Default)]
struct RemoteLatency {
    local_claim: Vec<f64>,
    local_complete: Vec<f64>,
    local_cycle: Vec<f64>,
    remote_claim: Vec<f64>,
    remote_complete: Vec<f64>,
    remote_cycle: Vec<f64>,
    local_settings: Vec<f64>,
    remote_settings: Vec<f64>,
    /// `GET /test`: a bare HTTP round trip (no board work).
    round_trip: Vec<f64>,
    /// The JSON work of one remote claim and one remote complete at both ends, in-process
    /// (see [`json_work`]).
    json_claim: Vec<f64>,
    json_complete: Vec<f64>,
}

/// The JSON work one op costs at both ends of `POST /v1/op`, done here in-process: the client
/// turns the request (op and request key) into a `Value`, then bytes; the server parses the
/// bytes into an `OpRequest`, turns the reply into a `Value`, serializes that once to check its
/// size (`MAX_REPLY`, as of commit 0de77df), puts it into `{"status":"success","reply":..}`
/// and turns that into bytes; the client parses the bytes into a `Value`, then a `Reply`.
fn json_work(op: Op, reply: &Reply) -> R<f64> {
    let t = Instant::now();
    let req = OpRequest {
        op,
        key: Some(agentvine::remote::new_request_key()),
    };
    let body = serde_json::to_vec(&serde_json::to_value(&req)?)?;
    let on_server: OpRequest = serde_json::from_slice(&body)?;
    let v = serde_json::to_value(reply)?;
    let size = serde_json::to_vec(&v)?.len();
    let out = serde_json::to_vec(&serde_json::json!({
        "status": "success",
        "reply": v,
    }))?;
    if out.len() < size {
        return Err("the reply envelope is smaller than the reply".into());
    }
    let back = parse_reply(serde_json::from_slice(&out)?)?;
    let e = us(t.elapsed());
    drop((on_server, back));
    Ok(e)
}

/// `rounds` recorded rounds (after `WARMUP` unrecorded ones); each runs one claim+complete
/// cycle through a long-lived local handle on the board in `local_dir` and one through a
/// remote handle on the server at `url` (which one goes first alternates), each followed by an
/// untimed add through the same handle (so both pools stay at `POOL` pending) and a timed
/// `settings` read, then one timed `GET /test` on its own HTTP client.
fn measure_remote_latency(local_dir: &Path, url: &str, rounds: usize) -> R<RemoteLatency> {
    let local = Board::open(local_dir)?;
    let remote = Board::connect(url, None)?;
    let http = Http::new(url, None, HttpOptions::from_env()?)?;
    let mut m = RemoteLatency::default();
    let mut n = 20_000_000u64;
    for i in 0..WARMUP + rounds {
        let record = i >= WARMUP;
        for k in 0..2 {
            let is_remote = (k == 0) == (i % 2 == 1);
            let board = if is_remote { &remote } else { &local };
            let t = Instant::now();
            let c = board.claim(ME)?.ok_or("the pool ran dry")?;
            let claim = us(t.elapsed());
            let t2 = Instant::now();
            let done = board.complete(c.task.id, ME, Some(result_of(c.task.id)))?;
            let complete = us(t2.elapsed());
            let cycle = us(t.elapsed());
            check_claim(&c)?;
            if is_remote && record {
                let id = c.task.id;
                m.json_complete.push(json_work(
                    Op::Complete(op::Complete {
                        task: id,
                        worker: ME.into(),
                        attempt: None,
                        result: Some(result_of(id)),
                    }),
                    &Reply::Task { task: done },
                )?);
                m.json_claim.push(json_work(
                    Op::Claim(op::Claim { worker: ME.into() }),
                    &Reply::Claimed {
                        claim: Some(c),
                        reason: None,
                    },
                )?);
            }
            n += 1;
            board.add(new_task(n))?;
            let t = Instant::now();
            board.settings()?;
            let settings = us(t.elapsed());
            if record {
                let (cl, co, cy, se) = if is_remote {
                    (
                        &mut m.remote_claim,
                        &mut m.remote_complete,
                        &mut m.remote_cycle,
                        &mut m.remote_settings,
                    )
                } else {
                    (
                        &mut m.local_claim,
                        &mut m.local_complete,
                        &mut m.local_cycle,
                        &mut m.local_settings,
                    )
                };
                cl.push(claim);
                co.push(complete);
                cy.push(cycle);
                se.push(settings);
            }
        }
        let t = Instant::now();
        let r = http.get("/test", &[])?;
        let rt = us(t.elapsed());
        if r.status != 200 {
            return Err(format!("GET /test answered {}: {}", r.status, r.body).into());
        }
        if record {
            m.round_trip.push(rt);
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Throughput with worker processes

/// A board directory, or the URL of a server (`http://` or `https://`).
fn open_target(target: &str) -> R<Board> {
    Ok(
        if target.starts_with("http://") || target.starts_with("https://") {
            Board::connect(target, None)?
        } else {
            Board::open(target)?
        },
    )
}

struct ThroughputRun {
    /// Workers went through the server (`Board::connect`) instead of the files.
    remote: bool,
    workers: usize,
    window: f64,
    cycles: u64,
    empty: u64,
    per_worker: Vec<u64>,
    feeder_adds: u64,
    pending_min: usize,
    pending_max: usize,
}

/// Starts `workers` copies of this binary as worker processes on the board in `dir` (through
/// the server at `url` when given, else on the files); they all start at the same instant and
/// run claim + complete for `WINDOW_SECS`. A feeder thread in this process keeps 50 to 100
/// pending tasks on the board (adding 50 with one `add_plan` whenever fewer than 50 are
/// pending, checked every 10 ms by reading the queue file without the lock; the adds go
/// through the server too when there is one), so the queue keeps its realistic size instead
/// of starting with thousands of tasks.
fn measure_throughput(dir: &Path, url: Option<&str>, workers: usize) -> R<ThroughputRun> {
    let exe = std::env::current_exe()?;
    let start_at = epoch_ms() + 400 + 20 * workers as u64;
    let target = url.map_or_else(|| dir.display().to_string(), str::to_string);
    let mut children = Vec::new();
    for w in 1..=workers {
        let spec = format!("{target}:tp-w{w}:{WINDOW_SECS}:{start_at}");
        children.push(
            Command::new(&exe)
                .env(WORKER_ENV, spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let dir = dir.to_path_buf();
        let target = target.clone();
        let first_task = 30_000_000u64
            + 1_000_000 * workers as u64
            + if url.is_some() { 100_000_000 } else { 0 };
        std::thread::spawn(move || -> Result<(u64, usize, usize), String> {
            let board = open_target(&target).map_err(|e| e.to_string())?;
            let store = LocalStore::open(&dir).map_err(|e| e.to_string())?;
            let mut adds = 0;
            let mut n = first_task;
            let (mut lo, mut hi) = (usize::MAX, 0);
            while !stop.load(Ordering::Relaxed) {
                let pending = store
                    .queue()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .filter(|t| t.status == TaskStatus::Pending)
                    .count();
                if epoch_ms() >= start_at {
                    lo = lo.min(pending);
                    hi = hi.max(pending);
                }
                if pending < POOL {
                    let plan = (0..POOL)
                        .map(|_| {
                            n += 1;
                            shared_task(n)
                        })
                        .collect();
                    board.add_plan(plan).map_err(|e| e.to_string())?;
                    adds += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((adds, lo, hi))
        })
    };
    let mut per_worker = Vec::new();
    let mut empty = 0;
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("worker failed: {text}").into());
        }
        let get = |key: &str| -> R<u64> {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .ok_or_else(|| format!("worker printed {text:?}"))?
                .parse()
                .map_err(Into::into)
        };
        per_worker.push(get("cycles=")?);
        empty += get("empty=")?;
    }
    stop.store(true, Ordering::Relaxed);
    let (feeder_adds, pending_min, pending_max) =
        feeder.join().map_err(|_| "feeder panicked")??;
    Ok(ThroughputRun {
        remote: url.is_some(),
        workers,
        window: WINDOW_SECS as f64,
        cycles: per_worker.iter().sum(),
        empty,
        per_worker,
        feeder_adds,
        pending_min,
        pending_max,
    })
}

/// A throughput worker: `AGENTVINE_BENCH_WORKER=<board>:<worker-id>:<seconds>:<start-epoch-ms>`,
/// where `<board>` is a directory (`Board::open`) or a server URL `http://...`
/// (`Board::connect`, no key: the bench's server listens on loopback without one).
/// Reads the settings once (a remote board probes `/test` and opens its connection then),
/// waits for the common start instant, then claims and completes until the window is over
/// and prints `cycles=N empty=M` (cycles finished inside the window; claims that found
/// nothing, which would mean the feeder fell behind).
fn worker_main(spec: &str) -> R<()> {
    let mut parts = spec.rsplitn(4, ':');
    let start_at: u64 = parts.next().ok_or("bad spec")?.parse()?;
    let secs: u64 = parts.next().ok_or("bad spec")?.parse()?;
    let me = parts.next().ok_or("bad spec")?.to_string();
    let board = open_target(parts.next().ok_or("bad spec")?)?;
    board.settings()?;
    let now = epoch_ms();
    if start_at > now {
        std::thread::sleep(Duration::from_millis(start_at - now));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cycles, mut empty) = (0u64, 0u64);
    while Instant::now() < deadline {
        match board.claim(&me)? {
            Some(c) => {
                board.complete(c.task.id, &me, Some(result_of(c.task.id)))?;
                if Instant::now() <= deadline {
                    cycles += 1;
                }
            }
            None => {
                empty += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    println!("cycles={cycles} empty={empty}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Numbers

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn lap(t: &mut Instant) -> f64 {
    let now = Instant::now();
    let d = now - *t;
    *t = now;
    us(d)
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `q` quantile by nearest rank.
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

fn machine(dir: &Path) -> Vec<String> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let df = Command::new("df")
        .arg("-T")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "?".into());
    vec![
        format!("cpus: {cpus} ({model})"),
        format!("kernel: {kernel}"),
        format!("boards on: {df} ({})", dir.display()),
    ]
}

fn report(
    machine: &[String],
    runs: &[LatencyRun],
    process: Option<&ProcessRun>,
    throughput: &[ThroughputRun],
    (remote, url): (&RemoteLatency, &str),
    period: usize,
    elapsed: Duration,
) {
    println!();
    println!("agentvine board benchmark");
    for m in machine {
        println!("  {m}");
    }
    println!(
        "  pool: {POOL} pending tasks; {} recorded rounds per board ({MEASURED_PERIODS} x {period}), {WARMUP} warm-up rounds",
        period * MEASURED_PERIODS
    );
    println!(
        "  each round: one long-lived-handle claim + floor + complete + add per board; every {SIDE_EVERY} rounds also one breakdown claim and one cold-handle claim"
    );

    println!();
    println!(
        "1+2. Board::claim through one long-lived handle vs the floor (one durable replace of the same bytes as {FLOOR_FILE} in the board dir), us"
    );
    println!(
        "{:>9} {:>22} {:>14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "history",
        "queue at claim (tasks)",
        "KiB min-max",
        "floor50",
        "floor99",
        "claim50",
        "claim90",
        "claim99",
        "c/f p50",
        "c/f p99"
    );
    for r in runs {
        let (tlo, thi) = min_max(&r.queue_tasks);
        let (blo, bhi) = min_max(&r.queue_bytes);
        println!(
            "{:>9} {:>22} {:>14} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.2}x {:>8.2}x",
            r.label,
            format!("{tlo:.0}-{thi:.0} (avg {:.0})", mean(&r.queue_tasks)),
            format!("{:.0}-{:.0}", blo / 1024.0, bhi / 1024.0),
            pct(&r.floor, 0.5),
            pct(&r.floor, 0.99),
            pct(&r.claim, 0.5),
            pct(&r.claim, 0.9),
            pct(&r.claim, 0.99),
            pct(&r.claim, 0.5) / pct(&r.floor, 0.5),
            pct(&r.claim, 0.99) / pct(&r.floor, 0.99),
        );
    }
    println!();
    println!("   board contents before measuring (built from history, see BENCHMARKS.md):");
    for r in runs {
        println!(
            "{:>9}: queue {} finished + {} pending, archive {} tasks; built in {:.1}s",
            r.label, r.built.queue_finished, r.built.pending, r.built.archived, r.build_secs
        );
    }
    println!();
    println!(
        "   informational: Board::open + Board::claim on a fresh handle per claim (cold queue cache, as in every vine process), us"
    );
    println!(
        "{:>9} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "history", "claims", "p50", "p90", "p99", "p50/floor50"
    );
    for r in runs {
        println!(
            "{:>9} {:>8} {:>8.0} {:>8.0} {:>8.0} {:>11.2}x",
            r.label,
            r.cold.len(),
            pct(&r.cold, 0.5),
            pct(&r.cold, 0.9),
            pct(&r.cold, 0.99),
            pct(&r.cold, 0.5) / pct(&r.floor, 0.5)
        );
    }
    println!();
    println!("   Board::complete on the same boards (not timed inside the claim), us");
    println!("{:>9} {:>8} {:>8} {:>8}", "history", "p50", "p90", "p99");
    for r in runs {
        println!(
            "{:>9} {:>8.0} {:>8.0} {:>8.0}",
            r.label,
            pct(&r.complete, 0.5),
            pct(&r.complete, 0.9),
            pct(&r.complete, 0.99)
        );
    }

    println!();
    let variants: Vec<&LatencyRun> = runs.iter().filter(|r| r.variant).collect();
    for r in &variants {
        println!(
            "   {}: history {} with archive_after {} instead of {} (informational, not a target)",
            r.label,
            r.history,
            r.label.rsplit("/a").next().unwrap_or("?"),
            Settings::default().archive_after
        );
    }
    let defaults: Vec<&LatencyRun> = runs.iter().filter(|r| !r.variant).collect();
    println!("   targets (default settings):");
    for r in &defaults {
        let ratio = pct(&r.claim, 0.5) / pct(&r.floor, 0.5);
        println!(
            "     history {:>6}: claim p50 / floor p50 = {ratio:.3}x (target <= 1.2x): {}",
            r.history,
            met(ratio <= 1.2)
        );
    }
    if let (Some(first), Some(last)) = (defaults.first(), defaults.last()) {
        for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
            let ratio = pct(&last.claim, q) / pct(&first.claim, q);
            let line = format!(
                "     claim {name} at history {} / at history {} = {ratio:.3}x",
                last.history, first.history
            );
            if q == 0.5 {
                println!("{line} (target <= 1.5x): {}", met(ratio <= 1.5));
            } else {
                println!("{line}");
            }
        }
    }

    println!();
    println!(
        "3. Throughput: claim+complete cycles/s, worker processes, {WINDOW_SECS} s windows, {THROUGHPUT_ROUNDS} rounds (boards with history {THROUGHPUT_HISTORY})"
    );
    println!(
        "{:>7} {:>8} {:>20} {:>9} {:>12} {:>20} {:>13} {:>18}",
        "board",
        "workers",
        "cycles/s per round",
        "median",
        "ms/cycle",
        "per worker min-max",
        "empty claims",
        "pending min-max"
    );
    let rates_of = |remote: bool, n: usize| -> Vec<f64> {
        throughput
            .iter()
            .filter(|t| t.remote == remote && t.workers == n)
            .map(|t| t.cycles as f64 / t.window)
            .collect()
    };
    for (remote, n) in [false, true]
        .into_iter()
        .flat_map(|r| WORKER_COUNTS.iter().map(move |&n| (r, n)))
    {
        let ts: Vec<&ThroughputRun> = throughput
            .iter()
            .filter(|t| t.remote == remote && t.workers == n)
            .collect();
        let rates = rates_of(remote, n);
        let median = pct(&rates, 0.5);
        let lo = ts
            .iter()
            .flat_map(|t| t.per_worker.iter())
            .min()
            .copied()
            .unwrap_or(0);
        let hi = ts
            .iter()
            .flat_map(|t| t.per_worker.iter())
            .max()
            .copied()
            .unwrap_or(0);
        println!(
            "{:>7} {:>8} {:>20} {:>9.0} {:>12.2} {:>20} {:>13} {:>18}",
            if remote { "remote" } else { "local" },
            n,
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            median,
            1000.0 / median,
            format!("{lo}-{hi}"),
            ts.iter().map(|t| t.empty).sum::<u64>(),
            format!(
                "{}-{}",
                ts.iter().map(|t| t.pending_min).min().unwrap_or(0),
                ts.iter().map(|t| t.pending_max).max().unwrap_or(0)
            ),
        );
    }
    println!(
        "   per-worker counts are cycles in one {WINDOW_SECS} s window; the feeder added 50 tasks {} times in all",
        throughput.iter().map(|t| t.feeder_adds).sum::<u64>()
    );
    println!(
        "   local: each worker process opens the board's files (Board::open); remote: each is a Board::connect client of one vine serve on {url} (group commit)"
    );
    let ratios = |a: &[f64], b: &[f64]| -> String {
        a.iter()
            .zip(b)
            .map(|(x, y)| format!("{:.2}", x / y))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for &n in &WORKER_COUNTS {
        println!(
            "   remote / local, {n:>2} workers, per round: {}; medians: {:.2}x",
            ratios(&rates_of(true, n), &rates_of(false, n)),
            pct(&rates_of(true, n), 0.5) / pct(&rates_of(false, n), 0.5)
        );
    }

    if let Some(p) = process {
        println!();
        println!(
            "4. One vine process per op vs in-process, same board (history {THROUGHPUT_HISTORY}), {} cycles, us",
            p.claim.len()
        );
        println!(
            "{:>28} {:>8} {:>8} {:>8} {:>8} {:>14}",
            "op", "p50", "p99", "lib p50", "lib p99", "overhead p50"
        );
        for (name, procs, lib) in [
            ("vine claim", &p.claim, &p.lib_claim),
            ("vine complete", &p.complete, &p.lib_complete),
        ] {
            println!(
                "{:>28} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>14.0}",
                name,
                pct(procs, 0.5),
                pct(procs, 0.99),
                pct(lib, 0.5),
                pct(lib, 0.99),
                pct(procs, 0.5) - pct(lib, 0.5)
            );
        }
        println!(
            "{:>28} {:>8.0} {:>8.0}",
            "vine --version (spawn only)",
            pct(&p.version, 0.5),
            pct(&p.version, 0.99)
        );
        println!(
            "{:>28} {:>8.0} {:>8.0}",
            "vine status (read, no lock)",
            pct(&p.status, 0.5),
            pct(&p.status, 0.99)
        );
    }

    println!();
    println!(
        "5. Breakdown of a claim (replica of LocalStore::write_batch for one claim, step by step, with a QueueCache kept across its claims; {} claims per history), p50 / mean us",
        runs.first().map_or(0, |r| r.phases.len())
    );
    print!("{:>42}", "phase");
    for r in runs {
        print!(" {:>17}", format!("h={}", r.label));
    }
    println!();
    let row = |name: &str, f: &dyn Fn(&LatencyRun) -> Vec<f64>| {
        print!("{name:>42}");
        for r in runs {
            let v = f(r);
            print!(" {:>17}", format!("{:.0} / {:.0}", pct(&v, 0.5), mean(&v)));
        }
        println!();
    };
    for (i, name) in PHASES.iter().enumerate() {
        row(name, &|r| r.phases.iter().map(|p| p[i]).collect());
    }
    row("replica total", &|r| r.replica.clone());
    row("Board::claim (section 1+2)", &|r| r.claim.clone());
    print!("{:>42}", "claims that wrote worker-status.json");
    for r in runs {
        print!(
            " {:>17}",
            format!("{} of {}", r.soft_writes, r.phases.len())
        );
    }
    println!();
    println!("   the replica's phases grouped:");
    let group = |name: &str, idx: &[usize]| {
        row(name, &|r| {
            r.phases
                .iter()
                .map(|p| idx.iter().map(|&i| p[i]).sum())
                .collect()
        })
    };
    group("A. queue replace (the floor's own steps)", &GROUP_REPLACE);
    group("B. CPU: take, merge, rules, encode, cache", &GROUP_CPU);
    group("C. worker-status: age check + soft write", &GROUP_WORKERS);
    group("D. lock, reads, unlock, instructions", &GROUP_IO);
    print!("{:>42}", "replica p50 / Board::claim p50");
    for r in runs {
        print!(
            " {:>17}",
            format!("{:.3}", pct(&r.replica, 0.5) / pct(&r.claim, 0.5))
        );
    }
    println!();
    print!("{:>42}", "Board::claim p50 - floor p50 (section 1+2)");
    for r in runs {
        print!(" {:>17.0}", pct(&r.claim, 0.5) - pct(&r.floor, 0.5));
    }
    println!();
    println!(
        "   alternatives, measured outside the replica's total (the catch-up right after the handle's last write before the replica claim; the others after the replica claim):"
    );
    for (i, name) in ALTERNATIVES.iter().enumerate() {
        row(name, &|r| r.alternatives.iter().map(|a| a[i]).collect());
    }
    println!(
        "   the floor, step by step ({FLOOR_FILE} in the board dir, right after each replica claim):"
    );
    for (i, name) in FLOOR_PHASES.iter().enumerate() {
        row(name, &|r| r.floor_phases.iter().map(|p| p[i]).collect());
    }
    row("floor total", &|r| {
        r.floor_phases.iter().map(|p| p.iter().sum()).collect()
    });
    println!();
    println!(
        "6. Remote board: vine serve on {url} (loopback), one Board::connect client in this process, vs a long-lived local handle, interleaved, boards with history {THROUGHPUT_HISTORY}, {} rounds, us",
        remote.remote_cycle.len()
    );
    println!(
        "{:>30} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>11}",
        "op",
        "local p50",
        "local p99",
        "remote p50",
        "remote p99",
        "added p50",
        "added p99",
        "paired p50"
    );
    for (name, l, r) in [
        ("claim", &remote.local_claim, &remote.remote_claim),
        ("complete", &remote.local_complete, &remote.remote_complete),
        (
            "cycle (claim + complete)",
            &remote.local_cycle,
            &remote.remote_cycle,
        ),
        (
            "settings (a read op)",
            &remote.local_settings,
            &remote.remote_settings,
        ),
    ] {
        let paired: Vec<f64> = r.iter().zip(l.iter()).map(|(r, l)| r - l).collect();
        println!(
            "{:>30} {:>10.0} {:>10.0} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>11.0}",
            name,
            pct(l, 0.5),
            pct(l, 0.99),
            pct(r, 0.5),
            pct(r, 0.99),
            pct(r, 0.5) - pct(l, 0.5),
            pct(r, 0.99) - pct(l, 0.99),
            pct(&paired, 0.5)
        );
    }
    let rtt = pct(&remote.round_trip, 0.5);
    println!(
        "{:>30} {:>10} {:>10} {:>11.0} {:>11.0}",
        "GET /test (bare round trip)",
        "",
        "",
        rtt,
        pct(&remote.round_trip, 0.99)
    );
    println!(
        "{:>30} {:>10} {:>10} {:>11.0} {:>11.0}",
        "JSON work of a claim, in-proc",
        "",
        "",
        pct(&remote.json_claim, 0.5),
        pct(&remote.json_claim, 0.99)
    );
    println!(
        "{:>30} {:>10} {:>10} {:>11.0} {:>11.0}",
        "JSON work of a complete",
        "",
        "",
        pct(&remote.json_complete, 0.5),
        pct(&remote.json_complete, 0.99)
    );
    println!(
        "   added = remote percentile - local percentile; paired = median over the rounds of (remote - local) in the same round"
    );
    println!(
        "   JSON work: encoding and decoding the op's request and reply as both ends do, timed in this process (part of what the server adds beyond a bare round trip)"
    );
    println!("   targets:");
    for (name, l, r) in [
        ("claim", &remote.local_claim, &remote.remote_claim),
        ("complete", &remote.local_complete, &remote.remote_complete),
    ] {
        let paired: Vec<f64> = r.iter().zip(l.iter()).map(|(r, l)| r - l).collect();
        let added = pct(&paired, 0.5);
        println!(
            "     {name:>8}: the server adds {added:.0} us (paired p50) = {:.2} bare round trips ({rtt:.0} us); p50 - p50: {:.0} us = {:.2} (target <= 1 round trip per op): {}",
            added / rtt,
            pct(r, 0.5) - pct(l, 0.5),
            (pct(r, 0.5) - pct(l, 0.5)) / rtt,
            met(added <= rtt)
        );
    }
    let (remote16, local1) = (rates_of(true, 16), rates_of(false, 1));
    let ratio = pct(&remote16, 0.5) / pct(&local1, 0.5);
    println!(
        "     16 remote workers vs 1 local worker: median {:.0} vs {:.0} cycles/s = {ratio:.2}x (target >= 1x): {}; per round: {}",
        pct(&remote16, 0.5),
        pct(&local1, 0.5),
        met(ratio >= 1.0),
        ratios(&remote16, &local1)
    );

    println!();
    println!("total bench time: {:.0} s", elapsed.as_secs_f64());
}
