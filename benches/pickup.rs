//! Benchmark of work pickup: how long a task added to an idle board takes to reach a worker
//! waiting in its Stop hook, and how many HTTP requests one hook decision costs on a server.
//!
//! Pickup latency: a worker waits in `vine hook stop` (its turn ended, nothing to do); `vine
//! add` adds a task; measured is the time from `vine add` returning to the hook's hand-over
//! (its `{"decision":"block",...}` line) arriving on its stdout. Each sample is a fresh hook
//! process that waits a random 200–450 ms before the add, then completes the task it was
//! handed. On a local board (woken by the file-system notification of the queue's rename) and
//! through `vine serve` on 127.0.0.1 (the server holds the hook's one request open and answers
//! when the writer commits the add). Requests per decision are counted by a proxy in front of
//! the server, for each kind of decision (hand-over at once, hand-over after a wait, reminder,
//! "no task yet" after the wait).
//!
//! Run with `cargo bench --bench pickup` (about a minute and a half). `AGENTVINE_PICKUP_SAMPLES`
//! sets the samples per board (default 200). Only `vine` processes are used, as a worker and a
//! coordinator would run them. See BENCHMARKS.md ("Work pickup") and docs/pickup.md.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

type R<T> = Result<T, Box<dyn Error>>;

const VINE: &str = env!("CARGO_BIN_EXE_vine");

/// The Stop hook's input (only the session id matters).
const STOP_INPUT: &str =
    r#"{"session_id":"pickup-bench","hook_event_name":"Stop","stop_hook_active":true}"#;

/// Where the board is: a directory or a server URL.
#[derive(Clone)]
enum Place {
    Dir(String),
    Url(String),
}

impl Place {
    fn args(&self) -> [&str; 2] {
        match self {
            Place::Dir(d) => ["--dir", d],
            Place::Url(u) => ["--url", u],
        }
    }
}

/// `vine ARGS` on the board; its JSON output.
fn vine(place: &Place, args: &[&str]) -> R<Value> {
    let out = Command::new(VINE)
        .args(place.args())
        .arg("--json")
        .args(args)
        .env_remove("VINE_DIR")
        .env_remove("VINE_URL")
        .env_remove("VINE_WORKER")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "vine {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A `vine hook stop` process waiting for work for worker `w1`; its stdout line arrives on the
/// receiver, with the time it arrived.
struct Waiting {
    child: Child,
    line: mpsc::Receiver<(Instant, String)>,
}

fn start_hook(place: &Place, runtime: &Path, wait: &str) -> R<Waiting> {
    let mut child = Command::new(VINE)
        .args(place.args())
        .args(["hook", "stop"])
        .env("VINE_WORKER", "w1")
        .env("VINE_HOOK_WAIT", wait)
        .env("VINE_RUNTIME_DIR", runtime)
        .env_remove("VINE_DIR")
        .env_remove("VINE_URL")
        .env_remove("CLAUDE_PROJECT_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(STOP_INPUT.as_bytes())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send((Instant::now(), line));
    });
    Ok(Waiting { child, line: rx })
}

/// The task id a hand-over names.
fn handed_over(line: &str) -> R<u64> {
    let v: Value = serde_json::from_str(line.trim())?;
    let reason = v["reason"].as_str().ok_or("no reason")?;
    let id = reason
        .strip_prefix("Task ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a hand-over: {reason}"))?;
    Ok(id)
}

/// One pickup: hook waiting, task added, hand-over received; the task is then completed.
fn pickup(place: &Place, runtime: &Path) -> R<Duration> {
    let mut hook = start_hook(place, runtime, "30s")?;
    std::thread::sleep(Duration::from_millis(200 + fastrand::u64(..250)));
    let added = vine(place, &["add", "pickup", "--instructions", "Nothing."])?;
    let returned = Instant::now();
    let id = added["tasks"][0]["id"].as_u64().ok_or("no id")?;
    let (at, line) = hook.line.recv_timeout(Duration::from_secs(60))?;
    hook.child.wait()?;
    let got = handed_over(&line)?;
    if got != id {
        return Err(format!("handed task {got}, added {id}").into());
    }
    vine(
        place,
        &[
            "complete",
            &id.to_string(),
            "--worker",
            "w1",
            "--result",
            "ok",
        ],
    )?;
    Ok(at.saturating_duration_since(returned))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `vine serve` for the board in `root`; (process, port).
fn serve(root: &Path) -> R<(Child, u16)> {
    let mut child = Command::new(VINE)
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .env_remove("VINE_API_KEY")
        .env_remove("VPS_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no address in {line:?}"))?;
    Ok((child, port))
}

