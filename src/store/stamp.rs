//! What a look at a board directory shows of the board's content, in a form a checkpoint
//! leaves as it is. A watcher that compares stamps (the control room's live pages) sees each
//! change once: a checkpoint rewrites the JSON files and starts the journal again, yet the
//! board it holds is the same, so its stamp is the same.
//!
//! The stamp is the number of the journal's last change, the identities (device, inode,
//! length, modification time) of the files a change writes beside the journal (the log, the
//! archive, the settings), and the identity of each checkpoint file that is not as the
//! journal's header says the checkpoint left it — a file written by something other than a
//! checkpoint (an older `vine`, a person's edit). A board without a journal is stamped by the
//! identities of all its files, as any file write may be a change there.

use std::path::Path;

use super::journal::{self, FileId};
use super::paths::{ARCHIVE, BOARD, CHECKPOINT_FILES, JOURNAL, LOG};

/// What a look at a board's directory saw of its content. Two looks that give equal stamps
/// saw the same board as far as its files tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The journal's last change (`None`: no journal, or one whose header cannot be read).
    change: Option<u64>,
    /// The files whose identity tells of a change, by name.
    files: Vec<(&'static str, Option<FileId>)>,
}

/// Looks at the board in `dir`: under its lock when that can be taken, so that no change or
/// checkpoint is seen half done; else as the files are.
pub fn look(dir: &Path) -> Stamp {
    let _lock = super::lock::lock(dir).ok();
    let id = |name: &str| journal::file_id(&dir.join(name)).ok().flatten();
    let mut files: Vec<(&'static str, Option<FileId>)> = [LOG, ARCHIVE, BOARD]
        .into_iter()
        .map(|n| (n, id(n)))
        .collect();
    let change = match journal::last_change(&dir.join(JOURNAL)) {
        Ok(Some((header, change))) => {
            for name in CHECKPOINT_FILES {
                let now = id(name);
                if header.files.get(name).copied().flatten() != now {
                    files.push((name, now));
                }
            }
            Some(change)
        }
        Ok(None) | Err(_) => {
            files.extend(CHECKPOINT_FILES.into_iter().map(|n| (n, id(n))));
            files.push((JOURNAL, id(JOURNAL)));
            None
        }
    };
    Stamp { change, files }
}
