//! The gateway's metric names, once for every rung, and the Prometheus text the Rust rungs
//! write: `gateway_requests_total{route,status}`, `gateway_stage_seconds{stage}`,
//! `gateway_audit_lag_seconds`, one `gateway_<name>_total` per [`COUNTERS`] entry, and the
//! gauges, and `gateway_stage_runs_total{stage}` ([`RUN_STAGES`] and [`RUNS_AUDIT`]). The
//! Python rungs read [`COUNTERS`], [`STAGES`], [`BUCKETS`], [`RUN_STAGES`] and [`RUNS_AUDIT`]
//! through the extension (`gateway._native`, read by gateway/metrics.py), so a name exists in
//! one list.
//!
//! Observations are relaxed atomic adds: no lock on the request path, whichever worker
//! thread serves it.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Histogram bucket bounds, seconds (fine at the low end where the stages live).
pub const BUCKETS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// [`BUCKETS`] as Python's `repr()` writes them (the `le` labels prometheus_client writes).
const BUCKET_LABELS: [&str; 22] = [
    "1e-06", "2.5e-06", "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
    "10.0",
];

/// The pipeline stages whose runs are counted, `gateway_stage_runs_total{stage}`: the core
/// pipeline's list (what either pipeline twin counts; `ratelimit` only checks against a key
/// with limits, `forward` upstream answers handed to respond or the relay, `respond` whole
/// answers), then [`RUNS_AUDIT`].
pub use gatewaylab_core::pipeline::RUN_STAGES;
/// The last `gateway_stage_runs_total` label: the audit records the ledger wrote.
pub const RUNS_AUDIT: &str = "audit";

/// Hot-path stages: `decide` (guard to adapter, the pure pipeline), `forward` (the upstream
/// exchange), `respond` (the response adapter), `spawn` (the audit hand-off), `total`, and
/// `plugins` (rs-server's sidecar call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Decide,
    Forward,
    Respond,
    Spawn,
    Total,
    Plugins,
}

/// The stage names, in [`Stage`]'s order.
pub const STAGES: [&str; 6] = ["decide", "forward", "respond", "spawn", "total", "plugins"];

impl Stage {
    pub const ALL: [Stage; STAGES.len()] = [
        Stage::Decide,
        Stage::Forward,
        Stage::Respond,
        Stage::Spawn,
        Stage::Total,
        Stage::Plugins,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    BackgroundSpawned,
    BackgroundDropped,
    AuditRecords,
    AuditFailures,
    UpstreamErrors,
    WafBlocks,
    StreamsAbandoned,
    PluginErrors,
    RequestsShed,
}

/// The counter names, in [`Counter`]'s order (a unit test holds them together).
pub const COUNTERS: [&str; 9] = [
    "background_spawned",
    "background_dropped",
    "audit_records",
    "audit_failures",
    "upstream_errors",
    "waf_blocks",
    "streams_abandoned",
    "plugin_errors",
    "requests_shed",
];

impl Counter {
    pub const ALL: [Counter; COUNTERS.len()] = [
        Counter::BackgroundSpawned,
        Counter::BackgroundDropped,
        Counter::AuditRecords,
        Counter::AuditFailures,
        Counter::UpstreamErrors,
        Counter::WafBlocks,
        Counter::StreamsAbandoned,
        Counter::PluginErrors,
        Counter::RequestsShed,
    ];

    pub fn name(self) -> &'static str {
        COUNTERS[self as usize]
    }
}

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe_ns(&self, ns: u64) {
        let s = ns as f64 / 1e9;
        // bisect_left over the bounds (a value equal to a bound falls in that bucket)
        let i = BUCKETS.partition_point(|&b| b < s);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// (per-bucket counts, the last one past every bound; sum in ns)
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        (
            self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            self.sum_ns.load(Relaxed),
        )
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        let sep = if label.is_empty() { "" } else { "," };
        let mut acc = 0u64;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            acc += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"{le}\"}} {acc}.0");
        }
        acc += self.counts[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"+Inf\"}} {acc}.0");
        let braces = if label.is_empty() {
            String::new()
        } else {
            format!("{{{label}}}")
        };
        let _ = writeln!(out, "{name}_count{braces} {acc}.0");
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            float(self.sum_ns.load(Relaxed) as f64 / 1e9)
        );
    }
}

fn float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    stage: [Histogram; STAGES.len()],
    pub audit_lag: Histogram,
    counters: [AtomicU64; COUNTERS.len()],
}

impl Metrics {
    /// `route` comes from a fixed set (never the raw path), so the label set is bounded.
    pub fn count_request(&self, route: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_default() += 1;
    }

    pub fn incr(&self, c: Counter) {
        self.counters[c as usize].fetch_add(1, Relaxed);
    }

    pub fn set(&self, c: Counter, n: u64) {
        self.counters[c as usize].store(n, Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Relaxed)
    }

