//! The operational endpoints, as answers (status and JSON or text body) a shell writes out:
//! `/health`, `/metrics`, `/v1/models`, `/audit/root`, `/audit/proof/{index}` and
//! `/audit/consistency?old=M`, over one ledger or, for a worker of a sharded unit, every
//! shard's (the control protocol of crate::unit; docs/workers.md). Their answers are the
//! Python gateway's (`gateway/app.py`): the same statuses, codes and messages.
use std::sync::atomic::Ordering::Relaxed;

use gatewaylab_core::errors::{error_body, py_repr};
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::metrics::{Counter, RUN_STAGES};
use crate::unit::Unit;

/// An endpoint's answer: status, content type, body.
pub struct OpAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub const JSON: &str = "application/json";
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn json_answer(status: u16, body: Vec<u8>) -> OpAnswer {
    OpAnswer {
        status,
        content_type: JSON,
        body,
    }
}

fn error(status: u16, message: &str, code: &str) -> OpAnswer {
    json_answer(status, error_body(status, message, code))
}

/// The audit endpoints' indexes (/audit/proof/{index}, ?old=, ?shard=; gateway/app.py
/// index_digits): ASCII digits only, as many as the client likes, without their leading
/// zeros; None (400) for a sign, space, `_`, letter or nothing. A well-formed number beyond
/// the ledger is out of range (404 / 400 old_out_of_range), however many digits.
pub fn index_digits(raw: &str) -> Option<&str> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = raw.trim_start_matches('0');
    Some(if t.is_empty() { "0" } else { t })
}

/// The index as the ledger takes it (i64, gateway/app.py INDEX_MAX); None beyond.
pub fn index_value(digits: &str) -> Option<u64> {
    digits.parse::<i64>().ok().map(|n| n as u64)
}

/// The MMR's words for an index beyond the ledger (gateway/app.py out_of_range).
fn out_of_range(inclusion: bool, digits: &str, count: u64) -> String {
    let what = if inclusion { "leaf index" } else { "old count" };
    format!("{what} {digits} out of range for an MMR of {count} leaves")
}

/// `parse_qs(query, keep_blank_values=True)[name][0]`
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k, true) == name).then(|| percent_decode(v, true))
    })
}

/// %XX escapes; `+` is a space in a query (form encoding, as parse_qs reads it) and itself in
/// a path (as the ASGI servers give it).
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is being proved, and the answers for an index beyond the ledger or malformed.
struct ProofKind {
    inclusion: bool,
    what: &'static str,
    invalid_code: &'static str,
    range_status: u16,
    range_code: &'static str,
}

const INCLUSION: ProofKind = ProofKind {
    inclusion: true,
    what: "leaf index",
    invalid_code: "invalid_index",
    range_status: 404,
    range_code: "index_out_of_range",
};
const CONSISTENCY: ProofKind = ProofKind {
    inclusion: false,
    what: "'old'",
    invalid_code: "invalid_old",
    range_status: 400,
    range_code: "old_out_of_range",
};

impl ProofKind {
    fn op(&self) -> &'static str {
        if self.inclusion {
            "inclusion"
        } else {
            "consistency"
        }
    }
}

/// The CPUs this process may run on (its affinity), for /health.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it for this process
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

impl Engine {
    fn root_doc(&self) -> Value {
        let (count, root, durable) = self.root();
        json!({"count": count, "root": root, "durable_count": durable})
    }

    /// An inclusion ("inclusion", leaf n) or consistency ("consistency", old n) proof.
    pub fn prove(&self, inclusion: bool, n: u64) -> Result<Value, String> {
        let led = self.ledger.ledger();
        let out = if inclusion {
            led.inclusion_proof(n).map(|p| p.to_json())
        } else {
            led.consistency_proof(n).map(|p| p.to_json())
        };
        out.map_err(|e| e.to_string())
    }

