//! The audit ledger (Rust twin of `gateway/audit/ledger.py`): a WAL and an MMR kept in step,
//! and the ledger thread that owns one for the Rust rungs.
//!
//! The WAL lives at `<dir>/audit.wal`; record k of the WAL is leaf k of the MMR, whose nodes
//! live in the node store `<dir>/audit.mmr` (`node_store`), so memory holds only the peaks
//! and a bounded cache. Opening resumes from the store's newest checkpoint that the files
//! agree with (one record checked, only the WAL's tail scanned and re-hashed) or rebuilds
//! the store from the WAL, exactly as `gateway/audit/ledger.py` does, so a ledger written by
//! any rung or twin continues under any other and both write the same bytes.
//!
//! `LedgerThread` takes audit jobs over a channel and appends them in batches (one WAL write
//! per batch): the hot path only sends a message. Under fsync "group", a batch that carries
//! an `Ack` is fsynced before its acks are called; a batch nobody waits on joins the WAL's
//! pending group, which its flusher fsyncs within `group_delay_ms`.
//! A job may carry an `Ack` (`ledger.ack: durable`): the thread calls it once the batch
//! holding the job's record has been written and fsynced as the policy promises (one fsync
//! per batch under "group", one per record under "always", none under "none"), or with the
//! error when it could not be written. Jobs queued while a batch is being written form the
//! next batch, so concurrent requests share one group commit.
use crate::entropy::PySum;
use crate::hash::leaf_hash;
use crate::job::{record_payload, AuditJob};
use crate::mmr::{ConsistencyProof, InclusionProof, Mmr, MmrError};
use crate::node_store::Checkpoint;
use crate::wal::{replay, replay_from, FsyncPolicy, Recovery, WalError, WalWriter, HEADER_LEN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub const WAL_NAME: &str = "audit.wal";
pub const STORE_NAME: &str = "audit.mmr";
/// Leaves between two checkpoints of the node store: the same number as
/// `gateway/audit/ledger.py`'s, so both ledgers write byte-identical stores.
pub const CHECKPOINT_EVERY: u64 = 1 << 16;
const BATCH: usize = 256;
const GROUP_MAX_RECORDS: u64 = 256;
const WAL_HEADER: u64 = HEADER_LEN as u64;

/// What opening did with the node store (as `AuditLedger.store_recovery` in Python).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRecovery {
    /// "new", "resumed" (from a checkpoint, replaying only the WAL's tail) or "rebuilt".
    pub action: &'static str,
    pub checkpoint: u64,
    pub replayed: u64,
    pub message: String,
}

/// A WAL and an MMR whose nodes live in the node store beside it; the opening algorithm is
/// the one `gateway/audit/ledger.py` documents, step for step.
pub struct Ledger {
    wal: WalWriter,
    mmr: Mmr,
    path: PathBuf,
    wal_end: u64,
    last_len: u32,
    checkpointed: u64,
    sync: bool,
    store_recovery: StoreRecovery,
}

fn store_err(e: MmrError) -> WalError {
    match e {
        MmrError::Locked(m) => WalError::Locked(m),
        MmrError::Invalid(m) => WalError::Invalid(m),
        other => WalError::Io(std::io::Error::other(other.to_string())),
    }
}

/// WAL bytes of the frames `ranges` and the payload length of the last one.
fn tail_of(ranges: &[std::ops::Range<usize>]) -> (u64, Option<u32>) {
    (
        ranges.iter().map(|r| WAL_HEADER + r.len() as u64).sum(),
        ranges.last().map(|r| r.len() as u32),
    )
}

