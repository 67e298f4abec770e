//! The operations a board understands: [`Op`], one variant per op, each holding its payload.
//!
//! An op's parts live in one file of this module: the payload struct (what crosses the wire,
//! documented there), its rule ([`Rule`] for a change, [`Query`] for a read) and what it needs
//! loaded ([`Needs`]). The list below names every op once, with its name on the wire; from it
//! come the [`Op`] enum and the dispatch to each op's rule. A new op is its payload file, a
//! line here, its command-line arguments and its rendering.
//!
//! `Op` is a plain serde type, internally tagged by `op`: the local store applies it directly
//! and a remote board sends it over the wire unchanged (`tests/op_json.rs` pins the JSON).

mod add;
mod cancel;
mod claim;
mod finish;
mod messages;
mod metrics;
mod priority;
mod reads;
mod sessions;
pub mod turn;
mod upkeep;
mod workers;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::message::MessageFilter;
pub use crate::reply::{
    ClaimedTask, Fallback, Next, QuestionView, RepairedFile, Reply, StatusReport, TaskView, Turn,
    WorkerView,
};
use crate::rules::{Needs, Query, Rule, State};
use crate::time::Timestamp;
pub use add::{Add, AddPlan, NewTask, PlanTask};
pub use cancel::{Cancel, Retry};
pub use claim::Claim;
pub use finish::{Complete, Fail, Release};
pub use messages::{Answer, Ask, Send, SetProgress};
pub use metrics::Metrics;
pub use priority::SetPriority;
pub use reads::{Progress, Questions, ReadMessages, Settings, Show, Status, Tasks, Workers};
pub use sessions::{EndSession, RecordRun, Sessions};
pub use turn::{Reminder, TurnEnded};
pub use upkeep::{Compact, Repair, RequeueStale};
pub use workers::{Deregister, Heartbeat, Register, ShouldContinue};

/// Declares [`Op`] from the list of ops: changes (each a [`Rule`]) and reads (each a
/// [`Query`]), with their names on the wire, and dispatches to them.
macro_rules! ops {
    (
        changes { $( $(#[$cdoc:meta])* $cname:literal => $change:ident, )* }
        reads { $( $(#[$rdoc:meta])* $rname:literal => $read:ident, )* }
    ) => {
        /// Everything a board can be asked to do. Reads take no lock.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "op")]
        pub enum Op {
            $( $(#[$cdoc])* #[serde(rename = $cname)] $change($change), )*
            $( $(#[$rdoc])* #[serde(rename = $rname)] $read($read), )*
        }

        impl Op {
            /// The op's name as on the wire and on the command line.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Op::$change(_) => $cname, )*
                    $( Op::$read(_) => $rname, )*
                }
            }

            /// True for ops that only read the board.
            pub fn is_read_only(&self) -> bool {
                matches!(self, $( Op::$read(_) )|*)
            }

            /// What the op needs loaded before its rule runs.
            pub fn needs(&self) -> Needs {
                match self {
                    $( Op::$change(o) => Rule::needs(o), )*
                    $( Op::$read(o) => Query::needs(o), )*
                }
            }
        }

        /// A change is applied by its own rule; a read is refused (see [`Query`]).
        impl Rule for Op {
            fn needs(&self) -> Needs {
                Op::needs(self)
            }

            fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
                match self {
                    $( Op::$change(o) => o.apply(st, now), )*
                    read => Err(Error::Protocol(format!(
                        "{} is a read; it is answered by the store",
                        read.name()
                    ))),
                }
            }

            fn replay(&self, st: &State, key: &str) -> Option<Reply> {
                match self {
                    $( Op::$change(o) => o.replay(st, key), )*
                    _ => None,
                }
            }
        }

        /// A read is answered by its own query; a change is refused.
        impl Query for Op {
            fn needs(&self) -> Needs {
                Op::needs(self)
            }

            fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply> {
                match self {
                    $( Op::$read(o) => o.answer(st, now), )*
                    change => Err(Error::Protocol(format!("{} is not a read", change.name()))),
                }
            }
        }

        $(
            impl From<$change> for Op {
                fn from(o: $change) -> Op {
                    Op::$change(o)
                }
            }
        )*
        $(
            impl From<$read> for Op {
                fn from(o: $read) -> Op {
                    Op::$read(o)
                }
            }
        )*
    };
}

ops! {
    changes {
        /// Add one task.
        "add" => Add,
        /// Add several tasks at once, all or nothing.
        "add-plan" => AddPlan,
        /// Claim the best eligible task for a worker.
        "claim" => Claim,
        /// Mark a claimed task completed.
        "complete" => Complete,
        /// Report a failed attempt; the task is retried with backoff or fails for good.
        "fail" => Fail,
        /// Give a claimed task back without counting an attempt.
        "release" => Release,
        /// Cancel a task that has not completed.
        "cancel" => Cancel,
        /// Put a failed task back to pending with its attempts reset.
        "retry" => Retry,
        /// Change the priority of a task that is not finished.
        "set-priority" => SetPriority,
        /// Register (or re-register) a worker.
        "register" => Register,
        /// A sign of life; extends the leases of the worker's tasks.
        "heartbeat" => Heartbeat,
        /// Take a worker offline; its claimed tasks go back to the queue.
        "deregister" => Deregister,
        /// Ask whether an idle worker should keep its session alive.
        "should-continue" => ShouldContinue,
        /// A worker's turn ended (its Stop hook): hand it a task, remind it of the one it
        /// holds, let it wait (up to `wait_secs`, woken by changes) or let it go.
        "turn-ended" => TurnEnded,
        /// Change the progress record (absent fields stay as they are).
        "set-progress" => SetProgress,
        /// Append a message to the log.
        "send" => Send,
        /// Ask a question (a log entry of kind `question`).
        "ask" => Ask,
        /// Answer a question.
        "answer" => Answer,
        /// Take back every claim whose lease has expired or whose holder is stale.
        "requeue-stale" => RequeueStale,
        /// Move finished tasks to the archive (carried out by the store).
        "compact" => Compact,
        /// Rebuild damaged board files from what can be read (carried out by the store).
        "repair" => Repair,
        /// A `claude -p` run of a session ended: record its figures on the session.
        "record-run" => RecordRun,
        /// A Claude session will not be resumed.
        "end-session" => EndSession,
    }
    reads {
        /// Counts and summary of the board.
        "status" => Status,
        /// List tasks.
        "tasks" => Tasks,
        /// One task, from the queue or the archive.
        "show" => Show,
        /// All workers with their derived state.
        "workers" => Workers,
        /// The progress record.
        "progress" => Progress,
        /// The board's settings.
        "settings" => Settings,
        /// Read the message log.
        "read-messages" => ReadMessages,
        /// Questions, open ones unless `all`.
        "questions" => Questions,
        /// The Claude sessions' records.
        "sessions" => Sessions,
        /// The board's figures over a window: latencies, rates, series.
        "metrics" => Metrics,
    }
}

/// Declares payloads without fields: `{"op": "<name>"}` on the wire. Other fields are ignored
/// when read, as they always were (a derived unit struct would refuse them).
macro_rules! no_fields {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
            pub struct $name;

            impl<'de> serde::Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                    <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| $name)
                }
            }
        )*
    };
}
pub(crate) use no_fields;
