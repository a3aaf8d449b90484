//! The stream step's instruction counts: tests/guest-insns, a QEMU plugin that counts the
//! guest instructions of each eBPF program on the vCPU that runs it. The kernel's bpf_stats,
//! under `-icount`, also count the other vCPU's work whenever the vCPUs switch inside a
//! program; these counts do not. Counts recorded before the plugin read the vCPU from the guest
//! (tests/guest-insns/src/lib.rs) miss the helpers' blocks translated on the other vCPU: in
//! those, only the programs' own code is exact.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Build the plugin; its path.
pub fn build(repo: &Path) -> Result<PathBuf> {
    println!("vm: building the instruction-counting plugin (cargo build --release -p guest-insns)");
    crate::util::build_release(repo, "guest-insns", "libguest_insns.so")
}
