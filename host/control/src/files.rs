//! Reading and writing files in folders that people (or attackers) fill: the
//! services folder above all.
//!
//! Whatever sits at a path, these functions answer promptly: a named pipe, a
//! device or a socket is refused instead of read (opening a pipe for reading
//! waits for a writer; `/dev/zero` never ends), a symbolic link is followed
//! only to a regular file, and a read stops at its limit whatever size the
//! file claims. They never block on anything but the disk, and callers on an
//! async worker run the large ones through [`tokio::task::spawn_blocking`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a regular file (it is {0}); only regular files are read")]
    NotRegular(&'static str),
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FileError {
    /// The file is simply not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The whole of the regular file at `path` (a symbolic link is followed), or
/// why not: it is something else, or holds more than `limit` bytes.
pub fn read_regular(path: &Path, limit: usize) -> Result<Vec<u8>, FileError> {
    // O_NONBLOCK: opening a named pipe would otherwise wait for a writer. The
    // kind is checked on the opened file, so a swap after a check cannot fool it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(FileError::NotRegular(describe(kind)));
    }
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "beyond it".
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Write `bytes` as a new file at `path`, replacing whatever was there
/// (a file or a named pipe alike) without ever opening it.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file: File = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// The paths in the folder `dir`, in no order (none when it cannot be
/// read: the caller has nothing to list then).
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_pipes_are_refused_without_blocking() {
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 10),
            Err(FileError::NotRegular("a character device"))
        ));
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_regular(&fifo, 10),
            Err(FileError::NotRegular("a named pipe"))
        ));
        // Writing over the pipe replaces it instead of waiting for a reader.
        write_new(&fifo, b"data").unwrap();
        assert_eq!(read_regular(&fifo, 10).unwrap(), b"data");
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_regular(&path, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&path, 4),
            Err(FileError::TooLarge { limit: 4 })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(read_regular(&link, 5).unwrap(), b"12345");
    }
}
