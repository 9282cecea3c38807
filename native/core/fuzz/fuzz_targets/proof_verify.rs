//! MMR proofs, checked against a reference that recomputes everything from the leaves with
//! plain SHA-256 (`H(tag‖…)` by concatenation, recursive perfect trees: none of the MMR's
//! own code):
//!
//! * Real proofs (first byte >= 0x80): an MMR of fuzz-chosen payloads (duplicates included).
//!   Its root is the reference root; every inclusion and consistency proof it gives is the
//!   reference proof, verifies (with and without its payload) and names the recomputed root.
//!   Then one fuzz-chosen mutation (a flipped bit in any hash, an index or a count changed, a
//!   list element dropped, added or swapped, a field removed, another payload) must make the
//!   proof fail (`Ok(false)` or `Err`). A mutation that changes nothing is a no-op and must
//!   still verify. Two mutated proofs may honestly verify, and nothing else may:
//!   - the mutated proof is the genuine proof of what it now claims (e.g. an index moved to a
//!     leaf with the same payload): the reference builds that proof and it is equal;
//!   - only a count changed, to one with the same proof shape (same number of peaks, same
//!     peak height under the index / the same path lengths). The root commits to the peak
//!     hashes, not to the leaf count (docs/formats.md), so no verifier can see it: every hash
//!     in such a proof is still the genuine one of the original size, and the target checks
//!     exactly that. A client that trusts a count must take it with the root it trusts.
//! * Any bytes (first byte < 0x80: a payload of `byte` bytes, then the proof JSON): never
//!   panics, and a proof that verifies names roots the reference recomputes from its peaks,
//!   its leaf hash (and payload) lifts along its siblings to the peak that holds its index,
//!   and every old peak of a consistency proof lifts along its path to its new peak.
#![no_main]
use gatewaylab_core::hash::{from_hex, sha256, to_hex, Hash};
use gatewaylab_core::mmr::{verify_consistency, verify_inclusion, Mmr};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

// --- the reference: plain SHA-256 over the definitions ---------------------------------

fn tagged(tag: u8, parts: &[&[u8]]) -> Hash {
    let mut buf = vec![tag];
    for p in parts {
        buf.extend_from_slice(p);
    }
    sha256(&buf)
}

fn ref_leaf(payload: &[u8]) -> Hash {
    tagged(0x00, &[payload])
}

fn ref_node(l: &Hash, r: &Hash) -> Hash {
    tagged(0x01, &[l, r])
}

fn ref_root(peaks: &[Hash]) -> Hash {
    if peaks.is_empty() {
        return [0u8; 32];
    }
    let parts: Vec<&[u8]> = peaks.iter().map(|p| &p[..]).collect();
    tagged(0x02, &parts)
}

/// (height, first leaf) of each peak of an MMR of `count` leaves, tallest first.
fn shape(count: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for h in (0..64u32).rev() {
        if count >> h & 1 == 1 {
            out.push((h, start));
            start += 1 << h;
        }
    }
    out
}

fn holder(count: u64, leaf: u64) -> Option<(usize, u32, u64)> {
    shape(count)
        .into_iter()
        .enumerate()
        .find(|(_, (h, s))| leaf >= *s && leaf - s < 1u64 << h)
        .map(|(k, (h, s))| (k, h, s))
}

/// Root of the perfect tree over `leaves` (a power of two of them).
fn tree(leaves: &[Hash]) -> Hash {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let (l, r) = leaves.split_at(leaves.len() / 2);
    ref_node(&tree(l), &tree(r))
}

/// The subtree at `level` with index `i` (covering leaves i·2^level ..).
fn subtree(leaves: &[Hash], level: u32, i: u64) -> Hash {
    let w = 1usize << level;
    let at = i as usize * w;
    tree(&leaves[at..at + w])
}

fn ref_peaks(leaves: &[Hash]) -> Vec<Hash> {
    shape(leaves.len() as u64)
        .iter()
        .map(|&(h, s)| subtree(leaves, h, s >> h))
        .collect()
}

