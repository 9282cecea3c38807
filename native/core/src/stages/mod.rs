//! The hot-path stages (the Rust twins of gateway/stages/): the smuggling guard, auth, the
//! WAF, the rate limiter and the adapter. The forwarder is I/O: `native/net`'s client,
//! driven by the engine (native/engine).
pub mod adapter;
pub mod auth;
pub mod guard;
pub mod ratelimit;
pub mod waf;
