"""The pyperf script behind every `gatewaylab bench` (run as a subprocess; pyperf spawns
its own worker processes from it). Never imported by the parent.

    python -m harness.bench._worker --spec SPEC.json -o OUT.json [pyperf options]

SPEC.json is a list of cases `{"name", "kind", ...params}`; each becomes one pyperf
benchmark named `name` in OUT.json. Timings are per unit of work (`inner_loops`): seconds
per leaf for `mmr`/`sha256_bound`, per record for `wal`, per call for `hash`/`entropy`, so
`python -m pyperf compare_to` on two runs compares like with like.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

import pyperf

perf_counter = time.perf_counter


def seed_leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def case_mmr(c):
    from gateway import twins

    MMR = twins.load("mmr", c["impl"])
    leaves = seed_leaves(c["n"])
    if c["api"] == "per_leaf":

        def f(loops):
            total = 0.0
            for _ in range(loops):
                m = MMR()  # a fresh MMR per run, outside the timed region
                append = m.append
                t0 = perf_counter()
                for leaf in leaves:
                    append(leaf)
                total += perf_counter() - t0
            return total
    else:

        def f(loops):
            total = 0.0
            for _ in range(loops):
                m = MMR()
                t0 = perf_counter()
                m.append_many(leaves)
                total += perf_counter() - t0
            return total

    return f, c["n"]


def case_sha256_bound(c):
    from gateway import _native

    leaves = seed_leaves(c["n"])
    sha256_many = _native.sha256_many

    def f(loops):
        t0 = perf_counter()
        for _ in range(loops):
            sha256_many(leaves)
        return perf_counter() - t0

    return f, c["n"]


def record_payload(i: int, size: int) -> bytes:
    body = json.dumps(
        {
            "seq": i,
            "request_id": f"req-{i:012d}",
            "model": "gpt-4o-mini",
            "status": 200,
            "request_sha256": hashlib.sha256(b"q%d" % i).hexdigest(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return (body * (size // len(body) + 1))[:size]


def case_wal(c):
    from gateway import twins

    WAL = twins.load("wal", c["impl"])
    payloads = [record_payload(i, c["size"]) for i in range(c["n"])]
    directory = c.get("dir") or tempfile.gettempdir()
    os.makedirs(directory, exist_ok=True)
    policy, batch = c["policy"], c["api"] == "batch"

    def f(loops):
        total = 0.0
        for _ in range(loops):
            fd, path = tempfile.mkstemp(prefix="bench-", suffix=".wal", dir=directory)
            os.close(fd)
            os.unlink(path)
            w = WAL(path, fsync=policy)
            try:
                t0 = perf_counter()
                if batch:
                    w.append_many(payloads)
                else:
                    append = w.append
                    for p in payloads:
                        append(p)
                w.flush()  # the last group commit belongs to the measured work
                total += perf_counter() - t0
            finally:
                w.close()
                os.unlink(path)
        return total

    return f, c["n"]


def case_hash(c):
    from gateway import twins

    fn = twins.load("hash", c["impl"])
    data = bytes(range(256)) * (c["size"] // 256) + bytes(c["size"] % 256)

    def f(loops):
        t0 = perf_counter()
        for _ in range(loops):
            fn(data)
        return perf_counter() - t0

    return f, 1


def entropy_body(case: str) -> bytes:
    words = [f"w{(i * 7919) % 97}" for i in range(300)]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": " ".join(words)},
        "finish_reason": "stop",
    }
    if case == "logprobs":
        choice["logprobs"] = {
            "content": [
                {
                    "token": f"t{i}",
                    "logprob": -0.1 * (i % 5),
                    "top_logprobs": [
                        {"token": f"t{i}-{k}", "logprob": -0.1 * (i % 5) - 0.7 * k} for k in range(5)
                    ],
                }
                for i in range(100)
            ]
        }
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": 300},
        }
    ).encode()


def case_entropy(c):
    from gateway import twins

    fn = twins.load("entropy", c["impl"])
    body = entropy_body(c["case"])

    def f(loops):
        t0 = perf_counter()
        for _ in range(loops):
            fn(body)
        return perf_counter() - t0

    return f, 1


CASES = {
    "mmr": case_mmr,
    "sha256_bound": case_sha256_bound,
    "wal": case_wal,
    "hash": case_hash,
    "entropy": case_entropy,
}


UNIT_N = ("mmr", "sha256_bound", "wal")


def _lazy(c):
    func = None

    def time_func(loops):
        nonlocal func
        if func is None:
            func = CASES[c["kind"]](c)[0]
        return func(loops)

    return time_func


def main() -> None:
    def add_cmdline_args(cmd, args):
        cmd.extend(["--spec", args.spec])

    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args, program_args=("-m", "harness.bench._worker"))
    runner.argparser.add_argument("--spec", required=True)
    args = runner.parse_args()
    with open(args.spec) as fh:
        cases = json.load(fh)
    for c in cases:
        # pyperf calls main() in every worker process but runs one benchmark there: set up
        # lazily so a worker only builds the data of the case it times (setup is untimed).
        runner.bench_time_func(c["name"], _lazy(c), inner_loops=c.get("n", 1) if c["kind"] in UNIT_N else 1)


if __name__ == "__main__":
    main()
