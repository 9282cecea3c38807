//! Inclusion and consistency proof verification on any JSON: never panics, and a proof that
//! verifies must name a root the verifier recomputed (so garbage never verifies twice over).
#![no_main]
use gatewaylab_core::mmr::{verify_consistency, verify_inclusion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // the first byte splits a payload (for inclusion) from the proof JSON
    let (payload, json) = match data.split_first() {
        Some((&n, rest)) => {
            let n = (n as usize).min(rest.len());
            (&rest[..n], &rest[n..])
        }
        None => return,
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let _ = verify_inclusion(&v, Some(payload));
    let _ = verify_inclusion(&v, None);
    let _ = verify_consistency(&v);
});