impl Ledger {
    pub fn open(dir: &Path, policy: FsyncPolicy, group_delay_ms: f64) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(WAL_NAME);
        let store = dir.join(STORE_NAME);
        let mut problems: Vec<String> = Vec::new();
        let mut mmr = match Mmr::open(&store) {
            Ok(m) => m,
            Err(MmrError::Corrupt(m)) => {
                eprintln!("gatewaylab ledger: {m}; rebuilding it from the WAL");
                problems.push(m);
                std::fs::remove_file(&store)?;
                Mmr::open(&store).map_err(store_err)?
            }
            Err(e) => return Err(store_err(e)),
        };
        let mut resumed = None;
        for cp in mmr.checkpoints() {
            let mut why = check_checkpoint(&mmr, &path, &cp);
            if why.is_none() {
                mmr.truncate(cp.leaf_count).map_err(store_err)?; // past it is redone from the WAL
                if mmr.root() != cp.root {
                    why = Some("the store's peaks do not hash to its checkpoint's root".into());
                }
            }
            match why {
                Some(w) => problems.push(format!(
                    "checkpoint {} ({} leaves): {w}",
                    cp.seq, cp.leaf_count
                )),
                None => {
                    resumed = Some(cp);
                    break;
                }
            }
        }
        let (wal, data, ranges, mut rec, wal_end, last_len) = match resumed {
            Some(cp) => {
                let trusted = (cp.leaf_count > 0).then_some((cp.leaf_count, cp.wal_end));
                let wal = WalWriter::open_trusted(
                    &path,
                    policy,
                    group_delay_ms,
                    GROUP_MAX_RECORDS,
                    trusted,
                )?;
                let (data, ranges) = replay_from(&path, cp.wal_end)?;
                let rec = StoreRecovery {
                    action: "resumed",
                    checkpoint: cp.leaf_count,
                    replayed: ranges.len() as u64,
                    message: String::new(),
                };
                (wal, data, ranges, rec, cp.wal_end, cp.last_frame_len)
            }
            None => {
                let wal = WalWriter::open(&path, policy, group_delay_ms, GROUP_MAX_RECORDS)?;
                let (data, ranges) = replay(&path)?;
                let held = mmr.leaf_count();
                mmr.truncate(0).map_err(store_err)?;
                let rebuilt = !problems.is_empty() || held > 0 || !ranges.is_empty();
                let mut rec = StoreRecovery {
                    action: if rebuilt { "rebuilt" } else { "new" },
                    checkpoint: 0,
                    replayed: ranges.len() as u64,
                    message: String::new(),
                };
                if rebuilt {
                    let why = if problems.is_empty() {
                        "it has no checkpoint".to_string()
                    } else {
                        problems.join("; ")
                    };
                    rec.message = format!(
                        "node store {} rebuilt from the WAL ({} records): {why}",
                        store.display(),
                        ranges.len()
                    );
                    if held > 0 || !problems.is_empty() {
                        eprintln!("gatewaylab ledger: {}", rec.message);
                    }
                }
                (wal, data, ranges, rec, WAL_HEADER, 0)
            }
        };
        let (bytes, last) = tail_of(&ranges);
        mmr.append_many(ranges.iter().map(|r| &data[r.clone()]))
            .map_err(store_err)?;
        if mmr.leaf_count() != wal.count() {
            return Err(WalError::Invalid(format!(
                "ledger rebuild mismatch: WAL has {} records, MMR {}",
                wal.count(),
                mmr.leaf_count()
            )));
        }
        let checkpointed = rec.checkpoint;
        let mut led = Self {
            wal,
            mmr,
            path,
            wal_end: wal_end + bytes,
            last_len: last.unwrap_or(last_len),
            checkpointed,
            sync: policy != FsyncPolicy::None,
            store_recovery: StoreRecovery {
                action: "",
                checkpoint: 0,
                replayed: 0,
                message: String::new(),
            },
        };
        if rec.replayed > 0 || rec.action != "resumed" {
            led.checkpoint()?;
        }
        std::mem::swap(&mut led.store_recovery, &mut rec);
        Ok(led)
    }

    /// Make the WAL durable, then record in the store how far it matches the WAL.
    fn checkpoint(&mut self) -> Result<(), WalError> {
        self.wal.flush()?;
        self.mmr
            .checkpoint(self.wal_end, self.last_len, self.sync)
            .map_err(store_err)?;
        self.checkpointed = self.mmr.leaf_count();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The WAL's group-commit delay (`group_delay_ms`).
    pub fn group_delay(&self) -> std::time::Duration {
        self.wal.group_delay()
    }
    pub fn count(&self) -> u64 {
        self.mmr.leaf_count()
    }
    pub fn durable_count(&self) -> u64 {
        self.wal.durable_count()
    }
    pub fn recovery(&self) -> Recovery {
        self.wal.recovery()
    }
    pub fn store_recovery(&self) -> &StoreRecovery {
        &self.store_recovery
    }
    /// Node hashes held in memory (peaks, unwritten nodes, read cache).
    pub fn resident_hashes(&self) -> usize {
        self.mmr.resident_hashes()
    }
    pub fn root_hex(&self) -> String {
        crate::hash::to_hex(&self.mmr.root())
    }

    /// WAL first, then the MMR; returns the new count. The batch is durable when it
    /// returns (as the fsync policy promises).
    pub fn append_many(&mut self, payloads: &[&[u8]]) -> Result<u64, WalError> {
        self.append_batch(payloads, true)
    }

    /// `append_many` whose WAL batch joins the pending group commit (`WalWriter::
    /// append_many_grouped`): durable within `group_delay_ms` under "group", not on return.
    pub fn append_many_grouped(&mut self, payloads: &[&[u8]]) -> Result<u64, WalError> {
        self.append_batch(payloads, false)
    }

    fn append_batch(&mut self, payloads: &[&[u8]], durable_now: bool) -> Result<u64, WalError> {
        if durable_now {
            self.wal.append_many(payloads)?;
        } else {
            self.wal.append_many_grouped(payloads)?;
        }
        let n = self
            .mmr
            .append_many(payloads.iter().copied())
            .map_err(store_err)?;
        for p in payloads {
            self.wal_end += WAL_HEADER + p.len() as u64;
        }
        if let Some(p) = payloads.last() {
            self.last_len = p.len() as u32;
        }
        if n / CHECKPOINT_EVERY != self.checkpointed / CHECKPOINT_EVERY {
            self.checkpoint()?;
        }
        Ok(n)
    }

    pub fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, MmrError> {
        self.mmr.inclusion_proof(index)
    }
    pub fn consistency_proof(&self, old_count: u64) -> Result<ConsistencyProof, MmrError> {
        self.mmr.consistency_proof(old_count)
    }
    /// Checkpoint the store if it moved, close the WAL, release the store. Idempotent.
    pub fn close(&mut self) -> Result<(), WalError> {
        if self.wal.is_closed() {
            return Ok(());
        }
        let r = if self.mmr.leaf_count() != self.checkpointed {
            self.checkpoint()
        } else {
            Ok(())
        };
        let w = self.wal.close();
        let m = self.mmr.close().map_err(store_err);
        r.and(w).and(m)
    }
}

