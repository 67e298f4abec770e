//! `vine pool` with a scripted `claude` (a shell script that does what the prompt asks through
//! the real `vine` and prints a result object): limits, the environment a run gets, what
//! becomes of a task a session leaves held, and the checks before anything starts. The same
//! with the real Claude Code CLI is in `claude_e2e.rs`.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{BOARD_ENV, HOOK_ENV, URL_ENV, VINE, vine_without};

/// A project set up by `vine init --claude` with its board in `.vine/`.
fn project() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let out = vine(d.path(), &["init", "--claude", "--hook-command", VINE]);
    assert!(out.status.success(), "{out:?}");
    d
}

fn vine(cwd: &Path, args: &[&str]) -> Output {
    vine_without(&[BOARD_ENV, URL_ENV, HOOK_ENV, &["VINE_POOL"]])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run vine")
}

fn json(cwd: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = vine(cwd, &a);
    assert!(out.status.success(), "vine {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn add(cwd: &Path, desc: &str) -> u64 {
    json(cwd, &["add", desc])["tasks"][0]["id"]
        .as_u64()
        .expect("id")
}

/// A `claude` stand-in: records its arguments and environment, then completes its task (or,
/// for a task whose description says `[hold]`, ends holding it), and prints a result costing
/// `cost` dollars in 3 turns.
fn fake_claude(dir: &Path, cost: f64) -> PathBuf {
    let path = dir.join("fake-claude");
    let log = dir.join("runs.log");
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "args: $*" "env: VINE_WORKER=$VINE_WORKER VINE_TASK=$VINE_TASK VINE_POOL=$VINE_POOL VINE_KEEPALIVE=$VINE_KEEPALIVE" >> {log}
case "$2" in
  *"[hold]"*) subtype=error_max_turns ;;
  *) {vine} complete --result "done by $VINE_WORKER" >/dev/null 2>&1; subtype=success ;;
esac
echo "{{\"type\":\"result\",\"subtype\":\"$subtype\",\"is_error\":false,\"session_id\":\"s-$VINE_TASK\",\"num_turns\":3,\"total_cost_usd\":{cost},\"duration_ms\":7,\"usage\":{{\"input_tokens\":30,\"output_tokens\":15}}}}"
"#,
        log = log.display(),
        vine = VINE,
    );
    fs::write(&path, script).expect("write fake claude");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    path
}

fn pool(cwd: &Path, claude: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["pool", "--claude", claude.to_str().expect("utf-8 path")];
    if !extra.contains(&"--max-idle") {
        args.extend(["--max-idle", "2s"]);
    }
    args.extend_from_slice(extra);
    let mut c = vine_without(&[BOARD_ENV, URL_ENV, HOOK_ENV, &["VINE_POOL"]]);
    c.args(&args).current_dir(cwd).stdin(Stdio::null());
    // A run never lasts long here: a hung pool fails the test instead of hanging it.
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vine pool");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    while !waiter.is_finished() {
        if std::time::Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            panic!("vine pool did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    waiter.join().expect("join")
}

#[test]
fn runs_get_the_workers_environment_and_flags_and_their_cost_is_recorded() {
    let p = project();
    let id = add(p.path(), "One");
    let claude = fake_claude(p.path(), 0.25);
    let out = pool(
        p.path(),
        &claude,
        &["--max-turns", "7", "--", "--model", "sonnet"],
    );
    assert!(out.status.success(), "{out:?}");
    let log = fs::read_to_string(p.path().join("runs.log")).expect("a run");
    assert!(
        log.contains(&format!(
            "VINE_WORKER=pool-1 VINE_TASK={id} VINE_POOL=1 VINE_KEEPALIVE=0"
        )),
        "{log}"
    );
    assert!(log.contains("--output-format json"), "{log}");
    assert!(log.contains("--max-turns 7 --model sonnet"), "{log}");
    let t = json(p.path(), &["show", &id.to_string()])["task"].clone();
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["cost"]["cost_usd"], 0.25, "{t:#}");
    assert_eq!(t["cost"]["turns"], 3, "{t:#}");
    assert_eq!(t["cost"]["usage"]["input_tokens"], 30, "{t:#}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("pool-1  task {id}  completed  3 turns  $0.2500")),
        "{text}"
    );
}

