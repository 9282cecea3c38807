"""`gatewaylab bench stages`: the cost of each hot-path stage alone, per twin, in µs per
request (pyperf, each case in its own worker processes).

Cases (one typical request each; the same inputs for both twins):
  guard             raw-header checks on a 7-header request (Python only: it is ASGI glue)
  parse             orjson parse + request validation + prompt text (Python only)
  auth              ApiKeyAuth.check on a valid bearer key, 4 keys configured
  waf.short         Waf.scan with the default rules over a 40-character prompt
  waf.4k            ... over a 4 KiB prompt
  ratelimit         RateLimiter.check, a key with limits, time advancing 1 ms per call
  adapter.request   Adapter("openai").to_upstream
  adapter.response  Adapter("openai").from_upstream on a 9-token completion
  adapter.anthropic Adapter("anthropic").to_upstream + from_upstream
  forward           Forwarder.send to the native mock on another CPU, one at a time (this
                    one is wall time per request and includes the loopback round trip)

JSON (`--json OUT`):
    {"rows": [{"stage", "impl", "us_per_request", "min", "max", "values"}],
     "unavailable": [{"component", "impl", "reason"}],   # twins not built: not measured, said so
     "pyperf_json", "meta"}
us_per_request is the median over every pyperf value; min/max the fastest/slowest value.

The file is also the pyperf worker script (`python -m harness.bench.stages --stages-worker ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON_ONLY = ("guard", "parse")
TWIN_STAGES = (
    "auth",
    "waf.short",
    "waf.4k",
    "ratelimit",
    "adapter.request",
    "adapter.response",
    "adapter.anthropic",
    "forward",
)
QUICK_ARGS = ["--processes", "2", "--values", "2", "--warmups", "1", "--min-time", "0.01"]
FULL_ARGS = ["--processes", "6", "--values", "3", "--warmups", "1", "--min-time", "0.05"]

REQUEST = json.dumps(
    {
        "model": "mock",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 64,
    }
).encode()
RESPONSE = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "the quick brown fox jumps over the lazy dog"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
).encode()
ANTHROPIC_RESPONSE = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "the quick brown fox"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 4},
    }
).encode()
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"OpenAI/Python 1.99.0"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-bench-key-3"),
    (b"content-length", str(len(REQUEST)).encode()),
    (b"x-stainless-lang", b"python"),
]


# --- worker side ---------------------------------------------------------------------------
def _case(c):
    """-> f(loops) -> seconds, timing `loops` requests through one stage."""
    from gateway import twins

    perf = time.perf_counter
    stage, impl = c["stage"], c["impl"]
    if stage == "guard":
        from gateway.stages.guard import check_headers

        def f(loops):
            t0 = perf()
            for _ in range(loops):
                check_headers(HEADERS, 16384, 1 << 20)
            return perf() - t0

        return f
    if stage == "parse":
        import orjson

        from gateway.pipeline import prompt_text as _prompt_text

        def f(loops):
            t0 = perf()
            for _ in range(loops):
                _prompt_text(orjson.loads(REQUEST))
            return perf() - t0

        return f
    if stage == "auth":
        from gateway.stages.auth import hash_key

        a = twins.load("auth", impl)({f"k{i}": hash_key(f"sk-bench-key-{i}") for i in range(4)})
        hdr = b"Bearer sk-bench-key-3"
        assert a.check(hdr) == "k3"

        def f(loops):
            t0 = perf()
            for _ in range(loops):
                a.check(hdr)
            return perf() - t0

        return f
    if stage.startswith("waf"):
        from gateway.stages.waf import default_rules

        w = twins.load("waf", impl)(default_rules())
        base = "Say hello in one short sentence please."
        text = base if stage == "waf.short" else (base + " ") * (4096 // (len(base) + 1))
        assert w.scan(text) is None

        def f(loops):
            t0 = perf()
            for _ in range(loops):
                w.scan(text)
            return perf() - t0

        return f
    if stage == "ratelimit":
        rl = twins.load("ratelimit", impl)({"k": (10**9, 10**12)})
        clock = [10**15]

        def f(loops):
            now = clock[0]
            t0 = perf()
            for i in range(loops):
                rl.check("k", 20, now + i * 1_000_000)
            dt = perf() - t0
            clock[0] = now + loops * 1_000_000
            return dt

        return f
    if stage.startswith("adapter"):
        Adapter = twins.load("adapter", impl)
        if stage == "adapter.anthropic":
            a = Adapter("anthropic")

            def f(loops):
                t0 = perf()
                for _ in range(loops):
                    a.to_upstream(REQUEST, "claude")
                    a.from_upstream(ANTHROPIC_RESPONSE, "mock")
                return perf() - t0

            return f
        a = Adapter("openai")
        fn, arg = (a.to_upstream, REQUEST) if stage == "adapter.request" else (a.from_upstream, RESPONSE)

        def f(loops):
            t0 = perf()
            for _ in range(loops):
                fn(arg, "mock")
            return perf() - t0

        return f
    if stage == "forward":
        import asyncio

        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        fwd = twins.load("forwarder", impl)(timeout_s=10.0, pool=4)
        url = c["mock_url"] + "/v1/chat/completions"
        hdrs = [("Content-Type", "application/json")]

        async def many(n):
            t0 = perf()
            for _ in range(n):
                await fwd.send(url, REQUEST, hdrs)
            return perf() - t0

        loop.run_until_complete(many(20))

        def f(loops):
            return loop.run_until_complete(many(loops))

        return f
    raise ValueError(f"unknown stage {stage!r}")


def _worker_main() -> None:
    import pyperf

    def add_cmdline_args(cmd, args):
        cmd.extend(["--stages-worker", "--spec", args.spec])

    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args, program_args=("-m", "harness.bench.stages"))
    runner.argparser.add_argument("--stages-worker", action="store_true")
    runner.argparser.add_argument("--spec", required=True)
    args = runner.parse_args()
    with open(args.spec) as fh:
        cases = json.load(fh)
    for c in cases:
        state = {}

        def time_func(loops, c=c, state=state):
            if "f" not in state:
                state["f"] = _case(c)
            return state["f"](loops)

        runner.bench_time_func(c["name"], time_func)


# --- parent side ---------------------------------------------------------------------------
def measure(
    impls=("python", "rust"), stages=None, quick=False, pyperf_json=None, pyperf_args=(), mock_cpus=None
) -> dict:
    import pyperf

    from harness.bench import _runner as R
    from harness.results.meta import collect

    if "rust" in impls:
        R.require_release()
    stages = list(stages or (PYTHON_ONLY + TWIN_STAGES))
    from gateway import twins

    unavailable = []
    for comp in ("auth", "waf", "ratelimit", "adapter", "forwarder"):
        for impl in impls:
            try:
                twins.load(comp, impl)
            except ImportError as e:  # RustTwinUnavailable is an ImportError too
                unavailable.append({"component": comp, "impl": impl, "reason": str(e)})
    missing = {(u["component"], u["impl"]) for u in unavailable}
    component = lambda s: {"forward": "forwarder"}.get(s, s.split(".")[0])
    cases = []
    for s in stages:
        for impl in ("python",) if s in PYTHON_ONLY else impls:
            if (component(s), impl) not in missing:
                cases.append({"name": f"stage.{s}.{impl}", "stage": s, "impl": impl})
    out = Path(pyperf_json or Path(tempfile.gettempdir()) / "gatewaylab-bench-stages.pyperf.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    mock = None
    try:
        if "forward" in stages:
            from harness.infra.native_procs import start_mock

            ncpu = os.cpu_count() or 1
            mock = start_mock(cpus=mock_cpus if mock_cpus is not None else ([ncpu - 1] if ncpu > 1 else None))
            for c in cases:
                c["mock_url"] = mock.url
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(cases, fh)
            spec = fh.name
        cmd = [
            sys.executable,
            "-m",
            "harness.bench.stages",
            "--stages-worker",
            "--spec",
            spec,
            "-o",
            str(out),
            "--quiet",
            *(QUICK_ARGS if quick else FULL_ARGS),
            *pyperf_args,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        os.unlink(spec)
        if r.returncode != 0:
            from gateway.errors import GatewayLabError

            raise GatewayLabError(
                f"stage benchmark worker failed (exit {r.returncode}): {R._root_cause(r.stderr)}"
            )
    finally:
        if mock is not None:
            mock.stop()
    suite = pyperf.BenchmarkSuite.load(str(out))
    by = {b.get_name(): b for b in suite.get_benchmarks()}
    rows = []
    for c in cases:
        b = by[c["name"]]
        vals = b.get_values()
        rows.append(
            {
                "stage": c["stage"],
                "impl": c["impl"],
                "us_per_request": b.median() * 1e6,
                "min": min(vals) * 1e6,
                "max": max(vals) * 1e6,
                "values": len(vals),
            }
        )
    meta = collect(
        parameters={
            "bench": "stages",
            "impls": list(impls),
            "stages": stages,
            "quick": quick,
            "pyperf_args": list(pyperf_args),
        }
    )
    return {"rows": rows, "unavailable": unavailable, "pyperf_json": str(out), "meta": meta}


def markdown(result) -> str:
    by = {(r["stage"], r["impl"]): r for r in result["rows"]}
    lines = ["| stage | Python µs/request | Rust µs/request | Python / Rust |", "|---|---:|---:|---:|"]
    for stage in dict.fromkeys(r["stage"] for r in result["rows"]):
        py, rs = by.get((stage, "python")), by.get((stage, "rust"))
        cell = lambda r: "–" if r is None else f"{r['us_per_request']:.3g} ({r['min']:.3g}–{r['max']:.3g})"
        ratio = (
            "–"
            if not (py and rs)
            else (
                f"{py['us_per_request'] / rs['us_per_request']:.2f}x "
                f"({py['min'] / rs['max']:.2f}–{py['max'] / rs['min']:.2f})"
            )
        )
        lines.append(f"| {stage} | {cell(py)} | {cell(rs)} | {ratio} |")
    for u in result.get("unavailable", []):
        lines.append(f"\nnot measured: {u['component']} ({u['impl']}): {u['reason']}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", choices=["python", "rust", "both"], default="both")
    p.add_argument(
        "--stage",
        action="append",
        choices=list(PYTHON_ONLY + TWIN_STAGES),
        help="only these stages (repeatable)",
    )
    p.add_argument("--json", metavar="OUT", help="write the result JSON here")
    p.add_argument("--pyperf-json", metavar="PATH", help="keep pyperf's JSON here")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    p.add_argument("--pyperf-args", default="", help="extra pyperf options")


def run(args: argparse.Namespace) -> int:
    import shlex

    impls = ["python", "rust"] if args.impl == "both" else [args.impl]
    pj = args.pyperf_json or (str(Path(args.json).with_suffix(".pyperf.json")) if args.json else None)
    result = measure(impls, args.stage, args.quick, pj, shlex.split(args.pyperf_args or ""))
    print(markdown(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"result JSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if "--stages-worker" in sys.argv:
        _worker_main()
    else:  # pragma: no cover
        from harness.cli import main

        sys.exit(main(["bench", "stages", *sys.argv[1:]]))
