//! The operations a board understands (`Op`) and what it answers (`Reply`).
//!
//! Both are plain serde types: the local store applies them directly and a remote
//! board sends them over the wire unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::Message;
use crate::progress::Progress;
use crate::task::{Priority, Task, TaskStatus};
use crate::worker::{Worker, WorkerState};

/// A task to add, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NewTask {
    /// One line saying what the task is (required, at most 4 KiB).
    pub description: String,
    /// Instruction text, written to `tasks/task-<id>-instructions.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// An instruction file already on the board (a board-relative path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction_file: Option<String>,
    /// Board paths the worker must read first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context_files: Vec<String>,
    /// The worker the task is meant for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign: Option<String>,
    /// Claim order.
    pub priority: Priority,
    /// Capabilities a worker needs to claim it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Ids of tasks that must complete first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<u64>,
    /// Retries after the first attempt (board default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Lease length in seconds (board default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Only the assignee / a worker with every required capability may claim it, ever.
    #[serde(skip_serializing_if = "is_false")]
    pub strict: bool,
    /// Seconds without a live specialist after which any worker may claim it (board default
    /// when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_after_secs: Option<u64>,
    /// Free-form data kept with the task.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// One entry of a batch add: a task plus a local key other entries can depend on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanTask {
    /// A name other entries of the same plan use in `after_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The task itself (its `after` holds ids of tasks already on the board).
    pub task: NewTask,
    /// Keys of entries of the same plan that must complete first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_keys: Vec<String>,
}

