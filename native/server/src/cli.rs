//! The command line: `gatewaylab-server --spec FILE`.
//!
//! FILE is JSON written by `gateway/rungs/rs_server.py` (`gatewaylab serve --mode rs-server` and
//! the workers' supervisor write it; a user who wants the binary alone can write it the same
//! way, `gateway.rungs.rs_server.spec`):
//!
//! ```text
//! {"config": <gateway/config.py's normalized config>, "engine": <the engine's options>,
//!  "server": {"host", "port", "reuse_port", "worker": null | {"index", "count", "unit_dir",
//!             "layout"}, "python"}}
//! ```
//!
//! Every value in it was checked, with its message, by gateway/config.py and
//! gateway/options.py; this only deserializes (an unknown field or a wrong type is a caller
//! out of step with them). `server.reuse_port`: listen with SO_REUSEPORT on a port its unit
//! shares (a worker of `--workers N`, gateway/serving/supervisor.py), which also names its place and
//! the unit's runtime directory (the layout shown in /health and the workers' control
//! sockets). `server.python`: the interpreter that runs the plugin sidecar. Prints
//! `gateway listening on http://HOST:PORT` once it accepts connections; SIGTERM or SIGINT
//! stops it gracefully (in-flight requests finish, the audit queue drains). A spec it cannot
//! read is one line on stderr and exit status 2.
use gatewaylab_engine::spec::{Config, Options};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    pub config: Config,
    pub engine: Options,
    pub server: ServerOptions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    pub reuse_port: bool,
    pub worker: Option<Worker>,
    pub python: String,
}

/// This process's place in a unit of workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    pub index: usize,
    pub count: usize,
    pub unit_dir: String,
    /// the unit's ledger layout: single | sharded (this worker writes shard K)
    pub layout: String,
}

const USAGE: &str = "usage: gatewaylab-server --spec FILE  (JSON: see gateway/rungs/rs_server.py)";

pub fn parse_args(args: &[String]) -> Result<ServerSpec, String> {
    let path = match args {
        [flag, path] if flag == "--spec" => path.as_str(),
        [flag] if flag.starts_with("--spec=") => &flag["--spec=".len()..],
        _ => return Err(USAGE.into()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("--spec {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("--spec {path}: {e}"))
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
    let spec = match parse_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gatewaylab-server: error: {e}");
            return 2;
        }
    };
    match crate::http::run(spec) {
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
    fn the_one_flag_is_the_spec() {
        assert!(parse_args(&s(&[])).unwrap_err().starts_with("usage:"));
        assert!(parse_args(&s(&["--config", "x.yaml"]))
            .unwrap_err()
            .starts_with("usage:"));
        let e = parse_args(&s(&["--spec", "/nonexistent/spec.json"])).unwrap_err();
        assert!(e.starts_with("--spec /nonexistent/spec.json: "), "{e}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let dir = std::env::temp_dir().join(format!("gl-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spec.json");
        std::fs::write(&path, r#"{"colour": 1, "config": {}}"#).unwrap();
        let e = parse_args(&s(&["--spec", path.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
