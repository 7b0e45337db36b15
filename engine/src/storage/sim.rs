//! A simulated directory for storage tests: it remembers, per file, what a power cut
//! would keep (the bytes covered by the last completed `sync_data`) apart from what the
//! page cache holds, and it can fail the Nth write or sync, or run out of space.
//!
//! Owns: in-memory files and the fault plan. Never: touches the real filesystem. A
//! killed process keeps the page cache, so only this model can show that group commit
//! really waits for the sync: `power_cut` throws away everything not synced, and may
//! keep a torn prefix of it, garbage, or zeros in its place, as real disks do.
//!
//! Model: files are written append-mostly (the log never rewrites synced bytes), so a
//! file's durable content is a prefix-consistent snapshot taken at each sync. Creating
//! and removing a file are durable at once (the real `FsDir` fsyncs the directory).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::dir::{FileId, StorageDir};
use super::log::Durability;

#[derive(Debug, Clone, Default)]
struct SimFile {
    /// What the page cache holds: what reads see.
    current: Vec<u8>,
    /// What survives a power cut.
    durable: Vec<u8>,
}

/// A small deterministic random sequence (xorshift64*, Vigna 2016) for simulations and
/// tests: the same seed gives the same sequence everywhere, so a failing seed replays
/// exactly. Not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A sequence from `seed` (any value; zero is mapped to a valid state).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Between 0 and `max` random bytes.
    pub fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max.saturating_add(1));
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Faults to inject. Counts start at 1 for the first write or sync after the plan is set.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Fail the Nth `write_at` with this errno (it may have written a prefix first).
    pub fail_write: Option<(u64, i32)>,
    /// Fail the Nth `sync_data` with this errno (nothing becomes durable).
    pub fail_sync: Option<(u64, i32)>,
    /// Total bytes all files may hold; a write past it writes what fits, then ENOSPC.
    pub capacity_bytes: Option<u64>,
}

impl FaultPlan {
    /// Each of a write failure and a sync failure (EIO) with probability 1/3, at a
    /// uniform count in `1..=nth_max`: the plan the randomized power-cut tests use.
    pub fn random(rng: &mut SeededRng, nth_max: u64) -> Self {
        let mut plan = Self::default();
        if rng.below(3) == 0 {
            plan.fail_write = Some((1 + rng.below(nth_max), libc::EIO));
        }
        if rng.below(3) == 0 {
            plan.fail_sync = Some((1 + rng.below(nth_max), libc::EIO));
        }
        plan
    }
}

/// `Always` or a short `Batch` (2 ms or 2 KiB), evenly: the synced policies the
/// randomized power-cut tests draw from.
pub fn random_synced_durability(rng: &mut SeededRng) -> Durability {
    if rng.below(2) == 0 {
        Durability::Always
    } else {
        Durability::Batch {
            max_delay: std::time::Duration::from_millis(2),
            max_bytes: 2048,
        }
    }
}

/// An in-memory `StorageDir` with a durability model and fault injection.
#[derive(Debug)]
pub struct SimDir {
    path: PathBuf,
    files: BTreeMap<String, SimFile>,
    open: HashMap<FileId, String>,
    next_id: FileId,
    faults: FaultPlan,
    writes: u64,
    syncs: u64,
    rng: SeededRng,
}

impl SimDir {
    /// An empty simulated directory; `seed` drives how power cuts tear data.
    pub fn new(seed: u64) -> Self {
        Self {
            path: PathBuf::from("/sim"),
            files: BTreeMap::new(),
            open: HashMap::new(),
            next_id: 0,
            faults: FaultPlan::default(),
            writes: 0,
            syncs: 0,
            rng: SeededRng::new(seed),
        }
    }

    /// Puts `plan` in force; its write and sync counts start from here.
    pub fn set_faults(&mut self, plan: FaultPlan) {
        self.faults = plan;
        self.writes = 0;
        self.syncs = 0;
    }

    fn next_random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// Simulates a power cut and restart: every file keeps its durable bytes; the
    /// unsynced bytes after them are lost, or survive as a torn prefix, garbage or
    /// zeros. Open files are forgotten; the fault plan is cleared.
    pub fn power_cut(&mut self) {
        let names: Vec<String> = self.files.keys().cloned().collect();
        for name in names {
            let Some(file) = self.files.get(&name).cloned() else {
                continue;
            };
            let kept = self.torn_tail(&file);
            let mut content = file.durable.clone();
            content.extend_from_slice(&kept);
            self.files.insert(
                name,
                SimFile {
                    current: content.clone(),
                    durable: content,
                },
            );
        }
        self.open.clear();
        self.faults = FaultPlan::default();
    }

