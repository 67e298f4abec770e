//! The Claude Code hooks as Claude Code runs them: `vine hook <event>` with the event's JSON
//! on stdin (recorded shapes, with unknown fields, empty and broken input), checking the exact
//! output and exit codes Claude Code accepts.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Stop input as Claude Code 2.1 sends it, plus a field it does not have yet.
const STOP_INPUT: &str = r#"{"session_id":"8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10","transcript_path":"/tmp/t.jsonl","cwd":"/tmp","hook_event_name":"Stop","stop_hook_active":false,"last_assistant_message":"Done.","permission_mode":"default","some_future_field":{"x":[1,2]}}"#;
const SESSION_START_INPUT: &str = r#"{"session_id":"8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10","transcript_path":"/tmp/t.jsonl","cwd":"/tmp","hook_event_name":"SessionStart","source":"startup","model":"claude-x","another_new_field":true}"#;
const POST_TOOL_USE_INPUT: &str = r#"{"session_id":"8c1f0a7e-1111-4c2b-9d55-3a8e5b0e7f10","transcript_path":"/tmp/t.jsonl","cwd":"/tmp","hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"ls","description":"list"},"tool_response":{"stdout":"a\n","stderr":"","interrupted":false},"tool_use_id":"toolu_01"}"#;

fn vine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vine"))
}

/// Runs `vine --dir DIR hook EVENT` with `stdin` and extra env.
fn hook(dir: &Path, event: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut c = vine();
    c.arg("--dir").arg(dir).args(["hook", event]);
    c.env_remove("VINE_WORKER")
        .env_remove("WORKER_ID")
        .env_remove("VINE_URL")
        .env_remove("VINE_DIR");
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

#[test]
fn stop_waits_inside_the_hook_for_work_that_arrives() {
    let b = board();
    let dir = b.path().to_path_buf();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        add(&dir, "Arrives late")
    });
    let env = [
        ("VINE_WORKER", "w1"),
        ("VINE_HOOK_WAIT", "20s"),
        ("VINE_HOOK_POLL", "1s"),
    ];
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
        String::from_utf8_lossy(&o.stderr).contains("vine hook stop"),
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

#[test]
fn a_worker_that_stops_again_while_holding_its_task_cannot_loop() {
    let b = board();
    let id = add(b.path(), "Never finished");
    decision(&hook(b.path(), "stop", STOP_INPUT.as_bytes(), FAST)).expect("handed over");
    // Ends its turn again within the same continuation, still holding the task.
    let again = STOP_INPUT.replace("\"stop_hook_active\":false", "\"stop_hook_active\":true");
    let o = hook(b.path(), "stop", again.as_bytes(), FAST);
    assert_eq!(o.status.code(), Some(0));
    let show = vine()
        .arg("--dir")
        .arg(b.path())
        .args(["--json", "show", &id.to_string()])
        .output()
        .expect("show");
    let v: Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(
        v["task"]["status"], "pending",
        "the attempt was failed: {v}"
    );
    assert_eq!(v["task"]["attempts"], 1);
    assert!(
        v["task"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("ended its turn twice"),
        "{v}"
    );
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
