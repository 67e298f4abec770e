//! The control room under load, against a real `vine serve` on loopback:
//!
//! 1. the server time to render the overview (`GET /`) of a board with 100,000 archived tasks
//!    (and a log of 2,000 answered questions) and 1,000 live tasks, after the first request
//!    (which reads the history once) — target: at most 50 ms; the `metrics` read and
//!    `GET /metrics` are timed beside it;
//! 2. the claim throughput (claim + complete cycles per second) of 16 remote worker processes
//!    with and without 50 open dashboards (SSE connections to `/events`, each read to the
//!    end of every event) — target: at most 5 % less with them. Rounds alternate without and
//!    with, so a slow period of the shared machine does not fall on one side only; the verdict
//!    is the median of the rounds' own changes (each loaded run against the run just before).
//!
//! Run with `cargo bench --bench control_room` (about two minutes). Without `--bench`
//! (`cargo test --benches`) every section runs once on small sizes.
//!
//! When `AGENTVINE_BENCH_WORKER` is set, this binary is a worker process of the throughput
//! test instead (see [`worker_main`]).

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentvine::task::{Priority, Task, TaskStatus};
use agentvine::time::{add_secs, format_timestamp};
use agentvine::{Board, Message, MessageKind};
use common::{POOL, R, loadavg, machine, met, pct, result_of, shared_task, vine_binary};
use serde_json::json;

/// Archived tasks of the overview's board.
const HISTORY: usize = 100_000;
/// Live tasks of the overview's board (a tenth of them claimed).
const LIVE: usize = 1_000;
/// Answered questions in its log.
const QUESTIONS: usize = 2_000;
/// Timed overview requests (after the first).
const RENDERS: usize = 60;
/// Worker processes of the throughput test.
const WORKERS: usize = 16;
/// Open dashboards (SSE connections) in the loaded rounds.
const DASHBOARDS: usize = 50;
/// Rounds of the throughput test (each: one run without dashboards, one with).
const ROUNDS: usize = 10;
/// Seconds of each throughput run.
const WINDOW_SECS: u64 = 4;
/// The environment variable that turns this binary into a throughput worker.
const WORKER_ENV: &str = "AGENTVINE_BENCH_WORKER";

/// Targets.
const RENDER_TARGET_MS: f64 = 50.0;
const SSE_TARGET_PCT: f64 = 5.0;

