//! Setting a Claude Code project up and starting workers in it, without Claude Code itself:
//! `vine init --claude` (where it records the board, the commands it prints) and the checks
//! `vine worker` makes before it starts `claude` (a stand-in script here). The same with the
//! real CLI is in `claude_e2e.rs`.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{BOARD_ENV, Server, URL_ENV, VINE, last_heartbeat, vine_without};

/// PATH with this build's `vine` first, as a user who installed it has it.
fn path_with_vine() -> String {
    format!(
        "{}:{}",
        Path::new(VINE).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `vine ARGS` in `cwd`, with none of the board or worker variables of the test's environment.
fn vine_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = vine_without(&[
        BOARD_ENV,
        URL_ENV,
        &["VINE_KEEPALIVE", "CLAUDE_PROJECT_DIR"],
    ]);
    c.args(args)
        .current_dir(cwd)
        .env("PATH", path_with_vine())
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run vine")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn settings(project: &Path) -> Value {
    serde_json::from_slice(&fs::read(project.join(".claude/settings.json")).expect("settings"))
        .expect("settings JSON")
}

fn canonical(p: &Path) -> String {
    p.canonicalize()
        .expect("canonicalize")
        .display()
        .to_string()
}

/// The line of `out` that starts (after spaces) with `prefix`.
fn line_starting<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().map(str::trim).find(|l| l.starts_with(prefix))
}

