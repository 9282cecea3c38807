//! gatewaylab-server: rung 3 of the Rust ladder, the standalone gateway binary: the engine
//! (native/engine) served by hyper.
//!
//! - [`cli`]: the one flag, `--spec FILE` (gateway/config.py's normalized config, the engine's
//!   options and the server's, written by gateway/rs_server.py)
//! - [`http`]: the shell: routes, the raw-head and header guards, body limits, the engine's
//!   replies on the wire, serve until SIGTERM and drain
//! - [`body`]: the response body (whole, or a stream fed by the engine's SSE relay)
//! - [`sidecar`]: Python `pre_call` plugins in a sidecar process (the engine's `PreCall`)
pub mod body;
pub mod cli;
pub mod http;
pub mod sidecar;
