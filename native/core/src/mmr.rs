//! Merkle Mountain Range v2 (docs/formats.md; test vectors in
//! `tests/vectors/mmr_v2.json`).
//!
//! Storage: `levels[h][j]` is the root of the j-th perfect subtree of height h (leaves are
//! level 0). Nodes never change once written, so every node of every past size stays
//! addressable: inclusion proofs for any index and consistency proofs from any older count
//! read straight from these vectors. Appending a leaf pushes one hash per level it
//! completes — no per-node allocation beyond amortised `Vec` growth.
use crate::hash::{from_hex, leaf_hash, node_hash, root_of_peaks, to_hex, Hash};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MmrError {
    /// A leaf index or old count outside the MMR (`AuditIndexError`).
    Index(String),
    /// A malformed proof (`ProofError`).
    Proof(String),
}

impl std::fmt::Display for MmrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MmrError::Index(m) | MmrError::Proof(m) => f.write_str(m),
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

#[derive(Debug, Clone, Default)]
pub struct Mmr {
    levels: Vec<Vec<Hash>>,
}

impl Mmr {
    pub fn new() -> Self {
        Self { levels: vec![Vec::new()] }
    }

    pub fn leaf_count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Append a payload; returns its leaf index.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(payload))
    }

    /// Append an already hashed leaf (`H(0x00‖payload)`); returns its leaf index.
    #[inline]
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.levels[0].len() as u64;
        self.levels[0].push(leaf);
        // A new leaf completes one subtree per trailing one bit of its index.
        let mut cur = leaf;
        let mut h = 0usize;
        let mut carries = (!index).trailing_zeros();
        while carries > 0 {
            let level = &self.levels[h];
            let left = level[level.len() - 2];
            cur = node_hash(&left, &cur);
            h += 1;
            if self.levels.len() == h {
                self.levels.push(Vec::new());
            }
            self.levels[h].push(cur);
            carries -= 1;
        }
        index
    }

    /// Append payloads in order; returns the new leaf count.
    pub fn append_many<'a, I>(&mut self, payloads: I) -> u64
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: ExactSizeIterator,
    {
        let it = payloads.into_iter();
        self.reserve(it.len());
        for p in it {
            self.append(p);
        }
        self.leaf_count()
    }

    /// Reserve room for `extra` more leaves on every level they will touch.
    pub fn reserve(&mut self, extra: usize) {
        let n = self.levels[0].len() + extra;
        let mut h = 0;
        let mut need = n;
        while need > 0 {
            if self.levels.len() == h {
                self.levels.push(Vec::new());
            }
            let have = self.levels[h].len();
            self.levels[h].reserve(need.saturating_sub(have));
            need >>= 1;
            h += 1;
        }
    }

    fn node(&self, height: u32, index: u64) -> Hash {
        self.levels[height as usize][index as usize]
    }

    fn peak_hash(&self, p: &Peak) -> Hash {
        self.node(p.height, p.start >> p.height)
    }

    /// Peak hashes of the MMR as it was at `count` leaves (count <= leaf_count).
    fn peaks_at(&self, count: u64) -> Vec<Hash> {
        peaks_of(count).iter().map(|p| self.peak_hash(p)).collect()
    }

    pub fn peaks(&self) -> Vec<Hash> {
        self.peaks_at(self.leaf_count())
    }

    pub fn root(&self) -> Hash {
        root_of_peaks(&self.peaks())
    }

    pub fn leaf_hash(&self, index: u64) -> Result<Hash, MmrError> {
        self.check_index(index)?;
        Ok(self.levels[0][index as usize])
    }

    fn check_index(&self, index: u64) -> Result<(), MmrError> {
        let n = self.leaf_count();
        if index >= n {
            return Err(MmrError::Index(format!("leaf index {index} out of range for an MMR of {n} leaves")));
        }
        Ok(())
    }

    /// Siblings that lift the node (`height`, covering leaf `leaf`) up to `top` height.
    fn path(&self, leaf: u64, height: u32, top: u32) -> Vec<Hash> {
        (height..top).map(|l| self.node(l, (leaf >> l) ^ 1)).collect()
    }

    pub fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, MmrError> {
        self.check_index(index)?;
        let n = self.leaf_count();
        let peaks = peaks_of(n);
        let peak = peaks.iter().find(|p| p.contains(index)).expect("a valid index lies under a peak");
        let peak_hashes: Vec<Hash> = peaks.iter().map(|p| self.peak_hash(p)).collect();
        Ok(InclusionProof {
            leaf_index: index,
            leaf_count: n,
            leaf_hash: self.levels[0][index as usize],
            siblings: self.path(index, 0, peak.height),
            root: root_of_peaks(&peak_hashes),
            peaks: peak_hashes,
        })
    }

    pub fn consistency_proof(&self, old_count: u64) -> Result<ConsistencyProof, MmrError> {
        let n = self.leaf_count();
        if old_count > n {
            return Err(MmrError::Index(format!("old count {old_count} out of range for an MMR of {n} leaves")));
        }
        let new = peaks_of(n);
        let old = peaks_of(old_count);
        let paths = old
            .iter()
            .map(|op| {
                let np = new.iter().find(|p| p.contains(op.start)).expect("an old peak lies under a new peak");
                self.path(op.start, op.height, np.height)
            })
            .collect();
        let old_peaks: Vec<Hash> = old.iter().map(|p| self.peak_hash(p)).collect();
        let new_peaks: Vec<Hash> = new.iter().map(|p| self.peak_hash(p)).collect();
        Ok(ConsistencyProof {
            old_count,
            new_count: n,
            old_root: root_of_peaks(&old_peaks),
            new_root: root_of_peaks(&new_peaks),
            old_peaks,
            new_peaks,
            paths,
        })
    }
}

