//! The combined root over the shards of a sharded ledger ("shards v1", docs/workers.md; the
//! Python twin is `gateway/audit/shards.py`, test vectors in `tests/vectors/shards_v1.json`):
//!
//! `combined = SHA-256(0x03 ‖ u32be(N) ‖ u64be(c_0) ‖ r_0 ‖ … ‖ u64be(c_{N-1}) ‖ r_{N-1})`
use crate::hash::{sha256, Hash};

/// The domain tag of a combined root (after the MMR's 0x00 leaf, 0x01 node, 0x02 root).
pub const COMBINED_TAG: u8 = 0x03;

/// The combined root over `(count, root)` of every shard, in shard order.
pub fn combined_root(shards: &[(u64, Hash)]) -> Hash {
    let mut buf = Vec::with_capacity(5 + shards.len() * 40);
    buf.push(COMBINED_TAG);
    buf.extend_from_slice(&(shards.len() as u32).to_be_bytes());
    for (count, root) in shards {
        buf.extend_from_slice(&count.to_be_bytes());
        buf.extend_from_slice(root);
    }
    sha256(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{from_hex, to_hex};
    use crate::mmr::Mmr;

    #[test]
    fn vectors() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/vectors/shards_v1.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        for case in v["cases"].as_array().unwrap() {
            let mut rows = Vec::new();
            for (k, s) in case["shards"].as_array().unwrap().iter().enumerate() {
                let n = s["count"].as_u64().unwrap();
                let mut m = Mmr::new();
                for i in 0..n {
                    m.append(format!("s{k}-{i}").as_bytes()).unwrap();
                }
                assert_eq!(to_hex(&m.root()), s["root"].as_str().unwrap());
                rows.push((n, from_hex(s["root"].as_str().unwrap()).unwrap()));
            }
            assert_eq!(
                to_hex(&combined_root(&rows)),
                case["combined"].as_str().unwrap()
            );
        }
    }
}
