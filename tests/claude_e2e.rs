//! End-to-end tests with the real Claude Code CLI (`claude -p`) as a worker.
//!
//! The CLI is installed from npm by `scripts/install-claude-code.sh` into `target/claude-code`
//! (once per test run). It talks to a scripted stand-in for the Anthropic Messages API
//! (`tests/standin/mod.rs`), an HTTP server on 127.0.0.1 inside this test, which plays the
//! model: it answers a Stop-hook feedback "Task <id> is claimed for you" with a Bash tool call
//! running `vine complete`, a tool result with a short text and `end_turn`, and so on. Everything else is real: Claude
//! Code runs the hooks that `vine init --claude` wrote into `.claude/settings.json`, the Bash
//! tool runs `vine`, and the board is a local `.vine/` in a temporary project.
//!
//! When the CLI cannot be installed (no npm, no network) the tests fail, unless
//! `AGENTVINE_E2E_OPTIONAL=1` is set: then they print `SKIPPED: ...` and pass.
//! `AGENTVINE_CLAUDE_CODE_DIR` installs the CLI somewhere else than `target/claude-code`.

mod standin;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use standin::{Kind, Logged, StandIn};
use support::{BOARD_ENV, URL_ENV, VINE, descendants, keepalives_of, ts, vine_without};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Installing the CLI
// ---------------------------------------------------------------------------------------------

/// The `claude` binary, installed once per test run; `None` (after printing `SKIPPED: ...`)
/// when it cannot be installed and `AGENTVINE_E2E_OPTIONAL=1` is set.
fn claude_bin(test: &str) -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(install_claude) {
        Ok(p) => Some(p.clone()),
        Err(e) if std::env::var("AGENTVINE_E2E_OPTIONAL").as_deref() == Ok("1") => {
            // Straight to the stream: libtest captures print macros of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: the Claude Code CLI cannot be installed ({}); AGENTVINE_E2E_OPTIONAL=1",
                e.lines().next().unwrap_or_default()
            );
            None
        }
        Err(e) => panic!(
            "the Claude Code CLI cannot be installed: {e}\n(set AGENTVINE_E2E_OPTIONAL=1 to skip the end-to-end tests instead)"
        ),
    }
}