/// Siblings lifting the node (`level`, covering leaf `leaf`) up to height `top`.
fn ref_path(leaves: &[Hash], leaf: u64, level: u32, top: u32) -> Vec<Hash> {
    (level..top)
        .map(|l| subtree(leaves, l, (leaf >> l) ^ 1))
        .collect()
}

fn hexes(hs: &[Hash]) -> Vec<String> {
    hs.iter().map(to_hex).collect()
}

/// The inclusion proof of leaf `i` in the MMR of `leaves`, as docs/formats.md defines it.
fn ref_inclusion(leaves: &[Hash], i: u64) -> Value {
    let n = leaves.len() as u64;
    let (_, h, _) = holder(n, i).expect("i < n");
    let peaks = ref_peaks(leaves);
    json!({
        "leaf_index": i,
        "leaf_count": n,
        "leaf_hash": to_hex(&leaves[i as usize]),
        "siblings": hexes(&ref_path(leaves, i, 0, h)),
        "peaks": hexes(&peaks),
        "root": to_hex(&ref_root(&peaks)),
    })
}

/// The consistency proof from the first `old` of `leaves` to all of them.
fn ref_consistency(leaves: &[Hash], old: u64) -> Value {
    let n = leaves.len() as u64;
    let old_peaks = ref_peaks(&leaves[..old as usize]);
    let new_peaks = ref_peaks(leaves);
    let paths: Vec<Vec<String>> = shape(old)
        .iter()
        .map(|&(h, s)| {
            let (_, top, _) = holder(n, s).expect("an old peak lies under a new one");
            hexes(&ref_path(leaves, s, h, top))
        })
        .collect();
    json!({
        "old_count": old,
        "new_count": n,
        "old_peaks": hexes(&old_peaks),
        "new_peaks": hexes(&new_peaks),
        "paths": paths,
        "old_root": to_hex(&ref_root(&old_peaks)),
        "new_root": to_hex(&ref_root(&new_peaks)),
    })
}

/// Fold `node` (at `level`, covering leaf `leaf`) up `siblings`.
fn ref_lift(mut node: Hash, leaf: u64, level: u32, siblings: &[Hash]) -> Hash {
    for (k, s) in siblings.iter().enumerate() {
        node = if leaf >> (level + k as u32) & 1 == 0 {
            ref_node(&node, s)
        } else {
            ref_node(s, &node)
        };
    }
    node
}

// --- reading an accepted proof back ----------------------------------------------------

fn hash_of(v: &Value) -> Hash {
    from_hex(v.as_str().expect("an accepted proof has hex strings")).expect("64 hex digits")
}

fn hashes_of(v: &Value) -> Vec<Hash> {
    v.as_array()
        .expect("an accepted proof has lists of hashes")
        .iter()
        .map(hash_of)
        .collect()
}

fn count_of(v: &Value) -> u64 {
    v.as_u64()
        .expect("an accepted proof has non-negative integer counts")
}

/// What an accepted inclusion proof must satisfy, recomputed by the reference.
fn assert_inclusion_sound(p: &Value, payload: Option<&[u8]>) {
    let (i, n) = (count_of(&p["leaf_index"]), count_of(&p["leaf_count"]));
    let leaf = hash_of(&p["leaf_hash"]);
    let (siblings, peaks) = (hashes_of(&p["siblings"]), hashes_of(&p["peaks"]));
    let (k, h, _) = holder(n, i).expect("an accepted proof's index lies under a peak");
    assert_eq!(
        peaks.len(),
        shape(n).len(),
        "accepted with the wrong number of peaks: {p}"
    );
    assert_eq!(
        siblings.len(),
        h as usize,
        "accepted with the wrong path length: {p}"
    );
    if let Some(pl) = payload {
        assert_eq!(
            ref_leaf(pl),
            leaf,
            "accepted for a payload that is not its leaf: {p}"
        );
    }
    assert_eq!(
        ref_lift(leaf, i, 0, &siblings),
        peaks[k],
        "accepted a leaf that does not lift to its peak: {p}"
    );
    assert_eq!(
        ref_root(&peaks),
        hash_of(&p["root"]),
        "accepted a root that is not its peaks' root: {p}"
    );
}

