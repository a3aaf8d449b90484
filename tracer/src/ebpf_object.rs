//! The eBPF object (tracer-ebpf's programs), embedded at build time by build.rs.

/// The object's bytes, aligned for the ELF parser. Built from tracer-ebpf, or copied from
/// `MSITRACE_EBPF_OBJECT` when that was set at build time.
pub fn bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"))
}
