//! The directory a partition log lives in, as a small trait: the synchronous operations
//! recovery and rare events need (list, create, open, read, truncate, remove, and the
//! blocking write/sync that a simple driver uses).
//!
//! Owns: `StorageDir`, and `FsDir`, its implementation on the real filesystem.
//! Never: decides what to write; the log does. The appends of a running shard do not
//! come through `write_at`/`sync_data` here but through the shard's io_uring, using the
//! file descriptors `raw_fd` exposes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::StorageError;

/// A file opened through a `StorageDir`.
pub type FileId = u32;

/// The name of a file kept per log offset (segments, index files, snapshots): the
/// offset in 20 decimal digits, so names sort by offset, then `suffix`.
pub fn offset_file_name(offset: u64, suffix: &str) -> String {
    format!("{offset:020}{suffix}")
}

/// The offset an `offset_file_name` with this `suffix` encodes, if `name` is one.
pub fn parse_offset_file_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a partition log needs from the directory it lives in.
pub trait StorageDir {
    /// The directory's path (for error messages).
    fn path(&self) -> &Path;
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates a new empty file and makes its directory entry durable (fsync of the
    /// directory), so the file survives a power cut once its data is synced.
    fn create(&mut self, name: &str) -> io::Result<FileId>;
    /// Like `create`, but a file of that name left by an earlier, interrupted attempt
    /// (a whole file is written again, never appended to) is removed first.
    fn create_replacing(&mut self, name: &str) -> io::Result<FileId> {
        match self.create(name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove(name)?;
                self.create(name)
            }
            other => other,
        }
    }
    /// Opens an existing file for reading and writing.
    fn open(&mut self, name: &str) -> io::Result<FileId>;
    /// Closes a file opened here.
    fn close(&mut self, file: FileId);
    /// Removes a file by name and makes the removal durable.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// The file's current length.
    fn len(&self, file: FileId) -> io::Result<u64>;
    /// Reads at `pos` into `buf`; returns the bytes read (fewer at end of file).
    fn read_at(&self, file: FileId, pos: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `pos` (blocking).
    fn write_at(&mut self, file: FileId, pos: u64, data: &[u8]) -> io::Result<()>;
    /// `fdatasync` (blocking).
    fn sync_data(&mut self, file: FileId) -> io::Result<()>;
    /// Sets the file's length and syncs it.
    fn truncate(&mut self, file: FileId, len: u64) -> io::Result<()>;
    /// The file descriptor, for drivers that submit I/O themselves (io_uring).
    fn raw_fd(&self, file: FileId) -> Option<RawFd>;
    /// A read-only memory map of the whole file as it is now, if this directory can
    /// map files (the log maps sealed segments only: they never change again).
    fn map_readonly(&self, _file: FileId) -> io::Result<Option<memmap2::Mmap>> {
        Ok(None)
    }
    /// The path of a file in this directory.
    fn file_path(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

/// A `StorageDir` on the real filesystem.
#[derive(Debug)]
pub struct FsDir {
    path: PathBuf,
    dir: File,
    files: HashMap<FileId, File>,
    next_id: FileId,
}

impl FsDir {
    /// Opens `path`, creating it (and its parents) if `create` is set. A missing
    /// directory is `StorageError::NotFound`, a forbidden one `PermissionDenied`, a
    /// file in its place `Io` (ENOTDIR), each with the path.
    pub fn open(path: impl Into<PathBuf>, create: bool) -> Result<Self, StorageError> {
        let path = path.into();
        let err = |op, e| StorageError::from_io(op, path.clone(), e);
        if create {
            std::fs::create_dir_all(&path).map_err(|e| err("create directory", e))?;
        }
        let dir = File::open(&path).map_err(|e| err("open directory", e))?;
        let meta = dir.metadata().map_err(|e| err("stat directory", e))?;
        if !meta.is_dir() {
            let e = io::Error::from_raw_os_error(libc::ENOTDIR);
            return Err(err("open directory", e));
        }
        Ok(Self {
            path,
            dir,
            files: HashMap::new(),
            next_id: 0,
        })
    }

    fn file(&self, file: FileId) -> io::Result<&File> {
        self.files
            .get(&file)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file not open"))
    }

    fn insert(&mut self, file: File) -> FileId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.files.insert(id, file);
        id
    }
}

impl StorageDir for FsDir {
    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn create(&mut self, name: &str) -> io::Result<FileId> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path.join(name))?;
        if let Err(e) = self.dir.sync_all() {
            // Without a durable entry the caller does not own the file: take it back,
            // so a retry can create it again instead of failing on AlreadyExists.
            let _ = std::fs::remove_file(self.path.join(name));
            return Err(e);
        }
        Ok(self.insert(file))
    }

    fn open(&mut self, name: &str) -> io::Result<FileId> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        Ok(self.insert(file))
    }

    fn close(&mut self, file: FileId) {
        self.files.remove(&file);
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))?;
        self.dir.sync_all()
    }

    fn len(&self, file: FileId) -> io::Result<u64> {
        Ok(self.file(file)?.metadata()?.len())
    }

    fn read_at(&self, file: FileId, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self.file(file)?;
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&mut self, file: FileId, pos: u64, data: &[u8]) -> io::Result<()> {
        self.file(file)?.write_all_at(data, pos)
    }

    fn sync_data(&mut self, file: FileId) -> io::Result<()> {
        self.file(file)?.sync_data()
    }

    fn truncate(&mut self, file: FileId, len: u64) -> io::Result<()> {
        let f = self.file(file)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn raw_fd(&self, file: FileId) -> Option<RawFd> {
        self.files.get(&file).map(AsRawFd::as_raw_fd)
    }

    fn map_readonly(&self, file: FileId) -> io::Result<Option<memmap2::Mmap>> {
        let f = self.file(file)?;
        if f.metadata()?.len() == 0 {
            return Ok(None);
        }
        // SAFETY: a mapping is only sound while nobody truncates or rewrites the file.
        // The log maps sealed segments only, which it never writes or truncates again
        // and removes by unlinking (the mapping stays valid). Other processes changing
        // files in a log's directory is outside the contract (docs/storage.md).
        let map = unsafe { memmap2::Mmap::map(f) }?;
        Ok(Some(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_missing_or_wrong_directory_is_a_typed_error_with_the_path() {
        let tmp = std::env::temp_dir().join(format!("ringbroker-dir-{}", std::process::id()));
        let missing = tmp.join("missing");
        match FsDir::open(&missing, false) {
            Err(StorageError::NotFound { op, path }) => {
                assert_eq!((op, path), ("open directory", missing.clone()));
            }
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
        let file = tmp.join("a-file");
        std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
        let err = FsDir::open(&file, false).err();
        assert!(
            matches!(err, Some(StorageError::Io { ref path, .. }) if *path == file),
            "{err:?}"
        );
        assert!(FsDir::open(&missing, true).is_ok(), "create makes it");
        std::fs::remove_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
    }
}