fn assert_consistency_sound(p: &Value) {
    let (m, n) = (count_of(&p["old_count"]), count_of(&p["new_count"]));
    let (old_peaks, new_peaks) = (hashes_of(&p["old_peaks"]), hashes_of(&p["new_peaks"]));
    let paths: Vec<Vec<Hash>> = p["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(hashes_of)
        .collect();
    assert!(m <= n, "accepted old_count > new_count: {p}");
    assert_eq!(
        ref_root(&old_peaks),
        hash_of(&p["old_root"]),
        "accepted an old root that is not its peaks' root: {p}"
    );
    assert_eq!(
        ref_root(&new_peaks),
        hash_of(&p["new_root"]),
        "accepted a new root that is not its peaks' root: {p}"
    );
    let old = shape(m);
    assert_eq!(
        (old.len(), paths.len(), new_peaks.len()),
        (old_peaks.len(), old_peaks.len(), shape(n).len()),
        "{p}"
    );
    for (j, &(h, s)) in old.iter().enumerate() {
        let (k, _, _) = holder(n, s).expect("an old peak lies under a new one");
        assert_eq!(
            ref_lift(old_peaks[j], s, h, &paths[j]),
            new_peaks[k],
            "accepted an old peak that does not lift to its new peak: {p}"
        );
    }
}

// --- real proofs and their mutations ---------------------------------------------------

const COUNTS: [&str; 4] = ["leaf_index", "leaf_count", "old_count", "new_count"];

/// Every place in `v` that holds a hash, a list, or a count, as JSON pointers.
fn places(v: &Value, at: String, hashes: &mut Vec<String>, lists: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() == 64 => hashes.push(at),
        Value::Array(a) => {
            lists.push(at.clone());
            for (i, x) in a.iter().enumerate() {
                places(x, format!("{at}/{i}"), hashes, lists);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                places(x, format!("{at}/{k}"), hashes, lists);
            }
        }
        _ => {}
    }
}

fn arb_hash(u: &mut Unstructured, proof: &Value) -> ArbResult<Value> {
    // half the time a hash the proof already holds (a plausible splice), else fuzz bytes
    let mut hs = Vec::new();
    places(proof, String::new(), &mut hs, &mut Vec::new());
    if !hs.is_empty() && u.arbitrary::<bool>()? {
        let at = u.choose(&hs)?;
        return Ok(proof.pointer(at).cloned().unwrap_or(Value::Null));
    }
    let b: [u8; 32] = u.arbitrary()?;
    Ok(Value::String(to_hex(&b)))
}

