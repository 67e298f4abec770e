//! What a board answers (`Reply`), and the views of tasks, workers and questions it carries.
//!
//! Plain serde types: the local store returns them directly and a server sends them over the
//! wire unchanged (`tests/op_json.rs` pins their JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::progress::Progress;
use crate::task::Task;
use crate::worker::{Worker, WorkerState};

/// A task as shown to users: the stored task plus what is derived from the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The stored task.
    #[serde(flatten)]
    pub task: Task,
    /// Pending, but a dependency failed or was cancelled: it will never be claimable.
    #[serde(default, skip_serializing_if = "is_false")]
    pub blocked: bool,
    /// Found in the archive, not on the queue.
    #[serde(default, skip_serializing_if = "is_false")]
    pub archived: bool,
    /// A pending task meant for a specialist: who it waits for, and when any worker may take
    /// it instead (derived when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// What the Claude sessions' runs on it spent (`vine show`, when any recorded a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::sessions::Totals>,
}

impl TaskView {
    /// The view of a task on the queue with nothing derived.
    pub fn of(task: Task) -> Self {
        TaskView {
            task,
            blocked: false,
            archived: false,
            fallback: None,
            cost: None,
        }
    }

    /// The view of an archived task.
    pub fn archived(task: Task) -> Self {
        TaskView {
            archived: true,
            ..TaskView::of(task)
        }
    }
}

/// Who a pending task meant for a specialist waits for, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    /// One line for people, e.g. "assigned to ghost, who has not been seen; any worker may
    /// take it in 2m 10s".
    pub note: String,
    /// From when any worker may claim it; absent for a strict task (never).
    #[serde(
        default,
        with = "crate::time::opt_ts",
        skip_serializing_if = "Option::is_none"
    )]
    pub at: Option<crate::time::Timestamp>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A successful claim: the task and what its worker needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedTask {
    /// The claimed task (in_progress, with its attempt and lease).
    pub task: Task,
    /// The content of its instruction file, when it has one that could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Why the instruction file could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions_error: Option<String>,
}

/// A worker as shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// The worker id.
    pub id: String,
    /// Derived state: working, idle, waiting, stale or offline.
    pub state: WorkerState,
    /// Tasks it holds now.
    pub tasks: Vec<u64>,
    /// The stored entry.
    #[serde(flatten)]
    pub worker: Worker,
}

/// A question with its answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionView {
    /// The question entry.
    pub question: Message,
    /// Its answers, oldest first.
    pub answers: Vec<Message>,
}

/// Counts and summary of a board.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// Pending tasks, queue and archive (as the original `get_queue_status`).
    pub pending: usize,
    /// Claimed tasks.
    pub in_progress: usize,
    /// Completed tasks, including archived ones.
    pub completed: usize,
    /// Tasks that failed for good.
    pub failed: usize,
    /// Cancelled tasks, including archived ones.
    pub cancelled: usize,
    /// All tasks the board has seen.
    pub total: usize,
    /// Pending tasks whose dependencies failed or were cancelled.
    pub blocked: usize,
    /// Tasks in the archive.
    pub archived: usize,
    /// Workers by derived state.
    pub workers: BTreeMap<String, usize>,
    /// Questions without an answer.
    pub open_questions: usize,
    /// The progress record.
    pub progress: Progress,
    /// What the Claude sessions' recorded runs spent, on the whole board and by worker
    /// (absent when none was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude: Option<ClaudeSpend>,
}

/// What the Claude sessions' recorded runs spent (see [`crate::sessions`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClaudeSpend {
    /// Sessions not ended.
    pub live_sessions: usize,
    /// Every run's totals.
    pub total: crate::sessions::Totals,
    /// Totals by worker.
    pub by_worker: BTreeMap<String, crate::sessions::Totals>,
    /// Session reuse over every session.
    #[serde(default)]
    pub reuse: crate::sessions::Reuse,
}

impl ClaudeSpend {
    /// The spend of `sessions`; `None` when they recorded no run.
    pub fn of(sessions: &[crate::sessions::SessionRecord]) -> Option<Self> {
        let mut spend = ClaudeSpend::default();
        for s in sessions {
            if s.state != crate::sessions::SessionState::Ended {
                spend.live_sessions += 1;
            }
            let t = s.totals();
            spend.total = spend.total.plus(t);
            spend.reuse = spend.reuse.plus(s.reuse());
            let w = spend.by_worker.entry(s.worker.clone()).or_default();
            *w = w.plus(t);
        }
        (spend.total.runs > 0).then_some(spend)
    }
}

/// What `vine repair` did to one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairedFile {
    /// The file (board-relative).
    pub file: String,
    /// Where the damaged original was copied.
    pub backup: String,
    /// Entries kept.
    pub kept: usize,
    /// Entries dropped, with what was wrong.
    pub dropped: Vec<String>,
}

