//! Write-ahead log v2 and v1 (docs/formats.md; the recovery algorithm is spelled out in
//! `gateway/audit/protocols.py`, and the Python twin `gateway/audit/wal.py` follows it too).
//!
//! File: 8 bytes of magic, then frames `u32 LE len | u32 LE crc | payload`. v2 (`GLWAL\x00\x02\n`,
//! what new files get): crc = CRC-32 of the 4 length bytes then the payload, so a frame of
//! zero bytes is invalid and zero fill after a power loss is a torn tail, not empty records.
//! v1 (`GLWAL\x00\x01\n`): crc = CRC-32 of the payload; read, recovered and appended to as v1.
//! One writer per file: an exclusive non-blocking `flock` on the WAL file itself, exactly
//! what Python's `fcntl.flock(fd, LOCK_EX | LOCK_NB)` takes, so the twins exclude each other.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Release},
};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const MAGIC_V1: &[u8; 8] = b"GLWAL\x00\x01\n";
pub const MAGIC_V2: &[u8; 8] = b"GLWAL\x00\x02\n";
/// What a new file gets.
pub const MAGIC: &[u8; 8] = MAGIC_V2;

/// The frame format of one file, named by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            Version::V1 => MAGIC_V1,
            Version::V2 => MAGIC_V2,
        }
    }
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
    /// The version a complete header names, if any.
    pub fn of_header(head: &[u8]) -> Option<Version> {
        if head == MAGIC_V2 {
            Some(Version::V2)
        } else if head == MAGIC_V1 {
            Some(Version::V1)
        } else {
            None
        }
    }
    /// The CRC field of a frame of `payload` whose length field is `len_le`.
    #[inline]
    fn crc(self, len_le: &[u8], payload: &[u8]) -> u32 {
        match self {
            Version::V1 => crc32fast::hash(payload),
            Version::V2 => {
                let mut h = crc32fast::Hasher::new();
                h.update(len_le);
                h.update(payload);
                h.finalize()
            }
        }
    }
}

const BAD_HEADER: &str = "not a WAL file: the header at offset 0 is neither GLWAL\\x00\\x02\\n (v2) nor GLWAL\\x00\\x01\\n (v1)";
pub const HEADER_LEN: usize = 8;
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub enum WalError {
    /// A bad frame (or header) followed by valid data; nothing was modified.
    Corrupt {
        offset: u64,
        message: String,
    },
    /// Another writer holds the lock.
    Locked(String),
    /// Bad arguments (unknown policy, oversized payload, ...).
    Invalid(String),
    /// The writer was closed, or an earlier write/fsync failed and the log stopped.
    Stopped(String),
    Io(io::Error),
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Corrupt { message, .. } => f.write_str(message),
            WalError::Locked(m) | WalError::Invalid(m) | WalError::Stopped(m) => f.write_str(m),
            WalError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for WalError {
    fn from(e: io::Error) -> Self {
        WalError::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, WalError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    Group,
    None,
}

impl FsyncPolicy {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Self::Always),
            "group" => Ok(Self::Group),
            "none" => Ok(Self::None),
            _ => Err(WalError::Invalid(format!(
                "fsync policy {s:?}: expected 'always', 'group' or 'none'"
            ))),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Group => "group",
            Self::None => "none",
        }
    }
}

/// What recovery found when a writer opened the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    pub records: u64,
    pub truncated_bytes: u64,
}

/// Append one `version` frame for `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, version: Version, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&version.crc(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A whole WAL file's bytes for `payloads` (what a writer produces).
pub fn encode_file<'a>(version: Version, payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = version.magic().to_vec();
    for p in payloads {
        encode_frame(&mut out, version, p);
    }
    out
}

/// The result of scanning a WAL's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Payload byte ranges of the valid frames, in order.
    pub payloads: Vec<Range<usize>>,
    /// End of the valid prefix (where the next frame goes).
    pub valid_end: usize,
    /// The file is shorter than the header but a prefix of a magic (incl. empty).
    pub header_incomplete: bool,
    /// The file's version (V2 for an incomplete header: it holds no records and becomes v2).
    pub version: Version,
}

impl Scan {
    pub fn truncated_bytes(&self, len: usize) -> u64 {
        (len - self.valid_end) as u64
    }
}

