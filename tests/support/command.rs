//! Running `vine`: the command with chosen variables of the caller's environment removed, and
//! what one run printed ([`Run`]) with the checks made on its output.

use std::process::{Command, ExitStatus, Output, Stdio};

use serde_json::{Value, json};

/// This build's `vine`.
pub const VINE: &str = env!("CARGO_BIN_EXE_vine");

/// The variables that pick a local board, the worker or its task.
pub const BOARD_ENV: &[&str] = &["VINE_DIR", "VINE_WORKER", "WORKER_ID", "VINE_TASK"];
/// The variable that picks a remote board.
pub const URL_ENV: &[&str] = &["VINE_URL"];
/// The variables that give a client its key or change how it talks to a server.
pub const CLIENT_ENV: &[&str] = &[
    "VINE_API_KEY",
    "VPS_API_KEY",
    "VINE_API_KEY_FILE",
    "VINE_RETRY_FOR",
    "VINE_TIMEOUT",
    "VINE_CA_CERT",
    "VINE_VERBOSE",
];
/// The variable that puts `vine serve`'s board in PostgreSQL.
pub const STORE_ENV: &[&str] = &["VINE_STORE"];
/// The variable that names `vine` on a server reached through `/execute`.
pub const REMOTE_BIN_ENV: &[&str] = &["VINE_REMOTE_BIN"];
/// The variables Claude Code sets for a hook, and the hooks' own switch.
pub const HOOK_ENV: &[&str] = &[
    "VINE_KEEPALIVE",
    "CLAUDE_PROJECT_DIR",
    "CLAUDE_CODE_SESSION_ID",
];
/// Everything that picks a board, a worker or a server, or changes how a client talks to one.
pub const ISOLATED: &[&[&str]] = &[BOARD_ENV, URL_ENV, CLIENT_ENV, REMOTE_BIN_ENV, STORE_ENV];

/// `vine` with every variable of `sets` removed from its environment.
pub fn vine_without(sets: &[&[&str]]) -> Command {
    let mut c = Command::new(VINE);
    for var in sets.iter().copied().flatten() {
        c.env_remove(var);
    }
    c
}

/// `vine` (an `assert_cmd` command: stdin empty) without the board and worker variables.
pub fn vine() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("vine").expect("the vine binary is built");
    for var in BOARD_ENV {
        c.env_remove(var);
    }
    c
}

/// The same as [`vine`] as a std command, for processes that run in the background.
pub fn vine_std() -> Command {
    vine_without(&[BOARD_ENV])
}

/// `vine` with none of the [`ISOLATED`] variables, plus `env`; stdin empty, output piped.
pub fn isolated(env: &[(&str, &str)]) -> Command {
    let mut c = vine_without(ISOLATED);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// What one `vine` process did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status,
        }
    }
}

impl Run {
    /// Ended by a signal (a test's SIGKILL).
    pub fn killed(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal().is_some()
    }

    /// The one JSON object `--json` prints (on one line).
    pub fn json(&self) -> Value {
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON value ({e}); exit {}\nstdout: {}\nstderr: {}",
                self.code, self.stdout, self.stderr
            )
        });
        assert!(
            v.is_object(),
            "stdout is not a JSON object: {}",
            self.stdout
        );
        assert_eq!(
            self.stdout.trim_end().lines().count(),
            1,
            "--json prints one line: {:?}",
            self.stdout
        );
        v
    }

    /// Stdout parsed as JSON, whatever its shape and however many lines it takes.
    pub fn stdout_json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "vine printed no JSON object ({e}); status {:?}\nstdout: {}\nstderr: {}",
                self.status, self.stdout, self.stderr
            )
        })
    }
}

/// Runs a std command to its end.
pub fn run(c: &mut Command) -> Run {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {VINE}: {e}"))
        .into()
}

/// Runs an `assert_cmd` command to its end.
pub fn run_cmd(c: &mut assert_cmd::Command) -> Run {
    c.output().expect("vine runs").into()
}

/// Parses the whole of stdout as exactly one JSON object and checks its envelope against the
/// exit code: `"ok": true` for 0 (and 3 for a decision or an empty claim), otherwise
/// `{"ok": false, "error": {"kind", "code", "message"}}` with the process's exit code.
pub fn one_object(r: &Run) -> Value {
    let v = r.json();
    match v["ok"].as_bool() {
        Some(true) => assert!(
            r.code == 0 || r.code == 3,
            "ok:true with exit code {}: {}",
            r.code,
            r.stdout
        ),
        Some(false) => {
            assert_ne!(r.code, 0, "ok:false with exit code 0: {}", r.stdout);
            assert_eq!(
                v["error"]["code"].as_i64(),
                Some(i64::from(r.code)),
                "error.code is the exit code: {}",
                r.stdout
            );
            assert!(
                v["error"]["kind"].as_str().is_some_and(|k| !k.is_empty()),
                "error.kind: {}",
                r.stdout
            );
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "error.message: {}",
                r.stdout
            );
        }
        None => panic!("no boolean \"ok\" field: {}", r.stdout),
    }
    v
}

/// Asserts a failure in text mode: exit `code`, nothing on stdout, `vine: ...` on stderr.
pub fn assert_error(r: &Run, code: i32, what: &str) {
    assert_eq!(r.code, code, "{what}: {r:?}");
    assert!(
        r.stdout.is_empty(),
        "{what}: an error prints nothing on stdout: {r:?}"
    );
    assert!(r.stderr.starts_with("vine: "), "{what}: {r:?}");
}

/// [`assert_error`], and the error is one line; returns that line.
pub fn assert_fails(r: &Run, code: i32, what: &str) -> String {
    assert_error(r, code, what);
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "{what}: the error is one line: {:?}",
        r.stderr
    );
    r.stderr.trim_end().to_string()
}

/// Asserts a failure in `--json` mode: `{"ok": false, "error": {"code": code, "kind": kind,
/// "message": ...}}`.
pub fn assert_json_fails(r: &Run, code: i32, kind: &str, what: &str) -> Value {
    assert_eq!(r.code, code, "{what}: {r:?}");
    let v = r.json();
    assert_eq!(v["ok"], json!(false), "{what}: {v}");
    assert_eq!(v["error"]["code"], json!(code), "{what}: {v}");
    assert_eq!(v["error"]["kind"], json!(kind), "{what}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    v
}
