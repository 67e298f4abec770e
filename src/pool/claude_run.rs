//! One `claude -p` run for a pool slot: started in the project folder with the worker's
//! environment, in its own process group, heartbeating the worker while it runs, and read back
//! as an [`Outcome`] when it exits. A run asked to stop (the pool is stopping and its grace is
//! over) is killed with every process it started.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::outcome::Outcome;
use crate::error::{Error, Result};

/// How a run starts: a fresh session, or resuming one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new session (Claude picks its id).
    Fresh,
    /// `--resume ID`.
    Resume(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The `claude` program.
    pub claude: PathBuf,
    /// The project folder it runs in.
    pub project: PathBuf,
    /// The prompt.
    pub prompt: String,
    /// Fresh or resumed.
    pub start: Start,
    /// `--max-turns`, if any.
    pub max_turns: Option<u32>,
    /// More `claude` arguments (after the pool's own).
    pub extra_args: Vec<String>,
    /// The environment the run gets on top of the pool's.
    pub env: Vec<(String, String)>,
    /// Run it under this program's command supervisor (`vine` with
    /// [`crate::server::SUPERVISOR_ARG`]): when the pool dies, even by SIGKILL, the supervisor
    /// is told (`PR_SET_PDEATHSIG`) and kills the run and everything it started, so no Claude
    /// process works on a task the pool no longer heartbeats. `None` runs it directly.
    pub supervisor: Option<PathBuf>,
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    /// What it printed, read as a result (an error when it printed none).
    pub outcome: Result<Outcome>,
    /// Its exit code (`None` when killed by a signal).
    pub exit: Option<i32>,
    /// The end of what it printed on stderr (for reports).
    pub stderr_tail: String,
    /// True if it was killed because the pool stopped.
    pub killed: bool,
}

/// How often a running child is looked at.
const TICK: Duration = Duration::from_millis(100);

impl RunSpec {
    /// The command line: `claude -p PROMPT --output-format json --allowedTools Bash
    /// [--resume ID] [--max-turns N] EXTRA...`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-p".to_string(),
            self.prompt.clone(),
            "--output-format".into(),
            "json".into(),
            "--allowedTools".into(),
            "Bash".into(),
        ];
        if let Start::Resume(id) = &self.start {
            a.push("--resume".into());
            a.push(id.clone());
        }
        if let Some(n) = self.max_turns {
            a.push("--max-turns".into());
            a.push(n.to_string());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// Runs `spec` to its end, calling `beat` every `every` while it runs. When `stop` becomes
/// true the run is killed (with its process group).
pub fn run(
    spec: &RunSpec,
    every: Duration,
    beat: &dyn Fn(),
    stop: &AtomicBool,
) -> Result<Finished> {
    let mut cmd = match &spec.supervisor {
        Some(sup) => {
            let line: Vec<String> = std::iter::once(spec.claude.display().to_string())
                .chain(spec.args())
                .map(|a| sh_quote(&a))
                .collect();
            let mut c = Command::new(sup);
            c.arg(crate::server::SUPERVISOR_ARG)
                .arg(std::process::id().to_string())
                .arg(format!("exec {}", line.join(" ")));
            c
        }
        None => {
            let mut c = Command::new(&spec.claude);
            c.args(spec.args());
            c
        }
    };
    cmd.current_dir(&spec.project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::io(
            "starting claude (install it with `npm install -g @anthropic-ai/claude-code`, or give --claude PATH)",
            &spec.claude,
            e,
        )
    })?;
    let out = child.stdout.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = o.read_to_string(&mut s);
            s
        })
    });
    let err = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let mut last_beat = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Error::io("waiting for claude", &spec.claude, e))?
        {
            break st;
        }
        if stop.load(Ordering::Relaxed) && !killed {
            match spec.supervisor {
                // The supervisor kills every process of the run, then exits.
                Some(_) => terminate(child.id()),
                None => kill_group(child.id()),
            }
            killed = true;
        }
        if last_beat.elapsed() >= every {
            beat();
            last_beat = Instant::now();
        }
        std::thread::sleep(TICK);
    };
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    let tail: String = {
        let t = stderr.trim_end();
        let start = t.char_indices().rev().nth(1999).map_or(0, |(i, _)| i);
        t[start..].to_string()
    };
    Ok(Finished {
        outcome: Outcome::parse(&stdout),
        exit: status.code(),
        stderr_tail: tail,
        killed,
    })
}

