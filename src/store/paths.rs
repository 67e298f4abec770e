//! The names of the board's files, and keeping board paths inside the board.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::validate;

/// The task queue: a JSON array of tasks (the original plan's file).
pub const QUEUE: &str = "task-queue.json";
/// Worker status: a JSON object of worker id to worker (the original plan's file).
pub const WORKERS: &str = "worker-status.json";
/// The progress record (the original plan's file).
pub const PROGRESS: &str = "progress.json";
/// The message log, one JSON object a line (the original plan's file).
pub const LOG: &str = "agent-comms.jsonl";
/// The board's settings (ours).
pub const BOARD: &str = "board.json";
/// The lock every change takes; never renamed or rewritten (ours).
pub const LOCK: &str = "board.lock";
/// The Claude sessions that worked on the board, a JSON array (ours; see `sessions`).
pub const SESSIONS: &str = "sessions.json";
/// Finished tasks moved off the queue, one JSON object a line, append-only (ours).
pub const ARCHIVE: &str = "task-archive.jsonl";
/// The board journal: every change since the last checkpoint, one record a line (ours; see
/// `store::journal`).
pub const JOURNAL: &str = "board.journal";
/// The files a checkpoint writes from the journal (see `store::journal`).
pub const CHECKPOINT_FILES: [&str; 4] = [QUEUE, WORKERS, PROGRESS, SESSIONS];
/// The folder of instruction files.
pub const TASKS_DIR: &str = "tasks";
/// The folder `vine init` creates when given no directory, and `vine` looks for upward.
pub const DEFAULT_DIR: &str = ".vine";

/// Resolves a board-relative path to a real path inside `root`, refusing escapes through
/// `..`, absolute paths or symlinks that lead outside. The path need not exist.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf> {
    let root = root
        .canonicalize()
        .map_err(|e| Error::io("opening the board", root, e))?;
    resolve_in(&root, rel)
}

/// [`resolve`] for a root that is already canonical (saves resolving it again).
pub fn resolve_in(root: &Path, rel: &str) -> Result<PathBuf> {
    validate::board_path("path", rel)?;
    let mut full = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => full.push(p),
            Component::CurDir => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "path {rel:?} must stay inside the board"
                )));
            }
        }
    }
    if let Some(real) = without_links(root, &full) {
        return Ok(real);
    }
    // Canonicalize the longest existing prefix, so a symlink anywhere on the way is seen. A
    // symlink counts as existing even when its target does not (`symlink_metadata`): a
    // dangling link is refused below instead of being walked past, since whatever later
    // appears at its target (possibly outside) is where the path would lead.
    let mut existing = full.as_path();
    let mut rest = Vec::new();
    while existing.symlink_metadata().is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut real = match existing.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "path {rel:?} goes through a symlink whose target does not exist"
            )));
        }
        Err(e) => return Err(Error::io("resolving", existing, e)),
    };
    for name in rest.iter().rev() {
        real.push(name);
    }
    if !real.starts_with(root) {
        return Err(Error::Invalid(format!(
            "path {rel:?} leads outside the board (through a symlink)"
        )));
    }
    Ok(real)
}

/// `full` itself when neither the canonical `root` nor any part of `full` below it is a
/// symlink: each is looked at in turn (`lstat`) from the root down, and what follows a part
/// that does not exist cannot be a link. `None` when one is a symlink or cannot be looked at
/// (the caller then canonicalizes). One `lstat` per part from the root down, where
/// canonicalizing reads every part from `/` down: the folders above the board were resolved
/// when the board was opened and are not looked at again.
fn without_links(root: &Path, full: &Path) -> Option<PathBuf> {
    let below = full.strip_prefix(root).ok()?;
    if root.symlink_metadata().ok()?.file_type().is_symlink() {
        return None;
    }
    let mut at = root.to_path_buf();
    for part in below.components() {
        at.push(part);
        match at.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => return None,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Some(full.to_path_buf());
            }
            Err(_) => return None,
        }
    }
    Some(full.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dangling_symlink_is_refused_whatever_its_target() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("board");
        std::fs::create_dir(&root).unwrap();
        let outside = tmp.path().join("outside");
        std::os::unix::fs::symlink(outside.join("not-yet"), root.join("dangling")).unwrap();
        std::os::unix::fs::symlink(root.join("nothing-here"), root.join("inner")).unwrap();
        let root = root.canonicalize().unwrap();
        for rel in ["dangling", "dangling/x.md", "inner", "inner/x.md"] {
            match resolve_in(&root, rel) {
                Err(Error::Invalid(m)) => assert!(m.contains("symlink"), "{rel}: {m}"),
                other => panic!("{rel}: {other:?}"),
            }
        }
        // Paths that do not exist yet, without links, are fine.
        assert_eq!(
            resolve_in(&root, "new/dir/file.md").unwrap(),
            root.join("new/dir/file.md")
        );
    }

    #[test]
    fn a_path_resolves_as_canonicalizing_it_would_with_links_inside_or_without() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("board");
        std::fs::create_dir_all(root.join("tasks/deep")).unwrap();
        std::fs::write(root.join("tasks/deep/a.md"), "a").unwrap();
        std::fs::write(root.join("file.md"), "f").unwrap();
        // A link that stays inside the board resolves to where it leads.
        std::os::unix::fs::symlink(root.join("tasks"), root.join("inner")).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("tasks/out")).unwrap();
        let root = root.canonicalize().unwrap();
        let cases = [
            ("tasks/deep/a.md", Some("tasks/deep/a.md")),
            ("tasks/deep/new.md", Some("tasks/deep/new.md")),
            ("tasks/new/dir/x.md", Some("tasks/new/dir/x.md")),
            ("./tasks/deep/a.md", Some("tasks/deep/a.md")),
            ("file.md/under-a-file", Some("file.md/under-a-file")),
            ("inner/deep/a.md", Some("tasks/deep/a.md")),
            ("inner/new.md", Some("tasks/new.md")),
            ("tasks/out/x.md", None),
            ("tasks/out", None),
        ];
        for (rel, want) in cases {
            match (resolve_in(&root, rel), want) {
                (Ok(p), Some(w)) => assert_eq!(p, root.join(w), "{rel}"),
                (Err(Error::Invalid(m)), None) => assert!(m.contains("outside"), "{rel}: {m}"),
                (got, want) => panic!("{rel}: {got:?}, wanted {want:?}"),
            }
        }
        // The board itself swapped for a link to another folder: refused, as canonicalizing
        // the path would.
        let moved = tmp.path().join("board-moved");
        std::fs::rename(&root, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &root).unwrap();
        match resolve_in(&root, "tasks/deep/a.md") {
            Err(Error::Invalid(m)) => assert!(m.contains("outside"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
