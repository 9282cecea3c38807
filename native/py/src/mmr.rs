//! `MerkleMountainRange` — the Rust twin of `gateway.audit.mmr.MerkleMountainRange`, with
//! exactly the Protocol's API (`gateway/audit/protocols.py`).
//!
//! The core `Mmr` sits behind a mutex so a batch append can run with the GIL released while
//! other Python threads keep calling in: uncontended calls take the lock without detaching;
//! a call that finds it busy waits for it detached. Per-leaf `append` stays on the GIL
//! (a leaf and its amortised one node hash are well under a microsecond; with a node store
//! one `pwrite` per WRITE_BATCH nodes); `append_many`, proofs (which may read the store),
//! opening, truncating, flushing and checkpointing run detached.
use crate::convert::{batch_bytes, batch_items, bytes_arg, index_arg, type_name};
use crate::entry;
use crate::errors::{
    guard, index_error, invalid_input, native_panic, proof_error, store_corrupt, wal_locked,
};
use crate::gil::Call;
use crate::wal::path_arg;
use gatewaylab_core::hash::{to_hex, Hash};
use gatewaylab_core::mmr::{self, ConsistencyProof, InclusionProof, Mmr, MmrError};
use gatewaylab_core::node_store::Checkpoint;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString,
};
use serde_json::{Map, Value};
use std::sync::{Mutex, MutexGuard, TryLockError};

#[pyclass(name = "MerkleMountainRange", module = "gateway._native", frozen)]
pub struct PyMerkleMountainRange {
    inner: Mutex<Mmr>,
}

fn poisoned() -> PyErr {
    native_panic("MerkleMountainRange is unusable: an earlier Rust panic interrupted an update")
}

fn mmr_err(e: MmrError) -> PyErr {
    match e {
        MmrError::Index(m) => index_error(m),
        MmrError::Proof(m) => proof_error(format!("proof: {m}")),
        MmrError::Invalid(m) => invalid_input(m),
        MmrError::Corrupt(m) => store_corrupt(m),
        MmrError::Locked(m) => wal_locked(m),
        MmrError::Io(m) => PyOSError::new_err(m),
    }
}

fn checkpoint_dict<'py>(py: Python<'py>, c: &Checkpoint) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("seq", c.seq)?;
    d.set_item("leaf_count", c.leaf_count)?;
    d.set_item("wal_end", c.wal_end)?;
    d.set_item("last_frame_len", c.last_frame_len)?;
    d.set_item("root", to_hex(&c.root))?;
    Ok(d)
}

/// A non-negative int argument below `limit` (InvalidInput otherwise, naming `what`).
fn uint_arg(obj: &Bound<'_, PyAny>, what: &str, limit: u64) -> PyResult<u64> {
    let bad = || {
        invalid_input(format!(
            "{what} must be a non-negative int, got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    match index_arg(obj, what) {
        Ok(Some(v)) if v < limit => Ok(v),
        Ok(_) => Err(bad()),
        Err(_) => Err(bad()),
    }
}

fn hex_list<'py>(py: Python<'py>, hs: &[Hash]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, hs.iter().map(to_hex))
}

fn inclusion_dict<'py>(py: Python<'py>, p: &InclusionProof) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("leaf_index", p.leaf_index)?;
    d.set_item("leaf_count", p.leaf_count)?;
    d.set_item("leaf_hash", to_hex(&p.leaf_hash))?;
    d.set_item("siblings", hex_list(py, &p.siblings)?)?;
    d.set_item("peaks", hex_list(py, &p.peaks)?)?;
    d.set_item("root", to_hex(&p.root))?;
    Ok(d)
}

fn consistency_dict<'py>(py: Python<'py>, p: &ConsistencyProof) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("old_count", p.old_count)?;
    d.set_item("new_count", p.new_count)?;
    d.set_item("old_peaks", hex_list(py, &p.old_peaks)?)?;
    d.set_item("new_peaks", hex_list(py, &p.new_peaks)?)?;
    let paths = PyList::empty(py);
    for path in &p.paths {
        paths.append(hex_list(py, path)?)?;
    }
    d.set_item("paths", paths)?;
    d.set_item("old_root", to_hex(&p.old_root))?;
    d.set_item("new_root", to_hex(&p.new_root))?;
    Ok(d)
}

