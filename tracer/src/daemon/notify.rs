//! What systemd hears from the daemon (sd_notify): READY=1 once the probes are attached,
//! STATUS= with coverage, vectors, divergences and losses, WATCHDOG=1 at half the WatchdogSec
//! period when the unit sets one, STOPPING=1 on the way out. Without NOTIFY_SOCKET (not a
//! Type=notify service) every call is a no-op.

use std::time::{Duration, Instant};

use libsystemd::daemon::{NotifyState, notify, watchdog_enabled};

pub struct Notifier {
    watchdog: Option<Duration>,
    last_ping: Instant,
    /// The last STATUS= sent: sent again only when it changes.
    last_status: String,
}

impl Notifier {
    pub fn new() -> Notifier {
        Notifier {
            // Ping at half the period, as sd_watchdog_enabled(3) recommends.
            watchdog: watchdog_enabled(false).map(|d| d / 2),
            last_ping: Instant::now(),
            last_status: String::new(),
        }
    }

    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Errors are ignored: a manager that went away must not stop the tracing.
    pub fn ready(&mut self, status: String) {
        let _ = notify(
            false,
            &[NotifyState::Ready, NotifyState::Status(status.clone())],
        );
        self.last_status = status;
    }

    pub fn status(&mut self, status: String) {
        if status != self.last_status {
            let _ = notify(false, &[NotifyState::Status(status.clone())]);
            self.last_status = status;
        }
    }

    /// WATCHDOG=1 when its half-period has passed (at most once a second); called from the
    /// sample and from each event, so a stuck event loop stops the pings and systemd restarts
    /// the service.
    pub fn tick(&mut self) {
        if let Some(p) = self.watchdog
            && self.last_ping.elapsed() >= p.min(Duration::from_secs(1))
        {
            let _ = notify(false, &[NotifyState::Watchdog]);
            self.last_ping = Instant::now();
        }
    }

    pub fn stopping(&mut self) {
        let _ = notify(false, &[NotifyState::Stopping]);
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}
