//! The MMR node store v1: the file beside the WAL (`audit.mmr`) holding every MMR node hash
//! in position order, so an MMR keeps only its peaks and a bounded cache in memory. The
//! format is described once, in `docs/node_store.md`; the Python twin is
//! `gateway/audit/node_store.py` and both write the same bytes.
//!
//! ```text
//! offset 0    8 bytes   magic b"GLMMR\x00\x01\n"
//! offset 8    56 bytes  zero (reserved)
//! offset 64   64 bytes  checkpoint slot 0
//! offset 128  64 bytes  checkpoint slot 1
//! offset 192  32 bytes per node, in MMR position order (a leaf, then each parent it completes)
//! ```
//! Slot: `u64 seq | u64 leaf_count | u64 wal_end | u32 last_frame_len | [u8; 32] root |
//! u32 crc32(first 60 bytes)`, little-endian; valid iff the CRC matches and seq >= 1.
use crate::hash::Hash;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const MAGIC: &[u8; 8] = b"GLMMR\x00\x01\n";
pub const HEADER_LEN: u64 = 192;
pub const SLOT_OFFSETS: [u64; 2] = [64, 128];
pub const SLOT_LEN: usize = 64;
pub const NODE: u64 = 32;
/// Nodes an open store keeps unwritten before writing them out in one `pwrite`.
pub const WRITE_BATCH: usize = 4096;
/// Entries of the direct-mapped read cache.
pub const CACHE_SLOTS: usize = 4096;

/// Nodes (leaves and parents) of an MMR with `leaves` leaves.
#[inline]
pub fn nodes_for(leaves: u64) -> u64 {
    2 * leaves - leaves.count_ones() as u64
}

/// Position of node `index` at `height` (leaf `i` is node (0, i)).
#[inline]
pub fn node_pos(height: u32, index: u64) -> u64 {
    let last = ((index + 1) << height) - 1;
    nodes_for(last) + height as u64
}

/// Largest leaf count whose MMR has at most `nodes` nodes.
pub fn leaves_for(nodes: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, nodes);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if nodes_for(mid) <= nodes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub leaf_count: u64,
    pub wal_end: u64,
    pub last_frame_len: u32,
    pub root: Hash,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.leaf_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.wal_end.to_le_bytes());
        b[24..28].copy_from_slice(&self.last_frame_len.to_le_bytes());
        b[28..60].copy_from_slice(&self.root);
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The checkpoint in a slot, or None when the slot is empty or torn.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != SLOT_LEN || crc32fast::hash(&b[..60]).to_le_bytes() != b[60..64] {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let seq = u64_at(0);
        if seq < 1 {
            return None;
        }
        Some(Self {
            seq,
            leaf_count: u64_at(8),
            wal_end: u64_at(16),
            last_frame_len: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
            root: b[28..60].try_into().expect("32 bytes"),
        })
    }
}

