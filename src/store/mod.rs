//! Where a board lives. [`Transport`] is the seam: the local store applies ops to files on
//! this machine; a remote transport (the VPS) sends the same ops over the network.
//! [`BatchStore`] is the server's seam: `vine serve` holds a board kept in files
//! ([`local::LocalStore`]) or in PostgreSQL (`pg::PgStore`) behind it.

pub(crate) mod archive;
pub mod clock;
pub(crate) mod damage;
pub(crate) mod durable;
pub(crate) mod history;
pub(crate) mod inode;
pub(crate) mod journal;
pub(crate) mod json_file;
pub(crate) mod jsonl;
pub mod local;
pub mod lock;
pub(crate) mod log;
pub mod paths;
#[cfg(feature = "postgres")]
pub mod pg;
pub(crate) mod queue_file;
pub(crate) mod repair;
pub(crate) mod salvage;
pub(crate) mod stamp;
pub(crate) mod watch;

use crate::error::Result;
use crate::op::{Op, Reply};

/// Worker entries changed only in what the queue also records (claim and completion times,
/// the task held) are written at most this often; readers merge the queue's records back
/// (`rules::merge_queue_facts`).
pub const SOFT_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Something that can carry out board ops: the local files, or a server.
pub trait Transport: Send + Sync {
    /// Carries out one op and returns its reply.
    fn execute(&self, op: Op) -> Result<Reply>;

    /// A short description of where the board is (a directory or a URL).
    fn location(&self) -> String;
}

/// A batch as every store carries it out: its reads answered by `read` (without the lock),
/// its changes handed to `write` together, in order; the replies in the batch's order.
pub(crate) fn split_batch(
    ops: Vec<(Op, Option<String>)>,
    read: impl Fn(Op) -> Result<Reply>,
    write: impl FnOnce(Vec<(Op, Option<String>)>) -> Vec<Result<Reply>>,
) -> Vec<Result<Reply>> {
    let (reads, writes): (Vec<_>, Vec<_>) = ops
        .into_iter()
        .enumerate()
        .partition(|(_, (op, _))| op.is_read_only());
    let mut out: Vec<Option<Result<Reply>>> =
        (0..reads.len() + writes.len()).map(|_| None).collect();
    for (i, (op, _)) in reads {
        out[i] = Some(read(op));
    }
    if !writes.is_empty() {
        let (index, ops): (Vec<usize>, Vec<(Op, Option<String>)>) = writes.into_iter().unzip();
        for (i, r) in index.into_iter().zip(write(ops)) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(crate::error::Error::Protocol("an op got no reply".into())))
        })
        .collect()
}

/// A store `vine serve` can hold: one writer thread hands it the changing ops waiting as one
/// group commit ([`BatchStore::execute_batch`]); reads go through [`Transport::execute`] from
/// any thread. Implemented by the files ([`local::LocalStore`]) and by PostgreSQL
/// (`pg::PgStore`), so the server, its long-polls, the control room and `/metrics` work the
/// same on both.
pub trait BatchStore: Transport {
    /// Carries out several ops as one group commit: each gets its own reply, as if it had run
    /// alone in order; a failed op leaves no change but the log entries it must keep. Replies
    /// are given only once the batch is committed.
    fn execute_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>>;

    /// Does ahead of `op`'s batch, on the request's own thread, what the batch would do for it
    /// that needs no lock: a board kept in files writes an add's instruction texts to temp
    /// files its batch then renames. Nothing by default.
    fn stage(&self, _op: &Op) {}

    /// A count that moves whenever the board changed in a way a waiter may care about: a
    /// waiter that saw it move looks again. It never goes down.
    fn changes(&self) -> u64;

    /// Asks the store to call `wake` with the new [`BatchStore::changes`] whenever the board
    /// changed other than through this handle (another server on the same database). A store
    /// that cannot tell (files: changes beside the server are found by the server's periodic
    /// look and the control room's directory watch) never calls it.
    fn on_outside_change(&self, wake: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = wake;
    }

    /// The board kept in files, if this is one: what only makes sense on files (a `/deploy`
    /// over a board file under the board lock, watching the board directory) uses it.
    fn files(&self) -> Option<&local::LocalStore> {
        None
    }

    /// The text of a board file by board-relative path (an instruction file).
    fn read_board_file(&self, rel: &str) -> Result<String>;

    /// Stores a board file by board-relative path, for a board not kept in files (a
    /// `/deploy` under `tasks/` puts an instruction file there, as on files). A board in
    /// files has its files on disk: nothing to do.
    fn put_board_file(&self, rel: &str, content: &[u8]) -> Result<()> {
        let _ = (rel, content);
        Ok(())
    }

    /// Offers this server to lead the other servers of the same board (a board in
    /// PostgreSQL): `url` is where they reach it. Nothing by default (a board in files has one
    /// server).
    fn stand_for_lead(&self, url: &str) {
        let _ = url;
    }

    /// The URL of another server of the same board that leads, if one does: this server hands
    /// it its changes (`server/forward.rs`) instead of committing them itself.
    fn leader(&self) -> Option<String> {
        None
    }

    /// Told the change count another server reached committing what this one handed it, so
    /// that this server's waiters look again at once.
    fn saw_change(&self, changes: u64) {
        let _ = changes;
    }

    /// Whether this server leads the others of its board.
    fn leading(&self) -> bool {
        false
    }

    /// Replaces the board's settings, for a board not kept in files (a `/deploy` of
    /// `board.json`, which is how `vine --url URL init` sets them).
    fn set_settings(&self, settings: crate::settings::Settings) -> Result<()>;
}
