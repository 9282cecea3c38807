"""Write-ahead log v1 -- the Python twin (`gateway._native.WriteAheadLog` is the Rust one).

Format (docs/formats.md): the 8 bytes MAGIC, then one frame per record:
`u32 LE payload length | u32 LE zlib CRC-32 of payload | payload`. Record k's payload is
leaf k of the MMR, so the WAL alone rebuilds the ledger.

Exact behaviour (open, locking, fsync policies, recovery, replay) is the contract in
gateway/audit/protocols.py `WriteAheadLog`; both twins follow it to the byte. In short:
one writer per file (flock on the file itself, non-blocking -> WalLockedError); a torn tail
is truncated and reported in `recovery`; a bad frame followed by a valid chain of frames to
EOF is corruption -> WalCorruptError naming the offset, and nothing is modified.

Group commit here: writes go to the file at once; a background flusher thread fsyncs once
per batch, `group_delay_ms` after the first pending record, or at once when
`group_max_records` are pending; `append_many` is one batch (fsynced before it returns).
"""
from __future__ import annotations

import fcntl
import math
import os
import struct
import threading
import zlib
from typing import Sequence

from gateway.errors import InvalidInput, WalCorruptError, WalError, WalLockedError

MAGIC = b"GLWAL\x00\x01\n"
HEADER = struct.Struct("<II")
MAX_FRAME = 64 * 1024 * 1024
POLICIES = ("always", "group", "none")


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _frame_end(data, pos: int, end: int) -> int:
    """End offset of the valid frame at `pos`, or -1."""
    if pos + 8 > end:
        return -1
    n, crc = HEADER.unpack_from(data, pos)
    stop = pos + 8 + n
    if n > MAX_FRAME or stop > end:
        return -1
    if zlib.crc32(memoryview(data)[pos + 8:stop]) != crc:
        return -1
    return stop


def _chain_to_eof_from(data, start: int, end: int) -> int | None:
    """Smallest p in [start, end) where a chain of valid frames starts and ends exactly at
    `end`, or None. Memoised backwards, so each position costs a header read plus at most
    one CRC (computed only when the frame would land on EOF or on a valid chain)."""
    good = bytearray(end - start + 1)  # good[p - start] == 1: a valid chain from p reaches end
    good[end - start] = 1
    found = None
    for p in range(end - 8, start - 1, -1):
        n, crc = HEADER.unpack_from(data, p)
        stop = p + 8 + n
        if n > MAX_FRAME or stop > end or not good[stop - start]:
            continue
        if zlib.crc32(memoryview(data)[p + 8:stop]) == crc:
            good[p - start] = 1
            found = p
    return found


def scan(data) -> tuple[list[bytes], int]:
    """Parse a whole WAL image: (payloads, end of the valid prefix). A short header that is a
    prefix of MAGIC gives ([], len(data)); corruption raises WalCorruptError."""
    size = len(data)
    if size < len(MAGIC):
        if MAGIC.startswith(bytes(data)):
            return [], size
        raise WalCorruptError(f"WAL header is not {MAGIC!r} at offset 0", 0)
    if bytes(data[:8]) != MAGIC:
        raise WalCorruptError(f"WAL header is not {MAGIC!r} at offset 0", 0)
    out, pos = [], 8
    mv = memoryview(data)
    while pos < size:
        stop = _frame_end(data, pos, size)
        if stop < 0:
            break
        out.append(bytes(mv[pos + 8:stop]))
        pos = stop
    if pos < size and _chain_to_eof_from(data, pos + 1, size) is not None:
        raise WalCorruptError(
            f"WAL corrupt: invalid frame at offset {pos} followed by valid frames (record {len(out)})", pos)
    return out, pos


def _payload(p, i: int | None = None) -> bytes:
    if isinstance(p, bytes):
        b = p
    elif isinstance(p, (bytearray, memoryview)):
        b = bytes(p)
    else:
        where = "payload" if i is None else f"payload {i}"
        raise InvalidInput(f"{where} must be bytes, not {type(p).__name__}")
    if len(b) > MAX_FRAME:
        raise InvalidInput(f"payload of {len(b)} bytes exceeds the WAL frame limit of {MAX_FRAME}")
    return b