#[test]
fn the_cost_limit_stops_claiming() {
    let p = project();
    let ids: Vec<u64> = (0..4).map(|i| add(p.path(), &format!("t{i}"))).collect();
    let claude = fake_claude(p.path(), 0.5);
    let out = pool(p.path(), &claude, &["--max-cost-usd", "1"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the --max-cost-usd limit"), "{text}");
    let done = ids
        .iter()
        .filter(|id| json(p.path(), &["show", &id.to_string()])["task"]["status"] == "completed")
        .count();
    assert_eq!(done, 2, "two runs of $0.50 reach the $1 limit: {text}");
    let st = json(p.path(), &["status"]);
    assert_eq!(st["claude"]["total"]["cost_usd"], 1.0, "{st:#}");
    assert_eq!(st["pending"], 2, "{st:#}");
    // The pool's workers went offline with it (none left idle, later stale).
    let w = json(p.path(), &["workers"]);
    let states: Vec<&str> = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["offline"], "{w:#}");
}

#[test]
fn a_session_that_ends_holding_its_task_has_its_attempt_failed() {
    let p = project();
    let id = add(p.path(), "Never finished [hold]");
    let claude = fake_claude(p.path(), 0.1);
    let out = pool(p.path(), &claude, &[]);
    assert!(out.status.success(), "{out:?}");
    let t = json(p.path(), &["show", &id.to_string()])["task"].clone();
    assert!(
        t["last_error"].as_str().is_some_and(
            |e| e.contains("ended (error_max_turns) without `vine complete` or `vine fail`")
        ),
        "{t:#}"
    );
    assert!(t["attempts"].as_u64().unwrap() >= 1, "{t:#}");
    assert_ne!(t["status"], "in_progress", "nothing stays claimed: {t:#}");
}

#[test]
fn a_folder_without_the_hooks_or_bad_flags_are_refused_before_anything_runs() {
    let d = tempfile::tempdir().expect("tempdir");
    assert!(vine(d.path(), &["init"]).status.success());
    let claude = fake_claude(d.path(), 0.1);
    let out = pool(d.path(), &claude, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vine init --claude"), "{err}");
    let p = project();
    for (flags, says) in [
        (&["--max-cost-usd", "-1"][..], "--max-cost-usd"),
        (&["--workers", "0"][..], "--workers"),
        (&["--session-max-age", "soon"][..], "--session-max-age"),
        (&["--name", "bad name"][..], "pool name"),
    ] {
        let out = pool(p.path(), &claude, flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    assert!(!p.path().join("runs.log").exists(), "nothing ran");
}

#[test]
fn outside_a_git_project_worktrees_are_refused() {
    let p = project();
    let claude = fake_claude(p.path(), 0.1);
    let out = pool(p.path(), &claude, &["--worktree"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--worktree needs a git project"), "{err}");
}

/// On a terminal the pool keeps one line per slot below the run lines and redraws it in place;
/// piped, it prints plain lines only. The terminal is `script`'s (util-linux, in every Debian
/// base system).
#[test]
fn on_a_terminal_the_slots_are_redrawn_in_place() {
    let p = project();
    add(p.path(), "One");
    let claude = fake_claude(p.path(), 0.1);
    let line = format!(
        "{VINE} pool --claude {} --max-idle 2s",
        claude.to_str().expect("utf-8 path")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(p.path())
        .env_remove("VINE_DIR")
        .env_remove("VINE_URL")
        .env_remove("VINE_WORKER")
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) runs: apt-get install bsdutils");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  slot 1: pool-1 on task "), "{text}");
    assert!(
        text.contains("\u{1b}[1A\u{1b}[2K"),
        "redrawn in place: {text:?}"
    );
    // Piped: plain lines, no escapes.
    add(p.path(), "Two");
    let piped = pool(p.path(), &claude, &[]);
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains("  slot 1:"),
        "{text:?}"
    );
    assert!(text.contains("pool-1  task "), "{text}");
}

/// A session idle longer than `--session-max-idle` is ended while the pool waits for work,
/// with the reason, not left idle until the pool stops.
#[test]
fn a_session_idle_past_its_limit_is_ended_while_the_pool_waits() {
    let p = project();
    let id = add(p.path(), "One");
    let claude = fake_claude(p.path(), 0.25);
    let out = pool(
        p.path(),
        &claude,
        &["--session-max-idle", "1s", "--max-idle", "8s"],
    );
    assert!(out.status.success(), "{out:?}");
    let v = json(p.path(), &["sessions", "--all"]);
    let s = &v["sessions"][0];
    assert_eq!(s["id"], format!("s-{id}"), "{v:#}");
    assert_eq!(s["state"], "ended", "{v:#}");
    let why = s["ended_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("has been idle") && why.contains("over the 1s limit"),
        "{v:#}"
    );
}
