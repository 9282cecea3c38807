"""The pipeline twin: what to do with one chat request, decided without I/O or clocks.

    decision = pipeline.decide(Request(method, path, headers, body), Context(time_ns, mono_ns, rid))
    Rejection(status, code, message, headers, audit)   -> answer now (audited when `audit` is set)
    Forwarding(url, headers, body, stream, key_id, audit, ...) -> send upstream, then `respond(...)`
                                                          or a `StreamRelay` for SSE

Order of the stages, each switchable with `stages` (the guard always runs):

    guard (head + body size) -> auth -> parse/validate -> WAF -> route -> rate limit -> adapter

Each stage counts the times it ran (`Pipeline.stage_runs()`, RUN_STAGES; exported on /metrics as
`gateway_stage_runs_total{stage}` so a sweep can show that every stage its label claims ran):
`ratelimit` counts only checks against a key that has limits (a key without limits is let
through without touching a bucket), and `forward` / `respond` count upstream answers handed
back to the pipeline (`respond` for a whole answer, `relay` for a stream).

Audited: every request that passed auth and whose body parsed (WAF blocks, unknown models,
rate-limit rejections and upstream failures included). Guard, auth and malformed-body
rejections are not: they carry no identity or model to account for, and auditing them would
let anyone fill the ledger.

The Rust twin is `native/core/src/pipeline.rs`; both give the same verdict, status, error
code and upstream bytes for the same request (tests/pipeline/test_decide_parity.py). Error
messages may differ only where they quote a JSON parser's own words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from time import time_ns as _ns

import orjson

from gateway.errors import (
    ConfigError,
    GuardError,
    InvalidInput,
    UpstreamMalformed,
    UpstreamStatusError,
    error_type,
)
from gateway.metrics import RUN_STAGES
from gateway.stages.guard import check_headers

CHAT_PATH = "/v1/chat/completions"
STAGES = ("auth", "parse", "waf", "ratelimit", "adapter")
_NEEDS_PARSE = frozenset(("waf", "ratelimit", "adapter"))
_ROLES = frozenset(("system", "user", "assistant", "tool", "developer", "function"))
ANONYMOUS = "anonymous"  # key id of requests when the auth stage is off
# what Pipeline.stage_runs() counts (RUN_STAGES: the metric names' one list, which the Rust
# twin counts too; the rungs add "audit"), by position in that list
_GUARD, _AUTH, _PARSE, _WAF, _ROUTE, _RL, _ADAPT, _FORWARD, _RESPOND = map(
    RUN_STAGES.index, ("guard", "auth", "parse", "waf", "route", "ratelimit", "adapter", "forward", "respond")
)


def parse_stages(spec: str | Iterable[str] | None) -> frozenset[str]:
    """`all` | `none` | `auth,waf,...` -> the set of enabled stages (ConfigError names the bad one)."""
    if spec is None or spec == "all":
        return frozenset(STAGES)
    if spec == "none":
        return frozenset()
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    for s in names:
        if s not in STAGES:
            raise ConfigError(f"stages: unknown stage {s!r}; known: all, none, {', '.join(STAGES)}")
    return frozenset(names)


def stages_label(stages: frozenset[str]) -> str:
    if stages == frozenset(STAGES):
        return "all"
    return ",".join(s for s in STAGES if s in stages) or "none"


def error_body(status: int, message: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type(status, code), "code": code}})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: list  # raw (name, value) bytes pairs, names lower-case (as ASGI gives them)
    body: bytes


@dataclass(frozen=True, slots=True)
class Context:
    """What a pure function cannot read for itself: the clocks and the request's id."""

    time_ns: int
    mono_ns: int
    request_id: str
    # a sampled request's stage marks: decide() appends (stage, time.time_ns()) as each
    # stage starts (gateway/tracing.py makes them spans); None (tracing off, or not sampled)
    marks: list | None = None


