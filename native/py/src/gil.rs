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
            REGISTRY
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self);
        }
        self
    }
    fn reset(&self) {
        for a in [
            &self.calls,
            &self.hold_ns,
            &self.detached_ns,
            &self.reacquire_ns,
            &self.max_reacquire_ns,
        ] {
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
        Self {
            stats,
            start: Instant::now(),
            detached: 0,
            wait: 0,
        }
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
    // copied out first: no Python object is made while the registry's lock is held (a thread
    // registering its first call would wait for it attached; free-threaded, a collection
    // triggered by an allocation here would then wait for that thread: docs/interpreters.md)
    let reg: Vec<&'static EntryStats> = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// `gil_stats(reset = true)` resets every entry: a test reading its counters while another
    /// resets them (during a detached sleep, say) would lose calls. One test at a time.
    static STATS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        STATS.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(py: Python<'_>, name: &str, reset: bool) -> (u64, u64, u64, u64, u64) {
        let all = gil_stats(py, reset).unwrap();
        let d = all
            .get_item(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} not registered"));
        let d = d.cast::<PyDict>().unwrap();
        let get = |k: &str| d.get_item(k).unwrap().unwrap().extract::<u64>().unwrap();
        (
            get("calls"),
            get("hold_ns"),
            get("detached_ns"),
            get("reacquire_wait_ns"),
            get("max_reacquire_wait_ns"),
        )
    }

    #[test]
    fn detached_time_and_calls_are_counted_and_reset() {
        let _one = one_at_a_time();
        crate::test_python();
        static S: EntryStats = EntryStats::new("test.detach");
        Python::attach(|py| {
            for _ in 0..2 {
                let mut c = Call::start(S.register());
                c.detach(py, || std::thread::sleep(Duration::from_millis(20)));
            }
            let (calls, hold, detached, wait, max_wait) = snapshot(py, "test.detach", true);
            assert_eq!(calls, 2);
            assert!(
                detached >= 40_000_000,
                "two 20 ms sleeps with the GIL released: {detached} ns detached"
            );
            assert!(max_wait <= wait);
            assert!(
                hold < detached,
                "the sleeps ran detached, not holding the GIL ({hold} ns held)"
            );
            assert_eq!(
                snapshot(py, "test.detach", false),
                (0, 0, 0, 0, 0),
                "reset clears the counters"
            );
            // registering twice keeps one entry
            S.register();
            assert_eq!(
                gil_stats(py, false)
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.to_string() == "test.detach")
                    .count(),
                1
            );
        });
    }

    #[test]
    fn waiting_to_reacquire_the_gil_is_counted() {
        // While the call is detached, another thread takes the GIL and keeps it for 100 ms
        // after the detached work has ended: the call must wait for it to come back.
        let _one = one_at_a_time();
        crate::test_python();
        static S: EntryStats = EntryStats::new("test.reacquire");
        let (go_tx, go_rx) = channel::<()>();
        let (have_tx, have_rx) = channel::<()>();
        let (done_tx, done_rx) = channel::<()>();
        let holder = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            Python::attach(|_py| {
                have_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(100)); // holding the GIL
            });
        });
        Python::attach(|py| {
            let mut c = Call::start(S.register());
            c.detach(py, move || {
                go_tx.send(()).unwrap();
                have_rx.recv().unwrap(); // the holder has the GIL now
                done_tx.send(()).unwrap();
            });
            drop(c);
            let (calls, _hold, _detached, wait, max_wait) = snapshot(py, "test.reacquire", true);
            assert_eq!(calls, 1);
            assert!(wait >= 50_000_000, "waited {wait} ns for a GIL held 100 ms");
            assert_eq!(max_wait, wait);
        });
        holder.join().unwrap();
    }
}