    /// The control protocol's answer (crate::unit; gateway.workers.Peers._local).
    pub fn control_answer(&self, req: &Value) -> Value {
        let op = req.get("op").and_then(|v| v.as_str()).unwrap_or("");
        match op {
            "root" => json!({"ok": self.root_doc()}),
            "inclusion" | "consistency" => {
                let inclusion = op == "inclusion";
                let n = req.get("n").and_then(|v| v.as_i64()).unwrap_or(-1);
                let out = match u64::try_from(n) {
                    Err(_) => Err(out_of_range(inclusion, &n.to_string(), self.root().0)),
                    Ok(n) => self.prove(inclusion, n),
                };
                match out {
                    Ok(proof) => json!({"ok": {"proof": proof, "root": self.root_doc()}}),
                    Err(m) => json!({"error": m, "index_error": true}),
                }
            }
            other => json!({"error": format!("unknown op {other:?}")}),
        }
    }

    async fn ask(&self, unit: &Unit, k: usize, req: &Value) -> Value {
        if k == unit.index {
            self.control_answer(req)
        } else {
            unit.ask(k, req).await
        }
    }

    /// Every shard's state, or the 503 that names the shards not answering.
    async fn shard_states(&self, unit: &Unit, skip: Option<usize>) -> Result<Vec<Value>, OpAnswer> {
        let req = json!({"op": "root"});
        let answers =
            futures_util::future::join_all((0..unit.count).map(|k| self.ask(unit, k, &req))).await;
        let down: Vec<String> = answers
            .iter()
            .enumerate()
            .filter(|(k, a)| Some(*k) != skip && a.get("ok").is_none_or(|v| v.is_null()))
            .map(|(k, a)| {
                let why = a
                    .get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or("no ledger");
                format!("shard {k}: {why}")
            })
            .collect();
        if !down.is_empty() {
            return Err(error(
                503,
                &format!("the combined root needs every shard; {}", down.join("; ")),
                "shard_unavailable",
            ));
        }
        Ok(answers.into_iter().map(|mut a| a["ok"].take()).collect())
    }

    /// The combined root over shard rows (core `shards`, "shards v1").
    fn combined(rows: &[Value]) -> String {
        use gatewaylab_core::hash::{from_hex, to_hex};
        let pairs: Vec<(u64, gatewaylab_core::hash::Hash)> = rows
            .iter()
            .map(|r| {
                let root = r["root"].as_str().and_then(from_hex).unwrap_or([0u8; 32]);
                (r["count"].as_u64().unwrap_or(0), root)
            })
            .collect();
        to_hex(&gatewaylab_core::shards::combined_root(&pairs))
    }

    fn sharded(&self) -> Option<&Unit> {
        self.unit.as_ref().filter(|u| u.sharded)
    }

    /// GET /audit/root: the ledger's root; sharded, every shard's and the combined root.
    pub async fn audit_root(&self) -> OpAnswer {
        let Some(unit) = self.sharded() else {
            let (count, root, durable) = self.root();
            // key order as the Python gateway writes it
            let body =
                format!("{{\"count\":{count},\"root\":\"{root}\",\"durable_count\":{durable}}}");
            return json_answer(200, body.into_bytes());
        };
        let states = match self.shard_states(unit, None).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let rows: Vec<Value> = states
            .iter()
            .enumerate()
            .map(|(k, s)| json!({"shard": k, "count": s["count"], "root": s["root"], "durable_count": s["durable_count"]}))
            .collect();
        let sum = |key: &str| -> u64 { rows.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum() };
        let doc = json!({"layout": "sharded", "format": "shards v1", "root": Self::combined(&rows),
                         "count": sum("count"), "durable_count": sum("durable_count"), "shards": rows});
        json_answer(200, serde_json::to_vec(&doc).expect("serialises"))
    }

    /// GET /audit/proof/{raw}[?shard=K]
    pub async fn audit_proof(&self, raw: &str, shard: Option<String>) -> OpAnswer {
        self.proof(raw, &INCLUSION, shard).await
    }

