//! Merkle Mountain Range v2 (docs/formats.md; test vectors in
//! `tests/vectors/mmr_v2.json`).
//!
//! Storage: every node (a leaf, then each parent it completes) in MMR position order — in a
//! `Vec`, or in the node store file beside the WAL (`node_store`) with only the peaks and a
//! bounded cache in memory. Nodes never change once written, so every node of every past
//! size stays addressable at `node_pos(height, index)`: inclusion proofs for any index and
//! consistency proofs from any older count are index arithmetic.
use crate::hash::{from_hex, leaf_hash, node_hash, root_of_peaks, to_hex, Hash};
use crate::node_store::{
    leaves_for, node_pos, nodes_for, Checkpoint, StoreError, StoreFile, WRITE_BATCH,
};
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MmrError {
    /// A leaf index or old count outside the MMR (`AuditIndexError`).
    Index(String),
    /// A malformed proof (`ProofError`).
    Proof(String),
    /// A bad argument (`InvalidInput`).
    Invalid(String),
    /// The node store contradicts itself (`StoreCorruptError`).
    Corrupt(String),
    /// Another writer holds the node store (`WalLockedError`).
    Locked(String),
    /// The node store's file failed (`OSError`).
    Io(String),
}

impl std::fmt::Display for MmrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MmrError::Index(m)
            | MmrError::Proof(m)
            | MmrError::Invalid(m)
            | MmrError::Corrupt(m)
            | MmrError::Locked(m)
            | MmrError::Io(m) => f.write_str(m),
        }
    }
}

/// One peak of an MMR with `count` leaves: a perfect subtree of `height` whose leftmost
/// leaf is `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    pub height: u32,
    pub start: u64,
}

impl Peak {
    pub fn size(&self) -> u64 {
        1u64 << self.height
    }
    pub fn contains(&self, leaf: u64) -> bool {
        leaf >= self.start && leaf - self.start < self.size()
    }
}

/// Peaks of an MMR of `count` leaves, left (tallest) to right.
pub fn peaks_of(count: u64) -> Vec<Peak> {
    let mut out = Vec::with_capacity(count.count_ones() as usize);
    let mut start = 0u64;
    for h in (0..64u32).rev() {
        if count & (1u64 << h) != 0 {
            out.push(Peak { height: h, start });
            start += 1u64 << h;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub leaf_count: u64,
    pub leaf_hash: Hash,
    pub siblings: Vec<Hash>,
    pub peaks: Vec<Hash>,
    pub root: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_count: u64,
    pub new_count: u64,
    pub old_peaks: Vec<Hash>,
    pub new_peaks: Vec<Hash>,
    pub paths: Vec<Vec<Hash>>,
    pub old_root: Hash,
    pub new_root: Hash,
}

/// An append-only MMR. `Mmr::new()` keeps every node in memory; `Mmr::open(path)` keeps them
/// in a node store file (`node_store`), with only the peaks, up to `WRITE_BATCH` unwritten
/// nodes and a `CACHE_SLOTS`-entry read cache in memory.
#[derive(Debug, Default)]
pub struct Mmr {
    count: u64,
    /// The peaks, left (tallest) to right.
    stack: Vec<Hash>,
    /// Nodes from position `base` on that are not in the store file (all of them in memory).
    pending: Vec<Hash>,
    base: u64,
    store: Option<StoreFile>,
}

impl From<StoreError> for MmrError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(m) => MmrError::Corrupt(m),
            StoreError::Locked(m) => MmrError::Locked(m),
            StoreError::Io(e) => MmrError::Io(e.to_string()),
        }
    }
}

impl From<std::io::Error> for MmrError {
    fn from(e: std::io::Error) -> Self {
        MmrError::Io(e.to_string())
    }
}

impl Mmr {
    /// An MMR with every node in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An MMR over the node store at `path` (created if missing): takes its lock, drops a
    /// torn partial leaf group at its end and loads the peaks of the leaves it holds.
    pub fn open(path: &Path) -> Result<Self, MmrError> {
        let mut f = StoreFile::open(path)?;
        let count = leaves_for(f.nodes);
        let base = nodes_for(count);
        if f.nodes != base || f.torn_bytes != 0 {
            f.truncate(base)?;
        }
        let mut m = Self {
            count,
            stack: Vec::new(),
            pending: Vec::new(),
            base,
            store: Some(f),
        };
        m.stack = m.peaks_at(count)?;
        Ok(m)
    }

