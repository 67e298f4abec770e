//! `vine init`: a board here (its settings from the flags), or with `--claude` the Claude Code
//! side of a project and its board. A board on a server is `remote::init`.

use std::path::{Path, PathBuf};

use agentvine::claude::{BoardEnv, Role};
use agentvine::store::paths::{BOARD, DEFAULT_DIR};
use agentvine::{Board, Error, ExitCode, Result, Settings};
use serde_json::json;

use super::args::SettingsFlags;
use super::{Output, render};

/// `vine init [DIR]`: creates the board in `dir` (default: `$VINE_DIR`, else `./.vine`), or
/// changes an existing one's settings by the flags.
pub fn local(dir: Option<PathBuf>, settings: &SettingsFlags) -> Result<Output> {
    let dir = dir
        .or_else(|| std::env::var_os("VINE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    // Flags change the existing settings (or the defaults for a new board).
    let changed = settings.apply(|| {
        if dir.join(BOARD).exists() {
            Board::open(&dir)?.settings()
        } else {
            Ok(Settings::default())
        }
    })?;
    let board = match changed {
        Some(s) => Board::init_with(&dir, s)?,
        None => Board::init(&dir)?,
    };
    let shown = board.location();
    let settings = board.settings()?;
    Ok(ready(shown, settings))
}

/// What a new (or kept) board says: where it is, its settings, what to do next.
pub fn ready(shown: String, settings: Settings) -> Output {
    Output {
        text: format!(
            "Board ready at {shown}\n{}\nNext: vine add \"<task>\" --instructions \"...\"  |  VINE_WORKER=w1 vine claim",
            render::settings_line(&settings)
        ),
        json: json!({"board": shown, "settings": settings}),
        exit: ExitCode::Done,
    }
}

/// `vine init --claude`: the Claude Code side of a project, and its board unless it is remote.
///
/// The board is `--url` (or `$VINE_URL`), else `--dir` (or `$VINE_DIR`), else the one the
/// project's settings already record, else `PROJECT/.vine`; any board but that default is
/// recorded in the settings' `env`, so the start commands printed work as they are.
pub fn claude(
    project: Option<PathBuf>,
    board_dir: Option<PathBuf>,
    url: Option<String>,
    role: Role,
    hook_command: &str,
) -> Result<Output> {
    let project = match project {
        Some(p) => p,
        None => std::env::current_dir().map_err(|e| Error::io("reading", ".", e))?,
    };
    if !project.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a folder; give the Claude Code project's folder",
            project.display()
        )));
    }
    let project = project
        .canonicalize()
        .map_err(|e| Error::io("opening", &project, e))?;
    let env_dir = std::env::var_os("VINE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let board = match (url, board_dir.or(env_dir)) {
        (Some(u), _) => BoardEnv::Url(u),
        (None, Some(d)) => BoardEnv::Dir(d),
        (None, None) => agentvine::claude::recorded_board(&project)?
            .unwrap_or_else(|| BoardEnv::Dir(project.join(DEFAULT_DIR))),
    };
    // A local board is created (or kept) first, so its path can be recorded absolute.
    let (board, shown) = match board {
        BoardEnv::Dir(d) => {
            Board::init(&d)?;
            let d = d.canonicalize().map_err(|e| Error::io("opening", &d, e))?;
            let shown = d.display().to_string();
            if d == project.join(DEFAULT_DIR) {
                (BoardEnv::Discovered, shown)
            } else {
                (BoardEnv::Dir(d), shown)
            }
        }
        other => {
            let shown = match &other {
                BoardEnv::Url(u) => u.clone(),
                _ => String::new(),
            };
            (other, shown)
        }
    };
    let installed = agentvine::claude::install(&project, role, hook_command, Some(&board))?;
    let mut text = String::new();
    for f in &installed.written {
        text.push_str(&format!("Wrote {}\n", f.display()));
    }
    if installed.written.is_empty() {
        text.push_str("Already set up: nothing to change.\n");
    }
    text.push_str(&match &board {
        BoardEnv::Discovered => format!("Board: {shown} (found from the project folder)\n"),
        BoardEnv::Dir(_) => format!(
            "Board: {shown} (recorded as VINE_DIR in .claude/settings.json, so the hooks and `vine` in sessions started here use it)\n"
        ),
        BoardEnv::Url(_) => format!(
            "Board: {shown} (recorded as VINE_URL in .claude/settings.json; the API key is not: export VINE_API_KEY or VINE_API_KEY_FILE before starting claude)\n"
        ),
    });
    text.push_str(&start_commands(&project, role));
    Ok(Output {
        json: json!({
            "written": installed.written,
            "hooks_added": installed.hooks_added,
            "board": shown,
            "project": project,
        }),
        text,
        exit: ExitCode::Done,
    })
}

/// The commands that start sessions in `project`, ready to paste.
fn start_commands(project: &Path, role: Role) -> String {
    let cd = format!("cd {} && ", shell_quote(&project.display().to_string()));
    let trust = "Claude Code ignores permissions.allow (the Bash(vine:*) rule in .claude/settings.json) in a folder \
                 you have not trusted, so these commands pass --allowedTools. To rely on the rule instead, start \
                 `claude` in this folder once and accept the trust dialog.";
    match role {
        Role::Worker => format!(
            "Start a worker (each needs its own id):\n  {cd}vine worker --worker w1\n\
             the same by hand:\n  {cd}VINE_WORKER=w1 CLAUDE_CODE_STOP_HOOK_BLOCK_CAP=0 claude -p \"Work on the agentvine board.\" --allowedTools Bash\n\
             an interactive worker session:\n  {cd}VINE_WORKER=w1 claude --allowedTools \"Bash(vine *)\"\n{trust}"
        ),
        Role::Coordinator => format!(
            "Start the coordinator, then describe the goal (it adds tasks with `vine add`):\n  \
             {cd}claude --allowedTools \"Bash(vine *)\"\n{trust}"
        ),
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl SettingsFlags {
    /// The settings `base` gives with the flags applied, or `None` when no flag was given
    /// (then `base` is not called). Local and remote `vine init` share this.
    pub fn apply(&self, base: impl FnOnce() -> Result<Settings>) -> Result<Option<Settings>> {
        let SettingsFlags {
            lease,
            stale_after,
            fallback_after,
            max_retries,
            archive_after,
            retry_backoff,
            retry_backoff_max,
        } = self;
        let given = lease.is_some()
            || stale_after.is_some()
            || fallback_after.is_some()
            || max_retries.is_some()
            || archive_after.is_some()
            || retry_backoff.is_some()
            || retry_backoff_max.is_some();
        if !given {
            return Ok(None);
        }
        let mut s = base()?;
        if let Some(d) = lease {
            s.lease_secs = d.as_secs();
        }
        if let Some(d) = stale_after {
            s.stale_after_secs = d.as_secs();
        }
        if let Some(d) = fallback_after {
            s.fallback_after_secs = Some(d.as_secs());
        }
        if let Some(n) = max_retries {
            s.max_retries = *n;
        }
        if let Some(n) = archive_after {
            s.archive_after = *n;
        }
        if let Some(d) = retry_backoff {
            s.retry_backoff_secs = d.as_secs();
        }
        if let Some(d) = retry_backoff_max {
            s.retry_backoff_max_secs = d.as_secs();
        }
        Ok(Some(s))
    }
}
