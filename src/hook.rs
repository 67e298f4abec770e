//! Claude Code hooks: what `vine hook stop`, `vine hook session-start` and
//! `vine hook post-tool-use` decide. The CLI reads Claude Code's JSON from stdin and prints
//! the reply; this module holds the decisions, so programs and tests can call them directly.
//!
//! The Stop hook keeps a worker's session alive only while there is something for it to do,
//! and waits for work inside the hook (bounded well below the hook's timeout) instead of
//! making the model spin. It never traps a session: on any error the CLI lets the stop go
//! through (the session is allowed to end).
//!
//! Beside the decisions: [`session`] (what a session's hooks remember between calls: tool
//! calls and the last reminder), [`keepalive`] (heartbeats tied to the `claude` process, not
//! to tool calls), [`process`] (finding that process and telling whether it lives) and
//! [`older`] (the Stop hook's decision against a server that predates `turn-ended`).

pub mod keepalive;
pub mod older;
pub mod process;
pub mod session;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::board::Board;
use crate::error::Result;
use crate::op::{ClaimedTask, Next, Reminder, TurnEnded};
use crate::rules::one_line;
use session::SessionFile;

/// What Claude Code sends to every hook (the fields agentvine reads; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HookInput {
    /// The Claude Code session.
    pub session_id: Option<String>,
    /// The event name (`Stop`, `SessionStart`, `PostToolUse`).
    pub hook_event_name: Option<String>,
    /// Stop: Claude is already continuing because a Stop hook blocked.
    pub stop_hook_active: Option<bool>,
    /// SessionStart: `startup`, `resume`, `clear` or `compact`.
    pub source: Option<String>,
    /// Everything else Claude Code sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl HookInput {
    /// Parses hook input leniently: empty or broken input reads as no fields.
    pub fn parse(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// How the Stop hook behaves.
#[derive(Debug, Clone)]
pub struct StopConfig {
    /// The worker id.
    pub worker: String,
    /// Idle time after which the worker may stop (`$VINE_MAX_IDLE`, default 10 min).
    pub max_idle_secs: u64,
    /// How long to wait for work inside the hook before handing a turn back (`$VINE_HOOK_WAIT`;
    /// by default the Stop hook's timeout in the settings less a margin, see [`default_wait`]).
    pub wait: Duration,
    /// The session's hook state: the tool calls made and the last reminder given, which decide
    /// whether a worker holding a task is reminded or its attempt failed.
    pub session: SessionFile,
    /// The session runs under `vine pool` (`$VINE_POOL`): it is never handed another task or
    /// kept waiting, and a held task waiting on a question is parked (see `TurnEnded::pooled`).
    pub pooled: bool,
}

/// The Stop hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopDecision {
    /// Let the session stop.
    Allow {
        /// Why (for stderr and logs).
        why: String,
    },
    /// Keep it going; `reason` becomes Claude's next instruction.
    Block {
        /// The instruction.
        reason: String,
    },
}

/// The timeout Claude Code gives a command hook that sets none (seconds).
pub const CLAUDE_HOOK_TIMEOUT: u64 = 600;

/// The time a Stop hook keeps in hand below its timeout: a remote board that stops answering
/// is retried for `$VINE_RETRY_FOR` (30 s) before the hook gives up.
pub const STOP_MARGIN: u64 = 60;

/// How long the Stop hook waits for work when `$VINE_HOOK_WAIT` is not set, for a hook whose
/// timeout is `timeout_secs`: the timeout less [`STOP_MARGIN`], or half of a short timeout
/// (540 s for Claude Code's default 600 s; 60 s for the 120 s earlier versions wrote).
pub fn default_wait(timeout_secs: u64) -> Duration {
    Duration::from_secs(
        timeout_secs
            .saturating_sub(STOP_MARGIN)
            .max(timeout_secs / 2),
    )
}

/// Decides whether a worker's session stops: one `turn-ended` op (see [`crate::op::turn`]).
///
/// A worker that ends its turn while holding a task is reminded of it, with the exact command
/// to finish it. It is judged by its progress, not by Claude Code's `stop_hook_active` (which
/// is true for every turn after a hand-over): while it makes tool calls between turn-ends it
/// is reminded again; a second consecutive turn-end with no tool call since the reminder fails
/// that attempt (retried later, up to the task's retries), so a session never loops on a task.
/// Heartbeats that are not tool calls (the keepalive's) are no progress. Otherwise a task is
/// claimed and handed over, waiting for one up to `cfg.wait` (the board answers the moment one
/// can be claimed); with none, the worker is kept while idle below its limit. A worker taken
/// offline with `vine deregister` is let go.
pub fn stop(board: &Board, cfg: &StopConfig) -> Result<StopDecision> {
    let me = cfg.worker.as_str();
    let session = cfg.session.read();
    let op = TurnEnded {
        worker: me.to_string(),
        max_idle_secs: cfg.max_idle_secs,
        tool_calls: session.tool_calls,
        reminded: session.reminded,
        wait_secs: if cfg.pooled { 0 } else { cfg.wait.as_secs() },
        pooled: cfg.pooled,
    };
    let turn = match board.turn_ended(op.clone()) {
        // A server older than the op: the same decision from the ops it knows.
        Err(e) if older::refused(&e) => older::turn(board, &op)?,
        turn => turn?,
    };
    match (&turn.next, turn.failed) {
        (Next::Remind { task }, _) => {
            let reminder = Reminder {
                task: task.id,
                attempt: task.attempts,
                tool_calls: session.tool_calls,
            };
            cfg.session.update(|s| s.reminded = Some(reminder))?;
        }
        (_, Some(_)) => cfg.session.update(|s| s.reminded = None)?,
        _ => {}
    }
    Ok(match turn.next {
        Next::HandOver { claim } => StopDecision::Block {
            reason: claimed_reason(&claim, me),
        },
        Next::Remind { task: t } => StopDecision::Block {
            reason: format!(
                "You still hold task {id}: {desc}. Finish it, then run `vine complete {id} --worker {me} --attempt {a} --result \"<what you did>\"` \
                 (or `vine fail {id} --worker {me} --attempt {a} --error \"<why>\"` if it cannot be done, or `vine release {id} --worker {me}` to give it back). \
                 If you end your turn again without running any command, this attempt is failed.",
                id = t.id,
                desc = one_line(&t.description),
                a = t.attempts,
            ),
        },
        Next::Wait { reason, .. } => StopDecision::Block {
            reason: format!(
                "No task for {me} yet ({reason}). There is nothing to do now: reply with one short line and end your turn; \
                 the Stop hook keeps waiting for work and will hand you the next task."
            ),
        },
        Next::LetGo { reason } => StopDecision::Allow { why: reason },
    })
}

