//! The session's one periodic wake-up: a kernel timerfd registered with the event loop.
//!
//! tokio's timer wheel files a one-second deadline in 64 ms slots, so each `interval` tick
//! wakes the thread twice (at the slot, then at the deadline), and registering a deadline
//! while running pokes the loop's eventfd. A timerfd is one readable file descriptor: the
//! idle daemon sleeps in `epoll_wait` with no timeout and wakes exactly once a period.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

pub struct Ticker {
    fd: AsyncFd<OwnedFd>,
}

impl Ticker {
    /// Ticks every `period` on CLOCK_MONOTONIC (which stops in suspend, as tokio's clock
    /// does), the first one `period` from now. Must run inside a tokio runtime.
    pub fn new(period: Duration) -> io::Result<Ticker> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        arm(&fd, period)?;
        // SAFETY: the AsyncFd owns the descriptor for its whole life, so the registered fd
        // cannot be closed or reused behind the reactor's back.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Ticker { fd })
    }

    /// Tick every `period` from now on, the next one `period` from now.
    pub fn set_period(&self, period: Duration) -> io::Result<()> {
        arm(self.fd.get_ref(), period)
    }

    /// Wait for the next tick; ticks missed meanwhile (a slow step, a suspend) count as one.
    /// Cancel-safe: a tick that fired while nobody waited is returned at the next call.
    pub async fn tick(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into a buffer of 8.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            guard.clear_ready();
        }
    }
}

fn arm(fd: &OwnedFd, period: Duration) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: period.as_secs() as libc::time_t,
        tv_nsec: period.subsec_nanos() as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: valid descriptor and pointers.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_keep_coming() {
        let t = Ticker::new(Duration::from_millis(5)).unwrap();
        for _ in 0..3 {
            t.tick().await.unwrap();
        }
        // Periods that pass unread are reported by one tick, not lost or queued as many.
        std::thread::sleep(Duration::from_millis(20));
        t.tick().await.unwrap();
    }

    #[tokio::test]
    async fn a_new_period_takes_over() {
        let t = Ticker::new(Duration::from_secs(3600)).unwrap();
        t.set_period(Duration::from_millis(5)).unwrap();
        // Without the new period the first tick is an hour away: fail, not hang.
        let two = async {
            t.tick().await.unwrap();
            t.tick().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(30), two)
            .await
            .expect("the 5 ms period did not take over");
    }
}
