//! [`Board`]: the one type programs use, whatever the board's location.
//!
//! ```no_run
//! use agentvine::{Board, NewTask};
//! let board = Board::init("/tmp/demo-board")?;
//! let task = board.add(NewTask { description: "Write hello.txt".into(), ..Default::default() })?;
//! if let Some(claim) = board.claim("w1")? {
//!     board.complete(claim.task.id, "w1", Some("done".into()))?;
//! }
//! # let _ = task;
//! # Ok::<(), agentvine::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::op::{
    self, ClaimedTask, MessageFilter, NewTask, Op, PlanTask, QuestionView, Reply, StatusReport,
    TaskView, Turn, WorkerView,
};
use crate::progress::Progress;
use crate::settings::Settings;
use crate::store::Transport;
use crate::store::local::LocalStore;
use crate::store::paths::DEFAULT_DIR;
use crate::task::{StatusFilter, Task};

/// A handle on a board. Cheap to clone; every method is one op on the board.
#[derive(Clone)]
pub struct Board {
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("location", &self.transport.location())
            .finish()
    }
}

/// What [`Board::should_continue`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Keep the session alive.
    pub keep_going: bool,
    /// One line saying why.
    pub reason: String,
    /// The task that makes it continue, if any.
    pub task: Option<u64>,
}

