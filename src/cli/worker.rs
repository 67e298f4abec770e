//! `vine worker`: starts `claude -p` as a worker in the current folder. Claude Code shows no
//! hook error in `-p` mode, so before it starts `claude` it checks what the session's hooks
//! will see: the project's settings have the agentvine hooks and the `vine` they run exists;
//! the board they will use (from the environment given to `claude`, overridden by the
//! settings' `env`, as Claude Code does) opens and is the board `vine worker` was told to use;
//! the worker id is valid. Anything wrong: a clear message and exit 2, and `claude` is not
//! started. While `claude` runs, a thread heartbeats the worker (so a long tool call never
//! makes it look stale), and `VINE_KEEPALIVE=0` tells the hooks not to start a keepalive.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use agentvine::claude::{self, HOOK_SUBCOMMANDS, HookSetup};
use agentvine::hook::keepalive;
use agentvine::{Board, Error, ExitCode, Result};
use serde_json::json;

use super::args::WorkerStartArgs;
use super::{Output, remote};

/// Where the session's board is, as the hooks will find it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Url(String),
    Dir(PathBuf),
}

impl Location {
    fn dir(d: &Path) -> Self {
        Location::Dir(d.canonicalize().unwrap_or_else(|_| d.to_path_buf()))
    }

    fn same(&self, other: &Location) -> bool {
        match (self, other) {
            // The same servers in the same order (a list is tried in its order).
            (Location::Url(a), Location::Url(b)) => servers(a) == servers(b),
            (a, b) => a == b,
        }
    }

    fn show(&self) -> String {
        match self {
            Location::Url(u) => u.clone(),
            Location::Dir(d) => d.display().to_string(),
        }
    }
}

/// The base URLs of a `--url` list as the client uses them (the text itself when it is not one).
fn servers(list: &str) -> Vec<String> {
    agentvine::remote::parse_servers(list).unwrap_or_else(|_| vec![list.to_string()])
}

/// Claude Code's user settings file: `$CLAUDE_CONFIG_DIR/settings.json`, else
/// `~/.claude/settings.json`.
pub(super) fn user_settings() -> Option<PathBuf> {
    let from = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    from("CLAUDE_CONFIG_DIR")
        .or_else(|| from("HOME").map(|h| h.join(".claude")))
        .map(|d| d.join("settings.json"))
}

fn refuse(msg: String) -> Error {
    Error::Invalid(format!("{msg}. claude was not started"))
}

/// True if the program a hook command runs can be found: a path that exists, or a name on
/// `PATH`.
fn program_exists(command: &str) -> Option<String> {
    let program = command.split_whitespace().next()?.trim_matches(['"', '\'']);
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
    };
    (!found).then(|| program.to_string())
}

/// Checks the hooks are there and runnable.
fn check_hooks(setup: &HookSetup, project: &Path) -> Result<()> {
    let missing: Vec<&str> = HOOK_SUBCOMMANDS
        .iter()
        .copied()
        .filter(|s| !setup.commands.contains_key(*s))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "{} is not set up for agentvine workers: Claude Code's settings there have no `vine hook {}` hook, so the \
             session would never get a task. Run `vine init --claude` in that folder first (Claude Code reads \
             .claude/settings.json from the folder it starts in)",
            project.display(),
            missing.join("`, `vine hook ")
        )));
    }
    for (sub, command) in &setup.commands {
        if let Some(p) = program_exists(command) {
            return Err(refuse(format!(
                "the {sub} hook runs `{command}`, but {p} cannot be found (not on PATH, or no such file). \
                 Put vine on the PATH, or run `vine init --claude --hook-command /full/path/to/vine` again"
            )));
        }
    }
    Ok(())
}