fn main() -> R<()> {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return worker_main(&spec);
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let total = Instant::now();
    let at = || format!("[{:.0} s]", total.elapsed().as_secs_f64());
    let root = tempfile::Builder::new()
        .prefix("agentvine-bench-")
        .tempdir_in("/tmp")?;
    let machine = machine(root.path());
    let vine = vine_binary()?;
    let (history, live, questions, renders) = if quick {
        (1_000, 50, 20, 3)
    } else {
        (HISTORY, LIVE, QUESTIONS, RENDERS)
    };

    // 1. The overview of a big board.
    let big = root.path().join("board-big");
    let t = Instant::now();
    build_big_board(&big, history, live, questions)?;
    eprintln!(
        "{} board with {history} archived and {live} live tasks built in {:.1} s",
        at(),
        t.elapsed().as_secs_f64()
    );
    let server = Server::start(&vine, &big)?;
    let first = time_get(&server.addr, "/")?;
    eprintln!("{} first overview: {:.1} ms", at(), first.0);
    let mut overview = Vec::new();
    let mut metrics_op = Vec::new();
    let mut metrics_text = Vec::new();
    for _ in 0..renders {
        overview.push(time_get(&server.addr, "/")?.0);
        metrics_op.push(time_post(
            &server.addr,
            "/v1/op",
            r#"{"op":{"op":"metrics"}}"#,
        )?);
        metrics_text.push(time_get(&server.addr, "/metrics")?.0);
    }
    let page_bytes = time_get(&server.addr, "/")?.1;
    drop(server);
    eprintln!("{} overview timed", at());

    // 2. Claim throughput with and without open dashboards.
    let tp = root.path().join("board-throughput");
    Board::init(&tp)?;
    fs::write(
        tp.join(common::SHARED_INSTRUCTIONS),
        common::instructions_text(0),
    )?;
    let server = Server::start(&vine, &tp)?;
    let (workers, dashboards, rounds, window) = if quick {
        (2, 2, 1, 1)
    } else {
        (WORKERS, DASHBOARDS, ROUNDS, WINDOW_SECS)
    };
    let mut plain = Vec::new();
    let mut loaded = Vec::new();
    let mut events_seen = 0;
    for round in 1..=rounds {
        for with in [false, true] {
            let sse = if with {
                Some(Dashboards::open(&server.addr, dashboards)?)
            } else {
                None
            };
            let rate = measure_throughput(&tp, &server.url, workers, window)?;
            if let Some(d) = sse {
                let (open, events) = d.close();
                if open != dashboards {
                    return Err(
                        format!("only {open} of {dashboards} dashboards stayed open").into(),
                    );
                }
                events_seen += events;
            }
            eprintln!(
                "{} round {round}, {} dashboards: {rate:.0} cycles/s",
                at(),
                if with { dashboards } else { 0 }
            );
            if with {
                loaded.push(rate)
            } else {
                plain.push(rate)
            }
        }
    }
    drop(server);

    let p50 = pct(&overview, 0.5);
    let p90 = pct(&overview, 0.9);
    let plain_median = pct(&plain, 0.5);
    let loaded_median = pct(&loaded, 0.5);
    let less = (plain_median - loaded_median) / plain_median * 100.0;
    // Each round's own change (its run with dashboards against its run without, seconds
    // apart): steadier than the medians when the machine is shared.
    let per_round: Vec<f64> = plain
        .iter()
        .zip(&loaded)
        .map(|(p, l)| (p - l) / p * 100.0)
        .collect();
    let paired = pct(&per_round, 0.5);
    println!();
    println!("agentvine control room benchmark");
    for m in &machine {
        println!("  {m}");
    }
    println!("  vine binary: {}", vine.display());
    println!("  load average at end: {}", loadavg());
    println!();
    println!(
        "Overview (GET /) of a board with {history} archived tasks, {live} live tasks, {questions} answered questions; {} bytes of HTML",
        page_bytes
    );
    println!(
        "  first request (reads the history): {first:.1} ms",
        first = first.0
    );
    println!(
        "  next {renders}: median {p50:.1} ms, p90 {p90:.1} ms, max {:.1} ms   target <= {RENDER_TARGET_MS} ms: {}",
        pct(&overview, 1.0),
        met(p90 <= RENDER_TARGET_MS)
    );
    println!(
        "  beside it: the metrics read (POST /v1/op) median {:.1} ms, GET /metrics median {:.1} ms",
        pct(&metrics_op, 0.5),
        pct(&metrics_text, 0.5)
    );
    println!();
    println!(
        "Claim throughput of {workers} remote worker processes (claim + complete cycles/s, {window} s runs)"
    );
    println!(
        "  without dashboards: {} (median {plain_median:.0})",
        list(&plain)
    );
    println!(
        "  with {dashboards} open SSE connections to /events: {} (median {loaded_median:.0}; {events_seen} events delivered)",
        list(&loaded)
    );
    println!(
        "  each round's change with dashboards: {} % fewer",
        per_round
            .iter()
            .map(|r| format!("{r:+.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  with dashboards: {less:+.1} % fewer cycles/s (medians); median of the rounds' changes {paired:+.1} %   target <= {SSE_TARGET_PCT} %: {}",
        met(paired <= SSE_TARGET_PCT)
    );
    println!();
    println!("total bench time: {:.0} s", total.elapsed().as_secs_f64());
    Ok(())
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes a board whose archive holds `history` completed tasks spread over the last 7 days
/// (every tenth took two attempts), whose log holds `questions` answered questions, and whose
/// queue holds `live` tasks added through the board (a tenth of them claimed by 8 workers).
fn build_big_board(dir: &Path, history: usize, live: usize, questions: usize) -> R<()> {
    let board = Board::init(dir)?;
    let now = agentvine::time::now();
    let start = add_secs(now, 0) - chrono::TimeDelta::days(7);
    let span = 7 * 24 * 3600 - 3600;
    let mut out = BufWriter::new(File::create(dir.join("task-archive.jsonl"))?);
    let base_id = 1_700_000_000_000u64;
    for i in 0..history {
        let added = add_secs(start, (i as u64 * span) / history as u64);
        let mut t = Task::new(
            base_id + i as u64,
            format!("Implement module {i}: the endpoint, its tests and its docs"),
            added,
        );
        let worker = format!("worker-{}", i % 8 + 1);
        t.instruction_file = Some(common::SHARED_INSTRUCTIONS.into());
        t.context_files = vec!["docs/api-spec.md".into(), format!("src/module_{i}/mod.rs")];
        t.status = TaskStatus::Completed;
        t.priority = [Priority::Normal, Priority::High, Priority::Low][i % 3];
        t.first_claimed_at = Some(add_secs(added, 5 + (i % 120) as u64));
        t.attempts = if i % 10 == 0 { 2 } else { 1 };
        let claimed = add_secs(added, 30 + (i % 600) as u64);
        t.claimed_at = Some(claimed);
        t.claimed_by = Some(worker.clone());
        t.completed_by = Some(worker);
        t.completed_at = Some(add_secs(claimed, 60 + (i % 1800) as u64));
        t.result = Some(result_of(t.id));
        let line = json!({
            "archived_at": format_timestamp(&add_secs(claimed, 3600)),
            "totals": {"completed": i + 1, "cancelled": 0, "max_id": t.id},
            "task": t,
        });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    let mut log = BufWriter::new(File::create(dir.join("agent-comms.jsonl"))?);
    for q in 0..questions {
        let asked = add_secs(start, (q as u64 * span) / questions.max(1) as u64);
        let mut m = Message::new(MessageKind::Question, "worker-1", "Which port?", asked);
        m.seq = Some(2 * q as u64 + 1);
        serde_json::to_writer(&mut log, &m)?;
        log.write_all(b"\n")?;
        let mut a = Message::new(
            MessageKind::Answer,
            "coordinator",
            "5000",
            add_secs(asked, 30 + (q % 900) as u64),
        );
        a.seq = Some(2 * q as u64 + 2);
        a.reply_to = m.seq;
        serde_json::to_writer(&mut log, &a)?;
        log.write_all(b"\n")?;
    }
    log.flush()?;
    drop(log);
    fs::write(
        dir.join(common::SHARED_INSTRUCTIONS),
        common::instructions_text(0),
    )?;
    let mut n = 0u64;
    while (n as usize) < live {
        let k = POOL.min(live - n as usize);
        let plan = (0..k)
            .map(|_| {
                n += 1;
                shared_task(n)
            })
            .collect();
        board.add_plan(plan)?;
    }
    for c in 0..live / 10 {
        board.claim(&format!("worker-{}", c % 8 + 1))?;
    }
    Ok(())
}

/// A `vine serve` without a key on a loopback port.
struct Server {
    child: Child,
    url: String,
    addr: String,
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Server {
    fn start(vine: &Path, root: &Path) -> R<Server> {
        let mut child = Command::new(vine)
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
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("vine serve printed {line:?}"))?
            .to_string();
        let addr = url
            .strip_prefix("http://")
            .ok_or("not an http URL")?
            .to_string();
        Ok(Server {
            child,
            url,
            addr,
            _stdout: Some(out),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a new connection; the milliseconds until the whole reply was
/// read, and the reply's body length. Fails unless the status is 200.
fn request(addr: &str, head: &str, body: &str) -> R<(f64, usize)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&reply);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("{head}: {}", text.chars().take(300).collect::<String>()).into());
    }
    let body_len = text.find("\r\n\r\n").map_or(0, |i| reply.len() - i - 4);
    Ok((ms, body_len))
}

fn time_get(addr: &str, path: &str) -> R<(f64, usize)> {
    request(addr, &format!("GET {path} HTTP/1.1"), "")
}

fn time_post(addr: &str, path: &str, body: &str) -> R<f64> {
    Ok(request(
        addr,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json"),
        body,
    )?
    .0)
}

/// Open dashboards: SSE connections to `/events`, each read by a thread of its own.
struct Dashboards {
    streams: Vec<TcpStream>,
    threads: Vec<std::thread::JoinHandle<()>>,
    events: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Dashboards {
    fn open(addr: &str, n: usize) -> R<Dashboards> {
        let events = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut streams = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let mut s = TcpStream::connect(addr)?;
            write!(
                s,
                "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )?;
            let mut r = BufReader::new(s.try_clone()?);
            let mut status = String::new();
            r.read_line(&mut status)?;
            if !status.starts_with("HTTP/1.1 200") {
                return Err(format!("/events answered {status:?}").into());
            }
            open.fetch_add(1, Ordering::Relaxed);
            let (events, open, stop) = (events.clone(), open.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if line.starts_with("data:") || line.starts_with("event:") {
                                events.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                if !stop.load(Ordering::Relaxed) {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }));
            streams.push(s);
        }
        Ok(Dashboards {
            streams,
            threads,
            events,
            open,
            stop,
        })
    }

    /// Closes them: how many were still open, and the event lines they read.
    fn close(self) -> (usize, u64) {
        let open = self.open.load(Ordering::Relaxed) as usize;
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.streams {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads {
            let _ = t.join();
        }
        (open, self.events.load(Ordering::Relaxed))
    }
}

/// Runs `workers` worker processes against the server at `url` for `window` seconds, with a
/// feeder in this process keeping 50 to 100 tasks pending (as `benches/board.rs` did before
/// #12); returns the cycles per second.
fn measure_throughput(dir: &Path, url: &str, workers: usize, window: u64) -> R<f64> {
    let exe = std::env::current_exe()?;
    let start_at = epoch_ms() + 400 + 20 * workers as u64;
    let mut children = Vec::new();
    for w in 1..=workers {
        children.push(
            Command::new(&exe)
                .env(WORKER_ENV, format!("{url}:cr-w{w}:{window}:{start_at}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let dir = dir.to_path_buf();
        let url = url.to_string();
        std::thread::spawn(move || -> Result<(), String> {
            let board = Board::connect(&url, None).map_err(|e| e.to_string())?;
            let files = Board::open(&dir).map_err(|e| e.to_string())?;
            let mut n = epoch_ms();
            while !stop.load(Ordering::Relaxed) {
                if files.status().map_err(|e| e.to_string())?.pending < POOL {
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
            Ok(())
        })
    };
    let mut cycles = 0u64;
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("worker failed: {text}").into());
        }
        cycles += text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("cycles="))
            .ok_or_else(|| format!("worker printed {text:?}"))?
            .parse::<u64>()?;
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().map_err(|_| "feeder panicked")??;
    Ok(cycles as f64 / window as f64)
}

/// A throughput worker: `AGENTVINE_BENCH_WORKER=<url>:<worker-id>:<seconds>:<start-epoch-ms>`.
/// Claims and completes from the common start instant until the window is over; prints
/// `cycles=N`.
fn worker_main(spec: &str) -> R<()> {
    let mut parts = spec.rsplitn(4, ':');
    let start_at: u64 = parts.next().ok_or("bad spec")?.parse()?;
    let secs: u64 = parts.next().ok_or("bad spec")?.parse()?;
    let me = parts.next().ok_or("bad spec")?.to_string();
    let board = Board::connect(parts.next().ok_or("bad spec")?, None)?;
    board.settings()?;
    let now = epoch_ms();
    if start_at > now {
        std::thread::sleep(Duration::from_millis(start_at - now));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut cycles = 0u64;
    while Instant::now() < deadline {
        match board.claim(&me)? {
            Some(c) => {
                board.complete(c.task.id, &me, Some(result_of(c.task.id)))?;
                if Instant::now() <= deadline {
                    cycles += 1;
                }
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    println!("cycles={cycles}");
    Ok(())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
