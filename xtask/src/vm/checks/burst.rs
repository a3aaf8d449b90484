//! The burst: every record the kernel produced is in the file or counted lost.

use super::{
    Verdict,
    common::value,
    json::{Event, Kind, Trailer},
};

/// Nothing silent under a burst: every time a streaming program ran (its hit counter), its
/// record is in the file or was counted as lost — exactly, per the trailer's counters. The
/// handler-count program only counts in a map and writes no records. What fit in the ring is
/// what the file holds between the last handler-count sample before the stop and the first
/// after it (the recorder samples every second while it runs).
///
/// `guest` is what the guest's loop wrote (burst.rounds: `rounds= masks= from= to=`): how
/// long it ran and what the kernel did, which says why a burst fell short.
pub(super) fn check_burst(
    events: &[Event],
    trailer: &Trailer,
    guest: Option<&str>,
    v: &mut Verdict,
) {
    let kernel: Vec<u64> = events
        .iter()
        .filter(|e| !e.kind().userspace())
        .map(|e| e.ts_ns)
        .collect();
    let in_file = kernel.len() as u64;
    let (mut hits, mut lost) = (0u64, 0u64);
    for (probe, h, l) in &trailer.counters {
        if probe == "IrqHandlerEntry" {
            continue;
        }
        hits += h;
        lost += l;
    }
    let decode_errors = trailer.decode_errors;
    let mut samples: Vec<u64> = events
        .iter()
        .filter(|e| e.kind() == Kind::IrqCounts)
        .map(|e| e.ts_ns)
        .collect();
    samples.sort_unstable();
    let stop = samples
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a);
    let fit = stop.map(|(a, b)| kernel.iter().filter(|&&t| t > a && t < b).count());
    let g = guest.unwrap_or_default();
    let moved = match (
        value::<u64>(g, "rounds="),
        value::<u64>(g, "masks="),
        value::<f64>(g, "from="),
        value::<f64>(g, "to="),
    ) {
        (Some(r), Some(m), Some(from), Some(to)) => {
            format!("{r} rounds, {m} masks in {:.1} s", to - from)
        }
        _ => "the guest's burst.rounds is missing or unreadable".into(),
    };
    v.facts.push(format!(
        "burst: {hits} records produced in the step ({moved}), {in_file} in the file, {lost} counted lost, {decode_errors} undecodable"
    ));
    if in_file + lost + decode_errors != hits {
        v.failures.push(format!(
            "{hits} records were produced but {in_file} are in the file and {lost} were counted lost: {} unaccounted for",
            hits as i128 - (in_file + lost + decode_errors) as i128
        ));
    }
    match (lost, fit, stop) {
        (0, _, _) => v.failures.push(format!(
            "the burst did not overflow the ring ({hits} records, {moved}): the guest stops it at BURST_MASKS masks (vmt.sh) or after 90 s; raise the first to measure what fits"
        )),
        (_, Some(n), Some((a, b))) => v.facts.push(format!(
            "recorder stopped {:.1} s: the default ring held {n} records (target >= 100000), {lost} more were counted lost",
            (b - a) as f64 / 1e9
        )),
        _ => v.failures.push("no handler-count samples around the stop".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn typed(events: &[Value], trailer: &Value) -> (Vec<Event>, Trailer) {
        (
            serde_json::from_value(Value::Array(events.to_vec())).unwrap(),
            serde_json::from_value(trailer.clone()).unwrap(),
        )
    }

    #[test]
    fn a_burst_must_account_for_every_record() {
        let ev = |ts: u64, kind: Value| serde_json::json!({"ts_ns": ts, "cpu": 0, "pid": 0, "kind": kind});
        let mut events = vec![ev(
            1_000_000_000,
            serde_json::json!({"IrqCounts": {"counts": []}}),
        )];
        for i in 0..5 {
            events.push(ev(
                2_000_000_000 + i,
                serde_json::json!({"MaskEnter": {"irq": 38}}),
            ));
        }
        events.push(ev(2_500_000_000, serde_json::json!("MigrateAllOffEnter")));
        events.push(ev(
            9_000_000_000,
            serde_json::json!({"Lost": {"probe": "HvMaskEnter", "count": 3}}),
        ));
        events.push(ev(
            9_000_000_000,
            serde_json::json!({"IrqCounts": {"counts": []}}),
        ));
        let trailer = |hits: u64, lost: u64| serde_json::json!({"counters": [["HvMaskEnter", hits - 1, lost], ["MigrateAllOffEnter", 1, 0], ["IrqHandlerEntry", 99, 0]], "decode_errors": 0});
        let burst = |hits: u64, lost: u64, guest: Option<&str>| {
            let mut v = Verdict::default();
            let (events, trailer) = typed(&events, &trailer(hits, lost));
            check_burst(&events, &trailer, guest, &mut v);
            v
        };
        let guest = Some("rounds=40 masks=10 from=2.00 to=2.50\n");
        let has = |lines: &[String], text: &str| {
            assert!(lines.iter().any(|l| l.contains(text)), "{text}: {lines:?}")
        };
        let v = burst(9, 3, guest);
        assert!(v.pass(), "{:?}", v.failures);
        has(&v.facts, "(40 rounds, 10 masks in 0.5 s)");
        has(&v.facts, "held 6 records");
        has(&burst(9, 3, None).facts, "burst.rounds is missing");
        has(&burst(10, 3, guest).failures, "1 unaccounted for");
        has(&burst(6, 0, guest).failures, "did not overflow");
    }
}