/// A proof field's Python value as JSON, with the Python twin's type rules: only `list` is
/// a list, only `str` a string, only non-bool `int` an integer; anything else becomes a
/// value no field accepts (so the verifier reports it as malformed).
fn py_to_json(v: &Bound<'_, PyAny>, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Ok(s) = v.cast::<PyString>() {
        return s
            .to_str()
            .map(|s| Value::String(s.to_owned()))
            .unwrap_or(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Value::Bool(b.is_true());
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(u) = v.extract::<u64>() {
            return Value::from(u);
        }
        if let Ok(i) = v.extract::<i64>() {
            return Value::from(i);
        }
        return Value::Null; // beyond 64 bits: never a valid count
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Value::from(f.value());
    }
    if let Ok(l) = v.cast::<PyList>() {
        return Value::Array(l.iter().map(|x| py_to_json(&x, depth + 1)).collect());
    }
    Value::Null
}

const INCLUSION_KEYS: &[&str] = &[
    "leaf_index",
    "leaf_count",
    "leaf_hash",
    "siblings",
    "peaks",
    "root",
];
const CONSISTENCY_KEYS: &[&str] = &[
    "old_count",
    "new_count",
    "old_peaks",
    "new_peaks",
    "paths",
    "old_root",
    "new_root",
];

/// Where the JSON of a proof argument comes from: text to parse, or an already built value.
enum ProofSource {
    Text(Vec<u8>),
    Json(Value),
}

/// A proof argument (dict/Mapping, or JSON str/bytes/bytearray) -> source; anything else
/// is a ProofError, as in the Python twin.
fn proof_source(proof: &Bound<'_, PyAny>, keys: &[&str]) -> PyResult<ProofSource> {
    if let Ok(s) = proof.cast::<PyString>() {
        let t = s
            .to_str()
            .map_err(|_| proof_error("proof is not valid JSON: invalid Unicode"))?;
        return Ok(ProofSource::Text(t.as_bytes().to_vec()));
    }
    if proof.is_instance_of::<PyBytes>() || proof.is_instance_of::<PyByteArray>() {
        return Ok(ProofSource::Text(bytes_arg(proof, "proof")?.into_owned()));
    }
    let mapping = if let Ok(d) = proof.cast::<PyDict>() {
        d.as_mapping().clone()
    } else if let Ok(m) = proof.cast::<PyMapping>() {
        m.clone()
    } else {
        return Err(proof_error(format!(
            "proof must be a JSON object, not {}",
            type_name(proof)
        )));
    };
    let mut obj = Map::new();
    for k in keys {
        if mapping.contains(*k)? {
            obj.insert((*k).to_string(), py_to_json(&mapping.get_item(*k)?, 0));
        }
    }
    Ok(ProofSource::Json(Value::Object(obj)))
}

fn parse(src: ProofSource) -> Result<Value, String> {
    match src {
        ProofSource::Json(v) => Ok(v),
        ProofSource::Text(t) => {
            serde_json::from_slice(&t).map_err(|e| format!("not valid JSON: {e}"))
        }
    }
}

impl PyMerkleMountainRange {
    /// The core MMR, waiting for it detached if a batch holds it.
    fn lock<'a>(&'a self, py: Python<'_>, call: &mut Call) -> PyResult<MutexGuard<'a, Mmr>> {
        loop {
            match self.inner.try_lock() {
                Ok(g) => return Ok(g),
                Err(TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(TryLockError::WouldBlock) => call.detach(py, || drop(self.inner.lock())),
            }
        }
    }

    fn index(
        &self,
        py: Python<'_>,
        call: &mut Call,
        obj: &Bound<'_, PyAny>,
        what: &str,
        inclusive: bool,
    ) -> PyResult<(MutexGuard<'_, Mmr>, u64)> {
        let i = index_arg(obj, what)?;
        let g = self.lock(py, call)?;
        let n = g.leaf_count();
        match i {
            Some(i) if i < n || (inclusive && i == n) => Ok((g, i)),
            _ => {
                let shown = obj.str().map(|s| s.to_string()).unwrap_or_default();
                // the core's words (native/core/src/mmr.rs): truncate's count as a range
                Err(index_error(if what == "count" {
                    format!("{what} {shown} out of range 0..{n}")
                } else {
                    format!("{what} {shown} out of range for an MMR of {n} leaves")
                }))
            }
        }
    }
}

#[pymethods]
impl PyMerkleMountainRange {
    /// MerkleMountainRange(store=None): every node in memory, or in the node store at `store`.
    #[new]
    #[pyo3(signature = (store = None))]
    fn new(py: Python<'_>, store: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut call = entry!("mmr.new");
        guard(|| {
            let inner = match store {
                None => Mmr::new(),
                Some(s) if s.is_none() => Mmr::new(),
                Some(s) => {
                    let p = std::path::PathBuf::from(path_arg(py, s)?);
                    call.detach(py, || Mmr::open(&p)).map_err(mmr_err)?
                }
            };
            Ok(Self {
                inner: Mutex::new(inner),
            })
        })
    }

