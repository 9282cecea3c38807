//! The command line, the same flags as `gatewaylab serve` where they apply:
//!
//! ```text
//! gatewaylab-server (--config FILE | --upstream URL --api-key KEY) [--ledger DIR]
//!                   [--host 127.0.0.1] [--port 8000] [--threads N]
//!                   [--stages all|none|LIST] [--audit on|off] [--python EXE]
//!                   [--float-sum plain|neumaier] [--ack background|durable]
//!                   [--max-in-flight N] [--tracing off|on|sampled:R] [--tracing-endpoint URL]
//!                   [--reuse-port --worker K/N --unit-dir DIR [--ledger-layout single|sharded]]
//! ```
//!
//! `--reuse-port` listens with SO_REUSEPORT on a port its unit shares: a worker of a unit
//! (`--workers N`, gateway/workers.py), which also names its place (`--worker K/N`) and the
//! unit's runtime directory (`--unit-dir`: the layout shown in /health and the workers'
//! control sockets, through which a sharded ledger's /audit endpoints see every shard).
//!
//! `--mode rs-server` is accepted (and is the only mode). `--python` is the interpreter that
//! runs the plugin sidecar (default: $GATEWAYLAB_PYTHON, else `python3`); `--float-sum` is how the Python twin's interpreter sums floats
//! (entropy in the record: `plain` before 3.12, `neumaier` from 3.12). Prints
//! `gateway listening on http://HOST:PORT` once it accepts connections; SIGTERM or SIGINT
//! stops it gracefully (in-flight requests finish, the audit queue drains). A mistake on
//! the command line or in the config is one line on stderr and exit status 2.
use crate::config::{self, Config};

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub config: Option<String>,
    pub upstream: Option<String>,
    pub api_key: Option<String>,
    pub ledger: Option<String>,
    pub host: String,
    pub port: u16,
    pub threads: usize,
    pub stages: Option<String>,
    pub audit: Option<bool>,
    /// ledger.ack, overriding the config's
    pub ack: Option<String>,
    /// limits.max_in_flight, overriding the config's
    pub max_in_flight: Option<i64>,
    pub python: String,
    /// how the Python twin's interpreter sums floats (entropy): plain (3.11) or neumaier (3.12+)
    pub float_sum: gatewaylab_core::entropy::PySum,
    /// listen with SO_REUSEPORT (a worker of a unit shares its port with the others)
    pub reuse_port: bool,
    /// (index, count) of this worker in its unit
    pub worker: Option<(usize, usize)>,
    /// the unit's runtime directory (gateway/workers.py): workers.json and control sockets
    pub unit_dir: Option<String>,
    /// the unit's ledger layout: "single" or "sharded" (this worker writes shard K)
    pub ledger_layout: Option<String>,
    /// overrides the config's `tracing.mode` / `tracing.endpoint`
    pub tracing: Option<gatewaylab_trace::Mode>,
    pub tracing_endpoint: Option<String>,
}

const USAGE: &str = "usage: gatewaylab-server (--config FILE | --upstream URL --api-key KEY) [--ledger DIR] \
[--host H] [--port P] [--threads N] [--stages all|none|LIST] [--audit on|off] [--python EXE] [--float-sum plain|neumaier] \
[--ack background|durable] [--max-in-flight N] [--tracing off|on|sampled:R] [--tracing-endpoint URL] [--reuse-port --worker K/N --unit-dir DIR [--ledger-layout single|sharded]]";

pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        config: None,
        upstream: None,
        api_key: None,
        ledger: None,
        host: "127.0.0.1".into(),
        port: 8000,
        threads: 1,
        stages: None,
        audit: None,
        ack: None,
        max_in_flight: None,
        python: std::env::var("GATEWAYLAB_PYTHON").unwrap_or_else(|_| "python3".into()),
        float_sum: gatewaylab_core::entropy::PySum::Plain,
        reuse_port: false,
        worker: None,
        unit_dir: None,
        ledger_layout: None,
        tracing: None,
        tracing_endpoint: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag}: expected a value"))
        };
        match flag.as_str() {
            "--config" => o.config = Some(value()?),
            "--upstream" => o.upstream = Some(value()?),
            "--api-key" => o.api_key = Some(value()?),
            "--ledger" => o.ledger = Some(value()?),
            "--host" => o.host = value()?,
            "--port" => {
                let v = value()?;
                o.port = v
                    .parse()
                    .map_err(|_| format!("--port: expected a port number, got {v:?}"))?;
            }
            "--threads" => {
                let v = value()?;
                o.threads =
                    v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("--threads: expected a positive integer, got {v:?}")
                    })?;
            }
            "--stages" => o.stages = Some(value()?),
            "--audit" => {
                let v = value()?;
                o.audit = match v.as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => return Err(format!("--audit: expected on or off, got {v:?}")),
                };
            }
            "--ack" => {
                let v = value()?;
                if !config::ACKS.contains(&v.as_str()) {
                    return Err(format!("--ack: expected background or durable, got {v:?}"));
                }
                o.ack = Some(v);
            }
            "--max-in-flight" => {
                let v = value()?;
                o.max_in_flight = Some(v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("--max-in-flight: expected a positive integer, got {v:?}")
                })?);
            }
            "--mode" => {
                let v = value()?;
                if v != "rs-server" {
                    return Err(format!(
                        "--mode: this binary is rung 3 (rs-server), got {v:?}"
                    ));
                }
            }
            "--python" => o.python = value()?,
            "--float-sum" => {
                let v = value()?;
                o.float_sum = match v.as_str() {
                    "plain" => gatewaylab_core::entropy::PySum::Plain,
                    "neumaier" => gatewaylab_core::entropy::PySum::Neumaier,
                    _ => {
                        return Err(format!(
                            "--float-sum: expected plain or neumaier, got {v:?}"
                        ))
                    }
                };
            }
            "--reuse-port" => o.reuse_port = true,
            "--worker" => {
                let v = value()?;
                let parsed = v
                    .split_once('/')
                    .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
                o.worker = Some(
                    parsed
                        .filter(|(k, n)| k < n)
                        .ok_or_else(|| format!("--worker: expected K/N with K < N, got {v:?}"))?,
                );
            }
            "--unit-dir" => o.unit_dir = Some(value()?),
            "--ledger-layout" => {
                let v = value()?;
                if v != "single" && v != "sharded" {
                    return Err(format!(
                        "--ledger-layout: expected single or sharded, got {v:?}"
                    ));
                }
                o.ledger_layout = Some(v);
            }
            "--tracing" => {
                let v = value()?;
                o.tracing = Some(gatewaylab_trace::Mode::parse(&v).map_err(|e| format!("--{e}"))?);
            }
            "--tracing-endpoint" => o.tracing_endpoint = Some(value()?),
            other => return Err(format!("{other}: unknown argument\n{USAGE}")),
        }
    }
    Ok(o)
}

