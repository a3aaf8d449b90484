//! Runs the tracer's own BTF layout resolver (`tracer::btf_layout::resolve`) and its rules'
//! kernel gates on every kernel under a BTF fixture directory (tests/fixtures/btf by default),
//! and prints the result as one JSON document for `cargo xtask matrix`.
//!
//! It lives here rather than in xtask because xtask cannot link the tracer library: tracer's
//! build script needs nightly and bpf-linker, which `cargo xtask setup` is what installs.
//!
//! ```text
//! cargo run -p msitrace-tests --example btf_layouts -- [FIXTURE_DIR]
//! {"rules": [{"id": "H1", "title": …}, …],
//!  "kernels": [{"release": "5.10.0-46-amd64", "modules": […], "resolved": <ResolvedLayout>,
//!               "kernel_gates": [{"rule": "H5", "reason": …}]}, …]}
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde_json::{Value, json};
use tracer::btf::Btf;
use tracer::btf_layout::{self, HYPERV_MODULES};
use tracer::engine::RuleId;
use tracer::engine::gates::Gates;

/// One kernel's fixture directory: vmlinux.btf.xz and the Hyper-V modules' split BTF beside it.
fn kernel(dir: &Path) -> Result<Value, String> {
    let release = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a UTF-8 name", dir.display()))?;
    let vmlinux_path = dir.join("vmlinux.btf.xz");
    let vmlinux = Btf::from_bytes(&msitrace_tests::btf_fixtures::unxz(&vmlinux_path)?)
        .map_err(|e| format!("{}: {e:#}", vmlinux_path.display()))?;
    let mut modules = Vec::new();
    for name in HYPERV_MODULES {
        let path = dir.join(format!("{name}.btf.xz"));
        if path.exists() {
            let btf = Btf::from_split_bytes(&msitrace_tests::btf_fixtures::unxz(&path)?, &vmlinux)
                .map_err(|e| format!("{}: {e:#}", path.display()))?;
            modules.push((name, btf));
        }
    }
    let refs: Vec<(&str, &Btf)> = modules.iter().map(|(n, b)| (*n, b)).collect();
    let resolved = btf_layout::resolve(&vmlinux, &refs);
    // No probe list: only the kernel gates (what the BTF facts and the release decide) are
    // asked, never whether a hook attached.
    let gates = Gates::new(release, &[], &resolved.facts);
    let kernel_gates: Vec<Value> = RuleId::ALL
        .into_iter()
        .filter_map(|rule| {
            gates
                .kernel_gate(rule)
                .map(|reason| json!({"rule": rule, "reason": reason}))
        })
        .collect();
    Ok(json!({
        "release": release,
        "modules": modules.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "resolved": resolved,
        "kernel_gates": kernel_gates,
    }))
}

fn run(root: &Path) -> Result<Value, String> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Every kernel directory there is, whoever added it; README.md and extract.sh are not.
        .filter(|p| p.join("vmlinux.btf.xz").is_file())
        .collect();
    dirs.sort();
    let kernels = dirs
        .iter()
        .map(|d| kernel(d))
        .collect::<Result<Vec<_>, _>>()?;
    let rules: Vec<Value> = RuleId::ALL
        .into_iter()
        .map(|r| json!({"id": r, "title": r.title()}))
        .collect();
    Ok(json!({"rules": rules, "kernels": kernels}))
}

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(msitrace_tests::btf_fixtures::root, PathBuf::from);
    match run(&root) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("btf_layouts: {e}");
            ExitCode::FAILURE
        }
    }
}
