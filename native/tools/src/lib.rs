//! gatewaylab-tools: the native mock upstream and load generator (pure Rust, no PyO3).
//!
//! - [`mock`]: an OpenAI/Anthropic-shaped upstream with injectable latency, token pacing,
//!   errors, dropped connections and server-wide stalls; `/mock/stats` counts what it saw.
//! - [`load`]: a closed-loop / open-loop HTTP/1.1 load generator with HDR histograms,
//!   coordinated-omission correction (open loop), per-second series and errors by kind.
pub mod load;
pub mod mock;
pub mod timer;
