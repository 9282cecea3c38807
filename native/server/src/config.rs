//! The gateway's YAML configuration, read as `gateway/config.py` reads it: the same fields,
//! defaults and checks, in the same order, and the same error messages naming the field
//! (`keys[1].sha256: expected 64 lowercase hex digits ...`), values quoted as Python's
//! `repr` would. `tests/rs_server/test_config_errors.py` compares the two on a corpus of bad
//! configs. The format itself is documented once, at the top of `gateway/config.py`.
//!
//! Fields the binary does not use (`shell`, `server`, `impl`, `background.*`) are still
//! checked, so a config valid on one rung is valid on every rung.
use serde_yaml::{Mapping, Value};
use std::path::Path;

pub const FSYNC: &[&str] = &["always", "group", "none"];
/// limits.max_in_flight's default (gateway/config.py's MAX_IN_FLIGHT)
pub const MAX_IN_FLIGHT: i64 = 1024;
pub const ACKS: &[&str] = &["background", "durable"];
/// ledger.layout (gateway/audit/shards.py LAYOUTS): a unit's workers say theirs with
/// --ledger-layout; single-writer (one Python ledger process) is for py and py+rs only.
pub const LAYOUTS: &[&str] = &["single", "sharded", "single-writer"];
pub const POLICIES: &[&str] = &["block", "drop"];
pub const SHELLS: &[&str] = &["asgi", "fastapi"];
pub const SERVERS: &[&str] = &["uvicorn", "granian"];
/// gateway.twins.MODES, in its order (messages list them).
pub const MODES: &[&str] = &["py", "py+rs", "rs-core", "rs-server"];
pub const COMPONENTS: &[&str] = &[
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
const TOP: &[&str] = &[
    "audit",
    "background",
    "impl",
    "keys",
    "ledger",
    "limits",
    "mode",
    "model_list",
    "passthrough",
    "plugins",
    "router",
    "server",
    "shell",
    "stages",
    "tracing",
    "waf",
];
/// gateway.pipeline.STAGES, in its order
pub const STAGES: &[&str] = &["auth", "parse", "waf", "ratelimit", "adapter"];

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub kind: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!(
            "{}{}",
            self.base_url,
            if self.kind == "anthropic" {
                "/messages"
            } else {
                "/chat/completions"
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub sha256: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WafRule {
    pub id: String,
    pub kind: String,
    pub pattern: String,
    pub case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plugins {
    /// `module.path:function` of each pre_call hook, run in order.
    pub pre_call: Vec<String>,
    pub timeout_ms: f64,
    pub max_in_flight: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub models: Vec<(String, Upstream)>,
    pub passthrough: bool,
    pub keys: Vec<ApiKey>,
    pub waf_rules: Vec<WafRule>,
    pub ledger_dir: String,
    pub fsync: String,
    pub group_delay_ms: f64,
    /// ledger.ack: "background" (answer, then record) | "durable" (answer once the record is)
    pub ack: String,
    pub queue_size: i64,
    pub queue_policy: String,
    pub batch_window_ms: f64,
    pub max_body_bytes: i64,
    pub max_header_bytes: i64,
    pub upstream_timeout_s: f64,
    pub upstream_pool: i64,
    /// limits.max_in_flight: chat requests served at once; beyond it 503 `overloaded`
    pub max_in_flight: i64,
    /// enabled hot-path stages (gateway.pipeline.parse_stages)
    pub stages: Vec<String>,
    pub audit: bool,
    pub plugins: Plugins,
    /// Every deployment (model name, upstream), in model_list order; with `router` only.
    pub deployments: Vec<(String, Upstream)>,
    /// The router twins' config (gateway.router.router_config's JSON), when a model has a
    /// group or the config has a `router:` section.
    pub router: Option<serde_json::Value>,
    /// `tracing.mode` (gateway/tracing.py, native/trace)
    pub tracing: gatewaylab_trace::Mode,
    /// `tracing.endpoint`: the OTLP/HTTP traces URL
    pub tracing_endpoint: String,
}

pub type Result<T> = std::result::Result<T, String>;

// ------------------------------------------------------------------------------------------
// Python's repr, for messages ("got 'x'", "got True", "got [1, 2]")

pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => (if *b { "True" } else { "False" }).into(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                py_float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => py_str(s),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => py_repr(&t.value),
    }
}

pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        (if f > 0.0 { "inf" } else { "-inf" }).into()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Python's `repr()` of a str (the core pipeline's, so messages quote names the same way).
pub use gatewaylab_core::pipeline::py_repr as py_str;

// ------------------------------------------------------------------------------------------
// typed getters, as gateway.config._get

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Int,
    Num, // (int, float): bool passes, as isinstance(True, int) does in Python
    Str,
    Bool,
    List,
    Map,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::Num => "int/float",
            Ty::Str => "str",
            Ty::Bool => "bool",
            Ty::List => "list",
            Ty::Map => "Mapping",
        }
    }
    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (Ty::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Ty::Num, Value::Number(_)) | (Ty::Num, Value::Bool(_)) => true,
            (Ty::Str, Value::String(_)) => true,
            (Ty::Bool, Value::Bool(_)) => true,
            (Ty::List, Value::Sequence(_)) => true,
            (Ty::Map, Value::Mapping(_)) => true,
            _ => false,
        }
    }
}

