//! Worker processes on one board: throughput of claim+complete cycles with 1, 4 and 16 worker
//! processes on a local board, through `vine serve` on loopback and, as a peer, on a minimal
//! SQLite task queue (WAL, `synchronous=FULL`, one `BEGIN IMMEDIATE` transaction per claim and
//! per complete; `sqlite_peer`), all in the same interleaved rounds; the same at 16 workers
//! with 3,000 tasks pending; the cost of one `vine` process per op against the same op
//! in-process; and one remote client's latency against a local handle's, beside a bare HTTP
//! round trip.
//!
//! Run with `cargo bench --bench board` (about three minutes). BENCHMARKS.md says what the
//! figures mean; docs/benchmark-method.md how they are taken. The claim's latency against the
//! floor is `benches/claim.rs`.
//!
//! When the environment variable `AGENTVINE_BENCH_WORKER` is set, this binary is a worker
//! process of the throughput test instead (see [`worker_main`]), on a board directory, a
//! server URL or a SQLite queue.

mod common;
mod sqlite_peer;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvine::remote::{Http, HttpOptions};
use agentvine::{Board, ClaimedTask, Settings};
use common::{
    ME, POOL, R, build_board, build_board_with, loadavg, machine, met, new_task, pct, result_of,
    shared_task, us, vine_binary,
};
use serde_json::Value;
use sqlite_peer::SqliteQueue;

/// History of the boards (tasks added, claimed and completed before the measurement).
const HISTORY: usize = 10_000;
/// Unrecorded rounds before a latency measurement.
const WARMUP: usize = 21;
/// Recorded rounds of the remote latency comparison (three sawtooth periods of the queue).
const REMOTE_ROUNDS: usize = 603;
/// `vine` process claim+complete cycles.
const PROCESS_CYCLES: usize = 201;
/// Runs of `vine --version` and `vine status`.
const VERSION_RUNS: usize = 50;
/// Worker processes of the throughput test.
const WORKER_COUNTS: [usize; 3] = [1, 4, 16];
/// Rounds of throughput runs (each round runs every worker count once on every setup).
const THROUGHPUT_ROUNDS: usize = 3;
/// Pending tasks of the backlog runs (the second scenario), at `BACKLOG_WORKERS`.
const BACKLOG: usize = 3_000;
const BACKLOG_WORKERS: usize = 16;
/// The targets: 16 workers through `vine serve` against the SQLite peer's 16, and one local
/// worker against the peer's one.
const SERVED_OVER_SQLITE: f64 = 1.0;
const LOCAL_OVER_SQLITE: f64 = 0.5;
/// Wall time window of each throughput run.
const WINDOW_SECS: u64 = 3;
/// The environment variable that turns this binary into a throughput worker.
const WORKER_ENV: &str = "AGENTVINE_BENCH_WORKER";

