//! API-key auth: bearer secrets are hashed (SHA-256) and compared in constant time against
//! the stored hashes, so neither the secrets nor a timing side channel leak.
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("ApiKeyAuth: hash for key {0:?} is not 64 lowercase hex digits")]
    BadHash(String),
}

pub struct ApiKeyAuth {
    /// (key_id, sha256 digest of the secret), in the order given.
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeyAuth {
    /// `keys`: (key_id, lowercase hex sha256 of the secret).
    pub fn new<I, K, H>(keys: I) -> Result<Self, AuthError>
    where
        I: IntoIterator<Item = (K, H)>,
        K: Into<String>,
        H: AsRef<str>,
    {
        let mut out = Vec::new();
        for (k, h) in keys {
            let k = k.into();
            let mut d = [0u8; 32];
            let h = h.as_ref();
            let lower_hex = h
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if h.len() != 64 || !lower_hex || hex::decode_to_slice(h, &mut d).is_err() {
                return Err(AuthError::BadHash(k));
            }
            out.push((k, d));
        }
        Ok(Self { keys: out })
    }

    /// Raw `Authorization` header value -> key_id, or None when missing, not a Bearer
    /// token, or unknown. Every stored key is compared (no early exit), in constant time.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let token = bearer_token(authorization?)?;
        let digest = crate::hash::sha256(token);
        let mut found: Option<&str> = None;
        for (id, h) in &self.keys {
            if bool::from(h.ct_eq(&digest)) && found.is_none() {
                found = Some(id.as_str());
            }
        }
        found
    }
}

/// The header value split at the first ASCII space; the scheme must equal "bearer" ignoring
/// ASCII case; the token is the rest with ASCII whitespace (" \t\n\r\x0b\x0c") stripped
/// from both ends and must be non-empty (exactly the Python twin's `partition`/`strip`).
pub fn bearer_token(h: &[u8]) -> Option<&[u8]> {
    let sp = h.iter().position(|&b| b == b' ')?;
    if !h[..sp].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let t = strip(&h[sp + 1..]);
    if t.is_empty() {
        None
    } else {
        Some(t)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn strip(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ws(*first) {
            b = rest
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_ws(*last) {
            b = rest
        } else {
            break;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;

    fn auth() -> ApiKeyAuth {
        ApiKeyAuth::new([
            ("team-a", sha256_hex(b"sk-alpha")),
            ("team-b", sha256_hex(b"sk-beta")),
        ])
        .unwrap()
    }

    #[test]
    fn accepts_known_keys() {
        let a = auth();
        assert_eq!(a.check(Some(b"Bearer sk-alpha")), Some("team-a"));
        assert_eq!(a.check(Some(b"bearer   sk-beta \r\n")), Some("team-b"));
        assert_eq!(a.check(Some(b"BEARER sk-alpha")), Some("team-a"));
    }

    #[test]
    fn rejects_missing_wrong_or_malformed() {
        let a = auth();
        for h in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic sk-alpha",
            b"Bearersk-alpha",
            b"Bearer sk-alphax",
            b"sk-alpha",
            b" Bearer sk-alpha",
            b"Bearer\tsk-alpha",
        ] {
            assert_eq!(a.check(Some(h)), None, "{:?}", String::from_utf8_lossy(h));
        }
        assert_eq!(a.check(None), None);
    }

    #[test]
    fn bad_stored_hash_is_an_error() {
        assert_eq!(
            ApiKeyAuth::new([("k", "abc")]).err(),
            Some(AuthError::BadHash("k".into()))
        );
        assert!(ApiKeyAuth::new([("k", "zz".repeat(32))]).is_err());
        assert!(ApiKeyAuth::new([("k", sha256_hex(b"x").to_uppercase())]).is_err());
    }
}