fn field<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    match m.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// The value at `key` (None when absent or null), type-checked.
fn get<'a>(m: &'a Mapping, key: &str, w: &str, ty: Ty) -> Result<Option<&'a Value>> {
    match field(m, key) {
        None => Ok(None),
        Some(v) if ty.accepts(v) => Ok(Some(v)),
        Some(v) => Err(format!(
            "{w}{key}: expected {}, got {}",
            ty.name(),
            py_repr(v)
        )),
    }
}

fn required<'a>(m: &'a Mapping, key: &str, w: &str, ty: Ty) -> Result<&'a Value> {
    get(m, key, w, ty)?.ok_or_else(|| format!("{w}{key}: required"))
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Bool(b) => *b as i64 as f64,
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

fn check_one_of(v: &str, choices: &[&str], w: &str, key: &str) -> Result<()> {
    if choices.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{w}{key}: expected one of {}, got {}",
            choices.join(", "),
            py_str(v)
        ))
    }
}

fn str_one_of(m: &Mapping, key: &str, w: &str, default: &str, choices: &[&str]) -> Result<String> {
    match get(m, key, w, Ty::Str)? {
        None => Ok(default.to_string()),
        Some(v) => {
            let s = v.as_str().expect("checked");
            check_one_of(s, choices, w, key)?;
            Ok(s.to_string())
        }
    }
}

fn positive_int(m: &Mapping, key: &str, w: &str, default: Option<i64>) -> Result<Option<i64>> {
    match get(m, key, w, Ty::Int)? {
        None => Ok(default),
        Some(v) => {
            let n = v.as_i64().unwrap_or(i64::MAX);
            if n > 0 {
                Ok(Some(n))
            } else {
                Err(format!("{w}{key}: must be > 0, got {}", py_repr(v)))
            }
        }
    }
}

fn number(m: &Mapping, key: &str, w: &str, default: f64, positive: bool) -> Result<f64> {
    match get(m, key, w, Ty::Num)? {
        None => Ok(default),
        Some(v) => {
            let f = num(v);
            if positive && !(f > 0.0) {
                Err(format!("{w}{key}: must be > 0, got {}", py_repr(v)))
            } else if !positive && !(f >= 0.0) {
                Err(format!("{w}{key}: must be >= 0, got {}", py_repr(v)))
            } else {
                Ok(f)
            }
        }
    }
}

fn mapping<'a>(m: &'a Mapping, key: &str, w: &str, empty: &'a Mapping) -> Result<&'a Mapping> {
    Ok(get(m, key, w, Ty::Map)?
        .map(|v| v.as_mapping().expect("checked"))
        .unwrap_or(empty))
}