    pub fn observe(&self, stage: Stage, ns: u64) {
        self.stage[stage as usize].observe_ns(ns);
    }

    pub fn stage(&self, stage: Stage) -> &Histogram {
        &self.stage[stage as usize]
    }

    /// The whole page; `gauges` and the pipeline's stage `runs` (in [`RUN_STAGES`]' order)
    /// are read by the caller at scrape time.
    pub fn render(&self, gauges: &[(&str, f64)], runs: &[u64; RUN_STAGES.len()]) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP gateway_requests_total HTTP requests by route and status\n");
        out.push_str("# TYPE gateway_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}.0"
            );
        }
        out.push_str("# HELP gateway_stage_seconds hot-path stage latency\n# TYPE gateway_stage_seconds histogram\n");
        for (name, h) in STAGES.iter().zip(self.stage.iter()) {
            h.render(
                &mut out,
                "gateway_stage_seconds",
                &format!("stage=\"{name}\""),
            );
        }
        out.push_str("# HELP gateway_audit_lag_seconds request end -> ledger append\n");
        out.push_str("# TYPE gateway_audit_lag_seconds histogram\n");
        self.audit_lag
            .render(&mut out, "gateway_audit_lag_seconds", "");
        for (name, c) in COUNTERS.iter().zip(self.counters.iter()) {
            let help = name.replace('_', " ");
            let _ = writeln!(
                out,
                "# HELP gateway_{name}_total {help}\n# TYPE gateway_{name}_total counter"
            );
            let _ = writeln!(out, "gateway_{name}_total {}.0", c.load(Relaxed));
        }
        // as gateway/metrics.py renders it: the pipeline's counts, then the records written
        out.push_str(
            "# HELP gateway_stage_runs_total times each stage ran (audit: records written)\n",
        );
        out.push_str("# TYPE gateway_stage_runs_total counter\n");
        let audit = self.get(Counter::AuditRecords);
        for (name, n) in RUN_STAGES.iter().zip(runs).chain([(&RUNS_AUDIT, &audit)]) {
            let _ = writeln!(out, "gateway_stage_runs_total{{stage=\"{name}\"}} {n}.0");
        }
        for (name, v) in gauges {
            let help = name.replace('_', " ");
            let _ = writeln!(
                out,
                "# HELP gateway_{name} {help}\n# TYPE gateway_{name} gauge\ngateway_{name} {}",
                float(*v)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_python_names_and_cumulative_buckets() {
        let m = Metrics::default();
        m.count_request("/v1/chat/completions", 200);
        m.observe(Stage::Total, 12_000);
        m.observe(Stage::Total, 1_000);
        m.incr(Counter::WafBlocks);
        let t = m.render(&[("audit_queue_depth", 3.0)], &[0; RUN_STAGES.len()]);
        assert!(t.contains(
            "gateway_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1.0\n"
        ));
        assert!(
            t.contains("gateway_stage_seconds_bucket{stage=\"total\",le=\"1e-06\"} 1.0\n"),
            "{t}"
        );
        assert!(t.contains("gateway_stage_seconds_bucket{stage=\"total\",le=\"2.5e-05\"} 2.0\n"));
        assert!(t.contains("gateway_stage_seconds_count{stage=\"total\"} 2.0\n"));
        assert!(t.contains("gateway_waf_blocks_total 1.0\n"));
        assert!(t.contains("gateway_audit_queue_depth 3.0\n"));
    }

    #[test]
    fn stage_runs_render_as_one_family() {
        let m = Metrics::default();
        m.set(Counter::AuditRecords, 2);
        let mut runs = [0; RUN_STAGES.len()];
        runs[0] = 3;
        let t = m.render(&[], &runs);
        let mut want = String::from(
            "# HELP gateway_stage_runs_total times each stage ran (audit: records written)\n\
             # TYPE gateway_stage_runs_total counter\n\
             gateway_stage_runs_total{stage=\"guard\"} 3.0\n",
        );
        for s in &RUN_STAGES[1..] {
            want.push_str(&format!("gateway_stage_runs_total{{stage=\"{s}\"}} 0.0\n"));
        }
        want.push_str("gateway_stage_runs_total{stage=\"audit\"} 2.0\n");
        assert!(t.contains(&want), "{t}");
    }

    #[test]
    fn every_counter_has_its_name_and_renders() {
        let m = Metrics::default();
        for (k, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, k, "Counter::ALL is in the enum's order");
            m.set(*c, k as u64 + 1);
        }
        let t = m.render(&[], &[0; RUN_STAGES.len()]);
        for (k, c) in Counter::ALL.iter().enumerate() {
            assert!(
                t.contains(&format!("gateway_{}_total {}.0\n", c.name(), k + 1)),
                "{}: {t}",
                c.name()
            );
        }
        for (k, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, k, "Stage::ALL is in the enum's order");
        }
    }
}
