"""Kill -9 under load: the ledger's crash promises, checked after every kill (docs/reliability.md;
the tool behind `gatewaylab torture`).

    from harness.infra.torture import run_torture
    r = run_torture("py+rs", kills=20)      # -> TortureResult; r.ok, r.records_lost == 0

One ledger directory and one native mock for the whole run. Each cycle:
  1. start the gateway (gateway.serving.launch.start_gateway) on the ledger; check that it recovered
     exactly the log this module recovered after the previous kill (count and root), and that
     a torn tail found then is gone from the file;
  2. drive it open loop from the native load generator (harness.infra.native_procs.run_load);
  3. sample /audit/root (count, root, durable_count) every `sample_ms` until a random moment,
     then SIGKILL the gateway (for granian, the master and its worker) a few ms after the
     last sample, so kills land anywhere relative to the writes;
  4. read the WAL without the gateway, with the Python twin (gateway.audit.wal.scan):
       - corruption (a bad frame followed by valid ones) is refused -> a failure;
       - a torn tail is counted (`torn_tails`, `torn_bytes`);
       - the recovered count must be >= the largest durable_count observed, else the
         difference is `records_lost`;
       - every (count, root) observed since the previous restart, and the previous recovered
         state, must be a prefix of the recovered log: a consistency proof from it, built by
         the Python MMR over the recovered payloads, must name the observed root as its old
         root and verify against the recovered root (`roots_checked`, `roots_failed`).
After the last kill the gateway is started once more, takes load, and is stopped gracefully;
its log must have grown past the last recovery ("goes on appending") and verify.

Acknowledged answers: beside the load generator, `ack_clients` threads send requests one at a
time and note the x-request-id of every 200 they receive. After each kill, every noted id
whose answer arrived must have its record in the recovered log under `--ack durable`
(`acked_missing` must be 0); under `background` the count is reported, not a failure (the
default answers before the record is written, so a kill can take acknowledged records with it).

A kill -9 keeps the page cache, so it never tests fsync; the power-loss cuts in
tests/reliability/test_power_loss.py do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable

from gateway.audit.mmr import MerkleMountainRange
from gateway.audit.wal import scan
from gateway.errors import ConfigError, GatewayLabError, WalCorruptError
from gateway.ladder import server_label

WAL_NAME = "audit.wal"
API_KEY = "sk-gatewaylab-torture"
BODY = {
    "model": "mock",
    "messages": [{"role": "user", "content": "torture: an ordinary prompt"}],
    "max_tokens": 8,
}
ACKS = ("background", "durable")


class TortureError(GatewayLabError, RuntimeError):
    """The torture could not run (the gateway did not start, an option is not available)."""


@dataclasses.dataclass
class TortureResult:
    mode: str
    server: str
    ack: str
    fsync: str
    kills: int = 0
    torn_tails: int = 0
    torn_bytes: int = 0
    records_lost: int = 0
    rolled_back: int = 0  # records counted (not durable) before a kill and absent after: allowed
    acked: int = 0  # 200s the ack clients received (request ids noted)
    acked_missing: int = 0  # of those, absent from the recovered log after the kill
    roots_checked: int = 0
    roots_failed: int = 0
    refused: int = 0  # corruption found after a kill (never allowed)
    restart_mismatches: int = 0  # the gateway's own recovery disagreed with ours
    samples: int = 0
    final_count: int = 0
    requests_ok: int = 0
    failures: list = dataclasses.field(default_factory=list)
    ledger_dir: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.failures
            and self.records_lost == 0
            and self.roots_failed == 0
            and self.refused == 0
            and (self.ack != "durable" or self.acked_missing == 0)
        )

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


def _config_yaml(path: str, upstream: str, ledger: str, fsync: str, ack: str = "background") -> None:
    import yaml

    from gateway.stages.auth import hash_key

    doc = {
        "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": upstream}}],
        "passthrough": True,
        "keys": [{"id": "torture", "sha256": hash_key(API_KEY)}],
        "ledger": {"dir": ledger, "fsync": fsync, "ack": ack},
    }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)


def _get_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.01)
    return False


class _AckClients:
    """Threads that send one request at a time and note the x-request-id of every 200."""

    def __init__(self, url: str, n: int):
        import http.client

        self._stop = threading.Event()
        self.ids: list[str] = []
        self._lock = threading.Lock()
        host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
        body = json.dumps(BODY).encode()
        hdrs = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

        def loop():
            conn = None
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(host, int(port), timeout=5)
                    conn.request("POST", "/v1/chat/completions", body, hdrs)
                    r = conn.getresponse()
                    r.read()
                    rid = r.getheader("x-request-id")
                    if r.status == 200 and rid:
                        with self._lock:
                            self.ids.append(rid)  # noted only once the whole answer arrived
                except (OSError, http.client.HTTPException):
                    conn = None
                    self._stop.wait(0.01)

        self._threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
        for t in self._threads:
            t.start()

    def stop(self) -> list[str]:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        with self._lock:
            return list(self.ids)


class _Recovered:
    """The log as this module recovers it after a kill (read-only, Python twins)."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            data = f.read()
        payloads, self.valid_end = scan(data)  # WalCorruptError propagates: refused
        self.size = len(data)
        self.torn = self.size - self.valid_end
        self.mmr = MerkleMountainRange()
        if payloads:
            self.mmr.append_many(payloads)
        self.count = len(payloads)
        self.root = self.mmr.root()
        self.request_ids = {json.loads(p).get("request_id") for p in payloads}

    def is_prefix(self, count: int, root: str) -> tuple[bool, str]:
        if count > self.count:
            return False, f"observed count {count} > recovered {self.count}"
        proof = self.mmr.consistency_proof(count)
        if proof["old_root"] != root:
            return (
                False,
                f"root at count {count} differs: observed {root[:16]}, recovered prefix {proof['old_root'][:16]}",
            )
        if proof["new_root"] != self.root or not MerkleMountainRange.verify_consistency(proof):
            return False, f"consistency proof {count} -> {self.count} does not verify"
        return True, ""


