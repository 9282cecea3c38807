//! How the background path's threads ask to be scheduled.
//!
//! The ledger thread and the WAL's group-commit thread wake once per batch. Under the default
//! policy (`SCHED_OTHER`) a wake-up may preempt the thread that caused it, so on a gateway
//! with one core every batch stopped the request path mid-iteration: the thread serving
//! requests was descheduled for the ledger's work and then woken again. Linux's `SCHED_BATCH`
//! keeps the thread's weight in the fair scheduler, but a wake-up never preempts the running
//! thread: the ledger runs when the request path blocks or its slice ends. Deferred, it can
//! fall behind on a saturated core, so the ledger's hand-over bounds its backlog (`YIELD_AT`
//! in ledger.rs). docs/architecture.md, "Background threads yield on wake-up", gives the
//! measurement; the Python twin's WAL flusher does the same.

/// Put the calling thread under `SCHED_BATCH` (Linux schedules threads, so pid 0 is this thread
/// alone). The policy is a hint: an error (a sandbox that forbids the call) leaves the thread
/// under the default policy, correct but without the saving, and is returned to the caller.
pub fn background_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` and nothing else; pid 0 is the caller.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's policy: `libc::SCHED_OTHER`, `libc::SCHED_BATCH`, ...
    fn policy() -> i32 {
        // SAFETY: no arguments besides pid 0, the caller.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_background_thread_runs_under_sched_batch_and_others_are_untouched() {
        let inner = std::thread::spawn(|| {
            background_thread().unwrap();
            policy()
        })
        .join()
        .unwrap();
        assert_eq!(inner, libc::SCHED_BATCH);
        assert_eq!(
            policy(),
            libc::SCHED_OTHER,
            "only the calling thread changes"
        );
    }
}
