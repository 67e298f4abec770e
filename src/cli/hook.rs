//! `vine hook stop | session-start | post-tool-use`: the Claude Code hooks, and the hidden
//! `vine hook keepalive` the SessionStart hook starts. Each hook reads Claude Code's JSON on
//! stdin (tolerating unknown fields, empty or broken input), exits 0 and never keeps a session
//! from ending: on any error the Stop hook prints a line on stderr and the stop goes through
//! (the session is allowed to end); PostToolUse errors are ignored; a SessionStart hook that
//! cannot reach the board says so in the session's context, where the model sees it.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use agentvine::hook::keepalive::{self, Keepalive};
use agentvine::hook::session::{self, SessionFile};
use agentvine::hook::{self, HookInput, StopConfig, StopDecision, process};
use agentvine::{Board, ExitCode, Op, Result, claude, op};
use serde_json::json;

use super::Output;
use super::args::HookCmd;

/// Largest hook input read from stdin.
const MAX_INPUT: u64 = 1024 * 1024;

/// Session files of sessions idle this long are removed by the next SessionStart hook.
const SESSION_FILES_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The global options a hook was started with, passed on to the keepalive it starts.
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// `--dir`.
    pub dir: Option<PathBuf>,
    /// `--url` (or `$VINE_URL`).
    pub url: Option<String>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
}

fn worker() -> Option<String> {
    ["VINE_WORKER", "WORKER_ID"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

fn env_secs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| agentvine::time::parse_duration(&v).ok())
        .unwrap_or(default)
}

/// How long the Stop hook waits for work: `$VINE_HOOK_WAIT`, else what the Stop hook's timeout
/// in the project's Claude Code settings allows (see [`hook::default_wait`]; Claude Code's
/// default timeout when the settings cannot be read).
fn stop_wait() -> Duration {
    let set = std::env::var("VINE_HOOK_WAIT")
        .ok()
        .and_then(|v| agentvine::time::parse_duration(&v).ok());
    if let Some(secs) = set {
        return Duration::from_secs(secs);
    }
    let timeout = std::env::var_os("CLAUDE_PROJECT_DIR")
        .filter(|d| !d.is_empty())
        .and_then(|d| {
            let user = super::worker::user_settings();
            claude::hook_setup(std::path::Path::new(&d), user.as_deref()).ok()
        })
        .and_then(|setup| setup.stop_timeout)
        .unwrap_or(hook::CLAUDE_HOOK_TIMEOUT);
    hook::default_wait(timeout)
}

fn read_input() -> HookInput {
    let mut buf = Vec::new();
    let _ = std::io::stdin().take(MAX_INPUT).read_to_end(&mut buf);
    HookInput::parse(&buf)
}

