//! `vine hook stop | session-start | post-tool-use`: the Claude Code hooks. Each reads Claude
//! Code's JSON on stdin (tolerating unknown fields, empty or broken input), and never fails a
//! session: on any error it prints a line on stderr and exits 0, letting Claude go on.

use std::io::Read;
use std::time::Duration;

use agentvine::hook::{self, HookInput, StopConfig, StopDecision};
use agentvine::{Board, ExitCode, Op, Result};
use serde_json::json;

use super::Output;
use super::args::HookCmd;

/// Largest hook input read from stdin.
const MAX_INPUT: u64 = 1024 * 1024;

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

fn read_input() -> HookInput {
    let mut buf = Vec::new();
    let _ = std::io::stdin().take(MAX_INPUT).read_to_end(&mut buf);
    HookInput::parse(&buf)
}

fn silent() -> Output {
    Output {
        json: json!({}),
        text: String::new(),
        exit: ExitCode::Done,
    }
}

/// Runs a hook. `open` finds the board (so `--url`, `--dir` and discovery work as usual).
pub fn run(cmd: HookCmd, open: impl Fn(bool) -> Result<Board>) -> Output {
    let input = read_input();
    let name = match cmd {
        HookCmd::Stop => "stop",
        HookCmd::SessionStart => "session-start",
        HookCmd::PostToolUse => "post-tool-use",
    };
    let result = match cmd {
        HookCmd::Stop => stop(&open, input.stop_hook_active.unwrap_or(false)),
        HookCmd::SessionStart => session_start(&open, &input),
        HookCmd::PostToolUse => post_tool_use(&open),
    };
    match result {
        Ok(text) => Output {
            json: json!({}),
            text,
            exit: ExitCode::Done,
        },
        Err(e) => {
            eprintln!("vine hook {name}: {e} (letting Claude go on)");
            silent()
        }
    }
}

fn stop(open: &dyn Fn(bool) -> Result<Board>, stop_hook_active: bool) -> Result<String> {
    let Some(me) = worker() else {
        // Not a worker session (a coordinator or a person): nothing to keep alive.
        return Ok(String::new());
    };
    let board = open(false)?;
    let cfg = StopConfig {
        worker: me,
        max_idle_secs: env_secs("VINE_MAX_IDLE", 600),
        wait: Duration::from_secs(env_secs("VINE_HOOK_WAIT", 60)),
        poll: Duration::from_secs(env_secs("VINE_HOOK_POLL", 2).max(1)),
        stop_hook_active,
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

fn session_start(open: &dyn Fn(bool) -> Result<Board>, input: &HookInput) -> Result<String> {
    let board = open(false)?;
    let me = worker();
    if let Some(id) = &me {
        let capabilities = std::env::var("VINE_CAPABILITIES")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        board.execute(Op::Register {
            worker: id.clone(),
            capabilities,
            session_id: input.session_id.clone(),
        })?;
    }
    Ok(hook::session_context(me.as_deref(), &board.location()))
}

fn post_tool_use(open: &dyn Fn(bool) -> Result<Board>) -> Result<String> {
    let Some(me) = worker() else {
        return Ok(String::new());
    };
    // Fast and never blocking the tool: a short timeout and no retries for remote boards.
    let board = open(true)?;
    board.heartbeat(&me)?;
    Ok(String::new())
}
