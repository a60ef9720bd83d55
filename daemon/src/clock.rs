//! Time on `CLOCK_BOOTTIME`: the only clock the daemon's timers use.
//!
//! `CLOCK_MONOTONIC` (what tokio's timers run on) stops while the device is
//! suspended, so a heartbeat due "in 270 s" would fire 270 s of *awake* time
//! later — after a night in suspend the NAT mapping is long gone. `CLOCK_BOOTTIME`
//! keeps counting in suspend. [`now`] reads it; [`Timer`] sleeps until an
//! absolute boot-time deadline with a timerfd armed with `TFD_TIMER_ABSTIME`,
//! driven by tokio's reactor through [`AsyncFd`] (no extra thread, no polling).
//!
//! Wall-clock time is used only to compare against message expiry
//! timestamps set by the gateway, and then as *the gateway's* wall clock
//! ([`GatewayClock::now_ms`]): devices without a battery-backed RTC often boot in 1970
//! or drift for hours, and judging the gateway's `expires_at_ms` by such a
//! clock would keep dead messages forever or drop every live one. The offset
//! is learned from `ServerHello.server_time_ms` ([`GatewayClock::set_offset`]).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId as TfdClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{ClockId, clock_gettime};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Time since boot, including time spent in suspend.
pub fn now() -> Duration {
    // CLOCK_BOOTTIME exists on every Linux since 2.6.39; failing to read it
    // would mean a broken kernel, where MONOTONIC is the best we can do.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .unwrap_or_else(|_| TimeSpec::new(0, 0));
    Duration::new(
        ts.tv_sec().max(0) as u64,
        ts.tv_nsec().clamp(0, 999_999_999) as u32,
    )
}

/// Wall clock, unix milliseconds (for message expiry only; never for timers).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The gateway's wall clock as this device knows it: our wall clock plus the
/// offset learned from the last `ServerHello`. Cheap to clone; the link sets
/// it, the app socket and the store's callers read it. Passed in (not a
/// process-wide static) so that two daemons in one process, as the tests run
/// them, keep their own.
#[derive(Debug, Clone, Default)]
pub struct GatewayClock(Arc<AtomicI64>);

impl GatewayClock {
    /// A clock with no offset yet (the local wall clock).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the gateway's wall clock (`server_time_ms`) as observed now.
    /// Returns the offset (gateway minus local), in ms.
    pub fn set_offset(&self, server_time_ms: u64) -> i64 {
        let offset = server_time_ms as i64 - wall_ms() as i64;
        self.0.store(offset, Ordering::Relaxed);
        offset
    }

    /// The gateway's wall clock, unix ms, as best known: for message expiry.
    pub fn now_ms(&self) -> u64 {
        (wall_ms() as i64)
            .saturating_add(self.0.load(Ordering::Relaxed))
            .max(0) as u64
    }
}

/// `AsyncFd` wants `AsRawFd`; nix's `TimerFd` only offers `AsFd`.
#[derive(Debug)]
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A reusable one-shot timer on `CLOCK_BOOTTIME`.
///
/// One timerfd per long-lived user (the link keeps one for its whole life), so
/// re-arming costs one `timerfd_settime` and no allocation.
#[derive(Debug)]
pub struct Timer {
    fd: AsyncFd<Fd>,
}

