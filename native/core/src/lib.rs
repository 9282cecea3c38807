//! gatewaylab-core: the Rust twins' logic, free of PyO3 so that `cargo test` needs no interpreter.
//! Every format here is defined once in docs/formats.md.
pub mod entropy;
pub mod errors;
pub mod hash;
pub mod job;
pub mod ledger;
pub mod mmr;
pub mod node_store;
pub mod pipeline;
pub mod record;
pub mod router;
pub mod sched;
pub mod shards;
pub mod stages;
pub mod wal;
