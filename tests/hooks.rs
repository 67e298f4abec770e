//! The Claude Code hooks as Claude Code runs them: `vine hook <event>` with the event's JSON
//! on stdin (recorded shapes, with unknown fields, empty and broken input), checking the exact
//! output and exit codes Claude Code accepts.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BOARD_ENV, HOOK_ENV, URL_ENV, last_heartbeat, live_keepalives_of, vine_without};

/// Stop input as Claude Code 2.1 sends it, plus a field it does not have yet.
const STOP_INPUT: &str = r#"{"session_id":"8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10","transcript_path":"/tmp/t.jsonl","cwd":"/tmp","hook_event_name":"Stop","stop_hook_active":false,"last_assistant_message":"Done.","permission_mode":"default","some_future_field":{"x":[1,2]}}"#;
const SESSION_START_INPUT: &str = r#"{"session_id":"8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10","transcript_path":"/tmp/t.jsonl","cwd":"/tmp","hook_event_name":"SessionStart","source":"startup","model":"claude-x","another_new_field":true}"#;
const POST_TOOL_USE_INPUT: &str = r#"{"session_id":"8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10","transcript_path":"/tmp/t.jsonl","cwd":"/tmp","hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"ls","description":"list"},"tool_response":{"stdout":"a\n","stderr":"","interrupted":false},"tool_use_id":"toolu_01"}"#;

/// `vine` with the caller's environment ([`hook`] removes what a hook would see).
fn vine() -> Command {
    vine_without(&[])
}

/// Runs `vine --dir DIR hook EVENT` with `stdin` and extra env.
fn hook(dir: &Path, event: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut c = vine_without(&[BOARD_ENV, URL_ENV, HOOK_ENV]);
    c.arg("--dir").arg(dir).args(["hook", event]);
    // The hooks' per-session state of this test's sessions, away from every other test's.
    c.env("VINE_RUNTIME_DIR", runtime_dir(dir));
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vine");
    let mut si = child.stdin.take().expect("stdin");
    si.write_all(stdin).expect("write stdin");
    drop(si);
    child.wait_with_output().expect("wait")
}

/// The hooks' runtime directory for the sessions of the board in `dir`.
fn runtime_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("hook-runtime")
}

fn board() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let out = vine().arg("init").arg(d.path()).output().expect("init");
    assert!(out.status.success());
    d
}

fn add(dir: &Path, desc: &str) -> u64 {
    let out = vine()
        .arg("--dir")
        .arg(dir)
        .args([
            "--json",
            "add",
            desc,
            "--instructions",
            "Do the thing. Then complete it.",
        ])
        .output()
        .expect("add");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["tasks"][0]["id"].as_u64().expect("id")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The stop hook's stdout: nothing (allow) or exactly {"decision":"block","reason":...}.
fn decision(o: &Output) -> Option<String> {
    let s = stdout(o);
    if s.trim().is_empty() {
        return None;
    }
    let v: Value =
        serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON: {s:?}: {e}"));
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 2, "only decision and reason: {s}");
    assert_eq!(v["decision"], "block", "{s}");
    Some(v["reason"].as_str().expect("a reason").to_string())
}

const FAST: &[(&str, &str)] = &[("VINE_WORKER", "w1"), ("VINE_HOOK_WAIT", "0s")];

#[test]
fn stop_hands_over_a_task_for_every_input_shape() {
    for input in [
        STOP_INPUT.as_bytes(),
        b"",
        b"not json at all",
        b"{\"stop_hook_active\":\"weird\"}",
        b"[1,2,3]",
    ] {
        let b = board();
        let id = add(b.path(), "Write hello.txt");
        let o = hook(b.path(), "stop", input, FAST);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let reason = decision(&o).expect("a block");
        assert!(
            reason.contains(&format!("Task {id} is claimed for you")),
            "{reason}"
        );
        assert!(
            reason.contains("Do the thing."),
            "the instructions are in the reason: {reason}"
        );
        assert!(
            reason.contains(&format!("vine complete {id} --worker w1 --attempt 1")),
            "{reason}"
        );
    }
}

#[test]
fn stop_reminds_a_worker_of_the_task_it_holds() {
    let b = board();
    let id = add(b.path(), "One");
    decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST)).expect("claimed");
    let reason = decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST)).expect("reminder");
    assert!(
        reason.contains(&format!("You still hold task {id}")),
        "{reason}"
    );
}

