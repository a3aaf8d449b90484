//! Any bytes as a kernel's vmlinux BTF: the layout resolver must resolve or say what is wrong,
//! never panic (a kernel's BTF is input msitrace does not control).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::btf_layout::resolve_files;

fuzz_target!(|data: &[u8]| {
    let path = std::path::PathBuf::from(format!("/dev/shm/msitrace-fuzz-btf-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = resolve_files(&path, &[]);
    let _ = std::fs::remove_file(&path);
});
