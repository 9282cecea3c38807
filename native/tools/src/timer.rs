//! Sleeps precise to tens of microseconds, for the mock's injected delays.
//!
//! tokio's timer wheel has 1 ms ticks and rounds deadlines up, so `sleep(1 ms)` takes 1–2 ms:
//! a mock emulating a fast upstream would add up to a millisecond of its own. Here a sleep's
//! last few milliseconds are a one-shot Linux timerfd (nanosecond hrtimer) registered with the
//! runtime's own epoll: no extra thread, so a mock pinned to one busy core wakes as promptly
//! as with tokio's timer. A few syscalls per sleep; no-delay requests pay nothing.
use std::time::{Duration, Instant};

/// Sleep until `at`, precisely (see the module docs).
pub async fn sleep_until(at: Instant) {
    const COARSE_MARGIN: Duration = Duration::from_millis(3);
    let now = Instant::now();
    if at <= now {
        return;
    }
    if at - now > COARSE_MARGIN * 2 {
        tokio::time::sleep_until((at - COARSE_MARGIN).into()).await;
    }
    precise_until(at).await
}

pub async fn sleep(d: Duration) {
    if !d.is_zero() {
        sleep_until(Instant::now() + d).await;
    }
}

#[cfg(target_os = "linux")]
async fn precise_until(at: Instant) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use tokio::io::unix::AsyncFd;

    let left = at.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return;
    }
    // SAFETY: plain syscalls on a descriptor this function creates and owns.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return tokio::time::sleep_until(at.into()).await;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        },
    };
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
        return tokio::time::sleep_until(at.into()).await;
    }
    // SAFETY: `fd` is an open timerfd owned by the AsyncFd for its whole lifetime.
    let afd = match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(a) => a,
        Err(_) => return tokio::time::sleep_until(at.into()).await,
    };
    loop {
        match afd.readable().await {
            Ok(mut guard) => {
                let mut buf = [0u8; 8];
                let n = unsafe { libc::read(afd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                if n == 8 {
                    return;
                }
                guard.clear_ready();
            }
            Err(_) => return tokio::time::sleep_until(at.into()).await,
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn precise_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_at_least_the_duration_and_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t0 = Instant::now();
            let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut hs = Vec::new();
            for (i, ms) in [5u64, 1, 12, 3].into_iter().enumerate() {
                let o = order.clone();
                hs.push(tokio::spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    assert!(t0.elapsed() >= Duration::from_millis(ms));
                    o.lock().unwrap().push(i);
                }));
            }
            for h in hs {
                h.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), vec![1, 3, 0, 2]);
        });
    }
}