/// gateway.config.normalise_base_url
pub fn normalise_base_url(url: &str, w: &str) -> Result<String> {
    let bad = || format!("{w}: {} is not an http(s) URL", py_str(url));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, path) = (&rest[..end], &rest[end..]);
    if netloc.is_empty() {
        return Err(bad());
    }
    let path_only = path.split(['?', '#']).next().unwrap_or("");
    let mut out = url.trim_end_matches('/').to_string();
    if path_only.is_empty() || path_only == "/" {
        out.push_str("/v1");
    }
    Ok(out)
}

fn hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The shipped rule set, the same as `gateway.stages.waf.default_rules()` (a test compares
/// them).
pub fn default_rules() -> Vec<WafRule> {
    fn ci(word: &str) -> String {
        word.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    }
    let sp = "[ \\t]+";
    let r = |id: &str, pattern: String| WafRule {
        id: id.into(),
        kind: "regex".into(),
        pattern,
        case_insensitive: false,
    };
    let l = |id: &str, pattern: &str| WafRule {
        id: id.into(),
        kind: "literal".into(),
        pattern: pattern.into(),
        case_insensitive: true,
    };
    vec![
        r("prompt_injection.ignore_instructions", format!("{}{sp}(?i:(all{sp}|any{sp}|the{sp})?(previous|prior|above|earlier){sp}(instructions|prompts|rules|directions))", ci("ignore"))),
        r("prompt_injection.disregard", format!("{}{sp}(?i:(all{sp}|any{sp}|the{sp}|your{sp})?(previous{sp}|prior{sp}|above{sp})?(instructions|rules|guidelines|system{sp}prompt))", ci("disregard"))),
        r("prompt_injection.reveal_system_prompt", format!("{}{sp}(?i:(system|hidden|initial|original){sp}(prompt|instructions))", ci("your"))),
        l("prompt_injection.dan", "do anything now"),
        l("prompt_injection.developer_mode", "developer mode enabled"),
        r("secret.private_key", "-----BEGIN ([A-Z]+ )?PRIVATE KEY-----".into()),
        r("secret.aws_access_key_id", "(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}".into()),
        r("secret.aws_secret_access_key", format!("{}[ \\t]*[=:][ \\t]*[A-Za-z0-9/+]{{40}}", ci("aws_secret_access_key"))),
        r("secret.github_token", "gh[pousr]_[A-Za-z0-9]{36}".into()),
        r("secret.slack_token", "xox[abposr]-[0-9A-Za-z-]{10,}".into()),
        r("secret.openai_key", "sk-(proj-)?[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9_-]{20,}".into()),
    ]
}

/// One WAF rule as the Python twin's `_compile` checks it ("Waf: ..." messages), then
/// compiled by the Rust twin (regex syntax).
fn waf_rule(v: &Value) -> Result<WafRule> {
    let m = match v {
        Value::Mapping(m) => m,
        other => {
            let t = match other {
                Value::Null => "NoneType",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                Value::String(_) => "str",
                Value::Sequence(_) => "list",
                _ => "object",
            };
            return Err(format!("Waf: each rule must be a mapping, got {t}"));
        }
    };
    let none = Value::Null;
    let rid = m.get("id").unwrap_or(&none);
    let id = match rid {
        Value::String(s) if !s.is_empty() => s.clone(),
        other => {
            return Err(format!(
                "Waf: rule id must be a non-empty str, got {}",
                py_repr(other)
            ))
        }
    };
    let pattern = match m.get("pattern") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(format!(
                "Waf: rule {}: pattern must be a non-empty str",
                py_str(&id)
            ))
        }
    };
    let ci = match m.get("case_insensitive") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(format!(
                "Waf: rule {}: case_insensitive must be a bool",
                py_str(&id)
            ))
        }
    };
    let kind = match m.get("kind") {
        Some(Value::String(k)) if k == "regex" || k == "literal" => k.clone(),
        other => {
            return Err(format!(
                "Waf: rule {}: kind must be 'regex' or 'literal', got {}",
                py_str(&id),
                py_repr(other.unwrap_or(&none))
            ))
        }
    };
    let rule = WafRule {
        id,
        kind,
        pattern,
        case_insensitive: ci,
    };
    compile_rules(std::slice::from_ref(&rule))?;
    Ok(rule)
}