fn install_claude() -> Result<PathBuf, String> {
    let dir = std::env::var_os("AGENTVINE_CLAUDE_CODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("target dir")
                .join("claude-code")
        });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-claude-code.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {}",
            script.display(),
            out.status,
            stderr.trim()
        ));
    }
    let bin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from)
        .ok_or("the install script printed no path")?;
    if !bin.is_file() {
        return Err(format!("{} is not a file", bin.display()));
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------------------
// Projects, boards and Claude Code processes
// ---------------------------------------------------------------------------------------------

/// Runs `vine --json ARGS` in `project` and returns its JSON (asserting exit 0).
fn vine(project: &Path, args: &[&str]) -> Value {
    let out = vine_without(&[BOARD_ENV, URL_ENV])
        .args(args)
        .arg("--json")
        .current_dir(project)
        .output()
        .expect("run vine");
    assert!(
        out.status.success(),
        "vine {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("vine --json prints JSON")
}

/// A Claude Code project in `<tmp>/<name>` set up by `vine init --claude`, with hooks that
/// call this build's `vine` by its absolute path, and a local board in `.vine/`.
fn project(tmp: &Path, name: &str) -> PathBuf {
    let p = tmp.join(name);
    fs::create_dir_all(&p).unwrap();
    let out = vine(&p, &["init", "--claude", "--hook-command", VINE]);
    assert!(p.join(".vine/task-queue.json").is_file(), "board: {out}");
    let settings: Value =
        serde_json::from_slice(&fs::read(p.join(".claude/settings.json")).unwrap()).unwrap();
    for (event, sub) in [
        ("SessionStart", "session-start"),
        ("PostToolUse", "post-tool-use"),
        ("Stop", "stop"),
    ] {
        assert_eq!(
            settings["hooks"][event][0]["hooks"][0]["command"],
            format!("{VINE} hook {sub}"),
            "{settings:#}"
        );
    }
    assert!(p.join(".claude/skills/agentvine/SKILL.md").is_file());
    assert!(p.join("CLAUDE.md").is_file());
    p
}

/// Adds a task and returns its id.
fn add(project: &Path, description: &str, instructions: &str) -> u64 {
    let v = vine(
        project,
        &["add", description, "--instructions", instructions],
    );
    v["tasks"][0]["id"].as_u64().expect("task id")
}

fn tasks(project: &Path) -> Vec<Value> {
    let v = vine(project, &["tasks", "--all"]);
    v["tasks"].as_array().cloned().unwrap_or_default()
}

fn task(project: &Path, id: u64) -> Value {
    tasks(project)
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("task {id} is on the board"))
}

fn workers(project: &Path) -> Value {
    serde_json::from_slice(&fs::read(project.join(".vine/worker-status.json")).unwrap()).unwrap()
}

/// A directory holding `vine` (a link to this build), put first on the workers' PATH so the
/// model's Bash tool finds `vine` by name, as the instructions say.
fn bin_dir(tmp: &Path) -> PathBuf {
    let d = tmp.join("bin");
    fs::create_dir_all(&d).unwrap();
    let link = d.join("vine");
    if !link.exists() {
        std::os::unix::fs::symlink(VINE, &link).unwrap();
    }
    d
}

/// `bin_dir` with `claude` (a link to the installed CLI) beside `vine`, for commands that run
/// `claude` by name as a user would.
fn bin_dir_with_claude(tmp: &Path, claude: &Path) -> PathBuf {
    let d = bin_dir(tmp);
    let link = d.join("claude");
    if !link.exists() {
        std::os::unix::fs::symlink(claude, &link).unwrap();
    }
    d
}

/// A running `claude -p` worker, killed with its process group if the test ends early.
struct Claude {
    child: Child,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    started: Instant,
    ended: Option<Instant>,
}

impl Claude {
    /// Starts `claude -p PROMPT` in `project` against the stand-in on `port`, with a throwaway
    /// HOME and CLAUDE_CONFIG_DIR in `<tmp>/home-<name>` and only the environment given here.
    fn spawn(
        bin: &Path,
        tmp: &Path,
        project: &Path,
        name: &str,
        port: u16,
        env: &[(&str, &str)],
        prompt: &str,
    ) -> Self {
        let mut c = Command::new(bin);
        c.args([
            "-p",
            prompt,
            "--output-format",
            "json",
            "--allowedTools",
            "Bash",
        ])
        .current_dir(project);
        Self::start(c, tmp, name, port, env)
    }

    /// Runs a shell command line (such as one `vine init --claude` printed) with the same
    /// environment as `spawn`, and `claude` and `vine` on the PATH.
    fn shell(claude: &Path, tmp: &Path, cwd: &Path, name: &str, port: u16, line: &str) -> Self {
        bin_dir_with_claude(tmp, claude);
        let mut c = Command::new("bash");
        c.args(["-c", line]).current_dir(cwd);
        Self::start(c, tmp, name, port, &[])
    }

    fn start(mut c: Command, tmp: &Path, name: &str, port: u16, env: &[(&str, &str)]) -> Self {
        let home = tmp.join(format!("home-{name}"));
        fs::create_dir_all(home.join(".claude")).unwrap();
        let stdout = tmp.join(format!("{name}.stdout.json"));
        let stderr = tmp.join(format!("{name}.stderr.txt"));
        let path = format!(
            "{}:{}",
            bin_dir(tmp).display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        c.env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
            .env("SHELL", "/bin/bash")
            .env("LANG", "C.UTF-8")
            .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("ANTHROPIC_API_KEY", "dummy")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP", "0")
            // The hooks' per-session state and keepalive locks, inside the test's directory.
            .env("VINE_RUNTIME_DIR", tmp.join("hook-runtime"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .process_group(0);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("start claude");
        Claude {
            child,
            name: name.to_string(),
            stdout,
            stderr,
            status: None,
            started: Instant::now(),
            ended: None,
        }
    }

    /// The exit status, if it has ended.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() {
                self.ended = Some(Instant::now());
            }
        }
        self.status
    }

    /// Waits for the process to end by itself, at most `limit`.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.poll() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Kills claude and every process under it (Claude Code runs each hook in a session of its
    /// own, so the hooks are found by parent id, with claude stopped while they are looked up).
    fn kill(&mut self) {
        if self.poll().is_some() {
            return;
        }
        let pid = self.child.id();
        let signal = |sig: &str, pids: &[u32]| {
            let _ = Command::new("kill")
                .arg(sig)
                .arg("--")
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        };
        signal("-STOP", &[pid]);
        let mut all = vec![pid];
        all.extend(descendants(pid));
        signal("-KILL", &all);
        self.status = self.child.wait().ok();
        self.ended.get_or_insert_with(Instant::now);
    }

    /// The `--output-format json` result.
    fn result(&self) -> Value {
        let out = fs::read_to_string(&self.stdout).unwrap_or_default();
        serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not one JSON object ({e}): {out:?}\n{}",
                self.name,
                self.diagnostics()
            )
        })
    }

    fn diagnostics(&self) -> String {
        format!(
            "{} (started {:.1}s ago, status {:?})\nstdout: {}\nstderr: {}",
            self.name,
            self.started.elapsed().as_secs_f64(),
            self.status,
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Claude {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until task `id` is completed, failing early if the worker ends first.
fn wait_completed(
    project: &Path,
    id: u64,
    limit: Duration,
    w: &mut Claude,
    model: &StandIn,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let t = task(project, id);
        if t["status"] == "completed" {
            return t;
        }
        if w.poll().is_some() || Instant::now() >= deadline {
            panic!(
                "task {id} not completed (status {}): {t:#}\n{}\n{}",
                t["status"],
                w.diagnostics(),
                model.report()
            );
        }
        sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// One worker: SessionStart registers it, PostToolUse heartbeats, the Stop hook hands over a
/// task added before the start and one added while it runs, and ends the session once the
/// worker has been idle past VINE_MAX_IDLE.
#[test]
fn a_claude_worker_takes_tasks_from_the_stop_hook_and_ends_when_idle() {
    let Some(claude) = claude_bin("a_claude_worker_takes_tasks_from_the_stop_hook") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "project");
    let first = add(
        &project,
        "Write the greeting",
        "Write 'hello' to greeting.txt. Acceptance: the file exists.",
    );
    let model = StandIn::start("w1", Some(&project.join(".vine")), Duration::ZERO);
    let max_idle = 6;
    let mut w = Claude::spawn(
        &claude,
        tmp.path(),
        &project,
        "w1",
        model.port,
        &[
            ("VINE_WORKER", "w1"),
            ("VINE_MAX_IDLE", &format!("{max_idle}s")),
            ("VINE_HOOK_WAIT", "2s"),
        ],
        "Work on the agentvine board. [warm-up]",
    );

    let t1 = wait_completed(&project, first, Duration::from_secs(60), &mut w, &model);
    // A second task, added while the worker runs, once it has idled through a Stop hook round
    // (the hook waited VINE_HOOK_WAIT for work, then handed the model a "no task yet" turn).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !model.turns().iter().any(|l| l.kind == Kind::Idle) {
        assert!(
            Instant::now() < deadline && w.poll().is_none(),
            "no idle turn after the first task\n{}\n{}",
            w.diagnostics(),
            model.report()
        );
        sleep(Duration::from_millis(50));
    }
    let second = add(
        &project,
        "Write the farewell",
        "Write 'bye' to farewell.txt. Acceptance: the file exists.",
    );
    let t2 = wait_completed(&project, second, Duration::from_secs(60), &mut w, &model);

    let status = w.wait_for(Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "claude did not end by itself within 60 s of the last task\n{}\n{}",
            w.diagnostics(),
            model.report()
        )
    });
    let ended = Utc::now();
    let log = model.report();
    assert!(
        status.success(),
        "claude exit status {status}\n{}\n{log}",
        w.diagnostics()
    );
    let result = w.result();
    assert_eq!(result["type"], "result", "{result:#}");
    assert_eq!(result["is_error"], false, "{result:#}\n{log}");
    let session = result["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();

    // Both tasks were done by w1 through the Bash tool running `vine complete`.
    for t in [&t1, &t2] {
        assert_eq!(t["claimed_by"], "w1", "{t:#}");
        assert_eq!(t["completed_by"], "w1", "{t:#}");
        assert_eq!(t["attempts"], 1, "{t:#}");
        assert_eq!(t["result"], "done by the stand-in", "{t:#}");
    }

    let turns = model.turns();
    // SessionStart ran before the first model request and registered w1 with the session id.
    let at_start = turns[0].workers.clone().expect("a board snapshot");
    assert_eq!(turns[0].kind, Kind::Prompt, "{log}");
    assert_eq!(
        at_start["w1"]["session_id"],
        session.as_str(),
        "{at_start:#}\n{log}"
    );
    assert_eq!(at_start["w1"]["status"], "active", "{at_start:#}");
    // The model saw what `vine init --claude` and the SessionStart hook set up.
    assert!(
        turns[0].saw_session_context,
        "no SessionStart context\n{log}"
    );
    assert!(turns[0].saw_claude_md, "no CLAUDE.md section\n{log}");
    assert!(
        turns[0].saw_skill,
        "the agentvine skill is not offered\n{log}"
    );
    // PostToolUse: after the warm-up tool call (which does not run vine), the heartbeat moved.
    assert_eq!(turns[1].kind, Kind::ToolResult, "{log}");
    let after_tool = turns[1].workers.clone().expect("a board snapshot");
    assert!(
        ts(&after_tool["w1"]["last_heartbeat"]) > ts(&at_start["w1"]["last_heartbeat"]),
        "last_heartbeat did not advance after a tool call:\nbefore {at_start:#}\nafter {after_tool:#}\n{log}"
    );

    // The model was handed each task by the Stop hook, ran `vine complete` once for each,
    // and the tool calls succeeded.
    for id in [first, second] {
        let handed: Vec<&Logged> = turns
            .iter()
            .filter(|l| l.kind == Kind::Claimed && l.complete.as_ref().map(|c| c.0) == Some(id))
            .collect();
        assert_eq!(handed.len(), 1, "task {id} handed over once:\n{log}");
        assert_eq!(handed[0].complete, Some((id, "w1".into(), 1)), "{log}");
    }
    let results: Vec<&(bool, String)> = turns
        .iter()
        .filter_map(|l| l.tool_result.as_ref())
        .collect();
    assert_eq!(results.len(), 3, "warm-up + two completes:\n{log}");
    assert!(
        results.iter().all(|(err, _)| !err),
        "a tool call failed:\n{log}"
    );
    // w1 idled between the two tasks, and went on afterwards.
    let pos = |id| {
        turns
            .iter()
            .position(|l| l.kind == Kind::Claimed && l.complete.as_ref().map(|c| c.0) == Some(id))
            .unwrap()
    };
    assert!(
        turns[pos(first)..pos(second)]
            .iter()
            .any(|l| l.kind == Kind::Idle),
        "no idle turn between the two tasks:\n{log}"
    );

    // It stopped by itself after the idle limit, not before, and w1 is offline.
    let idle_from = ts(&t2["completed_at"]);
    let idle_for = (ended - idle_from).num_milliseconds() as f64 / 1000.0;
    assert!(
        idle_for >= max_idle as f64 - 0.5 && idle_for < 40.0,
        "claude ended {idle_for:.1}s after the last task (idle limit {max_idle}s)\n{log}"
    );
    let ws = workers(&project);
    assert_eq!(ws["w1"]["status"], "offline", "{ws:#}");
    assert_eq!(ws["w1"]["session_id"], session.as_str(), "{ws:#}");
    eprintln!(
        "single worker: {} model turns, {} of them idle; ended {idle_for:.1}s after its last task\n{log}",
        turns.len(),
        turns.iter().filter(|l| l.kind == Kind::Idle).count()
    );
}

/// Three workers at once over ten tasks: every task is completed exactly once, by the worker
/// that claimed it.
#[test]
fn three_claude_workers_share_ten_tasks() {
    let Some(claude) = claude_bin("three_claude_workers_share_ten_tasks") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "project");
    let ids: Vec<u64> = (1..=10)
        .map(|i| {
            add(
                &project,
                &format!("Task number {i}"),
                &format!("Write {i} to out-{i}.txt."),
            )
        })
        .collect();
    let names = ["w1", "w2", "w3"];
    let models: Vec<StandIn> = names
        .iter()
        .map(|w| StandIn::start(w, None, Duration::ZERO))
        .collect();
    let mut procs: Vec<Claude> = names
        .iter()
        .zip(&models)
        .map(|(w, m)| {
            Claude::spawn(
                &claude,
                tmp.path(),
                &project,
                w,
                m.port,
                &[
                    ("VINE_WORKER", w),
                    ("VINE_MAX_IDLE", "4s"),
                    ("VINE_HOOK_WAIT", "1s"),
                ],
                "Work on the agentvine board.",
            )
        })
        .collect();
    let logs = || models.iter().map(StandIn::report).collect::<String>();
    let deadline = Instant::now() + Duration::from_secs(90);
    while procs.iter_mut().any(|p| p.poll().is_none()) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    for p in &mut procs {
        let status = p.poll();
        assert!(
            status.is_some_and(|s| s.success()),
            "{}\n{}",
            p.diagnostics(),
            logs()
        );
        assert_eq!(p.result()["is_error"], false, "{}", p.diagnostics());
    }

    // The board: every task completed once, by its claimant, on the first attempt.
    let board: BTreeMap<u64, Value> = tasks(&project)
        .into_iter()
        .map(|t| (t["id"].as_u64().unwrap(), t))
        .collect();
    for id in &ids {
        let t = &board[id];
        assert_eq!(t["status"], "completed", "{t:#}\n{}", logs());
        assert_eq!(t["attempts"], 1, "{t:#}");
        assert!(names.contains(&t["claimed_by"].as_str().unwrap()), "{t:#}");
        assert_eq!(t["completed_by"], t["claimed_by"], "{t:#}");
    }
    // The models: each task's `vine complete` was run exactly once, by the worker that had
    // claimed it, and succeeded.
    let mut runs: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for m in &models {
        let turns = m.turns();
        for (i, l) in turns.iter().enumerate() {
            if let Some((id, worker, _)) = &l.complete {
                assert_eq!(worker, &m.shared.worker, "{}", m.report());
                runs.entry(*id).or_default().push(worker.clone());
                *per_worker.entry(worker.clone()).or_default() += 1;
                let next = turns
                    .get(i + 1)
                    .and_then(|n| n.tool_result.clone())
                    .unwrap_or_else(|| panic!("no tool result after {l:?}\n{}", m.report()));
                assert!(
                    !next.0,
                    "vine complete {id} failed: {next:?}\n{}",
                    m.report()
                );
            }
        }
    }
    assert_eq!(
        runs.keys().copied().collect::<BTreeSet<u64>>(),
        ids.iter().copied().collect::<BTreeSet<u64>>(),
        "{}",
        logs()
    );
    for (id, by) in &runs {
        assert_eq!(by.len(), 1, "task {id} completed by {by:?}\n{}", logs());
        assert_eq!(board[id]["completed_by"], by[0].as_str());
    }
    // No completion was refused and kept aside as a late result.
    let comms = fs::read_to_string(project.join(".vine/agent-comms.jsonl")).unwrap_or_default();
    assert!(
        !comms
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|m| m["kind"] == "result"),
        "refused results on the log:\n{comms}"
    );
    // All three registered through SessionStart and went offline after the idle limit.
    let ws = workers(&project);
    for w in names {
        assert_eq!(ws[w]["status"], "offline", "{ws:#}");
        assert!(ws[w]["session_id"].is_string(), "{ws:#}");
    }
    eprintln!(
        "three workers: tasks per worker {per_worker:?}; run times {:?}",
        procs
            .iter()
            .map(|p| format!(
                "{:.1}s",
                p.ended
                    .map_or(p.started.elapsed(), |e| e - p.started)
                    .as_secs_f64()
            ))
            .collect::<Vec<_>>()
    );
}

