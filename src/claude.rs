//! Setting up a Claude Code project for agentvine (`vine init --claude`): the skill, the hooks
//! in `.claude/settings.json` (merged into what is there, idempotently), the board's location
//! in the settings' `env` (so the hooks and the model's `vine` commands find it without any
//! variable), and the role's `CLAUDE.md` section. Also reading back what a project's settings
//! give the hooks ([`hook_setup`]), which `vine worker` checks before it starts `claude`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::store::durable;

/// The skill file, `.claude/skills/agentvine/SKILL.md`.
pub const SKILL: &str = include_str!("../templates/SKILL.md");
/// The worker's `CLAUDE.md` instructions.
pub const WORKER_CLAUDE: &str = include_str!("../templates/WORKER_CLAUDE.md");
/// The coordinator's `CLAUDE.md` instructions.
pub const COORDINATOR_CLAUDE: &str = include_str!("../templates/COORDINATOR_CLAUDE.md");

const BEGIN: &str = "<!-- agentvine:begin (vine init --claude rewrites this section) -->";
const END: &str = "<!-- agentvine:end -->";

/// Which instructions a project gets (`vine init --claude --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Claims and does tasks.
    Worker,
    /// Adds tasks and watches.
    Coordinator,
}

/// What `install` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    /// Files written or changed.
    pub written: Vec<PathBuf>,
    /// Hooks added to settings.json (events already set up are left alone).
    pub hooks_added: Vec<String>,
}

/// The hooks agentvine needs: (event, matcher, subcommand, timeout in seconds). The Stop hook
/// waits for work inside itself for its timeout less a margin (see
/// [`crate::hook::default_wait`]), so an idle worker costs one model turn per 9 minutes.
const HOOKS: &[(&str, Option<&str>, &str, u64)] = &[
    (
        "SessionStart",
        Some("startup|resume|clear|compact"),
        "session-start",
        10,
    ),
    ("PostToolUse", None, "post-tool-use", 5),
    ("Stop", None, "stop", STOP_TIMEOUT),
];

/// The Stop hook's timeout `vine init --claude` writes (seconds): Claude Code's default for a
/// command hook, written out so that the hook's wait can be read back from the settings.
pub const STOP_TIMEOUT: u64 = crate::hook::CLAUDE_HOOK_TIMEOUT;

/// The hook subcommands agentvine installs (`vine hook <sub>`).
pub const HOOK_SUBCOMMANDS: [&str; 3] = ["session-start", "post-tool-use", "stop"];

/// Where the project's board is, as recorded in the settings' `env` block. Claude Code applies
/// that block to the `claude` process (over its environment, also in a folder the user has not
/// trusted), so the hooks and the model's `vine` commands see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardEnv {
    /// Found from the project folder (`.vine/` at or above it): nothing recorded, and a
    /// `VINE_DIR` or `VINE_URL` recorded before is removed.
    Discovered,
    /// A local board elsewhere: `env.VINE_DIR` (an absolute path).
    Dir(PathBuf),
    /// A board on a server: `env.VINE_URL` (never the key).
    Url(String),
}

