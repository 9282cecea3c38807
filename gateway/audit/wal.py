"""Write-ahead log v2 (and v1) -- the Python twin (`gateway._native.WriteAheadLog` is the Rust one).

Format (docs/formats.md): 8 bytes of magic, then one frame per record:
`u32 LE payload length | u32 LE CRC-32 | payload`. Record k's payload is leaf k of the MMR,
so the WAL alone rebuilds the ledger. Two versions, told apart by the magic:

  v2  `GLWAL\x00\x02\n`  CRC-32 of the 4 length bytes followed by the payload (new files)
  v1  `GLWAL\x00\x01\n`  CRC-32 of the payload alone (read, recovered and appended to as v1)

v2 exists because of one v1 weakness: eight zero bytes are a valid v1 frame (an empty
payload, and CRC-32 of b"" is 0), so a file that a power loss extended with zeros (size on
disk, data not) came back with phantom empty records, or was refused as corrupt. In v2 a zero
frame has the wrong CRC (CRC-32 of four zero bytes is 0x2144DF1C), so zero fill is a torn
tail like any other, while empty payloads stay valid records. A file keeps its version: new
files are v2, a v1 file is appended to in v1 frames (its zero-fill weakness stays with it).

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
from collections.abc import Sequence

from gateway.errors import InvalidInput, WalCorruptError, WalError, WalLockedError

MAGIC_V1 = b"GLWAL\x00\x01\n"
MAGIC_V2 = b"GLWAL\x00\x02\n"
MAGIC = MAGIC_V2  # what a new file gets
VERSIONS = {MAGIC_V1: 1, MAGIC_V2: 2}
HEADER = struct.Struct("<II")
MAX_FRAME = 64 * 1024 * 1024
POLICIES = ("always", "group", "none")


def background_thread() -> None:
    """Put the calling thread under Linux's `SCHED_BATCH`: the group-commit thread keeps its
    fair share of the CPU, but its wake-ups never preempt the thread serving requests (the
    Rust twin's `sched::background_thread`, docs/architecture.md "Background threads yield on
    wake-up"). A hint: where the call is refused the thread runs under the default policy."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        pass


def magic(version: int) -> bytes:
    if version == 1:
        return MAGIC_V1
    if version == 2:
        return MAGIC_V2
    raise InvalidInput(f"WAL version must be 1 or 2, got {version!r}")


def _bad_header() -> WalCorruptError:
    return WalCorruptError(f"WAL header is not {MAGIC_V2!r} (v2) or {MAGIC_V1!r} (v1) at offset 0", 0)


def header_version(head: bytes) -> int:
    """The version a complete 8-byte header names; anything else -> WalCorruptError."""
    try:
        return VERSIONS[bytes(head)]
    except KeyError:
        raise _bad_header() from None


def _crc(version: int, data, pos: int, stop: int) -> int:
    """The CRC of the frame at `pos` whose payload ends at `stop`, as `version` defines it."""
    mv = memoryview(data)
    if version == 1:
        return zlib.crc32(mv[pos + 8 : stop])
    return zlib.crc32(mv[pos + 8 : stop], zlib.crc32(mv[pos : pos + 4]))


def encode_frame(payload: bytes, version: int = 2) -> bytes:
    n = struct.pack("<I", len(payload))
    crc = zlib.crc32(payload) if version == 1 else zlib.crc32(payload, zlib.crc32(n))
    return n + struct.pack("<I", crc) + payload


def encode_file(payloads: Sequence[bytes], version: int = 2) -> bytes:
    """A whole WAL file's bytes for `payloads` (what a writer produces)."""
    return magic(version) + b"".join(encode_frame(p, version) for p in payloads)


def _frame_end(data, pos: int, end: int, version: int) -> int:
    """End offset of the valid frame at `pos`, or -1."""
    if pos + 8 > end:
        return -1
    n, crc = HEADER.unpack_from(data, pos)
    stop = pos + 8 + n
    if n > MAX_FRAME or stop > end:
        return -1
    if _crc(version, data, pos, stop) != crc:
        return -1
    return stop


def _chain_to_eof_from(data, start: int, end: int, version: int) -> int | None:
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
        if _crc(version, data, p, stop) == crc:
            good[p - start] = 1
            found = p
    return found


def scan(data, base: int = 0, version: int | None = None) -> tuple[list[bytes], int]:
    """Parse a WAL image: (payloads, end of the valid prefix). With `base == 0`, `data` is
    the whole file and its header gives the version: a short header that is a prefix of a
    magic gives ([], len(data)). With `base >= 8`, `data` is the file from byte `base` on,
    which the caller vouches is a frame boundary (a trusted prefix) of a file of `version`
    (it read the header); offsets in the result and in errors are absolute.
    Corruption raises WalCorruptError."""
    size = len(data)
    if base == 0:
        if size < 8:
            if MAGIC_V1.startswith(bytes(data)) or MAGIC_V2.startswith(bytes(data)):
                return [], size
            raise _bad_header()
        version = header_version(data[:8])
        pos = 8
    elif base >= 8:
        if version not in (1, 2):
            raise InvalidInput(
                f"a WAL scan from offset {base} needs the file's version (1 or 2), got {version!r}"
            )
        pos = 0
    else:
        raise InvalidInput(f"a WAL scan starts at offset 0 or at a frame boundary >= 8, not {base}")
    out = []
    mv = memoryview(data)
    while pos < size:
        stop = _frame_end(data, pos, size, version)
        if stop < 0:
            break
        out.append(bytes(mv[pos + 8 : stop]))
        pos = stop
    if pos < size and _chain_to_eof_from(data, pos + 1, size, version) is not None:
        raise WalCorruptError(
            f"WAL corrupt: invalid frame at offset {base + pos} followed by valid frames (record {len(out)} after the scan start)",
            base + pos,
        )
    return out, base + pos


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
    """WAL writer with recovery (see module docstring and the Protocol)."""

    def __init__(
        self,
        path,
        fsync: str = "group",
        group_delay_ms: float = 2.0,
        group_max_records: int = 256,
        trusted: tuple[int, int] | None = None,
    ):
        if fsync not in POLICIES:
            raise InvalidInput(f"fsync policy {fsync!r}: expected one of {', '.join(POLICIES)}")
        if (
            isinstance(group_max_records, bool)
            or not isinstance(group_max_records, int)
            or group_max_records < 1
        ):
            raise InvalidInput(f"group_max_records must be a positive int, got {group_max_records!r}")
        if (
            isinstance(group_delay_ms, bool)
            or not isinstance(group_delay_ms, (int, float))
            or not math.isfinite(group_delay_ms)
            or group_delay_ms < 0
        ):
            raise InvalidInput(f"group_delay_ms must be a finite non-negative number, got {group_delay_ms!r}")
        if trusted is not None:
            if (
                not isinstance(trusted, tuple)
                or len(trusted) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in trusted)
                or (trusted[1] < 8)
                or (trusted[0] == 0) != (trusted[1] == 8)
            ):
                raise InvalidInput(
                    f"trusted must be (records, offset) with offset >= 8 at a frame boundary, got {trusted!r}"
                )
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
            self.recovery = self._recover(trusted)
        except BaseException:
            os.close(self._fd)  # closing releases the lock
            raise
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._durable = self._count
        self._closed = False
        self._failed: str | None = None  # why the log stopped (an earlier write or fsync failed)
        self._flusher = None
        if fsync == "group":
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"wal-flusher:{os.path.basename(self.path)}", daemon=True
            )
            self._flusher.start()

    # -- open / recovery --------------------------------------------------------------
    def _recover(self, trusted: tuple[int, int] | None) -> dict:
        size = os.fstat(self._fd).st_size
        records, base = (0, 0) if trusted is None else trusted
        if base > size:
            raise WalCorruptError(
                f"WAL {self.path} ends at offset {size}, before the end of its trusted prefix "
                f"({records} records to offset {base})",
                size,
            )
        version = None
        if base:
            version = header_version(os.pread(self._fd, 8, 0))
        data = os.pread(self._fd, size - base, base) if size > base else b""
        payloads, valid_end = scan(data, base, version)  # raises WalCorruptError before anything is modified
        truncated = 0
        if size < 8:  # empty or a prefix of a magic: no records, so it becomes a v2 file
            os.pwrite(self._fd, MAGIC, 0)
            os.fsync(self._fd)
            valid_end, version = 8, 2
        else:
            if version is None:
                version = header_version(data[:8])
            if valid_end < size:  # torn tail
                truncated = size - valid_end
                os.ftruncate(self._fd, valid_end)
                os.fsync(self._fd)
            elif payloads and self.fsync_policy != "none":
                os.fsync(self._fd)  # a crashed writer's records may sit in the page cache only
        self.version = version
        self._count = records + len(payloads)
        self._end = valid_end
        return {"records": self._count, "truncated_bytes": truncated}

    # -- writing ------------------------------------------------------------------------
    def _write(self, buf: bytes) -> None:
        mv, off = memoryview(buf), 0
        try:
            while off < len(buf):
                off += os.pwrite(self._fd, mv[off:], self._end + off)
        except OSError as e:
            raise self._fail(e) from e
        self._end += len(buf)

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise self._fail(e) from e

    def _fail(self, e: OSError) -> OSError:
        """A write or fsync failed: the log stops rather than risk a torn middle frame or
        trust pages the kernel may have dropped after a failed fsync (as the Rust twin)."""
        self._failed = f"{e.strerror} (os error {e.errno})" if e.errno is not None else str(e)
        return e

    def _check_open(self) -> None:
        if self._closed:
            raise WalError(f"WAL {self.path} is closed")
        if self._failed is not None:
            raise WalError(f"WAL {self.path} stopped after an I/O error: {self._failed}")

    def append(self, payload: bytes) -> int:
        """Append one record; returns its index."""
        frame = encode_frame(_payload(payload), self.version)
        with self._lock:
            self._check_open()
            self._write(frame)
            self._count += 1
            idx = self._count - 1
            if self.fsync_policy == "always":
                self._fsync()
                self._durable = self._count
            elif self.fsync_policy == "group":
                pending = self._count - self._durable
                if pending >= self._max:
                    self._fsync()
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
            raise InvalidInput(
                f"append_many takes a sequence of bytes, not {type(payloads).__name__}"
            ) from None
        with self._lock:
            self._check_open()
            if self.fsync_policy == "always":
                for p in items:
                    self._write(encode_frame(p, self.version))
                    self._count += 1
                    self._fsync()
                    self._durable = self._count
            else:
                if items:
                    self._write(b"".join(encode_frame(p, self.version) for p in items))
                    self._count += len(items)
                    if self.fsync_policy == "group":
                        self._fsync()
                        self._durable = self._count
            return self._count

    def _flush_loop(self) -> None:
        background_thread()
        with self._cond:
            while not self._closed:
                if self._count == self._durable or self._failed is not None:
                    self._cond.wait()  # nothing pending, or stopped: sleep until an append or close
                    continue
                # A batch is open: wait out the bounded delay, then commit what is pending.
                self._cond.wait(self._delay)
                if self._closed:
                    return
                target = self._count
                if target == self._durable or self._failed is not None:
                    continue
                fd = self._fd
                self._lock.release()
                failed: OSError | None
                try:
                    os.fsync(fd)  # appends continue meanwhile; they join the next batch
                except OSError as e:
                    failed = e
                else:
                    failed = None
                finally:
                    self._lock.acquire()
                if failed is not None:
                    self._fail(failed)
                    continue
                self._durable = max(self._durable, target)

    def flush(self) -> None:
        """Make every appended record durable now (fsync unless policy "none")."""
        with self._lock:
            self._check_open()
            if self.fsync_policy != "none" and self._durable < self._count:
                self._fsync()  # nothing pending -> nothing to make durable
            self._durable = self._count

    @property
    def count(self) -> int:
        return self._count

    @property
    def durable_count(self) -> int:
        return self._durable

    def close(self) -> None:
        """Flush, fsync (unless "none"), release the lock. Idempotent. A failed final fsync
        (or a log already stopped by one) still releases the file and its lock; the fsync's
        error is raised after."""
        error = None
        with self._lock:
            if self._closed:
                return
            if self._failed is None and self.fsync_policy != "none" and self._durable < self._count:
                try:
                    self._fsync()
                except OSError as e:
                    error = e
            if error is None and self._failed is None:
                self._durable = self._count
            self._closed = True
            self._cond.notify_all()
        if self._flusher is not None:
            self._flusher.join()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        if error is not None:
            raise error

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
        return (
            f"<WriteAheadLog {self.path!r} v{self.version} fsync={self.fsync_policy} records={self._count}>"
        )

    @staticmethod
    def replay(path, offset: int = 0) -> list[bytes]:
        """Every record's payload, without locking or modifying the file (a torn tail is
        ignored; corruption raises WalCorruptError). With `offset` (a frame boundary the
        caller vouches for, >= 8), only the records from that byte on."""
        if isinstance(offset, bool) or not isinstance(offset, int) or (offset != 0 and offset < 8):
            raise InvalidInput(f"offset must be 0 or a frame boundary >= 8, got {offset!r}")
        version = None
        with open(os.fspath(path), "rb") as f:
            if offset:
                version = header_version(f.read(8))
                f.seek(offset)
            data = f.read()
        return scan(data, offset, version)[0]