/// Under `vine pool` (`VINE_POOL=1`) the Stop hook never hands a session another task: the
/// pool does. A held task is reminded of as usual, but a worker that asked about it (the
/// pooled `vine ask` records a wait and returns at once) is let go with its task kept: parked.
#[test]
fn a_pooled_session_is_let_go_parked_on_its_question_and_never_handed_work() {
    let b = board();
    let id = add(b.path(), "Needs a decision");
    let other = add(b.path(), "Another");
    let pool = [
        ("VINE_WORKER", "w1"),
        ("VINE_HOOK_WAIT", "30s"),
        ("VINE_POOL", "1"),
    ];
    // The pool claims the task for its slot (the hook would not).
    let out = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["--json", "claim", "--worker", "w1"])
        .output()
        .expect("claim");
    assert!(out.status.success());
    // Holding it, no question: a reminder, as without the pool.
    let reason = decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), &pool)).expect("reminder");
    assert!(
        reason.contains(&format!("You still hold task {id}")),
        "{reason}"
    );
    // The model asks: the command returns at once and says to end the turn.
    let out = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["ask", "Which database?"])
        .env("VINE_WORKER", "w1")
        .env("VINE_TASK", id.to_string())
        .env("VINE_POOL", "1")
        .output()
        .expect("ask");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("End your turn now"), "{said}");
    let started = Instant::now();
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), &pool);
    assert_eq!(decision(&o), None, "let go: {o:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no wait under the pool"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("parked"),
        "{o:?}"
    );
    let show = |task: u64| -> Value {
        let out = vine()
            .arg("--dir")
            .arg(b.path())
            .args(["--json", "show", &task.to_string()])
            .output()
            .expect("show");
        serde_json::from_slice::<Value>(&out.stdout).expect("json")["task"].clone()
    };
    assert_eq!(show(id)["status"], "in_progress", "the parked task is kept");
    assert_eq!(
        show(other)["status"],
        "pending",
        "no other task was handed over"
    );
    let workers = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["--json", "workers"])
        .output()
        .expect("workers");
    let v: Value = serde_json::from_slice(&workers.stdout).expect("json");
    assert_eq!(v["workers"][0]["state"], "waiting", "{v}");
}

#[test]
fn stop_waits_inside_the_hook_for_work_that_arrives() {
    let b = board();
    let dir = b.path().to_path_buf();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        add(&dir, "Arrives late")
    });
    let env = [("VINE_WORKER", "w1"), ("VINE_HOOK_WAIT", "20s")];
    let started = Instant::now();
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), &env);
    let id = adder.join().expect("adder");
    let reason = decision(&o).expect("the late task");
    assert!(
        reason.contains(&format!("Task {id} is claimed")),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it returned when the work came"
    );
}

#[test]
fn stop_keeps_an_idle_worker_then_lets_it_go_after_the_idle_limit() {
    let b = board();
    let env = [
        ("VINE_WORKER", "w1"),
        ("VINE_HOOK_WAIT", "0s"),
        ("VINE_MAX_IDLE", "2s"),
    ];
    hook(
        b.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    let reason =
        decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), &env)).expect("kept alive");
    assert!(reason.contains("No task for w1 yet"), "{reason}");
    std::thread::sleep(Duration::from_millis(2200));
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), &env);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(decision(&o), None, "allowed to stop: {o:?}");
    let w = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["--json", "workers"])
        .output()
        .expect("workers");
    let v: Value = serde_json::from_slice(&w.stdout).expect("json");
    assert_eq!(v["workers"][0]["state"], "offline", "{v}");
}