    pub fn leaf_count(&self) -> u64 {
        self.count
    }

    pub fn store_path(&self) -> Option<&Path> {
        self.store.as_ref().map(|s| s.path())
    }

    /// Node hashes held in memory: peaks + unwritten nodes + read-cache entries.
    pub fn resident_hashes(&self) -> usize {
        self.stack.len() + self.pending.len() + self.store.as_ref().map_or(0, |s| s.cached())
    }

    /// The store's valid checkpoints, newest first (none in memory).
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        self.store
            .as_ref()
            .map_or_else(Vec::new, |s| s.checkpoints.clone())
    }

    /// Append a payload; returns its leaf index.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, MmrError> {
        self.append_leaf_hash(leaf_hash(payload))
    }

    /// Append an already hashed leaf (`H(0x00‖payload)`); returns its leaf index.
    #[inline]
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> Result<u64, MmrError> {
        let index = self.count;
        self.pending.push(leaf);
        // A new leaf completes one subtree per trailing one bit of its index.
        let mut cur = leaf;
        let mut i = index;
        while i & 1 == 1 {
            let left = self.stack.pop().expect("a set bit has a peak");
            cur = node_hash(&left, &cur);
            self.pending.push(cur);
            i >>= 1;
        }
        self.stack.push(cur);
        self.count += 1;
        if self.store.is_some() && self.pending.len() >= WRITE_BATCH {
            self.write_pending()?;
        }
        Ok(index)
    }

    /// Append payloads in order; returns the new leaf count.
    pub fn append_many<'a, I>(&mut self, payloads: I) -> Result<u64, MmrError>
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: ExactSizeIterator,
    {
        let it = payloads.into_iter();
        if self.store.is_none() {
            self.pending.reserve(2 * it.len());
        }
        for p in it {
            self.append(p)?;
        }
        Ok(self.leaf_count())
    }

    fn write_pending(&mut self) -> Result<(), MmrError> {
        if let Some(f) = self.store.as_mut() {
            if !self.pending.is_empty() {
                f.write(self.base, &self.pending)?;
                self.base += self.pending.len() as u64;
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Write unwritten nodes to the store (and fsync it when `sync`). No-op in memory.
    pub fn flush(&mut self, sync: bool) -> Result<(), MmrError> {
        self.write_pending()?;
        if let (Some(f), true) = (self.store.as_ref(), sync) {
            f.sync()?;
        }
        Ok(())
    }

    /// Drop every leaf from `count` on (and the nodes they completed).
    pub fn truncate(&mut self, count: u64) -> Result<(), MmrError> {
        if count > self.count {
            return Err(MmrError::Index(format!(
                "count {count} out of range 0..{}",
                self.count
            )));
        }
        let keep = nodes_for(count);
        if keep >= self.base {
            self.pending.truncate((keep - self.base) as usize);
        } else {
            self.pending.clear();
            self.store
                .as_mut()
                .expect("nodes below base are in the store")
                .truncate(keep)?;
            self.base = keep;
        }
        self.count = count;
        self.stack = self.peaks_at(count)?;
        Ok(())
    }

    /// Record that the first `leaf_count` leaves are the WAL's records up to byte `wal_end`
    /// (the last with a `last_frame_len`-byte payload). The caller makes the WAL durable to
    /// `wal_end` first; the nodes are made durable here before the slot is written.
    pub fn checkpoint(
        &mut self,
        wal_end: u64,
        last_frame_len: u32,
        sync: bool,
    ) -> Result<Checkpoint, MmrError> {
        if self.store.is_none() {
            return Err(MmrError::Invalid(
                "an in-memory MerkleMountainRange has no store to checkpoint".into(),
            ));
        }
        self.flush(sync)?;
        let root = self.root();
        let f = self.store.as_mut().expect("checked above");
        let seq = f.checkpoints.first().map_or(0, |c| c.seq) + 1;
        let cp = Checkpoint {
            seq,
            leaf_count: self.count,
            wal_end,
            last_frame_len,
            root,
        };
        f.write_slot(cp)?;
        if sync {
            f.sync()?;
        }
        Ok(cp)
    }

    /// Write unwritten nodes (no fsync) and release the store; the MMR is then in memory
    /// and empty of unwritten nodes. Idempotent.
    pub fn close(&mut self) -> Result<(), MmrError> {
        self.write_pending()?;
        self.store = None;
        Ok(())
    }

    fn node(&self, height: u32, index: u64) -> Result<Hash, MmrError> {
        let pos = node_pos(height, index);
        if pos >= self.base {
            return Ok(self.pending[(pos - self.base) as usize]);
        }
        match &self.store {
            Some(f) => Ok(f.read(pos)?),
            None => Err(MmrError::Io("the node store is closed".into())),
        }
    }

    fn peak_hash(&self, p: &Peak) -> Result<Hash, MmrError> {
        self.node(p.height, p.start >> p.height)
    }

    /// Peak hashes of the MMR as it was at `count` leaves (count <= leaf_count).
    fn peaks_at(&self, count: u64) -> Result<Vec<Hash>, MmrError> {
        peaks_of(count).iter().map(|p| self.peak_hash(p)).collect()
    }

    pub fn peaks(&self) -> Vec<Hash> {
        self.stack.clone()
    }

    pub fn root(&self) -> Hash {
        root_of_peaks(&self.stack)
    }

    pub fn leaf_hash(&self, index: u64) -> Result<Hash, MmrError> {
        self.check_index(index)?;
        self.node(0, index)
    }

    fn check_index(&self, index: u64) -> Result<(), MmrError> {
        let n = self.leaf_count();
        if index >= n {
            return Err(MmrError::Index(format!(
                "leaf index {index} out of range for an MMR of {n} leaves"
            )));
        }
        Ok(())
    }

    /// Siblings that lift the node (`height`, covering leaf `leaf`) up to `top` height.
    fn path(&self, leaf: u64, height: u32, top: u32) -> Result<Vec<Hash>, MmrError> {
        (height..top)
            .map(|l| self.node(l, (leaf >> l) ^ 1))
            .collect()
    }

    /// A path read back from the store must hash up to the peak held in memory: a store
    /// that fails this is corrupt and never serves a proof.
    fn check_path(
        &self,
        node: Hash,
        leaf: u64,
        height: u32,
        path: &[Hash],
        peak: &Hash,
    ) -> Result<(), MmrError> {
        match &self.store {
            Some(f) if lift(node, leaf, height, path) != *peak => Err(MmrError::Corrupt(format!(
                "node store {}: the path of leaf {leaf} at height {height} does not reach its peak; the store is \
                 corrupt (reopen the ledger to rebuild it from the WAL)",
                f.path().display()
            ))),
            _ => Ok(()),
        }
    }

    pub fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, MmrError> {
        self.check_index(index)?;
        let n = self.leaf_count();
        let peaks = peaks_of(n);
        let k = peaks
            .iter()
            .position(|p| p.contains(index))
            .expect("a valid index lies under a peak");
        let leaf = self.node(0, index)?;
        let siblings = self.path(index, 0, peaks[k].height)?;
        self.check_path(leaf, index, 0, &siblings, &self.stack[k])?;
        Ok(InclusionProof {
            leaf_index: index,
            leaf_count: n,
            leaf_hash: leaf,
            siblings,
            root: self.root(),
            peaks: self.stack.clone(),
        })
    }

    pub fn consistency_proof(&self, old_count: u64) -> Result<ConsistencyProof, MmrError> {
        let n = self.leaf_count();
        if old_count > n {
            return Err(MmrError::Index(format!(
                "old count {old_count} out of range for an MMR of {n} leaves"
            )));
        }
        let new = peaks_of(n);
        let old = peaks_of(old_count);
        let old_peaks = self.peaks_at(old_count)?;
        let mut paths = Vec::with_capacity(old.len());
        for (op, oh) in old.iter().zip(&old_peaks) {
            let k = new
                .iter()
                .position(|p| p.contains(op.start))
                .expect("an old peak lies under a new peak");
            let path = self.path(op.start, op.height, new[k].height)?;
            self.check_path(*oh, op.start, op.height, &path, &self.stack[k])?;
            paths.push(path);
        }
        Ok(ConsistencyProof {
            old_count,
            new_count: n,
            old_root: root_of_peaks(&old_peaks),
            new_root: self.root(),
            old_peaks,
            new_peaks: self.stack.clone(),
            paths,
        })
    }
}

/// Fold `node` (covering leaf `leaf` at `height`) up its path of siblings.
fn lift(mut node: Hash, leaf: u64, height: u32, siblings: &[Hash]) -> Hash {
    for (k, sib) in siblings.iter().enumerate() {
        let l = height + k as u32;
        node = if (leaf >> l) & 1 == 0 {
            node_hash(&node, sib)
        } else {
            node_hash(sib, &node)
        };
    }
    node
}

impl InclusionProof {
    /// True iff the proof is internally consistent and (given a payload) is for that payload.
    /// Shape errors are caught earlier, by `from_json`.
    pub fn verify(&self, payload: Option<&[u8]>) -> bool {
        if let Some(p) = payload {
            if leaf_hash(p) != self.leaf_hash {
                return false;
            }
        }
        let peaks = peaks_of(self.leaf_count);
        let Some(k) = peaks.iter().position(|p| p.contains(self.leaf_index)) else {
            return false;
        };
        lift(self.leaf_hash, self.leaf_index, 0, &self.siblings) == self.peaks[k]
            && root_of_peaks(&self.peaks) == self.root
    }

    pub fn to_json(&self) -> Value {
        json!({
            "leaf_index": self.leaf_index,
            "leaf_count": self.leaf_count,
            "leaf_hash": to_hex(&self.leaf_hash),
            "siblings": hex_list(&self.siblings),
            "peaks": hex_list(&self.peaks),
            "root": to_hex(&self.root),
        })
    }

    /// Parse and shape-check a proof: counts, list lengths and hex must all fit the
    /// scheme, else `MmrError::Proof` naming what is wrong.
    pub fn from_json(v: &Value) -> Result<Self, MmrError> {
        let o = object(v, "inclusion proof")?;
        let leaf_index = uint(o, "leaf_index")?;
        let leaf_count = uint(o, "leaf_count")?;
        let leaf_hash = hash_field(o, "leaf_hash")?;
        let siblings = hash_list(field(o, "siblings")?, "siblings")?;
        let peaks = hash_list(field(o, "peaks")?, "peaks")?;
        let root = hash_field(o, "root")?;
        if leaf_index >= leaf_count {
            return Err(proof_err(format!(
                "leaf_index {leaf_index} is not below leaf_count {leaf_count}"
            )));
        }
        let shape = peaks_of(leaf_count);
        if peaks.len() != shape.len() {
            return Err(proof_err(format!(
                "an MMR of {leaf_count} leaves has {} peaks, the proof lists {}",
                shape.len(),
                peaks.len()
            )));
        }
        let peak = shape
            .iter()
            .find(|p| p.contains(leaf_index))
            .expect("leaf_index < leaf_count");
        if siblings.len() != peak.height as usize {
            return Err(proof_err(format!(
                "leaf {leaf_index} of {leaf_count} needs {} siblings, the proof lists {}",
                peak.height,
                siblings.len()
            )));
        }
        Ok(Self {
            leaf_index,
            leaf_count,
            leaf_hash,
            siblings,
            peaks,
            root,
        })
    }
}

impl ConsistencyProof {
    pub fn verify(&self) -> bool {
        if root_of_peaks(&self.old_peaks) != self.old_root
            || root_of_peaks(&self.new_peaks) != self.new_root
        {
            return false;
        }
        let new = peaks_of(self.new_count);
        let old = peaks_of(self.old_count);
        for ((op, old_hash), path) in old.iter().zip(&self.old_peaks).zip(&self.paths) {
            let Some(k) = new.iter().position(|p| p.contains(op.start)) else {
                return false;
            };
            // Where a step needs a left sibling, that sibling is necessarily the old peak of
            // that height; it must equal it, or the new tree does not extend the old one.
            for (step, sib) in path.iter().enumerate() {
                let l = op.height + step as u32;
                if (op.start >> l) & 1 == 1 {
                    let Some(i) = old.iter().position(|p| p.height == l) else {
                        return false;
                    };
                    if &self.old_peaks[i] != sib {
                        return false;
                    }
                }
            }
            if lift(*old_hash, op.start, op.height, path) != self.new_peaks[k] {
                return false;
            }
        }
        true
    }

    pub fn to_json(&self) -> Value {
        json!({
            "old_count": self.old_count,
            "new_count": self.new_count,
            "old_peaks": hex_list(&self.old_peaks),
            "new_peaks": hex_list(&self.new_peaks),
            "paths": self.paths.iter().map(|p| Value::from(hex_list(p))).collect::<Vec<_>>(),
            "old_root": to_hex(&self.old_root),
            "new_root": to_hex(&self.new_root),
        })
    }

    pub fn from_json(v: &Value) -> Result<Self, MmrError> {
        let o = object(v, "consistency proof")?;
        let old_count = uint(o, "old_count")?;
        let new_count = uint(o, "new_count")?;
        let old_peaks = hash_list(field(o, "old_peaks")?, "old_peaks")?;
        let new_peaks = hash_list(field(o, "new_peaks")?, "new_peaks")?;
        let paths_v = field(o, "paths")?
            .as_array()
            .ok_or_else(|| proof_err("'paths' must be a list of lists of hashes"))?;
        let paths = paths_v
            .iter()
            .enumerate()
            .map(|(j, p)| hash_list(p, &format!("paths[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let old_root = hash_field(o, "old_root")?;
        let new_root = hash_field(o, "new_root")?;
        if old_count > new_count {
            return Err(proof_err(format!(
                "old_count {old_count} exceeds new_count {new_count}"
            )));
        }
        let old = peaks_of(old_count);
        let new = peaks_of(new_count);
        if old_peaks.len() != old.len() || new_peaks.len() != new.len() {
            return Err(proof_err(format!(
                "counts {old_count} -> {new_count} need {} old and {} new peaks, the proof lists {} and {}",
                old.len(),
                new.len(),
                old_peaks.len(),
                new_peaks.len()
            )));
        }
        if paths.len() != old.len() {
            return Err(proof_err(format!(
                "{} old peaks need {} paths, the proof lists {}",
                old.len(),
                old.len(),
                paths.len()
            )));
        }
        for (j, (op, path)) in old.iter().zip(&paths).enumerate() {
            let np = new
                .iter()
                .find(|p| p.contains(op.start))
                .expect("old_count <= new_count");
            let want = (np.height - op.height) as usize;
            if path.len() != want {
                return Err(proof_err(format!(
                    "paths[{j}] needs {want} siblings, the proof lists {}",
                    path.len()
                )));
            }
        }
        Ok(Self {
            old_count,
            new_count,
            old_peaks,
            new_peaks,
            paths,
            old_root,
            new_root,
        })
    }
}

/// Verify an inclusion proof given as JSON (malformed -> Err, tampered -> Ok(false)).
pub fn verify_inclusion(proof: &Value, payload: Option<&[u8]>) -> Result<bool, MmrError> {
    Ok(InclusionProof::from_json(proof)?.verify(payload))
}

/// Verify a consistency proof given as JSON (malformed -> Err, tampered -> Ok(false)).
pub fn verify_consistency(proof: &Value) -> Result<bool, MmrError> {
    Ok(ConsistencyProof::from_json(proof)?.verify())
}

fn proof_err(m: impl Into<String>) -> MmrError {
    MmrError::Proof(m.into())
}

fn hex_list(hs: &[Hash]) -> Vec<String> {
    hs.iter().map(to_hex).collect()
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, MmrError> {
    v.as_object()
        .ok_or_else(|| proof_err(format!("{what} must be a JSON object")))
}

fn field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a Value, MmrError> {
    o.get(key)
        .ok_or_else(|| proof_err(format!("proof is missing '{key}'")))
}

fn uint(o: &Map<String, Value>, key: &str) -> Result<u64, MmrError> {
    field(o, key)?
        .as_u64()
        .ok_or_else(|| proof_err(format!("'{key}' must be a non-negative integer")))
}

fn parse_hash(v: &Value, what: &str) -> Result<Hash, MmrError> {
    v.as_str()
        .and_then(from_hex)
        .ok_or_else(|| proof_err(format!("{what} must be 64 lowercase hex digits")))
}

fn hash_field(o: &Map<String, Value>, key: &str) -> Result<Hash, MmrError> {
    parse_hash(field(o, key)?, &format!("'{key}'"))
}

fn hash_list(v: &Value, what: &str) -> Result<Vec<Hash>, MmrError> {
    let a = v
        .as_array()
        .ok_or_else(|| proof_err(format!("'{what}' must be a list of hashes")))?;
    a.iter()
        .enumerate()
        .map(|(i, h)| parse_hash(h, &format!("'{what}'[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;

    fn vectors() -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/vectors/mmr_v2.json");
        serde_json::from_slice(&std::fs::read(&p).expect("read mmr_v2.json"))
            .expect("parse mmr_v2.json")
    }

    fn seed_payload(i: u64) -> Hash {
        sha256(&i.to_be_bytes())
    }

    fn build(n: u64) -> Mmr {
        let mut m = Mmr::new();
        for i in 0..n {
            assert_eq!(m.append(&seed_payload(i)).unwrap(), i);
        }
        m
    }

    /// Reference: recompute everything from the leaves, recursively, with no stored nodes.
    fn subtree(leaves: &[Hash]) -> Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let (l, r) = leaves.split_at(leaves.len() / 2);
        node_hash(&subtree(l), &subtree(r))
    }

    fn reference_root(leaves: &[Hash]) -> Hash {
        let peaks: Vec<Hash> = peaks_of(leaves.len() as u64)
            .iter()
            .map(|p| subtree(&leaves[p.start as usize..(p.start + p.size()) as usize]))
            .collect();
        root_of_peaks(&peaks)
    }

    #[test]
    fn vector_roots() {
        let v = vectors();
        let roots = v["roots"].as_object().unwrap();
        let mut m = Mmr::new();
        let mut checked = 0;
        for i in 0..=100_000u64 {
            if let Some(r) = roots.get(&i.to_string()) {
                assert_eq!(to_hex(&m.root()), r.as_str().unwrap(), "root at n={i}");
                checked += 1;
            }
            m.append(&seed_payload(i)).unwrap();
        }
        assert_eq!(checked, roots.len());
    }

    #[test]
    fn vector_batch_equals_per_leaf() {
        let payloads: Vec<Hash> = (0..1000).map(seed_payload).collect();
        let mut m = Mmr::new();
        assert_eq!(
            m.append_many(payloads.iter().map(|p| &p[..])).unwrap(),
            1000
        );
        assert_eq!(m.root(), build(1000).root());
        assert_eq!(
            to_hex(&m.root()),
            vectors()["roots"]["1000"].as_str().unwrap()
        );
    }

    #[test]
    fn vector_inclusion_example() {
        let v = vectors();
        let ex = &v["inclusion_example"];
        let m = build(ex["leaf_count"].as_u64().unwrap());
        let p = m
            .inclusion_proof(ex["leaf_index"].as_u64().unwrap())
            .unwrap();
        assert_eq!(&p.to_json(), ex);
        assert_eq!(verify_inclusion(ex, None), Ok(true));
        assert_eq!(verify_inclusion(ex, Some(&seed_payload(9))), Ok(true));
        assert_eq!(verify_inclusion(ex, Some(&seed_payload(8))), Ok(false));
    }

    #[test]
    fn vector_consistency_example() {
        let v = vectors();
        let ex = &v["consistency_example"];
        let m = build(ex["new_count"].as_u64().unwrap());
        let p = m
            .consistency_proof(ex["old_count"].as_u64().unwrap())
            .unwrap();
        assert_eq!(&p.to_json(), ex);
        assert_eq!(verify_consistency(ex), Ok(true));
        assert_eq!(to_hex(&p.old_root), v["roots"]["6"].as_str().unwrap());
    }

    #[test]
    fn every_proof_up_to_40_leaves() {
        let leaves: Vec<Hash> = (0..40).map(|i| leaf_hash(&seed_payload(i))).collect();
        let mut m = Mmr::new();
        for n in 0..=40u64 {
            assert_eq!(m.root(), reference_root(&leaves[..n as usize]), "n={n}");
            for i in 0..n {
                let p = m.inclusion_proof(i).unwrap();
                assert!(p.verify(Some(&seed_payload(i))), "n={n} i={i}");
                assert_eq!(verify_inclusion(&p.to_json(), None), Ok(true));
            }
            for old in 0..=n {
                let p = m.consistency_proof(old).unwrap();
                assert_eq!(p.old_root, reference_root(&leaves[..old as usize]));
                assert_eq!(verify_consistency(&p.to_json()), Ok(true), "{old}->{n}");
            }
            assert!(matches!(m.inclusion_proof(n), Err(MmrError::Index(_))));
            assert!(matches!(
                m.consistency_proof(n + 1),
                Err(MmrError::Index(_))
            ));
            if n < 40 {
                m.append(&seed_payload(n)).unwrap();
            }
        }
    }

    fn flip_hex_chars(v: &Value, out: &mut Vec<Value>, path: &mut Vec<Value>, root: &Value) {
        match v {
            Value::String(s) if s.len() == 64 => {
                for k in 0..64 {
                    let mut t = root.clone();
                    let mut cur = &mut t;
                    for p in path.iter() {
                        cur = match p {
                            Value::String(key) => &mut cur[key.as_str()],
                            Value::Number(i) => &mut cur[i.as_u64().unwrap() as usize],
                            _ => unreachable!(),
                        };
                    }
                    let mut b = s.clone().into_bytes();
                    b[k] = if b[k] == b'0' { b'1' } else { b'0' };
                    *cur = Value::String(String::from_utf8(b).unwrap());
                    out.push(t);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(Value::from(i));
                    flip_hex_chars(x, out, path, root);
                    path.pop();
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    path.push(Value::from(k.clone()));
                    flip_hex_chars(x, out, path, root);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    #[test]
    fn tampered_proofs_fail() {
        let m = build(23);
        for (proof, is_incl) in [
            (m.inclusion_proof(13).unwrap().to_json(), true),
            (m.consistency_proof(11).unwrap().to_json(), false),
            (m.consistency_proof(0).unwrap().to_json(), false),
        ] {
            let mut tampered = Vec::new();
            flip_hex_chars(&proof, &mut tampered, &mut Vec::new(), &proof);
            assert!(tampered.len() >= 64 * 3);
            for t in &tampered {
                let ok = if is_incl {
                    verify_inclusion(t, None)
                } else {
                    verify_consistency(t)
                };
                assert_eq!(ok, Ok(false), "{t}");
            }
        }
    }

    #[test]
    fn malformed_proofs_are_errors() {
        let good = build(11).inclusion_proof(9).unwrap().to_json();
        let mut cases: Vec<Value> = vec![json!([]), json!("x"), json!({})];
        for key in [
            "leaf_index",
            "leaf_count",
            "leaf_hash",
            "siblings",
            "peaks",
            "root",
        ] {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(key);
            cases.push(c);
        }
        for (key, bad) in [
            ("leaf_index", json!(-1)),
            ("leaf_index", json!(11)),
            ("leaf_index", json!(true)),
            ("leaf_index", json!(9.0)),
            ("leaf_count", json!(12)),
            ("leaf_hash", json!("zz")),
            (
                "leaf_hash",
                json!(good["leaf_hash"].as_str().unwrap().to_uppercase()),
            ),
            ("siblings", json!([])),
            ("siblings", json!("abc")),
            ("peaks", json!([good["root"].clone()])),
            ("root", json!(null)),
        ] {
            let mut c = good.clone();
            c[key] = bad;
            cases.push(c);
        }
        for c in &cases {
            assert!(
                matches!(verify_inclusion(c, None), Err(MmrError::Proof(_))),
                "{c}"
            );
        }
        let good = build(11).consistency_proof(6).unwrap().to_json();
        for (key, bad) in [
            ("old_count", json!(12)),
            ("old_count", json!(5)),
            ("new_count", json!(12)),
            ("paths", json!([[]])),
            ("paths", json!([["00"], []])),
            ("old_peaks", json!([])),
        ] {
            let mut c = good.clone();
            c[key] = bad;
            assert!(
                matches!(verify_consistency(&c), Err(MmrError::Proof(_))),
                "{c}"
            );
        }
    }

    fn tmp_store(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("glmmr-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("audit.mmr")
    }

    #[test]
    fn store_answers_as_memory_does_and_stays_small() {
        let path = tmp_store("same");
        let n = 3 * crate::node_store::WRITE_BATCH as u64 + 17;
        let mem = build(n);
        let mut st = Mmr::open(&path).unwrap();
        for i in 0..n {
            st.append(&seed_payload(i)).unwrap();
            assert!(
                st.resident_hashes()
                    <= 64 + crate::node_store::WRITE_BATCH + crate::node_store::CACHE_SLOTS
            );
        }
        assert_eq!(st.root(), mem.root());
        for i in [0, 1, 2, 1000, n / 2, n - 1] {
            assert_eq!(
                st.inclusion_proof(i).unwrap(),
                mem.inclusion_proof(i).unwrap(),
                "i={i}"
            );
        }
        for old in [0, 1, 5, 4096, n - 1, n] {
            assert_eq!(
                st.consistency_proof(old).unwrap(),
                mem.consistency_proof(old).unwrap(),
                "old={old}"
            );
        }
        assert!(matches!(Mmr::open(&path), Err(MmrError::Locked(_))));
        st.checkpoint(12345, 32, true).unwrap();
        st.close().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            len,
            crate::node_store::HEADER_LEN + 32 * crate::node_store::nodes_for(n)
        );
        let mut st = Mmr::open(&path).unwrap();
        assert_eq!((st.leaf_count(), st.root()), (n, mem.root()));
        assert_eq!(st.checkpoints()[0].leaf_count, n);
        st.truncate(1000).unwrap();
        assert_eq!(st.root(), build(1000).root());
        assert_eq!(
            st.inclusion_proof(999).unwrap(),
            build(1000).inclusion_proof(999).unwrap()
        );
    }

    #[test]
    fn a_flipped_node_never_serves_a_proof() {
        let path = tmp_store("flip");
        let mut st = Mmr::open(&path).unwrap();
        for i in 0..64 {
            st.append(&seed_payload(i)).unwrap();
        }
        st.close().unwrap();
        let mut data = std::fs::read(&path).unwrap();
        let at = (crate::node_store::HEADER_LEN + 32 * crate::node_store::node_pos(1, 3)) as usize;
        data[at] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let st = Mmr::open(&path).unwrap();
        assert!(matches!(st.inclusion_proof(4), Err(MmrError::Corrupt(_))));
        assert!(st.inclusion_proof(0).is_ok()); // its path does not pass through the flipped node
        assert!(matches!(st.consistency_proof(5), Err(MmrError::Corrupt(_))));
    }

    #[test]
    fn vector_store_file() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/vectors/node_store_v1.json");
        let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let v = &v["mmr_store"];
        let unhex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let payloads: Vec<Vec<u8>> = v["payloads_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| unhex(p.as_str().unwrap()))
            .collect();
        let path = tmp_store("vector");
        let mut m = Mmr::open(&path).unwrap();
        m.append_many(payloads.iter().map(|p| &p[..])).unwrap();
        m.flush(true).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            unhex(v["file_hex_before_checkpoint"].as_str().unwrap())
        );
        let cp = &v["checkpoint"];
        let got = m
            .checkpoint(
                cp["wal_end"].as_u64().unwrap(),
                cp["last_frame_len"].as_u64().unwrap() as u32,
                true,
            )
            .unwrap();
        assert_eq!(
            (got.seq, got.leaf_count, to_hex(&got.root)),
            (1, 11, cp["root"].as_str().unwrap().to_string())
        );
        m.close().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            unhex(v["file_hex"].as_str().unwrap())
        );
    }

    #[test]
    fn empty_mmr() {
        let m = Mmr::new();
        assert_eq!(m.leaf_count(), 0);
        assert_eq!(to_hex(&m.root()), "0".repeat(64));
        let p = m.consistency_proof(0).unwrap();
        assert!(p.verify());
        assert!(matches!(m.leaf_hash(0), Err(MmrError::Index(_))));
    }
}
