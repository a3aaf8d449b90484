//! Makes cargo rebuild the programs when bpf-linker changes.
//!
//! Linking for bpfel-unknown-none runs `bpf-linker`, a dependency cargo cannot see; this
//! registers its path so that installing another version rebuilds the object. A linker put
//! earlier on PATH later is not noticed: watching every PATH directory would rebuild too often.
//! For host builds of the workspace (no linking for BPF) a missing bpf-linker is fine.

fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