/// The hooks' state file of this session for `worker`: the session id from the input, else
/// the one Claude Code puts in the hook's environment.
fn session_file(input: &HookInput, worker: &str) -> SessionFile {
    let session = input
        .session_id
        .clone()
        .or_else(|| std::env::var("CLAUDE_CODE_SESSION_ID").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    SessionFile::new(session::runtime_dir(), &session, worker)
}

fn text(text: String) -> Output {
    Output {
        json: json!({}),
        text,
        exit: ExitCode::Done,
    }
}

/// Runs a hook. `open` finds the board (so `--url`, `--dir` and discovery work as usual);
/// `global` is what a keepalive started from here needs to find it too.
pub fn run(cmd: HookCmd, global: &Global, open: impl Fn(bool) -> Result<Board>) -> Output {
    if let HookCmd::Keepalive { pid, start } = cmd {
        return text(run_keepalive(pid, start, &open));
    }
    let input = read_input();
    match cmd {
        HookCmd::Stop => text(stop(&open, &input).unwrap_or_else(|e| {
            eprintln!("vine hook stop: {e} (the stop goes through: the session may end)");
            String::new()
        })),
        HookCmd::SessionStart => text(session_start(&open, &input, global)),
        HookCmd::PostToolUse => {
            if let Err(e) = post_tool_use(&open, &input) {
                eprintln!("vine hook post-tool-use: {e} (ignored; the tool call stands)");
            }
            text(String::new())
        }
        HookCmd::Keepalive { .. } => text(String::new()),
    }
}

fn stop(open: &dyn Fn(bool) -> Result<Board>, input: &HookInput) -> Result<String> {
    let Some(me) = worker() else {
        // Not a worker session (a coordinator or a person): nothing to keep alive.
        return Ok(String::new());
    };
    let board = open(false)?;
    let cfg = StopConfig {
        session: session_file(input, &me),
        worker: me,
        max_idle_secs: env_secs("VINE_MAX_IDLE", 600),
        wait: stop_wait(),
        pooled: std::env::var_os("VINE_POOL").is_some_and(|v| !v.is_empty() && v != "0"),
    };
    match hook::stop(&board, &cfg)? {
        StopDecision::Block { reason } => {
            Ok(json!({"decision": "block", "reason": reason}).to_string())
        }
        StopDecision::Allow { why } => {
            eprintln!("vine hook stop: {why}");
            Ok(String::new())
        }
    }
}

/// Registers the worker, starts its keepalive and prints the session's context; when the board
/// cannot be reached, the context says so instead.
fn session_start(
    open: &dyn Fn(bool) -> Result<Board>,
    input: &HookInput,
    global: &Global,
) -> String {
    let me = worker();
    let registered = (|| {
        let board = open(false)?;
        if let Some(id) = &me {
            let capabilities = std::env::var("VINE_CAPABILITIES")
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            board.execute(Op::Register(op::Register {
                worker: id.clone(),
                capabilities,
                session_id: input.session_id.clone(),
            }))?;
        }
        Ok::<Board, agentvine::Error>(board)
    })();
    let board = match registered {
        Ok(b) => b,
        Err(e) => {
            eprintln!("vine hook session-start: {e}");
            return hook::unreachable_context(me.as_deref(), &e.to_string());
        }
    };
    if me.is_some() {
        session::prune(&session::runtime_dir(), SESSION_FILES_KEPT);
        if let Err(e) = start_keepalive(global) {
            eprintln!("vine hook session-start: no keepalive: {e}");
        }
    }
    hook::session_context(me.as_deref(), &board.location())
}

/// Starts `vine hook keepalive` for the `claude` process that ran this hook, detached (it makes
/// its own session and closes every inherited descriptor), unless `$VINE_KEEPALIVE` is `0`
/// (`vine worker` heartbeats itself) or this hook was not run by Claude Code.
fn start_keepalive(global: &Global) -> Result<()> {
    let off = std::env::var("VINE_KEEPALIVE")
        .is_ok_and(|v| matches!(v.trim(), "0" | "off" | "no" | "false"));
    // Claude Code sets CLAUDE_PROJECT_DIR for every hook; without it (a hook run by hand or by
    // a script) there is no Claude process to follow.
    if off || std::env::var_os("CLAUDE_PROJECT_DIR").is_none() {
        return Ok(());
    }
    let Some(owner) = process::hook_owner() else {
        return Ok(());
    };
    let exe = std::env::current_exe()
        .map_err(|e| agentvine::Error::Invalid(format!("cannot find the vine binary: {e}")))?;
    let mut c = Command::new(&exe);
    if let Some(u) = &global.url {
        c.arg("--url").arg(u);
    }
    if let Some(d) = &global.dir {
        c.arg("--dir")
            .arg(d.canonicalize().unwrap_or_else(|_| d.clone()));
    }
    if let Some(k) = &global.key_file {
        c.arg("--key-file")
            .arg(k.canonicalize().unwrap_or_else(|_| k.clone()));
    }
    c.args(["hook", "keepalive", "--pid"])
        .arg(owner.pid.to_string())
        .arg("--start")
        .arg(owner.start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Not waited for: it outlives this hook; init reaps it.
    c.spawn()
        .map_err(|e| agentvine::Error::io("starting", &exe, e))?;
    Ok(())
}

/// The keepalive process: detaches from the hook (a session of its own; no descriptor of
/// Claude's kept open), then heartbeats the worker while `claude` (pid, start time) lives.
fn run_keepalive(pid: u32, start: u64, open: &dyn Fn(bool) -> Result<Board>) -> String {
    let _ = nix::unistd::setsid();
    close_inherited_fds();
    let Some(worker) = worker() else {
        return String::new();
    };
    let k = Keepalive {
        worker,
        pid,
        start,
        dir: session::runtime_dir(),
        check: Duration::from_millis(500),
    };
    // Quick requests: a server that does not answer is tried again at the next beat.
    let _ = keepalive::run(&k, &|| open(true));
    String::new()
}

/// Closes every descriptor above stderr: Claude Code hands hooks sockets that a process
/// outliving the hook must not keep open.
fn close_inherited_fds() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // The directory listing's own descriptor is closed already: EBADF, ignored.
        let _ = nix::unistd::close(fd);
    }
}

/// Counts the tool call in the session's state (progress, for the Stop hook), then heartbeats.
fn post_tool_use(open: &dyn Fn(bool) -> Result<Board>, input: &HookInput) -> Result<()> {
    let Some(me) = worker() else {
        return Ok(());
    };
    let counted = session_file(input, &me).update(|s| s.tool_calls += 1);
    // Fast and never blocking the tool: a short timeout and no retries for remote boards.
    let board = open(true)?;
    board.heartbeat(&me)?;
    counted
}