#[test]
fn stop_never_traps_a_session() {
    // No worker id: not a worker session, nothing to keep alive.
    let b = board();
    add(b.path(), "x");
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), &[]);
    assert_eq!((o.status.code(), decision(&o)), (Some(0), None));
    // No board, a damaged board, an unreachable server: the stop goes through, with a message.
    let missing = b.path().join("nope");
    let o = hook(&missing, "stop", STOP_INPUT.as_bytes(), FAST);
    assert_eq!((o.status.code(), decision(&o)), (Some(0), None));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("vine hook stop")
            && String::from_utf8_lossy(&o.stderr).contains("the stop goes through"),
        "{o:?}"
    );
    std::fs::write(b.path().join("task-queue.json"), b"{{{ damaged").expect("damage");
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST);
    assert_eq!((o.status.code(), decision(&o)), (Some(0), None));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("damaged"),
        "{o:?}"
    );
    let o = hook(
        b.path(),
        "stop",
        STOP_INPUT.as_bytes(),
        &[
            ("VINE_WORKER", "w1"),
            ("VINE_URL", "http://127.0.0.1:9"),
            ("VINE_RETRY_FOR", "1s"),
        ],
    );
    assert_eq!((o.status.code(), decision(&o)), (Some(0), None));
    // A bad worker id is an error too, and still lets the session go.
    let o = hook(
        b.path(),
        "stop",
        STOP_INPUT.as_bytes(),
        &[("VINE_WORKER", "bad id")],
    );
    assert_eq!((o.status.code(), decision(&o)), (Some(0), None));
}

#[test]
fn session_start_registers_the_worker_with_its_session_and_prints_context() {
    let b = board();
    for input in [SESSION_START_INPUT.as_bytes(), b"", b"garbage"] {
        let o = hook(
            b.path(),
            "session-start",
            input,
            &[("VINE_WORKER", "w7"), ("VINE_CAPABILITIES", "python, rust")],
        );
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let text = stdout(&o);
        assert!(text.contains("You are agentvine worker `w7`"), "{text}");
        assert!(text.contains("vine claim --worker w7"), "{text}");
    }
    let file: Value =
        serde_json::from_slice(&std::fs::read(b.path().join("worker-status.json")).expect("read"))
            .expect("json");
    assert_eq!(
        file["w7"]["capabilities"],
        serde_json::json!(["python", "rust"])
    );
    assert_eq!(
        file["w7"]["session_id"], "8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10",
        "{file}"
    );
    // A coordinator session (no worker id) gets the coordinator's context and registers nobody.
    let c = board();
    let o = hook(
        c.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &[],
    );
    assert!(stdout(&o).contains("You coordinate"), "{o:?}");
    let file = std::fs::read_to_string(c.path().join("worker-status.json")).expect("read");
    assert_eq!(file.trim(), "{}");
}

#[test]
fn post_tool_use_heartbeats_quietly_and_never_blocks_the_tool() {
    let b = board();
    let id = add(b.path(), "x");
    let out = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["--json", "claim", "--worker", "w1"])
        .output()
        .expect("claim");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["claim"]["task"]["id"], id);
    for input in [POST_TOOL_USE_INPUT.as_bytes(), b"", b"\xff\xfe"] {
        let o = hook(b.path(), "post-tool-use", input, &[("VINE_WORKER", "w1")]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert!(stdout(&o).is_empty(), "prints nothing: {o:?}");
    }
    let file: Value =
        serde_json::from_slice(&std::fs::read(b.path().join("worker-status.json")).expect("read"))
            .expect("json");
    assert!(file["w1"]["last_heartbeat"].is_string(), "{file}");
    // An unreachable server: a quick failure, ignored.
    let started = Instant::now();
    let o = hook(
        b.path(),
        "post-tool-use",
        POST_TOOL_USE_INPUT.as_bytes(),
        &[("VINE_WORKER", "w1"), ("VINE_URL", "http://127.0.0.1:9")],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retries in post-tool-use"
    );
}

/// The Stop input of a turn that continued because a Stop hook blocked: after a hand-over,
/// every Stop has `stop_hook_active: true`.
fn stop_active() -> String {
    STOP_INPUT.replace("\"stop_hook_active\":false", "\"stop_hook_active\":true")
}

fn show(dir: &Path, id: u64) -> Value {
    let show = vine()
        .arg("--dir")
        .arg(dir)
        .args(["--json", "show", &id.to_string()])
        .output()
        .expect("show");
    let v: Value = serde_json::from_slice(&show.stdout).expect("json");
    v["task"].clone()
}

#[test]
fn a_worker_that_stops_again_while_holding_its_task_cannot_loop() {
    let b = board();
    let id = add(b.path(), "Never finished");
    decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST)).expect("handed over");
    // Ends its turn at once: reminded (not failed), although stop_hook_active is true.
    let r = decision(&hook(b.path(), "stop", stop_active().as_bytes(), FAST)).expect("reminder");
    assert!(r.contains(&format!("You still hold task {id}")), "{r}");
    // Ends it again with nothing done in between: that attempt is failed.
    let o = hook(b.path(), "stop", stop_active().as_bytes(), FAST);
    assert_eq!(o.status.code(), Some(0));
    let t = show(b.path(), id);
    assert_eq!(t["status"], "pending", "the attempt was failed: {t}");
    assert_eq!(t["attempts"], 1);
    assert!(
        t["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("ended its turn twice"),
        "{t}"
    );
}

