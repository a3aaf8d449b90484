//! msitrace's integration-test crate. The library part is the scenario builder: kernel event
//! sequences (a Hyper-V hibernation, an S3 cycle, a CPU going offline) written as readable
//! steps, fed to the state engine exactly as the ring buffer or a trace file would feed it.

pub mod btf_fixtures;
pub mod scenario;

pub use scenario::{Outcome, Scenario, Sleep, Vector, x86_msg};
