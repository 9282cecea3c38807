"""Type stub of the Rust extension `gateway._native` (hand-written, checked against the
built module by `python -m mypy.stubtest gateway._native` in tests/audit/test_native_stub.py).

One section per area; each Rust twin mirrors a Python twin whose Protocol is the contract
(`gateway/audit/protocols.py`, `gateway/stages/protocols.py`). Errors are the shared
classes of `gateway.errors` (InvalidInput, AuditIndexError, ProofError, WalCorruptError,
WalLockedError, WalError, NativePanic). Add your component's section here when you expose it.
"""

from collections.abc import Iterable, Mapping
from os import PathLike
from typing import Any, Final, Self, TypeAlias, final

# ---------------------------------------------------------------------------------------
# Build and GIL accounting
# ---------------------------------------------------------------------------------------

__all__: list[str]
__version__: Final[str]
build_profile: Final[str]
"""'release' or 'debug'; benchmarks refuse to report a debug build."""

def gil_stats(reset: bool = False) -> dict[str, dict[str, int]]:
    """{entry point: {calls, hold_ns, detached_ns, reacquire_wait_ns, max_reacquire_wait_ns}};
    `reset=True` zeroes the counters after reading them."""

def _debug_panic(msg: str) -> None:
    """Panics in Rust on purpose: raises gateway.errors.NativePanic."""

# ---------------------------------------------------------------------------------------
# Audit core: hashing, canonical records, entropy (twins in gateway/audit/*.py)
# ---------------------------------------------------------------------------------------

_BytesLike: TypeAlias = bytes | bytearray | memoryview

def sha256_hex(data: _BytesLike) -> str:
    """Lowercase hex SHA-256; non-bytes -> InvalidInput. Large inputs hash detached."""

def sha256_many(payloads: Iterable[_BytesLike], with_nodes: bool = False) -> None:
    """Benchmark helper (the SHA-256 bound): hash every payload as an MMR leaf H(00||p) with
    the GIL released and discard the results; with_nodes=True also does the n - popcount(n)
    65-byte node hashes an MMR of n leaves computes. No tree bookkeeping, no storage."""

def encode_record(record: Mapping[str, int | str]) -> bytes:
    """json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode();
    keys str, values int (not bool, within i64) or str, else InvalidInput."""

def entropy_millibits(body: _BytesLike) -> int:
    """Shannon entropy (millibits) of an OpenAI chat-completion JSON body; not JSON -> InvalidInput."""

def text_entropy_millibits(text: str) -> int:
    """Entropy (millibits) of the ASCII-whitespace tokens of `text`."""

# ---------------------------------------------------------------------------------------
# Audit core: Merkle Mountain Range and write-ahead log (Protocols in gateway/audit/protocols.py)
# ---------------------------------------------------------------------------------------

@final
class MerkleMountainRange:
    """MMR v2 over SHA-256 (leaf H(00||p), node H(01||l||r), root H(02||peaks)).
    append_many hashes with the GIL released."""

    def __new__(cls, store: str | PathLike[str] | None = None) -> Self: ...
    def append(self, payload: _BytesLike) -> int: ...
    def append_many(self, payloads: Iterable[_BytesLike]) -> int: ...
    @property
    def store_path(self) -> str | None: ...
    @property
    def resident_hashes(self) -> int: ...
    def checkpoints(self) -> list[dict[str, Any]]: ...
    def truncate(self, count: int) -> None: ...
    def flush(self, sync: bool = True) -> None: ...
    def checkpoint(self, wal_end: int, last_frame_len: int, sync: bool = True) -> dict[str, Any]: ...
    def close(self) -> None: ...
    @property
    def leaf_count(self) -> int: ...
    def __len__(self) -> int: ...
    def root(self) -> str: ...
    def peaks(self) -> list[str]: ...
    def leaf_hash(self, index: int) -> str: ...
    def inclusion_proof(self, index: int) -> dict[str, Any]: ...
    def consistency_proof(self, old_count: int) -> dict[str, Any]: ...
    @staticmethod
    def verify_inclusion(
        proof: Mapping[str, Any] | str | bytes | bytearray, payload: _BytesLike | None = None
    ) -> bool: ...
    @staticmethod
    def verify_consistency(proof: Mapping[str, Any] | str | bytes | bytearray) -> bool: ...

