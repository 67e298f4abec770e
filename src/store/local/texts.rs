//! Instruction texts a handle wrote or read, kept so that a claim can be given its task's
//! text without reading the file again.
//!
//! A text is kept with the identity of the file it came from (device, inode, size,
//! modification and change times, following symlinks as a read does). It is used only while
//! the file at the same board path still has that identity, which one `stat` tells; a file
//! changed, replaced, removed, or reached through a different directory since is read again
//! through the full, symlink-checked path. The first read of a path always takes that path.
//! (As with the board files' own cache, a rewrite in place that keeps the length within the
//! file system's timestamp step of the previous change would not be seen.)

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Most texts kept; the oldest go first.
const MOST_TEXTS: usize = 4096;
/// Most bytes of text kept.
const MOST_BYTES: usize = 16 * 1024 * 1024;

/// What identifies a file's content without reading it: the board files' identity (device,
/// inode, length, modification time) and the change time, which any write moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    file: crate::store::journal::FileId,
    ctime: (i64, i64),
}

impl FileId {
    fn from(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            file: crate::store::journal::id_of(m),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The identity of the file at `path` (symlinks followed), if it can be read.
    fn of(path: &Path) -> Option<FileId> {
        Some(FileId::from(&std::fs::metadata(path).ok()?))
    }

    /// The identity of an open file.
    fn of_file(file: &std::fs::File) -> Option<FileId> {
        Some(FileId::from(&file.metadata().ok()?))
    }

    /// The file's length.
    fn len(&self) -> u64 {
        self.file[2]
    }
}

/// Texts by board-relative path (see the module doc); shared by a handle's clones.
#[derive(Debug, Default)]
pub(super) struct Texts {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    by_path: HashMap<String, (FileId, Arc<str>)>,
    /// Paths in the order they were kept (a path kept again appears twice; the older entry is
    /// skipped when it comes up).
    order: VecDeque<(String, FileId)>,
    bytes: usize,
}

impl Texts {
    /// The text of board path `rel`, at `path` (the board directory joined with `rel`, not
    /// resolved), if it is kept and the file there is still the one it came from.
    pub(super) fn get(&self, rel: &str, path: &Path) -> Option<String> {
        let (id, text) = {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.by_path.get(rel).cloned()?
        };
        (FileId::of(path) == Some(id)).then(|| text.to_string())
    }

    /// Reads the file at `path` (already resolved and checked for board path `rel`) and
    /// keeps its text if the file did not change while it was read.
    pub(super) fn read(&self, rel: &str, path: &Path) -> std::io::Result<String> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let before = FileId::of_file(&file);
        let mut text = String::with_capacity(before.map_or(0, |b| b.len() as usize));
        // (`take` reads without asking the size again.)
        (&mut file).take(u64::MAX).read_to_string(&mut text)?;
        if let Some(id) = before
            && FileId::of_file(&file) == Some(id)
        {
            self.keep_as(rel, id, &text);
        }
        Ok(text)
    }

    /// Keeps `text` as the content of board path `rel`, just written at `path` by this handle.
    pub(super) fn keep(&self, rel: &str, path: &Path, text: &str) {
        if let Some(id) = FileId::of(path) {
            self.keep_as(rel, id, text);
        }
    }

    fn keep_as(&self, rel: &str, id: FileId, text: &str) {
        if id.len() != text.len() as u64 || text.len() > MOST_BYTES / 4 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = kept.by_path.insert(rel.to_owned(), (id, Arc::from(text))) {
            kept.bytes -= old.len();
        }
        kept.bytes += text.len();
        kept.order.push_back((rel.to_owned(), id));
        while kept.by_path.len() > MOST_TEXTS || kept.bytes > MOST_BYTES {
            let Some((old_rel, old_id)) = kept.order.pop_front() else {
                break;
            };
            if kept
                .by_path
                .get(&old_rel)
                .is_some_and(|(i, _)| *i == old_id)
                && let Some((_, t)) = kept.by_path.remove(&old_rel)
            {
                kept.bytes -= t.len();
            }
        }
        // Entries kept again leave stale places in the order; keep it from growing without
        // bound.
        if kept.order.len() > 2 * MOST_TEXTS {
            let Kept { by_path, order, .. } = &mut *kept;
            order.retain(|(r, i)| by_path.get(r).is_some_and(|(id, _)| id == i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_text_is_used_only_while_its_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.md");
        std::fs::write(&path, "first").unwrap();
        let texts = Texts::default();
        assert_eq!(texts.get("a.md", &path), None, "nothing is kept yet");
        assert_eq!(texts.read("a.md", &path).unwrap(), "first");
        assert_eq!(texts.get("a.md", &path).as_deref(), Some("first"));
        // Changed in place (same inode; the size and times change).
        std::fs::write(&path, "second!").unwrap();
        assert_eq!(texts.get("a.md", &path), None);
        // Replaced by another file of the same size.
        texts.keep("a.md", &path, "second!");
        let other = dir.path().join("b.md");
        std::fs::write(&other, "third!!").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(texts.get("a.md", &path), None);
        // Removed.
        texts.keep("a.md", &path, "third!!");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(texts.get("a.md", &path), None);
        // A text that is not the file's content (another length) is not kept.
        std::fs::write(&path, "xyz").unwrap();
        texts.keep("a.md", &path, "not what the file holds");
        assert_eq!(texts.get("a.md", &path), None);
    }

    #[test]
    fn the_oldest_texts_go_first_when_too_many_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let texts = Texts::default();
        for i in 0..MOST_TEXTS + 10 {
            let rel = format!("t{i}.md");
            let path = dir.path().join(&rel);
            std::fs::write(&path, format!("text {i}")).unwrap();
            texts.keep(&rel, &path, &format!("text {i}"));
        }
        let kept = texts.kept.lock().unwrap();
        assert_eq!(kept.by_path.len(), MOST_TEXTS);
        assert!(!kept.by_path.contains_key("t0.md"));
        assert!(
            kept.by_path
                .contains_key(&format!("t{}.md", MOST_TEXTS + 9))
        );
    }
}