/// Recorded inputs of a worker handed a task: the first turn-end while holding it gets a
/// reminder naming the task and the exact command; a tool call in between earns another
/// reminder; only a second consecutive turn-end with no tool call fails the attempt. A
/// heartbeat that is not a tool call (the keepalive's, `vine heartbeat`) is no progress.
#[test]
fn a_worker_handed_a_task_is_reminded_and_fails_only_without_progress() {
    let b = board();
    let id = add(b.path(), "Write hello.txt");
    let handed = decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST)).expect("handed");
    assert!(
        handed.contains(&format!("Task {id} is claimed for you")),
        "{handed}"
    );
    let holds = |t: &Value| t["status"] == "in_progress" && t["attempts"] == 1;

    // 1. The model ends its turn at once (stop_hook_active: true): a reminder, not a failure.
    let r = decision(&hook(b.path(), "stop", stop_active().as_bytes(), FAST))
        .expect("a reminder, not a failed attempt");
    assert!(r.contains(&format!("You still hold task {id}")), "{r}");
    assert!(
        r.contains(&format!(
            "vine complete {id} --worker w1 --attempt 1 --result"
        )),
        "the exact command: {r}"
    );
    assert!(holds(&show(b.path(), id)), "{}", show(b.path(), id));

    // 2. It makes a tool call, then ends its turn again: progress, so reminded again.
    let o = hook(
        b.path(),
        "post-tool-use",
        POST_TOOL_USE_INPUT.as_bytes(),
        FAST,
    );
    assert_eq!(o.status.code(), Some(0));
    let r = decision(&hook(b.path(), "stop", stop_active().as_bytes(), FAST))
        .expect("reminded again after progress");
    assert!(r.contains(&format!("You still hold task {id}")), "{r}");
    assert!(holds(&show(b.path(), id)), "{}", show(b.path(), id));

    // 3. A heartbeat that is no tool call is no progress: the next turn-end fails the attempt.
    let hb = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["heartbeat", "--worker", "w1"])
        .output()
        .expect("heartbeat");
    assert!(hb.status.success());
    let o = hook(b.path(), "stop", stop_active().as_bytes(), FAST);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let t = show(b.path(), id);
    assert_eq!(t["status"], "pending", "the attempt was failed: {t}");
    assert_eq!(t["attempts"], 1, "{t}");

    // The count is the session's: a reminder given in one session is not held against another
    // session of the same worker (a resumed or restarted one).
    let id2 = add(b.path(), "Second");
    decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST)).expect("handed");
    decision(&hook(b.path(), "stop", stop_active().as_bytes(), FAST)).expect("reminder");
    let other = stop_active().replace("8c1f0a7e-1111", "9d2e1b8f-2222");
    let r = decision(&hook(b.path(), "stop", other.as_bytes(), FAST)).expect("reminder");
    assert!(r.contains(&format!("You still hold task {id2}")), "{r}");
    assert_eq!(show(b.path(), id2)["status"], "in_progress");
}

#[test]
fn a_deregistered_worker_is_let_go() {
    let b = board();
    add(b.path(), "Work that remains");
    let env = [("VINE_WORKER", "w1"), ("VINE_HOOK_WAIT", "0s")];
    hook(
        b.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    let out = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["deregister", "--worker", "w1"])
        .output()
        .expect("deregister");
    assert!(out.status.success());
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), &env);
    assert_eq!((o.status.code(), decision(&o)), (Some(0), None), "{o:?}");
}

