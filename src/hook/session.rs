//! What the hooks of one Claude Code session remember between calls: how many tool calls
//! the session has made and the last reminder the Stop hook gave. It is kept beside the
//! session, not on the board (the hooks run on the worker's machine whether the board is
//! local or on a server): one small JSON file per session and worker in a private per-user
//! runtime directory.
//!
//! The runtime directory is `$VINE_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/agentvine`, else
//! `<temp dir>/agentvine-<uid>`; it must be a directory owned by this user that nobody else
//! may enter (mode 0700), or it is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The hooks' state of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionState {
    /// Tool calls the PostToolUse hook has seen in this session.
    pub tool_calls: u64,
    /// The Stop hook's last reminder of a held task, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reminded: Option<Reminder>,
}

pub use crate::op::Reminder;

/// The per-user runtime directory's path (not created).
pub fn runtime_dir() -> PathBuf {
    let from_env = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = from_env("VINE_RUNTIME_DIR") {
        return d;
    }
    if let Some(d) = from_env("XDG_RUNTIME_DIR") {
        return d.join("agentvine");
    }
    let who = std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "user".into());
    std::env::temp_dir().join(format!("agentvine-{who}"))
}

/// Creates the runtime directory if needed and checks that it is private: a real directory
/// (not a symlink) owned by this user, with no access for group or others.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("creating", dir, e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("reading", dir, e))?;
    let mine = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let private = meta.is_dir()
        && meta.permissions().mode() & 0o077 == 0
        && mine.is_none_or(|uid| meta.uid() == uid);
    if !private {
        return Err(Error::Invalid(format!(
            "the hooks' runtime directory {} is not private (it must be a directory of yours with mode 0700); \
             remove it or set VINE_RUNTIME_DIR to another",
            dir.display()
        )));
    }
    Ok(())
}

/// A part of a file name made from any text: kept when it is short and plain, else hashed.
fn name_part(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= 80
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !s.starts_with('.');
    if plain {
        return s.to_string();
    }
    // FNV-1a: stable across runs and versions, which std's hasher does not promise.
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("h{h:016x}")
}

/// The state file of one session's hooks for one worker.
#[derive(Debug, Clone)]
pub struct SessionFile {
    dir: PathBuf,
    name: String,
}

impl SessionFile {
    /// The file for `session` (Claude Code's session id) and `worker`, in `dir`.
    pub fn new(dir: impl Into<PathBuf>, session: &str, worker: &str) -> Self {
        SessionFile {
            dir: dir.into(),
            name: format!("session-{}-{}.json", name_part(session), name_part(worker)),
        }
    }

    /// Where it is.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Reads the state, lets `f` change it, and writes it back, all under an exclusive lock on
    /// the file (hooks of one session may run at once: parallel tool calls). A file that does
    /// not parse reads as a fresh state: this is soft state, never worth failing a hook for.
    pub fn update<T>(&self, f: impl FnOnce(&mut SessionState) -> T) -> Result<T> {
        ensure_private_dir(&self.dir)?;
        let path = self.path();
        let mut file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        file.lock().map_err(|e| Error::io("locking", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading", &path, e))?;
        let mut state: SessionState = serde_json::from_slice(&bytes).unwrap_or_default();
        let out = f(&mut state);
        let new = serde_json::to_vec(&state).map_err(|e| Error::Protocol(e.to_string()))?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&new))
            .map_err(|e| Error::io("writing", &path, e))?;
        Ok(out)
    }

    /// The state as it is now (a fresh one if there is none yet).
    pub fn read(&self) -> SessionState {
        std::fs::read(self.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Removes session files in `dir` not changed for `older_than` (sessions long gone).
pub fn prune(dir: &Path, older_than: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("session-") && name.ends_with(".json")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > older_than);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_kept_per_session_and_worker_and_survives_junk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        let a = SessionFile::new(&dir, "8c1f0a7e-1111", "w1");
        let b = SessionFile::new(&dir, "8c1f0a7e-1111", "w2");
        a.update(|s| s.tool_calls += 2).unwrap();
        assert_eq!(a.read().tool_calls, 2);
        assert_eq!(b.read(), SessionState::default());
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::write(a.path(), b"{{ junk").unwrap();
        assert_eq!(a.update(|s| s.tool_calls).unwrap(), 0);
        // Odd session ids make plain, distinct file names.
        let odd = SessionFile::new(&dir, "../../etc/passwd", "w1");
        assert!(odd.path().starts_with(&dir));
        assert_ne!(
            SessionFile::new(&dir, "a/b", "w").path(),
            SessionFile::new(&dir, "a/c", "w").path()
        );
    }

    #[test]
    fn a_runtime_dir_others_may_enter_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ensure_private_dir(&dir).is_err());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(ensure_private_dir(&link).is_err());
    }
}