    /// The node store's path, or None in memory.
    #[getter]
    fn store_path(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let mut call = entry!("mmr.store_path");
        guard(|| {
            Ok(self
                .lock(py, &mut call)?
                .store_path()
                .map(|p| p.to_string_lossy().into_owned()))
        })
    }

    /// Node hashes held in memory: peaks + unwritten nodes + read-cache entries.
    #[getter]
    fn resident_hashes(&self, py: Python<'_>) -> PyResult<usize> {
        let mut call = entry!("mmr.resident_hashes");
        guard(|| Ok(self.lock(py, &mut call)?.resident_hashes()))
    }

    /// The store's valid checkpoints, newest first ([] in memory).
    fn checkpoints<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut call = entry!("mmr.checkpoints");
        guard(|| {
            let cps = self.lock(py, &mut call)?.checkpoints();
            let out = PyList::empty(py);
            for c in &cps {
                out.append(checkpoint_dict(py, c)?)?;
            }
            Ok(out)
        })
    }

    /// Drop every leaf from `count` on (and the nodes they completed).
    fn truncate(&self, py: Python<'_>, count: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut call = entry!("mmr.truncate");
        guard(|| {
            let (g, c) = self.index(py, &mut call, count, "count", true)?;
            drop(g);
            let inner = &self.inner;
            call.detach(py, || {
                inner
                    .lock()
                    .map_err(|_| None)
                    .and_then(|mut g| g.truncate(c).map_err(Some))
            })
            .map_err(|e| e.map_or_else(poisoned, mmr_err))
        })
    }

    /// Write unwritten nodes to the store (and fsync it when `sync`). No-op in memory.
    #[pyo3(signature = (sync = true))]
    fn flush(&self, py: Python<'_>, sync: bool) -> PyResult<()> {
        let mut call = entry!("mmr.flush");
        guard(|| {
            let inner = &self.inner;
            call.detach(py, || {
                inner
                    .lock()
                    .map_err(|_| None)
                    .and_then(|mut g| g.flush(sync).map_err(Some))
            })
            .map_err(|e| e.map_or_else(poisoned, mmr_err))
        })
    }

