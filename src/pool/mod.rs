//! `vine pool`: headless Claude Code workers supervised on this machine (issue #10).
//!
//! What is here so far is the part that decides without running anything: reading what
//! `claude -p --output-format json` printed ([`outcome`]) and whether a slot's next task
//! resumes its previous Claude session or starts a fresh one ([`reuse`]).

pub mod outcome;
pub mod reuse;