/// Polls `f` every 100 ms until it is true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A throwaway "Claude": a shell that runs the SessionStart hook `times` times in a session of
/// its own (as Claude Code runs hooks), then `exec sleep 60` (same process, same start time),
/// with its stdout and stderr on pipes the test reads to the end.
fn fake_claude(dir: &Path, times: usize, env: &[(&str, &str)]) -> std::process::Child {
    let input = dir.join("session-start-input.json");
    std::fs::write(&input, SESSION_START_INPUT).expect("write input");
    let hook = r#"setsid "$VINE" --dir "$BOARD" hook session-start < "$INPUT"; "#;
    let script = format!("{}exec sleep 60 >/dev/null 2>&1", hook.repeat(times));
    let mut c = Command::new("bash");
    c.args(["-c", &script])
        .env("VINE", env!("CARGO_BIN_EXE_vine"))
        .env("BOARD", dir)
        .env("INPUT", &input)
        .env_remove("VINE_URL")
        .env_remove("VINE_DIR")
        .env_remove("VINE_KEEPALIVE")
        .env_remove("WORKER_ID")
        .env("VINE_RUNTIME_DIR", runtime_dir(dir))
        // Claude Code sets this for every hook it runs.
        .env("CLAUDE_PROJECT_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn bash")
}

/// Reads a child's stdout to the end on a thread; the receiver gets it at EOF.
fn read_to_eof(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = err.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx
}

/// The SessionStart hook starts one detached keepalive per Claude process: it heartbeats the
/// worker every stale limit / 3 while that process lives (a long tool call makes no
/// PostToolUse heartbeat), holds none of the hook's pipes, is not started twice for one
/// process, and exits when the process is gone (even while it is an unreaped zombie).
#[test]
fn the_session_start_keepalive_lives_and_dies_with_the_process_that_ran_the_hook() {
    let b = tempfile::tempdir().expect("tempdir");
    let init = vine()
        .arg("init")
        .arg(b.path())
        .args(["--stale-after", "3s"])
        .output()
        .expect("init");
    assert!(init.status.success());
    let mut parent = fake_claude(b.path(), 2, &[("VINE_WORKER", "w1")]);
    let owner = parent.id();
    // The hooks' output reaches its end although the keepalive lives on: it holds no pipe.
    let output = read_to_eof(&mut parent)
        .recv_timeout(Duration::from_secs(20))
        .expect("the hooks' stdout and stderr reach EOF while the keepalive runs");
    assert_eq!(
        output.matches("You are agentvine worker `w1`").count(),
        2,
        "{output}"
    );
    let registered = last_heartbeat(b.path(), "w1").expect("registered");
    assert!(
        eventually(Duration::from_secs(5), || live_keepalives_of(owner).len()
            == 1),
        "one keepalive for the process that ran the hook twice: {:?}",
        live_keepalives_of(owner)
    );
    // It heartbeats (every 1 s with a 3 s stale limit): last_heartbeat moves, twice.
    let mut seen = vec![registered.clone()];
    assert!(
        eventually(Duration::from_secs(6), || {
            let now = last_heartbeat(b.path(), "w1").unwrap_or_default();
            if !seen.contains(&now) {
                seen.push(now);
            }
            seen.len() >= 3
        }),
        "no heartbeats from the keepalive: {seen:?}"
    );
    assert_eq!(live_keepalives_of(owner).len(), 1, "still exactly one");

    // The "Claude" process dies (and stays an unreaped zombie for a while): the keepalive exits.
    parent.kill().expect("kill");
    assert!(
        eventually(Duration::from_secs(5), || live_keepalives_of(owner)
            .is_empty()),
        "the keepalive outlived its process: {:?}",
        live_keepalives_of(owner)
    );
    parent.wait().expect("reap");
    let last = last_heartbeat(b.path(), "w1");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        last_heartbeat(b.path(), "w1"),
        last,
        "a heartbeat after the end"
    );

    // With VINE_KEEPALIVE=0 (set by `vine worker`, which heartbeats itself) none is started.
    let mut parent = fake_claude(
        b.path(),
        1,
        &[("VINE_WORKER", "w2"), ("VINE_KEEPALIVE", "0")],
    );
    let owner = parent.id();
    let output = read_to_eof(&mut parent)
        .recv_timeout(Duration::from_secs(20))
        .expect("EOF");
    assert!(output.contains("You are agentvine worker `w2`"), "{output}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(live_keepalives_of(owner).is_empty());
    parent.kill().expect("kill");
    parent.wait().expect("reap");
}

