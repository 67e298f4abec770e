//! `vine pool --worktree`: each pool worker works in its own git worktree of the project, so
//! two sessions on one machine never edit the same files.
//!
//! A worker's worktree is `<parent>/<project>.vine-worktrees/<worker>` (beside the project,
//! not inside it, so the project's own working tree is untouched), on the branch
//! `vine/<worker>` made from the project's `HEAD` (or reused when it exists), created the
//! first time the worker runs. The Claude Code setup that `vine init --claude` wrote
//! (`.claude/`, `CLAUDE.md`) is copied in when the branch does not carry it. When the pool
//! ends, a worktree is removed only if git finds nothing uncommitted in it (`git worktree
//! remove` without `--force`, after the copied setup is taken out); otherwise it is kept and
//! reported. Commits stay on the worker's branch either way.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Files of the Claude Code setup copied into a worktree that lacks them.
const SETUP: &[&str] = &[".claude", "CLAUDE.md"];

/// The git project the pool works in.
#[derive(Debug, Clone)]
pub struct Project {
    /// Its top-level folder.
    pub root: PathBuf,
}

/// What happened to a worker's worktree when the pool ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cleanup {
    /// The worktree.
    pub path: PathBuf,
    /// True if it was removed; false if kept.
    pub removed: bool,
    /// Why it was kept (git's words), if it was.
    pub kept_because: Option<String>,
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| Error::io("running git (is it installed?)", dir, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(Error::Invalid(format!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Project {
    /// The git project `dir` is in; an error saying so when it is not in one.
    pub fn at(dir: &Path) -> Result<Project> {
        let root = git(dir, &["rev-parse", "--show-toplevel"]).map_err(|_| {
            Error::Invalid(format!(
                "--worktree needs a git project, and {} is not in one (git init, commit, then run vine pool there)",
                dir.display()
            ))
        })?;
        git(dir, &["rev-parse", "--verify", "HEAD"]).map_err(|_| {
            Error::Invalid(format!(
                "--worktree needs a commit to start worktrees from; {root} has none yet (git commit first)"
            ))
        })?;
        Ok(Project {
            root: PathBuf::from(root),
        })
    }

    /// Where `worker`'s worktree goes.
    pub fn path_of(&self, worker: &str) -> PathBuf {
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "project".into());
        let parent = self.root.parent().unwrap_or(&self.root);
        parent.join(format!("{name}.vine-worktrees")).join(worker)
    }

    /// `worker`'s worktree, created (with the Claude Code setup) if it does not exist.
    pub fn worktree(&self, worker: &str) -> Result<PathBuf> {
        let path = self.path_of(worker);
        if !path.join(".git").exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
            }
            let branch = format!("vine/{worker}");
            let p = path.display().to_string();
            let exists = git(&self.root, &["rev-parse", "--verify", "--quiet", &branch]).is_ok();
            if exists {
                git(&self.root, &["worktree", "add", &p, &branch])?;
            } else {
                git(&self.root, &["worktree", "add", "-b", &branch, &p, "HEAD"])?;
            }
        }
        for name in SETUP {
            let from = self.root.join(name);
            let to = path.join(name);
            if from.exists() && !to.exists() {
                copy(&from, &to)?;
            }
        }
        Ok(path)
    }

    /// Removes `worker`'s worktree if nothing in it is uncommitted; keeps it otherwise.
    pub fn clean_up(&self, worker: &str) -> Result<Option<Cleanup>> {
        let path = self.path_of(worker);
        if !path.join(".git").exists() {
            return Ok(None);
        }
        // The copied setup goes (unless the branch tracks it): it is not the worker's work.
        for name in SETUP {
            let tracked = git(&path, &["ls-files", "--error-unmatch", name]).is_ok();
            if !tracked {
                let p = path.join(name);
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        let p = path.display().to_string();
        match git(&self.root, &["worktree", "remove", &p]) {
            Ok(_) => Ok(Some(Cleanup {
                path,
                removed: true,
                kept_because: None,
            })),
            Err(e) => {
                // Put the setup back, so the kept worktree still works with Claude Code.
                let _ = self.worktree(worker);
                Ok(Some(Cleanup {
                    path,
                    removed: false,
                    kept_because: Some(e.to_string()),
                }))
            }
        }
    }
}

/// Copies a file or a folder.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| Error::io("creating", to, e))?;
        let entries = std::fs::read_dir(from).map_err(|e| Error::io("reading", from, e))?;
        for e in entries.flatten() {
            copy(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|e| Error::io("copying", from, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proj");
        std::fs::create_dir_all(p.join(".claude")).unwrap();
        std::fs::write(p.join(".claude/settings.json"), "{}").unwrap();
        std::fs::write(p.join("README"), "hi\n").unwrap();
        for args in [
            &["init", "-q"][..],
            &["-c", "user.email=t@t", "-c", "user.name=t", "add", "README"],
            &[
                "-c",
                "user.email=t@t",
                "-c",
                "user.name=t",
                "commit",
                "-qm",
                "one",
            ],
        ] {
            assert!(
                Command::new("git")
                    .arg("-C")
                    .arg(&p)
                    .args(args)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        d
    }

    #[test]
    fn a_clean_worktree_is_removed_and_a_dirty_one_kept() {
        let d = repo();
        let project = Project::at(&d.path().join("proj")).unwrap();
        let a = project.worktree("pool-1").unwrap();
        let b = project.worktree("pool-2").unwrap();
        assert_ne!(a, b);
        assert!(a.join("README").is_file() && a.join(".claude/settings.json").is_file());
        assert!(
            !a.starts_with(&project.root),
            "beside the project, not in it"
        );
        // Again: the same worktree.
        assert_eq!(project.worktree("pool-1").unwrap(), a);
        std::fs::write(b.join("half-done.txt"), "uncommitted").unwrap();
        let ca = project.clean_up("pool-1").unwrap().unwrap();
        assert!(ca.removed && !a.exists(), "{ca:?}");
        let cb = project.clean_up("pool-2").unwrap().unwrap();
        assert!(!cb.removed && b.join("half-done.txt").is_file(), "{cb:?}");
        assert!(cb.kept_because.is_some());
        assert!(
            b.join(".claude/settings.json").is_file(),
            "the kept one still works"
        );
        // The project's own tree is untouched.
        let status = git(&project.root, &["status", "--porcelain"]).unwrap();
        assert_eq!(status, "?? .claude/");
    }

    #[test]
    fn outside_a_git_project_it_says_so() {
        let d = tempfile::tempdir().unwrap();
        let e = Project::at(d.path()).unwrap_err().to_string();
        assert!(e.contains("--worktree needs a git project"), "{e}");
    }
}