/// A proxy in front of a server that records each request line it passes on (one request per
/// connection).
fn counting_proxy(upstream: u16) -> R<(u16, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = relay(client, upstream, &log);
            });
        }
    });
    Ok((port, seen))
}

fn relay(client: TcpStream, upstream: u16, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut from = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0;
    loop {
        let mut line = Vec::new();
        if from.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line == b"\r\n" {
            break;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = text.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if !text.starts_with("connection:") {
            head.extend_from_slice(&line);
        }
    }
    let mut body = vec![0; length];
    from.read_exact(&mut body)?;
    let request_line = String::from_utf8_lossy(&head)
        .split(" HTTP/")
        .next()
        .unwrap_or_default()
        .to_string();
    if let Ok(mut l) = log.lock() {
        l.push(request_line);
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(&head)?;
    server.write_all(b"Connection: close\r\n\r\n")?;
    server.write_all(&body)?;
    let mut reply = Vec::new();
    server.read_to_end(&mut reply)?;
    let mut to = client;
    to.write_all(&reply)
}

/// Requests one hook decision of each kind makes through the proxy.
fn requests_per_decision(
    url: &Place,
    direct: &Place,
    runtime: &Path,
    seen: &Mutex<Vec<String>>,
) -> R<Vec<(String, usize)>> {
    let count = || seen.lock().map(|l| l.len()).unwrap_or(0);
    let mut out = Vec::new();
    let mut decide = |what: &str, wait: &str, add_after: Option<Duration>| -> R<String> {
        let before = count();
        let mut hook = start_hook(url, runtime, wait)?;
        if let Some(d) = add_after {
            std::thread::sleep(d);
            vine(direct, &["add", "counted", "--instructions", "Nothing."])?;
        }
        let (_, line) = hook.line.recv_timeout(Duration::from_secs(60))?;
        hook.child.wait()?;
        out.push((what.to_string(), count() - before));
        Ok(line)
    };
    vine(direct, &["add", "counted", "--instructions", "Nothing."])?;
    let line = decide("hand-over (a task waiting)", "30s", None)?;
    let id = handed_over(&line)?.to_string();
    decide("reminder (the worker holds a task)", "30s", None)?;
    vine(direct, &["complete", &id, "--worker", "w1"])?;
    let line = decide(
        "hand-over after a wait",
        "30s",
        Some(Duration::from_millis(500)),
    )?;
    let id = handed_over(&line)?.to_string();
    vine(direct, &["complete", &id, "--worker", "w1"])?;
    decide("no task yet (after a 2 s wait)", "2s", None)?;
    Ok(out)
}

fn main() -> R<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let samples: usize = std::env::var("AGENTVINE_PICKUP_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir()?;
    let runtime = tmp.path().join("runtime");

    let local_dir = tmp.path().join("local");
    Command::new(VINE).arg("init").arg(&local_dir).output()?;
    let local = Place::Dir(local_dir.display().to_string());

    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served)?;
    let (mut server, port) = serve(&served)?;
    let remote = Place::Url(format!("http://127.0.0.1:{port}"));

    println!("Work pickup: from `vine add` returning to the hand-over reaching `vine hook stop`");
    println!("({samples} samples per board; each a fresh hook process waiting 200-450 ms)\n");
    println!(
        "| board | samples | p50 ms | p90 ms | p99 ms | max ms | target |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for (name, place) in [("local", &local), ("vine serve, loopback", &remote)] {
        vine(place, &["register", "--worker", "w1"])?;
        // Warm-up: page cache, server connections.
        for _ in 0..3 {
            pickup(place, &runtime)?;
        }
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            lat.push(pickup(place, &runtime)?);
        }
        lat.sort();
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        let met = ms(p50) <= 50.0 && ms(p99) <= 250.0;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | p50 ≤ 50, p99 ≤ 250: {} |",
            lat.len(),
            ms(p50),
            ms(percentile(&lat, 0.9)),
            ms(p99),
            ms(lat[lat.len() - 1]),
            if met { "met" } else { "MISSED" }
        );
    }

    let (proxy, seen) = counting_proxy(port)?;
    let through = Place::Url(format!("http://127.0.0.1:{proxy}"));
    println!("\nHTTP requests per Stop-hook decision (through a counting proxy):\n");
    println!("| decision | requests |\n|---|---:|");
    for (what, n) in requests_per_decision(&through, &remote, &runtime, &seen)? {
        println!("| {what} | {n} |");
    }
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