    /// GET /audit/consistency?old={old}[&shard=K]
    pub async fn audit_consistency(&self, old: Option<String>, shard: Option<String>) -> OpAnswer {
        match old {
            None => error(400, "query parameter 'old' is required", "missing_old"),
            Some(old) => self.proof(&old, &CONSISTENCY, shard).await,
        }
    }

    async fn proof(&self, raw: &str, kind: &ProofKind, shard: Option<String>) -> OpAnswer {
        let Some(digits) = index_digits(raw) else {
            let msg = format!(
                "{} must be a non-negative integer, got {}",
                kind.what,
                py_repr(raw)
            );
            return error(400, &msg, kind.invalid_code);
        };
        let n = index_value(digits);
        if let Some(unit) = self.sharded() {
            return self.shard_proof(unit, n, digits, kind, shard).await;
        }
        if shard.is_some() {
            return error(
                400,
                "query parameter 'shard' applies to a sharded ledger only",
                "not_sharded",
            );
        }
        let out = match n {
            None => Err(out_of_range(kind.inclusion, digits, self.root().0)),
            Some(n) => self.prove(kind.inclusion, n),
        };
        match out {
            Ok(v) => json_answer(200, serde_json::to_vec(&v).expect("a proof serialises")),
            Err(m) => error(kind.range_status, &m, kind.range_code),
        }
    }

    /// Shard K's proof made by its owner, among every shard's state (docs/workers.md).
    async fn shard_proof(
        &self,
        unit: &Unit,
        n: Option<u64>,
        digits: &str,
        kind: &ProofKind,
        shard: Option<String>,
    ) -> OpAnswer {
        let last = unit.count - 1;
        let Some(raw) = shard else {
            let msg =
                format!("query parameter 'shard' (0..{last}) is required: the ledger is sharded");
            return error(400, &msg, "missing_shard");
        };
        let Some(k_digits) = index_digits(&raw) else {
            let msg = format!(
                "'shard' must be a non-negative integer, got {}",
                py_repr(&raw)
            );
            return error(400, &msg, "invalid_shard");
        };
        let Some(k) = k_digits.parse::<usize>().ok().filter(|k| *k < unit.count) else {
            let msg = format!("shard {k_digits} does not exist (0..{last})");
            return error(404, &msg, "shard_out_of_range");
        };
        let unavailable = |got: &Value, default: &str| {
            let msg = got.get("error").and_then(|e| e.as_str()).unwrap_or(default);
            error(503, &format!("shard {k}: {msg}"), "shard_unavailable")
        };
        let Some(n) = n else {
            // beyond any ledger: out of range against the shard's count, no proof to ask for
            let got = self.ask(unit, k, &json!({"op": "root"})).await;
            return match got["ok"]["count"].as_u64() {
                Some(count) => error(
                    kind.range_status,
                    &out_of_range(kind.inclusion, digits, count),
                    kind.range_code,
                ),
                None => unavailable(&got, "no ledger"),
            };
        };
        let mut got = self.ask(unit, k, &json!({"op": kind.op(), "n": n})).await;
        let Some(ok) = got.get_mut("ok").map(|v| v.take()) else {
            if got.get("index_error").and_then(|v| v.as_bool()) == Some(true) {
                let msg = got["error"].as_str().unwrap_or("no answer");
                return error(kind.range_status, msg, kind.range_code);
            }
            return unavailable(&got, "no answer");
        };
        let mut states = match self.shard_states(unit, Some(k)).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let proof = &ok["proof"];
        // the proof's own end state is the shard state it belongs to
        states[k] = if kind.inclusion {
            json!({"count": proof["leaf_count"], "root": proof["root"]})
        } else {
            json!({"count": proof["new_count"], "root": proof["new_root"]})
        };
        let rows: Vec<Value> = states
            .iter()
            .enumerate()
            .map(|(j, s)| json!({"shard": j, "count": s["count"], "root": s["root"]}))
            .collect();
        let doc = json!({"layout": "sharded", "format": "shards v1", "kind": kind.op(), "shard": k,
                         "proof": proof, "combined_root": Self::combined(&rows), "shards": rows});
        json_answer(200, serde_json::to_vec(&doc).expect("serialises"))
    }

