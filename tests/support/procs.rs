//! Processes: a guard that kills a background child, and what `/proc` says about the others
//! (hook keepalives, the processes below one, whether one is alive).

use std::fs;
use std::process::Child;

/// Kills a background child if the test fails before waiting for it.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The ids of the processes in `/proc`.
pub fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("/proc can be read")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and
/// parentheses): state, parent id, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The arguments of a process, if it can be read.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        cmd.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect(),
    )
}

/// True while `pid` is a live (non-zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "123 (sleep) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// The pids of `vine hook keepalive` processes tied to process `owner`, zombies included.
pub fn keepalives_of(owner: u32) -> Vec<u32> {
    keepalives(owner, true)
}

/// [`keepalives_of`] without the zombies (keepalives that exited, not reaped yet).
pub fn live_keepalives_of(owner: u32) -> Vec<u32> {
    keepalives(owner, false)
}

fn keepalives(owner: u32, with_zombies: bool) -> Vec<u32> {
    let owner = owner.to_string();
    pids()
        .into_iter()
        .filter(|&pid| {
            let Some(args) = cmdline(pid) else {
                return false;
            };
            let zombie =
                || stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) == Some("Z"));
            (with_zombies || !zombie())
                && args.iter().any(|a| a == "keepalive")
                && args.windows(2).any(|w| w[0] == "--pid" && w[1] == owner)
        })
        .collect()
}

/// The processes below `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parent_of: Vec<(u32, u32)> = pids()
        .into_iter()
        .filter_map(|p| {
            let ppid = stat_fields(p)?.get(1)?.parse::<u32>().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}
