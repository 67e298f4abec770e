//! Which process a hook runs for, and whether it still lives, from `/proc` (Linux).
//!
//! Claude Code runs every hook as `sh -c COMMAND` in a session (and so a process group) of its
//! own, so walking up from the hook, the first process outside the hook's process group is
//! the `claude` process that ran it. A process is named by its pid *and* its start time, so a
//! pid reused by a later process is never taken for it.

use std::path::Path;

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// When it started, in clock ticks after boot: with the pid, names the process for good.
    pub start: u64,
    /// Its state letter (`R`, `S`, ... `Z` for a zombie, `X` dead).
    pub state: char,
}

impl Proc {
    /// Running (not a zombie waiting to be reaped, not dead).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/PID/stat`; `None` if there is no such process (or no `/proc`).
pub fn stat(pid: u32) -> Option<Proc> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(pid, &text)
}

/// Parses a `/proc/PID/stat` line: `pid (comm) state ppid pgrp session ... starttime ...`. The
/// command name may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(pid: u32, text: &str) -> Option<Proc> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        // Field 22 of the line; the fields after `)` start at field 3.
        start: f.get(19)?.parse().ok()?,
    })
}

/// True while process `pid` that started at `start` runs (a zombie counts as gone).
pub fn alive(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|p| p.start == start && p.is_running())
}

/// The process this one runs for as a hook: walking up from the parent, the first process
/// outside this process's group. `None` without `/proc`, or when that would be `init` (a
/// process with nobody to outlive).
pub fn hook_owner() -> Option<Proc> {
    let me = stat(std::process::id())?;
    let mut p = stat(me.ppid)?;
    // A chain longer than this is not a hook's.
    for _ in 0..64 {
        if p.pid <= 1 {
            return None;
        }
        if p.pgrp != me.pgrp {
            return Some(p);
        }
        p = stat(p.ppid)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (a (weird) name) S 17 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let p = parse_stat(4242, line).unwrap();
        assert_eq!((p.ppid, p.pgrp, p.start, p.state), (17, 4242, 987654, 'S'));
        assert!(p.is_running());
        assert!(parse_stat(1, "garbage").is_none());
        assert!(parse_stat(1, "1 (x) Z 0").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = stat(std::process::id()).expect("/proc");
        assert!(alive(me.pid, me.start));
        assert!(!alive(me.pid, me.start + 1));
    }
}
