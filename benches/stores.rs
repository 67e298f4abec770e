//! The stores side by side: claim+complete cycles/s of 1, 4 and 16 remote worker processes on
//! (a) one file-backed `vine serve`, (b) one `vine serve --store postgres://...`, (c) two
//! PostgreSQL-backed `vine serve` on one database (the workers spread over both, each given
//! the list `VINE_URL` would hold); and, in the same run, the claim's latency through (a) and
//! (b) against a bare `UPDATE ... WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1)
//! RETURNING` claim statement on a table shaped like a task queue, and a bare HTTP round trip.
//!
//! Run with `cargo bench --bench stores` (a few minutes). PostgreSQL is a throwaway cluster
//! (`benches/common/pg.rs` is `tests/support/pg.rs`): without PostgreSQL the bench fails with
//! the install command. A `vine` without `serve --store` measures (a) and the bare statement,
//! then fails saying so.
//!
//! When `AGENTVINE_BENCH_STORES_WORKER` is set, this binary is a worker process instead (see
//! [`worker_main`]).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvine::Board;
use agentvine::op::PlanTask;
use agentvine::remote::{Http, HttpOptions, RemoteStore};
use common::pg::Cluster;
use common::{POOL, R, loadavg, machine, met, new_task, pct, result_of, us, vine_binary};

/// Tasks added, claimed and completed on each board before it is measured.
const HISTORY: usize = 1000;
/// Worker processes of the throughput runs.
const WORKER_COUNTS: [usize; 3] = [1, 4, 16];
/// Rounds of throughput runs (each runs every setup at every worker count once).
const ROUNDS: usize = 3;
/// Wall time window of each throughput run.
const WINDOW_SECS: u64 = 3;
/// Unrecorded rounds before the latency rounds.
const WARMUP: usize = 21;
/// Recorded latency rounds.
const LATENCY_ROUNDS: usize = 401;
/// The environment variable that turns this binary into a worker.
const WORKER_ENV: &str = "AGENTVINE_BENCH_STORES_WORKER";

