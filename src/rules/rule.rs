//! The two shapes of an op's rule, a change ([`Rule`]) and a read ([`Query`]), and what an op
//! needs loaded before its rule runs ([`Needs`]).

use super::State;
use crate::error::Result;
use crate::message::MessageFilter;
use crate::reply::Reply;
use crate::time::Timestamp;

/// What an op needs loaded into the [`State`] before its rule runs. Every change also has the
/// queue, the workers and the settings (every change takes lapsed claims back).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    /// The queue and the workers ([`State::tasks`], [`State::workers`]), for a read.
    pub queue: bool,
    /// The settings ([`State::settings`]), for a read.
    pub settings: bool,
    /// The progress record ([`State::progress`]).
    pub progress: bool,
    /// The Claude sessions' records ([`State::sessions`]).
    pub sessions: bool,
    /// The smallest id a new task may get ([`State::min_next_id`]): above every id on the
    /// queue and in the archive.
    pub next_id: bool,
    /// The sequence number of the next log entry ([`State::next_seq`]).
    pub next_seq: bool,
    /// Which log entries (the field `State::log`).
    pub log: LogNeed,
    /// Tasks the op names by id: those not on the queue are looked up in the archive
    /// ([`State::archived`], [`State::archived_tasks`]).
    pub task_ids: Vec<u64>,
    /// The archive's counts by status and its tail ([`State::archived_counts`],
    /// [`State::archive_tail`]).
    pub archive_counts: bool,
    /// Every archived task ([`State::archived_tasks`]).
    pub archive_all: bool,
    /// The board's history as the figures need it ([`State::history`]): every archived
    /// task's times and every question's (a store may keep it and read only what was
    /// appended since).
    pub history: bool,
    /// Board paths the op names as instruction files: they must be files on the board.
    pub instruction_files: Vec<String>,
    /// Board paths the op names as context files: they must not lead outside the board.
    pub context_files: Vec<String>,
}

impl Needs {
    /// What every view of the board reads: the queue, the workers, the progress record and
    /// the settings (damage to any of them is reported with the view).
    pub fn board() -> Self {
        Needs {
            queue: true,
            settings: true,
            progress: true,
            ..Needs::default()
        }
    }
}

/// Which entries of the message log an op needs (the field `State::log`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LogNeed {
    /// None.
    #[default]
    None,
    /// The recent entries, when the op carries a request key: an earlier application of it
    /// left its key there (see `apply_keyed`).
    RecentWhenKeyed,
    /// Every entry.
    All,
    /// The entries matching a filter (a store may filter as it reads; the read filters again).
    Matching(MessageFilter),
    /// The questions and the answers.
    Questions,
}

/// A change: what it needs loaded, what it does to the state, how a retry is answered.
pub trait Rule {
    /// What the store loads before [`Rule::apply`].
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Validates, then changes `st` at `now`, marking what the store must write. On error the
    /// store writes nothing but the outbox: validation comes before any change, and changes
    /// made before a late error are discarded.
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply>;

    /// The reply of an earlier application that carried request key `key`, found on the board
    /// (see `apply_keyed`); `None` for an op that was not applied with it.
    fn replay(&self, _st: &State, _key: &str) -> Option<Reply> {
        None
    }
}

/// A read: what it needs loaded, and its answer from that. Nothing is written, so the server,
/// a dashboard and any store answer a read the same way.
pub trait Query {
    /// What the store loads before [`Query::answer`].
    fn needs(&self) -> Needs;

    /// The answer at `now`, from what was loaded (`st` is not written back).
    fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply>;
}

/// Applies the change `op` to `state` at time `now` (see [`Rule::apply`]). A read or an op the
/// store carries out itself (compact, repair) is refused.
pub fn apply(state: &mut State, op: impl Rule, now: Timestamp) -> Result<Reply> {
    state.sync_index();
    let reply = op.apply(state, now);
    state.check_index();
    reply
}

/// Answers the read `op` from `state` at time `now` (see [`Query::answer`]). A change is
/// refused.
pub fn read(state: &mut State, op: impl Query, now: Timestamp) -> Result<Reply> {
    op.answer(state, now)
}