/// Which messages to read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageFilter {
    /// Only entries written after this time.
    #[serde(with = "crate::time::opt_ts", skip_serializing_if = "Option::is_none")]
    pub since: Option<crate::time::Timestamp>,
    /// Only entries with a sequence number above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Only answers to this question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Only the last N matching entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Everything a board can be asked to do. Read-only ops take no lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Add one task.
    Add {
        /// The task.
        task: NewTask,
    },
    /// Add several tasks at once, all or nothing.
    AddPlan {
        /// The entries, in order.
        tasks: Vec<PlanTask>,
    },
    /// Claim the best eligible task for a worker.
    Claim {
        /// The claiming worker.
        worker: String,
    },
    /// Mark a claimed task completed.
    Complete {
        /// The task.
        task: u64,
        /// The claimant.
        worker: String,
        /// The attempt the claim was for; a mismatch means the claim was taken back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// What the worker reports.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
    },
    /// Report a failed attempt; the task is retried with backoff or fails for good.
    Fail {
        /// The task.
        task: u64,
        /// The claimant.
        worker: String,
        /// The attempt the claim was for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// What went wrong.
        error: String,
        /// Fail for good at once instead of retrying.
        #[serde(default)]
        no_retry: bool,
    },
    /// Give a claimed task back without counting an attempt.
    Release {
        /// The task.
        task: u64,
        /// The claimant.
        worker: String,
        /// The attempt the claim was for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    /// Cancel a task that has not completed.
    Cancel {
        /// The task.
        task: u64,
        /// Why (kept as the task's last error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Put a failed task back to pending with its attempts reset.
    Retry {
        /// The task.
        task: u64,
    },
    /// Register (or re-register) a worker.
    Register {
        /// The worker id.
        worker: String,
        /// Its capabilities.
        #[serde(default)]
        capabilities: Vec<String>,
        /// The Claude Code session it runs in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
    },
    /// A sign of life; extends the leases of the worker's tasks.
    Heartbeat {
        /// The worker id.
        worker: String,
    },
    /// Take a worker offline; its claimed tasks go back to the queue.
    Deregister {
        /// The worker id.
        worker: String,
    },
    /// Ask whether an idle worker should keep its session alive.
    ShouldContinue {
        /// The worker id.
        worker: String,
        /// Idle seconds after which it should stop.
        max_idle_secs: u64,
    },
    /// Change the progress record (absent fields stay as they are).
    SetProgress {
        /// New current step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current_step: Option<Value>,
        /// New total.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_steps: Option<Value>,
        /// New status text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Keys to merge into the metadata.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        metadata: Map<String, Value>,
    },
    /// Append a message to the log.
    Send {
        /// Who sends it.
        agent: String,
        /// The text.
        message: String,
        /// The task it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<u64>,
    },
    /// Ask a question (a log entry of kind `question`).
    Ask {
        /// Who asks.
        agent: String,
        /// The question.
        question: String,
        /// The task it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<u64>,
        /// The asking worker waits for the answer for at most this many seconds: until the
        /// answer (or this time) its tasks are not taken back, and it shows as `waiting`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_secs: Option<u64>,
    },
    /// Answer a question.
    Answer {
        /// Who answers.
        agent: String,
        /// The question's sequence number.
        question: u64,
        /// The answer.
        answer: String,
    },
    /// Take back every claim whose lease has expired or whose holder is stale.
    RequeueStale,
    /// Move finished tasks to the archive.
    Compact,
    /// Rebuild damaged board files from what can be read.
    Repair,
    /// Counts and summary of the board.
    Status,
    /// List tasks.
    Tasks {
        /// Only tasks with this status (`blocked` selects blocked pending tasks).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Include archived tasks.
        #[serde(default)]
        all: bool,
    },
    /// One task, from the queue or the archive.
    Show {
        /// The task.
        task: u64,
    },
    /// All workers with their derived state.
    Workers,
    /// The progress record.
    Progress,
    /// The board's settings.
    Settings,
    /// Read the message log.
    ReadMessages {
        /// Which entries.
        #[serde(default)]
        filter: MessageFilter,
    },
    /// Questions, open ones unless `all`.
    Questions {
        /// Include answered questions.
        #[serde(default)]
        all: bool,
    },
}

impl Op {
    /// True for ops that only read the board.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Op::Status
                | Op::Tasks { .. }
                | Op::Show { .. }
                | Op::Workers
                | Op::Progress
                | Op::Settings
                | Op::ReadMessages { .. }
                | Op::Questions { .. }
        )
    }

    /// The op's name as on the wire and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::AddPlan { .. } => "add-plan",
            Op::Claim { .. } => "claim",
            Op::Complete { .. } => "complete",
            Op::Fail { .. } => "fail",
            Op::Release { .. } => "release",
            Op::Cancel { .. } => "cancel",
            Op::Retry { .. } => "retry",
            Op::Register { .. } => "register",
            Op::Heartbeat { .. } => "heartbeat",
            Op::Deregister { .. } => "deregister",
            Op::ShouldContinue { .. } => "should-continue",
            Op::SetProgress { .. } => "set-progress",
            Op::Send { .. } => "send",
            Op::Ask { .. } => "ask",
            Op::Answer { .. } => "answer",
            Op::RequeueStale => "requeue-stale",
            Op::Compact => "compact",
            Op::Repair => "repair",
            Op::Status => "status",
            Op::Tasks { .. } => "tasks",
            Op::Show { .. } => "show",
            Op::Workers => "workers",
            Op::Progress => "progress",
            Op::Settings => "settings",
            Op::ReadMessages { .. } => "read-messages",
            Op::Questions { .. } => "questions",
        }
    }
}

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
}

impl TaskView {
    /// The view of a task on the queue with nothing derived.
    pub fn of(task: Task) -> Self {
        TaskView {
            task,
            blocked: false,
            archived: false,
            fallback: None,
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
pub struct Claim {
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
        claim: Option<Claim>,
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
    /// The board summary.
    Status {
        /// The counts.
        #[serde(flatten)]
        report: StatusReport,
    },
}

impl TaskStatus {
    /// Counts `tasks` by status.
    pub fn count<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> BTreeMap<TaskStatus, usize> {
        let mut m = BTreeMap::new();
        for t in tasks {
            *m.entry(t.status).or_insert(0) += 1;
        }
        m
    }
}