/// The instruction handed to Claude for a task just claimed for it.
pub fn claimed_reason(c: &ClaimedTask, me: &str) -> String {
    let t = &c.task;
    let mut s = task_brief(c);
    s.push_str(&format!(
        "\nWhen done run `vine complete {id} --worker {me} --attempt {a} --result \"<what you did>\"`. \
         If it cannot be done run `vine fail {id} --worker {me} --attempt {a} --error \"<why>\"`. \
         To ask the coordinator: `vine ask \"<question>\" --worker {me} --task {id} --wait`.",
        id = t.id,
        a = t.attempts
    ));
    s
}

/// What a session is told of a task claimed for it: its description, its instructions inline,
/// its context files and metadata (the Stop hook's hand-over and `vine pool`'s prompt add the
/// commands that fit them).
pub fn task_brief(c: &ClaimedTask) -> String {
    let t = &c.task;
    let mut s = format!(
        "Task {id} is claimed for you: {desc}.",
        id = t.id,
        desc = one_line(&t.description)
    );
    match (&c.instructions, &t.instruction_file) {
        (Some(text), Some(f)) => {
            s.push_str(&format!("\n\nInstructions ({f}):\n{}\n", text.trim_end()));
        }
        (None, Some(f)) => s.push_str(&format!(
            " Its instruction file {f} could not be read here; read it with `vine vps read {f}` or from the board."
        )),
        _ => {}
    }
    if !t.context_files.is_empty() {
        s.push_str(&format!(
            "\nRead these context files first: {}.",
            t.context_files.join(", ")
        ));
    }
    if !t.metadata.is_empty() {
        s.push_str(&format!(
            "\nMetadata: {}.",
            Value::Object(t.metadata.clone())
        ));
    }
    s
}

/// The context block `vine hook session-start` prints for a worker or the coordinator.
pub fn session_context(worker: Option<&str>, board_location: &str) -> String {
    match worker {
        Some(me) => format!(
            "You are agentvine worker `{me}` on the board at {board_location}. You have no other context: everything \
             you need is in the task's instruction and context files.\n\
             - Get work: `vine claim --worker {me}` (prints the task and its instructions; exit 3 = nothing to do).\n\
             - Finish: `vine complete ID --worker {me} --attempt N --result \"...\"`; give up: `vine fail ID --worker {me} --error \"...\"`.\n\
             - Ask: `vine ask \"question\" --worker {me} --task ID --wait` (waits for the answer).\n\
             - When you have nothing to do, end your turn: the Stop hook hands you the next task or lets you stop after the idle limit."
        ),
        None => format!(
            "agentvine board at {board_location}. You coordinate: break the goal into tasks with self-contained \
             instructions (`vine add \"...\" --instructions-from FILE --context PATH`), watch with `vine status`, \
             `vine tasks`, `vine workers`, answer workers with `vine questions` and `vine answer N \"...\"`."
        ),
    }
}

/// The context `vine hook session-start` prints when it cannot work (no board found, the server
/// unreachable, the key refused): Claude Code hides a hook's stderr in `-p` mode, so the model
/// is told, and can tell the user.
pub fn unreachable_context(worker: Option<&str>, error: &str) -> String {
    let who = match worker {
        Some(me) => format!(
            "This session was meant to be agentvine worker `{me}`, but it is not registered and the Stop hook cannot hand it tasks."
        ),
        None => "The `vine` commands will fail the same way.".to_string(),
    };
    format!(
        "agentvine: this session cannot reach its agentvine board: {error}\n{who} \
         Tell the user this error as it is and stop; do not try to work around it. \
         (To fix: run `vine status` in this folder to see the problem; `vine init --claude --dir BOARD` \
         or `vine --url URL init --claude` records the board in .claude/settings.json.)",
        error = one_line(error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_input_is_lenient() {
        let i =
            HookInput::parse(br#"{"session_id":"abc","stop_hook_active":true,"new_field":[1]}"#);
        assert_eq!(i.session_id.as_deref(), Some("abc"));
        assert_eq!(i.stop_hook_active, Some(true));
        assert!(i.extra.contains_key("new_field"));
        assert!(HookInput::parse(b"").session_id.is_none());
        assert!(HookInput::parse(b"garbage{").session_id.is_none());
        assert!(
            HookInput::parse(br#"{"session_id": 5}"#)
                .session_id
                .is_none()
        );
    }
}