/// What idling costs: model turns while there is no work, for a worker kept alive by
/// `vine hook stop` (waiting VINE_HOOK_WAIT=20s inside the hook) and one kept alive by a Stop
/// hook that blocks at once, as the original plan had it. See docs/idle-cost.md.
#[test]
fn idling_with_the_vine_stop_hook_costs_far_fewer_model_turns() {
    let Some(claude) = claude_bin("idling_with_the_vine_stop_hook_costs_far_fewer_model_turns")
    else {
        return;
    };
    let window = Duration::from_secs(
        std::env::var("AGENTVINE_IDLE_WINDOW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(45),
    );
    let tmp = TempDir::new().unwrap();
    // The naive hook: always block, at once.
    let naive_hook = tmp.path().join("block-stop.sh");
    fs::write(
        &naive_hook,
        "#!/bin/sh\ncat >/dev/null\necho '{\"decision\":\"block\",\"reason\":\"keep waiting\"}'\n",
    )
    .unwrap();
    fs::set_permissions(
        &naive_hook,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    struct Run {
        label: String,
        model: StandIn,
        proc: Claude,
    }
    let mut runs = Vec::new();
    for latency in [Duration::ZERO, Duration::from_secs(2)] {
        for naive in [false, true] {
            let name = format!(
                "{}-{}ms",
                if naive { "naive" } else { "vine" },
                latency.as_millis()
            );
            let project = project(tmp.path(), &name);
            if naive {
                // Same project, but the Stop hook replaced by the naive one.
                let path = project.join(".claude/settings.json");
                let mut s: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
                s["hooks"]["Stop"] = json!([{"hooks": [{"type": "command",
                    "command": naive_hook.display().to_string(), "timeout": 120}]}]);
                fs::write(&path, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
            }
            let model = StandIn::start("w1", None, latency);
            let proc = Claude::spawn(
                &claude,
                tmp.path(),
                &project,
                &name,
                model.port,
                &[
                    ("VINE_WORKER", "w1"),
                    ("VINE_MAX_IDLE", "10m"),
                    ("VINE_HOOK_WAIT", "20s"),
                ],
                "Work on the agentvine board.",
            );
            runs.push(Run {
                label: name,
                model,
                proc,
            });
        }
    }
    // Each run's idle period starts with its first model turn (the prompt: the board is
    // empty, so from then on it only idles) and lasts `window`.
    let deadline = Instant::now() + window + Duration::from_secs(60);
    loop {
        let done = runs.iter_mut().all(|r| {
            assert!(
                r.proc.poll().is_none(),
                "{} ended:\n{}\n{}",
                r.label,
                r.proc.diagnostics(),
                r.model.report()
            );
            r.model
                .model_requests()
                .first()
                .is_some_and(|t| r.model.shared.started.elapsed() > t.at + window)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no first model turn within a minute"
        );
        sleep(Duration::from_millis(200));
    }
    let mut counts = BTreeMap::new();
    let mut table = format!(
        "{:<13} {:>6} {:>9} {:>13} {:>14} {:>13}\n",
        "run", "turns", "turns/min", "mean gap (s)", "request MB", "last req KB"
    );
    for r in &mut runs {
        r.proc.kill();
        let turns = r.model.model_requests();
        let t0 = turns[0].at;
        let idle: Vec<&Logged> = turns
            .iter()
            .skip(1)
            .filter(|t| t.at <= t0 + window)
            .collect();
        // Steady-state rate: 60 s over the mean time from one idle turn to the next (a count
        // in a short window is coarse when turns come every 20 s).
        let gap = idle
            .last()
            .map_or(f64::NAN, |l| (l.at - t0).as_secs_f64() / idle.len() as f64);
        let per_min = 60.0 / gap;
        let bytes: usize = idle.iter().map(|t| t.bytes).sum();
        table.push_str(&format!(
            "{:<13} {:>6} {:>9.1} {:>13.2} {:>14.1} {:>13.1}\n",
            r.label,
            idle.len(),
            per_min,
            gap,
            bytes as f64 / 1e6,
            idle.last().map_or(0.0, |t| t.bytes as f64 / 1e3)
        ));
        counts.insert(r.label.clone(), idle.len());
    }
    let _ = writeln!(
        std::io::stderr(),
        "idle cost over {}s (vine: VINE_HOOK_WAIT=20s):\n{table}",
        window.as_secs()
    );
    for latency in ["0ms", "2000ms"] {
        let ours = counts[&format!("vine-{latency}")];
        let naive = counts[&format!("naive-{latency}")];
        assert!(
            ours <= (window.as_secs() / 20 + 1) as usize,
            "vine hook, latency {latency}: {ours} turns in {}s\n{table}",
            window.as_secs()
        );
        assert!(
            naive >= 3 * ours.max(1),
            "the naive hook should spin: {naive} turns vs {ours}\n{table}"
        );
    }
}

/// A worker handed a task ends its turn without doing anything (the model's first answer to
/// the hand-over is a line of text). Every Stop after a hand-over has `stop_hook_active: true`;
/// the Stop hook reminds it of the task instead of failing the attempt, and the worker then
/// completes the task on its first attempt.
#[test]
fn a_worker_that_ends_its_turn_on_a_handed_task_is_reminded_not_failed() {
    let Some(claude) = claude_bin("a_worker_that_ends_its_turn_on_a_handed_task_is_reminded")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "project");
    let id = add(
        &project,
        "Write the greeting",
        "[ignore-once] Write 'hello' to greeting.txt.",
    );
    let model = StandIn::start("w1", None, Duration::ZERO);
    let mut w = Claude::spawn(
        &claude,
        tmp.path(),
        &project,
        "w1",
        model.port,
        &[
            ("VINE_WORKER", "w1"),
            ("VINE_MAX_IDLE", "3s"),
            ("VINE_HOOK_WAIT", "1s"),
        ],
        "Work on the agentvine board.",
    );
    let t = wait_completed(&project, id, Duration::from_secs(60), &mut w, &model);
    let log = model.report();
    assert_eq!(
        t["attempts"], 1,
        "the early turn-end cost an attempt: {t:#}\n{log}"
    );
    assert_eq!(t["completed_by"], "w1", "{t:#}");
    assert!(t["last_error"].is_null(), "{t:#}\n{log}");
    let turns = model.turns();
    let handed = turns
        .iter()
        .position(|l| l.kind == Kind::Claimed)
        .unwrap_or_else(|| panic!("no hand-over\n{log}"));
    assert!(
        turns[handed].complete.is_none(),
        "the model ignored the first hand-over\n{log}"
    );
    assert_eq!(
        turns.get(handed + 1).map(|l| l.kind),
        Some(Kind::Holds),
        "the next turn is the reminder\n{log}"
    );
    w.kill();
}

/// A live worker in a long tool call (here `sleep 12` with a 3 s stale limit) makes no
/// PostToolUse heartbeat, yet never looks stale and keeps the task it holds: the keepalive the
/// SessionStart hook started heartbeats it while the `claude` process lives. After `claude` is
/// killed the keepalive exits, the heartbeats stop, and the task is taken back within the stale
/// limit (not the 30 min lease), claimable by another worker at once with the attempt counted.
#[test]
fn a_long_tool_call_keeps_the_worker_alive_until_claude_dies() {
    let Some(claude) = claude_bin("a_long_tool_call_keeps_the_worker_alive_until_claude_dies")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "project");
    vine(&project, &["init", "--stale-after", "3s"]);
    let held = vine(&project, &["add", "held during the long call"])["tasks"][0]["id"]
        .as_u64()
        .unwrap();
    let claimed = vine(&project, &["claim", "--worker", "w1"]);
    assert_eq!(claimed["claim"]["task"]["id"], held, "{claimed}");
    let show = |id: u64| vine(&project, &["show", &id.to_string()])["task"].clone();
    let model = StandIn::start("w1", None, Duration::ZERO);
    let mut w = Claude::spawn(
        &claude,
        tmp.path(),
        &project,
        "w1",
        model.port,
        &[
            ("VINE_WORKER", "w1"),
            ("VINE_MAX_IDLE", "10m"),
            ("VINE_HOOK_WAIT", "2s"),
        ],
        "Work on the agentvine board. [long-tool]",
    );
    let heartbeat = || {
        fs::read(project.join(".vine/worker-status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["w1"]["last_heartbeat"].as_str().map(|s| ts(&json!(s))))
    };
    // Watch the heartbeat from the first model turn (the tool call starts) to its result.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    // Six seconds into the call, still inside it, claude dies (killed below).
    let watched = |samples: &[(DateTime<Utc>, DateTime<Utc>)]| {
        samples
            .last()
            .zip(samples.first())
            .map_or(0, |(l, f)| (l.0 - f.0).num_milliseconds())
    };
    while watched(&samples) < 6000 {
        let turns = model.turns();
        assert!(
            !turns.iter().any(|l| l.kind == Kind::ToolResult),
            "the 12 s tool call ended before 6 s of it were watched\n{}",
            model.report()
        );
        assert!(
            Instant::now() < deadline && w.poll().is_none(),
            "no tool call\n{}\n{}",
            w.diagnostics(),
            model.report()
        );
        if !turns.is_empty()
            && let Some(hb) = heartbeat()
        {
            samples.push((Utc::now(), hb));
            // Reads show the board as the next write sees it: still w1's.
            let t = show(held);
            assert_eq!(
                (&t["status"], &t["claimed_by"]),
                (&json!("in_progress"), &json!("w1")),
                "the task stays with the live worker during its long tool call: {t}"
            );
        }
        sleep(Duration::from_millis(200));
    }
    vine(&project, &["requeue-stale"]);
    assert_eq!(
        show(held)["claimed_by"],
        "w1",
        "requeue-stale left it alone"
    );
    let log = model.report();
    let worst = samples
        .iter()
        .map(|(now, hb)| (*now - *hb).num_milliseconds())
        .max()
        .unwrap_or(i64::MAX);
    assert!(
        worst < 3000,
        "during the tool call the worker went {worst} ms without a heartbeat (stale limit 3 s)\n{samples:?}\n{log}"
    );
    let ka = keepalives_of(w.child.id());
    assert_eq!(
        ka.len(),
        1,
        "one keepalive tied to the claude process: {ka:?}"
    );

    // claude (and its hooks) killed: the keepalive exits, no heartbeat after that.
    w.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !keepalives_of(w.child.id()).is_empty() {
        assert!(Instant::now() < deadline, "the keepalive outlived claude");
        sleep(Duration::from_millis(100));
    }
    let last = heartbeat();
    sleep(Duration::from_millis(2500));
    assert_eq!(heartbeat(), last, "a heartbeat after claude died");

    // Dead: its task comes back once the stale limit passes, and another worker takes it at
    // once (a crash is not the task's failure: no retry delay, but the attempt counts).
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken_back = loop {
        let r = vine(&project, &["requeue-stale"]);
        if r["tasks"]
            .as_array()
            .is_some_and(|a| a.contains(&json!(held)))
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the dead worker's task was not taken back: {}",
            show(held)
        );
        sleep(Duration::from_millis(250));
    };
    let t = show(held);
    assert_eq!(t["status"], "pending", "{taken_back} {t}");
    assert_eq!(t["attempts"], 1, "{t}");
    assert!(t["not_before"].is_null(), "no retry delay: {t}");
    let again = vine(&project, &["claim", "--worker", "w2"]);
    assert_eq!(again["claim"]["task"]["id"], held, "{again}");
}

/// `vine init --claude --dir BOARD` with the board outside the project prints start commands
/// that work as printed: pasted into a shell (with `claude` and `vine` on the PATH and no board
/// variable), the `vine worker` command and the `claude -p` command each start a worker that
/// finds the board and does a task on it.
#[test]
fn the_start_commands_vine_init_prints_work_with_a_board_elsewhere() {
    let Some(claude) = claude_bin("the_start_commands_vine_init_prints_work") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = tmp.path().join("project");
    let board = tmp.path().join("boards").join("main");
    fs::create_dir_all(&project).unwrap();
    fs::create_dir_all(board.parent().unwrap()).unwrap();
    let out = Command::new(VINE)
        .arg("--dir")
        .arg(&board)
        .args(["init", "--claude", "--hook-command", VINE])
        .current_dir(&project)
        .env_remove("VINE_DIR")
        .env_remove("VINE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    // A printed command: a line holding `needle`, without a label such as "Start a worker: ".
    let line = |needle: &str| {
        let l = printed
            .lines()
            .map(str::trim)
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no command with {needle:?} in:\n{printed}"));
        match l.split_once(": ") {
            Some((_, command)) if !l.starts_with("cd ") => command.to_string(),
            _ => l.to_string(),
        }
    };
    for (i, needle) in ["claude -p ", "vine worker --worker w1"].iter().enumerate() {
        let command = &line(needle);
        let id = vine(
            tmp.path(),
            &[
                "--dir",
                &board.display().to_string(),
                "add",
                &format!("Task {i}"),
                "--instructions",
                "Write a file.",
            ],
        )["tasks"][0]["id"]
            .as_u64()
            .unwrap();
        let model = StandIn::start("w1", None, Duration::ZERO);
        let name = format!("pasted-{i}");
        // Pasted in the project, where `vine init --claude` ran.
        let mut w = Claude::shell(&claude, tmp.path(), &project, &name, model.port, command);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = vine(
                tmp.path(),
                &[
                    "--dir",
                    &board.display().to_string(),
                    "show",
                    &id.to_string(),
                ],
            );
            if t["task"]["status"] == "completed" {
                assert_eq!(t["task"]["completed_by"], "w1", "{t:#}");
                break;
            }
            assert!(
                Instant::now() < deadline && w.poll().is_none(),
                "`{command}` did not do task {id}: {t:#}\n{}\n{}",
                w.diagnostics(),
                model.report()
            );
            sleep(Duration::from_millis(200));
        }
        w.kill();
    }
}

/// A Stop hook that waits long inside itself is not cut off by Claude Code: the worker ends
/// its first turn with nothing to do, the hook waits (`VINE_HOOK_WAIT`, 130 s here: past the
/// 60 s the hook used to wait and the 120 s timeout `vine init --claude` used to write; the
/// settings now say 600 s), and a task added 5 s before the wait ends is handed over by that
/// same hook run, with no model turn in between.
///
/// `AGENTVINE_LONG_WAIT=SECONDS` waits that long instead; `AGENTVINE_LONG_WAIT=default` sets
/// no `VINE_HOOK_WAIT`, so the hook waits what the settings' 600 s timeout allows (540 s):
/// `AGENTVINE_LONG_WAIT=default cargo test --test claude_e2e a_long_wait -- --nocapture`
/// (see docs/idle-cost.md).
#[test]
fn a_long_wait_in_the_stop_hook_is_not_cut_off() {
    let Some(claude) = claude_bin("a_long_wait_in_the_stop_hook_is_not_cut_off") else {
        return;
    };
    let setting = std::env::var("AGENTVINE_LONG_WAIT").unwrap_or_default();
    let (wait, hook_wait) = match setting.as_str() {
        "default" => (540, None),
        s => {
            let secs: u64 = s.parse().unwrap_or(130);
            (secs, Some(format!("{secs}s")))
        }
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "project");
    let settings: Value =
        serde_json::from_slice(&fs::read(project.join(".claude/settings.json")).unwrap()).unwrap();
    assert_eq!(settings["hooks"]["Stop"][0]["hooks"][0]["timeout"], 600);
    let model = StandIn::start("w1", None, Duration::ZERO);
    let mut env = vec![("VINE_WORKER", "w1"), ("VINE_MAX_IDLE", "60m")];
    if let Some(w) = &hook_wait {
        env.push(("VINE_HOOK_WAIT", w.as_str()));
    }
    let mut w = Claude::spawn(
        &claude,
        tmp.path(),
        &project,
        "w1",
        model.port,
        &env,
        "Work on the agentvine board.",
    );
    // The first turn (the prompt) ends with nothing to do: the Stop hook starts waiting.
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.turns().is_empty() {
        assert!(
            Instant::now() < deadline && w.poll().is_none(),
            "no first turn\n{}\n{}",
            w.diagnostics(),
            model.report()
        );
        sleep(Duration::from_millis(100));
    }
    let first = Instant::now();
    sleep(Duration::from_secs(wait.saturating_sub(5)));
    assert!(
        w.poll().is_none(),
        "claude ended during the wait\n{}\n{}",
        w.diagnostics(),
        model.report()
    );
    let id = add(&project, "Late work", "Write 'late' to late.txt.");
    let added = Instant::now();
    let t = wait_completed(&project, id, Duration::from_secs(60), &mut w, &model);
    let log = model.report();
    assert_eq!(
        (&t["completed_by"], &t["attempts"]),
        (&json!("w1"), &json!(1)),
        "{t:#}\n{log}"
    );
    let turns = model.turns();
    let kinds: Vec<Kind> = turns.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds[..2],
        [Kind::Prompt, Kind::Claimed],
        "the hook that started waiting after the prompt handed the task over: no idle turn, \
         no hook cut off\n{log}"
    );
    let handed = turns[1].at.saturating_sub(turns[0].at);
    let _ = writeln!(
        std::io::stderr(),
        "long wait: VINE_HOOK_WAIT {}; task added {:.1}s after the first turn, handed over \
         {:.1}s after the first turn ({:.0} ms after the add, model request included)",
        hook_wait
            .as_deref()
            .unwrap_or("unset (from the settings' timeout)"),
        (added - first).as_secs_f64(),
        handed.as_secs_f64(),
        (handed.as_secs_f64() - (added - first).as_secs_f64()) * 1000.0
    );
    w.kill();
}

/// What idling costs with the defaults `vine init --claude` sets up: the Stop hook waits what
/// its 600 s timeout allows (540 s) before it hands the model a "no task yet" turn, so an idle
/// worker makes at most one model turn per 9 minutes. Slow (the window is 19 minutes, or
/// `AGENTVINE_IDLE_WINDOW` seconds), so run explicitly:
/// `cargo test --test claude_e2e idle_cost_with_the_default_wait -- --ignored --nocapture`
/// (see docs/idle-cost.md).
#[test]
#[ignore = "takes 19 minutes; run explicitly (docs/idle-cost.md)"]
fn idle_cost_with_the_default_wait() {
    let Some(claude) = claude_bin("idle_cost_with_the_default_wait") else {
        return;
    };
    let window = Duration::from_secs(
        std::env::var("AGENTVINE_IDLE_WINDOW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1140),
    );
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "project");
    let model = StandIn::start("w1", None, Duration::ZERO);
    let mut w = Claude::spawn(
        &claude,
        tmp.path(),
        &project,
        "w1",
        model.port,
        &[("VINE_WORKER", "w1"), ("VINE_MAX_IDLE", "60m")],
        "Work on the agentvine board.",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.model_requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no first turn\n{}",
            w.diagnostics()
        );
        sleep(Duration::from_millis(200));
    }
    let t0 = model.model_requests()[0].at;
    while model.shared.started.elapsed() < t0 + window {
        assert!(
            w.poll().is_none(),
            "claude ended while idle\n{}\n{}",
            w.diagnostics(),
            model.report()
        );
        sleep(Duration::from_secs(1));
    }
    w.kill();
    let idle: Vec<Logged> = model
        .model_requests()
        .into_iter()
        .skip(1)
        .filter(|l| l.at <= t0 + window)
        .collect();
    let gaps: Vec<String> = std::iter::once(t0)
        .chain(idle.iter().map(|l| l.at))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|p| format!("{:.1}s", (p[1] - p[0]).as_secs_f64()))
        .collect();
    let minutes = window.as_secs_f64() / 60.0;
    let _ = writeln!(
        std::io::stderr(),
        "idle cost with the default wait: {} model requests in {minutes:.1} idle minutes \
         ({:.3} per minute); gaps {gaps:?}\n{}",
        idle.len(),
        idle.len() as f64 / minutes,
        model.report()
    );
    assert!(
        idle.len() as u64 <= window.as_secs() / 540,
        "more than one model turn per 9 minutes: {} in {minutes:.1} min\n{}",
        idle.len(),
        model.report()
    );
}