impl Board {
    /// Opens an existing board in a local directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self::with_transport(LocalStore::open(dir)?))
    }

    /// Creates (or keeps) a board in a local directory and opens it.
    pub fn init(dir: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self::with_transport(LocalStore::init(dir, None)?))
    }

    /// Creates a board with the given settings (other existing files are kept as they are).
    pub fn init_with(dir: impl Into<PathBuf>, settings: Settings) -> Result<Self> {
        Ok(Self::with_transport(LocalStore::init(dir, Some(settings))?))
    }

    /// The board on a server (`vine serve`, or the original API through `/execute`).
    #[cfg(feature = "remote")]
    pub fn connect(url: &str, key: Option<crate::apikey::ApiKey>) -> Result<Self> {
        Ok(Self::with_transport(crate::remote::RemoteStore::connect(
            url, key,
        )?))
    }

    /// A board reached through any transport (local files, a server).
    pub fn with_transport(t: impl Transport + 'static) -> Self {
        Board {
            transport: Arc::new(t),
        }
    }

    /// Finds the board directory: the nearest `.vine/` at or above `start`.
    pub fn find_dir(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join(DEFAULT_DIR))
            .find(|d| d.is_dir())
    }

    /// The board's settings.
    pub fn settings(&self) -> Result<Settings> {
        match self.execute(Op::Settings(op::Settings))? {
            Reply::Settings { settings } => Ok(settings),
            other => Err(unexpected("settings", &other)),
        }
    }

    /// Where the board is (a directory or a URL).
    pub fn location(&self) -> String {
        self.transport.location()
    }

    /// Carries out any op and returns its raw reply.
    pub fn execute(&self, op: Op) -> Result<Reply> {
        self.transport.execute(op)
    }

    /// Adds one task.
    pub fn add(&self, task: NewTask) -> Result<Task> {
        match self.execute(Op::Add(op::Add { task }))? {
            Reply::Added { mut tasks } if tasks.len() == 1 => Ok(tasks.remove(0)),
            other => Err(unexpected("add", &other)),
        }
    }

    /// Adds a batch of tasks, all or nothing.
    pub fn add_plan(&self, tasks: Vec<PlanTask>) -> Result<Vec<Task>> {
        match self.execute(Op::AddPlan(op::AddPlan { tasks }))? {
            Reply::Added { tasks } => Ok(tasks),
            other => Err(unexpected("add-plan", &other)),
        }
    }

    /// Claims the best eligible task for `worker`; `None` when nothing is claimable.
    pub fn claim(&self, worker: &str) -> Result<Option<ClaimedTask>> {
        match self.execute(Op::Claim(op::Claim {
            worker: worker.into(),
        }))? {
            Reply::Claimed { claim, .. } => Ok(claim),
            other => Err(unexpected("claim", &other)),
        }
    }

    /// Completes a task `worker` holds.
    pub fn complete(&self, task: u64, worker: &str, result: Option<Value>) -> Result<TaskView> {
        task_reply(
            "complete",
            self.execute(Op::Complete(op::Complete {
                task,
                worker: worker.into(),
                attempt: None,
                result,
            }))?,
        )
    }

    /// Reports a failed attempt; the task is retried with backoff unless `no_retry` or out of retries.
    pub fn fail(&self, task: u64, worker: &str, error: &str, no_retry: bool) -> Result<TaskView> {
        task_reply(
            "fail",
            self.execute(Op::Fail(op::Fail {
                task,
                worker: worker.into(),
                attempt: None,
                error: error.into(),
                no_retry,
            }))?,
        )
    }

    /// Gives a claimed task back without counting an attempt.
    pub fn release(&self, task: u64, worker: &str) -> Result<TaskView> {
        task_reply(
            "release",
            self.execute(Op::Release(op::Release {
                task,
                worker: worker.into(),
                attempt: None,
            }))?,
        )
    }

    /// Cancels a task that has not completed.
    pub fn cancel(&self, task: u64, reason: Option<&str>) -> Result<TaskView> {
        task_reply(
            "cancel",
            self.execute(Op::Cancel(op::Cancel {
                task,
                reason: reason.map(str::to_string),
            }))?,
        )
    }

    /// Puts a failed task back to pending.
    pub fn retry(&self, task: u64) -> Result<TaskView> {
        task_reply("retry", self.execute(Op::Retry(op::Retry { task }))?)
    }

    /// Changes the priority of a task that is not finished.
    pub fn set_priority(&self, task: u64, priority: crate::task::Priority) -> Result<TaskView> {
        task_reply(
            "set-priority",
            self.execute(Op::SetPriority(op::SetPriority { task, priority }))?,
        )
    }

    /// Registers a worker with its capabilities.
    pub fn register(&self, worker: &str, capabilities: &[&str]) -> Result<WorkerView> {
        worker_reply(
            "register",
            self.execute(Op::Register(op::Register {
                worker: worker.into(),
                capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
                session_id: None,
            }))?,
        )
    }

    /// Records a heartbeat and extends the worker's leases.
    pub fn heartbeat(&self, worker: &str) -> Result<WorkerView> {
        worker_reply(
            "heartbeat",
            self.execute(Op::Heartbeat(op::Heartbeat {
                worker: worker.into(),
            }))?,
        )
    }

    /// Takes a worker offline, returning its tasks to the queue.
    pub fn deregister(&self, worker: &str) -> Result<WorkerView> {
        worker_reply(
            "deregister",
            self.execute(Op::Deregister(op::Deregister {
                worker: worker.into(),
            }))?,
        )
    }

    /// Whether an idle worker should keep going, with a one-line reason.
    pub fn should_continue(&self, worker: &str, max_idle_secs: u64) -> Result<Decision> {
        match self.execute(Op::ShouldContinue(op::ShouldContinue {
            worker: worker.into(),
            max_idle_secs,
        }))? {
            Reply::Decision {
                keep_going,
                reason,
                task,
            } => Ok(Decision {
                keep_going,
                reason,
                task,
            }),
            other => Err(unexpected("should-continue", &other)),
        }
    }

    /// A worker's turn ended (its Stop hook): what it does next — take the task handed over,
    /// finish the one it holds, wait, or stop. With `wait_secs`, the board holds the answer
    /// while it would only be "wait", and answers as soon as a task can be handed over (on a
    /// server: one request, held open).
    pub fn turn_ended(&self, op: op::TurnEnded) -> Result<Turn> {
        match self.execute(Op::TurnEnded(op))? {
            Reply::Turn(t) => Ok(t),
            other => Err(unexpected("turn-ended", &other)),
        }
    }

    /// Appends a message to the log.
    pub fn send(&self, agent: &str, message: &str) -> Result<Message> {
        message_reply(
            "send",
            self.execute(Op::Send(op::Send {
                agent: agent.into(),
                message: message.into(),
                task: None,
            }))?,
        )
    }

    /// Asks a question (optionally about a task); returns the question entry with its number.
    pub fn ask(&self, agent: &str, question: &str, task: Option<u64>) -> Result<Message> {
        message_reply(
            "ask",
            self.execute(Op::Ask(op::Ask {
                agent: agent.into(),
                question: question.into(),
                task,
                wait_secs: None,
            }))?,
        )
    }

    /// Answers question number `question`.
    pub fn answer(&self, agent: &str, question: u64, answer: &str) -> Result<Message> {
        message_reply(
            "answer",
            self.execute(Op::Answer(op::Answer {
                agent: agent.into(),
                question,
                answer: answer.into(),
            }))?,
        )
    }

    /// Reads messages matching `filter`.
    pub fn messages(&self, filter: MessageFilter) -> Result<Vec<Message>> {
        match self.execute(Op::ReadMessages(op::ReadMessages { filter }))? {
            Reply::Messages { messages } => Ok(messages),
            other => Err(unexpected("read-messages", &other)),
        }
    }

    /// Questions: open ones, or all with their answers.
    pub fn questions(&self, all: bool) -> Result<Vec<QuestionView>> {
        match self.execute(Op::Questions(op::Questions { all }))? {
            Reply::Questions { questions } => Ok(questions),
            other => Err(unexpected("questions", &other)),
        }
    }

    /// The board's counts.
    pub fn status(&self) -> Result<StatusReport> {
        match self.execute(Op::Status(op::Status))? {
            Reply::Status { report } => Ok(report),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Tasks on the queue (and the archive when `all`), optionally with one status (a
    /// [`StatusFilter`] name: `pending`, `in_progress`, ... or `blocked`).
    pub fn tasks(&self, status: Option<&str>, all: bool) -> Result<Vec<TaskView>> {
        let status = status
            .map(|s| {
                StatusFilter::parse(s).ok_or_else(|| {
                    Error::Invalid(format!(
                        "unknown status {s:?}; use pending, in_progress, completed, failed, cancelled or blocked"
                    ))
                })
            })
            .transpose()?;
        match self.execute(Op::Tasks(op::Tasks { status, all }))? {
            Reply::Tasks { tasks } => Ok(tasks),
            other => Err(unexpected("tasks", &other)),
        }
    }

    /// One task, from the queue or the archive.
    pub fn show(&self, task: u64) -> Result<TaskView> {
        task_reply("show", self.execute(Op::Show(op::Show { task }))?)
    }

    /// All workers with their derived states.
    pub fn workers(&self) -> Result<Vec<WorkerView>> {
        match self.execute(Op::Workers(op::Workers))? {
            Reply::Workers { workers } => Ok(workers),
            other => Err(unexpected("workers", &other)),
        }
    }

    /// The board's figures over the last 24 hours (see [`crate::metrics`]).
    pub fn metrics(&self) -> Result<crate::metrics::Report> {
        match self.execute(Op::Metrics(op::Metrics::default()))? {
            Reply::Metrics { metrics } => Ok(*metrics),
            other => Err(unexpected("metrics", &other)),
        }
    }

    /// The progress record.
    pub fn progress(&self) -> Result<Progress> {
        match self.execute(Op::Progress(op::Progress))? {
            Reply::Progress { progress } => Ok(progress),
            other => Err(unexpected("progress", &other)),
        }
    }

    /// Takes back claims whose lease expired or whose holder is stale; returns their ids.
    pub fn requeue_stale(&self) -> Result<Vec<u64>> {
        match self.execute(Op::RequeueStale(op::RequeueStale))? {
            Reply::Requeued { tasks } => Ok(tasks),
            other => Err(unexpected("requeue-stale", &other)),
        }
    }

    /// Moves finished tasks to the archive; returns how many moved.
    pub fn compact(&self) -> Result<usize> {
        match self.execute(Op::Compact(op::Compact))? {
            Reply::Compacted { archived, .. } => Ok(archived),
            other => Err(unexpected("compact", &other)),
        }
    }
}

fn unexpected(op: &str, reply: &Reply) -> Error {
    let kind = serde_json::to_value(reply)
        .ok()
        .and_then(|v| v.get("reply").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_default();
    Error::Protocol(format!("{op} got a {kind:?} reply"))
}

fn task_reply(op: &str, r: Reply) -> Result<TaskView> {
    match r {
        Reply::Task { task } => Ok(task),
        other => Err(unexpected(op, &other)),
    }
}

fn worker_reply(op: &str, r: Reply) -> Result<WorkerView> {
    match r {
        Reply::Worker { worker, .. } => Ok(worker),
        other => Err(unexpected(op, &other)),
    }
}

fn message_reply(op: &str, r: Reply) -> Result<Message> {
    match r {
        Reply::Message { message } => Ok(message),
        other => Err(unexpected(op, &other)),
    }
}
