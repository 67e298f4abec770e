//! The Stop hook against a server older than the `turn-ended` op (it refuses the op as
//! unknown): the same decision made from several requests, as the hook made it before — the
//! worker list (deregistered?), the tasks in progress (held?), `claim` every 2 s while the
//! wait lasts, then `should-continue`. Kept so that workers can be upgraded before the server.

use std::time::{Duration, Instant};

use crate::board::Board;
use crate::error::{Error, Result};
use crate::op::turn::STALLED;
use crate::op::{Fail, Next, Op, Turn, TurnEnded};
use crate::worker::OFFLINE;

/// How often it tries to claim while it waits.
const POLL: Duration = Duration::from_secs(2);

/// True if `e` is a server's refusal of `turn-ended` as an op it does not know.
pub fn refused(e: &Error) -> bool {
    let message = match e {
        Error::Invalid(m) | Error::Remote { message: m, .. } => m,
        _ => return false,
    };
    message.contains("unknown variant `turn-ended`")
}

/// The turn `op` would give, decided with the ops an older server knows.
pub fn turn(board: &Board, op: &TurnEnded) -> Result<Turn> {
    let me = op.worker.as_str();
    let answer = |next| Ok(Turn { next, failed: None });
    if let Some(w) = board.workers()?.into_iter().find(|w| w.id == me)
        && w.worker.status == OFFLINE
        && w.worker.offline_reason.as_deref() == Some("deregistered")
    {
        let reason = format!("{me} was deregistered; the session may end");
        return answer(Next::LetGo { reason });
    }
    let mut failed = None;
    if let Some(held) = board
        .tasks(Some("in_progress"), false)?
        .into_iter()
        .find(|v| v.task.claimed_by.as_deref() == Some(me))
    {
        let t = held.task;
        if !op.stalled(&t) {
            return answer(Next::Remind { task: t });
        }
        board.execute(Op::Fail(Fail {
            task: t.id,
            worker: me.to_string(),
            attempt: Some(t.attempts),
            error: STALLED.into(),
            no_retry: false,
        }))?;
        failed = Some(t.id);
    }
    let deadline = Instant::now() + op.wait();
    loop {
        if let Some(claim) = board.claim(me)? {
            let next = Next::HandOver { claim };
            return Ok(Turn { next, failed });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(POLL.min(left));
    }
    let d = board.should_continue(me, op.max_idle_secs)?;
    let next = if d.keep_going {
        Next::Wait {
            reason: d.reason,
            idle_left_secs: 0,
        }
    } else {
        Next::LetGo { reason: d.reason }
    };
    Ok(Turn { next, failed })
}
