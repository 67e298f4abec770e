//! Worker processes on one board: throughput of claim+complete cycles with 1, 4 and 16 worker
//! processes on a local board and, in the same rounds, through `vine serve` on loopback; the
//! cost of one `vine` process per op against the same op in-process; and one remote client's
//! latency against a local handle's, beside a bare HTTP round trip.
//!
//! Run with `cargo bench --bench board` (about two minutes). BENCHMARKS.md says what the
//! figures mean; docs/benchmark-method.md how they are taken. The claim's latency against the
//! floor is `benches/claim.rs`.
//!
//! When the environment variable `AGENTVINE_BENCH_WORKER` is set, this binary is a worker
//! process of the throughput test instead (see [`worker_main`]), on a board directory or on
//! a server URL.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvine::remote::{Http, HttpOptions};
use agentvine::{Board, ClaimedTask, Settings};
use common::{
    ME, POOL, R, build_board, loadavg, machine, met, new_task, pct, result_of, shared_task, us,
    vine_binary,
};
use serde_json::Value;

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
/// Rounds of throughput runs (each round runs every worker count once, local then remote).
const THROUGHPUT_ROUNDS: usize = 3;
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
    // (remote).
    let local_dir = root.path().join("board-local");
    let served_dir = root.path().join("board-served");
    for dir in [&local_dir, &served_dir] {
        let built = build_board(dir, history, &Settings::default())?;
        eprintln!(
            "{} {}: built in {:.1}s (queue: {} finished + {} pending, archive: {})",
            at(),
            dir.display(),
            built.secs,
            built.queue_finished,
            built.pending,
            built.archived
        );
    }
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
    // Rounds of 1, 4, 16 workers in turn, each count local then remote, so a slow period of
    // the shared machine does not fall on one worker count or one kind of board only.
    let mut throughput = Vec::new();
    let (rounds, window) = if quick {
        (1, 1)
    } else {
        (THROUGHPUT_ROUNDS, WINDOW_SECS)
    };
    for round in 1..=rounds {
        for &n in &WORKER_COUNTS {
            for url in [None, Some(server.url.as_str())] {
                let dir = if url.is_some() {
                    &served_dir
                } else {
                    &local_dir
                };
                let t = measure_throughput(dir, url, n, window)?;
                eprintln!(
                    "{} round {round}, {n} {} workers: {:.0} cycles/s",
                    at(),
                    if t.remote { "remote" } else { "local" },
                    t.rate()
                );
                throughput.push(t);
            }
        }
    }
    drop(server);

    println!();
    println!("agentvine worker-process benchmark (boards with history {history})");
    for m in machine.iter().chain([&vine_line]) {
        println!("  {m}");
    }
    println!("  load average at end: {}", loadavg());
    report_throughput(&throughput, window);
    report_processes(&process);
    report_remote(&remote, &throughput);
    println!();
    println!("total bench time: {:.0} s", total.elapsed().as_secs_f64());
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
    pending_min: usize,
    pending_max: usize,
}

impl ThroughputRun {
    fn rate(&self) -> f64 {
        self.cycles as f64 / self.window
    }
}

/// Starts `workers` copies of this binary as worker processes on the board in `dir` (through
/// the server at `url` when given, else on the files); they all start at the same instant and
/// run claim + complete for `window` seconds. A feeder thread in this process keeps 50 to 100
/// pending tasks on the board (adding 50 with one `add_plan` whenever fewer than 50 are
/// pending, checked every 10 ms with a `status` read of the board's files, which takes no
/// lock; the adds go through the server when there is one), so the queue keeps its realistic
/// size instead of starting with thousands of tasks.
fn measure_throughput(
    dir: &Path,
    url: Option<&str>,
    workers: usize,
    window: u64,
) -> R<ThroughputRun> {
    let exe = std::env::current_exe()?;
    let start_at = epoch_ms() + 400 + 20 * workers as u64;
    let target = url.map_or_else(|| dir.display().to_string(), str::to_string);
    let mut children = Vec::new();
    for w in 1..=workers {
        let spec = format!("{target}:tp-w{w}:{window}:{start_at}");
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
        let dir: PathBuf = dir.to_path_buf();
        let target = target.clone();
        let first_task = 40_000_000u64
            + 1_000_000 * workers as u64
            + if url.is_some() { 100_000_000 } else { 0 };
        std::thread::spawn(move || -> Result<(usize, usize), String> {
            let board = open_target(&target).map_err(|e| e.to_string())?;
            let files = Board::open(&dir).map_err(|e| e.to_string())?;
            let mut n = first_task;
            let (mut lo, mut hi) = (usize::MAX, 0);
            while !stop.load(Ordering::Relaxed) {
                let pending = files.status().map_err(|e| e.to_string())?.pending;
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
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((lo, hi))
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
    let (pending_min, pending_max) = feeder.join().map_err(|_| "feeder panicked")??;
    Ok(ThroughputRun {
        remote: url.is_some(),
        workers,
        window: window as f64,
        cycles: per_worker.iter().sum(),
        empty,
        per_worker,
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

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Reports

/// Cycles per second of each round of one kind of board and worker count.
fn rates(throughput: &[ThroughputRun], remote: bool, n: usize) -> Vec<f64> {
    throughput
        .iter()
        .filter(|t| t.remote == remote && t.workers == n)
        .map(ThroughputRun::rate)
        .collect()
}

fn report_throughput(throughput: &[ThroughputRun], window: u64) {
    println!();
    println!(
        "Throughput: claim+complete cycles/s of worker processes, {window} s windows, one per round"
    );
    println!(
        "{:>7} {:>8} {:>20} {:>9} {:>10} {:>20} {:>7} {:>16}",
        "board",
        "workers",
        "cycles/s per round",
        "median",
        "ms/cycle",
        "per worker min-max",
        "empty",
        "pending min-max"
    );
    for remote in [false, true] {
        for &n in &WORKER_COUNTS {
            let ts: Vec<&ThroughputRun> = throughput
                .iter()
                .filter(|t| t.remote == remote && t.workers == n)
                .collect();
            let r = rates(throughput, remote, n);
            let median = pct(&r, 0.5);
            let per_worker = ts.iter().flat_map(|t| t.per_worker.iter().copied());
            println!(
                "{:>7} {:>8} {:>20} {:>9.0} {:>10.2} {:>20} {:>7} {:>16}",
                if remote { "remote" } else { "local" },
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
    }
    println!(
        "   local: each worker process opens the board's files; remote: each is a Board::connect client of one vine serve (group commit)"
    );
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
    let (remote16, local1) = (rates(throughput, true, 16), rates(throughput, false, 1));
    let ratio = pct(&remote16, 0.5) / pct(&local1, 0.5);
    println!(
        "     16 remote workers vs 1 local worker: median {:.0} vs {:.0} cycles/s = {ratio:.2}x (target >= 1x): {}",
        pct(&remote16, 0.5),
        pct(&local1, 0.5),
        met(ratio >= 1.0),
    );
}