pub fn compile_rules(rules: &[WafRule]) -> Result<gatewaylab_core::waf::Waf> {
    use gatewaylab_core::waf::{Rule, RuleKind, Waf, WafError};
    let rules = rules
        .iter()
        .map(|r| Rule {
            id: r.id.clone(),
            kind: if r.kind == "literal" {
                RuleKind::Literal
            } else {
                RuleKind::Regex
            },
            pattern: r.pattern.clone(),
            case_insensitive: r.case_insensitive,
        })
        .collect();
    Waf::new(rules).map_err(|e| match e {
        // the Python twin's wording for the errors both twins name the same way
        WafError::Duplicate(id) => format!("Waf: duplicate rule id {}", py_str(&id)),
        WafError::Unshared { id, found } => {
            format!(
                "Waf: rule {}: {} is not supported by both regex engines",
                py_str(&id),
                py_str(&found)
            )
        }
        other => other.to_string(),
    })
}

/// gateway.config.from_mapping. `env` looks up `api_key_env` variables; relative ledger
/// directories are taken from `base_dir` (the config file's directory).
pub fn from_value(
    d: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: &Path,
) -> Result<Config> {
    let d = match d {
        Value::Mapping(m) => m,
        Value::Null => &Mapping::new(),
        _ => return Err("config: the top level must be a mapping".into()),
    };
    let mut unknown: Vec<String> = d
        .keys()
        .map(|k| match k {
            Value::String(s) => s.clone(),
            other => py_repr(other),
        })
        .filter(|k| !TOP.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(u) = unknown.first() {
        return Err(format!("{u}: unknown field; known: {}", TOP.join(", ")));
    }

    let mut models: Vec<(String, Upstream)> = Vec::new();
    let mut first_index: Vec<usize> = Vec::new();
    let mut specs: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    let mut deployments: Vec<(String, Upstream)> = Vec::new();
    let ml = required(d, "model_list", "", Ty::List)?
        .as_sequence()
        .expect("checked");
    if ml.is_empty() {
        return Err("model_list: needs at least one model".into());
    }
    for (i, entry) in ml.iter().enumerate() {
        let w = format!("model_list[{i}].");
        let entry = entry
            .as_mapping()
            .ok_or_else(|| format!("model_list[{i}]: expected a mapping"))?;
        let name = required(entry, "model_name", &w, Ty::Str)?
            .as_str()
            .expect("checked")
            .to_string();
        let up = required(entry, "upstream", &w, Ty::Map)?
            .as_mapping()
            .expect("checked");
        let w2 = format!("{w}upstream.");
        let kind = str_one_of(up, "kind", &w2, "openai", &["openai", "anthropic"])?;
        let base = required(up, "base_url", &w2, Ty::Str)?
            .as_str()
            .expect("checked");
        let base = normalise_base_url(base, &format!("{w2}base_url"))?;
        let api_key = match get(up, "api_key_env", &w2, Ty::Str)? {
            None => None,
            Some(v) => {
                let var = v.as_str().expect("checked");
                Some(env(var).ok_or_else(|| {
                    format!("{w2}api_key_env: environment variable {var} is not set")
                })?)
            }
        };
        let weight = positive_int(entry, "weight", &w, Some(1))?.expect("default");
        let rpm = positive_int(entry, "rpm", &w, None)?;
        let tpm = positive_int(entry, "tpm", &w, None)?;
        let model = get(up, "model", &w2, Ty::Str)?
            .and_then(|v| v.as_str())
            .unwrap_or(&name)
            .to_string();
        let upstream = Upstream {
            kind: kind.clone(),
            base_url: base,
            model,
            api_key,
        };
        match models.iter().position(|(n, _)| *n == name) {
            Some(at) => {
                let first = &models[at].1;
                if first.kind != kind {
                    let fi = first_index[at];
                    return Err(format!(
                        "{w2}kind: the deployments of {} share one kind; model_list[{fi}] is {}",
                        py_str(&name),
                        first.kind
                    ));
                }
            }
            None => {
                models.push((name.clone(), upstream.clone()));
                first_index.push(i);
                specs.push((name.clone(), Vec::new()));
            }
        }
        let slot = specs.iter_mut().find(|(n, _)| *n == name).expect("pushed");
        slot.1
            .push(serde_json::json!({"weight": weight, "rpm": rpm, "tpm": tpm}));
        deployments.push((name, upstream));
    }
    let router = if d.contains_key("router") || specs.iter().any(|(_, v)| v.len() > 1) {
        let section: serde_json::Value = match d.get("router") {
            None => serde_json::Value::Null,
            Some(v) => serde_json::to_value(v).map_err(|e| format!("router: {e}"))?,
        };
        let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
        let settings = gatewaylab_core::router::parse_settings(&section, &names)?;
        let kind_of = |n: &str| {
            models
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, u)| u.kind.clone())
                .unwrap_or_default()
        };
        for (i, (src, dst)) in settings.fallbacks.iter().enumerate() {
            for (j, name) in dst.iter().enumerate() {
                let (a, b) = (kind_of(name), kind_of(src));
                if a != b {
                    return Err(format!("router.fallbacks[{i}].{src}[{j}]: {} is {a} and {} is {b}; a fallback shares the kind", py_str(name), py_str(src)));
                }
            }
        }
        let groups: Vec<serde_json::Value> = specs
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "deployments": v}))
            .collect();
        Some(serde_json::json!({"router": section, "groups": groups}))
    } else {
        None
    };

    let mut keys: Vec<ApiKey> = Vec::new();
    if let Some(ks) = get(d, "keys", "", Ty::List)? {
        for (i, k) in ks.as_sequence().expect("checked").iter().enumerate() {
            let w = format!("keys[{i}].");
            let k = k
                .as_mapping()
                .ok_or_else(|| format!("keys[{i}]: expected a mapping"))?;
            let id = required(k, "id", &w, Ty::Str)?
                .as_str()
                .expect("checked")
                .to_string();
            if keys.iter().any(|x| x.id == id) {
                return Err(format!("{w}id: duplicate {}", py_str(&id)));
            }
            let digest = required(k, "sha256", &w, Ty::Str)?
                .as_str()
                .expect("checked")
                .to_string();
            if !hex64(&digest) {
                return Err(format!(
                    "{w}sha256: expected 64 lowercase hex digits (sha256 of the key)"
                ));
            }
            let rpm = positive_int(k, "rpm", &w, None)?;
            let tpm = positive_int(k, "tpm", &w, None)?;
            if rpm.is_none() != tpm.is_none() {
                let which = if tpm.is_none() { "tpm" } else { "rpm" };
                return Err(format!(
                    "{w}{which}: rpm and tpm go together (set both or neither)"
                ));
            }
            keys.push(ApiKey {
                id,
                sha256: digest,
                rpm,
                tpm,
            });
        }
    }
    if keys.is_empty() {
        return Err("keys: needs at least one API key".into());
    }

    let empty = Mapping::new();
    let waf = mapping(d, "waf", "", &empty)?;
    let mut rules = Vec::new();
    let defaults = get(waf, "default_rules", "waf.", Ty::Bool)?
        .map(|v| v.as_bool().expect("checked"))
        .unwrap_or(true);
    if defaults {
        rules.extend(default_rules());
    }
    if let Some(extra) = get(waf, "rules", "waf.", Ty::List)? {
        for (i, r) in extra.as_sequence().expect("checked").iter().enumerate() {
            rules.push(waf_rule(r).map_err(|e| format!("waf.rules[{i}]: {e}"))?);
        }
    }
    compile_rules(&rules).map_err(|e| format!("waf.rules: {e}"))?;

    let led = mapping(d, "ledger", "", &empty)?;
    let ledger_dir = get(led, "dir", "ledger.", Ty::Str)?
        .ok_or("ledger.dir: required")?
        .as_str()
        .expect("checked");
    let ledger_dir = if Path::new(ledger_dir).is_absolute() {
        ledger_dir.to_string()
    } else {
        base_dir.join(ledger_dir).to_string_lossy().into_owned()
    };
    let bg = mapping(d, "background", "", &empty)?;
    let lim = mapping(d, "limits", "", &empty)?;
    str_one_of(d, "mode", "", "py", MODES)?;
    let imp = mapping(d, "impl", "", &empty)?;
    for (k, v) in imp {
        let k = k.as_str().map(str::to_string).unwrap_or_else(|| py_repr(k));
        if !COMPONENTS.contains(&k.as_str()) {
            return Err(format!(
                "impl: impl override {}: unknown component; known: {}",
                py_str(&k),
                COMPONENTS.join(", ")
            ));
        }
        if v.as_str() != Some("python") && v.as_str() != Some("rust") {
            return Err(format!(
                "impl: impl override {k}={}: expected 'python' or 'rust'",
                py_repr(v)
            ));
        }
    }
    let stages = match d.get("stages") {
        None => STAGES.iter().map(|s| s.to_string()).collect(),
        Some(Value::String(s)) => parse_stages(
            &s.split(',').map(str::to_string).collect::<Vec<_>>(),
            s == "all",
            s == "none",
        )?,
        Some(Value::Sequence(items)) if items.iter().all(Value::is_string) => parse_stages(
            &items
                .iter()
                .map(|v| v.as_str().expect("checked").to_string())
                .collect::<Vec<_>>(),
            false,
            false,
        )?,
        Some(other) => {
            return Err(format!(
                "stages: expected all, none or a list of stage names, got {}",
                py_repr(other)
            ))
        }
    };
    let passthrough = get(d, "passthrough", "", Ty::Bool)?
        .map(|v| v.as_bool().expect("checked"))
        .unwrap_or(false);
    let fsync = str_one_of(led, "fsync", "ledger.", "group", FSYNC)?;
    let group_delay_ms = number(led, "group_delay_ms", "ledger.", 2.0, true)?;
    let ack = str_one_of(led, "ack", "ledger.", "background", ACKS)?;
    if str_one_of(led, "layout", "ledger.", "single", LAYOUTS)? == "single-writer" {
        return Err("ledger.layout single-writer is for py and py+rs (rs-server's ledger is its own Rust thread); \
use sharded"
            .into());
    }
    let queue_size = positive_int(bg, "queue_size", "background.", Some(10000))?.expect("default");
    let queue_policy = str_one_of(bg, "policy", "background.", "block", POLICIES)?;
    let batch_window_ms = number(bg, "batch_window_ms", "background.", 0.0, false)?;
    let max_body_bytes =
        positive_int(lim, "max_body_bytes", "limits.", Some(1 << 20))?.expect("default");
    let max_header_bytes =
        positive_int(lim, "max_header_bytes", "limits.", Some(16384))?.expect("default");
    let upstream_timeout_s = number(lim, "upstream_timeout_s", "limits.", 30.0, true)?;
    let upstream_pool = positive_int(lim, "upstream_pool", "limits.", Some(256))?.expect("default");
    let max_in_flight =
        positive_int(lim, "max_in_flight", "limits.", Some(MAX_IN_FLIGHT))?.expect("default");
    str_one_of(d, "shell", "", "asgi", SHELLS)?;
    str_one_of(d, "server", "", "uvicorn", SERVERS)?;
    let audit = get(d, "audit", "", Ty::Bool)?
        .map(|v| v.as_bool().expect("checked"))
        .unwrap_or(true);
    let plugins = plugins(mapping(d, "plugins", "", &empty)?)?;
    let (tracing, tracing_endpoint) = tracing(mapping(d, "tracing", "", &empty)?)?;
    Ok(Config {
        models,
        passthrough,
        keys,
        waf_rules: rules,
        ledger_dir,
        fsync,
        group_delay_ms,
        ack,
        queue_size,
        queue_policy,
        batch_window_ms,
        max_body_bytes,
        max_header_bytes,
        upstream_timeout_s,
        upstream_pool,
        max_in_flight,
        stages,
        audit,
        plugins,
        deployments,
        router,
        tracing,
        tracing_endpoint,
    })
}