/// None if the store and the WAL agree with checkpoint `cp`, else why not.
fn check_checkpoint(mmr: &Mmr, wal: &Path, cp: &Checkpoint) -> Option<String> {
    let (c, o, last) = (cp.leaf_count, cp.wal_end, cp.last_frame_len as u64);
    if c > mmr.leaf_count() {
        return Some(format!(
            "the store holds {} leaves, fewer than its checkpoint of {c}",
            mmr.leaf_count()
        ));
    }
    if c == 0 {
        return (o != WAL_HEADER).then(|| format!("checkpoint of 0 leaves at WAL offset {o}"));
    }
    if o < 2 * WAL_HEADER + last {
        return Some(format!(
            "checkpoint offsets are impossible (end {o}, last frame {last} bytes)"
        ));
    }
    let start = o - WAL_HEADER - last;
    let size = match std::fs::metadata(wal) {
        Ok(m) => m.len(),
        Err(_) => return Some("the WAL is missing".into()),
    };
    if size < o {
        return Some(format!(
            "the WAL ends at byte {size}, before the checkpoint's {o}"
        ));
    }
    let (data, ranges) = match replay_from(wal, start) {
        Ok(x) => x,
        Err(_) => return Some(format!("no valid WAL frame at byte {start}")),
    };
    match ranges.first() {
        Some(r) if r.len() as u64 == last => {
            let ok = mmr
                .leaf_hash(c - 1)
                .map(|h| h == leaf_hash(&data[r.clone()]))
                .unwrap_or(false);
            (!ok).then(|| {
                format!(
                    "WAL record {} does not match the store's leaf {}",
                    c - 1,
                    c - 1
                )
            })
        }
        _ => Some(format!("no {last}-byte WAL frame at byte {start}")),
    }
}

