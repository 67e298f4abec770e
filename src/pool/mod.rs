//! `vine pool`: headless Claude Code workers supervised on this machine (issue #10).
//!
//! [`supervisor`] runs the slots; [`claude_run`] one `claude -p` process; [`outcome`] reads
//! what it printed; [`reuse`] chooses whether a task resumes a session; [`prompt`] is what the
//! sessions are told.

#[cfg(feature = "remote")]
pub mod claude_run;
pub mod outcome;
pub mod prompt;
pub mod reuse;
#[cfg(feature = "remote")]
pub mod supervisor;
pub mod worktree;