/// `tracing: {mode: off|on|sampled:R, endpoint: URL}` (gateway/config.py checks the same).
fn tracing(t: &Mapping) -> Result<(gatewaylab_trace::Mode, String)> {
    let mut unknown: Vec<String> = t
        .keys()
        .map(|k| k.as_str().map_or_else(|| py_repr(k), str::to_string))
        .filter(|k| k != "mode" && k != "endpoint")
        .collect();
    unknown.sort();
    if let Some(u) = unknown.first() {
        return Err(format!("tracing.{u}: unknown field; known: endpoint, mode"));
    }
    let mode = match t.get("mode") {
        None => gatewaylab_trace::Mode::Off,
        Some(Value::Bool(b)) => {
            if *b {
                gatewaylab_trace::Mode::On
            } else {
                gatewaylab_trace::Mode::Off
            }
        }
        Some(Value::String(s)) => gatewaylab_trace::Mode::parse(s)
            .map_err(|e| format!("tracing.mode: {}", e.trim_start_matches("tracing: ")))?,
        Some(other) => {
            return Err(format!(
                "tracing.mode: expected off, on or sampled:R with 0 <= R <= 1, got {}",
                py_repr(other)
            ))
        }
    };
    let endpoint = match get(t, "endpoint", "tracing.", Ty::Str)? {
        None => gatewaylab_trace::DEFAULT_ENDPOINT.to_string(),
        Some(v) => {
            let s = v.as_str().expect("checked");
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                return Err(format!(
                    "tracing.endpoint: expected an http(s) URL, got {}",
                    py_str(s)
                ));
            }
            s.to_string()
        }
    };
    Ok((mode, endpoint))
}

