//! What an engine is built from: the traced kernel, what attached, the seed and the rules'
//! delays.

use serde::Serialize;

use crate::btf_layout::BtfFact;
use crate::probes::{CATALOGUE, ProbeStatus, Status};
use crate::seed::Seed;

/// Delays of the rules that wait for time to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RuleTiming {
    /// G1: how long after `resumed` a vector may still be masked.
    pub g1_grace_ns: u64,
    /// G5: how long a vector that fired before suspend may stay silent after resume.
    pub g5_silence_ns: u64,
    /// G3: how long after `CPU_ON` a managed vector has to be restarted. The restart is
    /// synchronous in the CPU's online callbacks; the grace only absorbs ring-buffer reordering.
    pub g3_grace_ns: u64,
}

impl Default for RuleTiming {
    fn default() -> Self {
        RuleTiming {
            g1_grace_ns: 2_000_000_000,
            g5_silence_ns: 10_000_000_000,
            g3_grace_ns: 1_000_000_000,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EngineConfig {
    /// `uname -r` of the traced kernel (from the trace header): what the kernel gates fall
    /// back on where no BTF fact tells.
    pub kernel_release: String,
    /// What attached (from the trace header): input of the probe gates.
    pub probes: Vec<ProbeStatus>,
    pub seed: Seed,
    pub timing: RuleTiming,
    /// What the kernel's BTF showed (from the trace header): input of the kernel gates.
    /// Empty: every fact unknown.
    pub btf_facts: Vec<BtfFact>,
}

impl EngineConfig {
    pub fn new(kernel_release: impl Into<String>, probes: Vec<ProbeStatus>, seed: Seed) -> Self {
        EngineConfig {
            kernel_release: kernel_release.into(),
            probes,
            seed,
            timing: RuleTiming::default(),
            btf_facts: Vec::new(),
        }
    }

    /// Every hook of the catalogue attached (scenario tests, benchmarks).
    pub fn all_probes_attached() -> Vec<ProbeStatus> {
        CATALOGUE
            .iter()
            .map(|h| ProbeStatus {
                hook: h.hook.into(),
                symbol: h.symbol().into(),
                candidates: h.symbols.iter().map(|c| c.to_string()).collect(),
                attached_symbol: Some(h.symbol().into()),
                method: h.method,
                status: Status::Attached,
                reason: None,
                module: h.module.map(str::to_string),
                rules_losing_input: Vec::new(),
                probe: h.probe,
                symbol_source: None,
            })
            .collect()
    }
}
