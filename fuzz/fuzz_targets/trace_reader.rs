//! Any bytes as a trace file: the reader must end with events, warnings or a clear error —
//! never a panic, a hang or an allocation the file's size does not justify. Three properties
//! besides "no crash" (issue #18): the work is linear (bytes read from the disk ≤ twice the
//! file per file opened), no input takes more than 1 s per MiB, and no input makes the
//! reader hold more than 64 MiB at once.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tracer::trace_file::TraceReader;

/// Counts the bytes live and their peak, so that memory is a property of each input rather
/// than of the process's RSS (which the sanitizer's shadow memory inflates).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the counters do not affect the allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MAX_HELD: usize = 64 << 20;

/// CPU time of this thread: what an input costs, whatever else the machine does. A wall clock
/// failed an input that takes 25 ms when the fuzzer, at nice 19, shared two cores with a VM.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fuzz_target!(|data: &[u8]| {
    // The reader takes paths (it checks file types and sizes); /dev/shm keeps this in memory.
    let id = std::process::id();
    let path = std::path::PathBuf::from(format!("/dev/shm/msitrace-fuzz-{id}.msit"));
    let copy = std::path::PathBuf::from(format!("/dev/shm/msitrace-fuzz-{id}-copy.msit"));
    if std::fs::write(&path, data).is_err() || std::fs::write(&copy, data).is_err() {
        return;
    }
    let len = data.len() as u64;
    let limit = Duration::from_secs(1) + Duration::from_secs_f64(len as f64 / f64::from(1 << 20));
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = thread_cpu();
    if let Ok(mut reader) = TraceReader::open(&path) {
        for rec in reader.by_ref() {
            if rec.is_err() {
                break;
            }
        }
        assert!(
            reader.bytes_read() <= 2 * len,
            "{} bytes read from a file of {len}",
            reader.bytes_read()
        );
    }
    // Two files read as one (a copy: the same file twice is refused): the second's header
    // and chunks go through the same checks.
    if let Ok(reader) = TraceReader::open_many([&path, &copy]) {
        let _ = reader.read_to_end();
    }
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(held <= MAX_HELD, "{held} bytes held for an input of {len}");
    assert!(
        thread_cpu() - start <= limit,
        "{:?} of CPU for an input of {len} bytes",
        thread_cpu() - start
    );
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&copy);
});