/// Called on the ledger thread once the job's record is durable under the WAL's fsync
/// policy (`Ok`), or could not be written (`Err`, why). Keep it short: it runs between
/// batches.
pub type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;

enum Msg {
    Job(Box<AuditJob>, Option<Ack>),
    Stop(Sender<Result<(), String>>),
}

/// Counters the gateway reports (/health, /metrics).
#[derive(Default)]
pub struct LedgerStats {
    pub submitted: AtomicU64,
    pub appended: AtomicU64,
    pub failed: AtomicU64,
    /// Hand-overs that found more than YIELD_AT jobs waiting and yielded the CPU.
    pub yielded: AtomicU64,
}

/// Jobs waiting past which a hand-over yields the CPU to the ledger thread (see `send`).
pub const YIELD_AT: u64 = 256;

pub struct LedgerThread {
    tx: Mutex<Option<Sender<Msg>>>,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<LedgerStats>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl LedgerThread {
    /// Start the thread that owns `ledger`. `mode`: how entropy sums floats (see job.rs).
    /// `batch_delay`: a pause before each batch (zero in service; tests use it to have work
    /// queued when they stop the gateway, as GATEWAYLAB_LEDGER_DELAY_MS does on rungs 0-1).
    pub fn spawn(
        ledger: Ledger,
        mode: PySum,
        batch_delay: std::time::Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let ledger = Arc::new(Mutex::new(ledger));
        let stats = Arc::new(LedgerStats::default());
        let (l2, s2) = (Arc::clone(&ledger), Arc::clone(&stats));
        let handle = std::thread::Builder::new()
            .name("gatewaylab-ledger".into())
            .spawn(move || run(rx, &l2, &s2, mode, batch_delay))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            ledger,
            stats,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Hand a job over (boxed or not: the channel carries it boxed); false once the thread
    /// has been stopped.
    pub fn submit(&self, job: impl Into<Box<AuditJob>>) -> bool {
        self.send(job.into(), None).is_ok()
    }

    /// Hand a job over and have `ack` called once its record is durable (or failed). Once the
    /// thread has been stopped the job is refused and `ack` is called at once with the error.
    pub fn submit_acked(&self, job: impl Into<Box<AuditJob>>, ack: Ack) -> bool {
        match self.send(job.into(), Some(ack)) {
            Ok(()) => true,
            Err(ack) => {
                if let Some(ack) = ack {
                    ack(Err("the audit ledger is stopped".into()));
                }
                false
            }
        }
    }

    fn send(&self, job: Box<AuditJob>, ack: Option<Ack>) -> Result<(), Option<Ack>> {
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = tx.as_ref() else {
                return Err(ack);
            };
            match tx.send(Msg::Job(job, ack)) {
                Ok(()) => {
                    self.stats.submitted.fetch_add(1, Relaxed);
                }
                Err(mpsc::SendError(Msg::Job(_, ack))) => return Err(ack),
                Err(_) => return Err(None),
            }
        }
        if self.depth() > YIELD_AT {
            // The thread runs under SCHED_BATCH (src/sched.rs): its wake-ups do not preempt
            // the sender, so on a saturated core it may wait for the sender's time slice to
            // end while jobs pile up. Past YIELD_AT jobs waiting, the sender gives the CPU
            // up (without the channel's lock held), which keeps the backlog, and the memory
            // it holds, near the bound.
            self.stats.yielded.fetch_add(1, Relaxed);
            std::thread::yield_now();
        }
        Ok(())
    }

    /// The ledger, for reads (root, proofs). Appends happen only on the thread.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// Jobs handed over and not yet appended.
    pub fn depth(&self) -> u64 {
        let s = &self.stats;
        s.submitted
            .load(Relaxed)
            .saturating_sub(s.appended.load(Relaxed) + s.failed.load(Relaxed))
    }

    /// Append everything already submitted, close the WAL and stop the thread. Idempotent.
    pub fn drain(&self) -> Result<(), String> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(tx) = tx else { return Ok(()) };
        let (ack_tx, ack_rx) = mpsc::channel();
        let r = if tx.send(Msg::Stop(ack_tx)).is_ok() {
            ack_rx
                .recv()
                .unwrap_or_else(|_| Err("ledger thread ended without closing".into()))
        } else {
            Err("ledger thread is gone".into())
        };
        if let Some(h) = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        r
    }
}

