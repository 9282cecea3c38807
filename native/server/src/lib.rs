//! gatewaylab-server: rung 3 of the Rust ladder, the standalone gateway binary.
//!
//! - [`config`]: the YAML config, read and checked as `gateway/config.py` does
//! - [`cli`]: the flags (`gatewaylab serve`'s, where they apply)
//! - [`body`]: the response body (whole, or a stream fed by the SSE relay)
//! - [`app`]: routes, the request path around the core pipeline's `decide`, the ledger
//! - [`metrics`]: Prometheus text with the Python gateway's names
//! - [`sidecar`]: Python `pre_call` plugins in a sidecar process
pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod sidecar;
pub mod unit;
