//! `msitrace check`: diagnose a machine whose device is already dead after a resume, with no
//! trace and no BPF. It reads what genirq believes about every MSI/MSI-X vector (procfs,
//! sysfs, irq debugfs) and what the device holds (config space, the MSI-X table through the
//! BAR, read-only), and compares them.
//!
//! Policy: [`sources`] reads the machine into a plain [`Snapshot`] and never decides
//! anything; [`analysis`] is a pure function from a snapshot to a [`CheckReport`], so that it
//! runs the same on a snapshot saved on another machine (`check --save`, `--from`) and in
//! tests on captured devices. Nothing is ever written to a device or a kernel file. What could
//! not be read is reported with what it costs; a check without its input is "not evaluated",
//! never guessed.

pub mod analysis;
pub mod device;
pub mod snapshot;
pub mod sources;

pub use analysis::{CheckReport, CheckRule, Finding, analyse};
pub use snapshot::Snapshot;
pub use sources::{ReadOptions, read_snapshot};