/// A SessionStart hook that cannot reach the board says so in the session's context (stdout),
/// where the model sees it, and still exits 0; Claude Code would hide a line on stderr.
#[test]
fn session_start_tells_claude_when_the_board_cannot_be_reached() {
    let b = board();
    let missing = b.path().join("nope");
    let o = hook(
        &missing,
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &[("VINE_WORKER", "w1")],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("cannot reach its agentvine board"), "{text}");
    assert!(text.contains("no board at"), "the cause: {text}");
    assert!(text.contains("w1"), "{text}");
    let o = hook(
        b.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &[
            ("VINE_WORKER", "w1"),
            ("VINE_URL", "http://127.0.0.1:9"),
            ("VINE_RETRY_FOR", "0s"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        stdout(&o).contains("cannot reach its agentvine board"),
        "{o:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The Stop hook as one op: waiting woken by changes, one request per decision on a server
// ---------------------------------------------------------------------------------------------

/// `vine serve` on 127.0.0.1 for the board in `root`, stopped when dropped.
struct Serve {
    child: std::process::Child,
    port: u16,
}

impl Serve {
    fn start(root: &Path, args: &[&str]) -> Serve {
        use std::io::BufRead;
        let mut child = vine()
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(root)
            .args(args)
            .env_remove("VINE_API_KEY")
            .env_remove("VPS_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vine serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Serve { child, port }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does besides counting.
#[derive(Clone, Copy, PartialEq)]
enum Proxy {
    /// Passes everything on.
    Plain,
    /// Loses the first `/v1/op` reply (the op is applied, only the head of its reply reaches
    /// the client before the connection is closed).
    LoseFirstOpReply,
    /// Refuses `turn-ended` as a server older than it does.
    Older,
}

/// A proxy on 127.0.0.1 in front of a server: it counts the requests it passes on (one per
/// connection), and does what [`Proxy`] says.
struct Counting {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Counting {
    fn start(upstream: u16, behave: Proxy) -> Counting {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = Self::relay(client, upstream, behave, &seen);
                });
            }
        });
        Counting { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines passed on so far ("POST /v1/op", ...).
    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    fn relay(
        client: std::net::TcpStream,
        upstream: u16,
        behave: Proxy,
        seen: &std::sync::Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, Read};
        let mut from = std::io::BufReader::new(client.try_clone()?);
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
        let first_op = {
            let mut s = seen.lock().expect("lock");
            s.push(request_line.clone());
            request_line == "POST /v1/op" && s.iter().filter(|r| *r == "POST /v1/op").count() == 1
        };
        let mut to = client;
        if behave == Proxy::Older && String::from_utf8_lossy(&body).contains(r#""op":"turn-ended""#)
        {
            // What a server from before the op answers (its body parser's message).
            let body = r#"{"status":"error","message":"the request body is not the JSON this endpoint takes: op: unknown variant `turn-ended`, expected one of `add`, `claim` at line 1 column 30"}"#;
            return write!(
                to,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
        server.write_all(&head)?;
        server.write_all(b"Connection: close\r\n\r\n")?;
        server.write_all(&body)?;
        let mut reply = Vec::new();
        server.read_to_end(&mut reply)?;
        let end = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(reply.len(), |e| e + 4);
        if behave == Proxy::LoseFirstOpReply && first_op {
            return to.write_all(&reply[..end]);
        }
        to.write_all(&reply)
    }
}

/// `vine --url URL hook EVENT` with `stdin` and extra env; `dir` only names the runtime dir.
fn remote_hook(url: &str, dir: &Path, event: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut all = vec![("VINE_URL", url)];
    all.extend_from_slice(env);
    hook(dir, event, stdin, &all)
}

fn remote_add(port: u16, desc: &str) -> u64 {
    let out = vine()
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--json",
            "add",
            desc,
        ])
        .env_remove("VINE_DIR")
        .output()
        .expect("add");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["tasks"][0]["id"].as_u64().expect("id")
}

/// Against `vine serve` a Stop hook decision is one HTTP request, the whole wait included: the
/// server holds it open and answers the moment a task is added, here after the client's usual
/// request timeout (`VINE_TIMEOUT`, 2 s) has passed, which the held request's own timeout
/// (the wait plus that) covers. Idle, the same one request answers "no task yet" at the end of
/// the wait.
#[test]
fn a_stop_hook_against_a_server_is_one_request_held_until_work_arrives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("board");
    std::fs::create_dir_all(&root).expect("mkdir");
    let server = Serve::start(&root, &[]);
    let proxy = Counting::start(server.port, Proxy::Plain);
    let env = [
        ("VINE_WORKER", "w1"),
        ("VINE_HOOK_WAIT", "8s"),
        ("VINE_TIMEOUT", "2s"),
    ];
    let o = remote_hook(
        &proxy.url(),
        tmp.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    assert!(
        stdout(&o).contains("You are agentvine worker `w1`"),
        "{o:?}"
    );
    let before = proxy.requests().len();
    let port = server.port;
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(3500));
        remote_add(port, "Arrives after the client's timeout")
    });
    let o = remote_hook(
        &proxy.url(),
        tmp.path(),
        "stop",
        STOP_INPUT.as_bytes(),
        &env,
    );
    let id = adder.join().expect("adder");
    let reason = decision(&o).unwrap_or_else(|| panic!("a hand-over: {o:?}"));
    assert!(
        reason.contains(&format!("Task {id} is claimed")),
        "{reason}"
    );
    assert_eq!(
        proxy.requests()[before..],
        ["POST /v1/op".to_string()],
        "one request for the decision"
    );

    // Idle: the one request comes back when the wait is over.
    let before = proxy.requests().len();
    let o = remote_hook(
        &proxy.url(),
        tmp.path(),
        "stop",
        STOP_INPUT
            .replace("8c1f0a7e-1111", "other-session")
            .as_bytes(),
        &[
            ("VINE_WORKER", "w2"),
            ("VINE_HOOK_WAIT", "3s"),
            ("VINE_TIMEOUT", "1s"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        decision(&o),
        None,
        "w2 is not registered: let go after the wait"
    );
    assert_eq!(proxy.requests()[before..], ["POST /v1/op".to_string()]);
}

/// With two servers of one board (`VINE_URL=a,b`), a Stop hook waiting in a request held by
/// `a` goes on waiting on `b` when `a` is SIGKILLed (the same request, with what is left of the
/// wait), and gets the task added through `b`. No retries on one server are allowed, so it is
/// the failover that carries it.
#[test]
fn a_waiting_stop_hook_fails_over_to_the_next_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("board");
    std::fs::create_dir_all(&root).expect("mkdir");
    let a = Serve::start(&root, &[]);
    let b = Serve::start(&root, &[]);
    let urls = format!("http://127.0.0.1:{},http://127.0.0.1:{}", a.port, b.port);
    let env = [
        ("VINE_WORKER", "w1"),
        ("VINE_HOOK_WAIT", "20s"),
        ("VINE_RETRY_FOR", "0s"),
        ("VINE_KEEPALIVE", "0"),
    ];
    let o = remote_hook(
        &urls,
        tmp.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    assert!(
        stdout(&o).contains("You are agentvine worker `w1`"),
        "{o:?}"
    );
    let second = b.port;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(a); // SIGKILL, reaped
        std::thread::sleep(Duration::from_millis(500));
        remote_add(second, "Added after the first server died")
    });
    let started = Instant::now();
    let o = remote_hook(&urls, tmp.path(), "stop", STOP_INPUT.as_bytes(), &env);
    let id = killer.join().expect("killer");
    let reason = decision(&o).unwrap_or_else(|| panic!("a hand-over: {o:?}"));
    assert!(
        reason.contains(&format!("Task {id} is claimed")),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "handed over when the task came, not at the end of the wait: {:?}",
        started.elapsed()
    );
}

/// A held request whose reply is lost on the way (the task was claimed for the worker on the
/// server) is sent again with the same request key: the server answers with the task it
/// handed over, and claims no second one. The hand-over is never lost.
#[test]
fn a_lost_long_poll_reply_is_answered_again_with_the_same_task() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("board");
    std::fs::create_dir_all(&root).expect("mkdir");
    let server = Serve::start(&root, &[]);
    let proxy = Counting::start(server.port, Proxy::LoseFirstOpReply);
    let env = [("VINE_WORKER", "w1"), ("VINE_HOOK_WAIT", "20s")];
    // Registered directly (not through the proxy, which loses the first op reply).
    let direct = format!("http://127.0.0.1:{}", server.port);
    remote_hook(
        &direct,
        tmp.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    let port = server.port;
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        let first = remote_add(port, "first");
        (first, remote_add(port, "second"))
    });
    let o = remote_hook(
        &proxy.url(),
        tmp.path(),
        "stop",
        STOP_INPUT.as_bytes(),
        &env,
    );
    let (first, second) = adder.join().expect("adder");
    let reason = decision(&o).unwrap_or_else(|| panic!("a hand-over: {o:?}"));
    assert!(
        reason.contains(&format!("Task {first} is claimed")),
        "{reason}"
    );
    let ops = proxy
        .requests()
        .iter()
        .filter(|r| *r == "POST /v1/op")
        .count();
    assert!(
        ops >= 2,
        "the lost reply was asked for again: {:?}",
        proxy.requests()
    );
    let show = |id: u64| {
        let out = vine()
            .args(["--url", &direct, "--json", "show", &id.to_string()])
            .output()
            .expect("show");
        serde_json::from_slice::<Value>(&out.stdout).expect("json")["task"].clone()
    };
    let t = show(first);
    assert_eq!(
        (&t["status"], &t["attempts"]),
        (&json!("in_progress"), &json!(1)),
        "{t}"
    );
    assert_eq!(show(second)["status"], "pending", "no second claim");
}