/// Apply one mutation to `proof` (and maybe to the payload). Returns a description.
fn mutate(
    u: &mut Unstructured,
    proof: &mut Value,
    payload: &mut Vec<u8>,
    inclusion: bool,
) -> ArbResult<String> {
    let (mut hashes, mut lists) = (Vec::new(), Vec::new());
    places(proof, String::new(), &mut hashes, &mut lists);
    let counts: Vec<&str> = COUNTS
        .iter()
        .copied()
        .filter(|k| proof.get(k).is_some())
        .collect();
    Ok(match u.int_in_range(0..=6u8)? {
        0 => {
            let at = u.choose(&hashes)?.clone();
            let (byte, bit) = (u.int_in_range(0..=31usize)?, u.int_in_range(0..=7u8)?);
            let slot = proof.pointer_mut(&at).expect("a hash place");
            let mut h = from_hex(slot.as_str().expect("hex")).expect("hex");
            h[byte] ^= 1 << bit;
            *slot = Value::String(to_hex(&h));
            format!("flip bit {bit} of byte {byte} at {at}")
        }
        1 => {
            let key = *u.choose(&counts)?;
            let old = proof[key].as_u64().expect("a count");
            let new = match u.int_in_range(0..=2u8)? {
                0 => old.wrapping_add(u.int_in_range(1..=4u64)?),
                1 => old.wrapping_sub(u.int_in_range(1..=4u64)?),
                _ => u.arbitrary()?,
            };
            proof[key] = Value::from(new);
            format!("{key} {old} -> {new}")
        }
        2 => {
            let at = u.choose(&lists)?.clone();
            let list = proof
                .pointer_mut(&at)
                .and_then(Value::as_array_mut)
                .expect("a list");
            if list.is_empty() {
                return Ok(format!("drop from the empty {at} (no-op)"));
            }
            let i = u.choose_index(list.len())?;
            list.remove(i);
            format!("drop {at}/{i}")
        }
        3 => {
            let at = u.choose(&lists)?.clone();
            let is_paths = at == "/paths";
            let value = if is_paths {
                let n = u.int_in_range(0..=3usize)?;
                Value::Array(
                    (0..n)
                        .map(|_| arb_hash(u, proof))
                        .collect::<ArbResult<_>>()?,
                )
            } else {
                arb_hash(u, proof)?
            };
            let list = proof
                .pointer_mut(&at)
                .and_then(Value::as_array_mut)
                .expect("a list");
            let i = u.int_in_range(0..=list.len())?;
            list.insert(i, value);
            format!("insert at {at}/{i}")
        }
        4 => {
            let at = u.choose(&lists)?.clone();
            let list = proof
                .pointer_mut(&at)
                .and_then(Value::as_array_mut)
                .expect("a list");
            if list.len() < 2 {
                return Ok(format!("swap in the short {at} (no-op)"));
            }
            let (a, b) = (u.choose_index(list.len())?, u.choose_index(list.len())?);
            list.swap(a, b);
            format!("swap {at}/{a} and {at}/{b}")
        }
        5 => {
            let keys: Vec<String> = proof.as_object().expect("object").keys().cloned().collect();
            let key = u.choose(&keys)?.clone();
            proof.as_object_mut().expect("object").remove(&key);
            format!("remove {key}")
        }
        _ if inclusion => {
            match u.int_in_range(0..=2u8)? {
                0 if !payload.is_empty() => {
                    let i = u.choose_index(payload.len())?;
                    payload[i] ^= u.int_in_range(1..=255u8)?;
                }
                1 if !payload.is_empty() => {
                    payload.pop();
                }
                _ => payload.push(u.arbitrary()?),
            }
            "another payload".to_string()
        }
        _ => "nothing (no payload to change)".to_string(),
    })
}

/// `mutated` differs from `original` in its leaf or old/new counts only (no index, hash,
/// list or other field changed).
fn counts_only(mutated: &Value, original: &Value) -> bool {
    let mut m = mutated.clone();
    for k in ["leaf_count", "old_count", "new_count"] {
        if let (Some(slot), Some(v)) = (m.get_mut(k), original.get(k)) {
            *slot = v.clone();
        }
    }
    &m == original
}

