//! Writing board files so that a crash at any instant leaves the old or the new content.
//!
//! A replace writes a temp file in the same directory, optionally fsyncs it, and renames it
//! over the target. Durable files (the queue, progress, instruction files) are fsynced and
//! the directory is fsynced after the renames; soft files (worker status) skip the fsyncs:
//! a process crash cannot tear them, only a power loss can make them older.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Replaces `dir/name` with `bytes` by write + (fsync) + rename. The caller fsyncs `dir`.
/// When any step fails, the temp file is removed again: a failed write (a full disk) leaves
/// the board as it was.
pub fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
    let _replace = tracing::trace_span!("replace").entered();
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let f = write_temp(&tmp, bytes)?;
    let synced = match durable {
        true => tracing::trace_span!("fsync")
            .in_scope(|| f.sync_data().map_err(|e| Error::io("syncing", &tmp, e))),
        false => Ok(()),
    };
    drop(f);
    let done = synced.and_then(|()| {
        fs::rename(&tmp, &target).map_err(|e| Error::io("renaming into place", &target, e))
    });
    if done.is_err() {
        // Ours (created exclusively), and not renamed into place.
        let _ = fs::remove_file(&tmp);
    }
    done
}

/// Writes `bytes` to a new file at `tmp`, not fsynced. A leftover temp file (or anything
/// planted at its name, such as a symlink) is removed first, and the new one is created
/// exclusively, which never follows a symlink. A write that fails removes the file again.
fn write_temp(tmp: &Path, bytes: &[u8]) -> Result<File> {
    let _ = fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| Error::io("creating", tmp, e))?;
    if let Err(e) = f.write_all(bytes) {
        drop(f);
        let _ = fs::remove_file(tmp);
        return Err(Error::io("writing", tmp, e));
    }
    Ok(f)
}

/// How many threads fsync the files of one [`replace_all`] (the disk takes several flushes
/// at once faster than one after another).
const SYNC_THREADS: usize = 4;

/// Replaces many files durably (`(path, bytes)`; each path once), as [`replace`] does each:
/// every temp file is written first, then all are fsynced (by up to [`SYNC_THREADS`]
/// threads), then each is renamed over its path, and then each directory they are in is
/// fsynced once. A write or fsync that fails leaves every file as it was and no temp file
/// behind; a rename that fails leaves the files renamed before it (each whole) and removes the
/// rest.
pub fn replace_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let _replace = tracing::trace_span!("replace all", files = files.len()).entered();
    let mut tmps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let mut dirs: BTreeSet<&Path> = BTreeSet::new();
    for (path, _) in files {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::Invalid(format!(
                "{} is not a file's path",
                path.display()
            )));
        };
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(".tmp");
        tmps.push(dir.join(tmp));
        dirs.insert(dir);
    }
    let temps: Vec<(&Path, &[u8])> = tmps
        .iter()
        .zip(files)
        .map(|(tmp, (_, bytes))| (tmp.as_path(), *bytes))
        .collect();
    write_temps(&temps)?;
    let clean = |tmps: &[PathBuf]| {
        for t in tmps {
            let _ = fs::remove_file(t);
        }
    };
    for (i, ((path, _), tmp)) in files.iter().zip(&tmps).enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            clean(&tmps[i..]);
            return Err(Error::io("renaming into place", path, e));
        }
    }
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes temp files (`(path, bytes)`; a file left at one of the paths is replaced), all
/// written first, then all fsynced by up to [`SYNC_THREADS`] threads. Their directories are not
/// synced: a rename and a directory sync make them durable under their names later
/// ([`replace_all`], or a commit renaming texts staged ahead). A write or fsync that fails
/// leaves none of them.
pub fn write_temps(files: &[(&Path, &[u8])]) -> Result<()> {
    let names: Vec<PathBuf> = files.iter().map(|(p, _)| p.to_path_buf()).collect();
    let clean = |names: &[PathBuf]| {
        for n in names {
            let _ = fs::remove_file(n);
        }
    };
    let mut made: Vec<File> = Vec::with_capacity(files.len());
    for ((_, bytes), name) in files.iter().zip(&names) {
        match write_temp(name, bytes) {
            Ok(f) => made.push(f),
            Err(e) => {
                clean(&names[..made.len()]);
                return Err(e);
            }
        }
    }
    let synced = tracing::trace_span!("fsync").in_scope(|| sync_files(&made, &names));
    drop(made);
    if synced.is_err() {
        clean(&names);
    }
    synced
}

/// Fsyncs `files` (named `names`), spread over up to [`SYNC_THREADS`] threads.
fn sync_files(files: &[File], names: &[PathBuf]) -> Result<()> {
    let sync = |chunk: &[File], names: &[PathBuf]| -> Result<()> {
        for (f, name) in chunk.iter().zip(names) {
            f.sync_data().map_err(|e| Error::io("syncing", name, e))?;
        }
        Ok(())
    };
    if files.len() < 2 * SYNC_THREADS {
        return sync(files, names);
    }
    let per = files.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|s| {
        let mut first = Ok(());
        let mut handles = Vec::new();
        for (chunk, names) in files.chunks(per).zip(names.chunks(per)) {
            // A thread that cannot be started leaves its share to this one.
            match std::thread::Builder::new().spawn_scoped(s, move || sync(chunk, names)) {
                Ok(h) => handles.push(h),
                Err(_) => {
                    let done = sync(chunk, names);
                    if first.is_ok() {
                        first = done;
                    }
                }
            }
        }
        for h in handles {
            let done = h
                .join()
                .unwrap_or_else(|_| Err(Error::Protocol("a thread syncing files panicked".into())));
            if first.is_ok() {
                first = done;
            }
        }
        first
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("task-{i}-instructions.md"))
            .collect()
    }

    #[test]
    fn replace_all_writes_every_file_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("task-3-instructions.md"), "old").unwrap();
        let names = names(3 * SYNC_THREADS + 1);
        let texts: Vec<String> = (0..names.len()).map(|i| format!("text {i}")).collect();
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let files: Vec<(&Path, &[u8])> = paths
            .iter()
            .zip(&texts)
            .map(|(p, t)| (p.as_path(), t.as_bytes()))
            .collect();
        replace_all(&files).unwrap();
        for (n, t) in names.iter().zip(&texts) {
            assert_eq!(fs::read_to_string(dir.join(n)).unwrap(), *t);
        }
        let left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }

    #[test]
    fn replace_all_that_cannot_write_one_file_changes_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let names = names(12);
        for n in &names {
            fs::write(dir.join(n), "old").unwrap();
        }
        // The eighth file's temp name is taken by a directory: it cannot be created.
        fs::create_dir(dir.join(format!(".{}.tmp", names[7]))).unwrap();
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let files: Vec<(&Path, &[u8])> = paths
            .iter()
            .map(|p| (p.as_path(), b"new".as_slice()))
            .collect();
        let err = replace_all(&files).unwrap_err().to_string();
        assert!(err.contains(&names[7]), "{err}");
        for n in &names {
            assert_eq!(fs::read_to_string(dir.join(n)).unwrap(), "old", "{n}");
        }
        let temps: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && fs::metadata(dir.join(n)).is_ok_and(|m| m.is_file()))
            .collect();
        assert!(temps.is_empty(), "temp files left: {temps:?}");
    }
}
