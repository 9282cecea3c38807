//! gatewaylab-core: the Rust twins' logic, free of PyO3 so that `cargo test` needs no interpreter.
//! Every format here is defined once in docs/formats.md.
pub mod entropy;
pub mod hash;
pub mod mmr;
pub mod node_store;
pub mod record;
pub mod wal;
pub mod auth;
pub mod waf;
pub mod ratelimit;
pub mod adapter;
pub mod pipeline;
pub mod job;
pub mod ledger;
pub mod shards;
pub mod router;
