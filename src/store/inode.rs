//! A file's device, inode and size, looked at without asking for its times.
//!
//! On Linux 6.13 and later, file systems with fine-grained timestamps (ext4, xfs, btrfs ...)
//! give a file a new modification time at its next write once something has read its times,
//! and that update is metadata the next fdatasync on the file system may have to commit. On
//! this project's ext4, reading the times of `board.lock` (which every change writes) or of
//! the journal before each record took away what writing records into room the journal
//! already has saves; without those reads one local worker did 1.26–1.38× the cycles of before
//! (`BENCHMARKS.md`, "Room in the journal"). The board's hot path looks at those two files
//! through here.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// A file's device and inode, and its size.
pub type Look = ((u64, u64), u64);

/// The device, inode and size of the file at `path` (`None` when there is none), looked at
/// without asking for its times (statx with the inode and size alone).
pub fn look(path: &Path) -> Result<Option<Look>> {
    match look_at(path, None) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("looking at", path, e)),
    }
}

/// [`look`] of an open file.
pub fn look_open(file: &File, path: &Path) -> Result<Look> {
    look_at(path, Some(file)).map_err(|e| Error::io("looking at", path, e))
}

#[cfg(target_os = "linux")]
fn look_at(path: &Path, file: Option<&File>) -> std::io::Result<Look> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, makedev, statx};
    let mask = StatxFlags::INO | StatxFlags::SIZE;
    let got = match file {
        Some(f) => statx(f, "", AtFlags::EMPTY_PATH, mask),
        None => statx(CWD, path, AtFlags::empty(), mask),
    };
    match got {
        Ok(s) => Ok((
            (makedev(s.stx_dev_major, s.stx_dev_minor), s.stx_ino),
            s.stx_size,
        )),
        // A kernel without statx (before 4.11): a plain stat.
        Err(rustix::io::Errno::NOSYS) => look_by_stat(path, file),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn look_at(path: &Path, file: Option<&File>) -> std::io::Result<Look> {
    look_by_stat(path, file)
}

/// Opens `path` with `options` so that reading it does not update its access time (a change
/// of metadata, like a new modification time above), where the file system and the file's
/// owner allow (`O_NOATIME`: the file is this user's); else as `options` say.
pub fn open_without_atime(options: &std::fs::OpenOptions, path: &Path) -> std::io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut noatime = options.clone();
        noatime.custom_flags(rustix::fs::OFlags::NOATIME.bits() as i32);
        match noatime.open(path) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {}
            other => return other,
        }
    }
    options.open(path)
}

/// A plain stat (which reads the times too).
fn look_by_stat(path: &Path, file: Option<&File>) -> std::io::Result<Look> {
    use std::os::unix::fs::MetadataExt;
    let m = match file {
        Some(f) => f.metadata()?,
        None => std::fs::metadata(path)?,
    };
    Ok(((m.dev(), m.ino()), m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_look_names_the_same_file_as_a_stat_and_none_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"twelve bytes").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let want = ((m.dev(), m.ino()), 12);
        assert_eq!(look(&path).unwrap(), Some(want));
        let f = open_without_atime(std::fs::OpenOptions::new().read(true), &path).unwrap();
        assert_eq!(look_open(&f, &path).unwrap(), want);
        assert_eq!(look_by_stat(&path, None).unwrap(), want);
        assert_eq!(look(&dir.path().join("missing")).unwrap(), None);
        // Replaced by another file: another inode.
        std::fs::write(dir.path().join("g"), b"x").unwrap();
        std::fs::rename(dir.path().join("g"), &path).unwrap();
        let (at, len) = look(&path).unwrap().unwrap();
        assert_ne!(at, want.0);
        assert_eq!(len, 1);
        // The file opened before is still the old one.
        assert_eq!(look_open(&f, &path).unwrap(), want);
    }
}