@final
class WriteAheadLog:
    """WAL v1 writer (flock on the file; fsync policies always/group/none; recovery at open).
    All file I/O runs with the GIL released."""

    def __new__(
        cls,
        path: str | PathLike[str],
        fsync: str = "group",
        group_delay_ms: float = 2.0,
        group_max_records: int = 256,
        trusted: tuple[int, int] | None = None,
    ) -> Self: ...
    @property
    def recovery(self) -> dict[str, int]:
        """{"records": int, "truncated_bytes": int}"""
    @property
    def path(self) -> str: ...
    @property
    def fsync_policy(self) -> str: ...
    @property
    def version(self) -> int:
        """The file's format version: 2, or 1 for a WAL written before v2."""
    @property
    def count(self) -> int: ...
    @property
    def durable_count(self) -> int: ...
    def append(self, payload: _BytesLike) -> int: ...
    def append_many(self, payloads: Iterable[_BytesLike]) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    @staticmethod
    def replay(path: str | PathLike[str], offset: int = 0) -> list[bytes]: ...

# ---------------------------------------------------------------------------------------
# Measuring tools: mock upstream and load generator (native/py/src/tools.rs)
# ---------------------------------------------------------------------------------------

def run_mock(config_json: str = "{}") -> None:
    """Serve the mock upstream (MockConfig fields as JSON) until SIGTERM/SIGINT, GIL released;
    prints `listening on http://HOST:PORT` once bound. Bad config -> InvalidInput."""

def run_load(config_json: str) -> str:
    """One bounded load-generator run (LoadConfig fields as JSON), GIL released; returns the
    result JSON. Bad config -> InvalidInput."""

# ---------------------------------------------------------------------------------------
# Hot-path stages (Protocols in gateway/stages/protocols.py; native/py/src/{auth,waf,
# ratelimit,adapter,forwarder}.rs). Bad input -> InvalidInput, as in the Python twins.
# ---------------------------------------------------------------------------------------

@final
class ApiKeyAuth:
    """Bearer keys stored as lowercase SHA-256 hex; sha2 + subtle constant-time compare."""

    def __new__(cls, keys: Mapping[str, str]) -> Self: ...
    def check(self, authorization: bytes | bytearray | None) -> str | None: ...

@final
class Waf:
    """Ordered regex/literal rules with Python `re` semantics; first matching rule wins.
    Texts over 4 KiB are scanned with the GIL released."""

    def __new__(cls, rules: Iterable[Mapping[str, Any]]) -> Self: ...
    @property
    def ids(self) -> tuple[str, ...]: ...
    def scan(self, text: str) -> str | None: ...

@final
class RateLimiter:
    """Two token buckets per key; the Python twin's float arithmetic, bit for bit."""

    def __new__(cls, limits: Mapping[str, tuple[int, int]]) -> Self: ...
    def check(self, key_id: str, tokens: int, now_ns: int) -> float: ...

@final
class RouterAttempt:
    """One request's way through the router (opaque)."""

@final
class Router:
    """The router twin (gateway/router.py): deployments, retries, fallbacks, cooldowns."""

    def __new__(cls, config_json: str) -> Self: ...
    def begin(self, group: str, tokens: int, now_ns: int) -> RouterAttempt: ...
    def next(
        self, att: RouterAttempt, now_ns: int
    ) -> tuple[str, str, int] | tuple[str, int] | tuple[str, str]: ...
    def report(self, att: RouterAttempt, outcome: str, latency_us: int, now_ns: int) -> str: ...
    def state(self, group: str, index: int, now_ns: int) -> str: ...
    def in_flight(self, group: str, index: int) -> int: ...

_Json: TypeAlias = bytes | bytearray | memoryview | str

