"""Gateway configuration: a YAML file in the spirit of LiteLLM's config.yaml, or the
zero-config default built from `--upstream URL --api-key KEY`.

    model_list:                       # public model name -> upstream
      - model_name: gpt-4o-mini
        upstream:
          kind: openai                # openai | anthropic
          base_url: http://127.0.0.1:9000/v1   # a bare host gets /v1 appended
          model: gpt-4o-mini          # upstream model name (default: model_name)
          api_key_env: OPENAI_API_KEY # upstream key read from this env var (optional)
        weight: 1                     # router: this deployment's share in simple-shuffle
        rpm: 600                      # router: this deployment's requests/min (optional)
        tpm: 100000                   # router: its tokens/min (optional; (body bytes + 3)//4 a request)
      - model_name: gpt-4o-mini       # the same name again: a group of deployments (LiteLLM's
        upstream: {base_url: http://127.0.0.1:9001}   # convention), routed by `router:`;
                                      # a group's deployments share one kind
    router:                           # with a group or this section, the router is on
      strategy: simple-shuffle        # simple-shuffle | least-busy | latency-based | usage-based
      num_retries: 2                  # retries per request on 429/5xx/timeout/connection error
      retry_budget_ms: 10000          # no retry or fallback starts later than this after the first
      backoff_base_ms: 25             # retry k waits in [cap/2, cap], cap = min(base*2^k, max)
      backoff_max_ms: 1000
      allowed_fails: 3                # failures within fail_window_ms that cool a deployment down
      fail_window_ms: 60000
      cooldown_ms: 5000               # then half-open: one probe decides
      latency_window: 20              # latency-based: the moving window, in answers
      seed: 0                         # the router's random draws (docs/router.md)
      fallbacks: [{gpt-4o-mini: [other-model]}]   # then these groups, once each, in order
    passthrough: false                # unknown model names go to the first entry, unchanged
    keys:                             # client API keys, stored hashed
      - id: team-a
        sha256: <64 hex>              # sha256 of the secret (gateway.stages.auth.hash_key)
        rpm: 600                      # requests per minute (optional: unlimited)
        tpm: 200000                   # tokens per minute (optional: unlimited)
    waf:
      default_rules: true             # the shipped rule set (gateway.stages.waf.default_rules)
      rules: []                       # more rules: {id, kind: regex|literal, pattern, case_insensitive}
    ledger:
      dir: ./ledger                   # audit.wal lives here
      fsync: group                    # always | group | none
      group_delay_ms: 2.0
      layout: single                  # single (one WAL + MMR) | sharded (one per worker, under
                                      # shard-K/; docs/workers.md) | single-writer (records go
                                      # over a Unix socket to one ledger process; py, py+rs;
                                      # docs/single_writer.md); unset: single for one process,
                                      # sharded for --workers N > 1
      ack: background                 # background: answer, then record (docs/claims.md answer-first) |
                                      # durable: the answer waits until its record is durable
                                      # under the fsync policy (one fsync per batch, shared)
    background:
      queue_size: 10000
      policy: block                   # block (backpressure, loses nothing) | drop (counted)
      batch_window_ms: 0              # the audit worker gathers this long before a batch: more
                                      # req/s at c=16 (2 ms: +~10%), not a lower c=1 p50
    limits:
      max_body_bytes: 1048576
      max_header_bytes: 16384
      upstream_timeout_s: 30
      upstream_pool: 256
      max_in_flight: 1024             # chat requests served at once; beyond it 503 `overloaded`
                                      # with Retry-After, never forwarded (admission control)
    mode: py                          # py | py+rs | rs-core | rs-server
    stages: all                       # all | none | a list of auth, parse, waf, ratelimit, adapter
                                      # (the smuggling guard always runs; waf/ratelimit/adapter
                                      # imply parse); off stages cost nothing (gateway/pipeline.py)
    audit: true                       # false: no audit records at all (the cost of the ledger)
    plugins:                          # Python pre_call hooks (gateway/plugins.py): in-process on
      pre_call: []                    # py/py+rs, in a sidecar process on rs-server
      timeout_ms: 200                 # rs-server: per-call budget
      max_in_flight: 64               # rs-server: calls outstanding at once
    impl: {}                          # per-component overrides, e.g. {auth: rust}
    tracing:                          # OpenTelemetry spans, every rung (docs/tracing.md)
      mode: "off"                     # off | on | sampled:R (0 <= R <= 1); quote off/on in YAML
      endpoint: http://127.0.0.1:4318/v1/traces   # OTLP/HTTP (protobuf) traces URL
    shell: asgi                       # asgi | fastapi
    server: uvicorn                   # uvicorn | granian

Every error is a ConfigError whose message names the field (`keys[1].sha256: ...`). This
module is the one validator of the config for every rung: the Rust rungs get
`Config.normalized()` (as JSON) and only deserialize it. What each rung supports (`background`
on the Python rungs only, say) is gateway/ladder.py's table, checked with the serve options in
gateway.options.build_config.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.errors import ConfigError, InvalidInput
from gateway.ladder import LAYOUTS, SERVERS, SHELLS
from gateway.pipeline import parse_stages
from gateway.plugins import PluginConfig
from gateway.plugins import parse_config as parse_plugins
from gateway.router import parse_settings, router_config
from gateway.stages.auth import hash_key
from gateway.stages.waf import Waf, default_rules
from gateway.tracing import DEFAULT_ENDPOINT, OFF, TracingMode
from gateway.tracing import parse_mode as parse_tracing
from gateway.twins import MODES, Switches, parse_impl

FSYNC = ("always", "group", "none")
ACKS = ("background", "durable")
POLICIES = ("block", "drop")
MAX_IN_FLIGHT = 1024  # limits.max_in_flight's default
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Upstream:
    kind: str
    base_url: str
    model: str
    api_key: str | None

    @property
    def url(self) -> str:
        return self.base_url + ("/messages" if self.kind == "anthropic" else "/chat/completions")


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class Config:
    models: Mapping[str, Upstream]
    passthrough: bool
    keys: tuple[ApiKey, ...]
    waf_rules: tuple[Mapping[str, Any], ...]
    ledger_dir: str
    fsync: str = "group"
    group_delay_ms: float = 2.0
    ack: str = "background"
    ledger_layout: str | None = None  # gateway.audit.shards.resolve_layout: None = by the worker count
    queue_size: int = 10000
    queue_policy: str = "block"
    batch_window_ms: float = 0.0
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 16384
    upstream_timeout_s: float = 30.0
    upstream_pool: int = 256
    max_in_flight: int = MAX_IN_FLIGHT
    switches: Switches = field(default_factory=Switches)
    shell: str = "asgi"
    server: str = "uvicorn"
    stages: frozenset = frozenset(("auth", "parse", "waf", "ratelimit", "adapter"))
    audit: bool = True
    plugins: PluginConfig = field(default_factory=PluginConfig)
    # router (gateway/router.py): every deployment of each model, in model_list order, and the
    # router twins' config JSON; None when no group and no `router:` section (one upstream a model)
    groups: Mapping[str, tuple[Upstream, ...]] = field(default_factory=dict)
    router: str | None = None
    tracing: TracingMode = OFF
    tracing_endpoint: str = DEFAULT_ENDPOINT
    # the fields the YAML set itself (`shell`, `server`, `background.queue_size`, ...): an
    # option a rung cannot honour is refused only when asked for (gateway/ladder.py)
    given: frozenset[str] = frozenset()

    def route(self, model: str) -> tuple[Upstream, str] | None:
        """Public model name -> (upstream, upstream model name), or None if unknown."""
        up = self.models.get(model)
        if up is not None:
            return up, up.model
        if self.passthrough and self.models:
            return next(iter(self.models.values())), model
        return None

    def normalized(self) -> dict[str, Any]:
        """The configuration as the Rust engine reads it (native/engine/src/spec.rs `Config`):
        every value checked here, defaults filled in; the engine only deserializes it.
        Python-only settings (`background.*`, shell, server, twins) are not in it: the Rust
        rungs refuse them when given (gateway/ladder.py)."""
        return {
            "pipeline": {
                "keys": [{"id": k.id, "sha256": k.sha256, "rpm": k.rpm, "tpm": k.tpm} for k in self.keys],
                "waf_rules": [
                    {
                        "id": r["id"],
                        "kind": r["kind"],
                        "pattern": r["pattern"],
                        "case_insensitive": bool(r.get("case_insensitive", False)),
                    }
                    for r in self.waf_rules
                ],
                "models": [
                    {"name": name, "kind": up.kind, "url": up.url, "model": up.model, "api_key": up.api_key}
                    for name, up in self.models.items()
                ],
                "passthrough": self.passthrough,
                "max_body_bytes": self.max_body_bytes,
                "max_header_bytes": self.max_header_bytes,
                "stages": sorted(self.stages),
                "audit": self.audit,
                # the router (docs/router.md): None keeps the one-upstream-a-model path
                "router": orjson.loads(self.router) if self.router is not None else None,
                "deployments": [
                    {"group": name, "kind": up.kind, "url": up.url, "model": up.model, "api_key": up.api_key}
                    for name, ups in self.groups.items()
                    for up in ups
                ]
                if self.router is not None
                else [],
            },
            "ledger": {
                "dir": self.ledger_dir,
                "fsync": self.fsync,
                "group_delay_ms": self.group_delay_ms,
                "ack": self.ack,
            },
            "limits": {
                "upstream_timeout_s": self.upstream_timeout_s,
                "upstream_pool": self.upstream_pool,
                "max_in_flight": self.max_in_flight,
            },
            "plugins": {
                "pre_call": list(self.plugins.pre_call),
                "timeout_ms": float(self.plugins.timeout_ms),
                "max_in_flight": self.plugins.max_in_flight,
            },
            "tracing": {
                "mode": self.tracing.kind,
                "ratio": self.tracing.ratio,
                "endpoint": self.tracing_endpoint,
            },
        }


def engine_spec(config: Config, threads: int | None = None) -> dict[str, Any]:
    """What the Rust engine is built from (`RsCore(spec)` on rs-core; the rs-server binary's
    spec adds its server options, gateway/rungs/rs_server.py): the normalized configuration, and the
    engine's options. `threads`: Tokio worker threads (None: one per CPU this process may
    run on, i.e. the gateway cores it is pinned to)."""
    return {
        "config": config.normalized(),
        "engine": {
            "rung": config.switches.mode,
            "threads": threads or len(os.sched_getaffinity(0)),
            # record entropy sums floats as this interpreter's sum() does (Neumaier from 3.12)
            "float_sum": "neumaier" if sys.version_info >= (3, 12) else "plain",
            # a pause before each audit batch, so tests can stop a gateway with work queued
            # (the same knob as gateway/background.py's)
            "ledger_delay_ms": float(os.environ.get("GATEWAYLAB_LEDGER_DELAY_MS", "0") or 0),
        },
    }


def normalise_base_url(url: str, where: str) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{where}: expected a URL string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL")
    url = url.rstrip("/")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


def _get(m: Mapping, key: str, where: str, types, default=..., check=None):
    if key not in m or m[key] is None:
        if default is ...:
            raise ConfigError(f"{where}{key}: required")
        return default
    v = m[key]
    if types is int and type(v) is bool or not isinstance(v, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise ConfigError(f"{where}{key}: expected {names}, got {v!r}")
    if check is not None:
        msg = check(v)
        if msg:
            raise ConfigError(f"{where}{key}: {msg}")
    return v


def _positive(v):
    return None if v > 0 else f"must be > 0, got {v!r}"


def _one_of(choices):
    return lambda v: None if v in choices else f"expected one of {', '.join(choices)}, got {v!r}"


_TOP = {
    "model_list",
    "passthrough",
    "keys",
    "waf",
    "ledger",
    "background",
    "limits",
    "mode",
    "impl",
    "shell",
    "server",
    "stages",
    "audit",
    "plugins",
    "router",
    "tracing",
}


def from_mapping(
    d: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    base_dir: str = ".",
    ledger_dir: str | None = None,
) -> Config:
    """`ledger_dir` (`--ledger DIR`) is the ledger directory whatever `ledger.dir` says, and
    satisfies it when the file leaves it unset."""
    env = os.environ if env is None else env
    if not isinstance(d, Mapping):
        raise ConfigError("config: the top level must be a mapping")
    unknown = set(d) - _TOP
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown field; known: {', '.join(sorted(_TOP))}")

    models: dict[str, Upstream] = {}
    groups: dict[str, list[Upstream]] = {}
    specs: dict[str, list[dict]] = {}
    first: dict[str, int] = {}
    ml = _get(d, "model_list", "", list)
    if not ml:
        raise ConfigError("model_list: needs at least one model")
    for i, entry in enumerate(ml):
        w = f"model_list[{i}]."
        if not isinstance(entry, Mapping):
            raise ConfigError(f"model_list[{i}]: expected a mapping")
        name = _get(entry, "model_name", w, str)
        up = _get(entry, "upstream", w, Mapping)
        w2 = f"{w}upstream."
        kind = _get(up, "kind", w2, str, "openai", _one_of(("openai", "anthropic")))
        base = normalise_base_url(_get(up, "base_url", w2, str), f"{w2}base_url")
        key_env = _get(up, "api_key_env", w2, str, None)
        api_key = None
        if key_env is not None:
            api_key = env.get(key_env)
            if api_key is None:
                raise ConfigError(f"{w2}api_key_env: environment variable {key_env} is not set")
        weight = _get(entry, "weight", w, int, 1, _positive)
        spec = {
            "weight": weight,
            "rpm": _get(entry, "rpm", w, int, None, _positive),
            "tpm": _get(entry, "tpm", w, int, None, _positive),
        }
        upstream = Upstream(kind, base, _get(up, "model", w2, str, name), api_key)
        if name in groups:
            if kind != groups[name][0].kind:
                raise ConfigError(
                    f"{w2}kind: the deployments of {name!r} share one kind; "
                    f"model_list[{first[name]}] is {groups[name][0].kind}"
                )
        else:
            models[name], groups[name], specs[name], first[name] = upstream, [], [], i
        groups[name].append(upstream)
        specs[name].append(spec)
    router_json = None
    if "router" in d or any(len(g) > 1 for g in groups.values()):
        settings = parse_settings(d.get("router"), groups)
        for i, (src, dst) in enumerate(settings["fallbacks"]):
            for j, name in enumerate(dst):
                if groups[name][0].kind != groups[src][0].kind:
                    raise ConfigError(
                        f"router.fallbacks[{i}].{src}[{j}]: {name!r} is {groups[name][0].kind} and "
                        f"{src!r} is {groups[src][0].kind}; a fallback shares the kind"
                    )
        router_json = router_config(d.get("router"), specs)

    keys: list[ApiKey] = []
    for i, k in enumerate(_get(d, "keys", "", list, [])):
        w = f"keys[{i}]."
        if not isinstance(k, Mapping):
            raise ConfigError(f"keys[{i}]: expected a mapping")
        kid = _get(k, "id", w, str)
        if any(x.id == kid for x in keys):
            raise ConfigError(f"{w}id: duplicate {kid!r}")
        digest = _get(
            k,
            "sha256",
            w,
            str,
            check=lambda v: (
                None if _HEX64.fullmatch(v) else "expected 64 lowercase hex digits (sha256 of the key)"
            ),
        )
        rpm = _get(k, "rpm", w, int, None, _positive)
        tpm = _get(k, "tpm", w, int, None, _positive)
        if (rpm is None) != (tpm is None):
            raise ConfigError(
                f"{w}{'tpm' if tpm is None else 'rpm'}: rpm and tpm go together (set both or neither)"
            )
        keys.append(ApiKey(kid, digest, rpm, tpm))
    if not keys:
        raise ConfigError("keys: needs at least one API key")

    waf = _get(d, "waf", "", Mapping, {})
    rules: list = []
    if _get(waf, "default_rules", "waf.", bool, True):
        rules += default_rules()
    extra = _get(waf, "rules", "waf.", list, [])
    for i, r in enumerate(extra):
        try:
            Waf([r])
        except InvalidInput as e:
            raise ConfigError(f"waf.rules[{i}]: {e}") from None
    rules += extra
    try:
        Waf(rules)
    except InvalidInput as e:
        raise ConfigError(f"waf.rules: {e}") from None

    led = _get(d, "ledger", "", Mapping, {})
    in_file = _get(led, "dir", "ledger.", str, None)
    if ledger_dir is None:
        if in_file is None:
            raise ConfigError("ledger.dir: required (or give --ledger DIR)")
        ledger_dir = os.path.join(base_dir, in_file) if not os.path.isabs(in_file) else in_file
    bg = _get(d, "background", "", Mapping, {})
    lim = _get(d, "limits", "", Mapping, {})
    mode = _get(d, "mode", "", str, None, _one_of(tuple(MODES)))
    impl = _get(d, "impl", "", Mapping, {})
    try:
        parse_impl(dict(impl))
    except ConfigError as e:
        raise ConfigError(f"impl: {e}") from None
    stages_raw = d.get("stages", "all")
    if (
        stages_raw is None
        or not isinstance(stages_raw, (str, list))
        or (isinstance(stages_raw, list) and not all(isinstance(x, str) for x in stages_raw))
    ):
        raise ConfigError(f"stages: expected all, none or a list of stage names, got {stages_raw!r}")
    stages = parse_stages(stages_raw)
    tr = _get(d, "tracing", "", Mapping, {})
    unknown = set(tr) - {"mode", "endpoint"}
    if unknown:
        raise ConfigError(f"tracing.{sorted(unknown)[0]}: unknown field; known: endpoint, mode")
    tmode = tr.get("mode", "off")
    if type(tmode) is bool:  # YAML 1.1 reads a bare off/on as a boolean
        tmode = "on" if tmode else "off"
    try:
        tracing = parse_tracing(tmode)
    except ConfigError as e:
        raise ConfigError(f"tracing.mode: {str(e).removeprefix('tracing: ')}") from None
    endpoint = _get(
        tr,
        "endpoint",
        "tracing.",
        str,
        DEFAULT_ENDPOINT,
        lambda v: None if v.startswith(("http://", "https://")) else f"expected an http(s) URL, got {v!r}",
    )
    return Config(
        models=models,
        passthrough=_get(d, "passthrough", "", bool, False),
        keys=tuple(keys),
        waf_rules=tuple(rules),
        ledger_dir=ledger_dir,
        fsync=_get(led, "fsync", "ledger.", str, "group", _one_of(FSYNC)),
        group_delay_ms=float(_get(led, "group_delay_ms", "ledger.", (int, float), 2.0, _positive)),
        ack=_get(led, "ack", "ledger.", str, "background", _one_of(ACKS)),
        ledger_layout=_get(led, "layout", "ledger.", str, None, _one_of(LAYOUTS)),
        queue_size=_get(bg, "queue_size", "background.", int, 10000, _positive),
        queue_policy=_get(bg, "policy", "background.", str, "block", _one_of(POLICIES)),
        batch_window_ms=float(
            _get(
                bg,
                "batch_window_ms",
                "background.",
                (int, float),
                0.0,
                lambda v: None if v >= 0 else f"must be >= 0, got {v!r}",
            )
        ),
        max_body_bytes=_get(lim, "max_body_bytes", "limits.", int, 1 << 20, _positive),
        max_header_bytes=_get(lim, "max_header_bytes", "limits.", int, 16384, _positive),
        upstream_timeout_s=float(_get(lim, "upstream_timeout_s", "limits.", (int, float), 30.0, _positive)),
        upstream_pool=_get(lim, "upstream_pool", "limits.", int, 256, _positive),
        max_in_flight=_get(lim, "max_in_flight", "limits.", int, MAX_IN_FLIGHT, _positive),
        switches=Switches.resolve(mode=mode, impl=dict(impl)),  # unset -> $GATEWAYLAB_MODE / py
        shell=_get(d, "shell", "", str, "asgi", _one_of(SHELLS)),
        server=_get(d, "server", "", str, "uvicorn", _one_of(SERVERS)),
        stages=stages,
        audit=_get(d, "audit", "", bool, True),
        plugins=parse_plugins(_get(d, "plugins", "", Mapping, {})),
        groups={n: tuple(g) for n, g in groups.items()},
        router=router_json,
        tracing=tracing,
        tracing_endpoint=endpoint,
        given=frozenset([k for k in ("shell", "server") if k in d] + [f"background.{k}" for k in bg]),
    )


def load(path: str, env: Mapping[str, str] | None = None, ledger_dir: str | None = None) -> Config:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {e}") from None
    return from_mapping(
        data or {}, env, base_dir=os.path.dirname(os.path.abspath(path)), ledger_dir=ledger_dir
    )


def embedded(
    upstream: str,
    api_key: str,
    ledger_dir: str,
    kind: str = "openai",
    rpm: int | None = None,
    tpm: int | None = None,
) -> Config:
    """The zero-config default: one model `mock` on `upstream` (any other model name is
    passed through to it), one client key `default` with secret `api_key`."""
    if not api_key:
        raise ConfigError("--api-key: must not be empty")
    normalise_base_url(upstream, "--upstream")  # name the flag the user typed
    return from_mapping(
        {
            "model_list": [{"model_name": "mock", "upstream": {"kind": kind, "base_url": upstream}}],
            "passthrough": True,
            "keys": [{"id": "default", "sha256": hash_key(api_key), "rpm": rpm, "tpm": tpm}],
            "ledger": {"dir": ledger_dir},
        },
        env={},
    )
