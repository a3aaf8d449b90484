//! Any bytes as a trace file: the reader must end with events, warnings or a clear error —
//! never a panic, a hang or an allocation the file's size does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::trace_file::TraceReader;

fuzz_target!(|data: &[u8]| {
    // The reader takes paths (it checks file types and sizes); /dev/shm keeps this in memory.
    let path = std::path::PathBuf::from(format!("/dev/shm/msitrace-fuzz-{}.msit", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(reader) = TraceReader::open(&path) {
        for rec in reader {
            if rec.is_err() {
                break;
            }
        }
    }
    // Two files read as one: the second's header and chunks go through the same checks.
    if let Ok(reader) = TraceReader::open_many([&path, &path]) {
        let _ = reader.read_to_end();
    }
    let _ = std::fs::remove_file(&path);
});
