//! SHA-256 helpers and the MMR v2 domain-separated hashes (docs/formats.md):
//! `leaf = H(0x00‖payload)`, `node = H(0x01‖left‖right)`, `root = H(0x02‖peaks…)`,
//! empty root = 32 zero bytes. Hex is lowercase.
//!
//! SHA-256 is OpenSSL's libcrypto (the `openssl` crate's low-level `SHA256_*` calls), the
//! library the Python twin's `hashlib` uses: on a CPU with SHA-NI both it and the `sha2`
//! crate it replaced use the SHA extensions (the same ~0.8 µs for a request's 19 blocks
//! here); on one without (Xeons before Ice Lake, and valgrind's simulated CPU) OpenSSL's
//! vectorised path needs ~2,000 instructions a block where `sha2`'s portable Rust needed
//! ~3,500 (docs/rs_server.md, "SHA-256 from OpenSSL"). Linked statically from Debian's
//! libcrypto.a (.cargo/config.toml at the repository's root): nothing to install where the
//! extension or the rs-server binary runs.
use openssl::sha::Sha256;

pub type Hash = [u8; 32];

pub const LEAF_TAG: u8 = 0x00;
pub const NODE_TAG: u8 = 0x01;
pub const ROOT_TAG: u8 = 0x02;
pub const EMPTY_ROOT: Hash = [0u8; 32];

/// Plain SHA-256 of `data`.
#[inline]
pub fn sha256(data: &[u8]) -> Hash {
    // SHA256_Init/Update/Final, not the crate's one-shot `sha256`: OpenSSL 3's one-shot
    // `SHA256()` goes through EVP and fetches the algorithm from a provider on every call
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// Lowercase hex SHA-256 of `data` (the hashing twin of `hashlib.sha256(data).hexdigest()`).
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&sha256(data))
}

/// `H(0x00‖payload)`.
#[inline]
pub fn leaf_hash(payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(&[LEAF_TAG]);
    h.update(payload);
    h.finish()
}

/// `H(0x01‖left‖right)`: 65 bytes, two blocks, hashed from one buffer on the stack.
#[inline]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_TAG;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// `H(0x02‖peak_0‖…‖peak_k)`, or 32 zero bytes when there are no peaks.
pub fn root_of_peaks<'a>(peaks: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut it = peaks.into_iter().peekable();
    if it.peek().is_none() {
        return EMPTY_ROOT;
    }
    let mut h = Sha256::new();
    h.update(&[ROOT_TAG]);
    for p in it {
        h.update(p);
    }
    h.finish()
}

/// The hashing an MMR append does, and nothing else: one leaf hash per payload and, with
/// `with_nodes`, the `n - popcount(n)` 65-byte node hashes an MMR of n leaves computes —
/// no tree bookkeeping, no storage. Benchmarks time this as the SHA-256 bound. Returns a
/// fold of the results so the work cannot be optimised away.
pub fn hash_work<'a>(payloads: impl IntoIterator<Item = &'a [u8]>, with_nodes: bool) -> Hash {
    let mut acc = EMPTY_ROOT;
    let mut n: u64 = 0;
    for p in payloads {
        let leaf = leaf_hash(p);
        n += 1;
        if with_nodes {
            // The MMR closes one node per trailing one bit of the leaf's index.
            for _ in 0..(!(n - 1)).trailing_zeros() {
                acc = node_hash(&acc, &leaf);
            }
        }
        acc[0] ^= leaf[0];
    }
    acc
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of a 32-byte hash.
pub fn to_hex(h: &Hash) -> String {
    let mut hex = [0u8; 64];
    for (pair, b) in hex.chunks_exact_mut(2).zip(h) {
        pair[0] = HEX[(b >> 4) as usize];
        pair[1] = HEX[(b & 15) as usize];
    }
    std::str::from_utf8(&hex)
        .expect("hex digits are ASCII")
        .to_owned()
}

/// Parse exactly 64 lowercase hex digits (the only form the formats allow) into a hash.
pub fn from_hex(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn domain_separation() {
        let mut tagged = vec![0u8];
        tagged.extend_from_slice(b"x");
        assert_eq!(leaf_hash(b"x"), sha256(&tagged));
        let (l, r) = (sha256(b"l"), sha256(b"r"));
        let mut m = vec![1u8];
        m.extend_from_slice(&l);
        m.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), sha256(&m));
        assert_eq!(root_of_peaks([]), EMPTY_ROOT);
        let mut m = vec![2u8];
        m.extend_from_slice(&l);
        assert_eq!(root_of_peaks([&l]), sha256(&m));
    }

    #[test]
    fn hash_work_counts_like_an_mmr() {
        // n leaves close n - popcount(n) nodes: 100 leaves -> 97 nodes.
        let ps: Vec<[u8; 1]> = (0..100u8).map(|i| [i]).collect();
        let nodes: u64 = (0..100u64).map(|i| (!i).trailing_zeros() as u64).sum();
        assert_eq!(nodes, 100 - 100u64.count_ones() as u64);
        assert_ne!(
            hash_work(ps.iter().map(|p| &p[..]), true),
            hash_work(ps.iter().map(|p| &p[..]), false)
        );
    }

    #[test]
    fn tagged_hashes_equal_sha256_of_the_concatenation_for_every_short_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..300 {
            let mut tagged = vec![0u8];
            tagged.extend_from_slice(&data[..n]);
            assert_eq!(leaf_hash(&data[..n]), sha256(&tagged), "len {n}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let h = sha256(b"abc");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex(&to_hex(&h).to_uppercase()), None);
        assert_eq!(from_hex("00"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }
}