/// Without `VINE_HOOK_WAIT`, the hook waits for what the Stop hook's timeout in the project's
/// settings allows (Claude Code sets `CLAUDE_PROJECT_DIR` for its hooks): here a 4 s timeout
/// gives a 2 s wait, after which an idle worker is handed its "no task yet" turn.
#[test]
fn the_default_wait_follows_the_stop_hook_timeout_in_the_settings() {
    let b = board();
    let project = b.path().join("project");
    std::fs::create_dir_all(project.join(".claude")).expect("mkdir");
    std::fs::write(
        project.join(".claude/settings.json"),
        r#"{"hooks":{"Stop":[{"hooks":[{"type":"command","command":"vine hook stop","timeout":4}]}]}}"#,
    )
    .expect("settings");
    let project = project.display().to_string();
    let env = [
        ("VINE_WORKER", "w1"),
        ("CLAUDE_PROJECT_DIR", project.as_str()),
        ("CLAUDE_CONFIG_DIR", project.as_str()),
        ("VINE_KEEPALIVE", "0"),
    ];
    hook(
        b.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    let started = Instant::now();
    let o = hook(b.path(), "stop", STOP_INPUT.as_bytes(), &env);
    let took = started.elapsed();
    let reason = decision(&o).unwrap_or_else(|| panic!("kept: {o:?}"));
    assert!(reason.contains("No task for w1 yet"), "{reason}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "waited {took:?} for a 4 s hook timeout"
    );
}

/// Workers may be upgraded before their server: against a server that refuses `turn-ended` as
/// unknown, the Stop hook decides as it did before, from the ops the server knows (the worker
/// list, the tasks in progress, `claim` while it waits, `should-continue`): it hands over work,
/// reminds of a held task, and keeps an idle worker.
#[test]
fn a_stop_hook_against_an_older_server_decides_from_the_ops_it_knows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("board");
    std::fs::create_dir_all(&root).expect("mkdir");
    let server = Serve::start(&root, &[]);
    let proxy = Counting::start(server.port, Proxy::Older);
    let env = [("VINE_WORKER", "w1"), ("VINE_HOOK_WAIT", "10s")];
    remote_hook(
        &proxy.url(),
        tmp.path(),
        "session-start",
        SESSION_START_INPUT.as_bytes(),
        &env,
    );
    let port = server.port;
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        remote_add(port, "For an older server")
    });
    let o = remote_hook(
        &proxy.url(),
        tmp.path(),
        "stop",
        STOP_INPUT.as_bytes(),
        &env,
    );
    let id = adder.join().expect("adder");
    let reason = decision(&o).unwrap_or_else(|| panic!("a hand-over: {o:?}"));
    assert!(
        reason.contains(&format!("Task {id} is claimed")),
        "{reason}"
    );
    let o = remote_hook(
        &proxy.url(),
        tmp.path(),
        "stop",
        stop_active().as_bytes(),
        &env,
    );
    let reason = decision(&o).unwrap_or_else(|| panic!("a reminder: {o:?}"));
    assert!(
        reason.contains(&format!("You still hold task {id}")),
        "{reason}"
    );
    assert!(
        proxy
            .requests()
            .iter()
            .filter(|r| *r == "POST /v1/op")
            .count()
            > 2,
        "several requests per decision: {:?}",
        proxy.requests()
    );
}