/// Writes the skill, merges the hooks (and the board's location, when given) into
/// `.claude/settings.json` and writes the role's section of `CLAUDE.md`. `vine` is the command
/// hooks run (a name on PATH or a full path).
pub fn install(
    project: &Path,
    role: Role,
    vine: &str,
    board: Option<&BoardEnv>,
) -> Result<Installed> {
    if !project.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a folder; give the Claude Code project's folder",
            project.display()
        )));
    }
    let mut out = Installed {
        written: Vec::new(),
        hooks_added: Vec::new(),
    };
    let claude = project.join(".claude");
    let skill_dir = claude.join("skills").join("agentvine");
    std::fs::create_dir_all(&skill_dir).map_err(|e| Error::io("creating", &skill_dir, e))?;
    let skill_path = skill_dir.join("SKILL.md");
    if std::fs::read(&skill_path).ok().as_deref() != Some(SKILL.as_bytes()) {
        write(&skill_dir, "SKILL.md", SKILL.as_bytes())?;
        out.written.push(skill_path);
    }

    let settings_path = claude.join("settings.json");
    let mut settings = match std::fs::read(&settings_path) {
        Ok(b) => serde_json::from_slice::<Value>(&b).map_err(|e| {
            Error::Invalid(format!(
                "{} is not valid JSON ({e}); fix it first — nothing was changed",
                settings_path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(Error::io("reading", &settings_path, e)),
    };
    let before = settings.clone();
    out.hooks_added = merge_settings(&mut settings, role, vine, board)?;
    if settings != before {
        let mut bytes =
            serde_json::to_vec_pretty(&settings).map_err(|e| Error::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        write(&claude, "settings.json", &bytes)?;
        out.written.push(settings_path);
    }

    let md_path = project.join("CLAUDE.md");
    let existing = match std::fs::read_to_string(&md_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("reading", &md_path, e)),
    };
    let section = format!(
        "{BEGIN}\n{}\n{END}\n",
        match role {
            Role::Worker => WORKER_CLAUDE,
            Role::Coordinator => COORDINATOR_CLAUDE,
        }
        .trim_end()
    );
    let updated = replace_section(&existing, &section);
    if updated != existing {
        write(project, "CLAUDE.md", updated.as_bytes())?;
        out.written.push(md_path);
    }
    Ok(out)
}

/// Adds agentvine's hooks, the permission to run `vine`, (for workers) the Stop-hook block cap
/// setting and (when given) the board's location, keeping everything else in `settings`.
/// Returns the events added.
pub fn merge_settings(
    settings: &mut Value,
    role: Role,
    vine: &str,
    board: Option<&BoardEnv>,
) -> Result<Vec<String>> {
    let Value::Object(root) = settings else {
        return Err(Error::Invalid(
            ".claude/settings.json must hold a JSON object; nothing was changed".into(),
        ));
    };
    let hooks = object_at(root, "hooks")?;
    let mut added = Vec::new();
    for (event, matcher, sub, timeout) in HOOKS {
        let command = format!("{vine} hook {sub}");
        let groups = match hooks.entry(event.to_string()).or_insert_with(|| json!([])) {
            Value::Array(a) => a,
            _ => {
                return Err(Error::Invalid(format!(
                    "hooks.{event} in .claude/settings.json is not a list; nothing was changed"
                )));
            }
        };
        let ours = |h: &Value| {
            h.get("command")
                .and_then(Value::as_str)
                .is_some_and(|c| c.trim_end().ends_with(&format!("hook {sub}")))
        };
        let mut present = false;
        for h in groups
            .iter_mut()
            .filter_map(|g| g.get_mut("hooks").and_then(Value::as_array_mut))
            .flatten()
            .filter(|h| ours(h))
        {
            present = true;
            // A hook written by an earlier version keeps its command, but gets at least the
            // timeout this version needs (the Stop hook's was 120 s).
            if let Some(h) = h.as_object_mut()
                && h.get("timeout")
                    .and_then(Value::as_u64)
                    .is_some_and(|t| t < *timeout)
            {
                h.insert("timeout".into(), json!(timeout));
            }
        }
        if present {
            continue;
        }
        let mut group = Map::new();
        if let Some(m) = matcher {
            group.insert("matcher".into(), json!(m));
        }
        group.insert(
            "hooks".into(),
            json!([{"type": "command", "command": command, "timeout": timeout}]),
        );
        groups.push(Value::Object(group));
        added.push(event.to_string());
    }
    let permissions = object_at(root, "permissions")?;
    let allow = match permissions.entry("allow").or_insert_with(|| json!([])) {
        Value::Array(a) => a,
        _ => {
            return Err(Error::Invalid(
                "permissions.allow in .claude/settings.json is not a list; nothing was changed"
                    .into(),
            ));
        }
    };
    let rule = json!("Bash(vine:*)");
    if !allow.contains(&rule) {
        allow.push(rule);
    }
    if role == Role::Worker {
        // Claude Code ends a turn after 8 consecutive Stop-hook blocks unless this is set; a
        // worker kept alive by its Stop hook needs it off (0).
        let env = object_at(root, "env")?;
        env.entry("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP")
            .or_insert_with(|| json!("0"));
    }
    if let Some(board) = board {
        let env = object_at(root, "env")?;
        // `VINE_URL` wins over `VINE_DIR`, so only one of them may stay.
        match board {
            BoardEnv::Discovered => {
                env.remove("VINE_DIR");
                env.remove("VINE_URL");
            }
            BoardEnv::Dir(d) => {
                env.remove("VINE_URL");
                env.insert("VINE_DIR".into(), json!(d.display().to_string()));
            }
            BoardEnv::Url(u) => {
                env.remove("VINE_DIR");
                env.insert("VINE_URL".into(), json!(u));
            }
        }
        if env.is_empty() {
            root.remove("env");
        }
    }
    Ok(added)
}

/// Reads a settings file: `None` if there is none; an error if it is not a JSON object.
fn read_settings(path: &Path) -> Result<Option<Map<String, Value>>> {
    match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(Error::Invalid(format!(
                "{} must hold a JSON object",
                path.display()
            ))),
            Err(e) => Err(Error::Invalid(format!(
                "{} is not valid JSON ({e})",
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// The board recorded in a project's `.claude/settings.json` `env`, if any.
pub fn recorded_board(project: &Path) -> Result<Option<BoardEnv>> {
    let path = project.join(".claude").join("settings.json");
    let Some(root) = read_settings(&path)? else {
        return Ok(None);
    };
    let get = |k: &str| {
        root.get("env")
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    Ok(match (get("VINE_URL"), get("VINE_DIR")) {
        (Some(u), _) => Some(BoardEnv::Url(u.to_string())),
        (None, Some(d)) => Some(BoardEnv::Dir(PathBuf::from(d))),
        (None, None) => None,
    })
}

/// What Claude Code's settings give the hooks of a session started in a project.
#[derive(Debug, Clone, Default)]
pub struct HookSetup {
    /// The command of each agentvine hook found (`session-start` -> `vine hook session-start`).
    pub commands: BTreeMap<String, String>,
    /// The settings' `env`, merged (later files win), with the file each value comes from.
    pub env: BTreeMap<String, (String, PathBuf)>,
    /// The settings files read.
    pub files: Vec<PathBuf>,
    /// The shortest `timeout` (seconds) among the agentvine Stop hooks found (Claude Code runs
    /// the hooks of every settings file); a hook without one has Claude Code's default, 600.
    pub stop_timeout: Option<u64>,
}

/// Reads the settings Claude Code applies to a session started in `project`: the user's
/// (`user`, e.g. `~/.claude/settings.json`), then the project's `.claude/settings.json`, then
/// `.claude/settings.local.json`; later ones win. Claude Code reads project settings from the
/// folder it starts in only, not from its parents.
pub fn hook_setup(project: &Path, user: Option<&Path>) -> Result<HookSetup> {
    let claude = project.join(".claude");
    let files = user.map(Path::to_path_buf).into_iter().chain([
        claude.join("settings.json"),
        claude.join("settings.local.json"),
    ]);
    let mut out = HookSetup::default();
    for path in files {
        let Some(root) = read_settings(&path)? else {
            continue;
        };
        if let Some(env) = root.get("env").and_then(Value::as_object) {
            for (k, v) in env {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.env.insert(k.clone(), (v, path.clone()));
            }
        }
        let groups = root
            .get("hooks")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|h| h.values())
            .filter_map(Value::as_array)
            .flatten();
        for g in groups {
            for h in g
                .get("hooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(cmd) = h.get("command").and_then(Value::as_str) else {
                    continue;
                };
                for sub in HOOK_SUBCOMMANDS {
                    if cmd.trim_end().ends_with(&format!("hook {sub}")) {
                        out.commands.insert(sub.to_string(), cmd.to_string());
                    }
                }
                if cmd.trim_end().ends_with("hook stop") {
                    let timeout = h
                        .get("timeout")
                        .and_then(Value::as_u64)
                        .unwrap_or(crate::hook::CLAUDE_HOOK_TIMEOUT);
                    out.stop_timeout = Some(out.stop_timeout.map_or(timeout, |t| t.min(timeout)));
                }
            }
        }
        out.files.push(path);
    }
    Ok(out)
}

fn object_at<'a>(m: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>> {
    match m.entry(key.to_string()).or_insert_with(|| json!({})) {
        Value::Object(o) => Ok(o),
        _ => Err(Error::Invalid(format!(
            "{key} in .claude/settings.json is not an object; nothing was changed"
        ))),
    }
}

/// Replaces the agentvine section of a CLAUDE.md (or appends one).
fn replace_section(existing: &str, section: &str) -> String {
    if let (Some(b), Some(e)) = (existing.find(BEGIN), existing.find(END))
        && b < e
    {
        let end = e + END.len();
        let rest = existing[end..]
            .strip_prefix('\n')
            .unwrap_or(&existing[end..]);
        return format!("{}{section}{rest}", &existing[..b]);
    }
    if existing.trim().is_empty() {
        return section.to_string();
    }
    format!("{}\n\n{section}", existing.trim_end())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    durable::replace(dir, name, bytes, true)?;
    durable::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_what_is_there_and_is_idempotent() {
        let mut s = json!({
            "model": "x",
            "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "other"}]}]},
            "permissions": {"allow": ["Read"]}
        });
        let added = merge_settings(&mut s, Role::Worker, "vine", None).unwrap();
        assert_eq!(added, ["SessionStart", "PostToolUse", "Stop"]);
        assert_eq!(s["model"], "x");
        assert_eq!(s["hooks"]["Stop"].as_array().unwrap().len(), 2);
        assert_eq!(s["env"]["CLAUDE_CODE_STOP_HOOK_BLOCK_CAP"], "0");
        let once = s.clone();
        assert!(
            merge_settings(&mut s, Role::Worker, "vine", None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s, once);
        assert!(merge_settings(&mut json!([1]), Role::Worker, "vine", None).is_err());
        assert!(
            merge_settings(
                &mut json!({"hooks": {"Stop": 3}}),
                Role::Worker,
                "vine",
                None
            )
            .is_err()
        );
        // The board: one of VINE_DIR and VINE_URL, replaced when it changes.
        let dir = BoardEnv::Dir(PathBuf::from("/srv/board"));
        merge_settings(&mut s, Role::Worker, "vine", Some(&dir)).unwrap();
        assert_eq!(s["env"]["VINE_DIR"], "/srv/board");
        let url = BoardEnv::Url("https://vps:5555".into());
        merge_settings(&mut s, Role::Worker, "vine", Some(&url)).unwrap();
        assert_eq!(s["env"]["VINE_URL"], "https://vps:5555");
        assert!(s["env"].get("VINE_DIR").is_none(), "{s}");
        merge_settings(&mut s, Role::Worker, "vine", Some(&BoardEnv::Discovered)).unwrap();
        assert_eq!(s, once, "back to discovery");
    }

    #[test]
    fn merging_raises_the_timeout_of_hooks_an_earlier_version_wrote() {
        let mut s = json!({"hooks": {"Stop": [{"hooks": [
            {"type": "command", "command": "/opt/vine hook stop", "timeout": 120},
            {"type": "command", "command": "other", "timeout": 1}
        ]}]}});
        let added = merge_settings(&mut s, Role::Worker, "vine", None).unwrap();
        assert!(!added.contains(&"Stop".to_string()), "{added:?}");
        let stop = &s["hooks"]["Stop"][0]["hooks"];
        assert_eq!(stop[0]["timeout"], STOP_TIMEOUT, "{s:#}");
        assert_eq!(
            stop[0]["command"], "/opt/vine hook stop",
            "the command is kept"
        );
        assert_eq!(stop[1]["timeout"], 1, "another hook is left alone");
        // A longer timeout someone chose stays.
        s["hooks"]["Stop"][0]["hooks"][0]["timeout"] = json!(900);
        merge_settings(&mut s, Role::Worker, "vine", None).unwrap();
        assert_eq!(s["hooks"]["Stop"][0]["hooks"][0]["timeout"], 900);
        // And the settings read back give the Stop hook's timeout (the shortest, if several).
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".claude")).unwrap();
        std::fs::write(
            dir.path().join(".claude/settings.json"),
            serde_json::to_vec(&s).unwrap(),
        )
        .unwrap();
        let user = dir.path().join("user.json");
        std::fs::write(
            &user,
            r#"{"hooks":{"Stop":[{"hooks":[{"type":"command","command":"vine hook stop"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            hook_setup(dir.path(), None).unwrap().stop_timeout,
            Some(900)
        );
        assert_eq!(
            hook_setup(dir.path(), Some(&user)).unwrap().stop_timeout,
            Some(600),
            "a hook without a timeout has Claude Code's default"
        );
    }

    #[test]
    fn this_repository_ships_what_init_writes() {
        let skill = include_str!("../.claude/skills/agentvine/SKILL.md");
        assert_eq!(
            skill, SKILL,
            "run `vine init --claude` here to refresh .claude/"
        );
        let mut fresh = json!({});
        merge_settings(&mut fresh, Role::Worker, "vine", None).unwrap();
        let ours: Value = serde_json::from_str(include_str!("../.claude/settings.json")).unwrap();
        assert_eq!(ours, fresh);
    }

    #[test]
    fn claude_md_section_is_replaced_not_repeated() {
        let a = replace_section("# Mine\n", "S1\n");
        assert_eq!(a, "# Mine\n\nS1\n");
        let s1 = format!("{BEGIN}\none\n{END}\n");
        let s2 = format!("{BEGIN}\ntwo\n{END}\n");
        let doc = replace_section("# Mine\n", &s1);
        let doc2 = replace_section(&doc, &s2);
        assert!(doc2.contains("two") && !doc2.contains("one") && doc2.starts_with("# Mine"));
        assert_eq!(replace_section(&doc2, &s2), doc2);
    }
}
