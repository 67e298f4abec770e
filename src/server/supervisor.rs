//! The supervisor of one `/execute` command: a small process between `vine serve` and
//! `sh -c COMMAND` that makes sure nothing the command started outlives the request.
//!
//! `vine serve` starts it as `/proc/self/exe` with [`SUPERVISOR_ARG`] (so it is the same
//! binary), one command per supervisor. It declares itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so every process the command starts stays its descendant however
//! it detaches (`setsid`, `nohup`, `&` + `disown`, a double fork): an orphan is re-parented to
//! the supervisor, not to init. When the command's shell exits, or when the server asks it to
//! stop (SIGTERM on a timeout or when the client went away; also when the server dies, through
//! `PR_SET_PDEATHSIG`), it SIGKILLs every remaining descendant — found by walking the parent
//! links in `/proc`, again and again until none is left — reaps them all, and only then exits.
//! So when the supervisor has exited, the command's processes are gone, its output pipes are
//! closed, and the server's concurrency slot can be given back.
//!
//! Elsewhere than Linux there is no subreaper: the supervisor then kills only the command's
//! process group.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The first argument that makes `vine` run as a command supervisor instead of parsing a
/// command line: `vine __vine-exec-supervisor SERVER_PID COMMAND` (or `--probe`).
pub const SUPERVISOR_ARG: &str = "__vine-exec-supervisor";

/// What the supervisor prints for `--probe`: the server checks at startup that the supervisor
/// program really is one (and can become a subreaper) before it runs any command.
pub const PROBE_REPLY: &str = "vine-exec-supervisor 1";

/// Exit code of a supervisor that could not set itself up (the command did not run).
const SETUP_FAILED: i32 = 125;
/// Exit code of a supervisor stopped by a signal (the server knows why it stopped it).
const STOPPED: i32 = 143;
/// How long the supervisor keeps trying to kill what is left before it gives up on processes
/// it cannot kill (another user's, through a setuid program).
const KILL_FOR: Duration = Duration::from_secs(10);

/// Runs the supervisor with the arguments after [`SUPERVISOR_ARG`]; returns the process's exit
/// code (the command's shell's, when it exited). A shell killed by a signal makes the
/// supervisor end by SIGKILL, so the server sees "killed by a signal" as before.
pub fn supervise(args: &[OsString]) -> i32 {
    match args {
        [probe] if probe == "--probe" => match become_subreaper() {
            Ok(()) => {
                println!("{PROBE_REPLY}");
                0
            }
            Err(e) => {
                eprintln!("vine: the /execute supervisor cannot become a subreaper: {e}");
                SETUP_FAILED
            }
        },
        [parent, command] => {
            let Some(parent) = parent.to_str().and_then(|p| p.parse::<i32>().ok()) else {
                eprintln!("vine: the /execute supervisor needs the server's process id");
                return SETUP_FAILED;
            };
            run(Pid::from_raw(parent), command)
        }
        _ => {
            eprintln!(
                "vine: {SUPERVISOR_ARG} is internal to `vine serve` (usage: {SUPERVISOR_ARG} SERVER_PID COMMAND)"
            );
            SETUP_FAILED
        }
    }
}

/// The signals the supervisor waits for: a child changed state, or it must stop.
fn watched() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

fn run(parent: Pid, command: &OsString) -> i32 {
    if let Err(e) = become_subreaper() {
        eprintln!("vine: the /execute supervisor cannot become a subreaper: {e}");
        return SETUP_FAILED;
    }
    // The watched signals are blocked and taken with sigwait, so none can slip in between a
    // check and a wait. (The shell starts with an empty signal mask: std resets it.)
    let set = watched();
    if let Err(e) = set.thread_block() {
        eprintln!("vine: the /execute supervisor cannot block signals: {e}");
        return SETUP_FAILED;
    }
    die_with(parent);
    if nix::unistd::getppid() != parent {
        // The server is already gone: run nothing.
        return STOPPED;
    }
    let shell = match std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => Pid::from_raw(c.id() as i32),
        Err(e) => {
            eprintln!("vine: cannot start sh: {e}");
            return SETUP_FAILED;
        }
    };
    let status = wait_for_shell(shell, &set);
    kill_the_rest(shell);
    match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(..)) => {
            // Told as the shell's own fate: killed by a signal (SIGKILL cannot dump core).
            let _ = kill(Pid::this(), Signal::SIGKILL);
            STOPPED
        }
        _ => STOPPED,
    }
}

/// Reaps children until the shell exits (its status) or a stop signal arrives (`None`).
fn wait_for_shell(shell: Pid, set: &SigSet) -> Option<WaitStatus> {
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(s @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, ..)))
                    if pid == shell =>
                {
                    return Some(s);
                }
                Ok(WaitStatus::StillAlive) => break,
                // An adopted orphan or a stopped child: nothing to do.
                Ok(_) => continue,
                // No children at all: the shell is gone without a status we saw.
                Err(_) => return None,
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => continue,
            // Told to stop (or unable to wait for signals at all): end it.
            Ok(_) | Err(_) => return None,
        }
    }
}

/// SIGKILLs every descendant (and the shell's process group) and reaps them, until the
/// supervisor has no child left, or gives up after [`KILL_FOR`] on what cannot be killed.
fn kill_the_rest(shell: Pid) {
    let started = Instant::now();
    loop {
        // Reap what is dead; stop when no child is left.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(_) => return,
            }
        }
        if started.elapsed() > KILL_FOR {
            eprintln!(
                "vine: the /execute supervisor could not kill processes {:?}; leaving them",
                descendants(Pid::this())
            );
            return;
        }
        let _ = killpg(shell, Signal::SIGKILL);
        for pid in descendants(Pid::this()) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(target_os = "linux")]
fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[cfg(not(target_os = "linux"))]
fn become_subreaper() -> nix::Result<()> {
    Ok(())
}

/// Asks for SIGTERM when the server dies, so a killed server leaves no command behind.
#[cfg(target_os = "linux")]
fn die_with(_parent: Pid) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
}

#[cfg(not(target_os = "linux"))]
fn die_with(_parent: Pid) {}

/// Every live descendant of `root`, from the parent links in `/proc`.
#[cfg(target_os = "linux")]
fn descendants(root: Pid) -> Vec<Pid> {
    use std::collections::HashMap;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            found.push(Pid::from_raw(c));
            todo.push(c);
        }
    }
    found
}

#[cfg(not(target_os = "linux"))]
fn descendants(_root: Pid) -> Vec<Pid> {
    Vec::new()
}

/// The parent of `pid`, from `/proc/PID/stat` ("PID (COMM) STATE PPID ...").
#[cfg(target_os = "linux")]
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
