//! Integration tests of remote boards: real `vine serve` processes on 127.0.0.1 (a free port,
//! killed at the end of each test) and real `vine` clients reaching them with `--url` or
//! `$VINE_URL`.
//!
//! 1. Every board command gives the same output and exit code remotely as locally (`--json`
//!    after masking ids, timestamps and request keys; the human text; the error cases).
//! 2. Eight remote workers race over a thousand tasks through one server.
//! 3. The server is SIGKILLed mid-load and restarted on the same port: nothing lost or doubled.
//! 4. A proxy in front of the server that drops every third `/v1/op` reply after the server
//!    applied the op: retries apply nothing twice (under load, and for each kind of write made
//!    to lose its reply on purpose).
//! 5. The `/execute` transport against a server with only the original four endpoints, and the
//!    `vine vps read|find|grep` fallbacks there.
//! 6. `vine vps ...` and the exit codes of the remote failures (6 unreachable, 7 key, 8 path).
//! 7. The library: a board on a server (either transport) fails with the very `Error` (variant
//!    and message) the same board opened locally fails with.
//!
//! `$VINE_SHOW_STEPS=1 cargo test --test remote every_board -- --nocapture` prints what the
//! comparison of test 1 sees at each step.

#![cfg(unix)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use support::{
    Files, Run, Server, VINE, assert_fails, assert_json_fails, assert_log_sane, ids_of, isolated,
    jsonl_whole, one_object, run,
};

// ---------------------------------------------------------------------------------------------
// Running `vine`.

/// `vine --url URL ARGS` with `env`.
fn remote(url: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
    run(isolated(env).arg("--url").arg(url).args(args))
}

/// `vine --url URL --json ARGS`, insisting on exit 0; returns the JSON.
fn remote_ok(url: &str, args: &[&str]) -> Value {
    let r = remote(url, &[], &with_json(args));
    assert_eq!(r.code, 0, "`vine {}` against {url}: {r:?}", args.join(" "));
    let v = r.json();
    assert_eq!(v["ok"], json!(true), "{v}");
    v
}

fn with_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--json"];
    v.extend_from_slice(args);
    v
}

// ---------------------------------------------------------------------------------------------
// Servers.

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Masking what legitimately differs between two boards.

/// Matches `pat` at the start of `s`: `9` is any digit, every other byte itself. Returns the
/// matched length, including an optional `.digits` fraction before a final `Z` of `pat`.
fn match_at(s: &[u8], pat: &[u8]) -> Option<usize> {
    let (body, z) = match pat.split_last() {
        Some((b'Z', body)) => (body, true),
        _ => (pat, false),
    };
    if s.len() < body.len() {
        return None;
    }
    for (c, p) in s.iter().zip(body) {
        let ok = if *p == b'9' {
            c.is_ascii_digit()
        } else {
            c == p
        };
        if !ok {
            return None;
        }
    }
    let mut n = body.len();
    if !z {
        return Some(n);
    }
    if s.get(n) == Some(&b'.') {
        let digits = s[n + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            n += 1 + digits;
        }
    }
    (s.get(n) == Some(&b'Z')).then_some(n + 1)
}

