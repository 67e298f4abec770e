//! Writing board files so that a crash at any instant leaves the old or the new content.
//!
//! A replace writes a temp file in the same directory, optionally fsyncs it, and renames it
//! over the target. Durable files (the queue, progress, instruction files) are fsynced and
//! the directory is fsynced after the renames; soft files (worker status) skip the fsyncs:
//! a process crash cannot tear them, only a power loss can make them older.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `dir/name` with `bytes` by write + (fsync) + rename. The caller fsyncs `dir`.
/// When any step fails, the temp file is removed again: a failed write (a full disk) leaves
/// the board as it was.
pub fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
    let _replace = tracing::trace_span!("replace").entered();
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    // A leftover temp file (or anything planted at its name, such as a symlink) is removed,
    // and the new one is created exclusively, which never follows a symlink.
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io("creating", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))
        .and_then(|()| match durable {
            true => tracing::trace_span!("fsync")
                .in_scope(|| f.sync_data().map_err(|e| Error::io("syncing", &tmp, e))),
            false => Ok(()),
        });
    drop(f);
    let done = written.and_then(|()| {
        fs::rename(&tmp, &target).map_err(|e| Error::io("renaming into place", &target, e))
    });
    if done.is_err() {
        // Ours (created exclusively above), and not renamed into place.
        let _ = fs::remove_file(&tmp);
    }
    done
}

/// Fsyncs a directory so that renames in it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let _sync = tracing::trace_span!("sync dir").entered();
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// Appends `bytes` (whole lines) to `path` in one write, after cutting off a torn last line
/// that a crashed writer may have left. Fsyncs when `durable`. When the write fails part way
/// (a full disk), the file is cut back to where it ended, so no part of `bytes` stays.
pub fn append_lines(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))?;
    let end = cut_torn_tail(&mut f, path)?;
    let written = f
        .write_all(bytes)
        .map_err(|e| Error::io("appending to", path, e))
        .and_then(|()| match durable {
            true => tracing::trace_span!("fsync")
                .in_scope(|| f.sync_data().map_err(|e| Error::io("syncing", path, e))),
            false => Ok(()),
        });
    if written.is_err() {
        let _ = f.set_len(end);
    }
    written
}

/// Truncates a file that does not end in a newline back to its last newline; returns the
/// length it then has.
fn cut_torn_tail(f: &mut File, path: &Path) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))
        .and_then(|_| f.read_exact(&mut last))
        .map_err(|e| Error::io("reading", path, e))?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Walk back in chunks to the last newline.
    let mut end = len;
    let mut keep = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf[..n]))
            .map_err(|e| Error::io("reading", path, e))?;
        if let Some(p) = buf[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + p as u64 + 1;
            break;
        }
        end = start;
    }
    f.set_len(keep)
        .map_err(|e| Error::io("repairing a torn line in", path, e))?;
    Ok(keep)
}
