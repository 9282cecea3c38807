//! Exact GIL accounting per Rust entry point.
//!
//! Every `#[pyfunction]`/`#[pymethods]` entry point opens a [`Call`] on its own static
//! [`EntryStats`] (see the `entry!` macro). The call counts the nanoseconds spent holding
//! the GIL, the nanoseconds spent detached (`py.detach`), and the nanoseconds spent waiting
//! to re-acquire the GIL after detaching. Atomics only: cheap enough to stay on in sweeps.
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

pub struct EntryStats {
    pub name: &'static str,
    registered: AtomicBool,
    calls: AtomicU64,
    hold_ns: AtomicU64,
    detached_ns: AtomicU64,
    reacquire_ns: AtomicU64,
    max_reacquire_ns: AtomicU64,
}

static REGISTRY: Mutex<Vec<&'static EntryStats>> = Mutex::new(Vec::new());

impl EntryStats {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            registered: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            hold_ns: AtomicU64::new(0),
            detached_ns: AtomicU64::new(0),
            reacquire_ns: AtomicU64::new(0),
            max_reacquire_ns: AtomicU64::new(0),
        }
    }
    pub fn register(&'static self) -> &'static Self {
        if !self.registered.load(Relaxed) && !self.registered.swap(true, Relaxed) {
            REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(self);
        }
        self
    }
    fn reset(&self) {
        for a in [&self.calls, &self.hold_ns, &self.detached_ns, &self.reacquire_ns, &self.max_reacquire_ns] {
            a.store(0, Relaxed);
        }
    }
}

/// Declare (once per call site) and register the stats of an entry point.
#[macro_export]
macro_rules! entry {
    ($name:expr) => {{
        static S: $crate::gil::EntryStats = $crate::gil::EntryStats::new($name);
        $crate::gil::Call::start(S.register())
    }};
}

/// One call of an entry point; records on drop.
pub struct Call {
    stats: &'static EntryStats,
    start: Instant,
    detached: u64,
    wait: u64,
}

impl Call {
    pub fn start(stats: &'static EntryStats) -> Self {
        Self { stats, start: Instant::now(), detached: 0, wait: 0 }
    }

    /// Run `f` with the GIL released, accounting detached time and re-acquire wait.
    pub fn detach<T, F>(&mut self, py: Python<'_>, f: F) -> T
    where
        F: Send + FnOnce() -> T,
        T: Send,
    {
        let t_release = Instant::now();
        let (r, t_done) = py.detach(move || {
            let r = f();
            (r, Instant::now())
        });
        let t_back = Instant::now();
        self.detached += t_done.duration_since(t_release).as_nanos() as u64;
        let w = t_back.duration_since(t_done).as_nanos() as u64;
        self.wait += w;
        self.stats.max_reacquire_ns.fetch_max(w, Relaxed);
        r
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let total = self.start.elapsed().as_nanos() as u64;
        let hold = total.saturating_sub(self.detached + self.wait);
        self.stats.calls.fetch_add(1, Relaxed);
        self.stats.hold_ns.fetch_add(hold, Relaxed);
        self.stats.detached_ns.fetch_add(self.detached, Relaxed);
        self.stats.reacquire_ns.fetch_add(self.wait, Relaxed);
    }
}

/// gil_stats(reset=False) -> {entry: {calls, hold_ns, detached_ns, reacquire_wait_ns, max_reacquire_wait_ns}}
#[pyfunction]
#[pyo3(signature = (reset = false))]
pub fn gil_stats<'py>(py: Python<'py>, reset: bool) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    for s in reg.iter() {
        let d = PyDict::new(py);
        d.set_item("calls", s.calls.load(Relaxed))?;
        d.set_item("hold_ns", s.hold_ns.load(Relaxed))?;
        d.set_item("detached_ns", s.detached_ns.load(Relaxed))?;
        d.set_item("reacquire_wait_ns", s.reacquire_ns.load(Relaxed))?;
        d.set_item("max_reacquire_wait_ns", s.max_reacquire_ns.load(Relaxed))?;
        out.set_item(s.name, d)?;
        if reset {
            s.reset();
        }
    }
    Ok(out)
}
