//! The router, Rust twin of `gateway/router.py` (the module doc there is the contract):
//! which deployment of a model group gets each attempt, retries with exponential backoff and
//! equal jitter inside a per-request budget, fallbacks to other groups, cooldown after
//! `allowed_fails` failures in a window with one half-open probe, per-deployment rpm/tpm.
//! No I/O, no clock: the caller passes monotonic nanoseconds in. Same config, outcomes and
//! clock -> the same choices as the Python twin, draw for draw (splitmix64).
use crate::errors::{py_repr, py_repr_json};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

pub const STRATEGIES: [&str; 4] = [
    "simple-shuffle",
    "least-busy",
    "latency-based",
    "usage-based",
];
const INTS: [(&str, u64, u64); 9] = [
    ("num_retries", 2, 0),
    ("retry_budget_ms", 10_000, 1),
    ("backoff_base_ms", 25, 0),
    ("backoff_max_ms", 1_000, 0),
    ("allowed_fails", 3, 1),
    ("fail_window_ms", 60_000, 1),
    ("cooldown_ms", 5_000, 1),
    ("latency_window", 20, 1),
    ("seed", 0, 0),
];
const MINUTE_NS: u64 = 60_000_000_000;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub strategy: String,
    pub num_retries: u64,
    pub retry_budget_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub allowed_fails: u64,
    pub fail_window_ms: u64,
    pub cooldown_ms: u64,
    pub latency_window: u64,
    pub seed: u64,
    pub fallbacks: Vec<(String, Vec<String>)>,
}

fn int_field(v: &Value, w: &str, min: u64) -> Result<u64, String> {
    let Some(n) = v.as_u64().filter(|_| v.is_u64() || v.is_i64()) else {
        if v.is_i64() {
            return Err(format!("{w}: must be >= {min}, got {}", py_repr_json(v)));
        }
        return Err(format!("{w}: expected int, got {}", py_repr_json(v)));
    };
    if n < min {
        return Err(format!("{w}: must be >= {min}, got {n}"));
    }
    Ok(n)
}

/// The `router:` section (Null for defaults) -> settings; `groups` are the model names, for
/// the fallbacks. The error names the field, in the Python twin's words.
pub fn parse_settings(section: &Value, groups: &[&str]) -> Result<Settings, String> {
    let empty = serde_json::Map::new();
    let m = match section {
        Value::Null => &empty,
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "router: expected a mapping, got {}",
                py_repr_json(other)
            ))
        }
    };
    let fields: Vec<&str> = std::iter::once("strategy")
        .chain(INTS.iter().map(|f| f.0))
        .chain(std::iter::once("fallbacks"))
        .collect();
    let mut unknown: Vec<&String> = m.keys().filter(|k| !fields.contains(&k.as_str())).collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        return Err(format!(
            "router.{k}: unknown field; known: {}",
            fields.join(", ")
        ));
    }
    let strategy = match m.get("strategy") {
        None | Some(Value::Null) => "simple-shuffle".to_string(),
        Some(Value::String(s)) if STRATEGIES.contains(&s.as_str()) => s.clone(),
        Some(v) => {
            return Err(format!(
                "router.strategy: expected one of {}, got {}",
                STRATEGIES.join(", "),
                py_repr_json(v)
            ))
        }
    };
    let mut ints = [0u64; 9];
    for (slot, (name, default, min)) in ints.iter_mut().zip(INTS) {
        *slot = match m.get(name) {
            None | Some(Value::Null) => default,
            Some(v) => int_field(v, &format!("router.{name}"), min)?,
        };
    }
    let [num_retries, retry_budget_ms, backoff_base_ms, backoff_max_ms, allowed_fails, fail_window_ms, cooldown_ms, latency_window, seed] =
        ints;
    if backoff_max_ms < backoff_base_ms {
        return Err(format!("router.backoff_max_ms: must be >= backoff_base_ms ({backoff_base_ms}), got {backoff_max_ms}"));
    }
    let mut fallbacks: Vec<(String, Vec<String>)> = Vec::new();
    match m.get("fallbacks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let w = format!("router.fallbacks[{i}]");
                let (src, dst) = match item.as_object() {
                    Some(o) if o.len() == 1 => o.iter().next().expect("one key"),
                    _ => {
                        return Err(format!(
                            "{w}: expected a one-key mapping {{model: [fallback models]}}, got {}",
                            py_repr_json(item)
                        ))
                    }
                };
                if !groups.contains(&src.as_str()) {
                    return Err(format!("{w}: unknown model {}", py_repr(src)));
                }
                if fallbacks.iter().any(|(s, _)| s == src) {
                    return Err(format!("{w}: duplicate model {}", py_repr(src)));
                }
                let names = match dst.as_array() {
                    Some(a) if !a.is_empty() => a,
                    _ => {
                        return Err(format!(
                            "{w}.{src}: expected a non-empty list of model names, got {}",
                            py_repr_json(dst)
                        ))
                    }
                };
                let mut out = Vec::new();
                for (j, name) in names.iter().enumerate() {
                    match name.as_str() {
                        Some(n) if groups.contains(&n) => {
                            if n == src {
                                return Err(format!(
                                    "{w}.{src}[{j}]: a model cannot fall back to itself"
                                ));
                            }
                            out.push(n.to_string());
                        }
                        _ => {
                            return Err(format!(
                                "{w}.{src}[{j}]: unknown model {}",
                                py_repr_json(name)
                            ))
                        }
                    }
                }
                fallbacks.push((src.clone(), out));
            }
        }
        Some(v) => {
            return Err(format!(
                "router.fallbacks: expected a list of {{model: [fallback models]}}, got {}",
                py_repr_json(v)
            ))
        }
    }
    Ok(Settings {
        strategy,
        num_retries,
        retry_budget_ms,
        backoff_base_ms,
        backoff_max_ms,
        allowed_fails,
        fail_window_ms,
        cooldown_ms,
        latency_window,
        seed,
        fallbacks,
    })
}

