//! gatewaylab-core: the Rust twins' logic, free of PyO3 so that `cargo test` needs no interpreter.
//! Every format here is defined once in docs/formats.md.
pub mod adapter;
pub mod auth;
pub mod entropy;
pub mod hash;
pub mod job;
pub mod ledger;
pub mod mmr;
pub mod node_store;
pub mod pipeline;
pub mod ratelimit;
pub mod record;
pub mod router;
pub mod shards;
pub mod waf;
pub mod wal;
