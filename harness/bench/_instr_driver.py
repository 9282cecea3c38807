"""The driver `gatewaylab bench instructions --components` runs under Cachegrind (and natively,
to time the SHA-256 paths). It lives outside the `instructions` package so that running it
imports only what its case needs. The parent imports it only for `record_jobs`, to count the
SHA-256 blocks of the records the `record` case assembles.

    python -m harness.bench._instr_driver CASE_JSON UNITS

builds the case's inputs for every size in CASE_JSON["sizes"] (so two runs at different
UNITS do exactly the same set-up), then does UNITS units of its work. The parent runs it at
two sizes and divides the difference of the counts by the difference of the units (times
`calls` for sha256): set-up, interpreter start and exit cancel.

Cases (`kind`):
  stage    {stage, impl}            one call of a hot-path stage twin: the inputs and calls of
                                    `gatewaylab bench stages` (harness.bench.stages._case)
  mmr      {impl, api}              one leaf appended to one MMR (api per_leaf | batch)
  wal      {impl, api, size}        one record appended to one WAL (fsync none; per_record | batch)
  record   {impl}                   one audit record: entropy + canonical record + request and
                                    response hashes (RecordAssembler) + ledger append (WAL + MMR)
  sha256   {impl: openssl|rust, calls}  one 64-byte block: `calls` hashes of a message of
                                    UNITS blocks (hashlib / the Rust twin;
                                    both OpenSSL's libcrypto underneath)
  time_sha256 {impl}                natively: print the seconds one message of UNITS blocks
                                    takes to hash (best of 5)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

# The request body of an audit record (the bytes a benchmark client sends).
REQUEST_BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise the GIL in one line."}]}
).encode()


def _per_size(c, make):
    """{size: make(size)} for every size of the case: the same set-up in every run."""
    full = make(max(c["sizes"]))
    return {n: full[:n] for n in c["sizes"]}


def case_stage(c, units):
    from harness.bench.stages import _case

    f = _case({"stage": c["stage"], "impl": c["impl"]})
    return lambda: f(units)


def case_mmr(c, units):
    from gateway import twins
    from harness.bench._worker import seed_leaves

    MMR = twins.load("mmr", c["impl"])
    leaves = _per_size(c, seed_leaves)[units]
    m = MMR()
    if c["api"] == "per_leaf":

        def run():
            append = m.append
            for leaf in leaves:
                append(leaf)

        return run
    return lambda: m.append_many(leaves)


def case_wal(c, units):
    from gateway import twins
    from harness.bench._worker import record_payload

    WAL = twins.load("wal", c["impl"])
    payloads = _per_size(c, lambda n: [record_payload(i, c.get("size", 256)) for i in range(n)])[units]
    d = tempfile.mkdtemp(prefix="gatewaylab-instr-wal-")
    w = WAL(os.path.join(d, "audit.wal"), fsync="none")
    if c["api"] == "per_record":

        def run():
            append = w.append
            for p in payloads:
                append(p)
            w.flush()

        return run

    def run_batch():
        w.append_many(payloads)
        w.flush()

    return run_batch


def record_jobs(n: int) -> list:
    """n audit jobs as the hot path hands them over: the benchmark's request, the stage
    benchmark's 9-token response (the parent counts their SHA-256 blocks from these too)."""
    from gateway.audit.job import AuditJob
    from gateway.pipeline import AuditMaterial
    from harness.bench.stages import RESPONSE

    return [
        AuditJob(
            AuditMaterial(
                time_ns=1_700_000_000_000_000_000 + i,
                request_id=f"req-{i:012d}",
                key_id="default",
                model="gpt-4o-mini",
                request_body=REQUEST_BODY,
                prompt_tokens=12,
                waf="pass",
            ),
            200,
            RESPONSE,
            False,
            1500 + i % 100,
        )
        for i in range(n)
    ]


def case_record(c, units):
    from gateway.audit.job import RecordAssembler
    from gateway.audit.ledger import AuditLedger
    from gateway.twins import Switches

    sw = Switches("py" if c["impl"] == "python" else "py+rs")
    asm = RecordAssembler(sw)
    ledger = AuditLedger(tempfile.mkdtemp(prefix="gatewaylab-instr-ledger-"), fsync="none", switches=sw)
    jobs = _per_size(c, record_jobs)[units]

    def run():
        payload, append = asm.payload, ledger.append
        for j in jobs:
            append(payload(ledger.count, j))
        ledger.flush()

    return run


def sha256_fn(impl: str):
    if impl == "openssl":
        import hashlib

        return lambda b: hashlib.sha256(b).digest()
    if impl == "rust":
        from gateway import _native

        return _native.sha256_hex
    raise ValueError(f"sha256 impl {impl!r}: expected openssl or rust")


def message(blocks: int) -> bytes:
    """A message that SHA-256 pads to exactly `blocks` blocks (64 bytes each). Zeroed bytes
    come from calloc (fresh zero pages), so making it costs the same few instructions at
    every size; bytes, not a memoryview, which the Rust twin would copy element by element."""
    return bytes(64 * blocks - 9)


def case_sha256(c, units):
    fn = sha256_fn(c["impl"])
    msgs = {n: message(n) for n in c["sizes"]}
    msg, calls = msgs[units], c.get("calls", 1)

    def run():
        for _ in range(calls):
            fn(msg)

    return run


def time_sha256(c, units) -> float:
    fn = sha256_fn(c["impl"])
    msg = message(units)
    fn(msg)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        fn(msg)
        best = min(best, time.perf_counter() - t0)
    return best


CASES = {
    "stage": case_stage,
    "mmr": case_mmr,
    "wal": case_wal,
    "record": case_record,
    "sha256": case_sha256,
}


def main(argv: list[str]) -> int:
    c, units = json.loads(argv[0]), int(argv[1])
    if c["kind"] == "time_sha256":
        print(json.dumps({"seconds": time_sha256(c, units), "blocks": units}))
        return 0
    if units not in c["sizes"]:
        raise SystemExit(f"units {units} is not one of the case's sizes {c['sizes']}")
    run = CASES[c["kind"]](c, units)
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
