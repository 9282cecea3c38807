//! gatewaylab-net: the HTTP/1 plumbing every native process shares (pure Rust, no PyO3).
//!
//! - [`server`]: the accept loop and per-connection settings (connection cap, header and
//!   read/idle timeouts, header buffer limit, graceful shutdown), the runtime builder and
//!   the termination signal. The gateway binary and the mock upstream both serve with it.
//! - [`client`]: one HTTP/1 connection (the load generator's per-worker connection) and a
//!   pooled upstream client with timeouts (the gateway binary's forwarder).
pub mod client;
pub mod server;