@dataclass(slots=True)
class AuditMaterial:
    """The request-derived half of an audit record (gateway/audit/job.py adds the response)."""

    time_ns: int
    request_id: str
    key_id: str
    model: str
    request_body: bytes
    prompt_tokens: int
    waf: str
    trace_id: str = ""  # a sampled request's trace id (set by the tracing layer; "" = none)


@dataclass(slots=True)
class Rejection:
    status: int
    code: str
    message: str
    headers: list  # extra (name, value) bytes pairs
    audit: AuditMaterial | None

    @property
    def body(self) -> bytes:
        return error_body(self.status, self.message, self.code)


@dataclass(slots=True)
class Forwarding:
    url: str
    headers: list  # (name, value) str pairs for the upstream request
    body: bytes
    stream: bool
    kind: str  # openai | anthropic: how the answer is adapted back
    public_model: str
    adapt: bool  # the adapter stage is on: answers are adapted back
    key_id: str  # who asked (ANONYMOUS with the auth stage off), audited or not
    audit: AuditMaterial | None


class BadRequest(Exception):
    def __init__(self, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.code = message, code


def prompt_text(req) -> str:
    """Validate an OpenAI chat request (already parsed) and return its prompt text for the WAF."""
    if type(req) is not dict:
        raise BadRequest("request body must be a JSON object")
    model = req.get("model")
    if type(model) is not str or not model:
        raise BadRequest("'model' is required and must be a non-empty string", "invalid_model")
    msgs = req.get("messages")
    if type(msgs) is not list or not msgs:
        raise BadRequest("'messages' is required and must be a non-empty array", "invalid_messages")
    parts = []
    for i, m in enumerate(msgs):
        if type(m) is not dict:
            raise BadRequest(f"messages[{i}] must be an object", "invalid_messages")
        role = m.get("role")
        if type(role) is not str or role not in _ROLES:  # (an unhashable role must not raise TypeError)
            raise BadRequest(
                f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}", "invalid_messages"
            )
        c = m.get("content")
        if type(c) is str:
            parts.append(c)
        elif type(c) is list:
            for j, p in enumerate(c):
                if type(p) is not dict or type(p.get("type")) is not str:
                    raise BadRequest(
                        f"messages[{i}].content[{j}] must be a content part object", "invalid_messages"
                    )
                t = p.get("text")
                if t is not None:
                    if type(t) is not str:
                        raise BadRequest(
                            f"messages[{i}].content[{j}].text must be a string", "invalid_messages"
                        )
                    parts.append(t)
        elif c is not None or role != "assistant":
            raise BadRequest(
                f"messages[{i}].content must be a string or an array of parts", "invalid_messages"
            )
    stream = req.get("stream")
    if stream is not None and type(stream) is not bool:
        raise BadRequest("'stream' must be a boolean", "invalid_stream")
    mt = req.get("max_tokens")
    if mt is not None and (type(mt) is not int or mt < 1):
        raise BadRequest("'max_tokens' must be a positive integer", "invalid_max_tokens")
    return parts[0] if len(parts) == 1 else "\n".join(parts)


def upstream_headers(kind: str, api_key: str | None) -> list[tuple[str, str]]:
    h = [("Content-Type", "application/json")]
    if kind == "anthropic":
        h.append(("anthropic-version", "2023-06-01"))
        if api_key:
            h.append(("x-api-key", api_key))
    elif api_key:
        h.append(("Authorization", f"Bearer {api_key}"))
    return h


def _reject(
    status: int, code: str, message: str, audit: AuditMaterial | None = None, headers: list | None = None
) -> Rejection:
    return Rejection(status, code, message, headers or [], audit)


