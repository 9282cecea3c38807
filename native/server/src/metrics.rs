//! Gateway metrics in Prometheus text format, with the Python gateway's names and buckets
//! (`gateway/metrics.py`): `gateway_requests_total{route,status}`,
//! `gateway_stage_seconds{stage}` (the Python gateway's stages, plus `plugins`), `gateway_audit_lag_seconds`, and the counters. Observations are relaxed atomic
//! adds: no lock on the request path, whichever worker thread serves it.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// seconds, as gateway/metrics.py's _BUCKETS
const BUCKETS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKET_LABELS: [&str; 22] = [
    "1e-06", "2.5e-06", "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
    "10.0",
];
/// gateway/metrics.py's STAGES, then the plugin call (rs-server's sidecar)
pub const STAGES: [&str; 6] = ["decide", "forward", "respond", "spawn", "total", "plugins"];
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

pub struct Histogram {
    counts: [AtomicU64; 23],
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
        // bisect_left over the bucket bounds (a value equal to a bound falls in that bucket)
        let i = BUCKETS.partition_point(|&b| b < s);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        let sep = if label.is_empty() { "" } else { "," };
        let mut acc = 0u64;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            acc += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"{le}\"}} {acc}.0");
        }
        acc += self.counts[22].load(Relaxed);
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
    pub stage: [Histogram; STAGES.len()],
    pub audit_lag: Histogram,
    // sized by the name list, so a counter added there cannot fall off the end
    counters: [AtomicU64; COUNTERS.len()],
}

pub fn stage_index(name: &str) -> usize {
    STAGES
        .iter()
        .position(|s| *s == name)
        .expect("a known stage")
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

    pub fn incr(&self, counter: &str) {
        let i = COUNTERS
            .iter()
            .position(|c| *c == counter)
            .expect("a known counter");
        self.counters[i].fetch_add(1, Relaxed);
    }

    pub fn add(&self, counter: &str, n: u64) {
        let i = COUNTERS
            .iter()
            .position(|c| *c == counter)
            .expect("a known counter");
        self.counters[i].fetch_add(n, Relaxed);
    }

    pub fn set(&self, counter: &str, n: u64) {
        let i = COUNTERS
            .iter()
            .position(|c| *c == counter)
            .expect("a known counter");
        self.counters[i].store(n, Relaxed);
    }

    pub fn get(&self, counter: &str) -> u64 {
        let i = COUNTERS
            .iter()
            .position(|c| *c == counter)
            .expect("a known counter");
        self.counters[i].load(Relaxed)
    }

    pub fn observe(&self, stage: &str, ns: u64) {
        self.stage[stage_index(stage)].observe_ns(ns);
    }

    pub fn render(&self, gauges: &[(&str, f64)]) -> String {
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

/// `gateway_stage_runs_total{stage}`: how many times each stage ran, as the Python rungs
/// render it (`gateway/metrics.py`): the core pipeline's counters
/// (`gatewaylab_core::pipeline::RUN_STAGES`), then `audit`, the records the ledger wrote.
pub fn render_stage_runs(out: &mut String, runs: &[(&str, u64)]) {
    out.push_str("# HELP gateway_stage_runs_total times each stage ran (audit: records written)\n");
    out.push_str("# TYPE gateway_stage_runs_total counter\n");
    for (name, n) in runs {
        let _ = writeln!(out, "gateway_stage_runs_total{{stage=\"{name}\"}} {n}.0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_python_names_and_cumulative_buckets() {
        let m = Metrics::default();
        m.count_request("/v1/chat/completions", 200);
        m.observe("total", 12_000);
        m.observe("total", 1_000);
        m.incr("waf_blocks");
        let t = m.render(&[("audit_queue_depth", 3.0)]);
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
        let mut t = String::new();
        render_stage_runs(&mut t, &[("guard", 3), ("audit", 2)]);
        assert_eq!(
            t,
            "# HELP gateway_stage_runs_total times each stage ran (audit: records written)\n\
             # TYPE gateway_stage_runs_total counter\n\
             gateway_stage_runs_total{stage=\"guard\"} 3.0\n\
             gateway_stage_runs_total{stage=\"audit\"} 2.0\n"
        );
    }

    #[test]
    fn every_counter_can_be_set_and_renders() {
        let m = Metrics::default();
        for (k, name) in COUNTERS.iter().enumerate() {
            m.set(name, k as u64 + 1);
        }
        let t = m.render(&[]);
        for (k, name) in COUNTERS.iter().enumerate() {
            assert!(
                t.contains(&format!("gateway_{name}_total {}.0\n", k + 1)),
                "{name}: {t}"
            );
        }
    }
}