@final
class Adapter:
    """OpenAI <-> "openai"/"anthropic" upstream JSON, byte-identical to the orjson twin.
    Bodies over 1 KiB are converted with the GIL released."""

    def __new__(cls, kind: str) -> Self: ...
    @property
    def kind(self) -> str: ...
    def to_upstream(self, body: _Json, upstream_model: str) -> bytes: ...
    def from_upstream(self, body: _Json, public_model: str) -> bytes: ...
    def stream_event(self, event: _Json, public_model: str) -> list[bytes]: ...

@final
class NativeForwarder:
    """native/net's pooled client on a shared Tokio runtime; the methods return asyncio
    awaitables. Failures: TimeoutError, ConnectionError (mapped to UpstreamError by
    gateway.stages.rust_forwarder), InvalidInput (a bad URL or header)."""

    def __new__(cls, timeout_s: float = 30.0, pool: int = 256, connect_timeout_s: float = 5.0) -> Self: ...
    def send(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> Any:
        """Awaitable of (status, body)."""
    def open_stream(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> Any:
        """Awaitable of (status, NativeStream) once the response headers arrived."""
    def close(self) -> None: ...

@final
class NativeStream:
    """An open streaming response (made by NativeForwarder.open_stream)."""

    def next_chunk(self) -> Any:
        """Awaitable of the next body piece as it arrives, or None at the end."""
    def read_all(self) -> Any:
        """Awaitable of the rest of the body."""
    def close(self) -> None: ...

def error_type(status: int, code: str) -> str:
    """The OpenAI `type` of an error answer (the twin of gateway.errors.error_type)."""

_Headers: TypeAlias = list[tuple[bytes, bytes]]
_Audit: TypeAlias = tuple[int, str, str, str, bytes, int, str] | None

@final
class Pipeline:
    """The pipeline twin (native/core/src/pipeline.rs) for parity tests; config as JSON
    (gateway.config.Config.normalized()["pipeline"])."""

    def __new__(cls, config_json: str) -> Self: ...
    def stage_runs(self) -> dict[str, int]:
        """{stage: times it ran}: gateway.pipeline.RUN_STAGES, counted as the Python twin does."""
    def decide(
        self,
        method: str,
        path: str,
        headers: _Headers,
        body: bytes,
        time_ns: int,
        mono_ns: int,
        request_id: str,
    ) -> tuple[Any, ...]:
        """("reject", status, code, message, headers, audit) or
        ("forward", url, headers, body, stream, kind, public_model, adapt, key_id, audit)."""

# The metric names of every rung (native/engine/src/metrics.rs; read by gateway/metrics.py).
COUNTERS: Final[list[str]]
STAGES: Final[list[str]]
BUCKETS: Final[list[float]]
# gateway_stage_runs_total{stage}: the pipeline stages either twin counts, then the records written
RUN_STAGES: Final[list[str]]
RUNS_AUDIT: Final[str]

@final
class RsCore:
    """Rung 2: the engine (native/engine) on a Tokio runtime; completions through `drain()`
    when the eventfd `fileno()` is readable (gateway/rungs/rs_core.py). `spec_json`:
    gateway.config.engine_spec as JSON."""

    def __new__(cls, spec_json: str) -> Self: ...
    def fileno(self) -> int: ...
    def submit(self, requests: list[tuple[int, _Headers, bytes]]) -> None: ...
    def next_chunk(self, token: int, stream_id: int) -> None: ...
    def close_stream(self, stream_id: int) -> None: ...
    def drain(self) -> list[tuple[int, Any]]: ...
    def root(self) -> tuple[int, str, int]: ...
    def inclusion_proof(self, index: int) -> str: ...
    def consistency_proof(self, old_count: int) -> str: ...
    def stats(self) -> dict[str, float]:
        """Every counter of COUNTERS, the gauges, and the crossing's `completed`/`wakeups`."""
    def stage_runs(self) -> dict[str, int]:
        """{stage: times it ran} of the core pipeline (RUN_STAGES; gateway_stage_runs_total, whose
        RUNS_AUDIT is stats()["audit_records"])."""
    def stage_histograms(self) -> dict[str, tuple[list[int], int]]:
        """{stage: (bucket counts, the last past every bound; sum in ns)}."""
    def shutdown(self) -> None: ...
