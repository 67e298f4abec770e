//! Errors of the board, each mapped to one of `vine`'s documented exit codes.

use std::path::PathBuf;

/// The exit code `vine` uses for each kind of outcome (documented in `vine --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: done.
    Done = 0,
    /// 1: anything else (I/O failure, bug, unexpected reply).
    Other = 1,
    /// 2: bad usage or invalid input (including unknown task ids).
    Invalid = 2,
    /// 3: nothing to do: no claimable task, the worker should stop, a wait timed out.
    NothingToDo = 3,
    /// 4: conflict: not your task, wrong state, claim taken back.
    Conflict = 4,
    /// 5: a board file is damaged; run `vine repair`.
    Damaged = 5,
    /// 6: the server could not be reached (connection refused, timed out, TLS failure).
    Unreachable = 6,
    /// 7: the server refused the API key (or none was given).
    Unauthorized = 7,
    /// 8: the server refused a path outside its base directory.
    Forbidden = 8,
    /// 9: the board's store was made by a newer `vine` (its database schema is newer than
    /// this one knows).
    Incompatible = 9,
}

impl ExitCode {
    /// The numeric process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The exit code with this number, if it is one of ours.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => ExitCode::Done,
            1 => ExitCode::Other,
            2 => ExitCode::Invalid,
            3 => ExitCode::NothingToDo,
            4 => ExitCode::Conflict,
            5 => ExitCode::Damaged,
            6 => ExitCode::Unreachable,
            7 => ExitCode::Unauthorized,
            8 => ExitCode::Forbidden,
            9 => ExitCode::Incompatible,
            _ => return None,
        })
    }
}

/// Everything that can go wrong with a board operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller gave input the board cannot accept (bad id, bad path, oversized field...).
    #[error("{0}")]
    Invalid(String),
    /// A task id that is neither on the queue nor in the archive.
    #[error("no task with id {0} on this board; list tasks with `vine tasks --all`")]
    UnknownTask(u64),
    /// The operation is valid but the board is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// Nothing to do (used by waits that time out).
    #[error("{0}")]
    NothingToDo(String),
    /// A board file does not parse; it is never overwritten.
    #[error("board file {} is damaged ({detail}); nothing was changed. Run `vine repair` to keep a copy and rebuild it", path.display())]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// A read found damaged board files: `reply` shows what could be read (salvaged as
    /// `vine repair` would, nothing written), `damage` says which files are damaged. Exit 5,
    /// like [`Error::Damaged`]; `vine` prints the reply and the damage both.
    #[error("{}", damage_message(damage))]
    DamagedRead {
        /// What could be read.
        reply: Box<crate::op::Reply>,
        /// The damaged files.
        damage: Vec<Damage>,
    },
    /// No board was found where one was expected.
    #[error("{0}")]
    NoBoard(String),
    /// An I/O error on a board file. One a server reported has neither action nor path: its
    /// message (which names both) is the source's.
    #[error("{}", io_message(action, path, source))]
    Io {
        /// What was being done ("reading", "writing", ...); empty when a server reported it.
        action: &'static str,
        /// The file involved; empty when a server reported it.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A reply of the wrong shape for the request (a bug or a mismatched server).
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The server could not be reached after retries.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The server refused a path (outside its base directory, or through a symlink that leads out).
    #[error("{0}")]
    Forbidden(String),
    /// The board's store was made by a newer `vine`: its database schema is newer than the
    /// one this version knows, so it is not touched.
    #[error("{0}")]
    Incompatible(String),
    /// An error a server reported that is none of the above: a refusal of its file or command
    /// API, or a kind this version does not know. Board errors come back as their own variant.
    #[error("{message}")]
    Remote {
        /// The error kind, as in `--json` output.
        kind: String,
        /// The exit code the error maps to.
        exit: ExitCode,
        /// The server's message.
        message: String,
    },
}

impl Error {
    /// The exit code `vine` uses for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Invalid(_) | Error::UnknownTask(_) | Error::NoBoard(_) => ExitCode::Invalid,
            Error::Conflict(_) => ExitCode::Conflict,
            Error::NothingToDo(_) => ExitCode::NothingToDo,
            Error::Damaged { .. } | Error::DamagedRead { .. } => ExitCode::Damaged,
            Error::Io { .. } | Error::Protocol(_) => ExitCode::Other,
            Error::Unreachable(_) => ExitCode::Unreachable,
            Error::Unauthorized(_) => ExitCode::Unauthorized,
            Error::Forbidden(_) => ExitCode::Forbidden,
            Error::Incompatible(_) => ExitCode::Incompatible,
            Error::Remote { exit, .. } => *exit,
        }
    }

    /// A short machine-readable name of the error kind, used in `--json` output.
    pub fn kind(&self) -> &str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::UnknownTask(_) => "unknown-task",
            Error::Conflict(_) => "conflict",
            Error::NothingToDo(_) => "nothing-to-do",
            Error::Damaged { .. } | Error::DamagedRead { .. } => "damaged",
            Error::NoBoard(_) => "no-board",
            Error::Io { .. } => "io",
            Error::Protocol(_) => "protocol",
            Error::Unreachable(_) => "unreachable",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Incompatible(_) => "incompatible",
            Error::Remote { kind, .. } => kind,
        }
    }

    /// Shorthand for an I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The message of [`Error::Io`]: what was done to which file, and what went wrong.
fn io_message(action: &str, path: &std::path::Path, source: &std::io::Error) -> String {
    if action.is_empty() && path.as_os_str().is_empty() {
        source.to_string()
    } else {
        format!("{action} {}: {source}", path.display())
    }
}

/// A damaged board file a read found, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Damage {
    /// The file's name on the board (`task-queue.json`, `agent-comms.jsonl`, ...).
    pub file: String,
    /// What is wrong (the first problem found).
    pub detail: String,
}

/// One message for the damaged files of a read: which, what is wrong, and that `vine repair`
/// fixes them.
pub fn damage_message(damage: &[Damage]) -> String {
    let files: Vec<String> = damage
        .iter()
        .map(|d| format!("board file {} is damaged ({})", d.file, d.detail))
        .collect();
    format!(
        "{}; this shows only what can be read, and changes are refused. \
         Run `vine repair` to keep a copy of {} and rebuild {}",
        files.join("; "),
        if damage.len() == 1 { "it" } else { "each" },
        if damage.len() == 1 { "it" } else { "them" },
    )
}

/// Result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
