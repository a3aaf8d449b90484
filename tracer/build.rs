//! Builds the eBPF programs (the tracer-ebpf crate) and leaves the object in OUT_DIR, where
//! src/ebpf_object.rs embeds it into msitrace.
//!
//! Why a build script builds another crate: the programs need another target
//! (bpfel-unknown-none), a nightly compiler (`-Z build-std=core`) and bpf-linker, none of which
//! a plain dependency can ask cargo for (artifact dependencies cannot use build-std yet), so
//! aya-build runs a nested `cargo +nightly build` with its own target directory. tracer-ebpf is
//! also a build-dependency so that cargo reruns this script when it or tracer-common changes.
//!
//! `MSITRACE_EBPF_OBJECT=/path/to/object` skips all of that and embeds a prebuilt object, for
//! builds on machines without nightly or bpf-linker.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use aya_build::{Package, Toolchain};

/// Where aya-build leaves the object: OUT_DIR/<bin name of tracer-ebpf>.
const OBJECT: &str = "tracer";
const OVERRIDE: &str = "MSITRACE_EBPF_OBJECT";
const EM_BPF: u16 = 247;

fn main() {
    if let Err(e) = run() {
        // One line, shown by cargo as `error: tracer@…: <line>`.
        println!("cargo::error={e}");
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed={OVERRIDE}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    match env::var_os(OVERRIDE) {
        Some(path) if !path.is_empty() => copy_prebuilt(Path::new(&path), &out_dir.join(OBJECT)),
        _ => build(),
    }
}

fn copy_prebuilt(src: &Path, dst: &Path) -> Result<(), String> {
    println!("cargo:rerun-if-changed={}", src.display());
    let bytes =
        fs::read(src).map_err(|e| format!("{OVERRIDE}={}: cannot read it: {e}", src.display()))?;
    let is_bpf_elf = bytes.len() > 20
        && bytes.starts_with(b"\x7fELF")
        && u16::from_le_bytes([bytes[18], bytes[19]]) == EM_BPF;
    if !is_bpf_elf {
        return Err(format!(
            "{OVERRIDE}={} is not an eBPF ELF object: point it at the `tracer` object built for bpfel-unknown-none",
            src.display()
        ));
    }
    fs::write(dst, &bytes).map_err(|e| format!("cannot write {}: {e}", dst.display()))
}

fn build() -> Result<(), String> {
    check_prerequisites()?;
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let ebpf_dir = manifest_dir.join("..").join("tracer-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", ebpf_dir.display()))?;
    let package = Package {
        name: "tracer-ebpf",
        root_dir,
        ..Default::default()
    };
    // The nested cargo's stderr comes back as one `warning:` line per line; its progress
    // lines would bury the real warnings. Compiler messages come as JSON and still show.
    // SAFETY: no other thread exists yet in this build script.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf([package], Toolchain::Nightly).map_err(|e| {
        let e = format!("{e:#}").replace('\n', " ");
        // aya-build's error for a failed nested build is its whole command line; the
        // compiler's messages are already above, as `warning: tracer@…` lines.
        if e.contains("failed: ExitStatus") {
            "building the eBPF programs (tracer-ebpf, nightly, bpfel-unknown-none) failed: \
             see the compiler messages above"
                .to_string()
        } else {
            format!("building the eBPF programs failed: {e}")
        }
    })
}

/// Fail early, in one line naming everything that is missing at once, on what
/// `cargo xtask setup` installs, instead of letting the nested build fail deep inside with a
/// message about `core` or a linker (and one missing piece per run).
fn check_prerequisites() -> Result<(), String> {
    let mut missing = Vec::new();
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| {
            format!(
                "cannot run rustup ({e}), which the eBPF build needs: install rustup with the \
                 nightly toolchain (or set {OVERRIDE} to a prebuilt object)"
            )
        })?;
    if out.status.success() {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !sysroot
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .is_file()
        {
            missing.push("rust-src for the nightly toolchain (the eBPF build compiles `core`)");
        }
        // bpf-linker is linked against the nightly's own libLLVM.so.<ver>-rust-…-nightly.
        let has_llvm = fs::read_dir(sysroot.join("lib")).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("libLLVM.so."))
        });
        if !has_llvm {
            missing.push(
                "the nightly toolchain's LLVM library (lib/libLLVM.so.*), which bpf-linker links",
            );
        }
    } else {
        missing.push("the nightly Rust toolchain (`rustup toolchain install nightly`)");
    }
    if which::which("bpf-linker").is_err() {
        missing.push("bpf-linker on PATH");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the eBPF build is missing {}: run `cargo xtask setup` (or set {OVERRIDE} to a prebuilt object)",
        missing.join(", ")
    ))
}
