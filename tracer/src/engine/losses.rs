//! Loss accounting: events a probe could not write to the ring buffer, per probe and per
//! report, with the interval each report covers so that rules relying on the *absence* of an
//! event (no compose, no re-activation) can tell when that absence may be a loss.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::ProbeId;

use super::state::Phase;
use crate::probes::hook_of;

/// One in-band `Lost` record: `count` events of `probe` were lost in `(from_ts_ns, ts_ns]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LossReport {
    pub ts_ns: u64,
    pub from_ts_ns: u64,
    pub probe: ProbeId,
    pub hook: &'static str,
    pub count: u64,
    /// Phase and epoch when the report arrived.
    pub phase: Phase,
    pub epoch: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeLoss {
    pub probe: ProbeId,
    pub hook: &'static str,
    pub count: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Losses {
    pub total: u64,
    pub per_probe: Vec<ProbeLoss>,
    pub reports: Vec<LossReport>,
    /// Reports not kept in `reports` (bounded); their counts are in the totals.
    pub reports_dropped: u64,
    #[serde(skip)]
    last_report_ts: BTreeMap<ProbeId, u64>,
}

/// Bound on the kept reports: a daemon losing events every second for days stays bounded.
pub const MAX_LOSS_REPORTS: usize = 10_000;

impl Losses {
    /// Record a report and return it (with the interval it covers).
    pub fn record(
        &mut self,
        probe: ProbeId,
        count: u64,
        ts_ns: u64,
        trace_start_ns: u64,
        phase: Phase,
        epoch: u32,
    ) -> LossReport {
        let from_ts_ns = self
            .last_report_ts
            .insert(probe, ts_ns)
            .unwrap_or(trace_start_ns)
            .min(ts_ns);
        self.total = self.total.saturating_add(count);
        let hook = hook_of(probe).hook;
        match self.per_probe.iter_mut().find(|p| p.probe == probe) {
            Some(p) => p.count = p.count.saturating_add(count),
            None => {
                self.per_probe.push(ProbeLoss { probe, hook, count });
                self.per_probe.sort_by_key(|p| p.probe);
            }
        }
        let r = LossReport {
            ts_ns,
            from_ts_ns,
            probe,
            hook,
            count,
            phase,
            epoch,
        };
        if self.reports.len() < MAX_LOSS_REPORTS {
            self.reports.push(r.clone());
        } else {
            self.reports_dropped += 1;
        }
        r
    }

    /// Events of `probes` lost in reports whose interval overlaps `[from, to]`.
    pub fn lost_between(&self, probes: &[ProbeId], from: u64, to: u64) -> u64 {
        self.reports
            .iter()
            .filter(|r| probes.contains(&r.probe) && r.from_ts_ns <= to && r.ts_ns >= from)
            .map(|r| r.count)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_cover_the_time_since_the_previous_one() {
        let mut l = Losses::default();
        l.record(ProbeId::HvComposeExit, 3, 100, 10, Phase::Running, 0);
        let r = l.record(ProbeId::HvComposeExit, 2, 500, 10, Phase::Resumed, 1);
        assert_eq!(r.from_ts_ns, 100);
        assert_eq!(l.total, 5);
        assert_eq!(l.per_probe[0].count, 5);
        assert_eq!(l.lost_between(&[ProbeId::HvComposeExit], 200, 300), 2);
        assert_eq!(l.lost_between(&[ProbeId::HvComposeExit], 501, 900), 0);
        assert_eq!(l.lost_between(&[ProbeId::WriteMsiMsg], 0, 900), 0);
        assert_eq!(l.lost_between(&[ProbeId::HvComposeExit], 0, 50), 3);
    }
}