// ---------------------------------------------------------------------------------------------
// vine pool
// ---------------------------------------------------------------------------------------------

/// `vine pool` in `project` with `args`, against the stand-in on `port` (as `Claude::start`
/// runs claude: a throwaway HOME, only the test's environment).
fn pool(claude: &Path, tmp: &Path, project: &Path, port: u16, args: &[&str]) -> Claude {
    let mut c = Command::new(VINE);
    c.arg("pool")
        .args(["--claude", &claude.display().to_string()])
        .args(args)
        .current_dir(project);
    Claude::start(c, tmp, "pool", port, &[])
}

/// `claude` processes running now under `pid`.
fn claude_children(pid: u32, claude: &Path) -> usize {
    let name = claude.file_name().map(|n| n.to_string_lossy().to_string());
    descendants(pid)
        .into_iter()
        .filter(|p| {
            let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let first = cmd.split(|b| *b == 0).next().unwrap_or_default();
            let first = String::from_utf8_lossy(first);
            name.as_deref().is_some_and(|n| first.ends_with(n)) || first.contains("claude")
        })
        .count()
}

/// The runs recorded on the board's sessions (only task `task`'s, when given).
fn recorded_runs(project: &Path, task: Option<u64>) -> usize {
    let v = vine(project, &["sessions", "--all"]);
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["runs"].as_array().unwrap().iter())
        .filter(|r| task.is_none_or(|id| r["task"] == id))
        .count()
}