def run_torture(
    mode: str,
    kills: int,
    *,
    ack: str = "background",
    server: str | None = None,
    shell: str | None = None,
    fsync: str = "group",
    rate: float = 200.0,
    seed: int | None = None,
    ledger_dir: str | None = None,
    ack_clients: int = 4,
    min_run_s: float = 0.3,
    max_run_s: float = 1.5,
    sample_ms: float = 50.0,
    mock_latency_ms: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> TortureResult:
    """Run `kills` kill/verify/restart cycles on one ledger; see the module docstring."""
    from gateway.serving.launch import start_gateway
    from harness.infra.native_procs import run_load, start_mock

    if ack not in ACKS:
        raise TortureError(f"--ack: expected one of {', '.join(ACKS)}, got {ack!r}")
    if kills < 0:
        raise TortureError(f"--kills must be >= 0, got {kills}")
    if not rate > 0:
        raise TortureError(f"--rate must be > 0, got {rate}")
    if not 0 < min_run_s <= max_run_s:
        raise TortureError(f"run window must satisfy 0 < min <= max, got {min_run_s}..{max_run_s}")
    say = log or (lambda s: None)
    rng = random.Random(seed)
    t_start = time.monotonic()
    ledger = ledger_dir or tempfile.mkdtemp(prefix="gatewaylab-torture-")
    os.makedirs(ledger, exist_ok=True)
    wal_path = os.path.join(ledger, WAL_NAME)
    res = TortureResult(mode=mode, server=server_label(mode, server), ack=ack, fsync=fsync, ledger_dir=ledger)
    headers = {"Authorization": f"Bearer {API_KEY}"}

    with (
        start_mock(latency_ms=mock_latency_ms, seed=rng.randrange(1 << 30)) as mock,
        tempfile.TemporaryDirectory(prefix="gatewaylab-torture-cfg-") as cfg_dir,
    ):
        cfg = os.path.join(cfg_dir, "gateway.yaml")
        _config_yaml(cfg, mock.url, ledger, fsync, ack)
        prev: _Recovered | None = None

        def start():
            try:
                return start_gateway(
                    None, None, mode=mode, server=server, shell=shell, config=cfg, ledger_dir=ledger
                )
            except (RuntimeError, ConfigError) as e:  # the child failed, or its options did
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                raise TortureError(
                    f"the gateway (mode {mode!r}, {res.server}) did not start: {lines[-1] if lines else e}"
                ) from None

        def check_restart(gw) -> None:
            if prev is None:
                return
            got = _get_json(gw.url + "/audit/root")
            if got["count"] != prev.count or got["root"] != prev.root:
                res.restart_mismatches += 1
                res.failures.append(
                    f"kill {res.kills}: gateway recovered count {got['count']} root {got['root'][:16]}, "
                    f"expected {prev.count} {prev.root[:16]}"
                )
            size = os.path.getsize(wal_path)
            if size != prev.valid_end:
                res.failures.append(
                    f"kill {res.kills}: WAL is {size} bytes after restart, expected the valid prefix "
                    f"{prev.valid_end} (torn tail not truncated?)"
                )

        for _k in range(kills):
            gw = start()
            check_restart(gw)
            app_pid = gw.app_pid
            run_s = rng.uniform(min_run_s, max_run_s)
            load_out: dict = {}
            load_seed = rng.randrange(1 << 30)

            def drive():
                try:
                    load_out["r"] = run_load(
                        gw.url + "/v1/chat/completions",
                        rate=rate,
                        duration_s=run_s + 0.7,
                        headers=headers,
                        body=BODY,
                        timeout_s=2.0,
                        seed=load_seed,
                    )
                except Exception as e:  # reported below; the kill itself must go on
                    load_out["e"] = e

            th = threading.Thread(target=drive, daemon=True)
            th.start()
            acker = _AckClients(gw.url, ack_clients)
            samples = []
            deadline = time.monotonic() + 0.5 + run_s  # the load generator takes a moment to start
            while True:
                try:
                    samples.append(_get_json(gw.url + "/audit/root"))
                except OSError:
                    pass
                if time.monotonic() >= deadline:
                    break
                time.sleep(sample_ms / 1000.0 * rng.uniform(0.5, 1.5))
            time.sleep(rng.uniform(0, 0.02))
            gw.proc.send_signal(signal.SIGKILL)
            if app_pid != gw.pid:
                try:
                    os.kill(app_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            gw.proc.wait(30)
            if not _pid_gone(app_pid, 30):
                raise TortureError(f"gateway worker {app_pid} survived SIGKILL for 30 s")
            acked_ids = acker.stop()
            res.kills += 1
            res.samples += len(samples)
            th.join(60)
            if "e" in load_out:
                res.failures.append(f"kill {res.kills}: load generator failed: {load_out['e']}")
            elif "r" in load_out:
                res.requests_ok += load_out["r"]["meta"]["ok"]

            try:
                rec = _Recovered(wal_path)
            except WalCorruptError as e:
                res.refused += 1
                res.failures.append(f"kill {res.kills}: WAL refused as corrupt: {e}")
                break
            missing = [i for i in acked_ids if i not in rec.request_ids]
            res.acked += len(acked_ids)
            res.acked_missing += len(missing)
            if missing and ack == "durable":
                res.failures.append(
                    f"kill {res.kills}: {len(missing)} acknowledged answers have no record "
                    f"(e.g. {missing[0]})"
                )
            if rec.torn:
                res.torn_tails += 1
                res.torn_bytes += rec.torn
            max_durable = max([s["durable_count"] for s in samples], default=0)
            max_count = max([s["count"] for s in samples], default=0)
            if rec.count < max_durable:
                res.records_lost += max_durable - rec.count
                res.failures.append(
                    f"kill {res.kills}: recovered {rec.count} records, {max_durable} were durable"
                )
            elif rec.count < max_count:
                res.rolled_back += max_count - rec.count
            checks = [(s["count"], s["root"]) for s in samples]
            if prev is not None:
                checks.append((prev.count, prev.root))
            for count, root in sorted(set(checks)):
                if count > rec.count and count > max_durable:
                    continue  # a non-durable state rolled back: counted above, no proof possible
                res.roots_checked += 1
                good, why = rec.is_prefix(count, root)
                if not good:
                    res.roots_failed += 1
                    res.failures.append(f"kill {res.kills}: {why}")
            say(
                f"kill {res.kills}/{kills}: ran {run_s:.2f}s, {len(samples)} samples, recovered {rec.count} "
                f"(max durable seen {max_durable}), torn {rec.torn} B, roots checked {len(set(checks))}, "
                f"acked {len(acked_ids)} missing {len(missing)}"
            )
            prev = rec

        # after the last kill: restart, append more, stop gracefully, verify
        gw = start()
        try:
            check_restart(gw)
            r = run_load(
                gw.url + "/v1/chat/completions",
                rate=rate,
                duration_s=0.5,
                headers=headers,
                body=BODY,
                timeout_s=2.0,
            )
            res.requests_ok += r["meta"]["ok"]
        finally:
            gw.stop()
        try:
            final = _Recovered(wal_path)
        except WalCorruptError as e:
            res.refused += 1
            res.failures.append(f"after a graceful stop the WAL is refused as corrupt: {e}")
        else:
            res.final_count = final.count
            if final.torn:
                res.failures.append(f"after a graceful stop the WAL has a torn tail of {final.torn} B")
            if prev is not None:
                good, why = final.is_prefix(prev.count, prev.root)
                res.roots_checked += 1
                if not good:
                    res.roots_failed += 1
                    res.failures.append(f"final: {why}")
                if final.count <= prev.count:
                    res.failures.append(
                        f"final: the restarted gateway appended nothing ({final.count} <= {prev.count})"
                    )
    res.seconds = time.monotonic() - t_start
    return res


def summary(r: TortureResult) -> str:
    return (
        f"torture mode={r.mode} server={r.server} ack={r.ack} fsync={r.fsync}: kills={r.kills} "
        f"records_lost={r.records_lost} roots_checked={r.roots_checked} roots_failed={r.roots_failed} "
        f"torn_tails={r.torn_tails} ({r.torn_bytes} B) rolled_back_non_durable={r.rolled_back} "
        f"acked={r.acked} acked_missing={r.acked_missing} "
        f"refused={r.refused} final_count={r.final_count} ok_responses={r.requests_ok} "
        f"in {r.seconds:.0f}s -> {'OK' if r.ok else 'FAILED'}"
    )