/// One deployment's routing inputs (its upstream lives with the caller, at the same index).
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSpec {
    pub weight: u64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    Cooldown,
    HalfOpen,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Cooldown => "cooldown",
            Health::HalfOpen => "half_open",
        }
    }
}

struct Deployment {
    spec: DeploymentSpec,
    in_flight: u64,
    lat: VecDeque<u64>,
    lat_sum: u128,
    fails: VecDeque<u64>,
    health: Health,
    until: u64,
    probing: bool,
    usage: VecDeque<(u64, u64)>,
    usage_tokens: u64,
    track_usage: bool,
}

impl Deployment {
    fn prune(&mut self, now: u64) {
        while let Some(&(t, tok)) = self.usage.front() {
            if t as i128 <= now as i128 - MINUTE_NS as i128 {
                self.usage.pop_front();
                self.usage_tokens -= tok;
            } else {
                break;
            }
        }
    }

    fn refresh(&mut self, now: u64) {
        if self.health == Health::Cooldown && now >= self.until {
            self.health = Health::HalfOpen;
            self.probing = false;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Cancel,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(Outcome::Ok),
            "fail" => Some(Outcome::Fail),
            "cancel" => Some(Outcome::Cancel),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send to deployment `index` of `group` (the model asked for, or a fallback).
    Send {
        group: String,
        index: usize,
    },
    Wait {
        ns: u64,
    },
    GiveUp {
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttState {
    Start,
    Sent,
    Failed,
    Waiting,
    Done,
}

/// One request's way through the router.
#[derive(Clone, Debug)]
pub struct Attempt {
    chain: Vec<String>,
    pos: usize,
    retries: u64,
    tried: Vec<usize>,
    deadline: u64,
    state: AttState,
    current: Option<(usize, usize)>, // (group number, index)
    tokens: u64,
    pub sends: u64,
    reason: &'static str,
}

impl Attempt {
    /// The position of the current group in the request's chain (0: the model asked for,
    /// 1..: its fallbacks in order).
    pub fn pos(&self) -> usize {
        self.pos
    }
}

pub struct Router {
    strategy: usize,
    num_retries: u64,
    budget_ns: u64,
    base_us: u64,
    max_us: u64,
    allowed_fails: u64,
    window_ns: u64,
    cooldown_ns: u64,
    latency_window: u64,
    fallbacks: HashMap<String, Vec<String>>,
    rng: u64,
    names: Vec<String>,
    index: HashMap<String, usize>,
    groups: Vec<Vec<Deployment>>,
}

fn bad(msg: &str) -> String {
    format!("Router: {msg}")
}

impl Router {
    /// Router from `gateway.router.router_config`'s JSON: {"router": section, "groups": [...]}.
    pub fn from_json(config_json: &str) -> Result<Self, String> {
        let raw: Value = serde_json::from_str(config_json)
            .map_err(|e| bad(&format!("config is not JSON: {e}")))?;
        let shape = || bad("config must be {\"router\": {...}, \"groups\": [...]}");
        let groups_v = raw
            .get("groups")
            .and_then(Value::as_array)
            .ok_or_else(shape)?;
        if !raw.is_object() {
            return Err(shape());
        }
        let mut groups: Vec<(String, Vec<DeploymentSpec>)> = Vec::new();
        for g in groups_v {
            let err = || bad("each group must be {\"name\": str, \"deployments\": [...non-empty]}");
            let name = g.get("name").and_then(Value::as_str).ok_or_else(err)?;
            let deps = g
                .get("deployments")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(err)?;
            let mut specs = Vec::new();
            for d in deps {
                let o = d.as_object().ok_or_else(|| {
                    bad(&format!("deployments of {} must be objects", py_repr(name)))
                })?;
                let lim = || {
                    bad(&format!(
                        "deployment of {}: weight, rpm and tpm must be ints >= 1",
                        py_repr(name)
                    ))
                };
                let int = |k: &str, default: Option<u64>| -> Result<Option<u64>, String> {
                    match o.get(k) {
                        None => Ok(default),
                        Some(Value::Null) if k != "weight" => Ok(None),
                        Some(v) => v
                            .as_u64()
                            .filter(|n| *n >= 1 && !v.is_f64())
                            .map(Some)
                            .ok_or_else(lim),
                    }
                };
                specs.push(DeploymentSpec {
                    weight: int("weight", Some(1))?.expect("default"),
                    rpm: int("rpm", None)?,
                    tpm: int("tpm", None)?,
                });
            }
            groups.push((name.to_string(), specs));
        }
        let names: Vec<&str> = groups.iter().map(|g| g.0.as_str()).collect();
        let s = parse_settings(raw.get("router").unwrap_or(&Value::Null), &names)?;
        Ok(Self::new(&s, groups))
    }

    pub fn new(s: &Settings, groups: Vec<(String, Vec<DeploymentSpec>)>) -> Self {
        let usage = s.strategy == "usage-based";
        let mut index = HashMap::new();
        let mut names = Vec::new();
        let mut deps = Vec::new();
        for (name, specs) in groups {
            let slot = *index.entry(name.clone()).or_insert_with(|| {
                names.push(name.clone());
                deps.push(Vec::new());
                deps.len() - 1
            });
            deps[slot] = specs
                .into_iter()
                .map(|spec| Deployment {
                    track_usage: usage || spec.rpm.is_some() || spec.tpm.is_some(),
                    spec,
                    in_flight: 0,
                    lat: VecDeque::new(),
                    lat_sum: 0,
                    fails: VecDeque::new(),
                    health: Health::Ok,
                    until: 0,
                    probing: false,
                    usage: VecDeque::new(),
                    usage_tokens: 0,
                })
                .collect();
        }
        Self {
            strategy: STRATEGIES
                .iter()
                .position(|x| *x == s.strategy)
                .expect("validated"),
            num_retries: s.num_retries,
            budget_ns: s.retry_budget_ms.saturating_mul(1_000_000),
            base_us: s.backoff_base_ms.saturating_mul(1000),
            max_us: s.backoff_max_ms.saturating_mul(1000),
            allowed_fails: s.allowed_fails,
            window_ns: s.fail_window_ms.saturating_mul(1_000_000),
            cooldown_ns: s.cooldown_ms.saturating_mul(1_000_000),
            latency_window: s.latency_window,
            fallbacks: s.fallbacks.iter().cloned().collect(),
            rng: s.seed,
            names,
            index,
            groups: deps,
        }
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.index.contains_key(group)
    }

    fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn begin(&self, group: &str, tokens: u64, now_ns: u64) -> Result<Attempt, String> {
        if !self.has_group(group) {
            return Err(bad(&format!("unknown model group {}", py_repr(group))));
        }
        let mut chain = vec![group.to_string()];
        if let Some(f) = self.fallbacks.get(group) {
            chain.extend(f.iter().cloned());
        }
        Ok(Attempt {
            chain,
            pos: 0,
            retries: 0,
            tried: Vec::new(),
            deadline: now_ns.saturating_add(self.budget_ns),
            state: AttState::Start,
            current: None,
            tokens,
            sends: 0,
            reason: "",
        })
    }

    pub fn next(&mut self, att: &mut Attempt, now: u64) -> Result<Step, String> {
        match att.state {
            AttState::Sent => {
                Err("Router.next: report the outcome of the attempt in flight first".into())
            }
            AttState::Done => Ok(Step::GiveUp {
                reason: if att.reason.is_empty() {
                    "done"
                } else {
                    att.reason
                },
            }),
            AttState::Start => {
                let g = self.index[&att.chain[0]];
                Ok(match self.pick(g, &[], att.tokens, now) {
                    Some(i) => self.send(att, i, now),
                    None => self.fallback(att, now),
                })
            }
            AttState::Failed => {
                if att.retries < self.num_retries {
                    let delay = self.backoff_ns(att.retries);
                    if (now as u128 + delay as u128) < att.deadline as u128 {
                        att.retries += 1;
                        att.state = AttState::Waiting;
                        return Ok(Step::Wait { ns: delay });
                    }
                }
                Ok(self.fallback(att, now))
            }
            AttState::Waiting => {
                let g = self.index[&att.chain[att.pos]];
                let tried = att.tried.clone();
                let mut idx = self.pick(g, &tried, att.tokens, now);
                if idx.is_none() && !tried.is_empty() {
                    idx = self.pick(g, &[], att.tokens, now);
                }
                Ok(match idx {
                    Some(i) => self.send(att, i, now),
                    None => self.fallback(att, now),
                })
            }
        }
    }

    pub fn report(
        &mut self,
        att: &mut Attempt,
        outcome: Outcome,
        latency_us: u64,
        now: u64,
    ) -> Result<Health, String> {
        if att.state != AttState::Sent {
            return Err("Router.report: no attempt in flight".into());
        }
        let (g, i) = att.current.expect("sent");
        let (window, cooldown, allowed, lw) = (
            self.window_ns,
            self.cooldown_ns,
            self.allowed_fails,
            self.latency_window,
        );
        let d = &mut self.groups[g][i];
        d.in_flight -= 1;
        match outcome {
            Outcome::Ok => {
                d.lat.push_back(latency_us);
                d.lat_sum += latency_us as u128;
                if d.lat.len() as u64 > lw {
                    d.lat_sum -= d.lat.pop_front().expect("non-empty") as u128;
                }
                if d.health == Health::HalfOpen {
                    d.health = Health::Ok;
                    d.probing = false;
                    d.fails.clear();
                }
                att.state = AttState::Done;
                att.reason = "ok";
            }
            Outcome::Fail => {
                if d.health == Health::HalfOpen {
                    d.health = Health::Cooldown;
                    d.until = now.saturating_add(cooldown);
                    d.probing = false;
                } else if d.health == Health::Ok {
                    while let Some(&t) = d.fails.front() {
                        if t as i128 <= now as i128 - window as i128 {
                            d.fails.pop_front();
                        } else {
                            break;
                        }
                    }
                    d.fails.push_back(now);
                    if d.fails.len() as u64 >= allowed {
                        d.health = Health::Cooldown;
                        d.until = now.saturating_add(cooldown);
                        d.fails.clear();
                    }
                }
                att.state = AttState::Failed;
            }
            Outcome::Cancel => {
                if d.health == Health::HalfOpen {
                    d.probing = false;
                }
                att.state = AttState::Done;
                att.reason = "cancelled";
            }
        }
        Ok(d.health)
    }

    fn dep(&mut self, group: &str, index: usize) -> Result<&mut Deployment, String> {
        let g = *self
            .index
            .get(group)
            .ok_or_else(|| bad(&format!("unknown model group {}", py_repr(group))))?;
        self.groups[g]
            .get_mut(index)
            .ok_or_else(|| bad(&format!("{} has no deployment {index}", py_repr(group))))
    }

    pub fn health(&mut self, group: &str, index: usize, now: u64) -> Result<Health, String> {
        let d = self.dep(group, index)?;
        d.refresh(now);
        Ok(d.health)
    }

    pub fn in_flight(&mut self, group: &str, index: usize) -> Result<u64, String> {
        Ok(self.dep(group, index)?.in_flight)
    }

    fn send(&mut self, att: &mut Attempt, i: usize, now: u64) -> Step {
        let g = self.index[&att.chain[att.pos]];
        let d = &mut self.groups[g][i];
        d.in_flight += 1;
        if d.track_usage {
            d.usage.push_back((now, att.tokens));
            d.usage_tokens += att.tokens;
        }
        if d.health == Health::HalfOpen {
            d.probing = true;
        }
        att.current = Some((g, i));
        att.tried.push(i);
        att.state = AttState::Sent;
        att.sends += 1;
        Step::Send {
            group: self.names[g].clone(),
            index: i,
        }
    }

    fn fallback(&mut self, att: &mut Attempt, now: u64) -> Step {
        loop {
            att.pos += 1;
            att.tried.clear();
            if att.pos >= att.chain.len() {
                att.state = AttState::Done;
                att.reason = if att.sends > 0 {
                    "exhausted"
                } else {
                    "no_deployment"
                };
                return Step::GiveUp { reason: att.reason };
            }
            if now >= att.deadline {
                att.state = AttState::Done;
                att.reason = "budget";
                return Step::GiveUp { reason: "budget" };
            }
            let g = self.index[&att.chain[att.pos]];
            if let Some(i) = self.pick(g, &[], att.tokens, now) {
                return self.send(att, i, now);
            }
        }
    }

    fn backoff_ns(&mut self, k: u64) -> u64 {
        let cap = self
            .base_us
            .checked_shl(k.min(40) as u32)
            .filter(|c| c >> k.min(40) == self.base_us)
            .unwrap_or(u64::MAX)
            .min(self.max_us);
        let half = cap / 2;
        let span = cap - half + 1;
        (half + self.draw() % span).saturating_mul(1000)
    }

    fn pick(&mut self, g: usize, exclude: &[usize], tokens: u64, now: u64) -> Option<usize> {
        let mut cands = Vec::new();
        for (i, d) in self.groups[g].iter_mut().enumerate() {
            if exclude.contains(&i) {
                continue;
            }
            d.refresh(now);
            if d.health == Health::Cooldown || (d.health == Health::HalfOpen && d.probing) {
                continue;
            }
            if d.track_usage {
                d.prune(now);
                if d.spec.rpm.is_some_and(|r| d.usage.len() as u64 >= r) {
                    continue;
                }
                if d.spec
                    .tpm
                    .is_some_and(|t| d.usage_tokens as u128 + tokens as u128 > t as u128)
                {
                    continue;
                }
            }
            cands.push(i);
        }
        match cands.len() {
            0 => return None,
            1 => return Some(cands[0]),
            _ => {}
        }
        if STRATEGIES[self.strategy] == "simple-shuffle" {
            let weights: Vec<u64> = cands
                .iter()
                .map(|&i| self.groups[g][i].spec.weight)
                .collect();
            let mut r = self.draw() % weights.iter().sum::<u64>();
            for (&i, &w) in cands.iter().zip(&weights) {
                if r < w {
                    return Some(i);
                }
                r -= w;
            }
            unreachable!("r < total weight");
        }
        let deps = &self.groups[g];
        let tied: Vec<usize> = match STRATEGIES[self.strategy] {
            "least-busy" => {
                let m = cands
                    .iter()
                    .map(|&i| deps[i].in_flight)
                    .min()
                    .expect("non-empty");
                cands
                    .iter()
                    .copied()
                    .filter(|&i| deps[i].in_flight == m)
                    .collect()
            }
            "latency-based" => {
                let mut tied = vec![cands[0]];
                for &i in &cands[1..] {
                    let (a, b) = (&deps[i], &deps[tied[0]]);
                    let lhs = a.lat_sum * (b.lat.len().max(1) as u128);
                    let rhs = b.lat_sum * (a.lat.len().max(1) as u128);
                    if lhs < rhs {
                        tied = vec![i];
                    } else if lhs == rhs {
                        tied.push(i);
                    }
                }
                tied
            }
            _ => {
                let head = |d: &Deployment| {
                    (
                        d.spec
                            .tpm
                            .map_or(u64::MAX as i128, |t| t as i128 - d.usage_tokens as i128),
                        d.spec
                            .rpm
                            .map_or(u64::MAX as i128, |r| r as i128 - d.usage.len() as i128),
                    )
                };
                let best = cands
                    .iter()
                    .map(|&i| head(&deps[i]))
                    .max()
                    .expect("non-empty");
                cands
                    .iter()
                    .copied()
                    .filter(|&i| head(&deps[i]) == best)
                    .collect()
            }
        };
        if tied.len() == 1 {
            return Some(tied[0]);
        }
        let n = tied.len() as u64;
        Some(tied[(self.draw() % n) as usize])
    }
}

/// Owns a request's attempt while it runs: dropped with an attempt in flight (the request's
/// task was cancelled: the client went away), it reports `Cancel` so the in-flight count and
/// a half-open probe are released.
struct Running<'a> {
    router: &'a std::sync::Mutex<Router>,
    att: Attempt,
    sent: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.sent {
            let now = self.att.deadline; // any time: a cancel reads no clock
            let _ = self
                .router
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .report(&mut self.att, Outcome::Cancel, 0, now);
        }
    }
}

/// One request through the router, for the Rust rungs' forwarders: `send(group, index)` makes
/// an attempt and says whether it failed in a retryable way (`Outcome::Fail`: 429, 5xx,
/// timeout, connection error) along with what to answer; `sleep(ns)` waits out a backoff;
/// `clock()` is monotonic nanoseconds. Returns the last attempt's result, or None when no
/// deployment was available at all.
/// A failure the router retries: 429, 5xx (timeouts and connection errors too).
pub fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

pub async fn drive<R, C, S, SF, W, WF>(
    router: &std::sync::Mutex<Router>,
    group: &str,
    tokens: u64,
    clock: C,
    mut send: S,
    mut sleep: W,
) -> Result<Option<R>, String>
where
    C: Fn() -> u64,
    S: FnMut(String, usize) -> SF,
    SF: std::future::Future<Output = (Outcome, R)>,
    W: FnMut(u64) -> WF,
    WF: std::future::Future<Output = ()>,
{
    let lock = || router.lock().unwrap_or_else(|e| e.into_inner());
    let att = lock().begin(group, tokens, clock())?;
    let mut run = Running {
        router,
        att,
        sent: false,
    };
    let mut last = None;
    loop {
        let step = lock().next(&mut run.att, clock())?;
        match step {
            Step::Wait { ns } => sleep(ns).await,
            Step::GiveUp { .. } => return Ok(last),
            Step::Send { group, index } => {
                run.sent = true;
                let t = clock();
                let (outcome, r) = send(group, index).await;
                run.sent = false;
                let now = clock();
                lock().report(&mut run.att, outcome, now.saturating_sub(t) / 1000, now)?;
                last = Some(r);
                if outcome != Outcome::Fail {
                    return Ok(last);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn router(strategy: &str, deps: usize) -> Router {
        let groups = serde_json::json!([{"name": "g", "deployments": vec![serde_json::json!({"weight": 1}); deps]}]);
        let cfg = serde_json::json!({"router": {"strategy": strategy, "allowed_fails": 2, "cooldown_ms": 100}, "groups": groups});
        Router::from_json(&cfg.to_string()).unwrap()
    }

    #[test]
    fn splitmix_matches_the_reference() {
        let mut r = router("simple-shuffle", 1);
        r.rng = 0;
        // splitmix64(seed 0): the reference's first output
        assert_eq!(r.draw(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn cooldown_then_half_open_then_closed() {
        let mut r = router("least-busy", 1);
        for t in [1, 2] {
            let mut a = r.begin("g", 1, t).unwrap();
            assert_eq!(
                r.next(&mut a, t).unwrap(),
                Step::Send {
                    group: "g".into(),
                    index: 0
                }
            );
            r.report(&mut a, Outcome::Fail, 5, t).unwrap();
        }
        assert_eq!(r.health("g", 0, 3).unwrap(), Health::Cooldown);
        let mut a = r.begin("g", 1, 3).unwrap();
        assert_eq!(
            r.next(&mut a, 3).unwrap(),
            Step::GiveUp {
                reason: "no_deployment"
            }
        );
        let t = 2 + 100_000_000;
        assert_eq!(r.health("g", 0, t).unwrap(), Health::HalfOpen);
        let mut a = r.begin("g", 1, t).unwrap();
        assert!(matches!(r.next(&mut a, t).unwrap(), Step::Send { .. }));
        let mut b = r.begin("g", 1, t).unwrap();
        assert_eq!(
            r.next(&mut b, t).unwrap(),
            Step::GiveUp {
                reason: "no_deployment"
            },
            "one probe at a time"
        );
        assert_eq!(r.report(&mut a, Outcome::Ok, 5, t).unwrap(), Health::Ok);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = parse_settings(&serde_json::json!({"num_retries": -1}), &["g"]).unwrap_err();
        assert_eq!(e, "router.num_retries: must be >= 0, got -1");
        let e =
            parse_settings(&serde_json::json!({"fallbacks": [{"g": ["h"]}]}), &["g"]).unwrap_err();
        assert_eq!(e, "router.fallbacks[0].g[0]: unknown model 'h'");
        let e = parse_settings(&serde_json::json!({"strategy": "fastest"}), &["g"]).unwrap_err();
        assert!(e.starts_with("router.strategy: expected one of"), "{e}");
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn two_groups() -> std::sync::Mutex<Router> {
        let cfg = serde_json::json!({
            "router": {"num_retries": 1, "backoff_base_ms": 0, "backoff_max_ms": 0, "allowed_fails": 5,
                       "fallbacks": [{"a": ["b"]}]},
            "groups": [{"name": "a", "deployments": [{"weight": 1}]}, {"name": "b", "deployments": [{"weight": 1}]}],
        });
        std::sync::Mutex::new(Router::from_json(&cfg.to_string()).unwrap())
    }

    #[test]
    fn drive_retries_then_falls_back() {
        let r = two_groups();
        let mut sent = Vec::new();
        let send = |g: String, i: usize| {
            sent.push((g.clone(), i));
            let o = if g == "a" { Outcome::Fail } else { Outcome::Ok };
            async move { (o, g) }
        };
        let out = block_on(drive(&r, "a", 1, || 5, send, |_| async {}));
        assert_eq!(out.unwrap().as_deref(), Some("b"));
        assert_eq!(
            sent,
            [
                ("a".to_string(), 0),
                ("a".to_string(), 0),
                ("b".to_string(), 0)
            ]
        );
    }

    #[test]
    fn a_dropped_drive_releases_its_attempt() {
        let r = two_groups();
        {
            let fut = drive(
                &r,
                "a",
                1,
                || 5,
                |_, _| std::future::pending::<(Outcome, ())>(),
                |_| async {},
            );
            let mut fut = std::pin::pin!(fut);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(r.lock().unwrap().in_flight("a", 0).unwrap(), 1);
        } // the client went away: the request's future is dropped mid-send
        assert_eq!(r.lock().unwrap().in_flight("a", 0).unwrap(), 0);
        assert_eq!(
            r.lock().unwrap().health("a", 0, 5).unwrap(),
            Health::Ok,
            "a cancel is no failure"
        );
    }
}
