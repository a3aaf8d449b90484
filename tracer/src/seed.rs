//! The initial state of every MSI/MSI-X vector, read at start from /proc/interrupts and
//! /sys/bus/pci/devices/*/msi_irqs, stored in the trace header so that a replay starts from
//! the same state as the live run and vectors without events are still shown.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// CLOCK_MONOTONIC ns when the seed was read.
    pub taken_ns: u64,
    pub online_cpus: Vec<u32>,
    pub vectors: Vec<SeedVector>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedVector {
    pub irq: u32,
    /// PCI device (BDF) from /sys/bus/pci/devices/*/msi_irqs.
    pub device: Option<String>,
    pub driver: Option<String>,
    /// "MSI" or "MSI-X", from msi_irqs/<irq> (or the /proc/interrupts chip name).
    pub kind: Option<String>,
    /// The /proc/interrupts chip and action columns, e.g. "PCI-MSIX-0000:00:02.0" and "eth0-rx-0".
    pub chip: Option<String>,
    pub actions: Option<String>,
    /// Handler count summed over CPUs.
    pub count: u64,
    /// CPUs with a non-zero count (where it has fired).
    pub cpus_fired: Vec<u32>,
    /// /proc/irq/<irq>/effective_affinity_list, when readable.
    pub effective_cpus: Option<Vec<u32>>,
}
