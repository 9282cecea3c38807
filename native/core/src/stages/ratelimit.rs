//! Rate limit: two token buckets per key (requests/min, tokens/min), refilled continuously.
//!
//! The float arithmetic follows the Python twin (`gateway/stages/ratelimit.py`) operation
//! for operation, so both twins return bit-identical Retry-After values.
use std::cmp::Ordering;
use std::collections::HashMap;

/// Tokens a request costs. `Huge` stands for an integer beyond u64 (Python ints are unbounded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tokens {
    N(u64),
    Huge,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    #[error("RateLimiter: {name} for {key:?} must be an int >= 1, got {value}")]
    BadLimit {
        key: String,
        name: &'static str,
        value: i128,
    },
}

struct Limits {
    rpm: f64,
    tpm: f64,
    rrate: f64,
    trate: f64,
}

struct State {
    req: f64,
    tok: f64,
    last_ns: i128,
}

/// Keyed by the configured keys' ids (a handful, fixed at start): foldhash, not SipHash.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

pub struct RateLimiter {
    limits: Map<Limits>,
    state: Map<State>,
}

/// Exact comparison of a finite float with an unsigned integer (as Python compares them).
fn cmp_f_u(f: f64, n: Tokens) -> Ordering {
    let n = match n {
        Tokens::Huge => return Ordering::Less,
        Tokens::N(n) => n,
    };
    if f < 0.0 {
        return Ordering::Less;
    }
    if f >= 18446744073709551616.0 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match (t as u64).cmp(&n) {
        Ordering::Equal if f > t => Ordering::Greater,
        o => o,
    }
}

/// Python's `float(int)`: round to nearest, ties to even (Rust `as` does the same).
fn to_f(n: u64) -> f64 {
    n as f64
}

impl RateLimiter {
    /// `limits`: (key_id, requests_per_min, tokens_per_min); each limit an int >= 1.
    pub fn new<I, K>(limits: I) -> Result<Self, RateLimitError>
    where
        I: IntoIterator<Item = (K, i128, i128)>,
        K: Into<String>,
    {
        let mut out = Map::default();
        for (k, rpm, tpm) in limits {
            let k: String = k.into();
            for (name, v) in [("requests_per_min", rpm), ("tokens_per_min", tpm)] {
                if !(1..=(1i128 << 63)).contains(&v) {
                    return Err(RateLimitError::BadLimit {
                        key: k,
                        name,
                        value: v,
                    });
                }
            }
            let (rpm, tpm) = (rpm as f64, tpm as f64);
            out.insert(
                k,
                Limits {
                    rpm,
                    tpm,
                    rrate: rpm / 60.0,
                    trate: tpm / 60.0,
                },
            );
        }
        Ok(Self {
            limits: out,
            state: Map::default(),
        })
    }

    /// Whether `key_id` has limits (keys without limits are unlimited).
    pub fn is_limited(&self, key_id: &str) -> bool {
        self.limits.contains_key(key_id)
    }

    /// 0.0 if admitted (and both buckets debited); otherwise seconds until both buckets
    /// would admit the request (`inf` when it needs more tokens than the bucket holds).
    pub fn check(&mut self, key_id: &str, tokens: Tokens, now_ns: i128) -> f64 {
        let Some(lim) = self.limits.get(key_id) else {
            return 0.0;
        };
        let st = self.state.entry(key_id.to_string()).or_insert(State {
            req: lim.rpm,
            tok: lim.tpm,
            last_ns: now_ns,
        });
        if now_ns > st.last_ns {
            let elapsed = (now_ns - st.last_ns) as f64 / 1e9;
            let r = st.req + elapsed * lim.rrate;
            st.req = if r < lim.rpm { r } else { lim.rpm };
            let t = st.tok + elapsed * lim.trate;
            st.tok = if t < lim.tpm { t } else { lim.tpm };
            st.last_ns = now_ns;
        }
        let (req, tok) = (st.req, st.tok);
        let enough_tok = cmp_f_u(tok, tokens) != Ordering::Less;
        if req >= 1.0 && enough_tok {
            if let Tokens::N(n) = tokens {
                st.req = req - 1.0;
                st.tok = tok - to_f(n);
                return 0.0;
            }
        }
        let mut wait = 0.0f64;
        if req < 1.0 {
            let w = (1.0 - req) / lim.rrate;
            if w > wait {
                wait = w;
            }
        }
        if !enough_tok {
            // tokens > tpm, exactly: tpm is an integer-valued float.
            wait = match tokens {
                Tokens::Huge => f64::INFINITY,
                Tokens::N(n) if cmp_f_u(lim.tpm, Tokens::N(n)) == Ordering::Less => f64::INFINITY,
                Tokens::N(n) => {
                    let w = (to_f(n) - tok) / lim.trate;
                    if w > wait {
                        w
                    } else {
                        wait
                    }
                }
            };
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_full_and_refill() {
        let mut rl = RateLimiter::new([("k", 2, 100)]).unwrap();
        assert_eq!(rl.check("k", Tokens::N(10), 0), 0.0);
        assert_eq!(rl.check("k", Tokens::N(10), 0), 0.0);
        // Request bucket empty: one request refills in 60/2 = 30 s.
        assert_eq!(rl.check("k", Tokens::N(10), 0), 30.0);
        assert_eq!(rl.check("k", Tokens::N(10), 15_000_000_000), 15.0);
        assert_eq!(rl.check("k", Tokens::N(10), 30_000_000_000), 0.0);
    }

    #[test]
    fn token_bucket_and_infinity() {
        let mut rl = RateLimiter::new([("k", 1000, 60)]).unwrap();
        assert_eq!(rl.check("k", Tokens::N(60), 0), 0.0);
        assert_eq!(rl.check("k", Tokens::N(6), 0), 6.0);
        assert_eq!(rl.check("k", Tokens::N(61), 0), f64::INFINITY);
        assert_eq!(rl.check("k", Tokens::Huge, 0), f64::INFINITY);
        assert_eq!(rl.check("other", Tokens::Huge, 0), 0.0);
    }

    #[test]
    fn time_never_runs_backwards() {
        let mut rl = RateLimiter::new([("k", 1, 1000)]).unwrap();
        assert_eq!(rl.check("k", Tokens::N(0), 10_000_000_000), 0.0);
        assert_eq!(rl.check("k", Tokens::N(0), 0), 60.0);
        assert_eq!(rl.check("k", Tokens::N(0), 40_000_000_000), 30.0);
    }

    #[test]
    fn bad_limits() {
        assert!(RateLimiter::new([("k", 0, 1)]).is_err());
        assert!(RateLimiter::new([("k", 1, -5)]).is_err());
    }

    #[test]
    fn exact_float_int_comparison() {
        assert_eq!(cmp_f_u(2.5, Tokens::N(2)), Ordering::Greater);
        assert_eq!(cmp_f_u(2.0, Tokens::N(2)), Ordering::Equal);
        assert_eq!(
            cmp_f_u(9007199254740992.0, Tokens::N(9007199254740993)),
            Ordering::Less
        );
        assert_eq!(cmp_f_u(-0.5, Tokens::N(0)), Ordering::Less);
    }
}