    /// GET /v1/models
    pub fn models(&self) -> OpAnswer {
        let data: Vec<Value> = self
            .config
            .pipeline
            .models
            .iter()
            .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "gatewaylab"}))
            .collect();
        let doc = json!({"object": "list", "data": data});
        json_answer(200, serde_json::to_vec(&doc).expect("serialises"))
    }

    /// The counters the ledger thread keeps, copied into the metrics.
    fn sync_ledger_counters(&self) {
        let s = self.ledger.stats();
        self.metrics
            .set(Counter::AuditRecords, s.appended.load(Relaxed));
        self.metrics
            .set(Counter::BackgroundSpawned, s.submitted.load(Relaxed));
        self.metrics
            .set(Counter::AuditFailures, s.failed.load(Relaxed));
    }

    /// The gauges, read now.
    pub fn gauges(&self) -> [(&'static str, f64); 3] {
        [
            ("background_queue_depth", self.ledger.depth() as f64),
            ("requests_in_flight", self.in_flight() as f64),
            ("audit_records_in_ledger", self.root().0 as f64),
        ]
    }

    /// Every counter by name, and the gauges (rs-core's Python metrics read these).
    pub fn stats(&self) -> Vec<(&'static str, f64)> {
        self.sync_ledger_counters();
        let mut out: Vec<(&'static str, f64)> = Counter::ALL
            .iter()
            .map(|c| (c.name(), self.metrics.get(*c) as f64))
            .collect();
        out.extend(self.gauges());
        out
    }

    /// (stage, times it ran) for every stage of [`RUN_STAGES`] (the core pipeline's counts;
    /// `gateway_stage_runs_total`, whose `audit` is [`Counter::AuditRecords`]).
    pub fn stage_runs(&self) -> [(&'static str, u64); RUN_STAGES.len()] {
        self.pipeline.stage_runs()
    }

    /// GET /metrics (Prometheus text)
    pub fn metrics_text(&self) -> OpAnswer {
        self.sync_ledger_counters();
        let runs = self.stage_runs().map(|(_, n)| n);
        OpAnswer {
            status: 200,
            content_type: PROMETHEUS,
            body: self.metrics.render(&self.gauges(), &runs).into_bytes(),
        }
    }

    /// /health's audit sections: (queue, audit), as gateway/app.py's `_health_audit` gives them.
    pub fn health_audit(&self) -> (Value, Value) {
        let spawned = self.ledger.stats().submitted.load(Relaxed);
        (
            json!({"policy": "unbounded", "size": null, "depth": self.ledger.depth(),
                   "dropped": self.metrics.get(Counter::BackgroundDropped)}),
            json!({"records": self.root().0, "spawned": spawned, "ack": self.config.ledger.ack.label()}),
        )
    }

    /// GET /health (rs-server; rs-core's is its Python shell's, gateway/app.py).
    pub fn health(&self) -> OpAnswer {
        let switches: serde_json::Map<String, Value> = SWITCHES
            .iter()
            .map(|c| (c.to_string(), json!("rust")))
            .collect();
        let (queue, audit) = self.health_audit();
        let plugins = self
            .pre_call()
            .map_or(json!({"sidecar_pid": null, "sidecar_alive": null}), |p| {
                p.describe()
            });
        let mut plugins = plugins.as_object().cloned().unwrap_or_default();
        plugins.insert("pre_call".into(), json!(self.config.plugins.pre_call));
        let rung = self.options.rung.label();
        let doc = json!({
            "status": "ok", "pid": std::process::id(), "shell": "hyper", "server": "gatewaylab-server",
            "mode": rung, "label": rung, "switches": switches,
            "stages": stages_label(&self.config.pipeline.stages), "audit_enabled": self.config.pipeline.audit,
            "queue": queue, "audit": audit, "plugins": plugins,
            "limits": {"max_in_flight": self.config.limits.max_in_flight},
            "tracing": self.config.tracing.mode().label(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "workers": self.workers_section(),
        });
        json_answer(200, serde_json::to_vec(&doc).expect("serialises"))
    }

    /// /health's "workers", as gateway/workers.py's health_section writes it.
    fn workers_section(&self) -> Value {
        let threads = self.options.threads;
        let Some(unit) = self.unit.as_ref() else {
            return json!({"count": 1, "index": 0, "layout": "single-process", "ledger_layout": "single",
                          "ready": true, "workers": [{"index": 0, "pid": std::process::id(),
                          "cpus": allowed_cpus(), "threads": threads, "alive": true}],
                          "dead": [], "clamped": false, "notes": []});
        };
        let doc: Value = std::fs::read(unit.layout_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"workers": [], "notes": [], "clamped": false}));
        let workers = doc.get("workers").cloned().unwrap_or_else(|| json!([]));
        let dead: Vec<Value> = workers
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| w.get("alive") == Some(&json!(false)))
                    .filter_map(|w| w.get("index").cloned())
                    .collect()
            })
            .unwrap_or_default();
        json!({"count": unit.count, "index": unit.index, "layout": "workers",
               "ledger_layout": doc.get("ledger_layout"),
               "ready": doc.get("ready").cloned().unwrap_or(json!(false)),
               "workers": workers, "dead": dead,
               "clamped": doc.get("clamped").cloned().unwrap_or(json!(false)),
               "notes": doc.get("notes").cloned().unwrap_or_else(|| json!([]))})
    }
}