    /// What of a file's unsynced tail survives a power cut.
    fn torn_tail(&mut self, file: &SimFile) -> Vec<u8> {
        let unsynced = file
            .current
            .get(file.durable.len()..)
            .unwrap_or(&[])
            .to_vec();
        if unsynced.is_empty() {
            return unsynced;
        }
        let cut = self.below(unsynced.len() as u64 + 1) as usize;
        match self.below(4) {
            0 => Vec::new(),
            1 => unsynced[..cut].to_vec(),
            2 => {
                let mut torn = unsynced[..cut].to_vec();
                let garbage = self.below(64) as usize;
                for _ in 0..garbage {
                    torn.push(self.next_random() as u8);
                }
                torn
            }
            _ => vec![0; cut],
        }
    }

    /// Flips one bit of a file's durable and current content (a media error).
    pub fn corrupt(&mut self, name: &str, position: usize, bit: u8) {
        if let Some(file) = self.files.get_mut(name) {
            for content in [&mut file.current, &mut file.durable] {
                if let Some(byte) = content.get_mut(position) {
                    *byte ^= 1 << (bit % 8);
                }
            }
        }
    }

    /// Cuts a file's durable and current content to `len` bytes.
    pub fn chop(&mut self, name: &str, len: usize) {
        if let Some(file) = self.files.get_mut(name) {
            file.current.truncate(len);
            file.durable.truncate(len);
        }
    }

    /// How many segment files the directory holds.
    pub fn list_segments(&self) -> usize {
        self.files
            .keys()
            .filter(|n| super::segment::parse_segment_name(n).is_some())
            .count()
    }

    /// A file's current content (what reads see).
    pub fn content(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|f| f.current.as_slice())
    }

    fn name(&self, file: FileId) -> io::Result<&String> {
        self.open
            .get(&file)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file not open"))
    }

    fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }
}

impl StorageDir for SimDir {
    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }

    fn create(&mut self, name: &str) -> io::Result<FileId> {
        if self.files.contains_key(name) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.files.insert(name.to_owned(), SimFile::default());
        self.open(name)
    }

    fn open(&mut self, name: &str) -> io::Result<FileId> {
        if !self.files.contains_key(name) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.open.insert(id, name.to_owned());
        Ok(id)
    }

    fn close(&mut self, file: FileId) {
        self.open.remove(&file);
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn len(&self, file: FileId) -> io::Result<u64> {
        let name = self.name(file)?;
        Ok(self.files.get(name).map_or(0, |f| f.current.len() as u64))
    }

    fn read_at(&self, file: FileId, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let name = self.name(file)?;
        let content = self
            .files
            .get(name)
            .map_or(&[][..], |f| f.current.as_slice());
        let start = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let n = buf.len().min(content.len() - start);
        buf[..n].copy_from_slice(&content[start..start + n]);
        Ok(n)
    }

    fn write_at(&mut self, file: FileId, pos: u64, data: &[u8]) -> io::Result<()> {
        self.writes += 1;
        let mut fits = data.len();
        let mut error = None;
        if let Some((n, errno)) = self.faults.fail_write {
            if n == self.writes {
                fits = self.below(data.len() as u64 + 1) as usize;
                error = Some(errno);
            }
        }
        if let Some(cap) = self.faults.capacity_bytes {
            let free = cap.saturating_sub(self.total_bytes()) as usize;
            if free < fits {
                fits = free;
                error = Some(libc::ENOSPC);
            }
        }
        let name = self.name(file)?.clone();
        let f = self.files.entry(name).or_default();
        let pos = usize::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        if f.current.len() < pos + fits {
            f.current.resize(pos + fits, 0);
        }
        f.current[pos..pos + fits].copy_from_slice(&data[..fits]);
        match error {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn sync_data(&mut self, file: FileId) -> io::Result<()> {
        self.syncs += 1;
        if let Some((n, errno)) = self.faults.fail_sync {
            if n == self.syncs {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let name = self.name(file)?.clone();
        if let Some(f) = self.files.get_mut(&name) {
            f.durable = f.current.clone();
        }
        Ok(())
    }

    fn truncate(&mut self, file: FileId, len: u64) -> io::Result<()> {
        let name = self.name(file)?.clone();
        if let Some(f) = self.files.get_mut(&name) {
            f.current.resize(len as usize, 0);
            f.durable = f.current.clone();
        }
        Ok(())
    }

    fn raw_fd(&self, _file: FileId) -> Option<RawFd> {
        None
    }
}