/// Waits for `done` to hold, failing with the pool's and the model's logs after `limit`.
fn wait_until(
    limit: Duration,
    p: &mut Claude,
    model: &StandIn,
    what: &str,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        if p.poll().is_some() || Instant::now() >= deadline {
            panic!(
                "{what}: not so after {limit:?}\n{}\n{}",
                p.diagnostics(),
                model.report()
            );
        }
        sleep(Duration::from_millis(200));
    }
}

/// Two slots, eight tasks, then two idle minutes: every task is completed once, each run is
/// recorded as a session with its task, and no model request is made while there is no work
/// (a slot with nothing to do runs no Claude process). SIGTERM then stops the pool.
#[test]
fn a_pool_does_its_tasks_and_makes_no_model_request_while_idle() {
    let Some(claude) = claude_bin("a_pool_does_its_tasks_and_makes_no_model_request_while_idle")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "pool-project");
    let model = StandIn::start("pool", Some(&project.join(".vine")), Duration::ZERO);
    let ids: Vec<u64> = (0..8)
        .map(|i| add(&project, &format!("Pool task {i}"), "Report it done."))
        .collect();
    let mut p = pool(
        &claude,
        tmp.path(),
        &project,
        model.port,
        &["--workers", "2"],
    );
    let all_done = || {
        ids.iter()
            .all(|id| task(&project, *id)["status"] == "completed")
    };
    wait_until(
        Duration::from_secs(240),
        &mut p,
        &model,
        "every task completed",
        all_done,
    );
    for id in &ids {
        let t = task(&project, *id);
        assert_eq!(t["attempts"], 1, "{t:#}");
        assert!(
            t["completed_by"].as_str().unwrap().starts_with("pool-"),
            "{t:#}"
        );
    }
    // The runs are recorded (each when its claude process has ended): every task in some
    // session, with its cost read by `show`.
    let recorded = || recorded_runs(&project, None) >= ids.len();
    wait_until(
        Duration::from_secs(60),
        &mut p,
        &model,
        "every run recorded",
        recorded,
    );
    let sessions = vine(&project, &["sessions", "--all"]);
    let done_in: BTreeSet<u64> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["task"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(done_in, ids.iter().copied().collect(), "{sessions:#}");
    let shown = vine(&project, &["show", &ids[0].to_string()]);
    assert!(
        shown["task"]["cost"]["turns"].as_u64().unwrap() >= 1,
        "{shown:#}"
    );
    // The recorded tokens are the stand-in's: 10 in and 5 out for every turn it answered.
    let runs: Vec<Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["runs"].as_array().unwrap().clone())
        .collect();
    let sum = |f: &dyn Fn(&Value) -> u64| runs.iter().map(f).sum::<u64>();
    let turns = model.turns().len() as u64;
    assert_eq!(
        sum(&|r| r["turns"].as_u64().unwrap()),
        turns,
        "{}",
        model.report()
    );
    assert_eq!(
        sum(&|r| r["usage"]["input_tokens"].as_u64().unwrap()),
        10 * turns
    );
    assert_eq!(
        sum(&|r| r["usage"]["output_tokens"].as_u64().unwrap()),
        5 * turns
    );
    println!("pool: {} runs, {turns} model turns recorded", runs.len());
    // Idle: no model request and no claude process for two minutes.
    sleep(Duration::from_secs(3));
    let before = model.model_requests().len();
    let idle = Duration::from_secs(
        std::env::var("AGENTVINE_POOL_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let until = Instant::now() + idle;
    while Instant::now() < until {
        assert_eq!(
            claude_children(p.child.id(), &claude),
            0,
            "a claude process while idle"
        );
        assert!(p.poll().is_none(), "the pool ended: {}", p.diagnostics());
        sleep(Duration::from_secs(2));
    }
    let during = model.model_requests().len() - before;
    println!("pool idle for {idle:?}: {during} model requests");
    assert_eq!(during, 0, "model requests while idle\n{}", model.report());
    // SIGTERM: the pool stops, nothing stays claimed.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status();
    assert!(
        p.wait_for(Duration::from_secs(30)).is_some(),
        "the pool did not stop on SIGTERM"
    );
    let held: Vec<Value> = tasks(&project)
        .into_iter()
        .filter(|t| t["status"] == "in_progress")
        .collect();
    assert!(held.is_empty(), "{held:#?}");
}

/// A session asks a question and ends its turn: the pool parks the task (kept by its worker,
/// no Claude process, no model request while unanswered). `vine answer` resumes the same
/// session (the model sees its earlier turns) and the task is completed.
#[test]
fn a_parked_question_costs_nothing_until_the_answer_resumes_the_same_session() {
    let Some(claude) =
        claude_bin("a_parked_question_costs_nothing_until_the_answer_resumes_the_same_session")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "parked-project");
    let model = StandIn::start("pool", Some(&project.join(".vine")), Duration::ZERO);
    let id = add(
        &project,
        "Choose the database",
        "[ask] Ask which database to use.",
    );
    let mut p = pool(
        &claude,
        tmp.path(),
        &project,
        model.port,
        &["--workers", "1"],
    );
    let asked = || {
        !vine(&project, &["questions"])["questions"]
            .as_array()
            .unwrap()
            .is_empty()
    };
    wait_until(
        Duration::from_secs(120),
        &mut p,
        &model,
        "the question asked",
        asked,
    );
    // Parked: the claude process ends, and nothing is spent while nobody answers.
    let pid = p.child.id();
    let gone = || claude_children(pid, &claude) == 0;
    wait_until(
        Duration::from_secs(60),
        &mut p,
        &model,
        "the session parked",
        gone,
    );
    let t = task(&project, id);
    assert_eq!(t["status"], "in_progress", "{t:#}");
    let holder = t["claimed_by"].as_str().unwrap().to_string();
    let quiet_from = model.model_requests().len();
    sleep(Duration::from_secs(10));
    assert_eq!(
        claude_children(pid, &claude),
        0,
        "no claude process while parked"
    );
    assert_eq!(
        model.model_requests().len(),
        quiet_from,
        "no model request while parked"
    );
    let w = vine(&project, &["workers"]);
    let me = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == holder.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["state"], "waiting", "{w:#}");
    // The answer resumes the same session.
    let q = vine(&project, &["questions"])["questions"][0]["question"]["seq"]
        .as_u64()
        .unwrap();
    let answered_at = model.shared.started.elapsed();
    vine(&project, &["answer", &q.to_string(), "PostgreSQL"]);
    let done = || task(&project, id)["status"] == "completed";
    wait_until(
        Duration::from_secs(120),
        &mut p,
        &model,
        "the task completed",
        done,
    );
    // The round trip, for the record: the answer, then the resumed session's first request.
    if let Some(resumed) = model
        .model_requests()
        .iter()
        .find(|l| l.at > answered_at && l.is_turn())
    {
        eprintln!(
            "question round trip: the resumed session's first model request came {:.2} s after `vine answer`",
            (resumed.at - answered_at).as_secs_f64()
        );
    }
    let t = task(&project, id);
    assert_eq!(
        (t["attempts"].as_u64(), t["claimed_by"].as_str()),
        (Some(1), Some(holder.as_str()))
    );
    // The run is recorded when its claude process has ended, just after the task completed.
    let runs_of = |id: u64| recorded_runs(&project, Some(id));
    wait_until(
        Duration::from_secs(60),
        &mut p,
        &model,
        "both runs recorded",
        || runs_of(id) == 2,
    );
    let sessions = vine(&project, &["sessions", "--all"]);
    let s = sessions["sessions"].as_array().unwrap();
    let mine: Vec<&Value> = s
        .iter()
        .filter(|x| {
            x["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["task"] == id)
        })
        .collect();
    assert_eq!(mine.len(), 1, "one session did the task: {sessions:#}");
    let runs = mine[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{sessions:#}");
    assert_eq!(
        (runs[0]["resumed"].as_bool(), runs[1]["resumed"].as_bool()),
        (Some(false), Some(true))
    );
    // The resumed request carried the earlier conversation (the question the model asked).
    let resumed = model
        .log()
        .into_iter()
        .find(|l| l.text.contains("The answer to your question"))
        .unwrap_or_else(|| panic!("no resumed request\n{}", model.report()));
    assert!(
        resumed.saw_question,
        "the resumed session lost its history\n{}",
        model.report()
    );
    let turns_with_history = model
        .log()
        .into_iter()
        .filter(|l| l.text.contains("The answer to your question"))
        .count();
    assert_eq!(turns_with_history, 1, "{}", model.report());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(
        p.wait_for(Duration::from_secs(30)).is_some(),
        "the pool did not stop on SIGTERM"
    );
}

/// `vine pool` SIGKILLed while its session is in a long tool call: the session dies with it
/// (the runs go under a supervisor that the pool's death stops), nothing heartbeats the task
/// any more, and another worker can claim it once its short lease has run out.
#[test]
fn a_killed_pool_leaves_no_claude_behind_and_its_task_comes_back_within_the_lease() {
    let Some(claude) = claude_bin(
        "a_killed_pool_leaves_no_claude_behind_and_its_task_comes_back_within_the_lease",
    ) else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "killed-project");
    let model = StandIn::start("pool", Some(&project.join(".vine")), Duration::ZERO);
    let v = vine(
        &project,
        &[
            "add",
            "A long one",
            "--instructions",
            "[long-tool] Run the tests.",
            "--lease",
            "5s",
        ],
    );
    let id = v["tasks"][0]["id"].as_u64().unwrap();
    let mut p = pool(
        &claude,
        tmp.path(),
        &project,
        model.port,
        &["--workers", "1"],
    );
    let pid = p.child.id();
    let sleeping = || {
        descendants(pid).into_iter().any(|c| {
            fs::read(format!("/proc/{c}/cmdline"))
                .is_ok_and(|b| String::from_utf8_lossy(&b).starts_with("sleep\0"))
        })
    };
    wait_until(
        Duration::from_secs(120),
        &mut p,
        &model,
        "the long tool call running",
        sleeping,
    );
    let before: Vec<u32> = descendants(pid);
    assert!(!before.is_empty());
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
    let _ = p.wait_for(Duration::from_secs(10));
    // Everything the pool started is gone within seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive: Vec<u32> = before
            .iter()
            .copied()
            .filter(|c| Path::new(&format!("/proc/{c}")).exists())
            .filter(|c| {
                fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after the pool died: {alive:?}"
        );
        sleep(Duration::from_millis(200));
    }
    // The task comes back when its 5 s lease has run out, and another worker gets it.
    let t = task(&project, id);
    assert_eq!(t["status"], "in_progress", "{t:#}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = vine_without(&[BOARD_ENV, URL_ENV])
            .args(["claim", "--worker", "other", "--json"])
            .current_dir(&project)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if v["claim"]["task"]["id"] == id {
            assert_eq!(v["claim"]["task"]["attempts"], 2, "{v:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never came back: {v:#}"
        );
        sleep(Duration::from_millis(500));
    }
}

/// Session reuse: a task in the same group as the session's last one resumes that session
/// (the model sees the earlier task in its conversation); an unrelated one starts fresh. Each
/// choice is recorded with its reason.
#[test]
fn a_related_task_resumes_the_session_and_an_unrelated_one_starts_fresh() {
    let Some(claude) =
        claude_bin("a_related_task_resumes_the_session_and_an_unrelated_one_starts_fresh")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "reuse-project");
    let model = StandIn::start("pool", Some(&project.join(".vine")), Duration::ZERO);
    let add_meta = |desc: &str, extra: &[&str]| -> u64 {
        let mut args = vec!["add", desc, "--instructions", "Report it done."];
        args.extend_from_slice(extra);
        vine(&project, &args)["tasks"][0]["id"].as_u64().unwrap()
    };
    let a = add_meta("Schema first", &["--meta", "group=api"]);
    let b = add_meta(
        "Endpoints next",
        &["--meta", "group=api", "--after", &a.to_string()],
    );
    // Unrelated, and claimed last (low priority), not after B by a dependency (which would
    // relate it).
    let c = add_meta("Unrelated docs", &["--priority", "low"]);
    let mut p = pool(
        &claude,
        tmp.path(),
        &project,
        model.port,
        &["--workers", "1"],
    );
    let recorded = || recorded_runs(&project, None) >= 3;
    wait_until(
        Duration::from_secs(180),
        &mut p,
        &model,
        "three runs recorded",
        recorded,
    );
    let v = vine(&project, &["sessions", "--all"]);
    let sessions = v["sessions"].as_array().unwrap();
    let session_of = |task: u64| -> (String, Value) {
        sessions
            .iter()
            .find_map(|s| {
                s["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["task"] == task)
                    .map(|r| (s["id"].as_str().unwrap().to_string(), r.clone()))
            })
            .unwrap_or_else(|| panic!("task {task} in no session: {v:#}"))
    };
    let (sa, ra) = session_of(a);
    let (sb, rb) = session_of(b);
    let (sc, rc) = session_of(c);
    assert_eq!(sa, sb, "the related task resumed the session: {v:#}");
    assert_ne!(sb, sc, "the unrelated task started fresh: {v:#}");
    assert_eq!(ra["resumed"], false);
    assert_eq!(rb["resumed"], true);
    assert!(
        rb["why"].as_str().unwrap().contains("group \"api\""),
        "{rb:#}"
    );
    assert_eq!(rc["resumed"], false);
    assert!(rc["why"].as_str().unwrap().contains("unrelated"), "{rc:#}");
    // The resumed session's request carried task A's hand-over.
    let b_request = model
        .log()
        .into_iter()
        .find(|l| l.handed_over.contains(&b))
        .unwrap_or_else(|| panic!("no request for task {b}\n{}", model.report()));
    assert!(
        b_request.saw_schema_task,
        "the resumed session lost task A\n{}",
        model.report()
    );
    let c_request = model
        .log()
        .into_iter()
        .find(|l| l.handed_over.contains(&c))
        .unwrap_or_else(|| panic!("no request for task {c}\n{}", model.report()));
    assert!(!c_request.saw_schema_task, "a fresh session has no history");
    println!("reuse: A and B in session {sa}, C in {sc}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status();
    assert!(p.wait_for(Duration::from_secs(30)).is_some());
}

/// `--worktree`: two slots on one git project work in separate worktrees beside it, each on its
/// own branch; the project's own working tree is untouched; when the pool ends, clean
/// worktrees are removed and one with uncommitted work is kept and reported.
#[test]
fn pool_worktrees_keep_slots_apart_and_never_delete_uncommitted_work() {
    let Some(claude) =
        claude_bin("pool_worktrees_keep_slots_apart_and_never_delete_uncommitted_work")
    else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let project = project(tmp.path(), "git-project");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.email=t@vine", "-c", "user.name=t"])
            .args(args)
            .current_dir(&project)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    fs::write(project.join("README"), "project\n").unwrap();
    git(&["init", "-q"]);
    git(&["add", "README"]);
    git(&["commit", "-qm", "start"]);
    let status_before = git(&["status", "--porcelain"]);
    let model = StandIn::start("pool", Some(&project.join(".vine")), Duration::ZERO);
    let w: Vec<u64> = (0..3)
        .map(|i| {
            add(
                &project,
                &format!("Write {i}"),
                "[write] Write your file and commit it.",
            )
        })
        .collect();
    let d = add(
        &project,
        "Half done",
        "[dirty] Write a file and leave it uncommitted.",
    );
    let mut p = pool(
        &claude,
        tmp.path(),
        &project,
        model.port,
        &["--workers", "2", "--worktree", "--json"],
    );
    let all: Vec<u64> = w.iter().copied().chain([d]).collect();
    let done = || {
        all.iter()
            .all(|id| task(&project, *id)["status"] == "completed")
    };
    wait_until(
        Duration::from_secs(180),
        &mut p,
        &model,
        "every task completed",
        done,
    );
    // Wait for the runs to be recorded (the slots are idle again), then stop the pool.
    let recorded = || recorded_runs(&project, None) >= 4;
    wait_until(
        Duration::from_secs(60),
        &mut p,
        &model,
        "every run recorded",
        recorded,
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status();
    assert!(
        p.wait_for(Duration::from_secs(30)).is_some(),
        "the pool did not stop"
    );
    let out = fs::read_to_string(&p.stdout).unwrap();
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let worktrees: Vec<&Value> = events.iter().filter(|e| e["event"] == "worktree").collect();
    assert!(worktrees.len() >= 2, "two workers, two worktrees: {out}");
    let kept: Vec<&&Value> = worktrees
        .iter()
        .filter(|e| e["cleanup"]["removed"] == false)
        .collect();
    assert_eq!(kept.len(), 1, "only the uncommitted one is kept: {out}");
    let kept_path = PathBuf::from(kept[0]["cleanup"]["path"].as_str().unwrap());
    assert!(kept_path.join(format!("wip-{d}.txt")).is_file(), "{out}");
    for e in worktrees.iter().filter(|e| e["cleanup"]["removed"] == true) {
        assert!(
            !Path::new(e["cleanup"]["path"].as_str().unwrap()).exists(),
            "{e}"
        );
    }
    // The committed work is on the workers' branches, not in the project's tree.
    let branches = git(&["branch", "--list", "vine/*"]);
    let mut committed = BTreeSet::new();
    for b in branches
        .split_whitespace()
        .filter(|b| b.starts_with("vine/"))
    {
        for f in git(&["ls-tree", "--name-only", b]).lines() {
            if let Some(id) = f.strip_prefix("out-").and_then(|r| r.strip_suffix(".txt")) {
                committed.insert(id.parse::<u64>().unwrap());
            }
        }
    }
    assert_eq!(committed, w.iter().copied().collect(), "{branches}");
    assert_eq!(
        git(&["status", "--porcelain"]),
        status_before,
        "the project's tree changed"
    );
    for id in &all {
        assert!(!project.join(format!("out-{id}.txt")).exists());
        assert!(!project.join(format!("wip-{id}.txt")).exists());
    }
}