/// gateway.pipeline.parse_stages: `all` | `none` | names -> the enabled stages, in order.
pub fn parse_stages(names: &[String], all: bool, none: bool) -> Result<Vec<String>> {
    if all {
        return Ok(STAGES.iter().map(|s| s.to_string()).collect());
    }
    if none {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = names
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    for n in &names {
        if !STAGES.contains(n) {
            return Err(format!(
                "stages: unknown stage {}; known: all, none, {}",
                py_str(n),
                STAGES.join(", ")
            ));
        }
    }
    Ok(STAGES
        .iter()
        .filter(|s| names.contains(s))
        .map(|s| s.to_string())
        .collect())
}

/// `plugins: {pre_call: [module.path:function, ...], timeout_ms: 200, max_in_flight: 64}`
/// (gateway/plugins.py checks the same).
fn plugins(p: &Mapping) -> Result<Plugins> {
    let mut pre_call = Vec::new();
    if let Some(list) = get(p, "pre_call", "plugins.", Ty::List)? {
        for (i, v) in list.as_sequence().expect("checked").iter().enumerate() {
            let w = format!("plugins.pre_call[{i}]");
            let s = v
                .as_str()
                .ok_or_else(|| format!("{w}: expected str, got {}", py_repr(v)))?;
            let ok = s.split_once(':').is_some_and(|(m, f)| {
                !m.is_empty()
                    && !f.is_empty()
                    && m.split('.').all(is_identifier)
                    && is_identifier(f)
            });
            if !ok {
                return Err(format!(
                    "{w}: expected 'module.path:function', got {}",
                    py_str(s)
                ));
            }
            pre_call.push(s.to_string());
        }
    }
    Ok(Plugins {
        pre_call,
        timeout_ms: number(p, "timeout_ms", "plugins.", 200.0, true)?,
        max_in_flight: positive_int(p, "max_in_flight", "plugins.", Some(64))?.expect("default"),
    })
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

/// gateway.config.load
pub fn load(path: &str) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {path}: {}", strerror(&e)))?;
    let v: Value = serde_yaml::from_str(&text)
        .map_err(|e| format!("config file {path}: invalid YAML: {e}"))?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| Path::new(path).to_path_buf());
    let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    from_value(&v, &|k| std::env::var(k).ok(), &base)
}