fn main() -> R<()> {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return worker_main(&spec);
    }
    // Without `--bench` (`cargo test --benches`): a quick check of every section.
    let quick = !std::env::args().any(|a| a == "--bench");
    let total = Instant::now();
    let at = || format!("[{:.0} s]", total.elapsed().as_secs_f64());
    let root = tempfile::Builder::new()
        .prefix("agentvine-bench-")
        .tempdir_in("/tmp")?;
    let machine = machine(root.path());
    let vine = vine_binary()?;
    eprintln!("agentvine bench: boards under {}", root.path().display());
    let vine_line = format!("vine binary: {}", vine.display());
    eprintln!("{vine_line}");
    let history = if quick { 100 } else { HISTORY };

    // Two boards built alike: one used through its files (local), one served by `vine serve`
    // (remote); and the SQLite peer's queue with as many finished tasks.
    let local_dir = root.path().join("board-local");
    let served_dir = root.path().join("board-served");
    let sqlite_db = root.path().join("sqlite-queue.db");
    for dir in [&local_dir, &served_dir] {
        built_line(
            &at(),
            dir,
            &build_board(dir, history, &Settings::default())?,
        );
    }
    SqliteQueue::create(&sqlite_db, history, POOL)?;
    // The same three with a backlog and no history.
    let backlog = if quick { 300 } else { BACKLOG };
    let backlog_local = root.path().join("backlog-local");
    let backlog_served = root.path().join("backlog-served");
    let backlog_db = root.path().join("backlog-sqlite.db");
    for dir in [&backlog_local, &backlog_served] {
        built_line(
            &at(),
            dir,
            &build_board_with(dir, 0, backlog, &Settings::default())?,
        );
    }
    SqliteQueue::create(&backlog_db, 0, backlog)?;
    eprintln!("{} SQLite queues built", at());
    let process = measure_processes(&vine, &local_dir, if quick { 2 } else { PROCESS_CYCLES })?;
    eprintln!("{} vine process cycles done", at());

    let server = Server::start(&vine, &served_dir)?;
    eprintln!("{} vine serve: {}", at(), server.url);
    let remote = measure_remote_latency(
        &local_dir,
        &server.url,
        if quick { 2 } else { REMOTE_ROUNDS },
    )?;
    eprintln!("{} remote latency done", at());
    // Rounds of 1, 4, 16 workers in turn, each count on every setup, so a slow period of the
    // shared machine does not fall on one worker count or one setup only.
    let (rounds, window) = if quick {
        (1, 1)
    } else {
        (THROUGHPUT_ROUNDS, WINDOW_SECS)
    };
    let targets = [
        Target::local(&local_dir),
        Target::served(&served_dir, &server.url),
        Target::sqlite(&sqlite_db),
    ];
    let mut throughput = Vec::new();
    for round in 1..=rounds {
        for &n in &WORKER_COUNTS {
            for t in &targets {
                let run = measure_throughput(t, n, window, Backlog::small(t.setup))?;
                eprintln!(
                    "{} round {round}, {n} {} workers: {:.0} cycles/s",
                    at(),
                    t.setup.name(),
                    run.rate()
                );
                throughput.push(run);
            }
        }
    }
    drop(server);

    let server = Server::start(&vine, &backlog_served)?;
    let targets = [
        Target::local(&backlog_local),
        Target::served(&backlog_served, &server.url),
        Target::sqlite(&backlog_db),
    ];
    let mut backlog_runs = Vec::new();
    for round in 1..=rounds {
        for t in &targets {
            let run =
                measure_throughput(t, BACKLOG_WORKERS, window, Backlog::large(t.setup, backlog))?;
            eprintln!(
                "{} backlog round {round}, {BACKLOG_WORKERS} {} workers, {backlog} pending: {:.0} cycles/s",
                at(),
                t.setup.name(),
                run.rate()
            );
            backlog_runs.push(run);
        }
    }
    drop(server);

    println!();
    println!(
        "agentvine worker-process benchmark (boards with history {history}; backlog runs with {backlog} pending)"
    );
    for m in machine.iter().chain([&vine_line]) {
        println!("  {m}");
    }
    println!("  load average at end: {}", loadavg());
    report_throughput(&throughput, window);
    report_backlog(&backlog_runs, backlog, window);
    report_processes(&process);
    report_remote(&remote, &throughput);
    println!();
    println!("total bench time: {:.0} s", total.elapsed().as_secs_f64());
    Ok(())
}