/// `vine init --claude --dir BOARD` records the board in the project's settings `env` (never a
/// key), so the hooks (which get that env from Claude Code) find it without any variable, and
/// prints start commands that name the project and the tools the worker may use.
#[test]
fn init_claude_with_a_board_elsewhere_records_it_and_prints_commands_that_work() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let board = tmp.path().join("elsewhere").join("board");
    fs::create_dir_all(&project).unwrap();
    fs::create_dir_all(board.parent().unwrap()).unwrap();
    let o = vine_in(
        tmp.path(),
        &["--dir", "elsewhere/board", "init", "--claude", "project"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    let s = settings(&project);
    assert_eq!(s["env"]["VINE_DIR"], canonical(&board), "{s:#}");
    assert!(s["env"].get("VINE_URL").is_none(), "{s:#}");

    // The printed commands: run in the project, with the worker id and the allowed tools.
    let cd = format!("cd {} && ", canonical(&project));
    let worker = line_starting(&out, &format!("{cd}vine worker --worker w1"))
        .unwrap_or_else(|| panic!("no `vine worker` command: {out}"));
    assert!(
        !worker.contains("VINE_DIR"),
        "the settings carry the board: {worker}"
    );
    let interactive = line_starting(&out, &format!("{cd}VINE_WORKER=w1 claude --allowedTools"))
        .unwrap_or_else(|| panic!("no interactive command: {out}"));
    assert!(interactive.contains("\"Bash(vine *)\""), "{interactive}");
    assert!(
        out.contains("trust"),
        "the trust requirement is explained: {out}"
    );

    // The hooks as Claude Code runs them: in the project, with the settings' env and no board
    // variable of their own; the SessionStart hook finds the board and registers the worker.
    let mut env: Vec<(String, String)> = s["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    env.push(("VINE_WORKER".into(), "w1".into()));
    env.push(("VINE_KEEPALIVE".into(), "0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let o = vine_in(&project, &["hook", "session-start"], &env);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o).contains(&format!(
            "You are agentvine worker `w1` on the board at {}",
            canonical(&board)
        )),
        "{}",
        text(&o)
    );
    let workers: Value =
        serde_json::from_slice(&fs::read(board.join("worker-status.json")).unwrap()).unwrap();
    assert_eq!(workers["w1"]["status"], "active", "{workers:#}");

    // Again without --dir: the recorded board stays the project's board.
    let o = vine_in(&project, &["init", "--claude"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(settings(&project)["env"]["VINE_DIR"], canonical(&board));
    assert!(
        !project.join(".vine").exists(),
        "no second board: {}",
        text(&o)
    );

    // A board on a server: its URL is recorded, the key never is.
    let remote = tmp.path().join("remote-project");
    fs::create_dir_all(&remote).unwrap();
    let o = vine_in(
        &remote,
        &["--url", "http://127.0.0.1:9", "init", "--claude"],
        &[("VINE_API_KEY", "secret-key-never-written")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let raw = fs::read_to_string(remote.join(".claude/settings.json")).unwrap();
    assert!(!raw.contains("secret-key-never-written"), "{raw}");
    assert_eq!(settings(&remote)["env"]["VINE_URL"], "http://127.0.0.1:9");
    assert!(!remote.join(".vine").exists());
    assert!(
        text(&o).contains("VINE_API_KEY"),
        "says the key must be exported: {}",
        text(&o)
    );
}

/// A stand-in for `claude` that records its arguments and environment, then sleeps.
fn fake_claude(dir: &Path, sleep_secs: f64) -> (PathBuf, PathBuf) {
    let script = dir.join("fake-claude.sh");
    let record = dir.join("fake-claude.ran");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"args: $*\"; env; }} > '{}'\nsleep {sleep_secs}\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, record)
}

/// `vine worker` checks before it starts `claude` that the project's hooks will find the board
/// and the worker, and refuses with exit 2 and a clear message otherwise (Claude Code shows no
/// hook error in `-p` mode).
#[test]
fn vine_worker_refuses_to_start_claude_when_the_hooks_would_not_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, ran) = fake_claude(tmp.path(), 0.0);
    let fake = fake.display().to_string();
    let project = tmp.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let board = tmp.path().join("board");
    let init = vine_in(tmp.path(), &["init", "board"], &[]);
    assert!(init.status.success());
    let board_s = board.display().to_string();
    let refuse = |args: &[&str], env: &[(&str, &str)], why: &str| {
        let _ = fs::remove_file(&ran);
        let o = vine_in(&project, args, env);
        assert_eq!(o.status.code(), Some(2), "{why}: {}", text(&o));
        assert!(!ran.exists(), "{why}: claude was started anyway");
        text(&o)
    };

    // 1. The folder is not set up: no hooks would run at all.
    let out = refuse(
        &[
            "--dir", &board_s, "worker", "--worker", "w1", "--claude", &fake,
        ],
        &[],
        "no hooks",
    );
    assert!(out.contains("vine init --claude"), "{out}");

    // 2. Set up for a board that is gone.
    let o = vine_in(&project, &["--dir", &board_s, "init", "--claude"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    fs::rename(&board, tmp.path().join("moved")).unwrap();
    let out = refuse(
        &["worker", "--worker", "w1", "--claude", &fake],
        &[],
        "board gone",
    );
    assert!(out.contains("no board at"), "{out}");
    assert!(
        out.contains(".claude/settings.json"),
        "says where the hooks' board comes from: {out}"
    );
    fs::rename(tmp.path().join("moved"), &board).unwrap();

    // 3. `--dir` names another board than the one the settings give the hooks (the settings'
    //    env wins inside Claude Code).
    let other = tmp.path().join("other");
    assert!(
        vine_in(tmp.path(), &["init", "other"], &[])
            .status
            .success()
    );
    let out = refuse(
        &[
            "--dir",
            &other.display().to_string(),
            "worker",
            "--worker",
            "w1",
            "--claude",
            &fake,
        ],
        &[],
        "two boards",
    );
    assert!(out.contains("VINE_DIR"), "{out}");

    // 4. A server the hooks cannot reach.
    let out = refuse(
        &["worker", "--worker", "w1", "--claude", &fake],
        &[("VINE_URL", "http://127.0.0.1:9"), ("VINE_RETRY_FOR", "0s")],
        "server down",
    );
    assert!(out.contains("127.0.0.1:9"), "{out}");

    // 5. A bad worker id, and hooks that run a `vine` that is not there.
    refuse(
        &["worker", "--worker", "bad id", "--claude", &fake],
        &[],
        "bad id",
    );
    let path = project.join(".claude/settings.json");
    let good = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        good.replace("\"vine hook", "\"/nonexistent/vine hook"),
    )
    .unwrap();
    let out = refuse(
        &["worker", "--worker", "w1", "--claude", &fake],
        &[],
        "hook command missing",
    );
    assert!(out.contains("/nonexistent/vine"), "{out}");
    fs::write(&path, good).unwrap();

    // Everything in place: claude starts, in the project, with the worker's environment.
    let o = vine_in(
        &project,
        &["worker", "--worker", "w1", "--claude", &fake],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rec = fs::read_to_string(&ran).expect("claude was started");
    assert!(rec.contains("VINE_WORKER=w1"), "{rec}");
    assert!(rec.contains("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP=0"), "{rec}");
    assert!(
        rec.contains("VINE_KEEPALIVE=0"),
        "vine worker heartbeats itself: {rec}"
    );
    assert!(rec.contains("--allowedTools Bash"), "{rec}");
}

/// `vine worker` heartbeats its worker while `claude` runs (every stale limit / 3), so a worker
/// in a long tool call never looks stale, and stops when `claude` ends.
#[test]
fn vine_worker_heartbeats_while_claude_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, _) = fake_claude(tmp.path(), 3.5);
    let project = tmp.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let o = vine_in(&project, &["init", "--claude"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = vine_in(&project, &["init", "--stale-after", "3s"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    // Registered, as the SessionStart hook does (the stand-in runs no hooks).
    let o = vine_in(&project, &["register", "--worker", "w1"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let beats = || last_heartbeat(&project.join(".vine"), "w1");
    let mut child = vine_without(&[&["VINE_DIR", "VINE_URL", "VINE_WORKER"]])
        .args(["worker", "--worker", "w1", "--claude"])
        .arg(&fake)
        .current_dir(&project)
        .env("PATH", path_with_vine())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if let Some(b) = beats()
            && !seen.contains(&b)
        {
            seen.push(b);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        seen.len() >= 2,
        "the worker's heartbeat moved while claude ran (3.5 s, beats every 1 s): {seen:?}"
    );
    let last = beats();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(beats(), last, "no heartbeat after claude ended");
}

/// `vine --key-file F worker` passes the key on to `claude` (and so to its hooks and the
/// model's `vine` commands) as `VINE_API_KEY_FILE` with F's absolute path; the key itself never
/// appears in the settings or the command line.
#[test]
fn vine_worker_passes_the_key_file_on_to_claude() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    fs::write(&key, "a-key-for-this-test-only\n").unwrap();
    let server = Server::start(
        &tmp.path().join("served"),
        &["--key-file", key.to_str().unwrap()],
        &[],
    );
    let url = server.url.clone();
    let project = tmp.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let (fake, record) = fake_claude(tmp.path(), 0.2);
    let o = vine_in(&project, &["--url", &url, "init", "--claude"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    // A relative key path: the session gets the absolute one.
    let o = vine_in(
        &project,
        &[
            "--url",
            &url,
            "--key-file",
            "../key",
            "worker",
            "--worker",
            "w1",
            "--claude",
            fake.to_str().unwrap(),
        ],
        &[],
    );
    drop(server);
    assert!(o.status.success(), "{}", text(&o));
    let rec = fs::read_to_string(&record).expect("claude was started");
    assert!(
        rec.lines()
            .any(|l| l == format!("VINE_API_KEY_FILE={}", canonical(&key))),
        "{rec}"
    );
    assert!(!rec.contains("a-key-for-this-test-only"), "{rec}");
    let raw = fs::read_to_string(project.join(".claude/settings.json")).unwrap();
    assert!(!raw.contains("a-key-for-this-test-only"), "{raw}");
}

/// A project set up by an earlier version has a Stop hook with a 120 s timeout, too short for
/// today's wait inside the hook (its timeout less a minute): `vine init --claude` run again
/// raises it to 600 s, keeping the command and everything else, and changes nothing more the
/// time after.
#[test]
fn init_claude_again_raises_the_stop_hook_timeout_an_earlier_version_wrote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = tmp.path().join("project");
    fs::create_dir_all(project.join(".claude")).expect("mkdir");
    let old = serde_json::json!({
        "hooks": {
            "SessionStart": [{"matcher": "startup|resume|clear|compact",
                "hooks": [{"type": "command", "command": "vine hook session-start", "timeout": 10}]}],
            "PostToolUse": [{"hooks": [{"type": "command", "command": "vine hook post-tool-use", "timeout": 5}]}],
            "Stop": [{"hooks": [{"type": "command", "command": "/usr/local/bin/vine hook stop", "timeout": 120}]}]
        },
        "permissions": {"allow": ["Bash(vine:*)"]},
        "env": {"CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "0"},
        "model": "mine"
    });
    fs::write(
        project.join(".claude/settings.json"),
        serde_json::to_vec_pretty(&old).expect("json"),
    )
    .expect("write");
    let o = vine_in(&project, &["init", "--claude"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let s = settings(&project);
    let stop = &s["hooks"]["Stop"];
    assert_eq!(stop.as_array().map(Vec::len), Some(1), "{s:#}");
    assert_eq!(stop[0]["hooks"][0]["timeout"], 600, "{s:#}");
    assert_eq!(
        stop[0]["hooks"][0]["command"],
        "/usr/local/bin/vine hook stop"
    );
    assert_eq!(s["hooks"]["PostToolUse"][0]["hooks"][0]["timeout"], 5);
    assert_eq!(s["model"], "mine");
    let once = fs::read(project.join(".claude/settings.json")).expect("read");
    let o = vine_in(&project, &["init", "--claude"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(project.join(".claude/settings.json")).expect("read"),
        once
    );
}