/// Replaces timestamps (`2026-11-21T08:59:40.924Z`, and the compact `20261121T090138.329Z` of
/// repair's file names) with `<ts>`, and the seconds of `idle for Ns` with `<n>`.
fn mask_times(s: &str) -> String {
    const PATTERNS: &[&[u8]] = &[b"9999-99-99T99:99:99Z", b"99999999T999999Z"];
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_digit();
        if boundary && let Some(n) = PATTERNS.iter().find_map(|p| match_at(&b[i..], p)) {
            out.extend_from_slice(b"<ts>");
            i += n;
            continue;
        }
        // A duration counted from the clock ("3m", "2m59s", "1h0m"): the two sides run a
        // step at different instants, so it may differ by a second.
        let starts = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if starts && let Some(n) = duration_at(&b[i..]) {
            out.extend_from_slice(b"<dur>");
            i += n;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The length of a duration as `vine` writes them (`90s`, `3m`, `2m59s`, `1h0m`) at the start
/// of `b`, ending where a word would.
fn duration_at(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut parts = 0;
    loop {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || !matches!(b.get(i + digits), Some(b'd' | b'h' | b'm' | b's')) {
            break;
        }
        i += digits + 1;
        parts += 1;
    }
    let ends = b.get(i).is_none_or(|c| !c.is_ascii_alphanumeric());
    (parts > 0 && ends).then_some(i)
}

/// How one board's volatile values map to stable names.
struct Masks {
    /// Task ids in creation order: the k-th becomes `T<k>`.
    ids: Vec<u64>,
    /// Strings that name the board (its paths, its URL): become `<board>`.
    names: Vec<String>,
}

impl Masks {
    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        let mut names = self.names.clone();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for n in &names {
            s = s.replace(n.as_str(), "<board>");
        }
        for (k, id) in self.ids.iter().enumerate() {
            s = s.replace(&id.to_string(), &format!("T{k}"));
        }
        mask_times(&s)
    }

    /// Masks a `--json` reply: ids, timestamps and board names; request keys and adds' keys
    /// are dropped (only keyed remote writes carry them).
    fn json(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    if k == "request_key" || k == "added_key" || k == "key" {
                        continue;
                    }
                    out.insert(k.clone(), self.json(v));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.json(v)).collect()),
            Value::String(s) => Value::String(self.text(s)),
            Value::Number(n) => match n
                .as_u64()
                .and_then(|n| self.ids.iter().position(|i| *i == n))
            {
                Some(k) => Value::String(format!("T{k}")),
                None => v.clone(),
            },
            other => other.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A local board and a server's board driven by the same script.

/// Where a board is.
enum Target {
    /// `--dir DIR`.
    Local(PathBuf),
    /// `--url URL` with extra client environment; the server is kept alive here.
    Remote(Server, Vec<(String, String)>),
}

/// One side of a comparison.
struct Side {
    name: &'static str,
    target: Target,
    /// The board's files on disk (the local dir, or the server's root).
    dir: PathBuf,
    /// Task ids in creation order.
    ids: Vec<u64>,
}

impl Side {
    fn local(name: &'static str, dir: PathBuf) -> Side {
        let r = run(isolated(&[]).arg("init").arg(&dir));
        assert_eq!(r.code, 0, "vine init: {r:?}");
        let dir = dir.canonicalize().unwrap();
        Side {
            name,
            target: Target::Local(dir.clone()),
            dir,
            ids: Vec::new(),
        }
    }

    /// A server started on an empty directory. `vine serve` creates the board itself; on an
    /// original server (`--original-only`) it is created with `vine --url URL init`.
    fn remote(name: &'static str, root: PathBuf, serve: &[&str], env: &[(&str, &str)]) -> Side {
        let server = Server::start(&root, serve, &[]);
        if serve.contains(&"--original-only") {
            let r = remote(&server.url, env, &["init"]);
            assert_eq!(r.code, 0, "vine --url {} init: {r:?}", server.url);
        }
        let dir = server.root.clone();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Side {
            name,
            target: Target::Remote(server, env),
            dir,
            ids: Vec::new(),
        }
    }

    fn cmd(&self) -> Command {
        match &self.target {
            Target::Local(d) => {
                let mut c = isolated(&[]);
                c.arg("--dir").arg(d);
                c
            }
            Target::Remote(s, env) => {
                let mut c = isolated(&[]);
                for (k, v) in env {
                    c.env(k, v);
                }
                c.arg("--url").arg(&s.url);
                c
            }
        }
    }

    fn run(&self, args: &[String]) -> Run {
        run(self.cmd().args(args))
    }

    /// A read for the test's own bookkeeping (not compared).
    fn read_json(&self, args: &[&str]) -> Value {
        let r = run(self.cmd().arg("--json").args(args));
        assert_eq!(r.code, 0, "{}: vine {args:?}: {r:?}", self.name);
        r.json()
    }

    /// Learns the ids of tasks added since the last call (ids grow with creation time).
    fn learn_ids(&mut self) {
        let r = run(self.cmd().args(["--json", "tasks", "--all"]));
        if r.code != 0 {
            // A damaged board: the add failed too, nothing new to learn.
            return;
        }
        let v = r.json();
        let mut all = ids_of(&v["tasks"]);
        all.sort_unstable();
        let known: BTreeSet<u64> = self.ids.iter().copied().collect();
        self.ids
            .extend(all.into_iter().filter(|id| !known.contains(id)));
    }

    fn masks(&self) -> Masks {
        let mut names = vec![self.dir.display().to_string()];
        if let Target::Remote(s, _) = &self.target {
            names.push(s.url.clone());
        }
        Masks {
            ids: self.ids.clone(),
            names,
        }
    }

    /// The args of a script step with `{tK}` and `{scratch}` filled in for this board.
    fn fill(&self, args: &[&str], scratch: &Path) -> Vec<String> {
        args.iter()
            .map(|a| {
                let mut a = a.replace("{scratch}", &scratch.display().to_string());
                for (k, id) in self.ids.iter().enumerate().rev() {
                    a = a.replace(&format!("{{t{k}}}"), &id.to_string());
                }
                assert!(!a.contains("{t"), "unknown task placeholder in {a:?}");
                a
            })
            .collect()
    }
}

/// What a script does at one step.
enum Step {
    /// Run `vine ARGS` on every board; expect this exit code.
    Run(i32, &'static [&'static str]),
    /// Let time pass (leases run out).
    Sleep(Duration),
    /// Overwrite a board file with garbage on every board (remote: on the server's disk).
    Damage(&'static str),
    /// `vine ask --wait QUESTION ...` on every board, answered by another process.
    AskWait(&'static str, &'static str),
}

/// A pair (or more) of boards compared step by step, in `--json` or text mode.
struct Compare {
    json: bool,
    sides: Vec<Side>,
    scratch: PathBuf,
    diffs: Vec<String>,
    /// Print each step's masked output (set `$VINE_SHOW_STEPS` to see what is compared).
    show: bool,
}

impl Compare {
    fn new(json: bool, sides: Vec<Side>, scratch: &Path) -> Compare {
        Compare {
            json,
            sides,
            scratch: scratch.to_path_buf(),
            diffs: Vec::new(),
            show: std::env::var_os("VINE_SHOW_STEPS").is_some(),
        }
    }

    /// The masked result of one run: exit code, and the JSON or the text streams.
    fn masked(&self, side: &Side, r: &Run) -> Value {
        let m = side.masks();
        if self.json {
            assert!(
                r.stderr.is_empty() || r.code == 0,
                "{}: a --json failure prints its error on stdout only: {r:?}",
                side.name
            );
            json!({"exit": r.code, "json": m.json(&r.json())})
        } else {
            json!({"exit": r.code, "stdout": m.text(&r.stdout), "stderr": m.text(&r.stderr)})
        }
    }

    /// Notes every side that did not exit `code`, and every side whose masked output differs
    /// from the first side's.
    fn record(&mut self, what: &str, outs: Vec<Value>, code: i32) {
        if self.show {
            eprintln!("{what}\n  {}", outs[0]);
        }
        for (side, out) in self.sides.iter().zip(&outs) {
            if out["exit"] != json!(code) {
                self.diffs.push(format!(
                    "{what}: {} exited {}, expected {code}: {out}",
                    side.name, out["exit"]
                ));
            }
        }
        for (side, out) in self.sides.iter().zip(&outs).skip(1) {
            if *out != outs[0] {
                self.diffs.push(format!(
                    "{what}: {} and {} differ\n  {}: {}\n  {}: {}",
                    self.sides[0].name, side.name, self.sides[0].name, outs[0], side.name, out
                ));
            }
        }
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Run(code, args) => {
                let mut runs = Vec::new();
                for side in &self.sides {
                    let mut a = side.fill(args, &self.scratch);
                    if self.json {
                        a.insert(0, "--json".into());
                    }
                    runs.push(side.run(&a));
                }
                if args.first() == Some(&"add") {
                    // The reply names the new tasks: learn their ids before masking it.
                    for side in &mut self.sides {
                        side.learn_ids();
                    }
                    // Remote writes carry a request key, kept as the add's too (masked in the
                    // comparison).
                    for (side, r) in self.sides.iter().zip(&runs) {
                        if self.json && r.code == 0 && matches!(side.target, Target::Remote(..)) {
                            let v = r.json();
                            let tasks = v["tasks"].as_array().unwrap();
                            assert!(
                                tasks.iter().all(|t| t["request_key"].is_string()
                                    && t["added_key"] == t["request_key"]),
                                "{}: an add without request key: {v}",
                                side.name
                            );
                        }
                    }
                }
                let outs = self
                    .sides
                    .iter()
                    .zip(&runs)
                    .map(|(side, r)| self.masked(side, r))
                    .collect();
                self.record(&format!("`vine {}`", args.join(" ")), outs, *code);
            }
            Step::Sleep(d) => thread::sleep(*d),
            Step::Damage(file) => {
                for side in &self.sides {
                    fs::write(side.dir.join(file), b"{ this is not json\n").unwrap();
                }
            }
            Step::AskWait(question, answer) => self.ask_wait(question, answer),
        }
    }

    /// `ask --wait` on every board at once, then each question answered by another process.
    fn ask_wait(&mut self, question: &str, answer: &str) {
        let mut waiting = Vec::new();
        for side in &self.sides {
            let mut c = side.cmd();
            if self.json {
                c.arg("--json");
            }
            c.args([
                "ask",
                question,
                "--as",
                "w1",
                "--wait",
                "--timeout",
                "30s",
                "--poll",
                "1s",
            ]);
            waiting.push(c.spawn().expect("vine ask --wait starts"));
        }
        for side in &self.sides {
            // The question is on the board once `vine questions` lists it.
            let deadline = Instant::now() + Duration::from_secs(20);
            let seq = loop {
                let v = side.read_json(&["questions"]);
                let found = v["questions"].as_array().unwrap().iter().find_map(|q| {
                    let m = &q["question"];
                    (m["message"] == json!(question)).then(|| m["seq"].as_u64().unwrap())
                });
                if let Some(seq) = found {
                    break seq;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: the question never showed: {v}",
                    side.name
                );
                thread::sleep(Duration::from_millis(50));
            };
            let r =
                run(side
                    .cmd()
                    .args(["answer", &seq.to_string(), answer, "--as", "coordinator"]));
            assert_eq!(r.code, 0, "{}: answer: {r:?}", side.name);
        }
        let mut outs = Vec::new();
        for (side, child) in self.sides.iter().zip(waiting) {
            let o = child.wait_with_output().unwrap();
            let r = Run::from(o);
            outs.push(self.masked(side, &r));
        }
        self.record(
            &format!("`vine ask {question:?} --wait` answered {answer:?}"),
            outs,
            0,
        );
    }

    fn finish(self, what: &str) {
        assert!(
            self.diffs.is_empty(),
            "{what}: {} difference(s) between {}:\n\n{}",
            self.diffs.len(),
            self.sides
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(" and "),
            self.diffs.join("\n\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every board command, locally and remotely.

/// Writes the local inputs of the script: an instruction file and a plan whose
/// `instructions_from` is read on the client.
fn write_scratch(scratch: &Path) {
    fs::create_dir_all(scratch.join("plan")).unwrap();
    fs::write(
        scratch.join("instr.md"),
        "Step 1: read docs/spec.md.\nStep 2: implement it in src/lib.rs.\n",
    )
    .unwrap();
    fs::write(
        scratch.join("plan/build.md"),
        "Build the app with `make build`; it must exit 0.\n",
    )
    .unwrap();
    let plan = json!([
        {"key": "build", "description": "Build the app", "instructions_from": "build.md",
         "priority": "high", "requires": ["python"], "metadata": {"estimate": 20}},
        {"key": "test", "description": "Test the app", "instructions": "Run `make test`.",
         "after": ["build"], "context_files": ["docs/testing.md"], "lease": "20m"}
    ]);
    fs::write(scratch.join("plan/plan.json"), plan.to_string()).unwrap();
}

/// The script: every board command, its options, and its error cases, with the exit code
/// each step must give. `{tK}` is the K-th task added.
fn board_script() -> Vec<Step> {
    use Step::{AskWait, Damage, Run, Sleep};
    vec![
        Run(0, &["status"]),
        Run(0, &["tasks"]),
        Run(0, &["workers"]),
        Run(0, &["progress"]),
        Run(0, &["msg", "read"]),
        Run(0, &["questions"]),
        // Adding, with every option.
        Run(
            0,
            &[
                "add",
                "Write the spec",
                "--instructions",
                "Write docs/spec.md from the notes.",
                "--context",
                "docs/notes.md",
                "--context",
                "docs/style.md",
                "--priority",
                "high",
                "--meta",
                "estimate=30",
                "--meta",
                "owner=alice",
            ],
        ),
        Run(
            0,
            &[
                "add",
                "Implement the spec",
                "--instructions-from",
                "{scratch}/instr.md",
                "--requires",
                "python",
                "--after",
                "{t0}",
                "--lease",
                "90s",
            ],
        ),
        Run(
            0,
            &[
                "add",
                "Review for w2",
                "--assign",
                "w2",
                "--priority",
                "low",
                "--metadata",
                r#"{"pr": 17}"#,
            ],
        ),
        Run(0, &["add", "--plan", "{scratch}/plan/plan.json"]),
        Run(
            0,
            &[
                "add",
                "Short lease",
                "--lease",
                "1s",
                "--assign",
                "w3",
                "--max-retries",
                "0",
            ],
        ),
        Run(2, &["add", "Bad priority", "--priority", "urgent"]),
        Run(2, &["add", "After nothing", "--after", "12345"]),
        Run(0, &["tasks"]),
        Run(0, &["tasks", "--status", "pending"]),
        Run(0, &["tasks", "--status", "blocked"]),
        Run(2, &["tasks", "--status", "sleeping"]),
        Run(0, &["show", "{t0}"]),
        Run(0, &["show", "{t1}"]),
        Run(0, &["show", "{t3}"]),
        Run(2, &["show", "12345"]),
        // Workers.
        Run(
            0,
            &[
                "register",
                "-w",
                "w1",
                "--capability",
                "python",
                "--session-id",
                "sess-1",
            ],
        ),
        Run(0, &["register", "-w", "w2"]),
        Run(0, &["register", "-w", "w3", "-c", "docs"]),
        Run(2, &["register", "-w", "bad worker!"]),
        Run(2, &["claim", "-w", "bad worker!"]),
        Run(0, &["workers"]),
        // Claim, heartbeat, complete, and a claimant's conflicts.
        Run(0, &["claim", "-w", "w1"]),
        Run(0, &["heartbeat", "-w", "w1"]),
        Run(4, &["complete", "{t0}", "-w", "w2", "--result", "not mine"]),
        Run(4, &["complete", "{t0}", "-w", "w1", "--attempt", "2"]),
        Run(2, &["complete", "12345", "-w", "w1"]),
        Run(
            0,
            &[
                "complete",
                "{t0}",
                "-w",
                "w1",
                "--attempt",
                "1",
                "--result",
                "spec written",
            ],
        ),
        Run(4, &["complete", "{t0}", "-w", "w1"]),
        // Fail with a retry, fail for good, retry, release, cancel.
        Run(0, &["claim", "-w", "w1"]),
        Run(
            0,
            &[
                "fail",
                "{t3}",
                "-w",
                "w1",
                "--attempt",
                "1",
                "--error",
                "compiler crashed",
            ],
        ),
        Run(0, &["show", "{t3}"]),
        Run(0, &["claim", "-w", "w1"]),
        Run(
            0,
            &[
                "fail",
                "{t1}",
                "-w",
                "w1",
                "--error",
                "spec unclear",
                "--no-retry",
            ],
        ),
        Run(4, &["retry", "{t0}"]),
        Run(0, &["retry", "{t1}"]),
        Run(0, &["claim", "-w", "w1"]),
        Run(0, &["release", "{t1}", "-w", "w1"]),
        Run(4, &["release", "{t1}", "-w", "w1"]),
        Run(0, &["cancel", "{t1}", "--reason", "not needed after all"]),
        Run(4, &["cancel", "{t1}"]),
        Run(2, &["cancel", "12345"]),
        // Assigned work, deregistering hands it back.
        Run(0, &["claim", "-w", "w2"]),
        Run(0, &["deregister", "-w", "w2"]),
        Run(0, &["workers"]),
        Run(0, &["should-continue", "-w", "w1", "--max-idle", "10m"]),
        Run(3, &["should-continue", "-w", "w9", "--max-idle", "10m"]),
        // Progress.
        Run(
            0,
            &[
                "progress",
                "set",
                "--step",
                "2",
                "--total",
                "5",
                "--status",
                "building",
                "--meta",
                "phase=build",
            ],
        ),
        Run(0, &["progress", "set", "--status", "testing"]),
        Run(0, &["progress", "show"]),
        Run(0, &["progress"]),
        // Messages and questions.
        Run(
            0,
            &[
                "msg",
                "send",
                "Starting the build",
                "--as",
                "w1",
                "--task",
                "{t3}",
            ],
        ),
        Run(0, &["msg", "send", "Hello everyone"]),
        Run(2, &["msg", "send", "About nothing", "--task", "12345"]),
        Run(0, &["msg", "read"]),
        Run(0, &["msg", "read", "--after", "1"]),
        Run(0, &["msg", "read", "--limit", "1"]),
        Run(0, &["msg", "read", "--since", "2000-01-01T00:00:00Z"]),
        Run(2, &["msg", "read", "--since", "yesterday"]),
        Run(
            0,
            &["ask", "Which database?", "--as", "w1", "--task", "{t3}"],
        ),
        Run(0, &["questions"]),
        // #1 is the result w2's refused complete kept, #2 and #3 the messages above.
        Run(0, &["answer", "4", "Postgres, version 16"]),
        Run(2, &["answer", "999", "to nothing"]),
        Run(0, &["questions", "--all"]),
        Run(0, &["msg", "read", "--reply-to", "4"]),
        AskWait("Ship it today?", "Yes, after the tests pass"),
        Run(
            3,
            &[
                "ask",
                "Anyone there?",
                "--wait",
                "--timeout",
                "1s",
                "--poll",
                "1s",
            ],
        ),
        Run(0, &["questions"]),
        // An expired lease: the claim is requeued by requeue-stale (the first write after).
        Run(0, &["requeue-stale"]),
        Run(0, &["claim", "-w", "w3"]),
        Sleep(Duration::from_millis(1500)),
        Run(0, &["requeue-stale"]),
        Run(0, &["requeue-stale"]),
        // Out of retries (--max-retries 0): failed for good; retry puts it back.
        Run(0, &["show", "{t5}"]),
        Run(0, &["retry", "{t5}"]),
        // The rest: w2 is offline, so w1 may take its task; t3 waits out its retry delay and
        // t4 waits for t3.
        Run(0, &["claim", "-w", "w1"]),
        Run(
            0,
            &[
                "complete",
                "{t2}",
                "-w",
                "w1",
                "--result-json",
                r#"{"lines": 42}"#,
            ],
        ),
        Run(0, &["claim", "-w", "w3"]),
        Run(0, &["complete", "{t5}", "-w", "w3", "--attempt", "1"]),
        Run(3, &["claim", "-w", "w1"]),
        Run(3, &["claim", "-w", "w3"]),
        Run(0, &["tasks", "--status", "completed"]),
        Run(0, &["status"]),
        // Compaction and the archive.
        Run(0, &["compact"]),
        Run(0, &["compact"]),
        Run(0, &["tasks"]),
        Run(0, &["tasks", "--all"]),
        Run(0, &["tasks", "--all", "--status", "completed"]),
        Run(0, &["show", "{t0}"]),
        Run(0, &["status"]),
        Run(0, &["repair"]),
        // Damaged board files: exit 5 until repaired.
        Damage("task-queue.json"),
        Run(5, &["status"]),
        Run(5, &["tasks"]),
        Run(5, &["claim", "-w", "w1"]),
        Run(5, &["add", "Not now"]),
        Run(0, &["repair"]),
        Run(0, &["status"]),
        Damage("worker-status.json"),
        Run(5, &["workers"]),
        Run(5, &["heartbeat", "-w", "w1"]),
        Run(0, &["repair"]),
        Run(0, &["workers"]),
        Run(0, &["add", "After the repair"]),
        Run(0, &["tasks", "--all"]),
    ]
}

#[test]
fn every_board_command_gives_the_same_output_remotely() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    write_scratch(&scratch);
    let script = board_script();
    // --json and text each on their own pair of boards (a step changes the board), run side
    // by side.
    let results: Vec<_> = thread::scope(|s| {
        [true, false]
            .into_iter()
            .map(|json| {
                let (tmp, scratch, script) = (tmp.path(), &scratch, &script);
                s.spawn(move || {
                    let mode = if json { "json" } else { "text" };
                    let sides = vec![
                        Side::local("local", tmp.join(format!("local-{mode}"))),
                        Side::remote("remote", tmp.join(format!("served-{mode}")), &[], &[]),
                    ];
                    // Retry delays that cannot run out while the script runs, however slowly
                    // (the script expects a failed task to still wait at its end).
                    for side in &sides {
                        let r = side.run(&["init".into(), "--retry-backoff".into(), "1h".into()]);
                        assert_eq!(r.code, 0, "{}: {r:?}", side.name);
                    }
                    let mut cmp = Compare::new(json, sides, scratch);
                    for step in script {
                        cmp.step(step);
                    }
                    (mode, cmp)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    for (mode, cmp) in results {
        cmp.finish(&format!("{mode} mode"));
    }
    // `init` reaches the server like every board command (see
    // init_creates_the_board_on_either_kind_of_server_and_keeps_an_existing_one).
    let url = format!("http://127.0.0.1:{}", closed_port());
    let r = remote(&url, &[("VINE_RETRY_FOR", "1s")], &["init"]);
    assert_fails(&r, 6, "vine --url URL init against a closed port");
}

// ---------------------------------------------------------------------------------------------
// Workers over a server, and what the board files say afterwards.

/// What one worker process loop did.
#[derive(Debug, Default)]
struct WorkerLog {
    worker: String,
    /// (task id, attempt) of every claim whose reply arrived.
    claimed: Vec<(u64, u64)>,
    /// Ids whose `complete` exited 0.
    completed: Vec<u64>,
    /// Anything a worker should never see.
    errors: Vec<String>,
}

/// Claims and completes through the server at `url` (given in `$VINE_URL`) until nothing is
/// left to claim. `done` counts acknowledged completions across workers.
fn work(url: &str, worker: &str, env: &[(&str, &str)], done: &AtomicUsize) -> WorkerLog {
    let mut env = env.to_vec();
    env.push(("VINE_URL", url));
    env.push(("VINE_WORKER", worker));
    let mut log = WorkerLog {
        worker: worker.to_string(),
        ..WorkerLog::default()
    };
    loop {
        let r = run(isolated(&env).args(["--json", "claim"]));
        match r.code {
            0 => {}
            3 => break,
            _ => {
                log.errors.push(format!("claim: {r:?}"));
                break;
            }
        }
        let v = r.json();
        let t = &v["claim"]["task"];
        if t["claimed_by"] != json!(worker) || t["status"] != json!("in_progress") {
            log.errors.push(format!("odd claim reply: {v}"));
            break;
        }
        let (id, attempt) = (t["id"].as_u64().unwrap(), t["attempts"].as_u64().unwrap());
        log.claimed.push((id, attempt));
        let (id_s, attempt_s) = (id.to_string(), attempt.to_string());
        let result = format!("done by {worker}");
        let r = run(isolated(&env).args([
            "--json",
            "complete",
            &id_s,
            "--attempt",
            &attempt_s,
            "--result",
            &result,
        ]));
        if r.code == 0 {
            log.completed.push(id);
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            log.errors
                .push(format!("complete {id} attempt {attempt}: {r:?}"));
        }
    }
    log
}

/// Runs `workers` worker loops at once against `url`; `during` runs alongside them (it gets
/// the count of acknowledged completions) and its result is returned too.
fn run_workers<T: Send>(
    url: &str,
    workers: usize,
    env: &[(&str, &str)],
    during: impl FnOnce(&AtomicUsize) -> T + Send,
) -> (Vec<WorkerLog>, T) {
    let done = AtomicUsize::new(0);
    thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let done = &done;
                s.spawn(move || work(url, &format!("w{w}"), env, done))
            })
            .collect();
        let extra = during(&done);
        let logs = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (logs, extra)
    })
}

/// Parses every board file in `dir`; returns each task record by id, queue and archive
/// together (panics if an id is on the board twice, or a file ends in a torn line).
fn board_tasks(dir: &Path) -> BTreeMap<u64, Value> {
    let files = Files::read_whole(dir);
    assert_log_sane(&files, &dir.display().to_string());
    files.tasks_once()
}

/// The ids of a plan of `n` tasks added through the server in one `vine add --plan`.
fn add_plan(url: &str, dir: &Path, prefix: &str, n: usize) -> Vec<u64> {
    let plan: Vec<Value> = (0..n)
        .map(|i| json!({"description": format!("{prefix} {i}")}))
        .collect();
    let path = dir.join(format!("{prefix}-plan.json"));
    fs::write(&path, Value::Array(plan).to_string()).unwrap();
    let v = remote_ok(url, &["add", "--plan", path.to_str().unwrap()]);
    let ids = ids_of(&v["tasks"]);
    assert_eq!(ids.len(), n, "{prefix}: plan reply");
    ids
}

/// The outcome every load test insists on: no worker saw an error; each task was claimed by
/// exactly one worker, once, on its first attempt, and completed by it; the board files all
/// parse and hold each task exactly once, completed; the server's status agrees.
fn assert_all_done_once(url: &str, dir: &Path, added: &[u64], logs: &[WorkerLog], ctx: &str) {
    for l in logs {
        assert!(l.errors.is_empty(), "{ctx}: {}: {:#?}", l.worker, l.errors);
    }
    let mut claimant: HashMap<u64, &str> = HashMap::new();
    for l in logs {
        for &(id, attempt) in &l.claimed {
            assert_eq!(
                attempt, 1,
                "{ctx}: {} claimed task {id} on attempt {attempt}",
                l.worker
            );
            if let Some(other) = claimant.insert(id, &l.worker) {
                panic!(
                    "{ctx}: task {id} was claimed by {other} and by {}",
                    l.worker
                );
            }
        }
        let claimed: BTreeSet<u64> = l.claimed.iter().map(|c| c.0).collect();
        let completed: BTreeSet<u64> = l.completed.iter().copied().collect();
        assert_eq!(
            l.completed.len(),
            completed.len(),
            "{ctx}: {} completed a task twice",
            l.worker
        );
        assert_eq!(
            claimed, completed,
            "{ctx}: {} claimed != completed",
            l.worker
        );
    }
    let want: BTreeSet<u64> = added.iter().copied().collect();
    assert_eq!(want.len(), added.len(), "{ctx}: added ids are not unique");
    let claimed: BTreeSet<u64> = claimant.keys().copied().collect();
    assert_eq!(
        claimed, want,
        "{ctx}: the claimed ids are not the added ids"
    );

    let tasks = board_tasks(dir);
    let on_board: BTreeSet<u64> = tasks.keys().copied().collect();
    assert_eq!(
        on_board, want,
        "{ctx}: the board's ids are not the added ids"
    );
    for (id, t) in &tasks {
        let w = claimant[id];
        assert_eq!(t["status"], json!("completed"), "{ctx}: task {id}: {t}");
        assert_eq!(
            t["attempts"],
            json!(1),
            "{ctx}: task {id} claimed more than once: {t}"
        );
        assert_eq!(t["claimed_by"], json!(w), "{ctx}: task {id}: {t}");
        assert_eq!(t["completed_by"], json!(w), "{ctx}: task {id}: {t}");
        assert_eq!(
            t["result"],
            json!(format!("done by {w}")),
            "{ctx}: task {id}: {t}"
        );
    }
    let s = remote_ok(url, &["status"]);
    assert_eq!(s["total"], json!(added.len()), "{ctx}: status {s}");
    assert_eq!(s["completed"], json!(added.len()), "{ctx}: status {s}");
    let per_worker: Vec<(&str, usize)> = logs
        .iter()
        .map(|l| (l.worker.as_str(), l.claimed.len()))
        .collect();
    eprintln!("{ctx}: claims per worker {per_worker:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Eight remote workers, a thousand tasks.

#[test]
fn eight_remote_workers_race_for_a_thousand_tasks() {
    const TASKS: usize = 1000;
    const WORKERS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("served"), &[], &[]);
    let mut added = Vec::new();
    for b in 0..4 {
        added.extend(add_plan(
            &server.url,
            tmp.path(),
            &format!("race{b}"),
            TASKS / 4,
        ));
    }
    let started = Instant::now();
    let (logs, ()) = run_workers(&server.url, WORKERS, &[], |_| ());
    eprintln!(
        "{WORKERS} workers drained {TASKS} tasks in {:?}",
        started.elapsed()
    );
    assert_all_done_once(&server.url, &server.root, &added, &logs, "race");
    assert!(
        !jsonl_whole(&server.root.join("task-archive.jsonl")).is_empty(),
        "automatic archiving should have moved tasks"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The server SIGKILLed mid-load and restarted on the same port.

/// Waits until `done` reaches `n` (or `limit` passes); true if it did.
fn wait_for(done: &AtomicUsize, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while done.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn workers_ride_through_a_server_killed_and_restarted() {
    const TASKS: usize = 400;
    const WORKERS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("served"), &[], &[]);
    let url = server.url.clone();
    let added = add_plan(&url, tmp.path(), "kill", TASKS);
    // Requests retry for up to 20 s: longer than the server is ever down.
    let env = [("VINE_RETRY_FOR", "20s"), ("VINE_TIMEOUT", "10s")];
    let (logs, kills) = run_workers(&url, WORKERS, &env, |done| {
        let mut kills = Vec::new();
        // Away from completion 201, where the queue is archived (default --archive-after 200):
        // a reply lost at that commit is the bug that
        // `a_completion_whose_reply_is_lost_while_its_task_is_archived_is_answered` pins down.
        for (at, down) in [
            (TASKS / 4, 700),
            (TASKS * 2 / 5, 200),
            (TASKS * 3 / 4, 1500),
        ] {
            if !wait_for(done, at, Duration::from_secs(60)) {
                break;
            }
            server.kill();
            let seen = done.load(Ordering::Relaxed);
            thread::sleep(Duration::from_millis(down));
            server.restart();
            kills.push((seen, down));
        }
        kills
    });
    assert_eq!(server.url, url, "the server came back on another address");
    assert_eq!(
        kills.len(),
        3,
        "the workers finished before the kills: {kills:?}"
    );
    eprintln!("killed the server after (completions, ms down): {kills:?}");
    assert_all_done_once(&url, &server.root, &added, &logs, "server kills");
}

// ---------------------------------------------------------------------------------------------
// 4. Replies lost after the op was applied.

/// A proxy on 127.0.0.1 in front of a server that loses every `every`th `/v1/op` reply: each
/// request is passed on whole and answered by the server (the op is applied), but of every
/// `every`th op's reply only the head reaches the client before the connection is closed.
/// Other requests (`/test`) pass untouched and are not counted. Runs until the test ends.
struct DropProxy {
    port: u16,
    url: String,
}

impl DropProxy {
    fn start(upstream: u16, every: usize) -> DropProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ops = std::sync::Arc::new(AtomicUsize::new(0));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let ops = ops.clone();
                thread::spawn(move || {
                    let _ = Self::relay(client, upstream, every, &ops);
                });
            }
        });
        DropProxy {
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Passes one request on (one per connection: the reply says `Connection: close`).
    fn relay(
        client: std::net::TcpStream,
        upstream: u16,
        every: usize,
        ops: &AtomicUsize,
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
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
            assert!(
                !text.starts_with("transfer-encoding:"),
                "the drop proxy takes bodies with a Content-Length only: {text}"
            );
            if !text.starts_with("connection:") {
                head.extend_from_slice(&line);
            }
        }
        let mut body = vec![0; length];
        from.read_exact(&mut body)?;
        let is_op = head.starts_with(b"POST /v1/op ");

        let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
        server.write_all(&head)?;
        server.write_all(b"Connection: close\r\n\r\n")?;
        server.write_all(&body)?;
        let mut reply = Vec::new();
        server.read_to_end(&mut reply)?;

        let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(());
        };
        let (reply_head, reply_body) = reply.split_at(end + 4);
        let mut to = client;
        if is_op && (ops.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every) {
            // Lost on the way: the head arrives, the body never does.
            return to.write_all(reply_head);
        }
        to.write_all(reply_head)?;
        to.write_all(reply_body)
    }
}

/// Posts one `/v1/op` by hand; returns what came back before the connection closed.
fn raw_op(port: u16, op: &Value) -> String {
    use std::io::{Read, Write};
    let body = json!({ "op": op }).to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/op HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn dropped_replies_apply_nothing_twice() {
    const ADDERS: usize = 4;
    const ADDS_EACH: usize = 12;
    const PLAN: usize = 40;
    const WORKERS: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("served"), &[], &[]);
    let proxy = DropProxy::start(server.port, 3);
    // Of three ops, the third's reply never arrives whole.
    let status = json!({"op": "status"});
    for n in 1..=3 {
        let got = raw_op(proxy.port, &status);
        let whole = got.contains(r#""status":"success""#);
        assert_eq!(whole, n != 3, "op {n} through the drop proxy: {got:?}");
    }

    // Single adds from several processes at once: each creates exactly one task.
    let env = [("VINE_RETRY_FOR", "20s"), ("VINE_TIMEOUT", "10s")];
    let url = proxy.url.as_str();
    let mut added: Vec<u64> = thread::scope(|s| {
        let handles: Vec<_> = (0..ADDERS)
            .map(|a| {
                s.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..ADDS_EACH {
                        let d = format!("dropped add {a}-{i}");
                        let r = remote(url, &env, &["--json", "add", &d]);
                        assert_eq!(r.code, 0, "add {d}: {r:?}");
                        let v = r.json();
                        let tasks = v["tasks"].as_array().unwrap();
                        assert_eq!(tasks.len(), 1, "add {d}: {v}");
                        assert_eq!(tasks[0]["description"], json!(d), "{v}");
                        ids.push(tasks[0]["id"].as_u64().unwrap());
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    // And a plan (one op for many tasks), also added once.
    added.extend(add_plan(url, tmp.path(), "dropped plan", PLAN));
    let tasks = board_tasks(&server.root);
    assert_eq!(
        tasks.len(),
        ADDERS * ADDS_EACH + PLAN,
        "adds retried after a lost reply made extra tasks"
    );
    let mut by_description: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks.values() {
        *by_description
            .entry(t["description"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = by_description.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks added more than once: {twice:?}");

    let (logs, ()) = run_workers(url, WORKERS, &env, |_| ());
    assert_all_done_once(url, &server.root, &added, &logs, "dropped replies");
}

/// A server behind a proxy that drops every third `/v1/op` reply, and the count of ops it has
/// seen, so a chosen command can be made to lose its reply (the client then retries with the
/// same key).
struct Dropper {
    server: Server,
    proxy: DropProxy,
    ops: usize,
}

impl Dropper {
    const EVERY: usize = 3;

    /// Starts a server on `root` (an existing board is kept).
    fn start(root: &Path) -> Dropper {
        let server = Server::start(root, &[], &[]);
        Dropper {
            proxy: DropProxy::start(server.port, Self::EVERY),
            server,
            ops: 0,
        }
    }

    /// Runs one `vine --json` command that makes exactly one op (two if its reply is dropped).
    fn run(&mut self, args: &[&str]) -> Run {
        let dropped = (self.ops + 1).is_multiple_of(Self::EVERY);
        self.ops += if dropped { 2 } else { 1 };
        remote(
            &self.proxy.url,
            &[("VINE_RETRY_FOR", "10s")],
            &with_json(args),
        )
    }

    /// Runs the command so that its first reply is lost after the op was applied.
    fn lose_reply(&mut self, args: &[&str]) -> Run {
        while !(self.ops + 1).is_multiple_of(Self::EVERY) {
            raw_op(self.proxy.port, &json!({"op": "status"}));
            self.ops += 1;
        }
        self.run(args)
    }

    /// `lose_reply`, insisting on exit 0.
    fn lose_reply_ok(&mut self, args: &[&str]) -> Value {
        let r = self.lose_reply(args);
        assert_eq!(
            r.code,
            0,
            "`vine {}` retried after its reply was lost: {r:?}",
            args.join(" ")
        );
        r.json()
    }

    /// Checks that the server counted the ops as this test did: the next op lands on a drop
    /// exactly when the count says so (else the test's lost replies were not lost).
    fn assert_count_in_step(&mut self) {
        while !(self.ops + 1).is_multiple_of(Self::EVERY) {
            let got = raw_op(self.proxy.port, &json!({"op": "status"}));
            assert!(
                got.contains(r#""status":"success""#),
                "op {}: {got:?}",
                self.ops + 1
            );
            self.ops += 1;
        }
        let got = raw_op(self.proxy.port, &json!({"op": "status"}));
        assert!(
            !got.contains(r#""status":"success""#),
            "op {} should have lost its reply: the op count drifted",
            self.ops + 1
        );
        self.ops += 1;
    }

    fn ok(&mut self, args: &[&str]) -> Value {
        let r = self.run(args);
        assert_eq!(r.code, 0, "`vine {}`: {r:?}", args.join(" "));
        r.json()
    }

    /// Each task on the board by id (straight from the files: reading them makes no op).
    fn tasks(&self) -> BTreeMap<u64, Value> {
        board_tasks(&self.server.root)
    }

    fn log(&self) -> Vec<Value> {
        jsonl_whole(&self.server.root.join("agent-comms.jsonl"))
    }
}

#[test]
fn every_keyed_write_whose_reply_is_lost_is_applied_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Dropper::start(&tmp.path().join("served"));

    let v = d.lose_reply_ok(&["add", "Lost add", "--instructions", "Do the lost add."]);
    let lost_add = v["tasks"][0]["id"].as_u64().unwrap();
    assert_eq!(d.tasks().len(), 1, "a retried add made two tasks");
    let plan = tmp.path().join("plan.json");
    fs::write(
        &plan,
        json!([{"description": "Plan a"}, {"description": "Plan b"}]).to_string(),
    )
    .unwrap();
    let v = d.lose_reply_ok(&["add", "--plan", plan.to_str().unwrap()]);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(d.tasks().len(), 3, "a retried plan made extra tasks");
    d.lose_reply_ok(&["register", "-w", "w1"]);
    d.lose_reply_ok(&["register", "-w", "w2"]);

    // A lost claim reply: the retry is answered with the same claim (and its instructions),
    // not a second task.
    let v = d.lose_reply_ok(&["claim", "-w", "w1"]);
    assert_eq!(v["claim"]["task"]["id"], json!(lost_add), "{v}");
    assert_eq!(v["claim"]["task"]["attempts"], json!(1), "{v}");
    assert_eq!(v["claim"]["instructions"], json!("Do the lost add."), "{v}");
    let claimed: Vec<u64> = d
        .tasks()
        .into_iter()
        .filter(|(_, t)| t["status"] == json!("in_progress"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(claimed, vec![lost_add], "a retried claim took another task");
    d.lose_reply_ok(&["heartbeat", "-w", "w1"]);

    let id = lost_add.to_string();
    let v = d.lose_reply_ok(&["release", &id, "-w", "w1"]);
    assert_eq!(v["task"]["status"], json!("pending"), "{v}");
    d.ok(&["claim", "-w", "w1"]);
    let v = d.lose_reply_ok(&[
        "fail",
        &id,
        "-w",
        "w1",
        "--error",
        "lost fail",
        "--no-retry",
    ]);
    assert_eq!(v["task"]["status"], json!("failed"), "{v}");
    let v = d.lose_reply_ok(&["retry", &id]);
    assert_eq!(v["task"]["status"], json!("pending"), "{v}");
    let v = d.lose_reply_ok(&["cancel", &id, "--reason", "lost cancel"]);
    assert_eq!(v["task"]["status"], json!("cancelled"), "{v}");

    let v = d.ok(&["claim", "-w", "w2"]);
    let other = v["claim"]["task"]["id"].as_u64().unwrap().to_string();
    let v = d.lose_reply_ok(&["complete", &other, "-w", "w2", "--attempt", "1"]);
    assert_eq!(v["task"]["status"], json!("completed"), "{v}");
    let v = d.ok(&["claim", "-w", "w2"]);
    let third = v["claim"]["task"]["id"].as_u64().unwrap().to_string();
    let v = d.lose_reply_ok(&[
        "fail",
        &third,
        "-w",
        "w2",
        "--attempt",
        "1",
        "--error",
        "again",
    ]);
    assert_eq!(v["task"]["status"], json!("pending"), "{v}");
    assert_eq!(v["task"]["attempts"], json!(1), "{v}");

    // Messages: one entry each.
    d.lose_reply_ok(&["msg", "send", "Lost message", "--as", "w1"]);
    let v = d.lose_reply_ok(&["ask", "Lost question?", "--as", "w2"]);
    let q = v["message"]["seq"].as_u64().unwrap().to_string();
    d.lose_reply_ok(&["answer", &q, "Lost answer"]);
    let log = d.log();
    for text in ["Lost message", "Lost question?", "Lost answer"] {
        let n = log.iter().filter(|m| m["message"] == json!(text)).count();
        assert_eq!(n, 1, "{text:?} is in the log {n} times: {log:#?}");
    }

    // Writes without replay are harmless to apply twice.
    d.lose_reply_ok(&["progress", "set", "--step", "1", "--total", "2"]);
    d.lose_reply_ok(&["requeue-stale"]);
    d.lose_reply_ok(&["compact"]);
    d.lose_reply_ok(&["should-continue", "-w", "w1"]);
    d.lose_reply_ok(&["deregister", "-w", "w1"]);
    // Reads too.
    d.lose_reply_ok(&["status"]);
    d.lose_reply_ok(&["tasks", "--all"]);

    assert_eq!(d.tasks().len(), 3);
    d.assert_count_in_step();
}

#[test]
fn a_completion_whose_reply_is_lost_while_its_task_is_archived_is_answered() {
    // With --archive-after 1, the second finished task makes the commit that finishes it move
    // both to the archive. If that commit's reply is lost, the retry (same request key) must
    // be answered with the completion, as any other retried write is.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let r = run(isolated(&[])
        .arg("init")
        .arg(&root)
        .args(["--archive-after", "1"]));
    assert_eq!(r.code, 0, "{r:?}");
    let mut d = Dropper::start(&root);
    let plan = tmp.path().join("plan.json");
    fs::write(
        &plan,
        json!([
            {"description": "first"},
            {"description": "second"},
            {"description": "third"},
            {"description": "fourth"}
        ])
        .to_string(),
    )
    .unwrap();
    d.ok(&["add", "--plan", plan.to_str().unwrap()]);
    let next = |d: &mut Dropper, w: &str| {
        let v = d.ok(&["claim", "-w", w]);
        v["claim"]["task"]["id"].as_u64().unwrap().to_string()
    };
    let first = next(&mut d, "w1");
    d.ok(&["complete", &first, "-w", "w1", "--attempt", "1"]);
    let second = next(&mut d, "w1");
    // This commit completes `second` and archives both finished tasks; its reply is lost.
    let mut problems = Vec::new();
    let r = d.lose_reply(&[
        "complete",
        &second,
        "-w",
        "w1",
        "--attempt",
        "1",
        "--result",
        "ok",
    ]);
    let archived = jsonl_whole(&d.server.root.join("task-archive.jsonl"));
    assert_eq!(
        archived.len(),
        2,
        "the scenario needs both tasks archived: {archived:#?}"
    );
    if r.code == 0 {
        let v = r.json();
        assert_eq!(v["task"]["status"], json!("completed"), "{v}");
        assert_eq!(v["task"]["result"], json!("ok"), "{v}");
    } else {
        problems.push(format!("complete: {r:?}"));
    }
    // The same for a cancel that finishes a task and archives it (with another finished one).
    let third = next(&mut d, "w2");
    d.ok(&["complete", &third, "-w", "w2"]);
    let fourth = d
        .tasks()
        .into_iter()
        .find(|(_, t)| t["status"] == json!("pending"));
    let fourth = fourth.expect("a pending task").0.to_string();
    let r = d.lose_reply(&["cancel", &fourth, "--reason", "lost"]);
    let archived = jsonl_whole(&d.server.root.join("task-archive.jsonl"));
    assert_eq!(
        archived.len(),
        4,
        "the scenario needs the cancelled task archived"
    );
    if r.code == 0 {
        assert_eq!(r.json()["task"]["status"], json!("cancelled"), "{r:?}");
    } else {
        problems.push(format!("cancel: {r:?}"));
    }
    d.assert_count_in_step();
    assert!(
        problems.is_empty(),
        "writes that were applied (and archived by the same commit) but whose reply was lost \
         are refused when the client retries with the same request key:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The /execute transport, against a server with only the original four endpoints.

/// A board session over the exec transport, compared with a local board.
fn exec_script() -> Vec<Step> {
    use Step::Run;
    vec![
        Run(0, &["status"]),
        Run(
            0,
            &[
                "add",
                "Exec task",
                "--instructions",
                "Say 'it's done' when it's done.",
                "--priority",
                "high",
                "--meta",
                "estimate=5",
                "--context",
                "docs/x.md",
            ],
        ),
        Run(0, &["add", "Second exec task", "--after", "{t0}"]),
        Run(0, &["add", "--plan", "{scratch}/plan/plan.json"]),
        Run(0, &["register", "-w", "w1", "-c", "python"]),
        Run(2, &["claim", "-w", "bad worker!"]),
        Run(0, &["claim", "-w", "w1"]),
        Run(4, &["complete", "{t0}", "-w", "w2"]),
        Run(
            0,
            &[
                "complete",
                "{t0}",
                "-w",
                "w1",
                "--attempt",
                "1",
                "--result",
                "done",
            ],
        ),
        Run(0, &["show", "{t0}"]),
        Run(2, &["show", "12345"]),
        Run(0, &["claim", "-w", "w1"]),
        Run(
            0,
            &[
                "fail",
                "{t2}",
                "-w",
                "w1",
                "--error",
                "no make",
                "--no-retry",
            ],
        ),
        Run(0, &["claim", "-w", "w1"]),
        Run(0, &["complete", "{t1}", "-w", "w1"]),
        Run(3, &["claim", "-w", "w1"]),
        Run(0, &["status"]),
        Run(0, &["tasks", "--all"]),
        Run(0, &["msg", "send", "Through /execute", "--as", "w1"]),
        Run(0, &["msg", "read"]),
        Run(0, &["compact"]),
        Run(0, &["show", "{t0}"]),
    ]
}

#[test]
fn board_commands_work_through_execute_on_an_original_server() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    write_scratch(&scratch);
    let remote_bin = [("VINE_REMOTE_BIN", VINE)];
    let script = exec_script();
    for json in [true, false] {
        let mode = if json { "json" } else { "text" };
        let sides = vec![
            Side::local("local", tmp.path().join(format!("local-{mode}"))),
            Side::remote(
                "original server",
                tmp.path().join(format!("original-{mode}")),
                &["--original-only"],
                &remote_bin,
            ),
        ];
        let mut cmp = Compare::new(json, sides, &scratch);
        for step in &script {
            cmp.step(step);
        }
        let Target::Remote(server, _) = &cmp.sides[1].target else {
            unreachable!()
        };
        let url = server.url.clone();
        if json {
            // The writes went through `vine op` with request keys.
            let keyed = board_tasks(&cmp.sides[1].dir)
                .values()
                .filter(|t| t["request_key"].is_string())
                .count();
            assert!(keyed > 0, "no task carries a request key");
        }
        // There really was no board endpoint.
        let v = remote_ok(&url, &["vps", "test"]);
        assert!(v.get("agentvine").is_none(), "{v}");
        let r = remote(&url, &[], &["vps", "test"]);
        assert!(r.stdout.contains("the original API"), "{r:?}");
        let got = raw_op(server_port(&url), &json!({"op": "status"}));
        assert!(got.starts_with("HTTP/1.1 404"), "{got}");
        cmp.finish(&format!("exec transport, {mode} mode"));
    }

    // Without a usable vine on the server, the error says what to do.
    let server = Server::start(&tmp.path().join("no-vine"), &["--original-only"], &[]);
    let r = remote(
        &server.url,
        &[("VINE_REMOTE_BIN", "/nonexistent/vine")],
        &["status"],
    );
    let line = assert_fails(&r, 1, "exec transport without vine on the server");
    assert!(line.contains("VINE_REMOTE_BIN"), "{line}");
}

/// The board files `vine init` makes, and their bytes.
fn board_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    support::wait_checkpointed(root);
    [
        "board.json",
        "task-queue.json",
        "worker-status.json",
        "progress.json",
        "agent-comms.jsonl",
    ]
    .iter()
    .map(|f| {
        let bytes = fs::read(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        (f.to_string(), bytes)
    })
    .collect()
}

#[test]
fn init_creates_the_board_on_either_kind_of_server_and_keeps_an_existing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("VINE_REMOTE_BIN", VINE)];
    let original = Server::start(&tmp.path().join("original"), &["--original-only"], &[]);
    let url = original.url.as_str();
    let made: Vec<_> = fs::read_dir(&original.root).unwrap().flatten().collect();
    assert!(made.is_empty(), "the original server made {made:?}");

    // Without a board, board commands say so, and exactly how to create it.
    let how = format!("vine --url {url} init");
    for args in [
        &["status"][..],
        &["add", "A task"][..],
        &["claim", "-w", "w1"][..],
    ] {
        let r = remote(url, &env, args);
        let line = assert_fails(&r, 2, &format!("{args:?} without a board"));
        assert!(
            line.contains("no board on the server") && line.contains(&how),
            "{args:?}: {line}"
        );
        let r = remote(url, &env, &with_json(args));
        let v = assert_json_fails(&r, 2, "no-board", &format!("{args:?} without a board"));
        assert!(
            v["error"]["message"].as_str().unwrap().contains(&how),
            "{v}"
        );
    }

    let native = Server::start(&tmp.path().join("native"), &[], &[]);
    for server in [&original, &native] {
        let url = server.url.as_str();
        let what = |s: &str| format!("{s} on {url}");
        // Create (or, on vine serve, find) the board.
        let r = remote(url, &env, &["init"]);
        assert_eq!(r.code, 0, "{}: {r:?}", what("init"));
        assert!(
            r.stdout.starts_with(&format!("Board ready at {url}\n")),
            "{r:?}"
        );
        let r = remote(url, &env, &["--json", "init"]);
        assert_eq!(r.code, 0, "{r:?}");
        let v = r.json();
        assert_eq!(v["board"], json!(url), "{v}");
        assert_eq!(v["settings"]["lease_secs"], json!(1800), "{v}");
        assert!(server.root.join("tasks").is_dir());
        // Use it.
        for args in [
            &["add", "Kept task", "--instructions", "do it"][..],
            &["register", "-w", "w1"][..],
            &["msg", "send", "kept message"][..],
        ] {
            let r = remote(url, &env, args);
            assert_eq!(r.code, 0, "{}: {r:?}", what(&format!("{args:?}")));
        }
        let before = board_files(&server.root);
        // Again: nothing is overwritten.
        let r = remote(url, &env, &["init"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            board_files(&server.root),
            before,
            "{}",
            what("a second init")
        );
        // Flags change the settings, and only them.
        let r = remote(
            url,
            &env,
            &["--json", "init", "--lease", "2s", "--max-retries", "5"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let v = r.json();
        assert_eq!(v["settings"]["lease_secs"], json!(2), "{v}");
        assert_eq!(v["settings"]["max_retries"], json!(5), "{v}");
        let r = remote(
            url,
            &env,
            &[
                "--json",
                "init",
                "--stale-after",
                "1m",
                "--fallback-after",
                "7m",
            ],
        );
        let v = r.json();
        assert_eq!(
            (
                &v["settings"]["lease_secs"],
                &v["settings"]["stale_after_secs"],
                &v["settings"]["fallback_after_secs"]
            ),
            (&json!(2), &json!(60), &json!(420)),
            "flags change the current settings, every flag as locally: {v}"
        );
        let after = board_files(&server.root);
        for (f, bytes) in &before {
            if f != "board.json" {
                assert_eq!(
                    &after[f],
                    bytes,
                    "{}: init --lease changed {f}",
                    what("init")
                );
            }
        }
        let tasks = remote(url, &env, &["--json", "tasks"]).json();
        assert_eq!(
            tasks["tasks"][0]["description"],
            json!("Kept task"),
            "{tasks}"
        );
        // The board is the server's base directory: a DIR makes no sense with --url.
        let r = remote(url, &env, &["init", "elsewhere"]);
        assert_fails(&r, 2, "init DIR with --url");
    }

    // An original server without vine: init says what to install.
    let bare = Server::start(&tmp.path().join("bare"), &["--original-only"], &[]);
    let r = remote(
        &bare.url,
        &[("VINE_REMOTE_BIN", "/nonexistent/vine")],
        &["init"],
    );
    let line = assert_fails(&r, 1, "init without vine on the server");
    assert!(line.contains("Install vine on the server"), "{line}");
}

#[test]
fn exec_transport_clients_wait_for_a_free_command_slot() {
    // `/execute` refuses commands beyond its limit with 429 "try again shortly"; the command
    // never ran, so a client can safely retry. More workers than slots must all get through.
    const CLIENTS: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("original"),
        &["--original-only", "--exec-max-concurrent", "1"],
        &[],
    );
    let url = server.url.as_str();
    let env = [("VINE_REMOTE_BIN", VINE), ("VINE_RETRY_FOR", "20s")];
    assert_eq!(remote(url, &env, &["init"]).code, 0);
    let runs: Vec<Run> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let d = format!("exec add {i}");
                s.spawn(move || remote(url, &env, &["--json", "add", &d]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<&Run> = runs.iter().filter(|r| r.code != 0).collect();
    assert!(
        refused.is_empty(),
        "{} of {CLIENTS} concurrent exec-transport adds failed instead of waiting for a free \
         /execute slot (429):\n{refused:#?}",
        refused.len()
    );
    assert_eq!(board_tasks(&server.root).len(), CLIENTS);
}

fn server_port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// The same files under two server roots.
fn write_tree(root: &Path) {
    fs::create_dir_all(root.join("notes/sub")).unwrap();
    fs::write(root.join("notes/a.txt"), "alpha needle\nbeta\n").unwrap();
    fs::write(root.join("notes/sub/b.md"), "a needle in markdown\n").unwrap();
    fs::write(root.join("top.txt"), "nothing here\nneedle at the top\n").unwrap();
    fs::write(root.join("it's quoted.txt"), "quoted needle\n").unwrap();
}

/// `vine --json vps ARGS` against `url`: exit code and JSON.
fn vps_json(url: &str, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json", "vps"];
    a.extend_from_slice(args);
    let r = remote(url, &[], &a);
    (r.code, r.json())
}

/// A JSON list sorted (the fallback lists in directory order, the endpoint sorted).
fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(Value::to_string)
        .collect();
    out.sort();
    out
}

#[test]
fn vps_read_find_grep_fall_back_to_execute() {
    let tmp = tempfile::tempdir().unwrap();
    let native = Server::start(&tmp.path().join("native"), &[], &[]);
    let original = Server::start(&tmp.path().join("original"), &["--original-only"], &[]);
    write_tree(&native.root);
    write_tree(&original.root);
    let (n, o) = (native.url.as_str(), original.url.as_str());

    for file in ["notes/a.txt", "it's quoted.txt"] {
        let a = vps_json(n, &["read", file]);
        let b = vps_json(o, &["read", file]);
        assert_eq!(a.0, 0, "{a:?}");
        assert_eq!(a, b, "vps read {file}");
        let expect = fs::read_to_string(native.root.join(file)).unwrap();
        assert_eq!(a.1["content"], json!(expect));
        // The text form prints the file.
        let a = remote(n, &[], &["vps", "read", file]);
        let b = remote(o, &[], &["vps", "read", file]);
        assert_eq!((a.code, &a.stdout), (b.code, &b.stdout), "vps read {file}");
    }
    for (pattern, dir) in [
        ("*.txt", "."),
        ("*.md", "notes"),
        ("b.*", "notes/sub"),
        ("*.py", "."),
    ] {
        let a = vps_json(n, &["find", pattern, dir]);
        let b = vps_json(o, &["find", pattern, dir]);
        assert_eq!(a.0, 0, "{a:?}");
        assert_eq!(b.0, 0, "{b:?}");
        assert_eq!(
            sorted(&a.1["files"]),
            sorted(&b.1["files"]),
            "vps find {pattern} {dir}"
        );
    }
    let a = vps_json(n, &["find", "*.txt", "."]);
    assert_eq!(
        sorted(&a.1["files"]),
        sorted(&json!(["it's quoted.txt", "notes/a.txt", "top.txt"])),
        "{a:?}"
    );
    for (pattern, dir) in [("needle", "."), ("needle", "notes"), ("no such text", ".")] {
        let a = vps_json(n, &["grep", pattern, dir]);
        let b = vps_json(o, &["grep", pattern, dir]);
        assert_eq!(a.0, 0, "{a:?}");
        assert_eq!(b.0, 0, "{b:?}");
        assert_eq!(
            sorted(&a.1["matches"]),
            sorted(&b.1["matches"]),
            "vps grep {pattern} {dir}"
        );
    }
    let a = vps_json(n, &["grep", "needle", "notes"]);
    assert_eq!(
        sorted(&a.1["matches"]),
        sorted(&json!([
            {"file": "notes/a.txt", "line": 1, "text": "alpha needle"},
            {"file": "notes/sub/b.md", "line": 1, "text": "a needle in markdown"}
        ])),
        "{a:?}"
    );
    // The text forms agree line for line (after sorting).
    for args in [&["grep", "needle", "."][..], &["find", "*.txt", "."][..]] {
        let lines = |url: &str| {
            let mut a = vec!["vps"];
            a.extend_from_slice(args);
            let r = remote(url, &[], &a);
            assert_eq!(r.code, 0, "{r:?}");
            let mut l: Vec<String> = r.stdout.lines().map(str::to_string).collect();
            l.sort();
            l
        };
        assert_eq!(lines(n), lines(o), "vps {args:?}");
    }
    // A missing file is an error either way, with the same exit code.
    let a = remote(n, &[], &["vps", "read", "notes/missing.txt"]);
    let b = remote(o, &[], &["vps", "read", "notes/missing.txt"]);
    assert_ne!(a.code, 0, "{a:?}");
    assert!(b.stderr.contains("missing.txt"), "{b:?}");
    assert_eq!(
        a.code, b.code,
        "`vine vps read` of a missing file exits {} through /read but {} through the /execute \
         fallback\nnative: {}fallback: {}",
        a.code, b.code, a.stderr, b.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 6. `vine vps` against `vine serve`, and the exit codes of remote failures.

#[test]
fn vps_commands_against_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("served"), &[], &[]);
    let url = server.url.as_str();
    let root = &server.root;

    // test
    let r = remote(url, &[], &["vps", "test"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("with the board endpoint"), "{r:?}");
    let v = remote_ok(url, &["vps", "test"]);
    assert_eq!(v["agentvine"]["op"], json!("/v1/op"), "{v}");
    assert_eq!(v["message"], json!("VPS API is running"), "{v}");

    // deploy: one file to a path (folders made), then several into a folder.
    let local = tmp.path().join("local");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("app.py"), "print('hello')\n").unwrap();
    fs::write(local.join("b.txt"), "bee\n").unwrap();
    fs::write(local.join("c.md"), "# sea\n").unwrap();
    let app = local.join("app.py").display().to_string();
    let r = remote(url, &[], &["vps", "deploy", &app, "demo/src/app.py"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.trim(),
        format!("Deployed {app} -> demo/src/app.py")
    );
    assert_eq!(
        fs::read_to_string(root.join("demo/src/app.py")).unwrap(),
        "print('hello')\n"
    );
    let many: Vec<String> = ["app.py", "b.txt", "c.md"]
        .iter()
        .map(|f| local.join(f).display().to_string())
        .collect();
    let mut args = vec!["vps", "deploy"];
    args.extend(many.iter().map(String::as_str));
    args.extend(["--to", "demo/many/"]);
    let v = remote_ok(url, &args);
    assert_eq!(v["deployed"].as_array().unwrap().len(), 3, "{v}");
    for f in ["app.py", "b.txt", "c.md"] {
        assert_eq!(
            fs::read(root.join("demo/many").join(f)).unwrap(),
            fs::read(local.join(f)).unwrap(),
            "{f}"
        );
    }
    let r = remote(url, &[], &["vps", "deploy", &app]);
    assert_fails(&r, 2, "deploy with one path and no --to");

    // ls
    let v = remote_ok(url, &["vps", "ls", "demo/many"]);
    let names: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app.py", "b.txt", "c.md"], "{v}");
    let r = remote(url, &[], &["vps", "ls"]);
    assert_eq!(r.code, 0, "{r:?}");
    for want in ["demo/\t", "task-queue.json\t", "board.json\t"] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with(want)),
            "{want}: {r:?}"
        );
    }

    // read
    let r = remote(url, &[], &["vps", "read", "demo/many/b.txt"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "bee\n"), "{r:?}");
    let v = remote_ok(url, &["vps", "read", "demo/many/c.md"]);
    assert_eq!(v["content"], json!("# sea\n"));

    // exec: stdout, stderr, exit status, workdir.
    let r = remote(url, &[], &["vps", "exec", "echo out; echo err >&2"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "out\n", "err\n"),
        "{r:?}"
    );
    let r = remote(url, &[], &["--json", "vps", "exec", "echo partial; exit 3"]);
    assert_eq!(r.code, 1, "a failed command exits 1: {r:?}");
    let v = r.json();
    assert_eq!(v["returncode"], json!(3), "{v}");
    assert_eq!(v["stdout"], json!("partial\n"), "{v}");
    let r = remote(
        url,
        &[],
        &["vps", "exec", "cat app.py && pwd", "--workdir", "demo/src"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "print('hello')", "{r:?}");
    assert_eq!(Path::new(lines[1]), root.join("demo/src"), "{r:?}");

    // find, grep
    let v = remote_ok(url, &["vps", "find", "*.md", "demo"]);
    assert_eq!(v["files"], json!(["demo/many/c.md"]), "{v}");
    let r = remote(url, &[], &["vps", "find", "*.py"]);
    let mut found: Vec<&str> = r.stdout.lines().collect();
    found.sort_unstable();
    assert_eq!(found, ["demo/many/app.py", "demo/src/app.py"], "{r:?}");
    let r = remote(url, &[], &["vps", "grep", "hello", "demo/src"]);
    assert_eq!(r.stdout, "demo/src/app.py:1:print('hello')\n", "{r:?}");
    let v = remote_ok(url, &["vps", "grep", "bee", "demo"]);
    assert_eq!(
        v["matches"],
        json!([{"file": "demo/many/b.txt", "line": 1, "text": "bee"}]),
        "{v}"
    );

    // Paths outside the base directory: exit 8, nothing read or written.
    fs::write(root.parent().unwrap().join("x"), "outside\n").unwrap();
    for args in [
        &["vps", "read", "../x"][..],
        &["vps", "read", "/etc/hostname"][..],
        &["vps", "ls", ".."][..],
        &["vps", "find", "*", "../"][..],
        &["vps", "grep", "outside", ".."][..],
        &["vps", "exec", "cat x", "--workdir", ".."][..],
    ] {
        let r = remote(url, &[], args);
        let line = assert_fails(&r, 8, &format!("{args:?}"));
        assert!(!line.contains("outside\n"), "{line}");
        let r = remote(url, &[], &with_json(args));
        assert_json_fails(&r, 8, "forbidden", &format!("{args:?}"));
    }
    let r = remote(url, &[], &["vps", "deploy", &app, "../escaped.py"]);
    assert_fails(&r, 8, "deploy outside");
    assert!(!root.parent().unwrap().join("escaped.py").exists());
}

#[test]
fn unreachable_server_exits_6_with_one_line() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let env = [("VINE_RETRY_FOR", "1s")];
    for args in [
        &["vps", "test"][..],
        &["status"][..],
        &["claim", "-w", "w1"][..],
    ] {
        let started = Instant::now();
        let r = remote(&url, &env, args);
        let line = assert_fails(&r, 6, &format!("{args:?} against a closed port"));
        assert!(line.contains(&url), "the message names the server: {line}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "VINE_RETRY_FOR=1s was not honoured: {:?}",
            started.elapsed()
        );
        let r = remote(&url, &env, &with_json(args));
        assert_json_fails(&r, 6, "unreachable", &format!("{args:?}"));
    }
    // A URL that is not http(s) is bad usage, not an unreachable server.
    let r = remote("ftp://127.0.0.1:1", &env, &["status"]);
    assert_fails(&r, 2, "ftp URL");
}

#[test]
fn wrong_or_missing_api_key_exits_7() {
    let tmp = tempfile::tempdir().unwrap();
    let key = "s3cret-key-for-tests";
    let server = Server::start(&tmp.path().join("served"), &[], &[("VINE_API_KEY", key)]);
    let url = server.url.as_str();
    let key_file = tmp.path().join("key");
    fs::write(&key_file, format!("{key}\n")).unwrap();
    let key_file = key_file.display().to_string();
    let right = [("VINE_API_KEY", key)];
    let wrong = [("VINE_API_KEY", "not-the-key")];
    // The right key, from the environment, the original variable, or a file.
    let r = remote(url, &right, &["add", "Keyed task"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = remote(url, &[("VPS_API_KEY", key)], &["vps", "ls"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = remote(url, &[], &["--key-file", &key_file, "status"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = remote(url, &[("VINE_API_KEY_FILE", &key_file)], &["tasks"]);
    assert_eq!(r.code, 0, "{r:?}");
    // /test is open to anyone.
    let r = remote(url, &wrong, &["vps", "test"]);
    assert_eq!(r.code, 0, "{r:?}");
    for env in [&wrong[..], &[][..]] {
        for args in [
            &["status"][..],
            &["add", "Not allowed"][..],
            &["vps", "ls"][..],
            &["vps", "exec", "true"][..],
        ] {
            let r = remote(url, env, args);
            let line = assert_fails(&r, 7, &format!("{args:?} with key {env:?}"));
            assert!(
                line.contains("VINE_API_KEY"),
                "the message says what to set: {line}"
            );
            assert!(!line.contains(key), "the message shows the key: {line}");
        }
    }
    let r = remote(url, &wrong, &["--json", "claim", "-w", "w1"]);
    assert_json_fails(&r, 7, "unauthorized", "claim with a wrong key");
    let tasks = board_tasks(&server.root);
    assert_eq!(tasks.len(), 1, "only the keyed add made a task: {tasks:#?}");
}

// ---------------------------------------------------------------------------------------------
// Several servers of one board: VINE_URL=a,b.

/// Six workers over `a,b` (two `vine serve` on one board directory, kept consistent by the
/// board lock), and `a` SIGKILLed a third of the way through: every request from then on —
/// the ones in flight at the kill included, with their request keys — is answered by `b`.
/// No retries on one server are allowed (`VINE_RETRY_FOR=0s`), so what carries the workers
/// through is the failover alone; every task is claimed once and completed once, and no
/// worker sees an error.
#[test]
fn workers_fail_over_when_one_of_two_servers_is_killed() {
    const TASKS: usize = 300;
    const WORKERS: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let mut a = Server::start(&root, &[], &[]);
    let b = Server::start(&root, &[], &[]);
    assert_eq!(a.root, b.root);
    let urls = format!("{},{}", a.url, b.url);
    let added = add_plan(&a.url, tmp.path(), "failover", TASKS);
    let env = [("VINE_RETRY_FOR", "0s")];
    let (logs, killed_at) = run_workers(&urls, WORKERS, &env, |done| {
        assert!(
            wait_for(done, TASKS / 3, Duration::from_secs(120)),
            "the workers did not get going"
        );
        a.kill();
        done.load(Ordering::Relaxed)
    });
    assert!(!a.is_running());
    assert!(
        killed_at < TASKS - WORKERS,
        "the kill came after the work: {killed_at}"
    );
    eprintln!("killed the first server after {killed_at} completions");
    assert_all_done_once(&b.url, &b.root, &added, &logs, "failover");
}

/// A first server that is down is skipped: the reply is the same as from the live one, and
/// nothing is said about it unless asked (`-v` or `$VINE_VERBOSE`), then one line on stderr.
#[test]
fn a_dead_first_server_is_skipped_and_said_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let live = Server::start(&tmp.path().join("served"), &[], &[]);
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let urls = format!("{dead},{}", live.url);
    let env = [("VINE_RETRY_FOR", "0s")];
    let added = remote(&urls, &env, &["--json", "add", "Through the list"]);
    let v = one_object(&added);
    assert_eq!(added.code, 0, "{added:?}");
    assert_eq!(added.stderr, "", "quiet by default");
    let id = ids_of(&v["tasks"])[0].to_string();

    let direct = remote(&live.url, &[], &["--json", "show", &id]);
    let listed = remote(&urls, &env, &["--json", "show", &id]);
    assert_eq!(listed.stdout, direct.stdout, "the same reply");
    assert_eq!(listed.stderr, "");
    for (args, env) in [
        (&["-v", "--json", "show", &id][..], &env[..]),
        (
            &["--json", "show", &id][..],
            &[("VINE_RETRY_FOR", "0s"), ("VINE_VERBOSE", "1")][..],
        ),
    ] {
        let r = remote(&urls, env, args);
        assert_eq!(
            r.stdout, direct.stdout,
            "the same reply with {args:?} {env:?}"
        );
        assert_eq!(
            r.stderr.lines().count(),
            1,
            "one line about the move: {:?}",
            r.stderr
        );
        assert!(
            r.stderr
                .starts_with(&format!("vine: {dead} did not answer ("))
                && r.stderr
                    .trim_end()
                    .ends_with(&format!("; {} did", live.url)),
            "{:?}",
            r.stderr
        );
    }
    // A worker's whole round through the list.
    let w = [("VINE_RETRY_FOR", "0s"), ("VINE_WORKER", "w1")];
    let r = remote(&urls, &w, &["--json", "claim"]);
    assert_eq!(
        one_object(&r)["claim"]["task"]["id"].to_string(),
        id,
        "{r:?}"
    );
    let r = remote(&urls, &w, &["complete", &id, "--result", "ok"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = remote(&live.url, &[], &["--json", "show", &id]);
    assert_eq!(one_object(&r)["task"]["status"], json!("completed"));

    // No server answers: exit 6, one line naming each.
    let other = format!("http://127.0.0.1:{}", closed_port());
    let r = remote(&format!("{dead},{other}"), &env, &["status"]);
    let line = assert_fails(&r, 6, "no server of the list answers");
    assert!(line.contains(&dead) && line.contains(&other), "{line}");
}

/// A refusal is the board's answer, not a server that cannot be reached: with the first
/// server refusing the key (401), the command fails with exit 7 although the second server
/// would take that key, and nothing is done there.
#[test]
fn a_refusal_is_not_sent_to_the_next_server() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let strict = Server::start(&root, &[], &[("VINE_API_KEY", "key-of-the-first")]);
    let lenient = Server::start(&root, &[], &[("VINE_API_KEY", "key-of-the-second")]);
    let urls = format!("{},{}", strict.url, lenient.url);
    let env = [("VINE_API_KEY", "key-of-the-second")];
    let r = remote(&urls, &env, &["add", "Refused by the first"]);
    assert_fails(&r, 7, "the first server's refusal");
    let r = remote(&lenient.url, &env, &["--json", "status"]);
    assert_eq!(
        one_object(&r)["total"],
        json!(0),
        "nothing reached the second server"
    );
    // A board's own refusal (an unknown task, exit 2) is the answer too.
    let r = remote(
        &format!("{},{}", lenient.url, strict.url),
        &env,
        &["complete", "1", "-w", "w1", "--result", "x"],
    );
    assert_fails(&r, 2, "an unknown task");
}

// ---------------------------------------------------------------------------------------------
// A damaged board on the server.

#[test]
fn reads_of_a_damaged_remote_board_show_what_can_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    let remote_bin = [("VINE_REMOTE_BIN", VINE)];
    for (name, args) in [("native", &[][..]), ("original", &["--original-only"][..])] {
        let server = Server::start(&tmp.path().join(name), args, &[]);
        let url = server.url.as_str();
        // An original server starts without a board.
        let r = remote(url, &remote_bin, &["init"]);
        assert_eq!(r.code, 0, "{name}: {r:?}");
        for d in ["kept task", "lost task"] {
            let r = remote(url, &remote_bin, &["add", d]);
            assert_eq!(r.code, 0, "{name}: {r:?}");
        }
        let queue = server.root.join("task-queue.json");
        support::wait_checkpointed(&server.root);
        let text = fs::read_to_string(&queue).unwrap();
        fs::write(&queue, text.replace("\"lost task\"", "\"lost task")).unwrap();
        let before = fs::read(&queue).unwrap();

        let r = remote(url, &remote_bin, &["tasks"]);
        assert_eq!(r.code, 5, "{name}: {r:?}");
        assert!(
            r.stdout.contains("kept task"),
            "{name}: what can be read is shown: {r:?}"
        );
        assert!(
            r.stderr.contains("task-queue.json") && r.stderr.contains("vine repair"),
            "{name}: {r:?}"
        );
        let r = remote(url, &remote_bin, &["--json", "status"]);
        let v = assert_json_fails(&r, 5, "damaged", name);
        assert_eq!(v["total"], 1, "{name}: {v}");
        assert_eq!(
            v["error"]["damaged"][0]["file"], "task-queue.json",
            "{name}: {v}"
        );
        // Changes stay refused.
        let r = remote(url, &remote_bin, &["--json", "claim", "-w", "w1"]);
        let v = assert_json_fails(&r, 5, "damaged", name);
        assert!(v.get("reply").is_none(), "{name}: {v}");
        assert_eq!(fs::read(&queue).unwrap(), before, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. The library: a remote board's errors are the local board's.

/// An op, from the JSON it crosses the wire as.
fn wire_op(v: Value) -> agentvine::Op {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_remote_board_fails_with_the_errors_a_local_one_fails_with() {
    use agentvine::Error;
    use agentvine::remote::{HttpOptions, RemoteStore};
    use agentvine::store::Transport;
    use agentvine::store::local::LocalStore;
    use std::mem::discriminant;

    let tmp = tempfile::tempdir().unwrap();
    // The original server runs `vine op` through /execute: the `vine` under test, on its PATH.
    let bin = Path::new(VINE).parent().unwrap().display().to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    for (name, args) in [("native", &[][..]), ("original", &["--original-only"][..])] {
        let server = Server::start(&tmp.path().join(name), args, &[("PATH", &path)]);
        let opts = HttpOptions {
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(10),
            ca_cert: None,
        };
        let remote = RemoteStore::connect_with(&server.url, None, opts).unwrap();
        remote.init(None).unwrap();
        let local = LocalStore::open(&server.root).unwrap();
        let mut ids = Vec::new();
        for d in ["kept task", "lost task"] {
            let added = remote
                .execute(wire_op(json!({"op": "add", "task": {"description": d}})))
                .unwrap();
            let added = serde_json::to_value(added).unwrap();
            ids.push(added["tasks"][0]["id"].as_u64().unwrap());
        }
        let same = |kind: &str, op: Value| -> (Error, Error) {
            let l = local.execute(wire_op(op.clone())).unwrap_err();
            let r = remote.execute(wire_op(op.clone())).unwrap_err();
            assert_eq!(l.kind(), kind, "{name} {op}: {l:?}");
            assert_eq!(
                discriminant(&r),
                discriminant(&l),
                "{name} {op}: {l:?} came back as {r:?}"
            );
            // `vine op` on the original server opens the board as `.`.
            let root = server.root.display().to_string();
            let shown = |e: &Error| e.to_string().replace(&root, ".");
            assert_eq!(shown(&r), shown(&l), "{name} {op}");
            assert_eq!((r.kind(), r.exit_code()), (l.kind(), l.exit_code()));
            (l, r)
        };
        same("unknown-task", json!({"op": "show", "task": 9}));
        same("invalid", json!({"op": "claim", "worker": "no spaces"}));
        same(
            "conflict",
            json!({"op": "complete", "task": ids[0], "worker": "w1"}),
        );

        let queue = server.root.join("task-queue.json");
        support::wait_checkpointed(&server.root);
        let text = fs::read_to_string(&queue).unwrap();
        fs::write(&queue, text.replace("\"lost task\"", "\"lost task")).unwrap();
        match same("damaged", json!({"op": "tasks"})) {
            (
                Error::DamagedRead {
                    reply: l,
                    damage: ld,
                },
                Error::DamagedRead {
                    reply: r,
                    damage: rd,
                },
            ) => {
                assert_eq!(r, l, "{name}: what could be read");
                assert_eq!(rd, ld, "{name}: what is damaged");
            }
            other => panic!("{name}: a read of a damaged board: {other:?}"),
        }
        let (l, _) = same("damaged", json!({"op": "claim", "worker": "w1"}));
        assert!(matches!(l, Error::Damaged { .. }), "{name}: {l:?}");
    }
}