class Pipeline:
    """The Python twin. Components come from the switches (py: Python twins; py+rs: Rust ones)."""

    def __init__(self, config, stages: frozenset[str] = frozenset(STAGES), audit: bool = True):
        sw = config.switches
        self.config = config
        self.stages = stages
        self.audit = audit
        self._auth_on = "auth" in stages
        self._parse_on = bool(stages & (_NEEDS_PARSE | {"parse"}))
        self._waf_on = "waf" in stages
        self._rl_on = "ratelimit" in stages
        self._adapt_on = "adapter" in stages
        self.auth = sw.load("auth")({k.id: k.sha256 for k in config.keys})
        self.waf = sw.load("waf")([dict(r) for r in config.waf_rules])
        limits = {k.id: (k.rpm, k.tpm) for k in config.keys if k.rpm is not None}
        self.ratelimit = sw.load("ratelimit")(limits)
        self._limited = frozenset(limits)
        # times each stage ran (RUN_STAGES): plain ints, everything runs on the event loop
        self.runs = [0] * len(RUN_STAGES)
        adapter_cls = sw.load("adapter")
        self.adapters = {"openai": adapter_cls("openai"), "anthropic": adapter_cls("anthropic")}
        self._up_headers = {up: upstream_headers(up.kind, up.api_key) for up in config.models.values()}
        self._default = next(iter(config.models.values()))

    def stage_runs(self) -> dict[str, int]:
        """{stage: times it ran} since start, for every stage of RUN_STAGES."""
        return dict(zip(RUN_STAGES, self.runs))

    def decide(self, req: Request, ctx: Context) -> Rejection | Forwarding:
        cfg = self.config
        m = ctx.marks  # a tracing concern only: a clock read per stage, when sampled
        runs = self.runs
        if req.path != CHAT_PATH:
            return _reject(404, "not_found", f"no route for {req.method} {req.path}")
        if req.method != "POST":
            return _reject(405, "method_not_allowed", f"method {req.method} not allowed on {req.path}")
        if m is not None:
            m.append(("guard", _ns()))
        runs[_GUARD] += 1
        try:
            authorization = check_headers(req.headers, cfg.max_header_bytes, cfg.max_body_bytes)
        except GuardError as e:
            return _reject(e.status, e.code, e.message, headers=e.headers)
        body = req.body
        if len(body) > cfg.max_body_bytes:
            return _reject(413, "body_too_large", f"request body exceeds {cfg.max_body_bytes} bytes")
        if self._auth_on:
            if m is not None:
                m.append(("auth", _ns()))
            runs[_AUTH] += 1
            key_id = self.auth.check(authorization)
            if key_id is None:
                return _reject(
                    401,
                    "invalid_api_key",
                    "missing or invalid API key"
                    if authorization
                    else "missing API key (Authorization: Bearer ...)",
                )
        else:
            key_id = ANONYMOUS
        if not self._parse_on:
            up = self._default
            audit = (
                AuditMaterial(ctx.time_ns, ctx.request_id, key_id, "", body, 0, "allow")
                if self.audit
                else None
            )
            return Forwarding(up.url, self._up_headers[up], body, False, up.kind, "", False, key_id, audit)
        if m is not None:
            m.append(("parse", _ns()))
        runs[_PARSE] += 1
        try:
            parsed = orjson.loads(body)
            text = prompt_text(parsed)
        except orjson.JSONDecodeError as e:
            return _reject(400, "invalid_json", f"invalid JSON body: {e}")
        except BadRequest as e:
            return _reject(400, e.code, e.message)
        model = parsed["model"]
        prompt_tokens = (len(text) + 3) // 4
        audit = (
            AuditMaterial(ctx.time_ns, ctx.request_id, key_id, model, body, prompt_tokens, "allow")
            if self.audit
            else None
        )
        if self._waf_on:
            if m is not None:
                m.append(("waf", _ns()))
            runs[_WAF] += 1
            rule = self.waf.scan(text)
            if rule is not None:
                if audit is not None:
                    audit.waf = "block:" + rule
                return _reject(403, "waf_blocked", f"request blocked by WAF rule {rule}", audit)
        if m is not None:
            m.append(("route", _ns()))
        runs[_ROUTE] += 1
        route = cfg.route(model)
        if route is None:
            return _reject(404, "model_not_found", f"the model {model!r} does not exist", audit)
        upstream, upstream_model = route
        if self._rl_on:
            if m is not None:
                m.append(("ratelimit", _ns()))
            cost = prompt_tokens + (parsed.get("max_tokens") or 0)
            if key_id in self._limited:
                runs[_RL] += 1
            wait = self.ratelimit.check(key_id, cost, ctx.mono_ns)
            if wait > 0.0:
                if math.isinf(wait):
                    return _reject(
                        429,
                        "tokens_exceed_limit",
                        f"request needs {cost} tokens, more than this key's per-minute limit",
                        audit,
                    )
                return _reject(
                    429,
                    "rate_limit_exceeded",
                    f"rate limit exceeded; retry after {wait:.3f}s",
                    audit,
                    [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                )
        if self._adapt_on:
            if m is not None:
                m.append(("adapter", _ns()))
            runs[_ADAPT] += 1
            try:
                up_body = self.adapters[upstream.kind].to_upstream(body, upstream_model)
            except InvalidInput as e:
                return _reject(
                    400,
                    "invalid_request",
                    f"request cannot be sent to a {upstream.kind} upstream: {e}",
                    audit,
                )
        else:
            up_body = body
        return Forwarding(
            upstream.url,
            self._up_headers[upstream],
            up_body,
            parsed.get("stream") is True,
            upstream.kind,
            model,
            self._adapt_on,
            key_id,
            audit,
        )

    def respond(self, fwd: Forwarding, status: int, body: bytes) -> tuple[int, bytes, str | None]:
        """An upstream answer -> (status, body, error code or None). Raises UpstreamStatusError
        (a 5xx/1xx/3xx) and UpstreamMalformed (a 2xx the adapter cannot read)."""
        runs = self.runs
        runs[_FORWARD] += 1
        runs[_RESPOND] += 1
        if status >= 500 or status < 200 or 300 <= status < 400:
            raise UpstreamStatusError(status, body)
        if status >= 400:
            if _is_openai_error(body):
                return status, body, None
            return (
                status,
                error_body(status, f"upstream answered HTTP {status}", "upstream_status"),
                "upstream_status",
            )
        if not fwd.adapt:
            return 200, body, None
        try:
            return 200, self.adapters[fwd.kind].from_upstream(body, fwd.public_model), None
        except InvalidInput as e:
            raise UpstreamMalformed(f"upstream sent a malformed response: {e}") from None

    def relay(self, fwd: Forwarding) -> StreamRelay:
        self.runs[_FORWARD] += 1
        return StreamRelay(self.adapters[fwd.kind] if fwd.adapt else None, fwd.public_model)


class StreamRelay:
    """Upstream SSE bytes -> OpenAI SSE events, as each upstream chunk arrives. `feed` returns
    the bytes to send now; `collected` holds every OpenAI chunk JSON sent (for the audit)."""

    __slots__ = ("_adapter", "_model", "_buf", "collected")

    def __init__(self, adapter, public_model: str):
        self._adapter = adapter
        self._model = public_model
        self._buf = b""
        self.collected: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        """Raises InvalidInput on an event the adapter cannot read."""
        if not chunk:
            return b""
        if self._adapter is None:  # adapter stage off: relay the upstream's bytes unchanged
            return chunk
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = self._buf + chunk
        out = []
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event, buf = buf[:end], buf[end + 2 :]
            data = _sse_data(event)
            if data is not None:
                for c in self._adapter.stream_event(data, self._model):
                    self.collected.append(c)
                    out.append(b"data: " + c + b"\n\n")
        self._buf = buf
        return b"".join(out)

    def done(self) -> bytes:
        return b"" if self._adapter is None else b"data: [DONE]\n\n"


def _sse_data(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event block (several data lines joined by \\n)."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].lstrip(b" ")
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _is_openai_error(body: bytes) -> bool:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return type(obj) is dict and type(obj.get("error")) is dict