/// gateway.server.build_config: --config, or the zero-config default; --ledger overrides.
pub fn build_config(o: &mut Options) -> Result<Config, String> {
    let mut cfg = if let Some(path) = &o.config {
        if o.upstream.is_some() || o.api_key.is_some() {
            return Err("--config: give either --config or --upstream/--api-key, not both".into());
        }
        config::load(path)?
    } else {
        let up = o
            .upstream
            .as_deref()
            .ok_or("--upstream: required without --config")?;
        let key = o
            .api_key
            .as_deref()
            .ok_or("--api-key: required without --config")?;
        if o.ledger.is_none() {
            o.ledger = Some(temp_ledger_dir()?);
        }
        config::embedded(up, key, o.ledger.as_deref().expect("set above"))?
    };
    if let Some(l) = &o.ledger {
        cfg.ledger_dir = l.clone();
    }
    if let Some(s) = &o.stages {
        let names: Vec<String> = s.split(',').map(str::to_string).collect();
        cfg.stages = config::parse_stages(&names, s == "all", s == "none")?;
    }
    if let Some(a) = o.audit {
        cfg.audit = a;
    }
    if let Some(a) = &o.ack {
        cfg.ack = a.clone();
    }
    if let Some(n) = o.max_in_flight {
        cfg.max_in_flight = n;
    }
    if let Some(t) = o.tracing {
        cfg.tracing = t;
    }
    if let Some(e) = &o.tracing_endpoint {
        cfg.tracing_endpoint = e.clone();
    }
    Ok(cfg)
}

fn temp_ledger_dir() -> Result<String, String> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let p = base.join(format!("gatewaylab-ledger-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p.to_string_lossy().into_owned());
        }
    }
    Err("--ledger: cannot create a temporary ledger directory".into())
}

pub fn main() -> i32 {
    // A write past the file-size limit (RLIMIT_FSIZE) must be an error the ledger answers
    // (the WAL stops, a durable answer is 503 audit_unavailable), not a signal that kills the
    // gateway: ignore SIGXFSZ, as CPython does for the Python rungs.
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gatewaylab-server: error: {e}");
            return 2;
        }
    };
    let cfg = match build_config(&mut opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatewaylab-server: error: {e}");
            return 2;
        }
    };
    match crate::app::run(cfg, opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("gatewaylab-server: error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags() {
        let o = parse_args(&s(&[
            "--upstream",
            "http://h:1",
            "--api-key=k",
            "--threads",
            "2",
            "--audit",
            "off",
        ]))
        .unwrap();
        assert_eq!(
            (
                o.upstream.as_deref(),
                o.api_key.as_deref(),
                o.threads,
                o.audit
            ),
            (Some("http://h:1"), Some("k"), 2, Some(false))
        );
        assert_eq!(
            parse_args(&s(&["--threads", "0"])).unwrap_err(),
            "--threads: expected a positive integer, got \"0\""
        );
        assert!(parse_args(&s(&["--bogus"]))
            .unwrap_err()
            .starts_with("--bogus: unknown argument"));
        assert!(parse_args(&s(&["--mode", "py"])).is_err());
        let mut o = parse_args(&s(&[
            "--upstream",
            "http://h:1",
            "--api-key",
            "k",
            "--ledger",
            "/tmp/x",
            "--ack",
            "durable",
            "--max-in-flight=3",
        ]))
        .unwrap();
        let c = build_config(&mut o).unwrap();
        assert_eq!((c.ack.as_str(), c.max_in_flight), ("durable", 3));
        assert_eq!(
            parse_args(&s(&["--ack", "later"])).unwrap_err(),
            "--ack: expected background or durable, got \"later\""
        );
        assert_eq!(
            parse_args(&s(&["--max-in-flight", "0"])).unwrap_err(),
            "--max-in-flight: expected a positive integer, got \"0\""
        );
    }

    #[test]
    fn zero_config_needs_both_flags() {
        let mut o = parse_args(&s(&["--upstream", "http://h:1"])).unwrap();
        assert_eq!(
            build_config(&mut o).unwrap_err(),
            "--api-key: required without --config"
        );
        let mut o = parse_args(&s(&[
            "--upstream",
            "nope",
            "--api-key",
            "k",
            "--ledger",
            "/tmp/x",
        ]))
        .unwrap();
        assert_eq!(
            build_config(&mut o).unwrap_err(),
            "--upstream: 'nope' is not an http(s) URL"
        );
    }
}