/// Fold `node` (covering leaf `leaf` at `height`) up its path of siblings.
fn lift(mut node: Hash, leaf: u64, height: u32, siblings: &[Hash]) -> Hash {
    for (k, sib) in siblings.iter().enumerate() {
        let l = height + k as u32;
        node = if (leaf >> l) & 1 == 0 { node_hash(&node, sib) } else { node_hash(sib, &node) };
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
        let Some(k) = peaks.iter().position(|p| p.contains(self.leaf_index)) else { return false };
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
            return Err(proof_err(format!("leaf_index {leaf_index} is not below leaf_count {leaf_count}")));
        }
        let shape = peaks_of(leaf_count);
        if peaks.len() != shape.len() {
            return Err(proof_err(format!(
                "an MMR of {leaf_count} leaves has {} peaks, the proof lists {}",
                shape.len(),
                peaks.len()
            )));
        }
        let peak = shape.iter().find(|p| p.contains(leaf_index)).expect("leaf_index < leaf_count");
        if siblings.len() != peak.height as usize {
            return Err(proof_err(format!(
                "leaf {leaf_index} of {leaf_count} needs {} siblings, the proof lists {}",
                peak.height,
                siblings.len()
            )));
        }
        Ok(Self { leaf_index, leaf_count, leaf_hash, siblings, peaks, root })
    }
}

impl ConsistencyProof {
    pub fn verify(&self) -> bool {
        if root_of_peaks(&self.old_peaks) != self.old_root || root_of_peaks(&self.new_peaks) != self.new_root {
            return false;
        }
        let new = peaks_of(self.new_count);
        let old = peaks_of(self.old_count);
        for ((op, old_hash), path) in old.iter().zip(&self.old_peaks).zip(&self.paths) {
            let Some(k) = new.iter().position(|p| p.contains(op.start)) else { return false };
            // Where a step needs a left sibling, that sibling is necessarily the old peak of
            // that height; it must equal it, or the new tree does not extend the old one.
            for (step, sib) in path.iter().enumerate() {
                let l = op.height + step as u32;
                if (op.start >> l) & 1 == 1 {
                    let Some(i) = old.iter().position(|p| p.height == l) else { return false };
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
            return Err(proof_err(format!("old_count {old_count} exceeds new_count {new_count}")));
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
            return Err(proof_err(format!("{} old peaks need {} paths, the proof lists {}", old.len(), old.len(), paths.len())));
        }
        for (j, (op, path)) in old.iter().zip(&paths).enumerate() {
            let np = new.iter().find(|p| p.contains(op.start)).expect("old_count <= new_count");
            let want = (np.height - op.height) as usize;
            if path.len() != want {
                return Err(proof_err(format!("paths[{j}] needs {want} siblings, the proof lists {}", path.len())));
            }
        }
        Ok(Self { old_count, new_count, old_peaks, new_peaks, paths, old_root, new_root })
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
    v.as_object().ok_or_else(|| proof_err(format!("{what} must be a JSON object")))
}

fn field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a Value, MmrError> {
    o.get(key).ok_or_else(|| proof_err(format!("proof is missing '{key}'")))
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
    let a = v.as_array().ok_or_else(|| proof_err(format!("'{what}' must be a list of hashes")))?;
    a.iter().enumerate().map(|(i, h)| parse_hash(h, &format!("'{what}'[{i}]"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;

    fn vectors() -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/mmr_v2.json");
        serde_json::from_slice(&std::fs::read(&p).expect("read mmr_v2.json")).expect("parse mmr_v2.json")
    }

    fn seed_payload(i: u64) -> Hash {
        sha256(&i.to_be_bytes())
    }

    fn build(n: u64) -> Mmr {
        let mut m = Mmr::new();
        for i in 0..n {
            assert_eq!(m.append(&seed_payload(i)), i);
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
            m.append(&seed_payload(i));
        }
        assert_eq!(checked, roots.len());
    }

    #[test]
    fn vector_batch_equals_per_leaf() {
        let payloads: Vec<Hash> = (0..1000).map(seed_payload).collect();
        let mut m = Mmr::new();
        assert_eq!(m.append_many(payloads.iter().map(|p| &p[..])), 1000);
        assert_eq!(m.root(), build(1000).root());
        assert_eq!(to_hex(&m.root()), vectors()["roots"]["1000"].as_str().unwrap());
    }

    #[test]
    fn vector_inclusion_example() {
        let v = vectors();
        let ex = &v["inclusion_example"];
        let m = build(ex["leaf_count"].as_u64().unwrap());
        let p = m.inclusion_proof(ex["leaf_index"].as_u64().unwrap()).unwrap();
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
        let p = m.consistency_proof(ex["old_count"].as_u64().unwrap()).unwrap();
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
            assert!(matches!(m.consistency_proof(n + 1), Err(MmrError::Index(_))));
            if n < 40 {
                m.append(&seed_payload(n));
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
                let ok = if is_incl { verify_inclusion(t, None) } else { verify_consistency(t) };
                assert_eq!(ok, Ok(false), "{t}");
            }
        }
    }

    #[test]
    fn malformed_proofs_are_errors() {
        let good = build(11).inclusion_proof(9).unwrap().to_json();
        let mut cases: Vec<Value> = vec![json!([]), json!("x"), json!({})];
        for key in ["leaf_index", "leaf_count", "leaf_hash", "siblings", "peaks", "root"] {
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
            ("leaf_hash", json!(good["leaf_hash"].as_str().unwrap().to_uppercase())),
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
            assert!(matches!(verify_inclusion(c, None), Err(MmrError::Proof(_))), "{c}");
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
            assert!(matches!(verify_consistency(&c), Err(MmrError::Proof(_))), "{c}");
        }
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
