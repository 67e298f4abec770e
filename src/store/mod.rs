//! Where a board lives. [`Transport`] is the seam: the local store applies ops to files on
//! this machine; a remote transport (the VPS) sends the same ops over the network.

pub(crate) mod archive;
pub mod clock;
pub(crate) mod damage;
pub(crate) mod durable;
pub(crate) mod history;
pub(crate) mod json_file;
pub(crate) mod jsonl;
pub mod local;
pub mod lock;
pub(crate) mod log;
pub mod paths;
pub(crate) mod queue_file;
pub(crate) mod repair;
pub(crate) mod salvage;
pub(crate) mod watch;

use crate::error::Result;
use crate::op::{Op, Reply};

/// Something that can carry out board ops: the local files, or a server.
pub trait Transport: Send + Sync {
    /// Carries out one op and returns its reply.
    fn execute(&self, op: Op) -> Result<Reply>;

    /// A short description of where the board is (a directory or a URL).
    fn location(&self) -> String;
}