/// What a worker does after its turn ended: the reply of `turn-ended`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// What it does next.
    pub next: Next,
    /// A held task whose attempt was failed first (the worker ended its turn twice on it
    /// without progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
}

/// What a worker does next after its turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Next {
    /// A task was claimed for it: hand it over, with its instructions.
    HandOver {
        /// The claim.
        claim: ClaimedTask,
    },
    /// It still holds a task: remind it.
    Remind {
        /// The task it holds.
        task: Task,
    },
    /// Nothing to claim yet, and the worker has been idle for less than its limit: it waits.
    /// (A worker not on the board waits too while the op's wait lasts.)
    Wait {
        /// One line saying why, e.g. "idle for 3s of 10m; waiting for work (no pending tasks)".
        reason: String,
        /// Seconds it may still wait: until its idle limit lets it go (for a worker not on
        /// the board, the rest of the op's wait).
        idle_left_secs: u64,
    },
    /// The session may end: the worker was deregistered, is not registered, or has been idle
    /// past its limit (it is now offline).
    LetGo {
        /// One line saying why.
        reason: String,
    },
}

/// The answer to a board op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// Tasks were added.
    Added {
        /// The new tasks, in the order given.
        tasks: Vec<Task>,
    },
    /// The outcome of a claim.
    Claimed {
        /// The claim, or none when nothing is claimable.
        claim: Option<ClaimedTask>,
        /// Why nothing was claimed, when nothing was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// One task after a change, or as asked for.
    Task {
        /// The task.
        task: TaskView,
    },
    /// A list of tasks.
    Tasks {
        /// The tasks, oldest first.
        tasks: Vec<TaskView>,
    },
    /// One worker after a change.
    Worker {
        /// The worker.
        worker: WorkerView,
        /// Tasks that went back to the queue because of this change.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        released: Vec<u64>,
    },
    /// All workers.
    Workers {
        /// The workers, by id.
        workers: Vec<WorkerView>,
    },
    /// What a worker does after its turn ended (the Stop hook's decision).
    Turn(Turn),
    /// Whether a worker should keep going.
    Decision {
        /// Keep the session alive.
        #[serde(rename = "continue")]
        keep_going: bool,
        /// One line saying why.
        reason: String,
        /// The task that makes it continue, when one does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<u64>,
    },
    /// The progress record.
    Progress {
        /// The record.
        progress: Progress,
    },
    /// One log entry that was written.
    Message {
        /// The entry, with its sequence number.
        message: Message,
    },
    /// Log entries that were read.
    Messages {
        /// The entries, oldest first.
        messages: Vec<Message>,
    },
    /// Questions.
    Questions {
        /// The questions, oldest first.
        questions: Vec<QuestionView>,
    },
    /// Tasks taken back from their holders (expired lease or stale holder): requeued, or
    /// failed for good when out of retries.
    Requeued {
        /// Their ids.
        tasks: Vec<u64>,
    },
    /// Tasks moved to the archive.
    Compacted {
        /// How many.
        archived: usize,
        /// How many finished tasks stay on the queue (others depend on them).
        kept: usize,
    },
    /// What repair did.
    Repaired {
        /// Files that were rebuilt.
        files: Vec<RepairedFile>,
    },
    /// The board's settings.
    Settings {
        /// The settings.
        settings: crate::settings::Settings,
    },
    /// One Claude session's record, after a change.
    Session {
        /// The record.
        session: crate::sessions::SessionRecord,
    },
    /// A Claude session that has ended.
    SessionEnded {
        /// The record.
        session: crate::sessions::SessionRecord,
    },
    /// Claude sessions' records.
    Sessions {
        /// The records, least recently active first.
        sessions: Vec<crate::sessions::SessionRecord>,
    },
    /// The board's figures.
    Metrics {
        /// The figures.
        metrics: Box<crate::metrics::Report>,
    },
    /// The board summary.
    Status {
        /// The counts.
        #[serde(flatten)]
        report: StatusReport,
    },
}

impl Reply {
    /// The task claimed or handed over in this reply, if any.
    pub fn claimed_task(&self) -> Option<&ClaimedTask> {
        match self {
            Reply::Claimed { claim: Some(c), .. }
            | Reply::Turn(Turn {
                next: Next::HandOver { claim: c },
                ..
            }) => Some(c),
            _ => None,
        }
    }

    /// The task a reply hands over to a worker (a claim, or a turn's hand-over), for the store
    /// to add its instructions and a request key.
    pub fn claimed_task_mut(&mut self) -> Option<&mut ClaimedTask> {
        match self {
            Reply::Claimed { claim: Some(c), .. }
            | Reply::Turn(Turn {
                next: Next::HandOver { claim: c },
                ..
            }) => Some(c),
            _ => None,
        }
    }
}