fn main() -> R<()> {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return worker_main(&spec);
    }
    // Without `--bench` (`cargo test --benches`): a quick pass through every section.
    let quick = !std::env::args().any(|a| a == "--bench");
    let total = Instant::now();
    let at = || format!("[{:.0} s]", total.elapsed().as_secs_f64());
    let root = tempfile::Builder::new()
        .prefix("agentvine-bench-stores-")
        .tempdir_in("/tmp")?;
    let machine = machine(root.path());
    let vine = vine_binary()?;
    let history = if quick { 20 } else { HISTORY };
    eprintln!("agentvine stores bench under {}", root.path().display());

    let cluster = Cluster::start();
    let db_b = cluster.create_db("board_b");
    let db_c = cluster.create_db("board_c");
    let db_bare = cluster.create_db("bare");
    let pg_version = cluster.psql("postgres", "SHOW server_version");
    eprintln!(
        "{} PostgreSQL {} on port {}",
        at(),
        pg_version.trim(),
        cluster.port()
    );

    let mut setups = vec![Setup {
        name: "(a) file",
        servers: vec![Server::start(&vine, &root.path().join("a"), None)?],
    }];
    // (b) and (c) need `vine serve --store`; without it they are reported as missing.
    let pg = (|| -> R<Vec<Setup>> {
        let b = Server::start(&vine, &root.path().join("b"), Some(&db_b))?;
        let c1 = Server::start(&vine, &root.path().join("c1"), Some(&db_c))?;
        let c2 = Server::start(&vine, &root.path().join("c2"), Some(&db_c))?;
        Ok(vec![
            Setup {
                name: "(b) pg",
                servers: vec![b],
            },
            Setup {
                name: "(c) pg x2",
                servers: vec![c1, c2],
            },
        ])
    })();
    let missing = match pg {
        Ok(s) => {
            setups.extend(s);
            None
        }
        Err(e) => {
            eprintln!("{} (b) and (c) cannot run: {e}", at());
            Some(e.to_string().trim_end().trim_end_matches('.').to_string())
        }
    };
    for s in &setups {
        let t = Instant::now();
        s.prepare(history)?;
        eprintln!(
            "{} {}: {} history tasks in {:.1} s",
            at(),
            s.name,
            history,
            t.elapsed().as_secs_f64()
        );
    }

    // The PostgreSQL store in this process (no server, no HTTP): what the store itself adds
    // to a claim, against the bare statement.
    let direct = match &missing {
        None => {
            let db_d = cluster.create_db("board_direct");
            let board = Board::with_transport(agentvine::store::pg::PgStore::open(&db_d)?);
            fill(&board, history)?;
            Some(board)
        }
        Some(_) => None,
    };
    let mut bare = Bare::new(&db_bare, history)?;
    let rounds = if quick { 5 } else { LATENCY_ROUNDS };
    let latency = measure_latency(&setups, direct.as_ref(), &mut bare, rounds)?;
    eprintln!("{} latency rounds done", at());

    // `AGENTVINE_BENCH_STORES_LATENCY_ONLY=1` skips the throughput runs (for profiling).
    let latency_only = std::env::var_os("AGENTVINE_BENCH_STORES_LATENCY_ONLY").is_some();
    let (rounds, window) = if quick {
        (1, 1)
    } else if latency_only {
        (0, WINDOW_SECS)
    } else {
        (ROUNDS, WINDOW_SECS)
    };
    // `AGENTVINE_BENCH_STORES_ONLY=c:16` runs one setup's throughput at one worker count, one
    // 15 s round, after the latency rounds (to profile it, e.g. with `perf record -a`).
    let only = std::env::var("AGENTVINE_BENCH_STORES_ONLY").ok();
    let only = only
        .as_deref()
        .and_then(|v| v.split_once(':'))
        .map(|(s, n)| (format!("({s})"), n.parse::<usize>().unwrap_or(16)));
    let (rounds, window) = if only.is_some() {
        (1, 15)
    } else {
        (rounds, window)
    };
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for &n in &WORKER_COUNTS {
            for s in &setups {
                if let Some((setup, workers)) = &only
                    && !(s.name.starts_with(setup.as_str()) && n == *workers)
                {
                    continue;
                }
                let r = measure_throughput(s, n, window)?;
                eprintln!(
                    "{} round {round}, {} with {n} workers: {:.0} cycles/s",
                    at(),
                    s.name,
                    r.rate()
                );
                runs.push(r);
            }
        }
    }

    println!();
    println!("agentvine stores benchmark (boards with history {history})");
    for m in &machine {
        println!("  {m}");
    }
    println!("  vine binary: {}", vine.display());
    println!(
        "  PostgreSQL {}: throwaway cluster, fsync on, synchronous_commit on, shared_buffers 16MB",
        pg_version.trim()
    );
    println!("  load average at end: {}", loadavg());
    report_throughput(&setups, &runs, window);
    report_latency(&latency);
    println!();
    println!("total bench time: {:.0} s", total.elapsed().as_secs_f64());
    match missing {
        None => Ok(()),
        Some(e) => Err(format!(
            "(b) and (c) were not measured: {e}. They need `vine serve --store postgres://...` (the PostgreSQL store, issue #11)"
        )
        .into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and setups

/// A `vine serve` process; killed (and reaped) when dropped.
struct Server {
    child: Child,
    url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// `vine serve --root ROOT --listen 127.0.0.1:0 [--store URL]` without a key; waits for its
    /// `listening on URL` line. Its stderr goes to `ROOT.log`, quoted when it does not start.
    fn start(vine: &Path, root: &Path, store: Option<&str>) -> R<Server> {
        fs::create_dir_all(root)?;
        let log = root.with_extension("log");
        let mut cmd = Command::new(vine);
        cmd.arg("serve")
            .arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"]);
        if let Some(url) = store {
            cmd.args(["--store", url]);
        }
        let mut child = cmd
            .env_remove("VINE_API_KEY")
            .env_remove("VPS_API_KEY")
            .env_remove("VINE_API_KEY_FILE")
            .env_remove("VINE_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?)
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let status = child.wait()?;
            let stderr = fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "`vine serve{}` did not start ({status}): {}",
                store.map(|_| " --store URL").unwrap_or(""),
                stderr.trim()
            )
            .into());
        };
        Ok(Server {
            url: url.to_string(),
            child,
            _stdout: out,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One of the measured configurations: its servers (one board).
struct Setup {
    name: &'static str,
    servers: Vec<Server>,
}

impl Setup {
    /// The servers' list as worker `w` is given it (`VINE_URL` form), starting at server
    /// `w % n`, so the workers are spread over the servers.
    fn urls_for(&self, w: usize) -> String {
        let n = self.servers.len();
        (0..n)
            .map(|i| self.servers[(w + i) % n].url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn board(&self) -> R<Board> {
        Ok(Board::connect(&self.urls_for(0), None)?)
    }

    /// Creates the board if it is not there (`vine --url URL init`), then [`fill`]s it.
    fn prepare(&self, history: usize) -> R<()> {
        RemoteStore::connect(&self.urls_for(0), None)?.init(None)?;
        fill(&self.board()?, history)
    }
}

/// A plan of `count` realistic tasks numbered after `n` (which moves past them).
fn plan_of(count: usize, n: &mut u64) -> Vec<PlanTask> {
    (0..count)
        .map(|_| {
            *n += 1;
            PlanTask {
                task: new_task(*n),
                ..PlanTask::default()
            }
        })
        .collect()
}

/// Runs `history` tasks through `board` (added in plans, claimed and completed by one client)
/// and leaves `POOL` pending.
fn fill(board: &Board, history: usize) -> R<()> {
    let mut n = 1_000_000u64;
    let mut plan = |count: usize| -> R<()> {
        board.add_plan(plan_of(count, &mut n))?;
        Ok(())
    };
    let mut left = history;
    while left > 0 {
        let k = left.min(250);
        plan(k)?;
        left -= k;
    }
    plan(POOL)?;
    for _ in 0..history {
        let c = board.claim("history")?.ok_or("the history ran dry")?;
        board.complete(c.task.id, "history", Some(result_of(c.task.id)))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bare claim statement

/// A task-queue-shaped table in its own database, claimed from with one statement.
struct Bare {
    client: postgres::Client,
    claim: postgres::Statement,
    complete: postgres::Statement,
    add: postgres::Statement,
    next: i64,
}

impl Bare {
    /// The table with `history` completed tasks and `POOL` pending ones, each row about the
    /// size of a task on the file queue (description, instructions path, context, metadata).
    fn new(url: &str, history: usize) -> R<Bare> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(
            "CREATE TABLE tasks (
                 id bigint PRIMARY KEY,
                 status text NOT NULL,
                 priority smallint NOT NULL,
                 claimed_by text,
                 claimed_at timestamptz,
                 lease_until timestamptz,
                 completed_by text,
                 completed_at timestamptz,
                 attempts integer NOT NULL DEFAULT 0,
                 request_key text,
                 body jsonb NOT NULL
             );
             CREATE INDEX tasks_claimable ON tasks (priority, id) WHERE status = 'pending';",
        )?;
        let body = |i: i64| {
            serde_json::json!({
                "description": format!("Implement module {i}: the endpoint, its tests and its docs"),
                "instruction_file": format!("tasks/task-{i}-instructions.md"),
                "context_files": ["docs/api-spec.md", format!("src/module_{i}/mod.rs")],
                "metadata": {"working_directory": format!("src/module_{i}"), "acceptance": "cargo test passes; no new warnings"},
            })
        };
        let insert = client.prepare(
            "INSERT INTO tasks (id, status, priority, completed_by, completed_at, attempts, body)
             VALUES ($1, $2, 1, $3, CASE WHEN $2 = 'completed' THEN now() END, $4, $5::text::jsonb)",
        )?;
        let mut tx = client.transaction()?;
        for i in 0..(history + POOL) as i64 {
            let done = (i as usize) < history;
            let status = if done { "completed" } else { "pending" };
            let by: Option<&str> = done.then_some("history");
            tx.execute(
                &insert,
                &[&i, &status, &by, &i32::from(done), &body(i).to_string()],
            )?;
        }
        tx.commit()?;
        client.batch_execute("ANALYZE tasks")?;
        let claim = client.prepare(
            "UPDATE tasks SET status = 'in_progress', claimed_by = $1, claimed_at = now(),
                 lease_until = now() + interval '30 minutes', attempts = attempts + 1,
                 request_key = $2
             WHERE id = (SELECT id FROM tasks WHERE status = 'pending'
                         ORDER BY priority, id FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING id, body",
        )?;
        let complete = client.prepare(
            "UPDATE tasks SET status = 'completed', completed_by = claimed_by,
                 completed_at = now(), body = body || jsonb_build_object('result', $2::text)
             WHERE id = $1",
        )?;
        let add = client.prepare(
            "INSERT INTO tasks (id, status, priority, body) VALUES ($1, 'pending', 1, $2::text::jsonb)",
        )?;
        Ok(Bare {
            client,
            claim,
            complete,
            add,
            next: (history + POOL) as i64,
        })
    }

    /// One claim statement (its own transaction), timed; then, untimed, the task's
    /// completion and a new pending task.
    fn cycle(&mut self) -> R<f64> {
        let key = format!("bare-{}", self.next);
        let t = Instant::now();
        let row = self.client.query_opt(&self.claim, &[&"bare", &key])?;
        let took = us(t.elapsed());
        let row = row.ok_or("the bare table ran dry")?;
        let id: i64 = row.get(0);
        self.client.execute(&self.complete, &[&id, &"done"])?;
        let next = self.next;
        self.next += 1;
        let body =
            serde_json::json!({"description": format!("Implement module {next}")}).to_string();
        self.client.execute(&self.add, &[&next, &body])?;
        Ok(took)
    }
}

// ---------------------------------------------------------------------------------------------
// Latency

#[derive(Default)]
struct Latency {
    /// Claim through each setup's first server, per setup name (us).
    claims: Vec<(&'static str, Vec<f64>)>,
    /// Claim through the PostgreSQL store in this process (us).
    direct: Vec<f64>,
    bare: Vec<f64>,
    round_trip: Vec<f64>,
    /// Back to back (each claim right after the last cycle): through the store in this
    /// process, and the bare statement (us).
    direct_warm: Vec<f64>,
    bare_warm: Vec<f64>,
}

/// One claim through `board`, timed; then, untimed, its completion and a new task numbered
/// after `n`.
fn timed_claim(board: &Board, n: &mut u64) -> R<f64> {
    let t = Instant::now();
    let c = board.claim("latency")?.ok_or("the pool ran dry")?;
    let claim = us(t.elapsed());
    board.complete(c.task.id, "latency", Some(result_of(c.task.id)))?;
    *n += 1;
    board.add(new_task(*n))?;
    Ok(claim)
}

/// `rounds` recorded rounds (after `WARMUP`), each: one claim through every setup (one
/// long-lived client each; completed and replaced untimed), one through the PostgreSQL store
/// in this process (`direct`), one bare claim statement, one `GET /test` of the first server.
/// Then `rounds` claims through `direct` back to back, and as many bare claims back to back
/// (each cycle starting right after the last: nothing between them has gone idle).
fn measure_latency(
    setups: &[Setup],
    direct: Option<&Board>,
    bare: &mut Bare,
    rounds: usize,
) -> R<Latency> {
    let boards: Vec<Board> = setups.iter().map(Setup::board).collect::<R<_>>()?;
    let http = Http::new(&setups[0].servers[0].url, None, HttpOptions::from_env()?)?;
    let mut m = Latency {
        claims: setups.iter().map(|s| (s.name, Vec::new())).collect(),
        ..Latency::default()
    };
    let mut n = 50_000_000u64;
    for i in 0..WARMUP + rounds {
        let record = i >= WARMUP;
        for (k, board) in boards.iter().enumerate() {
            let claim = timed_claim(board, &mut n)?;
            if record {
                m.claims[k].1.push(claim);
            }
        }
        if let Some(board) = direct {
            let claim = timed_claim(board, &mut n)?;
            if record {
                m.direct.push(claim);
            }
        }
        let b = bare.cycle()?;
        let t = Instant::now();
        let r = http.get("/test", &[])?;
        let rt = us(t.elapsed());
        if r.status != 200 {
            return Err(format!("GET /test answered {}", r.status).into());
        }
        if record {
            m.bare.push(b);
            m.round_trip.push(rt);
        }
    }
    if let Some(board) = direct {
        for i in 0..WARMUP + rounds {
            let claim = timed_claim(board, &mut n)?;
            if i >= WARMUP {
                m.direct_warm.push(claim);
            }
        }
        for i in 0..WARMUP + rounds {
            let b = bare.cycle()?;
            if i >= WARMUP {
                m.bare_warm.push(b);
            }
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Throughput

struct Run {
    setup: &'static str,
    workers: usize,
    window: f64,
    cycles: u64,
    empty: u64,
    per_worker: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.cycles as f64 / self.window
    }
}

/// The feeder's plan size: it adds one whenever fewer than twice this many are pending (with
/// 50, the PostgreSQL-backed servers' 16 workers found the queue empty thousands of times
/// in a run: the feeder, not the servers, set their pace).
const FEED: usize = 200;

/// `workers` copies of this binary, each a `Board::connect` client of the setup's servers
/// (worker `w` given the list starting at server `w % n`), start at one instant and claim +
/// complete for `window` seconds. A feeder thread keeps 200 to 600 tasks pending (a `status`
/// read through the first server every 2 ms, a plan of [`FEED`] whenever fewer than twice
/// that are pending; when the setups still run dry, the `empty` column counts it).
fn measure_throughput(setup: &Setup, workers: usize, window: u64) -> R<Run> {
    let exe = std::env::current_exe()?;
    let start_at = epoch_ms() + 400 + 20 * workers as u64;
    let mut children = Vec::new();
    for w in 0..workers {
        let spec = format!("{}|tp-w{w}|{window}|{start_at}", setup.urls_for(w));
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
        let urls = setup.urls_for(0);
        let first = 60_000_000u64 + 1_000_000 * workers as u64 + epoch_ms() % 1_000_000 * 1000;
        std::thread::spawn(move || -> Result<(), String> {
            let board = Board::connect(&urls, None).map_err(|e| e.to_string())?;
            let mut n = first;
            while !stop.load(Ordering::Relaxed) {
                let pending = board.status().map_err(|e| e.to_string())?.pending;
                if pending < 2 * FEED {
                    board
                        .add_plan(plan_of(FEED, &mut n))
                        .map_err(|e| e.to_string())?;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    let mut per_worker = Vec::new();
    let mut empty = 0;
    let mut failed = None;
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            failed.get_or_insert(format!("a worker failed: {text}"));
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
    feeder.join().map_err(|_| "feeder panicked")??;
    if let Some(f) = failed {
        return Err(f.into());
    }
    Ok(Run {
        setup: setup.name,
        workers,
        window: window as f64,
        cycles: per_worker.iter().sum(),
        empty,
        per_worker,
    })
}

/// A worker: `AGENTVINE_BENCH_STORES_WORKER=<urls>|<worker-id>|<seconds>|<start-epoch-ms>`.
/// Reads the settings once (connecting), waits for the start instant, claims and completes
/// until the window is over and prints `cycles=N empty=M`.
fn worker_main(spec: &str) -> R<()> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [urls, me, secs, start_at] = parts[..] else {
        return Err(format!("bad worker spec {spec:?}").into());
    };
    let (secs, start_at): (u64, u64) = (secs.parse()?, start_at.parse()?);
    let board = Board::connect(urls, None)?;
    board.settings()?;
    let now = epoch_ms();
    if start_at > now {
        std::thread::sleep(Duration::from_millis(start_at - now));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cycles, mut empty) = (0u64, 0u64);
    while Instant::now() < deadline {
        match board.claim(me)? {
            Some(c) => {
                board.complete(c.task.id, me, Some(result_of(c.task.id)))?;
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

fn rates(runs: &[Run], setup: &str, n: usize) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.setup == setup && r.workers == n)
        .map(Run::rate)
        .collect()
}

fn report_throughput(setups: &[Setup], runs: &[Run], window: u64) {
    println!();
    println!(
        "Throughput: claim+complete cycles/s of remote worker processes (Board::connect), {window} s windows, one per round"
    );
    println!(
        "{:>10} {:>8} {:>20} {:>9} {:>10} {:>20} {:>7}",
        "store",
        "workers",
        "cycles/s per round",
        "median",
        "ms/cycle",
        "per worker min-max",
        "empty"
    );
    for s in setups {
        for &n in &WORKER_COUNTS {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.setup == s.name && r.workers == n)
                .collect();
            let r = rates(runs, s.name, n);
            let median = pct(&r, 0.5);
            let per_worker = rs.iter().flat_map(|r| r.per_worker.iter().copied());
            println!(
                "{:>10} {:>8} {:>20} {:>9.0} {:>10.2} {:>20} {:>7}",
                s.name,
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
                rs.iter().map(|r| r.empty).sum::<u64>(),
            );
        }
    }
    let (a, c) = (rates(runs, "(a) file", 16), rates(runs, "(c) pg x2", 16));
    if !c.is_empty() {
        let (a, c) = (pct(&a, 0.5), pct(&c, 0.5));
        println!(
            "   target: (c) two PostgreSQL-backed servers >= (a) one file-backed at 16 workers: {c:.0} vs {a:.0} cycles/s = {:.2}x: {}",
            c / a,
            met(c >= a)
        );
    }
}

fn report_latency(m: &Latency) {
    println!();
    println!(
        "Claim latency: one long-lived client per store, interleaved with a bare claim statement and GET /test, {} rounds, us",
        m.bare.len()
    );
    println!("{:>40} {:>8} {:>8}", "", "p50", "p99");
    for (name, v) in &m.claims {
        println!(
            "{:>40} {:>8.0} {:>8.0}",
            format!("claim through {name}"),
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    let (bare, rtt) = (pct(&m.bare, 0.5), pct(&m.round_trip, 0.5));
    println!(
        "{:>40} {:>8.0} {:>8.0}",
        "bare SKIP LOCKED claim statement",
        bare,
        pct(&m.bare, 0.99)
    );
    println!(
        "{:>40} {:>8.0} {:>8.0}",
        "GET /test (bare HTTP round trip)",
        rtt,
        pct(&m.round_trip, 0.99)
    );
    if !m.direct.is_empty() {
        println!(
            "{:>40} {:>8.0} {:>8.0}",
            "claim through the PostgreSQL store",
            pct(&m.direct, 0.5),
            pct(&m.direct, 0.99)
        );
        let store = pct(&m.direct, 0.5);
        println!(
            "   target: claim p50 through the PostgreSQL store (in process) <= 2x the bare statement: {store:.0} us = {:.2}x {bare:.0} us: {}",
            store / bare,
            met(store <= 2.0 * bare)
        );
    }
    if !m.direct_warm.is_empty() {
        println!(
            "Back to back, {} claims each (every cycle right after the last), us",
            m.direct_warm.len()
        );
        for (name, v) in [
            ("claim through the PostgreSQL store", &m.direct_warm),
            ("bare SKIP LOCKED claim statement", &m.bare_warm),
        ] {
            println!("{name:>40} {:>8.0} {:>8.0}", pct(v, 0.5), pct(v, 0.99));
        }
        let (store, bare) = (pct(&m.direct_warm, 0.5), pct(&m.bare_warm, 0.5));
        println!(
            "   back to back: the store {store:.0} us = {:.2}x the bare statement {bare:.0} us",
            store / bare
        );
    }
    if let Some((_, pg)) = m.claims.iter().find(|(n, _)| *n == "(b) pg") {
        let through = pct(pg, 0.5);
        println!(
            "   through (b) vine serve: {through:.0} us = {:.2}x the bare statement ({:.2}x less one HTTP round trip)",
            through / bare,
            (through - rtt) / bare
        );
    }
}