/// Length of the valid frame at `p`, if there is one.
#[inline]
fn frame_at(data: &[u8], p: usize, version: Version) -> Option<usize> {
    let hdr = data.get(p..p.checked_add(8)?)?;
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if len > MAX_FRAME {
        return None;
    }
    let payload = data.get(p + 8..p + 8 + len)?;
    (version.crc(&hdr[..4], payload) == crc).then_some(8 + len)
}

/// True iff some offset in (o, EOF) starts a chain of valid frames ending exactly at EOF.
/// Right-to-left: `good[p]` = a chain from p ends at EOF; cheap checks before the CRC.
fn valid_chain_after(data: &[u8], o: usize, version: Version) -> bool {
    let eof = data.len();
    if eof <= o + 1 {
        return false;
    }
    let base = o + 1;
    let mut good = vec![false; eof + 1 - base];
    good[eof - base] = true;
    for p in (base..eof).rev() {
        if p + 8 > eof {
            continue;
        }
        let len = u32::from_le_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
        if len > MAX_FRAME || p + 8 + len > eof || !good[p + 8 + len - base] {
            continue;
        }
        if frame_at(data, p, version).is_some() {
            return true;
        }
    }
    false
}

/// Scan a WAL image: the longest valid prefix, or `Corrupt` when a bad frame is followed
/// by valid frames reaching EOF (or the header is wrong).
pub fn scan(data: &[u8]) -> Result<Scan> {
    if data.len() < HEADER_LEN {
        if MAGIC_V2.starts_with(data) || MAGIC_V1.starts_with(data) {
            return Ok(Scan {
                payloads: Vec::new(),
                valid_end: data.len(),
                header_incomplete: true,
                version: Version::V2,
            });
        }
        return Err(corrupt(0, BAD_HEADER));
    }
    let version = Version::of_header(&data[..HEADER_LEN]).ok_or_else(|| corrupt(0, BAD_HEADER))?;
    scan_frames(data, HEADER_LEN, 0, version)
}

/// Scan the frames of `data`, which is the file from byte `base` on, `base` being a frame
/// boundary the caller vouches for (a trusted prefix ends there). Ranges and `valid_end`
/// are relative to `data`; offsets in errors are absolute. `version` is the file's (from its
/// header, which the caller read).
pub fn scan_tail(data: &[u8], base: usize, version: Version) -> Result<Scan> {
    scan_frames(data, 0, base, version)
}

fn scan_frames(data: &[u8], start: usize, base: usize, version: Version) -> Result<Scan> {
    let mut payloads = Vec::new();
    let mut o = start;
    while o < data.len() {
        match frame_at(data, o, version) {
            Some(n) => {
                payloads.push(o + 8..o + n);
                o += n;
            }
            None => {
                if valid_chain_after(data, o, version) {
                    let at = base + o;
                    return Err(corrupt(
                        at as u64,
                        &format!("WAL corrupt: bad frame at offset {at} is followed by valid frames (record {} after the scan start)", payloads.len()),
                    ));
                }
                break;
            }
        }
    }
    Ok(Scan {
        payloads,
        valid_end: o,
        header_incomplete: false,
        version,
    })
}

fn corrupt(offset: u64, message: &str) -> WalError {
    WalError::Corrupt {
        offset,
        message: message.to_string(),
    }
}

fn with_path(e: WalError, path: &Path) -> WalError {
    match e {
        WalError::Corrupt { offset, message } => WalError::Corrupt {
            offset,
            message: format!("{}: {message}", path.display()),
        },
        e => e,
    }
}

/// Read every record of the WAL at `path` without locking or modifying it (a torn tail is
/// ignored). Returns the file bytes and the payload ranges into them.
pub fn replay(path: &Path) -> Result<(Vec<u8>, Vec<Range<usize>>)> {
    let data = std::fs::read(path)?;
    let s = scan(&data).map_err(|e| with_path(e, path))?;
    Ok((data, s.payloads))
}

/// The records from byte `offset` on (a frame boundary >= 8 the caller vouches for; 0 means
/// the whole file), read as `replay` does. Returns the bytes from `offset` on and the
/// payload ranges into them.
pub fn replay_from(path: &Path, offset: u64) -> Result<(Vec<u8>, Vec<Range<usize>>)> {
    if offset == 0 {
        return replay(path);
    }
    if offset < HEADER_LEN as u64 {
        return Err(WalError::Invalid(format!(
            "offset must be 0 or a frame boundary >= 8, got {offset}"
        )));
    }
    let mut f = File::open(path)?;
    let version = read_version(&mut f).map_err(|e| with_path(e, path))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let s = scan_tail(&data, offset as usize, version).map_err(|e| with_path(e, path))?;
    Ok((data, s.payloads))
}

