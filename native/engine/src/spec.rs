//! What an engine is built from: the normalized configuration (`gateway/config.py`:
//! `Config.normalized()`, the one validator of every rung's config) and the engine's
//! options (`gateway/config.py`: `engine_spec`). Nothing is checked again here: serde refuses
//! an unknown field or a wrong type, which only a caller out of step with gateway/config.py
//! can send; every value a user typed was checked, with its message, in Python.
use gatewaylab_core::entropy::PySum;
use gatewaylab_core::pipeline::PipelineConfig;
use serde::Deserialize;

/// `{"config": ..., "engine": ...}`: what `RsCore(spec_json)` and the rs-server binary read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub config: Config,
    pub engine: Options,
}

impl Spec {
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("engine spec: {e}"))
    }
}

/// The normalized configuration: every field the Rust rungs use, defaults filled in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub ledger: Ledger,
    pub limits: Limits,
    pub plugins: Plugins,
    pub tracing: Tracing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// answer, then record (docs/claims.md `answer-first`)
    Background,
    /// the answer waits until its record is durable under the fsync policy
    Durable,
}

impl Ack {
    pub fn label(self) -> &'static str {
        match self {
            Ack::Background => "background",
            Ack::Durable => "durable",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub dir: String,
    /// always | group | none
    pub fsync: String,
    pub group_delay_ms: f64,
    pub ack: Ack,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub upstream_timeout_s: f64,
    pub upstream_pool: usize,
    /// chat requests served at once; beyond it 503 `overloaded`
    pub max_in_flight: u64,
}

/// Python `pre_call` hooks; the engine calls them through [`crate::PreCall`], which the
/// rs-server binary implements with its sidecar (rs-core refuses them: gateway/ladder.py).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    pub pre_call: Vec<String>,
    pub timeout_ms: f64,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TracingKind {
    Off,
    On,
    Sampled,
}

/// `tracing.mode` as gateway/tracing.py parsed it (`sampled:R`: kind sampled, ratio R).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    pub mode: TracingKind,
    pub ratio: f64,
    pub endpoint: String,
}

impl Tracing {
    pub fn mode(&self) -> gatewaylab_trace::Mode {
        use gatewaylab_trace::Mode;
        match self.mode {
            TracingKind::Off => Mode::Off,
            TracingKind::On => Mode::On,
            TracingKind::Sampled => Mode::Sampled(self.ratio),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Rung {
    #[serde(rename = "rs-core")]
    RsCore,
    #[serde(rename = "rs-server")]
    RsServer,
}

impl Rung {
    pub fn label(self) -> &'static str {
        match self {
            Rung::RsCore => "rs-core",
            Rung::RsServer => "rs-server",
        }
    }
}

/// How the Python twin's interpreter sums floats (the entropy in an audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatSum {
    /// before 3.12
    Plain,
    /// 3.12 on
    Neumaier,
}

impl From<FloatSum> for PySum {
    fn from(f: FloatSum) -> PySum {
        match f {
            FloatSum::Plain => PySum::Plain,
            FloatSum::Neumaier => PySum::Neumaier,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub rung: Rung,
    /// Tokio worker threads serving requests (`--threads`)
    pub threads: usize,
    pub float_sum: FloatSum,
    /// a pause before each audit batch, so tests can stop a gateway with work queued
    /// ($GATEWAYLAB_LEDGER_DELAY_MS, read by gateway/config.py as on every rung)
    pub ledger_delay_ms: f64,
}