    /// Record that the first leaf_count leaves are the WAL's records up to byte `wal_end`;
    /// returns the checkpoint. The caller makes the WAL durable to `wal_end` first.
    #[pyo3(signature = (wal_end, last_frame_len, sync = true))]
    fn checkpoint<'py>(
        &self,
        py: Python<'py>,
        wal_end: &Bound<'py, PyAny>,
        last_frame_len: &Bound<'py, PyAny>,
        sync: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut call = entry!("mmr.checkpoint");
        guard(|| {
            let end = uint_arg(wal_end, "wal_end", 1 << 63)?;
            let last = uint_arg(last_frame_len, "last_frame_len", 1 << 32)? as u32;
            let inner = &self.inner;
            let cp = call
                .detach(py, || {
                    inner
                        .lock()
                        .map_err(|_| None)
                        .and_then(|mut g| g.checkpoint(end, last, sync).map_err(Some))
                })
                .map_err(|e| e.map_or_else(poisoned, mmr_err))?;
            checkpoint_dict(py, &cp)
        })
    }

    /// Write unwritten nodes (no fsync) and release the store. Idempotent; no-op in memory.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut call = entry!("mmr.close");
        guard(|| {
            let inner = &self.inner;
            call.detach(py, || {
                inner.lock().map_err(|_| None).and_then(|mut g| {
                    if g.store_path().is_some() {
                        g.close().map_err(Some)
                    } else {
                        Ok(())
                    }
                })
            })
            .map_err(|e| e.map_or_else(poisoned, mmr_err))
        })
    }

    /// Append one payload (bytes, bytearray or memoryview); returns its leaf index.
    fn append(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut call = entry!("mmr.append");
        guard(|| {
            let p = bytes_arg(payload, "payload")?;
            let mut g = self.lock(py, &mut call)?;
            g.append(&p).map_err(mmr_err)
        })
    }

    /// Append payloads in order, hashing with the GIL released; returns the new leaf count.
    /// All-or-nothing on bad input.
    fn append_many(&self, py: Python<'_>, payloads: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut call = entry!("mmr.append_many");
        guard(|| {
            let items = batch_items(payloads, "append_many")?;
            let slices = batch_bytes(&items)?;
            let inner = &self.inner;
            call.detach(py, || {
                let mut g = inner.lock().map_err(|_| None)?;
                g.append_many(slices.iter().map(|s| &s[..])).map_err(Some)
            })
            .map_err(|e| e.map_or_else(poisoned, mmr_err))
        })
    }

    #[getter]
    fn leaf_count(&self, py: Python<'_>) -> PyResult<u64> {
        let mut call = entry!("mmr.leaf_count");
        guard(|| Ok(self.lock(py, &mut call)?.leaf_count()))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let mut call = entry!("mmr.len");
        guard(|| Ok(self.lock(py, &mut call)?.leaf_count() as usize))
    }

    /// Lowercase hex root (64 zeros when empty).
    fn root(&self, py: Python<'_>) -> PyResult<String> {
        let mut call = entry!("mmr.root");
        guard(|| Ok(to_hex(&self.lock(py, &mut call)?.root())))
    }

    /// Peak hashes, left (tallest) to right.
    fn peaks(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let mut call = entry!("mmr.peaks");
        guard(|| {
            Ok(self
                .lock(py, &mut call)?
                .peaks()
                .iter()
                .map(to_hex)
                .collect())
        })
    }

    fn leaf_hash(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<String> {
        let mut call = entry!("mmr.leaf_hash");
        guard(|| {
            let (g, i) = self.index(py, &mut call, index, "leaf index", false)?;
            drop(g);
            let inner = &self.inner;
            call.detach(py, || {
                inner
                    .lock()
                    .map_err(|_| None)
                    .and_then(|g| g.leaf_hash(i).map_err(Some))
            })
            .map(|h| to_hex(&h))
            .map_err(|e| e.map_or_else(poisoned, mmr_err))
        })
    }

    /// {"leaf_index","leaf_count","leaf_hash","siblings","peaks","root"}
    fn inclusion_proof<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut call = entry!("mmr.inclusion_proof");
        guard(|| {
            let (g, i) = self.index(py, &mut call, index, "leaf index", false)?;
            drop(g);
            let inner = &self.inner;
            let p = call
                .detach(py, || {
                    inner
                        .lock()
                        .map_err(|_| None)
                        .and_then(|g| g.inclusion_proof(i).map_err(Some))
                })
                .map_err(|e| e.map_or_else(poisoned, mmr_err))?;
            inclusion_dict(py, &p)
        })
    }

    /// {"old_count","new_count","old_peaks","new_peaks","paths","old_root","new_root"}
    fn consistency_proof<'py>(
        &self,
        py: Python<'py>,
        old_count: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut call = entry!("mmr.consistency_proof");
        guard(|| {
            let (g, m) = self.index(py, &mut call, old_count, "old count", true)?;
            drop(g);
            let inner = &self.inner;
            let p = call
                .detach(py, || {
                    inner
                        .lock()
                        .map_err(|_| None)
                        .and_then(|g| g.consistency_proof(m).map_err(Some))
                })
                .map_err(|e| e.map_or_else(poisoned, mmr_err))?;
            consistency_dict(py, &p)
        })
    }

    /// True iff the proof is internally consistent (and, given `payload`, for that payload).
    /// Accepts a dict or a JSON string. Tampered -> False; malformed -> ProofError.
    #[staticmethod]
    #[pyo3(signature = (proof, payload = None))]
    fn verify_inclusion(
        py: Python<'_>,
        proof: &Bound<'_, PyAny>,
        payload: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let mut call = entry!("mmr.verify_inclusion");
        guard(|| {
            let src = proof_source(proof, INCLUSION_KEYS)?;
            let parsed = call
                .detach(py, || {
                    parse(src)
                        .map_err(MmrError::Proof)
                        .and_then(|v| InclusionProof::from_json(&v))
                })
                .map_err(mmr_err)?;
            let payload = match payload {
                Some(p) if !p.is_none() => Some(bytes_arg(p, "payload")?),
                _ => None,
            };
            Ok(call.detach(py, || parsed.verify(payload.as_deref())))
        })
    }

    /// True iff old_peaks hash to old_root, new_peaks to new_root, and each old peak lifted by
    /// its path equals the new peak containing it. Tampered -> False; malformed -> ProofError.
    #[staticmethod]
    fn verify_consistency(py: Python<'_>, proof: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mut call = entry!("mmr.verify_consistency");
        guard(|| {
            let src = proof_source(proof, CONSISTENCY_KEYS)?;
            call.detach(py, || {
                parse(src)
                    .map_err(MmrError::Proof)
                    .and_then(|v| mmr::verify_consistency(&v))
            })
            .map_err(mmr_err)
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut call = entry!("mmr.repr");
        guard(|| {
            let g = self.lock(py, &mut call)?;
            Ok(format!(
                "<MerkleMountainRange leaves={} root={}…>",
                g.leaf_count(),
                &to_hex(&g.root())[..12]
            ))
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMerkleMountainRange>()?;
    Ok(())
}