/// gateway.twins.COMPONENTS: every one is Rust on the Rust rungs.
const SWITCHES: [&str; 11] = [
    "hash",
    "record",
    "entropy",
    "mmr",
    "wal",
    "auth",
    "waf",
    "ratelimit",
    "adapter",
    "forwarder",
    "router",
];

/// gateway.pipeline.stages_label
fn stages_label(stages: &[String]) -> String {
    use gatewaylab_core::pipeline::STAGES;
    if STAGES.iter().all(|s| stages.iter().any(|x| x == s)) {
        "all".into()
    } else if stages.is_empty() {
        "none".into()
    } else {
        let on: Vec<&str> = STAGES
            .iter()
            .copied()
            .filter(|s| stages.iter().any(|x| x == s))
            .collect();
        on.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_index_parsing() {
        assert_eq!(index_digits("0010"), Some("10"));
        assert_eq!(index_digits("000"), Some("0"));
        let huge = "9".repeat(5000); // however many digits: well-formed, out of range later
        assert_eq!(index_digits(&huge), Some(huge.as_str()));
        assert_eq!(index_value(&huge), None);
        assert_eq!(index_value("9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(index_value("9223372036854775808"), None);
        for bad in [
            "", "x", "-1", "+1", " 1", "1_000", "1__0", "_1", "1.0", "0x10", "\u{663}",
        ] {
            assert_eq!(index_digits(bad), None, "{bad}");
        }
        assert_eq!(
            query_param(Some("a=1&old=%33"), "old").as_deref(),
            Some("3")
        );
        assert_eq!(query_param(Some("old=+1"), "old").as_deref(), Some(" 1"));
        assert_eq!(percent_decode("+1%2B", false), "+1+"); // a path keeps its plus
    }

    #[test]
    fn stages_label_as_python_writes_it() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            stages_label(&s(&["auth", "parse", "waf", "ratelimit", "adapter"])),
            "all"
        );
        assert_eq!(stages_label(&s(&[])), "none");
        assert_eq!(stages_label(&s(&["waf", "auth"])), "auth,waf");
    }
}