/// The version named by the complete header at the start of `f`.
fn read_version(f: &mut File) -> Result<Version> {
    let mut head = [0u8; HEADER_LEN];
    f.seek(SeekFrom::Start(0))?;
    if f.read_exact(&mut head).is_err() {
        return Err(corrupt(0, BAD_HEADER));
    }
    Version::of_header(&head).ok_or_else(|| corrupt(0, BAD_HEADER))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), op) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[derive(Debug)]
struct State {
    count: u64,
    durable: u64,
    /// When the oldest not-yet-fsynced record was written (group policy).
    pending_since: Option<Instant>,
    pending: u64,
    closed: bool,
    /// A write or fsync failed: the log stops rather than risk a torn middle frame.
    failed: Option<String>,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    file: File,
    state: Mutex<State>,
    wake: Condvar,
    /// `count` and `durable` published for readers that must not wait on a writer busy in
    /// an fsync (the Python getters run holding the GIL).
    count: AtomicU64,
    durable: AtomicU64,
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn publish(&self, st: &State) {
        self.count.store(st.count, Release);
        self.durable.store(st.durable, Release);
        self.closed.store(st.closed, Release);
    }
}

/// The single writer of one WAL file.
#[derive(Debug)]
pub struct WalWriter {
    path: PathBuf,
    policy: FsyncPolicy,
    version: Version,
    group_delay: Duration,
    group_max_records: u64,
    recovery: Recovery,
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl WalWriter {
    /// Open (creating if missing), lock, recover. See the module docs.
    pub fn open(
        path: &Path,
        policy: FsyncPolicy,
        group_delay_ms: f64,
        group_max_records: u64,
    ) -> Result<Self> {
        Self::open_trusted(path, policy, group_delay_ms, group_max_records, None)
    }

    /// `open`, trusting that the first `records` records end at byte `offset` (the node
    /// store's checkpoint vouches for it): recovery reads and scans only `[offset, EOF)`.
    pub fn open_trusted(
        path: &Path,
        policy: FsyncPolicy,
        group_delay_ms: f64,
        group_max_records: u64,
        trusted: Option<(u64, u64)>,
    ) -> Result<Self> {
        if let Some((records, offset)) = trusted {
            if offset < HEADER_LEN as u64 || (records == 0) != (offset == HEADER_LEN as u64) {
                return Err(WalError::Invalid(format!(
                    "trusted must be (records, offset) with offset >= 8 at a frame boundary, got ({records}, {offset})"
                )));
            }
        }
        if !(group_delay_ms.is_finite() && group_delay_ms >= 0.0) {
            return Err(WalError::Invalid(format!(
                "group_delay_ms must be a finite number >= 0, got {group_delay_ms}"
            )));
        }
        if group_max_records < 1 {
            return Err(WalError::Invalid(format!(
                "group_max_records must be >= 1, got {group_max_records}"
            )));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        if let Err(e) = flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(WalError::Locked(format!(
                    "WAL {} is locked by another writer",
                    path.display()
                )));
            }
            return Err(e.into());
        }
        let (records, base) = trusted.unwrap_or((0, 0));
        let size = file.metadata()?.len();
        if base > size {
            return Err(WalError::Corrupt {
                offset: size,
                message: format!(
                    "WAL {} ends at offset {size}, before the end of its trusted prefix ({records} records to offset {base})",
                    path.display()
                ),
            });
        }
        let mut data = Vec::new();
        let s = if base == 0 {
            file.seek(SeekFrom::Start(0))?;
            file.read_to_end(&mut data)?;
            scan(&data).map_err(|e| with_path(e, path))?
        } else {
            let version = read_version(&mut file).map_err(|e| with_path(e, path))?;
            file.seek(SeekFrom::Start(base))?;
            file.read_to_end(&mut data)?;
            scan_tail(&data, base as usize, version).map_err(|e| with_path(e, path))?
        };
        let mut recovery = Recovery {
            records: records + s.payloads.len() as u64,
            truncated_bytes: 0,
        };
        if s.header_incomplete {
            // no records: the file starts over as v2
            file.set_len(0)?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
        } else if s.valid_end < data.len() {
            recovery.truncated_bytes = s.truncated_bytes(data.len());
            file.set_len(base + s.valid_end as u64)?;
            file.sync_all()?;
        }
        let state = State {
            count: recovery.records,
            durable: recovery.records,
            pending_since: None,
            pending: 0,
            closed: false,
            failed: None,
            buf: Vec::new(),
        };
        let shared = Arc::new(Shared {
            file,
            count: AtomicU64::new(state.count),
            durable: AtomicU64::new(state.durable),
            closed: AtomicBool::new(false),
            state: Mutex::new(state),
            wake: Condvar::new(),
        });
        let group_delay = Duration::from_secs_f64(group_delay_ms / 1000.0);
        let flusher = if policy == FsyncPolicy::Group {
            let sh = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("gatewaylab-wal-group".into())
                    .spawn(move || group_flusher(&sh, group_delay))?,
            )
        } else {
            None
        };
        Ok(Self {
            path: path.to_path_buf(),
            policy,
            version: s.version,
            group_delay,
            group_max_records,
            recovery,
            shared,
            flusher: Mutex::new(flusher),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }
    pub fn version(&self) -> Version {
        self.version
    }
    pub fn group_delay(&self) -> Duration {
        self.group_delay
    }
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }
    /// Lock-free: never waits for a writer in the middle of an fsync.
    pub fn count(&self) -> u64 {
        self.shared.count.load(Acquire)
    }
    pub fn durable_count(&self) -> u64 {
        self.shared.durable.load(Acquire)
    }
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Acquire)
    }

    fn usable<'a>(&'a self, st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        if st.closed {
            return Err(WalError::Stopped(format!(
                "WAL {} is closed",
                self.path.display()
            )));
        }
        if let Some(f) = &st.failed {
            return Err(WalError::Stopped(format!(
                "WAL {} stopped after an I/O error: {f}",
                self.path.display()
            )));
        }
        Ok(st)
    }

    fn check_len(payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_FRAME {
            return Err(WalError::Invalid(format!(
                "payload of {} bytes exceeds the {MAX_FRAME}-byte frame limit",
                payload.len()
            )));
        }
        Ok(())
    }

    fn fail(st: &mut State, e: io::Error) -> WalError {
        st.failed = Some(e.to_string());
        WalError::Io(e)
    }

    /// Write `st.buf` holding `n` frames; then fsync as the policy says.
    fn commit(&self, st: &mut State, n: u64, batch: bool) -> Result<()> {
        let r = self.commit_inner(st, n, batch);
        self.shared.publish(st);
        r
    }

    fn commit_inner(&self, st: &mut State, n: u64, batch: bool) -> Result<()> {
        let file = &self.shared.file;
        if let Err(e) = (&*file).write_all(&st.buf) {
            return Err(Self::fail(st, e));
        }
        st.count += n;
        match self.policy {
            FsyncPolicy::None => {}
            FsyncPolicy::Always => {
                if let Err(e) = file.sync_all() {
                    return Err(Self::fail(st, e));
                }
                st.durable = st.count;
            }
            FsyncPolicy::Group => {
                st.pending += n;
                if batch || st.pending >= self.group_max_records {
                    if let Err(e) = file.sync_all() {
                        return Err(Self::fail(st, e));
                    }
                    st.durable = st.count;
                    st.pending = 0;
                    st.pending_since = None;
                } else if st.pending_since.is_none() {
                    st.pending_since = Some(Instant::now());
                    self.shared.wake.notify_one();
                }
            }
        }
        Ok(())
    }

    /// Append one record; returns its index.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        Self::check_len(payload)?;
        let mut st = self.usable(self.shared.lock())?;
        let st = &mut *st;
        st.buf.clear();
        encode_frame(&mut st.buf, self.version, payload);
        let index = st.count;
        self.commit(st, 1, false)?;
        Ok(index)
    }

    /// Append a batch; returns the new count. Under "group" the batch is one write and one
    /// fsync; under "always" every record is written and fsynced on its own.
    pub fn append_many(&self, payloads: &[&[u8]]) -> Result<u64> {
        self.append_batch(payloads, true)
    }

    /// `append_many` whose batch joins the pending group instead of being fsynced before it
    /// returns: under "group" it is one write, and the flusher fsyncs it with whatever else is
    /// pending within `group_delay_ms` (at once at `group_max_records`), as it does single
    /// appends; "always" and "none" are as `append_many`. For batches nobody waits on (the
    /// ledger thread's, under ack background): at low rates every batch is one record, and an
    /// fsync each would put one fsync per request on the gateway's core.
    pub fn append_many_grouped(&self, payloads: &[&[u8]]) -> Result<u64> {
        self.append_batch(payloads, false)
    }

    fn append_batch(&self, payloads: &[&[u8]], fsync_now: bool) -> Result<u64> {
        for p in payloads {
            Self::check_len(p)?;
        }
        let mut st = self.usable(self.shared.lock())?;
        let st = &mut *st;
        if payloads.is_empty() {
            return Ok(st.count);
        }
        if self.policy == FsyncPolicy::Always {
            for p in payloads {
                st.buf.clear();
                encode_frame(&mut st.buf, self.version, p);
                self.commit(st, 1, false)?;
            }
        } else {
            st.buf.clear();
            st.buf.reserve(payloads.iter().map(|p| p.len() + 8).sum());
            for p in payloads {
                encode_frame(&mut st.buf, self.version, p);
            }
            self.commit(st, payloads.len() as u64, fsync_now)?;
        }
        if st.buf.capacity() > (1 << 20) {
            st.buf = Vec::new();
        }
        Ok(st.count)
    }

    /// Make every appended record durable now (no fsync under "none").
    pub fn flush(&self) -> Result<()> {
        let mut st = self.usable(self.shared.lock())?;
        self.flush_locked(&mut st)
    }

    fn flush_locked(&self, st: &mut State) -> Result<()> {
        if self.policy != FsyncPolicy::None && st.durable < st.count {
            if let Err(e) = self.shared.file.sync_all() {
                return Err(Self::fail(st, e));
            }
        }
        st.durable = st.count;
        st.pending = 0;
        st.pending_since = None;
        self.shared.publish(st);
        Ok(())
    }

    /// Flush, fsync (unless "none"), stop the group thread and release the lock. Idempotent.
    pub fn close(&self) -> Result<()> {
        let result = {
            let mut st = self.shared.lock();
            if st.closed {
                return Ok(());
            }
            let r = if st.failed.is_none() {
                self.flush_locked(&mut st)
            } else {
                Ok(())
            };
            st.closed = true;
            self.shared.publish(&st);
            self.shared.wake.notify_all();
            r
        };
        let handle = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        flock(&self.shared.file, libc::LOCK_UN)?;
        result
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Group commit: fsync once `group_delay` after the first pending record (appends that hit
/// `group_max_records` or a batch fsync inline and clear the pending mark).
fn group_flusher(sh: &Shared, delay: Duration) {
    // background work: its wake-ups never preempt the request path (a hint; src/sched.rs)
    let _ = crate::sched::background_thread();
    let mut st = sh.lock();
    loop {
        if st.closed {
            return;
        }
        match st.pending_since {
            None => st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                let now = Instant::now();
                let deadline = t + delay;
                if now < deadline {
                    st = sh
                        .wake
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                let target = st.count;
                st.pending_since = None;
                st.pending = 0;
                drop(st);
                // fsync without the state lock so appends keep flowing meanwhile.
                let r = sh.file.sync_all();
                st = sh.lock();
                match r {
                    Ok(()) => st.durable = st.durable.max(target),
                    Err(e) => st.failed = Some(e.to_string()),
                }
                sh.publish(&st);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("glwal-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("audit.wal")
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn vector(file: &str, key: &str) -> (Vec<Vec<u8>>, String) {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/vectors")
            .join(file);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let ex = &v[key];
        let payloads = ex["payloads_utf8"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().as_bytes().to_vec())
            .collect();
        (payloads, ex["file_hex"].as_str().unwrap().to_string())
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn vector_file_bytes_every_policy() {
        let (payloads, want) = vector("wal_v2.json", "wal_v2_example");
        assert_eq!(
            hex(&encode_file(Version::V2, payloads.iter().map(|p| &p[..]))),
            want
        );
        for policy in [FsyncPolicy::Always, FsyncPolicy::Group, FsyncPolicy::None] {
            let path = tmp(&format!("vec-{}", policy.name()));
            {
                let w = WalWriter::open(&path, policy, 2.0, 256).unwrap();
                assert_eq!(w.append(&payloads[0]).unwrap(), 0);
                let rest: Vec<&[u8]> = payloads[1..].iter().map(|p| &p[..]).collect();
                assert_eq!(w.append_many(&rest).unwrap(), 3);
                w.close().unwrap();
                w.close().unwrap();
                assert!(matches!(w.append(b"x"), Err(WalError::Stopped(_))));
            }
            assert_eq!(hex(&std::fs::read(&path).unwrap()), want);
            let (data, ranges) = replay(&path).unwrap();
            let got: Vec<&[u8]> = ranges.iter().map(|r| &data[r.clone()]).collect();
            assert_eq!(got, payloads.iter().map(|p| &p[..]).collect::<Vec<_>>());
        }
    }

    /// A v1 file (the vector's bytes) is read as v1 and appended to in v1 frames.
    #[test]
    fn v1_vector_is_read_and_appended_as_v1() {
        let (payloads, want) = vector("mmr_v2.json", "wal_v1_example");
        assert_eq!(
            hex(&encode_file(Version::V1, payloads.iter().map(|p| &p[..]))),
            want
        );
        let path = tmp("v1");
        std::fs::write(&path, unhex(&want)).unwrap();
        let (data, ranges) = replay(&path).unwrap();
        let got: Vec<&[u8]> = ranges.iter().map(|r| &data[r.clone()]).collect();
        assert_eq!(got, payloads.iter().map(|p| &p[..]).collect::<Vec<_>>());
        let w = WalWriter::open(&path, FsyncPolicy::Always, 0.0, 1).unwrap();
        assert_eq!(w.version(), Version::V1);
        assert_eq!(
            w.recovery(),
            Recovery {
                records: 3,
                truncated_bytes: 0
            }
        );
        w.append(b"four").unwrap();
        drop(w);
        let mut all: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        all.push(b"four");
        assert_eq!(std::fs::read(&path).unwrap(), encode_file(Version::V1, all));
    }

    /// The reason for v2: zero fill after a power loss is a torn tail, never empty records,
    /// wherever it starts (at a frame boundary or inside a cut frame). In v1 eight zero bytes
    /// are a valid empty frame, so the same tail reads back as phantom records.
    #[test]
    fn zero_fill_is_a_torn_tail_in_v2() {
        let frames: Vec<Vec<u8>> = (0..3).map(|i| format!("record-{i}").into_bytes()).collect();
        let two = encode_file(Version::V2, frames[..2].iter().map(|p| &p[..]));
        let three = encode_file(Version::V2, frames.iter().map(|p| &p[..]));
        for tail in [
            vec![0u8; 16],
            vec![0u8; 19],
            [&three[two.len()..two.len() + 5], &[0u8; 16][..]].concat(),
        ] {
            for zeros in [1usize, 7, 8, 9, 4096] {
                let mut t = tail.clone();
                t.extend(std::iter::repeat_n(0u8, zeros));
                let path = tmp("zeros");
                std::fs::write(&path, [&two[..], &t[..]].concat()).unwrap();
                assert_eq!(replay(&path).unwrap().1.len(), 2);
                let w = WalWriter::open(&path, FsyncPolicy::None, 0.0, 1).unwrap();
                assert_eq!(
                    w.recovery(),
                    Recovery {
                        records: 2,
                        truncated_bytes: t.len() as u64
                    }
                );
                drop(w);
                assert_eq!(std::fs::read(&path).unwrap(), two);
            }
        }
        // the v1 weakness, pinned: the same zeros after a v1 boundary are two empty records
        let v1 = encode_file(Version::V1, frames[..2].iter().map(|p| &p[..]));
        let path = tmp("zeros-v1");
        std::fs::write(&path, [&v1[..], &[0u8; 16][..]].concat()).unwrap();
        assert_eq!(replay(&path).unwrap().1.len(), 4);
    }

    #[test]
    fn reopen_continues() {
        let path = tmp("reopen");
        let w = WalWriter::open(&path, FsyncPolicy::None, 0.0, 1).unwrap();
        w.append(b"a").unwrap();
        drop(w);
        let w = WalWriter::open(&path, FsyncPolicy::Always, 0.0, 1).unwrap();
        assert_eq!(
            w.recovery(),
            Recovery {
                records: 1,
                truncated_bytes: 0
            }
        );
        assert_eq!(w.append(b"b").unwrap(), 1);
        assert_eq!(w.durable_count(), 2);
        drop(w);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            encode_file(Version::V2, [&b"a"[..], b"b"])
        );
    }

    #[test]
    fn header_prefix_is_completed_and_bad_header_is_corrupt() {
        // a torn header of either version holds no records: it starts over as v2
        for magic in [MAGIC_V1, MAGIC_V2] {
            for k in 0..8 {
                let path = tmp(&format!("hdr{k}"));
                std::fs::write(&path, &magic[..k]).unwrap();
                assert_eq!(replay(&path).unwrap().1.len(), 0);
                let w = WalWriter::open(&path, FsyncPolicy::None, 0.0, 1).unwrap();
                assert_eq!(w.recovery(), Recovery::default());
                assert_eq!(w.version(), Version::V2);
                drop(w);
                assert_eq!(std::fs::read(&path).unwrap(), MAGIC_V2.to_vec());
            }
        }
        // each is a bad header (none is a prefix of a magic: those are torn headers, above)
        for bad in [
            &b"X"[..],
            b"GLWAL\x00\x03\n",
            b"GLWAL\x01",
            b"GLWAX",
            b"GLWAL\x00\x01\r",
            b"GLWAL\x00\x02\r",
        ] {
            assert!(
                !MAGIC_V1.starts_with(bad) && !MAGIC_V2.starts_with(bad),
                "{bad:?} is a torn header, not a bad one"
            );
            let path = tmp("badhdr");
            std::fs::write(&path, bad).unwrap();
            match WalWriter::open(&path, FsyncPolicy::None, 0.0, 1) {
                Err(WalError::Corrupt { offset: 0, message }) => {
                    assert!(message.contains("offset 0"), "{message}")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
    }

    #[test]
    fn torn_tail_at_every_offset() {
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3 + 7 * i as usize]).collect();
        for v in [Version::V1, Version::V2] {
            let full = encode_file(v, payloads.iter().map(|p| &p[..]));
            let last_start = encode_file(v, payloads[..4].iter().map(|p| &p[..])).len();
            for cut in last_start..full.len() {
                let path = tmp("torn");
                std::fs::write(&path, &full[..cut]).unwrap();
                assert_eq!(replay(&path).unwrap().1.len(), 4, "cut={cut}");
                let w = WalWriter::open(&path, FsyncPolicy::None, 0.0, 1).unwrap();
                assert_eq!(
                    w.recovery(),
                    Recovery {
                        records: 4,
                        truncated_bytes: (cut - last_start) as u64
                    }
                );
                assert_eq!(w.count(), 4);
                w.append(&payloads[4]).unwrap();
                drop(w);
                assert_eq!(std::fs::read(&path).unwrap(), full, "cut={cut}");
            }
        }
    }

    #[test]
    fn flipped_bit_in_earlier_frame_is_corruption() {
        let payloads: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
        for v in [Version::V1, Version::V2] {
            let full = encode_file(v, payloads.iter().map(|p| &p[..]));
            let frame1 = 8 + 18;
            for byte in frame1..frame1 + 18 {
                for bit in 0..8 {
                    let mut data = full.clone();
                    data[byte] ^= 1 << bit;
                    let path = tmp("flip");
                    std::fs::write(&path, &data).unwrap();
                    match WalWriter::open(&path, FsyncPolicy::None, 0.0, 1) {
                        Err(WalError::Corrupt { offset, message }) => {
                            assert_eq!(offset, frame1 as u64);
                            assert!(message.contains(&format!("offset {frame1}")), "{message}");
                        }
                        other => panic!("byte {byte} bit {bit}: {other:?}"),
                    }
                    assert!(matches!(replay(&path), Err(WalError::Corrupt { .. })));
                    assert_eq!(std::fs::read(&path).unwrap(), data, "nothing modified");
                }
            }
        }
    }

    #[test]
    fn garbage_tail_without_valid_chain_is_torn() {
        let mut data = encode_file(Version::V2, [&b"abc"[..]]);
        let good = data.len();
        data.extend_from_slice(&[0xff; 5]);
        let path = tmp("garbage");
        std::fs::write(&path, &data).unwrap();
        let w = WalWriter::open(&path, FsyncPolicy::None, 0.0, 1).unwrap();
        assert_eq!(
            w.recovery(),
            Recovery {
                records: 1,
                truncated_bytes: 5
            }
        );
        drop(w);
        assert_eq!(std::fs::read(&path).unwrap().len(), good);
    }

    #[test]
    fn second_writer_is_locked_out_until_close() {
        let path = tmp("lock");
        let w = WalWriter::open(&path, FsyncPolicy::Group, 2.0, 256).unwrap();
        assert!(matches!(
            WalWriter::open(&path, FsyncPolicy::Group, 2.0, 256),
            Err(WalError::Locked(_))
        ));
        // Replay needs no lock.
        w.append(b"x").unwrap();
        assert_eq!(replay(&path).unwrap().1.len(), 1);
        w.close().unwrap();
        let w2 = WalWriter::open(&path, FsyncPolicy::Group, 2.0, 256).unwrap();
        assert_eq!(w2.count(), 1);
    }

    #[test]
    fn group_commit_fsyncs_within_the_delay_or_at_max_records() {
        let path = tmp("group");
        let w = WalWriter::open(&path, FsyncPolicy::Group, 1.0, 3).unwrap();
        w.append(b"a").unwrap();
        w.append(b"b").unwrap();
        assert!(w.durable_count() <= 2);
        w.append(b"c").unwrap(); // third pending record: fsync inline
        assert_eq!(w.durable_count(), 3);
        w.append(b"d").unwrap();
        let t0 = Instant::now();
        while w.durable_count() < 4 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "group flusher never fsynced"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        w.append_many(&[b"e", b"f"]).unwrap();
        assert_eq!(w.durable_count(), 6);
        w.append(b"g").unwrap();
        w.flush().unwrap();
        assert_eq!(w.durable_count(), 7);
    }

    #[test]
    fn grouped_batches_join_the_pending_group_and_write_the_same_bytes() {
        let (a, b) = (tmp("grouped"), tmp("grouped-ref"));
        // a delay no test waits out: only the group size or a flush makes them durable
        let w = WalWriter::open(&a, FsyncPolicy::Group, 600_000.0, 4).unwrap();
        let r = WalWriter::open(&b, FsyncPolicy::Group, 600_000.0, 4).unwrap();
        w.append_many(&[b"a"]).unwrap();
        assert_eq!(w.durable_count(), 1);
        w.append_many_grouped(&[b"b", b"c"]).unwrap();
        assert_eq!((w.count(), w.durable_count()), (3, 1));
        w.append_many_grouped(&[b"d", b"e"]).unwrap(); // four pending: fsynced at once
        assert_eq!((w.count(), w.durable_count()), (5, 5));
        w.append_many_grouped(&[b"f"]).unwrap();
        assert_eq!(w.durable_count(), 5);
        w.flush().unwrap();
        assert_eq!(w.durable_count(), 6);
        for batch in [&[&b"a"[..]][..], &[b"b", b"c"], &[b"d", b"e"], &[b"f"]] {
            r.append_many(batch).unwrap();
        }
        w.close().unwrap();
        r.close().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        // "always" fsyncs every record whatever the call
        let c = tmp("grouped-always");
        let w = WalWriter::open(&c, FsyncPolicy::Always, 600_000.0, 4).unwrap();
        w.append_many_grouped(&[b"x", b"y"]).unwrap();
        assert_eq!(w.durable_count(), 2);
        w.close().unwrap();
    }

    #[test]
    fn bad_arguments() {
        let path = tmp("args");
        assert!(matches!(
            FsyncPolicy::parse("sometimes"),
            Err(WalError::Invalid(_))
        ));
        assert!(matches!(
            WalWriter::open(&path, FsyncPolicy::Group, -1.0, 1),
            Err(WalError::Invalid(_))
        ));
        assert!(matches!(
            WalWriter::open(&path, FsyncPolicy::Group, f64::NAN, 1),
            Err(WalError::Invalid(_))
        ));
        assert!(matches!(
            WalWriter::open(&path, FsyncPolicy::Group, 1.0, 0),
            Err(WalError::Invalid(_))
        ));
        assert!(matches!(
            replay(&tmp("missing").with_file_name("nope.wal")),
            Err(WalError::Io(_))
        ));
    }
}
