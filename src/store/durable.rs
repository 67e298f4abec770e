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
pub fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
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
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    if durable {
        f.sync_data().map_err(|e| Error::io("syncing", &tmp, e))?;
    }
    drop(f);
    fs::rename(&tmp, &target).map_err(|e| Error::io("renaming into place", &target, e))
}

/// Fsyncs a directory so that renames in it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// Appends `bytes` (whole lines) to `path` in one write, after cutting off a torn last line
/// that a crashed writer may have left. Fsyncs when `durable`.
pub fn append_lines(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))?;
    cut_torn_tail(&mut f, path)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("appending to", path, e))?;
    if durable {
        f.sync_data().map_err(|e| Error::io("syncing", path, e))?;
    }
    Ok(())
}

/// Truncates a file that does not end in a newline back to its last newline.
fn cut_torn_tail(f: &mut File, path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))
        .and_then(|_| f.read_exact(&mut last))
        .map_err(|e| Error::io("reading", path, e))?;
    if last[0] == b'\n' {
        return Ok(());
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
        .map_err(|e| Error::io("repairing a torn line in", path, e))
}