fn structured(u: &mut Unstructured) -> ArbResult<()> {
    // payloads: short, often repeated (duplicate leaves make honest look-alike proofs)
    let n = u.int_in_range(0..=70usize)?;
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(n);
    for _ in 0..n {
        if !payloads.is_empty() && u.ratio(1, 4)? {
            let p = u.choose(&payloads)?.clone();
            payloads.push(p);
        } else {
            let len = u.int_in_range(0..=12usize)?;
            payloads.push(u.bytes(len)?.to_vec());
        }
    }
    let leaves: Vec<Hash> = payloads.iter().map(|p| ref_leaf(p)).collect();
    let mut mmr = Mmr::new();
    for p in &payloads {
        mmr.append(p).expect("an in-memory append");
    }
    assert_eq!(
        mmr.root(),
        ref_root(&ref_peaks(&leaves)),
        "MMR root != root recomputed from the leaves"
    );

    let inclusion = n > 0 && u.arbitrary::<bool>()?;
    let (proof, mut payload) = if inclusion {
        let i = u.int_in_range(0..=n as u64 - 1)?;
        let p = mmr.inclusion_proof(i).expect("a valid index").to_json();
        assert_eq!(
            p,
            ref_inclusion(&leaves, i),
            "inclusion proof != the reference proof"
        );
        assert_eq!(
            verify_inclusion(&p, Some(&payloads[i as usize])),
            Ok(true),
            "a real proof fails: {p}"
        );
        assert_eq!(
            verify_inclusion(&p, None),
            Ok(true),
            "a real proof fails: {p}"
        );
        (p, payloads[i as usize].clone())
    } else {
        let old = u.int_in_range(0..=n as u64)?;
        let p = mmr.consistency_proof(old).expect("old <= n").to_json();
        assert_eq!(
            p,
            ref_consistency(&leaves, old),
            "consistency proof != the reference proof"
        );
        assert_eq!(verify_consistency(&p), Ok(true), "a real proof fails: {p}");
        (p, Vec::new())
    };
    let original_payload = payload.clone();
    let mut mutated = proof.clone();
    let what = mutate(u, &mut mutated, &mut payload, inclusion)?;
    let accepted = if inclusion {
        verify_inclusion(&mutated, Some(&payload)) == Ok(true)
    } else {
        verify_consistency(&mutated) == Ok(true)
    };
    if mutated == proof && payload == original_payload {
        assert!(accepted, "a no-op mutation ({what}) made a real proof fail");
        return Ok(());
    }
    if !accepted {
        return Ok(());
    }
    // Accepted after a real change: it must be the genuine proof of what it now claims ...
    let genuine = if inclusion {
        let (i, c) = (
            mutated["leaf_index"].as_u64(),
            mutated["leaf_count"].as_u64(),
        );
        matches!((i, c), (Some(i), Some(c)) if i < c && c <= n as u64
            && mutated == ref_inclusion(&leaves[..c as usize], i)
            && ref_leaf(&payload) == leaves[i as usize])
    } else {
        let (o, c) = (mutated["old_count"].as_u64(), mutated["new_count"].as_u64());
        matches!((o, c), (Some(o), Some(c)) if o <= c && c <= n as u64
            && mutated == ref_consistency(&leaves[..c as usize], o))
    };
    // ... or the same proof under another count of the same shape (the root does not commit
    // to the count), every hash still the genuine one of the original size.
    let recount = payload == original_payload && counts_only(&mutated, &proof);
    assert!(
        genuine || recount,
        "a mutated proof verified ({what}):\n  real:    {proof}\n  mutated: {mutated}"
    );
    if inclusion {
        assert_inclusion_sound(&mutated, Some(&payload));
    } else {
        assert_consistency_sound(&mutated);
    }
    Ok(())
}

fn raw(data: &[u8]) {
    let (payload, json) = match data.split_first() {
        Some((&n, rest)) => {
            let n = ((n & 0x7f) as usize).min(rest.len());
            (&rest[..n], &rest[n..])
        }
        None => return,
    };
    let Ok(v) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    if verify_inclusion(&v, Some(payload)) == Ok(true) {
        assert_inclusion_sound(&v, Some(payload));
    }
    if verify_inclusion(&v, None) == Ok(true) {
        assert_inclusion_sound(&v, None);
    }
    if verify_consistency(&v) == Ok(true) {
        assert_consistency_sound(&v);
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&sel, rest)) if sel >= 0x80 => {
            // running out of fuzz bytes mid-way ends the case early; what ran was checked
            let _ = structured(&mut Unstructured::new(rest));
        }
        _ => raw(data),
    }
});