#[derive(Debug)]
pub enum StoreError {
    /// Not a node store, or a node that contradicts its peak (`StoreCorruptError`).
    Corrupt(String),
    /// Another writer holds the store's lock (`WalLockedError`).
    Locked(String),
    Io(io::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Corrupt(m) | StoreError::Locked(m) => f.write_str(m),
            StoreError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// One open node store: its lock, header and slots, node reads (through a bounded
/// direct-mapped cache) and writes by position. Pure file plumbing; the MMR decides what
/// goes in it.
#[derive(Debug)]
pub struct StoreFile {
    path: PathBuf,
    file: File,
    /// Valid checkpoints, newest first.
    pub checkpoints: Vec<Checkpoint>,
    /// Whole nodes in the file.
    pub nodes: u64,
    /// Bytes of a partial node at the end of the file.
    pub torn_bytes: u64,
    cache: Mutex<Vec<(u64, Hash)>>,
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), op) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl StoreFile {
    /// Open (creating an empty store if the file is missing or empty) and lock.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)?;
        if let Err(e) = flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(StoreError::Locked(format!(
                    "node store {} is locked by another writer",
                    path.display()
                )));
            }
            return Err(e.into());
        }
        let mut size = file.metadata()?.len();
        if size == 0 {
            let mut head = [0u8; HEADER_LEN as usize];
            head[..8].copy_from_slice(MAGIC);
            file.write_all_at(&head, 0)?;
            size = HEADER_LEN;
        }
        let mut head = vec![0u8; HEADER_LEN as usize];
        let got = read_upto(&file, &mut head, 0)?;
        if got < HEADER_LEN as usize || &head[..8] != MAGIC || head[8..64].iter().any(|&b| b != 0) {
            return Err(StoreError::Corrupt(format!(
                "node store {}: bad header (not a node store v1 file)",
                path.display()
            )));
        }
        let mut checkpoints: Vec<Checkpoint> = SLOT_OFFSETS
            .iter()
            .filter_map(|&o| Checkpoint::decode(&head[o as usize..o as usize + SLOT_LEN]))
            .collect();
        checkpoints.sort_by_key(|c| std::cmp::Reverse(c.seq));
        Ok(Self {
            path: path.to_path_buf(),
            file,
            checkpoints,
            nodes: (size - HEADER_LEN) / NODE,
            torn_bytes: (size - HEADER_LEN) % NODE,
            cache: Mutex::new(vec![(u64::MAX, [0u8; 32]); CACHE_SLOTS]),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Node at `pos` (cached).
    pub fn read(&self, pos: u64) -> Result<Hash, StoreError> {
        let slot = (pos % CACHE_SLOTS as u64) as usize;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache[slot].0 == pos {
            return Ok(cache[slot].1);
        }
        let mut h = [0u8; 32];
        if read_upto(&self.file, &mut h, HEADER_LEN + NODE * pos)? != 32 {
            return Err(StoreError::Corrupt(format!(
                "node store {}: node {pos} is beyond the end of the file",
                self.path.display()
            )));
        }
        cache[slot] = (pos, h);
        Ok(h)
    }

    /// Cache entries in use.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.0 != u64::MAX)
            .count()
    }

    /// Write `nodes` starting at position `pos`.
    pub fn write(&mut self, pos: u64, nodes: &[Hash]) -> io::Result<()> {
        let buf: Vec<u8> = nodes.concat();
        self.file.write_all_at(&buf, HEADER_LEN + NODE * pos)?;
        self.nodes = self.nodes.max(pos + nodes.len() as u64);
        Ok(())
    }

    /// Keep only the first `nodes` nodes.
    pub fn truncate(&mut self, nodes: u64) -> io::Result<()> {
        self.file.set_len(HEADER_LEN + NODE * nodes)?;
        self.nodes = nodes;
        self.torn_bytes = 0;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for e in cache.iter_mut() {
            if e.0 != u64::MAX && e.0 >= nodes {
                e.0 = u64::MAX;
            }
        }
        Ok(())
    }

    /// Write `cp` into slot `cp.seq % 2` and remember it as the newest.
    pub fn write_slot(&mut self, cp: Checkpoint) -> io::Result<()> {
        self.file
            .write_all_at(&cp.encode(), SLOT_OFFSETS[(cp.seq % 2) as usize])?;
        self.checkpoints.retain(|c| c.seq + 1 == cp.seq);
        self.checkpoints.insert(0, cp);
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl Drop for StoreFile {
    fn drop(&mut self) {
        let _ = flock(&self.file, libc::LOCK_UN);
    }
}

/// `pread` until `buf` is full or EOF; returns the bytes read.
fn read_upto(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        // leaf0 leaf1 p(1,0) leaf2 leaf3 p(1,1) p(2,0) leaf4 ...
        assert_eq!(node_pos(0, 0), 0);
        assert_eq!(node_pos(0, 1), 1);
        assert_eq!(node_pos(1, 0), 2);
        assert_eq!(node_pos(0, 2), 3);
        assert_eq!(node_pos(1, 1), 5);
        assert_eq!(node_pos(2, 0), 6);
        assert_eq!(node_pos(0, 4), 7);
        for n in 0..2000u64 {
            assert_eq!(leaves_for(nodes_for(n)), n);
            if n > 0 {
                for m in nodes_for(n - 1)..nodes_for(n) {
                    assert_eq!(leaves_for(m), n - 1);
                }
            }
        }
    }

    #[test]
    fn slot_round_trip_and_torn_slots() {
        let cp = Checkpoint {
            seq: 7,
            leaf_count: 5,
            wal_end: 123,
            last_frame_len: 9,
            root: [3; 32],
        };
        let b = cp.encode();
        assert_eq!(Checkpoint::decode(&b), Some(cp));
        assert_eq!(Checkpoint::decode(&[0u8; 64]), None);
        for i in 0..64 {
            let mut t = b;
            t[i] ^= 0x10;
            assert_eq!(Checkpoint::decode(&t), None, "byte {i}");
        }
    }
}