fn built_line(at: &str, dir: &Path, built: &common::Built) {
    eprintln!(
        "{at} {}: built in {:.1}s (queue: {} finished + {} pending, archive: {})",
        dir.display(),
        built.secs,
        built.queue_finished,
        built.pending,
        built.archived
    );
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

/// Runs `vine` with `args` and returns its time and its output; fails when it fails.
fn run_vine(vine: &Path, args: &[&str]) -> R<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = Command::new(vine)
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    let e = us(t.elapsed());
    if !out.status.success() {
        return Err(format!(
            "vine {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok((e, out.stdout))
}

/// Times `vine --dir D --json claim --worker W` and `vine --dir D --json complete ID --worker W
/// --result ...` as separate processes, each cycle followed by the same cycle in-process
/// through a long-lived handle on the same board; and `vine --version` and `vine status`.
fn measure_processes(vine: &Path, dir: &Path, cycles: usize) -> R<ProcessRun> {
    let board = Board::open(dir)?;
    let d = dir.to_str().ok_or("board path is not UTF-8")?;
    let mut run = ProcessRun {
        version: Vec::new(),
        status: Vec::new(),
        claim: Vec::new(),
        complete: Vec::new(),
        lib_claim: Vec::new(),
        lib_complete: Vec::new(),
    };
    for i in 0..VERSION_RUNS.min(cycles * 10) + 5 {
        let (version, _) = run_vine(vine, &["--version"])?;
        let (status, _) = run_vine(vine, &["--dir", d, "status"])?;
        if i >= 5 {
            run.version.push(version);
            run.status.push(status);
        }
    }
    let mut n = 20_000_000u64;
    for i in 0..5 + cycles {
        let (claim, out) = run_vine(vine, &["--dir", d, "--json", "claim", "--worker", ME])?;
        let v: Value = serde_json::from_slice(&out)?;
        let id = v["claim"]["task"]["id"]
            .as_u64()
            .ok_or_else(|| format!("no task id in {v}"))?;
        let result = format!("Done: task {id} implemented, 12 tests added, docs updated");
        let (complete, _) = run_vine(
            vine,
            &[
                "--dir",
                d,
                "--json",
                "complete",
                &id.to_string(),
                "--worker",
                ME,
                "--result",
                &result,
            ],
        )?;
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

/// Remote vs local ops, one client each, interleaved (all in microseconds).
#[derive(Default)]
struct RemoteLatency {
    local_claim: Vec<f64>,
    local_complete: Vec<f64>,
    local_settings: Vec<f64>,
    remote_claim: Vec<f64>,
    remote_complete: Vec<f64>,
    remote_settings: Vec<f64>,
    /// `GET /test`: a bare HTTP round trip (no board work).
    round_trip: Vec<f64>,
}

/// `rounds` recorded rounds (after `WARMUP` unrecorded ones); each runs one claim+complete
/// cycle through a long-lived local handle on the board in `local_dir` and one through a
/// remote handle on the server at `url` (which one goes first alternates), each followed by an
/// untimed add through the same handle (so both pools stay at 50 pending) and a timed
/// `settings` read, then one timed `GET /test` on its own HTTP client.
fn measure_remote_latency(local_dir: &Path, url: &str, rounds: usize) -> R<RemoteLatency> {
    let local = Board::open(local_dir)?;
    let remote = Board::connect(url, None)?;
    let http = Http::new(url, None, HttpOptions::from_env()?)?;
    let mut m = RemoteLatency::default();
    let mut n = 30_000_000u64;
    for i in 0..WARMUP + rounds {
        let record = i >= WARMUP;
        for k in 0..2 {
            let is_remote = (k == 0) == (i % 2 == 1);
            let board = if is_remote { &remote } else { &local };
            let t = Instant::now();
            let c = board.claim(ME)?.ok_or("the pool ran dry")?;
            let claim = us(t.elapsed());
            let t = Instant::now();
            board.complete(c.task.id, ME, Some(result_of(c.task.id)))?;
            let complete = us(t.elapsed());
            check_claim(&c)?;
            n += 1;
            board.add(new_task(n))?;
            let t = Instant::now();
            board.settings()?;
            let settings = us(t.elapsed());
            if record {
                let (cl, co, se) = if is_remote {
                    (
                        &mut m.remote_claim,
                        &mut m.remote_complete,
                        &mut m.remote_settings,
                    )
                } else {
                    (
                        &mut m.local_claim,
                        &mut m.local_complete,
                        &mut m.local_settings,
                    )
                };
                cl.push(claim);
                co.push(complete);
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

/// What the throughput workers run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    /// A board's files: every worker process opens the board directory.
    Local,
    /// `vine serve` on loopback: every worker process is a `Board::connect` client.
    Served,
    /// The SQLite peer: every worker process opens the database.
    Sqlite,
}

const SETUPS: [Setup; 3] = [Setup::Local, Setup::Served, Setup::Sqlite];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Local => "local",
            Setup::Served => "served",
            Setup::Sqlite => "sqlite",
        }
    }
}

/// The prefix of a SQLite queue in a worker's spec.
const SQLITE_PREFIX: &str = "sqlite:";

/// One setup's board or queue.
struct Target {
    setup: Setup,
    /// The board directory (the feeder reads its status from the files), or the database.
    path: PathBuf,
    /// The server's URL for `Setup::Served`.
    url: Option<String>,
}

impl Target {
    fn local(dir: &Path) -> Target {
        Target {
            setup: Setup::Local,
            path: dir.to_path_buf(),
            url: None,
        }
    }

    fn served(dir: &Path, url: &str) -> Target {
        Target {
            setup: Setup::Served,
            path: dir.to_path_buf(),
            url: Some(url.to_string()),
        }
    }

    fn sqlite(db: &Path) -> Target {
        Target {
            setup: Setup::Sqlite,
            path: db.to_path_buf(),
            url: None,
        }
    }

    /// What a worker's spec names: the directory, the URL, or `sqlite:<database>`.
    fn spec(&self) -> String {
        match (&self.url, self.setup) {
            (Some(url), _) => url.clone(),
            (None, Setup::Sqlite) => format!("{SQLITE_PREFIX}{}", self.path.display()),
            (None, _) => self.path.display().to_string(),
        }
    }
}

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

/// How the feeder keeps the backlog: whenever fewer than `below` tasks are pending it adds
/// enough to bring them to `up_to` (in one `add-plan`, or one SQLite transaction); it looks
/// every `every`.
#[derive(Clone, Copy)]
struct Backlog {
    below: usize,
    up_to: usize,
    every: Duration,
}

impl Backlog {
    /// 100 to 200 pending, looked at every 10 ms (a `status` read of 100 to 400 tasks), every
    /// 2 ms on SQLite (an index count; one SQLite worker can take 50 tasks in 10 ms). With 50
    /// to 100, SQLite ran dry whenever the feeder waited a few ms for a CPU, and local boards
    /// at 16 workers whenever the feeder waited for the lock.
    fn small(setup: Setup) -> Backlog {
        Backlog {
            below: 2 * POOL,
            up_to: 4 * POOL,
            every: Duration::from_millis(if setup == Setup::Sqlite { 2 } else { 10 }),
        }
    }

    /// `n` to `n + 10 %` pending, looked at every 100 ms (a `status` read parses the whole
    /// queue, which at 3,000 tasks takes milliseconds of the CPU the workers share), every
    /// 20 ms on SQLite.
    fn large(setup: Setup, n: usize) -> Backlog {
        Backlog {
            below: n,
            up_to: n + n / 10,
            every: Duration::from_millis(if setup == Setup::Sqlite { 20 } else { 100 }),
        }
    }
}

struct ThroughputRun {
    setup: Setup,
    workers: usize,
    window: f64,
    cycles: u64,
    empty: u64,
    per_worker: Vec<u64>,
    pending_min: usize,
    pending_max: usize,
}

impl ThroughputRun {
    fn rate(&self) -> f64 {
        self.cycles as f64 / self.window
    }
}

/// What the feeder adds through, and reads the pending count from.
enum Feed {
    /// Adds through `board` (the server for a served board, so only it writes the board);
    /// counts pending tasks with a `status` read of the board's files (no lock).
    Board {
        board: Board,
        files: Board,
        n: u64,
    },
    Sqlite(SqliteQueue),
}

impl Feed {
    /// `setup`'s feed on the board or database at `path`, adding through `spec`.
    fn open(setup: Setup, path: &Path, spec: &str, first_task: u64) -> R<Feed> {
        Ok(match setup {
            Setup::Sqlite => {
                let mut q = SqliteQueue::open(path)?;
                q.poll_for_lock()?;
                Feed::Sqlite(q)
            }
            _ => Feed::Board {
                board: open_target(spec)?,
                files: Board::open(path)?,
                n: first_task,
            },
        })
    }

    fn pending(&mut self) -> R<usize> {
        match self {
            Feed::Board { files, .. } => Ok(files.status()?.pending),
            Feed::Sqlite(q) => q.pending(),
        }
    }

    fn add(&mut self, count: usize) -> R<()> {
        match self {
            Feed::Board { board, n, .. } => {
                let plan = (0..count)
                    .map(|_| {
                        *n += 1;
                        shared_task(*n)
                    })
                    .collect();
                board.add_plan(plan)?;
                Ok(())
            }
            Feed::Sqlite(q) => q.add(count),
        }
    }
}

/// Starts `workers` copies of this binary as worker processes on `target`; they all start at
/// the same instant and run claim + complete for `window` seconds. A feeder thread in this
/// process keeps the backlog (see [`Backlog`]), so the queue keeps its size for the whole
/// run instead of starting with every task the run will take.
fn measure_throughput(
    target: &Target,
    workers: usize,
    window: u64,
    backlog: Backlog,
) -> R<ThroughputRun> {
    let exe = std::env::current_exe()?;
    let start_at = epoch_ms() + 400 + 20 * workers as u64;
    let spec = target.spec();
    let mut children = Vec::new();
    for w in 1..=workers {
        children.push(
            Command::new(&exe)
                .env(WORKER_ENV, format!("{spec}:tp-w{w}:{window}:{start_at}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        // Task numbers (for the agentvine boards' descriptions) unique per run.
        let first_task = 40_000_000u64
            + 1_000_000 * workers as u64
            + 100_000_000 * target.setup as u64
            + epoch_ms() % 1_000_000 * 1_000;
        let (setup, path, spec) = (target.setup, target.path.clone(), spec.clone());
        std::thread::spawn(move || -> Result<(usize, usize), String> {
            let mut feed =
                Feed::open(setup, &path, &spec, first_task).map_err(|e| e.to_string())?;
            let (mut lo, mut hi) = (usize::MAX, 0);
            while !stop.load(Ordering::Relaxed) {
                let pending = feed.pending().map_err(|e| e.to_string())?;
                if epoch_ms() >= start_at {
                    lo = lo.min(pending);
                    hi = hi.max(pending);
                }
                if pending < backlog.below {
                    feed.add(backlog.up_to - pending)
                        .map_err(|e| e.to_string())?;
                }
                std::thread::sleep(backlog.every);
            }
            Ok((lo, hi))
        })
    };
    let mut per_worker = Vec::new();
    let mut empty = 0;
    let mut failed = None;
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            failed.get_or_insert(format!("a {} worker failed: {text}", target.setup.name()));
            continue;
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
    let (pending_min, pending_max) = feeder.join().map_err(|_| "feeder panicked")??;
    if let Some(f) = failed {
        return Err(f.into());
    }
    Ok(ThroughputRun {
        setup: target.setup,
        workers,
        window: window as f64,
        cycles: per_worker.iter().sum(),
        empty,
        per_worker,
        pending_min,
        pending_max,
    })
}

/// What a worker claims from and completes on.
enum Queue {
    Board(Board),
    Sqlite(SqliteQueue),
}

impl Queue {
    /// One claim + complete; false when nothing was pending.
    fn cycle(&mut self, me: &str) -> R<bool> {
        match self {
            Queue::Board(board) => match board.claim(me)? {
                Some(c) => {
                    check_claim(&c)?;
                    board.complete(c.task.id, me, Some(result_of(c.task.id)))?;
                    Ok(true)
                }
                None => Ok(false),
            },
            Queue::Sqlite(q) => match q.claim(me)? {
                Some(c) => {
                    if c.instructions.is_empty() || c.description.is_empty() {
                        return Err(format!("SQLite task {} came without its text", c.id).into());
                    }
                    let result = result_of(c.id as u64);
                    q.complete(c.id, me, result.as_str().unwrap_or_default())?;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }
}

/// A throughput worker: `AGENTVINE_BENCH_WORKER=<target>:<worker-id>:<seconds>:<start-epoch-ms>`,
/// where `<target>` is a board directory (`Board::open`), a server URL `http://...`
/// (`Board::connect`, no key: the bench's server listens on loopback without one) or
/// `sqlite:<database>` (the SQLite peer).
/// Reads once (a remote board probes `/test` and opens its connection then), waits for the
/// common start instant, then claims and completes until the window is over and prints
/// `cycles=N empty=M` (cycles finished inside the window; claims that found nothing, which
/// would mean the feeder fell behind).
fn worker_main(spec: &str) -> R<()> {
    let mut parts = spec.rsplitn(4, ':');
    let start_at: u64 = parts.next().ok_or("bad spec")?.parse()?;
    let secs: u64 = parts.next().ok_or("bad spec")?.parse()?;
    let me = parts.next().ok_or("bad spec")?.to_string();
    let target = parts.next().ok_or("bad spec")?;
    let mut queue = match target.strip_prefix(SQLITE_PREFIX) {
        Some(db) => {
            let q = SqliteQueue::open(Path::new(db))?;
            q.pending()?;
            Queue::Sqlite(q)
        }
        None => {
            let board = open_target(target)?;
            board.settings()?;
            Queue::Board(board)
        }
    };
    let now = epoch_ms();
    if start_at > now {
        std::thread::sleep(Duration::from_millis(start_at - now));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cycles, mut empty) = (0u64, 0u64);
    while Instant::now() < deadline {
        if queue.cycle(&me)? {
            if Instant::now() <= deadline {
                cycles += 1;
            }
        } else {
            empty += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    println!("cycles={cycles} empty={empty}");
    Ok(())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Reports

/// Cycles per second of each round of one setup and worker count.
fn rates(throughput: &[ThroughputRun], setup: Setup, n: usize) -> Vec<f64> {
    throughput
        .iter()
        .filter(|t| t.setup == setup && t.workers == n)
        .map(ThroughputRun::rate)
        .collect()
}

/// The median of `rates`.
fn median(throughput: &[ThroughputRun], setup: Setup, n: usize) -> f64 {
    pct(&rates(throughput, setup, n), 0.5)
}

fn throughput_header() {
    println!(
        "{:>7} {:>8} {:>20} {:>9} {:>10} {:>20} {:>7} {:>16}",
        "setup",
        "workers",
        "cycles/s per round",
        "median",
        "ms/cycle",
        "per worker min-max",
        "empty",
        "pending min-max"
    );
}

fn throughput_row(throughput: &[ThroughputRun], setup: Setup, n: usize) {
    let ts: Vec<&ThroughputRun> = throughput
        .iter()
        .filter(|t| t.setup == setup && t.workers == n)
        .collect();
    let r = rates(throughput, setup, n);
    let median = pct(&r, 0.5);
    let per_worker = ts.iter().flat_map(|t| t.per_worker.iter().copied());
    println!(
        "{:>7} {:>8} {:>20} {:>9.0} {:>10.2} {:>20} {:>7} {:>16}",
        setup.name(),
        n,
        r.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" "),
        median,
        1000.0 / median,
        format!(
            "{}-{}",
            per_worker.clone().min().unwrap_or(0),
            per_worker.max().unwrap_or(0)
        ),
        ts.iter().map(|t| t.empty).sum::<u64>(),
        format!(
            "{}-{}",
            ts.iter().map(|t| t.pending_min).min().unwrap_or(0),
            ts.iter().map(|t| t.pending_max).max().unwrap_or(0)
        ),
    );
}

fn report_throughput(throughput: &[ThroughputRun], window: u64) {
    println!();
    println!(
        "Throughput: claim+complete cycles/s of worker processes, {window} s windows, one per round"
    );
    throughput_header();
    for setup in SETUPS {
        for &n in &WORKER_COUNTS {
            throughput_row(throughput, setup, n);
        }
    }
    println!(
        "   local: each worker process opens the board's files; served: each is a Board::connect client of one vine serve (group commit);"
    );
    println!(
        "   sqlite: each opens the SQLite peer (WAL, synchronous=FULL, one BEGIN IMMEDIATE transaction per claim and per complete)"
    );
    println!("   targets (medians, same rounds):");
    let (served16, sqlite16) = (
        median(throughput, Setup::Served, 16),
        median(throughput, Setup::Sqlite, 16),
    );
    let ratio = served16 / sqlite16;
    println!(
        "     16 workers through vine serve / 16 on SQLite: {served16:.0} / {sqlite16:.0} = {ratio:.2}x (target >= {SERVED_OVER_SQLITE}x): {}",
        met(ratio >= SERVED_OVER_SQLITE)
    );
    let (local1, sqlite1) = (
        median(throughput, Setup::Local, 1),
        median(throughput, Setup::Sqlite, 1),
    );
    let ratio = local1 / sqlite1;
    println!(
        "     1 local worker / 1 on SQLite: {local1:.0} / {sqlite1:.0} = {ratio:.2}x (target >= {LOCAL_OVER_SQLITE}x): {}",
        met(ratio >= LOCAL_OVER_SQLITE)
    );
}

fn report_backlog(runs: &[ThroughputRun], backlog: usize, window: u64) {
    println!();
    println!(
        "With a backlog: {BACKLOG_WORKERS} workers, {backlog} tasks pending (topped up to {} when below {backlog}), no history, {window} s windows",
        backlog + backlog / 10
    );
    throughput_header();
    for setup in SETUPS {
        throughput_row(runs, setup, BACKLOG_WORKERS);
    }
    let sqlite = median(runs, Setup::Sqlite, BACKLOG_WORKERS);
    for setup in [Setup::Local, Setup::Served] {
        let m = median(runs, setup, BACKLOG_WORKERS);
        println!(
            "   {} / sqlite: {m:.0} / {sqlite:.0} = {:.2}x",
            setup.name(),
            m / sqlite
        );
    }
}

fn report_processes(p: &ProcessRun) {
    println!();
    println!(
        "One vine process per op vs the same op in-process, same board, {} cycles, us",
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
    for (name, v) in [
        ("vine --version (spawn only)", &p.version),
        ("vine status (read, no lock)", &p.status),
    ] {
        println!("{:>28} {:>8.0} {:>8.0}", name, pct(v, 0.5), pct(v, 0.99));
    }
}

fn report_remote(m: &RemoteLatency, throughput: &[ThroughputRun]) {
    println!();
    println!(
        "Remote latency: one Board::connect client of vine serve on loopback vs one long-lived local handle, interleaved, {} rounds, us",
        m.remote_claim.len()
    );
    println!(
        "{:>28} {:>10} {:>10} {:>11} {:>11} {:>11}",
        "op", "local p50", "local p99", "remote p50", "remote p99", "paired p50"
    );
    let paired = |l: &[f64], r: &[f64]| -> f64 {
        let d: Vec<f64> = r.iter().zip(l).map(|(r, l)| r - l).collect();
        pct(&d, 0.5)
    };
    for (name, l, r) in [
        ("claim", &m.local_claim, &m.remote_claim),
        ("complete", &m.local_complete, &m.remote_complete),
        (
            "settings (a read op)",
            &m.local_settings,
            &m.remote_settings,
        ),
    ] {
        println!(
            "{:>28} {:>10.0} {:>10.0} {:>11.0} {:>11.0} {:>11.0}",
            name,
            pct(l, 0.5),
            pct(l, 0.99),
            pct(r, 0.5),
            pct(r, 0.99),
            paired(l, r)
        );
    }
    let rtt = pct(&m.round_trip, 0.5);
    println!(
        "{:>28} {:>10} {:>10} {:>11.0} {:>11.0}",
        "GET /test (bare round trip)",
        "",
        "",
        rtt,
        pct(&m.round_trip, 0.99)
    );
    println!("   paired p50: the median over the rounds of (remote - local) in the same round");
    println!("   targets:");
    for (name, l, r) in [
        ("claim", &m.local_claim, &m.remote_claim),
        ("complete", &m.local_complete, &m.remote_complete),
    ] {
        let added = paired(l, r);
        println!(
            "     {name:>8}: the server adds {added:.0} us = {:.2} bare round trips ({rtt:.0} us) (target <= 1): {}",
            added / rtt,
            met(added <= rtt)
        );
    }
    let (remote16, local1) = (
        median(throughput, Setup::Served, 16),
        median(throughput, Setup::Local, 1),
    );
    let ratio = remote16 / local1;
    println!(
        "     16 remote workers vs 1 local worker: median {remote16:.0} vs {local1:.0} cycles/s = {ratio:.2}x (target >= 1x): {}",
        met(ratio >= 1.0),
    );
}