impl Timer {
    /// Creates an unarmed timer. Needs a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Self> {
        let tfd = TimerFd::new(
            TfdClock::CLOCK_BOOTTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // `AsyncFd::new` is deprecated because a caller could hand it a raw fd
        // that is closed or replaced behind the reactor's back. Here the
        // wrapper owns the `OwnedFd` for the whole life of the `AsyncFd` and
        // always reports that same fd, which is exactly the condition the
        // unsafe `register` asks for — and the crate stays free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(Fd(tfd), Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// Disarms the timer: a deadline left armed by a dropped `sleep_until`
    /// would still make the fd readable and wake the process for nothing
    /// (what an offline daemon, which has no deadline at all, must avoid).
    pub fn disarm(&mut self) -> io::Result<()> {
        self.fd.get_ref().0.unset().map_err(io::Error::from)
    }

    /// Completes once boot time reaches `deadline` (at once if it already has).
    ///
    /// Cancel-safe: dropping the future leaves the timer armed but harmless; the
    /// next call re-arms it.
    pub async fn sleep_until(&mut self, deadline: Duration) -> io::Result<()> {
        // A zero it_value would *disarm* the timer; boot time is never zero.
        let deadline = deadline.max(Duration::from_nanos(1));
        let spec = TimeSpec::from_duration(deadline);
        self.fd
            .get_ref()
            .0
            .set(
                Expiration::OneShot(spec),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
            .map_err(io::Error::from)?;
        loop {
            if now() >= deadline {
                // Drain a possible expiration so the fd is not left readable.
                let _ = self.fd.get_ref().0.wait();
                return Ok(());
            }
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| match inner.get_ref().0.wait() {
                Ok(()) => Ok(()),
                Err(Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(io::Error::from(e)),
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// One-off sleep until a boot-time deadline (creates a timerfd for the call).
pub async fn sleep_until(deadline: Duration) -> io::Result<()> {
    Timer::new()?.sleep_until(deadline).await
}

/// Error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `fut` for at most `limit` of boot time.
///
/// If the timer itself cannot be created (fd exhaustion), `fut` runs without a
/// limit rather than failing an otherwise fine request.
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let deadline = now() + limit;
    let mut timer = match Timer::new() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a timerfd; running without a timeout");
            return Ok(fut.await);
        }
    };
    tokio::select! {
        out = fut => Ok(out),
        _ = timer.sleep_until(deadline) => Err(Elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_sleep_leaves_the_timer_armed_until_disarmed() {
        let mut t = Timer::new().expect("timer");
        // Poll once (arms it), then drop the future.
        let _ = tokio::time::timeout(
            Duration::ZERO,
            t.sleep_until(now() + Duration::from_secs(3600)),
        )
        .await;
        assert!(
            t.fd.get_ref().0.get().expect("get").is_some(),
            "armed after the dropped sleep"
        );
        t.disarm().expect("disarm");
        assert!(
            t.fd.get_ref().0.get().expect("get").is_none(),
            "disarmed: no wake-up pending"
        );
    }

    #[test]
    fn boottime_moves_forward() {
        let a = now();
        let b = now();
        assert!(b >= a);
        assert!(a > Duration::ZERO);
    }

    #[test]
    fn gateway_clock_follows_the_offset() {
        let local = wall_ms();
        let clock = GatewayClock::new();
        let other = clock.clone();
        let off = clock.set_offset(local + 3_600_000);
        assert!((3_599_000..=3_600_000).contains(&off), "{off}");
        assert!(
            other.now_ms() >= local + 3_599_000,
            "clones share the offset"
        );
        assert!(
            GatewayClock::new().now_ms().abs_diff(wall_ms()) < 1000,
            "a new clock has none"
        );
        clock.set_offset(wall_ms());
        assert!(other.now_ms().abs_diff(wall_ms()) < 1000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn timer_fires_for_past_and_near_deadlines() {
        let mut t = Timer::new().expect("timerfd");
        t.sleep_until(Duration::from_nanos(1))
            .await
            .expect("past deadline");
        let deadline = now() + Duration::from_millis(5);
        t.sleep_until(deadline).await.expect("near deadline");
        assert!(now() >= deadline);
        // Re-arming the same fd works.
        let deadline = now() + Duration::from_millis(1);
        t.sleep_until(deadline).await.expect("re-armed");
        assert!(now() >= deadline);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn timeout_expires_and_passes() {
        let pending = std::future::pending::<()>();
        assert_eq!(
            timeout(Duration::from_millis(2), pending).await,
            Err(Elapsed)
        );
        assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
    }
}
