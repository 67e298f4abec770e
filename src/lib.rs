//! agentvine: a board of JSON files that lets one coordinator and many workers (Claude Code
//! sessions, or any program) share work: a task queue with atomic claims, leases, retries,
//! priorities, dependencies and capabilities; worker status; progress; and a message log with
//! questions and answers.
//!
//! Start with [`Board`]. Every operation is an [`Op`] whose payload owns its rule ([`op`]);
//! the state the rules work on and what they share live in [`rules`] (pure, no I/O); the files
//! in [`store`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "remote")]
pub mod apikey;
pub mod board;
pub mod claude;
pub mod error;
pub mod hook;
pub mod message;
pub mod metrics;
pub mod op;
pub mod plan;
pub mod pool;
pub mod progress;
#[cfg(feature = "remote")]
pub mod remote;
pub mod reply;
pub mod rules;
#[cfg(feature = "remote")]
pub mod server;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod task;
pub mod time;
pub mod validate;
#[cfg(feature = "remote")]
pub(crate) mod web;
pub mod wire;
pub mod worker;

pub use board::{Board, Decision};
pub use error::{Damage, Error, ExitCode, Result};
pub use message::{Message, MessageFilter, MessageKind};
pub use op::{NewTask, Op, PlanTask};
pub use progress::Progress;
pub use reply::{ClaimedTask, Reply, StatusReport, TaskView, WorkerView};
pub use settings::Settings;
pub use task::{Priority, StatusFilter, Task, TaskStatus};
pub use worker::{Worker, WorkerState};