/// The board the hooks will use, and where that choice comes from.
fn hooks_board(
    setup: &HookSetup,
    project: &Path,
    given: &[(&str, String)],
) -> Result<(Location, String)> {
    let from_settings = |k: &str| setup.env.get(k).filter(|(v, _)| !v.is_empty());
    let from_given = |k: &str| {
        given
            .iter()
            .find(|(n, v)| *n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok().filter(|v| !v.is_empty()))
    };
    let pick = |k: &str| -> Option<(String, String)> {
        match from_settings(k) {
            Some((v, file)) => Some((v.clone(), format!("{k} in {}", file.display()))),
            None => from_given(k).map(|v| (v, format!("${k}"))),
        }
    };
    if let Some((u, why)) = pick("VINE_URL") {
        return Ok((Location::Url(u), why));
    }
    if let Some((d, why)) = pick("VINE_DIR") {
        return Ok((Location::dir(Path::new(&d)), why));
    }
    match Board::find_dir(project) {
        Some(d) => Ok((
            Location::dir(&d),
            format!("the .vine/ found from {}", project.display()),
        )),
        None => Err(refuse(format!(
            "the hooks would find no board: no VINE_URL or VINE_DIR in the environment or in {}'s Claude Code \
             settings, and no .vine/ at or above it. Give --dir or --url, or run `vine init --claude --dir BOARD` \
             there to record the board",
            project.display()
        ))),
    }
}

/// Runs `vine worker` as `worker`.
/// What `vine worker` and `vine pool` check before starting Claude, and what they learn.
pub(super) struct Preflight {
    /// The project folder (the current directory).
    pub project: PathBuf,
    /// `VINE_URL` / `VINE_DIR` for the Claude processes (canonical paths).
    pub given: Vec<(&'static str, String)>,
    /// The key file's canonical path, if one was given.
    pub key_file: Option<PathBuf>,
    /// The board the sessions' hooks will use.
    hooks: Location,
    /// That board's settings.
    pub settings: agentvine::Settings,
}

impl Preflight {
    /// Opens the board the sessions' hooks use.
    pub fn open(&self) -> Result<Board> {
        match &self.hooks {
            Location::Url(u) => remote::board(u, self.key_file.as_deref()),
            Location::Dir(d) => Board::open(d),
        }
    }

    /// Opens the board for quick requests (heartbeats).
    pub fn open_quick(&self) -> Result<Board> {
        match &self.hooks {
            Location::Url(u) => remote::quick_board(u, self.key_file.as_deref()),
            Location::Dir(d) => Board::open(d),
        }
    }

    /// The board's location as the environment names it (`VINE_URL`, or `VINE_DIR` with an
    /// absolute path), for sessions that run outside the project (a worktree).
    pub fn location_env(&self) -> (String, String) {
        match &self.hooks {
            Location::Url(u) => ("VINE_URL".into(), u.clone()),
            Location::Dir(d) => ("VINE_DIR".into(), d.display().to_string()),
        }
    }

    /// The environment every Claude process gets for the board.
    pub fn board_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .given
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if let Some(k) = &self.key_file {
            // The hooks inside the session need the key too.
            env.push((
                agentvine::apikey::ENV_KEY_FILE.to_string(),
                k.display().to_string(),
            ));
        }
        env
    }
}

