//! msitrace's core: everything but the terminal and the journal. The probe manager decides
//! what can attach on this kernel and says why not; the BTF layout resolver feeds the eBPF
//! programs their field offsets; the collector drains the ring buffer into typed events; the
//! state engine and its rules turn events into per-vector state and divergences; the trace
//! file keeps it all for replay. Front-ends (`cmd::*`) are thin layers over these.

pub mod btf;
pub mod btf_layout;
pub mod check;
pub mod cmd;
pub mod collector;
pub mod color;
pub mod daemon;
pub mod duration;
pub mod ebpf_object;
pub mod engine;
pub mod event;
pub mod event_text;
pub mod fleet;
pub mod irq_counts;
pub mod kernel;
pub mod live;
pub mod output;
pub mod private_file;
pub mod probe_manager;
pub mod probes;
pub mod replayer;
pub mod report;
#[cfg(test)]
mod rig_views;
pub mod seed;
pub mod session;
pub mod tick;
pub mod trace_file;
