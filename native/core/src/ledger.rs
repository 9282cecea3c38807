//! The audit ledger (Rust twin of `gateway/audit/ledger.py`): a WAL and an MMR kept in step,
//! and the ledger thread that owns one for the Rust rungs.
//!
//! The WAL lives at `<dir>/audit.wal`; record k of the WAL is leaf k of the MMR. Opening runs
//! WAL recovery (a torn tail is truncated and reported) and rebuilds the MMR from the WAL, so
//! a ledger written by any rung or twin continues under any other.
//!
//! `LedgerThread` takes audit jobs over a channel and appends them in batches (one WAL write
//! and, under fsync "group", one group commit per batch): the hot path only sends a message.
use crate::job::{record_payload, AuditJob};
use crate::mmr::{ConsistencyProof, InclusionProof, Mmr, MmrError};
use crate::wal::{replay, FsyncPolicy, Recovery, WalError, WalWriter};
use crate::entropy::PySum;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub const WAL_NAME: &str = "audit.wal";
const BATCH: usize = 256;
const GROUP_MAX_RECORDS: u64 = 256;

pub struct Ledger {
    wal: WalWriter,
    mmr: Mmr,
    path: PathBuf,
}

impl Ledger {
    pub fn open(dir: &Path, policy: FsyncPolicy, group_delay_ms: f64) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(WAL_NAME);
        let wal = WalWriter::open(&path, policy, group_delay_ms, GROUP_MAX_RECORDS)?;
        let (data, ranges) = replay(&path)?;
        let mut mmr = Mmr::new();
        mmr.append_many(ranges.iter().map(|r| &data[r.clone()]));
        if mmr.leaf_count() != wal.count() {
            return Err(WalError::Invalid(format!(
                "ledger rebuild mismatch: WAL has {} records, MMR {}",
                wal.count(),
                mmr.leaf_count()
            )));
        }
        Ok(Self { wal, mmr, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
    pub fn root_hex(&self) -> String {
        crate::hash::to_hex(&self.mmr.root())
    }

    /// WAL first, then the MMR; returns the new count.
    pub fn append_many(&mut self, payloads: &[&[u8]]) -> Result<u64, WalError> {
        self.wal.append_many(payloads)?;
        Ok(self.mmr.append_many(payloads.iter().copied()))
    }

    pub fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, MmrError> {
        self.mmr.inclusion_proof(index)
    }
    pub fn consistency_proof(&self, old_count: u64) -> Result<ConsistencyProof, MmrError> {
        self.mmr.consistency_proof(old_count)
    }
    pub fn close(&self) -> Result<(), WalError> {
        self.wal.close()
    }
}

enum Msg {
    Job(Box<AuditJob>),
    Stop(Sender<Result<(), String>>),
}

/// Counters the gateway reports (/health, /metrics).
#[derive(Default)]
pub struct LedgerStats {
    pub submitted: AtomicU64,
    pub appended: AtomicU64,
    pub failed: AtomicU64,
}

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
    pub fn spawn(ledger: Ledger, mode: PySum, batch_delay: std::time::Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let ledger = Arc::new(Mutex::new(ledger));
        let stats = Arc::new(LedgerStats::default());
        let (l2, s2) = (Arc::clone(&ledger), Arc::clone(&stats));
        let handle = std::thread::Builder::new()
            .name("gatewaylab-ledger".into())
            .spawn(move || run(rx, &l2, &s2, mode, batch_delay))?;
        Ok(Self { tx: Mutex::new(Some(tx)), ledger, stats, handle: Mutex::new(Some(handle)) })
    }

    /// Hand a job over; false once the thread has been stopped.
    pub fn submit(&self, job: AuditJob) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) if tx.send(Msg::Job(Box::new(job))).is_ok() => {
                self.stats.submitted.fetch_add(1, Relaxed);
                true
            }
            _ => false,
        }
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
        s.submitted.load(Relaxed).saturating_sub(s.appended.load(Relaxed) + s.failed.load(Relaxed))
    }

    /// Append everything already submitted, close the WAL and stop the thread. Idempotent.
    pub fn drain(&self) -> Result<(), String> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(tx) = tx else { return Ok(()) };
        let (ack_tx, ack_rx) = mpsc::channel();
        let r = if tx.send(Msg::Stop(ack_tx)).is_ok() {
            ack_rx.recv().unwrap_or_else(|_| Err("ledger thread ended without closing".into()))
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

fn append_batch(ledger: &Mutex<Ledger>, stats: &LedgerStats, batch: &mut Vec<Box<AuditJob>>, mode: PySum) {
    if batch.is_empty() {
        return;
    }
    let mut led = ledger.lock().unwrap_or_else(|e| e.into_inner());
    let base = led.count();
    let payloads: Vec<Vec<u8>> = batch.iter().enumerate().map(|(i, j)| record_payload(base + i as u64, j, mode)).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    match led.append_many(&refs) {
        Ok(_) => {
            stats.appended.fetch_add(batch.len() as u64, Relaxed);
        }
        Err(e) => {
            // never let one bad batch stop the thread; say so loudly (as the Python path does)
            eprintln!("gateway: audit append failed for {} records: {e}", batch.len());
            stats.failed.fetch_add(batch.len() as u64, Relaxed);
        }
    }
    batch.clear();
}

fn run(rx: Receiver<Msg>, ledger: &Mutex<Ledger>, stats: &LedgerStats, mode: PySum, batch_delay: std::time::Duration) {
    let mut batch: Vec<Box<AuditJob>> = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        let mut stop = None;
        match first {
            Msg::Job(j) => batch.push(j),
            Msg::Stop(ack) => stop = Some(ack),
        }
        while stop.is_none() && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Stop(ack)) => stop = Some(ack),
                Err(_) => break,
            }
        }
        if !batch_delay.is_zero() && !batch.is_empty() {
            std::thread::sleep(batch_delay);
        }
        append_batch(ledger, stats, &mut batch, mode);
        if let Some(ack) = stop {
            // everything sent before Stop is already in `batch` or appended
            let r = ledger.lock().unwrap_or_else(|e| e.into_inner()).close().map_err(|e| e.to_string());
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
            },
            status: 200,
            answer: Answer::Body(b"{}".to_vec()),
            latency_us: 1,
        }
    }

    #[test]
    fn thread_appends_drains_and_reopens() {
        let dir = std::env::temp_dir().join(format!("gl-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = LedgerThread::spawn(Ledger::open(&dir, FsyncPolicy::Group, 1.0).unwrap(), PySum::Plain, std::time::Duration::ZERO).unwrap();
        for i in 0..300 {
            assert!(t.submit(job(i)));
        }
        t.drain().unwrap();
        assert!(!t.submit(job(0)));
        let root = t.ledger().root_hex();
        assert_eq!(t.ledger().count(), 300);
        drop(t);
        let again = Ledger::open(&dir, FsyncPolicy::Group, 1.0).unwrap();
        assert_eq!((again.count(), again.root_hex()), (300, root));
        again.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