/// Checks that Claude sessions started here would work on the board (see the module doc).
pub(super) fn preflight(
    command: &str,
    url: Option<&str>,
    dir: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Preflight> {
    let project = std::env::current_dir().map_err(|e| Error::io("reading", ".", e))?;
    let setup = claude::hook_setup(&project, user_settings().as_deref())
        .map_err(|e| refuse(format!("Claude Code's settings cannot be read: {e}")))?;
    check_hooks(&setup, &project)?;

    // What `claude` gets from here: the flags, canonical paths.
    let mut given: Vec<(&'static str, String)> = Vec::new();
    if let Some(u) = url {
        given.push(("VINE_URL", u.to_string()));
    }
    if let Some(d) = dir {
        let d = d
            .canonicalize()
            .map_err(|e| refuse(format!("--dir {}: {e}", d.display())))?;
        given.push(("VINE_DIR", d.display().to_string()));
    }
    let key_file = key_file
        .map(|k| {
            k.canonicalize()
                .map_err(|e| Error::io("opening the key file", k, e))
        })
        .transpose()?;

    // The board the hooks will see, and the one this command was told to use, must be one.
    let (hooks, why) = hooks_board(&setup, &project, &given)?;
    let told = url.map(|u| Location::Url(u.to_string())).or_else(|| {
        dir.map(Location::dir).or_else(|| {
            std::env::var_os("VINE_DIR")
                .filter(|d| !d.is_empty())
                .map(|d| Location::dir(Path::new(&d)))
        })
    });
    if let Some(told) = &told
        && !told.same(&hooks)
    {
        return Err(refuse(format!(
            "{command} was told to use the board at {}, but the session's hooks would use {} ({why}; Claude Code \
             applies the settings' env over the environment). Run `vine init --claude --dir BOARD` (or \
             `vine --url URL init --claude`) here to record the board you mean, or leave out --dir/--url",
            told.show(),
            hooks.show()
        )));
    }
    let mut pre = Preflight {
        project,
        given,
        key_file,
        hooks,
        settings: agentvine::Settings::default(),
    };
    pre.settings = pre.open().and_then(|b| b.settings()).map_err(|e| {
        refuse(format!(
            "the session's hooks could not use the board at {} ({why}): {e}",
            pre.hooks.show()
        ))
    })?;
    Ok(pre)
}

pub fn start(
    a: WorkerStartArgs,
    worker: String,
    url: Option<&str>,
    dir: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Output> {
    agentvine::validate::name("worker id", &worker)?;
    for c in &a.capabilities {
        agentvine::validate::name("capability", c)?;
    }
    let pre = preflight("vine worker", url, dir, key_file)?;
    let settings = &pre.settings;

    let mut cmd = std::process::Command::new(&a.claude);
    cmd.arg("-p")
        .arg(&a.prompt)
        .args(["--allowedTools", "Bash"])
        .args(&a.claude_args)
        .env("VINE_WORKER", &worker)
        .env("VINE_CAPABILITIES", a.capabilities.join(","))
        .env(
            "VINE_MAX_IDLE",
            agentvine::time::format_duration(a.max_idle.as_secs()),
        )
        .env("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP", "0")
        // This process heartbeats the worker; the hooks start no keepalive of their own.
        .env("VINE_KEEPALIVE", "0");
    for (k, v) in pre.board_env() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::Invalid(format!(
            "cannot start {:?}: {e}. Install Claude Code (npm install -g @anthropic-ai/claude-code) or pass --claude PATH",
            a.claude
        ))
    })?;

    // Heartbeats while claude runs: quick requests, so the thread ends soon after claude.
    let (stop, stopped) = mpsc::channel::<()>();
    let every = keepalive::interval(settings);
    let beating = worker.clone();
    let beat_board = pre.open_quick();
    let beats = beat_board.ok().map(|board| {
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let _ = keepalive::beat(&board, &beating);
            }
        })
    });
    let status = child
        .wait()
        .map_err(|e| Error::Invalid(format!("waiting for {:?}: {e}", a.claude)));
    drop(stop);
    if let Some(t) = beats {
        let _ = t.join();
    }
    let status = status?;
    Ok(Output {
        json: json!({"worker": worker, "exit": status.code()}),
        text: String::new(),
        exit: if status.success() {
            ExitCode::Done
        } else {
            ExitCode::Other
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_without_a_trailing_slash() {
        let a = Location::Url("http://h:1/".into());
        assert!(a.same(&Location::Url("http://h:1".into())));
        assert!(!a.same(&Location::Url("http://h:2".into())));
        assert!(!a.same(&Location::Dir("/x".into())));
        let list = Location::Url("http://h:1/, http://h:2".into());
        assert!(list.same(&Location::Url("http://h:1,http://h:2/".into())));
        assert!(!list.same(&Location::Url("http://h:2,http://h:1".into())));
        assert!(!list.same(&a));
    }

    #[test]
    fn hook_programs_are_looked_up() {
        assert!(program_exists("/bin/sh -c x").is_none());
        assert_eq!(
            program_exists("/nonexistent/vine hook stop").as_deref(),
            Some("/nonexistent/vine")
        );
        assert!(program_exists("sh hook stop").is_none(), "found on PATH");
    }
}