impl Drop for LedgerThread {
    fn drop(&mut self) {
        let _ = self.drain();
    }
}

/// Append the batch (one `append_many`: one write, and the fsync the policy promises), then
/// call the acks of its jobs, outside the ledger's lock.
#[allow(clippy::vec_box)] // the jobs arrive boxed (a small channel message); unboxing would copy each
fn append_batch(
    ledger: &Mutex<Ledger>,
    stats: &LedgerStats,
    batch: &mut Vec<Box<AuditJob>>,
    acks: &mut Vec<Ack>,
    mode: PySum,
) {
    if batch.is_empty() {
        return;
    }
    let result = {
        let mut led = ledger.lock().unwrap_or_else(|e| e.into_inner());
        let base = led.count();
        let payloads: Vec<Vec<u8>> = batch
            .iter()
            .enumerate()
            .map(|(i, j)| record_payload(base + i as u64, j, mode))
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        if acks.is_empty() {
            // nobody waits on this batch (ack background): it joins the group commit, so a
            // low rate does not pay one fsync per request
            led.append_many_grouped(&refs)
        } else {
            led.append_many(&refs)
        }
    };
    let result = match result {
        Ok(_) => {
            stats.appended.fetch_add(batch.len() as u64, Relaxed);
            Ok(())
        }
        Err(e) => {
            // never let one bad batch stop the thread; say so loudly (as the Python path does)
            eprintln!(
                "gateway: audit append failed for {} records: {e}",
                batch.len()
            );
            stats.failed.fetch_add(batch.len() as u64, Relaxed);
            Err(format!("the audit record could not be written: {e}"))
        }
    };
    for ack in acks.drain(..) {
        ack(result.clone());
    }
    batch.clear();
}

/// How long a batch nobody waits on (no `Ack`) may wait for more jobs before it is written:
/// the WAL's group delay, at most `GATHER_MAX`. Fewer, larger batches (one wake-up of this
/// thread, one write, one MMR pass and one group commit each) at a cost only to when the
/// record is written, never to an answer (ack background answers first): a record is written
/// within the gather and fsynced within `group_delay_ms` after that. On one gateway core the
/// wake-ups were the tax's largest native part (docs/rs_server.md); 500 µs gave way to this.
const GATHER_MAX: std::time::Duration = std::time::Duration::from_millis(2);
/// A batch this large is written at once.
const GATHER_ENOUGH: usize = 128;

/// Take one message into the batch; the Stop's reply channel if it was one.
#[allow(clippy::vec_box)] // as append_batch
fn take(
    m: Msg,
    batch: &mut Vec<Box<AuditJob>>,
    acks: &mut Vec<Ack>,
) -> Option<Sender<Result<(), String>>> {
    match m {
        Msg::Job(j, ack) => {
            batch.push(j);
            acks.extend(ack);
            None
        }
        Msg::Stop(ack) => Some(ack),
    }
}

/// Take every message already queued (up to a full batch).
#[allow(clippy::vec_box)] // as append_batch
fn take_queued(
    rx: &Receiver<Msg>,
    batch: &mut Vec<Box<AuditJob>>,
    acks: &mut Vec<Ack>,
    stop: &mut Option<Sender<Result<(), String>>>,
) {
    while stop.is_none() && batch.len() < BATCH {
        match rx.try_recv() {
            Ok(m) => *stop = take(m, batch, acks),
            Err(_) => break,
        }
    }
}

