//! gatewaylab-engine: the request path of the Rust rungs, written once.
//!
//! rs-core (rung 2) binds it behind the Python shell (`native/py/src/engine.rs`: requests
//! cross in through a batched submit and replies come back through an eventfd queue);
//! rs-server (rung 3) serves it from the binary (`native/server`: hyper). So the step from
//! rung 2 to rung 3 changes one thing, the shell: both decide with the same core pipeline,
//! forward with the same client (`native/net`), relay, audit and answer the operational
//! endpoints with the same code, and a fix lands once.
//!
//! Why a crate of its own rather than a module of `gatewaylab-core`: the core holds the
//! twins' pure logic (no I/O, no clocks, no runtime) and is what the fuzz targets and the
//! parity tests exercise; the engine is the I/O around it (Tokio, hyper's client, the ledger
//! thread, OpenTelemetry export, Unix control sockets). Keeping them apart keeps the core's
//! dependency set and its `cargo test` small, and puts the engine beside `net` and `trace`,
//! the other I/O crates it builds on. No PyO3 here: the binding crate converts, counts GIL
//! time and crosses the eventfd, nothing more.
//!
//! Like `core::router::drive` (clock, send and sleep passed in), the engine is generic over
//! where its answers go: [`Engine::chat`] returns a [`Reply`] (a whole answer with its audit
//! [`Handoff`], or a stream's chunk channel) and each shell completes it its own way.
//!
//! - [`spec`]: what an engine is built from (gateway/config.py's normalized config + options)
//! - [`engine`]: admission, decide, plugins, forward, respond, audit hand-off or durable wait
//! - [`forward`]: one attempt on the net client, or a model group's through the router
//! - [`relay`]: the SSE relay task
//! - [`ops`]: health, metrics, models, the audit API (one ledger or a sharded unit's)
//! - [`metrics`]: the metric names of every rung (counters, stages, buckets) and their text
//! - [`unit`]: a worker's control socket and its peers' (docs/workers.md)
pub mod engine;
pub mod forward;
pub mod metrics;
pub mod ops;
pub mod relay;
pub mod spec;
pub mod unit;

pub use engine::{BuildError, Engine, Handoff, Permit, PreCall, Reply, Verdict};
pub use spec::Spec;