class WriteAheadLog:
    """WAL v1 writer with recovery (see module docstring and the Protocol)."""

    def __init__(self, path, fsync: str = "group", group_delay_ms: float = 2.0, group_max_records: int = 256):
        if fsync not in POLICIES:
            raise InvalidInput(f"fsync policy {fsync!r}: expected one of {', '.join(POLICIES)}")
        if isinstance(group_max_records, bool) or not isinstance(group_max_records, int) or group_max_records < 1:
            raise InvalidInput(f"group_max_records must be a positive int, got {group_max_records!r}")
        if (isinstance(group_delay_ms, bool) or not isinstance(group_delay_ms, (int, float))
                or not math.isfinite(group_delay_ms) or group_delay_ms < 0):
            raise InvalidInput(f"group_delay_ms must be a finite non-negative number, got {group_delay_ms!r}")
        self.path = os.fspath(path)
        self.fsync_policy = fsync
        self._delay = group_delay_ms / 1000.0
        self._max = group_max_records
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise WalLockedError(f"WAL {self.path} is locked by another writer") from None
        try:
            self.recovery = self._recover()
        except BaseException:
            os.close(self._fd)  # closing releases the lock
            raise
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._durable = self._count
        self._closed = False
        self._flusher = None
        if fsync == "group":
            self._flusher = threading.Thread(target=self._flush_loop, name=f"wal-flusher:{os.path.basename(self.path)}", daemon=True)
            self._flusher.start()

    # -- open / recovery --------------------------------------------------------------
    def _recover(self) -> dict:
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        payloads, valid_end = scan(data)  # raises WalCorruptError before anything is modified
        truncated = 0
        if size < len(MAGIC):  # empty or a prefix of the magic: complete it
            os.pwrite(self._fd, MAGIC[size:], size)
            os.fsync(self._fd)
            valid_end = len(MAGIC)
        elif valid_end < size:  # torn tail
            truncated = size - valid_end
            os.ftruncate(self._fd, valid_end)
            os.fsync(self._fd)
        elif payloads and self.fsync_policy != "none":
            os.fsync(self._fd)  # a crashed writer's records may sit in the page cache only
        self._count = len(payloads)
        self._end = valid_end
        return {"records": len(payloads), "truncated_bytes": truncated}

    # -- writing ------------------------------------------------------------------------
    def _write(self, buf: bytes) -> None:
        mv, off = memoryview(buf), 0
        while off < len(buf):
            off += os.pwrite(self._fd, mv[off:], self._end + off)
        self._end += len(buf)

    def _check_open(self) -> None:
        if self._closed:
            raise WalError(f"WAL {self.path} is closed")

    def append(self, payload: bytes) -> int:
        """Append one record; returns its index."""
        frame = encode_frame(_payload(payload))
        with self._lock:
            self._check_open()
            self._write(frame)
            self._count += 1
            idx = self._count - 1
            if self.fsync_policy == "always":
                os.fsync(self._fd)
                self._durable = self._count
            elif self.fsync_policy == "group":
                pending = self._count - self._durable
                if pending >= self._max:
                    os.fsync(self._fd)
                    self._durable = self._count
                elif pending == 1:
                    self._cond.notify()
        return idx

    def append_many(self, payloads: Sequence[bytes]) -> int:
        """Append a batch; returns the new record count."""
        if isinstance(payloads, (bytes, bytearray, memoryview, str)):
            raise InvalidInput("append_many takes a sequence of bytes payloads, not a single value")
        try:
            items = [_payload(p, i) for i, p in enumerate(payloads)]
        except TypeError:
            raise InvalidInput(f"append_many takes a sequence of bytes, not {type(payloads).__name__}") from None
        with self._lock:
            self._check_open()
            if self.fsync_policy == "always":
                for p in items:
                    self._write(encode_frame(p))
                    self._count += 1
                    os.fsync(self._fd)
                self._durable = self._count
            else:
                if items:
                    self._write(b"".join(encode_frame(p) for p in items))
                    self._count += len(items)
                    if self.fsync_policy == "group":
                        os.fsync(self._fd)
                        self._durable = self._count
            return self._count

    def _flush_loop(self) -> None:
        with self._cond:
            while not self._closed:
                if self._count == self._durable:
                    self._cond.wait()
                    continue
                # A batch is open: wait out the bounded delay, then commit what is pending.
                self._cond.wait(self._delay)
                if self._closed:
                    return
                target = self._count
                if target == self._durable:
                    continue
                fd = self._fd
                self._lock.release()
                try:
                    os.fsync(fd)  # appends continue meanwhile; they join the next batch
                finally:
                    self._lock.acquire()
                self._durable = max(self._durable, target)

    def flush(self) -> None:
        """Make every appended record durable now (fsync unless policy "none")."""
        with self._lock:
            self._check_open()
            if self.fsync_policy != "none" and self._durable < self._count:
                os.fsync(self._fd)  # nothing pending -> nothing to make durable
            self._durable = self._count

    @property
    def count(self) -> int:
        return self._count

    @property
    def durable_count(self) -> int:
        return self._durable

    def close(self) -> None:
        """Flush, fsync (unless "none"), release the lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            if self.fsync_policy != "none" and self._durable < self._count:
                os.fsync(self._fd)
            self._durable = self._count
            self._closed = True
            self._cond.notify_all()
        if self._flusher is not None:
            self._flusher.join()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<WriteAheadLog {self.path!r} fsync={self.fsync_policy} records={self._count}>"

    @staticmethod
    def replay(path) -> list[bytes]:
        """Every record's payload, without locking or modifying the file (a torn tail is
        ignored; corruption raises WalCorruptError)."""
        with open(os.fspath(path), "rb") as f:
            data = f.read()
        return scan(data)[0]