fn run(
    rx: Receiver<Msg>,
    ledger: &Mutex<Ledger>,
    stats: &LedgerStats,
    mode: PySum,
    batch_delay: std::time::Duration,
) {
    // background work: its wake-ups never preempt the request path (a hint; src/sched.rs)
    let _ = crate::sched::background_thread();
    let mut batch: Vec<Box<AuditJob>> = Vec::with_capacity(BATCH);
    let mut acks: Vec<Ack> = Vec::new();
    let gather = ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .group_delay()
        .min(GATHER_MAX);
    while let Ok(first) = rx.recv() {
        let mut stop = take(first, &mut batch, &mut acks);
        take_queued(&rx, &mut batch, &mut acks, &mut stop);
        if stop.is_none() && acks.is_empty() && batch.len() < GATHER_ENOUGH {
            // nobody waits on this batch: let it gather the jobs of the next moment
            std::thread::sleep(gather);
            take_queued(&rx, &mut batch, &mut acks, &mut stop);
        }
        if !batch_delay.is_zero() && !batch.is_empty() {
            std::thread::sleep(batch_delay);
        }
        append_batch(ledger, stats, &mut batch, &mut acks, mode);
        if let Some(ack) = stop {
            // everything sent before Stop is already in `batch` or appended
            let r = ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .close()
                .map_err(|e| e.to_string());
            let _ = ack.send(r);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Answer;
    use crate::pipeline::AuditMaterial;

    fn job(i: i64) -> AuditJob {
        AuditJob {
            material: AuditMaterial {
                time_ns: i,
                request_id: format!("r{i}"),
                key_id: "k".into(),
                model: "m".into(),
                request_body: b"{}".to_vec(),
                prompt_tokens: 1,
                waf: "allow".into(),
                trace_id: String::new(),
            },
            status: 200,
            answer: Answer::Body(b"{}".to_vec()),
            latency_us: 1,
            figures: None,
        }
    }

    fn vectors() -> serde_json::Value {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/node_store_v1.json");
        serde_json::from_slice(&std::fs::read(p).expect("read node_store_v1.json")).expect("parse")
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gl-ledger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn vector_files_are_those_of_the_python_ledger() {
        let v = vectors();
        let v = &v["ledger"];
        let payloads: Vec<Vec<u8>> = v["payloads_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| unhex(p.as_str().unwrap()))
            .collect();
        let dir = fresh_dir("vector");
        let mut led = Ledger::open(&dir, FsyncPolicy::Group, 1.0).unwrap();
        let first: Vec<&[u8]> = payloads[..5].iter().map(Vec::as_slice).collect();
        led.append_many(&first).unwrap();
        for p in &payloads[5..] {
            led.append_many(&[p.as_slice()]).unwrap();
        }
        led.close().unwrap();
        assert_eq!(
            std::fs::read(dir.join(STORE_NAME)).unwrap(),
            unhex(v["store_hex"].as_str().unwrap())
        );
        assert_eq!(
            std::fs::read(dir.join(WAL_NAME)).unwrap(),
            unhex(v["wal_hex"].as_str().unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn restart_resumes_from_the_checkpoint_or_rebuilds_a_corrupt_store() {
        let dir = fresh_dir("resume");
        let payloads: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut led = Ledger::open(&dir, FsyncPolicy::None, 0.0).unwrap();
        led.append_many(&refs[..600]).unwrap();
        led.close().unwrap();
        let mut led = Ledger::open(&dir, FsyncPolicy::None, 0.0).unwrap();
        assert_eq!(
            led.store_recovery(),
            &StoreRecovery {
                action: "resumed",
                checkpoint: 600,
                replayed: 0,
                message: String::new()
            }
        );
        led.append_many(&refs[600..]).unwrap();
        let root = led.root_hex();
        // A kill -9 now: the WAL has 1000 records, the store's checkpoint says 600.
        let crashed = fresh_dir("resume-crashed");
        std::fs::create_dir_all(&crashed).unwrap();
        led.mmr.flush(false).unwrap();
        for name in [WAL_NAME, STORE_NAME] {
            std::fs::copy(dir.join(name), crashed.join(name)).unwrap();
        }
        led.close().unwrap();
        let mut again = Ledger::open(&crashed, FsyncPolicy::None, 0.0).unwrap();
        assert_eq!(
            (
                again.store_recovery().action,
                again.store_recovery().checkpoint,
                again.store_recovery().replayed
            ),
            ("resumed", 600, 400)
        );
        assert_eq!((again.count(), again.root_hex()), (1000, root.clone()));
        again.close().unwrap();
        let mut data = std::fs::read(crashed.join(STORE_NAME)).unwrap();
        data[2] ^= 1;
        std::fs::write(crashed.join(STORE_NAME), &data).unwrap();
        let mut again = Ledger::open(&crashed, FsyncPolicy::None, 0.0).unwrap();
        assert_eq!(
            (
                again.store_recovery().action,
                again.store_recovery().replayed
            ),
            ("rebuilt", 1000)
        );
        assert!(
            again.store_recovery().message.contains("bad header"),
            "{:?}",
            again.store_recovery()
        );
        assert_eq!(again.root_hex(), root);
        assert!(
            again.resident_hashes()
                < 64 + crate::node_store::WRITE_BATCH + crate::node_store::CACHE_SLOTS
        );
        again.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&crashed);
    }

    #[test]
    fn acks_come_after_the_batch_is_durable_and_share_its_fsync() {
        use std::sync::mpsc::channel;
        for policy in [FsyncPolicy::Group, FsyncPolicy::Always] {
            let dir = fresh_dir(&format!("ack-{}", policy.name()));
            let t = Arc::new(
                LedgerThread::spawn(
                    Ledger::open(&dir, policy, 50.0).unwrap(),
                    PySum::Plain,
                    std::time::Duration::from_millis(5),
                )
                .unwrap(),
            );
            let (tx, rx) = channel();
            for i in 0..40 {
                let (tx, t2) = (tx.clone(), Arc::clone(&t));
                // each ack sees its own record durable (the group delay of 50 ms never had to pass)
                assert!(t.submit_acked(
                    job(i),
                    Box::new(move |r| {
                        let durable = t2.ledger().durable_count();
                        tx.send((i, r, durable)).unwrap();
                    })
                ));
            }
            let mut got: Vec<(i64, Result<(), String>, u64)> = (0..40)
                .map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
                .collect();
            got.sort_by_key(|g| g.0);
            for (i, r, durable) in got {
                assert_eq!(r, Ok(()));
                assert!(
                    durable > i as u64,
                    "{policy:?}: record {i} acknowledged with durable_count {durable}"
                );
            }
            t.drain().unwrap();
            // stopped: the ack is called at once with the error, the job refused
            let (tx, rx) = channel();
            assert!(!t.submit_acked(job(0), Box::new(move |r| tx.send(r).unwrap())));
            assert_eq!(
                rx.try_recv().unwrap(),
                Err("the audit ledger is stopped".to_string())
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_hand_over_past_the_bound_yields_and_every_job_is_still_appended() {
        // a ledger thread held back (a long pause before each batch) lets jobs pile up: every
        // hand-over past YIELD_AT waiting yields the CPU, none before, and nothing is lost
        let dir = fresh_dir("yield");
        let t = LedgerThread::spawn(
            Ledger::open(&dir, FsyncPolicy::None, 1.0).unwrap(),
            PySum::Plain,
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        for i in 0..YIELD_AT as i64 {
            assert!(t.submit(job(i)));
        }
        assert_eq!(
            t.stats().yielded.load(Relaxed),
            0,
            "no yield up to the bound"
        );
        let n = YIELD_AT as i64 + 200;
        for i in YIELD_AT as i64..n {
            assert!(t.submit(job(i)));
        }
        // jobs taken but not yet appended still count as waiting: each of these found more
        // than YIELD_AT (unless the first pause of 2 s ended meanwhile)
        let yielded = t.stats().yielded.load(Relaxed);
        assert!((1..=200).contains(&yielded), "yielded {yielded}");
        t.drain().unwrap();
        assert_eq!(t.ledger().count(), n as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn thread_appends_drains_and_reopens() {
        let dir = std::env::temp_dir().join(format!("gl-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = LedgerThread::spawn(
            Ledger::open(&dir, FsyncPolicy::Group, 1.0).unwrap(),
            PySum::Plain,
            std::time::Duration::ZERO,
        )
        .unwrap();
        for i in 0..300 {
            assert!(t.submit(job(i)));
        }
        t.drain().unwrap();
        assert!(!t.submit(job(0)));
        let root = t.ledger().root_hex();
        assert_eq!(t.ledger().count(), 300);
        drop(t);
        let mut again = Ledger::open(&dir, FsyncPolicy::Group, 1.0).unwrap();
        assert_eq!(again.store_recovery().action, "resumed");
        assert_eq!(again.store_recovery().replayed, 0);
        assert_eq!((again.count(), again.root_hex()), (300, root));
        again.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