/// Asks process `pid` (a supervisor) to stop.
fn terminate(pid: u32) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if let Ok(p) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
    }
}

/// Kills process group `pgid` (the run and everything it started).
fn kill_group(pgid: u32) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        if let Ok(p) = i32::try_from(pgid) {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn spec(claude: &Path, start: Start) -> RunSpec {
        RunSpec {
            claude: claude.to_path_buf(),
            project: std::env::temp_dir(),
            prompt: "do it".into(),
            start,
            max_turns: Some(30),
            extra_args: vec!["--model".into(), "sonnet".into()],
            env: vec![("VINE_TASK".into(), "7".into())],
            supervisor: None,
        }
    }

    /// Writes an executable stand-in for `claude` at `dir/claude` running `script`.
    fn fake_claude(dir: &Path, script: &str) -> std::path::PathBuf {
        let fake = dir.join("claude");
        std::fs::write(&fake, script).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        fake
    }

    /// [`run`], started again while the stand-in is "busy": another test's thread that forked
    /// while the file was open for writing holds it until that child execs (ETXTBSY).
    fn run_fake(
        spec: &RunSpec,
        beat_every: Duration,
        beat: &dyn Fn(),
        stop: &AtomicBool,
    ) -> Result<Finished> {
        let mut tries = 0;
        loop {
            match run(spec, beat_every, beat, stop) {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("it's $HOME"), "'it'\\''s $HOME'");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("a 'b' \"c\" $d `e`\nf")))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a 'b' \"c\" $d `e`\nf"
        );
    }

    #[test]
    fn the_command_line_resumes_and_limits_turns() {
        let a = spec(Path::new("claude"), Start::Resume("s-1".into())).args();
        assert_eq!(
            a,
            [
                "-p",
                "do it",
                "--output-format",
                "json",
                "--allowedTools",
                "Bash",
                "--resume",
                "s-1",
                "--max-turns",
                "30",
                "--model",
                "sonnet"
            ]
        );
        let a = spec(Path::new("claude"), Start::Fresh).args();
        assert!(!a.contains(&"--resume".to_string()));
    }

    #[test]
    fn a_run_is_read_back_with_its_environment_and_beats() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_claude(
            dir.path(),
            "#!/bin/sh\nsleep 0.5\necho \"{\\\"type\\\":\\\"result\\\",\\\"subtype\\\":\\\"success\\\",\\\"session_id\\\":\\\"s-$VINE_TASK\\\",\\\"num_turns\\\":2}\"\necho oops >&2\n",
        );
        let beats = std::sync::atomic::AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let f = run_fake(
            &spec(&fake, Start::Fresh),
            Duration::from_millis(100),
            &|| {
                beats.fetch_add(1, Ordering::Relaxed);
            },
            &stop,
        )
        .unwrap();
        let o = f.outcome.unwrap();
        assert_eq!((o.session_id.as_str(), o.num_turns), ("s-7", 2));
        assert_eq!(f.exit, Some(0));
        assert_eq!(f.stderr_tail, "oops");
        assert!(!f.killed);
        assert!(beats.load(Ordering::Relaxed) >= 2, "beats while it ran");
    }

    #[test]
    fn a_stopped_run_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        let fake = fake_claude(
            dir.path(),
            &format!(
                "#!/bin/sh\n(sleep 3; touch {}) &\nsleep 30\n",
                marker.display()
            ),
        );
        let stop = AtomicBool::new(true);
        let started = Instant::now();
        let f = run_fake(
            &spec(&fake, Start::Fresh),
            Duration::from_secs(60),
            &|| {},
            &stop,
        )
        .unwrap();
        assert!(f.killed && f.exit.is_none(), "{f:?}");
        assert!(f.outcome.is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(3500));
        assert!(!marker.exists(), "the run's own child was killed too");
    }

    #[test]
    fn a_missing_claude_says_how_to_install_it() {
        let stop = AtomicBool::new(false);
        let e = run(
            &spec(Path::new("/nonexistent/claude"), Start::Fresh),
            Duration::from_secs(1),
            &|| {},
            &stop,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("npm install -g @anthropic-ai/claude-code"),
            "{e}"
        );
    }
}