/// The OS's message without Rust's " (os error N)" suffix, as Python's strerror.
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// gateway.config.embedded: one model `mock` on `upstream` (other names passed through),
/// one client key `default` with secret `api_key`.
pub fn embedded(upstream: &str, api_key: &str, ledger_dir: &str) -> Result<Config> {
    if api_key.is_empty() {
        return Err("--api-key: must not be empty".into());
    }
    normalise_base_url(upstream, "--upstream")?;
    let digest = gatewaylab_core::auth::sha256_hex(api_key.as_bytes());
    let yaml = serde_json::json!({
        "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": upstream}}],
        "passthrough": true,
        "keys": [{"id": "default", "sha256": digest}],
        "ledger": {"dir": ledger_dir},
    });
    let v: Value = serde_yaml::to_value(&yaml).map_err(|e| e.to_string())?;
    from_value(&v, &|_| None, Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Config> {
        from_value(
            &serde_yaml::from_str(y).unwrap(),
            &|_| None,
            Path::new("/tmp"),
        )
    }

    const OK: &str = "model_list: [{model_name: m, upstream: {base_url: 'http://127.0.0.1:9'}}]\n\
                      keys: [{id: a, sha256: '0000000000000000000000000000000000000000000000000000000000000000'}]\n\
                      ledger: {dir: led}\n";

    #[test]
    fn a_minimal_config_gets_the_python_defaults() {
        let c = parse(OK).unwrap();
        assert_eq!(c.models[0].1.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(
            c.models[0].1.url(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(c.ledger_dir, "/tmp/led");
        assert_eq!(c.waf_rules.len(), 11);
        assert_eq!(
            (c.max_body_bytes, c.max_header_bytes, c.upstream_pool),
            (1 << 20, 16384, 256)
        );
        assert_eq!(c.fsync, "group");
        assert!(c.plugins.pre_call.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(&OK.replace("ledger: {dir: led}", "ledger: {dir: led, fsync: sometimes}"))
            .unwrap_err();
        assert_eq!(
            e,
            "ledger.fsync: expected one of always, group, none, got 'sometimes'"
        );
        assert_eq!(
            parse(&OK.replace("ledger: {dir: led}", "ledger: {dir: led, ack: durable}"))
                .unwrap()
                .ack,
            "durable"
        );
        assert_eq!(parse(OK).unwrap().max_in_flight, MAX_IN_FLIGHT);
        let e = parse(&format!("{OK}\nlimits: {{max_in_flight: 0}}")).unwrap_err();
        assert!(e.starts_with("limits.max_in_flight: "), "{e}");
        let e =
            parse(&OK.replace("ledger: {dir: led}", "ledger: {dir: led, ack: later}")).unwrap_err();
        assert_eq!(
            e,
            "ledger.ack: expected one of background, durable, got 'later'"
        );
        let e = parse(&OK.replace("id: a,", "id: a, rpm: 0,")).unwrap_err();
        assert_eq!(e, "keys[0].rpm: must be > 0, got 0");
        let e = parse(&format!("{OK}colour: blue\n")).unwrap_err();
        assert!(
            e.starts_with("colour: unknown field; known: audit, background, impl"),
            "{e}"
        );
        let e = parse(&format!("{OK}limits: {{max_body_bytes: true}}\n")).unwrap_err();
        assert_eq!(e, "limits.max_body_bytes: expected int, got True");
    }

    #[test]
    fn python_repr() {
        assert_eq!(py_str("it's"), "\"it's\"");
        assert_eq!(py_float(2.0), "2.0");
        assert_eq!(
            py_repr(&serde_yaml::from_str("[1, a, null]").unwrap()),
            "[1, 'a', None]"
        );
    }

    #[test]
    fn base_urls_normalise_like_python() {
        assert_eq!(
            normalise_base_url("http://h:1/", "x").unwrap(),
            "http://h:1/v1"
        );
        assert_eq!(
            normalise_base_url("http://h:1/api/v2/", "x").unwrap(),
            "http://h:1/api/v2"
        );
        assert_eq!(
            normalise_base_url("ftp://h", "x").unwrap_err(),
            "x: 'ftp://h' is not an http(s) URL"
        );
    }
}
