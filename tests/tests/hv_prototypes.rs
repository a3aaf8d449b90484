//! hv_stub (tests/guest-module/hv_stub.c) stands in for pci-hyperv under the names and
//! prototypes msitrace's kprobes read their arguments by: a prototype that drifted from the
//! real driver's would make the QEMU rig prove msitrace on a function no kernel has. This
//! compares each hv_* prototype the module declares with the same function in the real
//! pci-hyperv's BTF of every fixture kernel (tests/fixtures/btf, see its README): module BTF
//! where pci-hyperv is a module, vmlinux BTF where it is built in (Debian's 7.x).

use std::{
    fs,
    path::{Path, PathBuf},
};

use btf_rs::{Btf, BtfType, Type};

/// The functions hv_stub mirrors. The first three exist in every pci-hyperv (chip callbacks);
/// the others are compared where the kernel's BTF has them.
const ALWAYS: &[&str] = &["hv_compose_msi_msg", "hv_irq_unmask", "hv_irq_mask"];
const WHERE_PRESENT: &[&str] = &[
    "hv_pci_compose_compl",
    "hv_pci_suspend",
    "hv_pci_resume",
    "hv_pci_restore_msi_msg",
];

/// Fixture kernels, and where their pci-hyperv's BTF is.
enum Source {
    Module,
    Vmlinux,
    /// No BTF for pci-hyperv at all, with the reason.
    None(&'static str),
}

const KERNELS: &[(&str, Source)] = &[
    (
        "5.10.0-46-amd64",
        Source::None(
            "5.10 has no module BTF (no CONFIG_DEBUG_INFO_BTF_MODULES) and pci-hyperv is a \
             module there, so no BTF describes its functions",
        ),
    ),
    ("6.1.0-56-amd64", Source::Module),
    ("6.1.0-57-cloud-amd64", Source::Module),
    ("6.12.117+deb12-amd64", Source::Module),
    ("7.3.4+deb13-amd64", Source::Vmlinux),
];

fn fixture(kernel: &str, file: &str) -> PathBuf {
    msitrace_tests::btf_fixtures::path(kernel, file)
}

fn unxz(path: &Path) -> Vec<u8> {
    msitrace_tests::btf_fixtures::unxz(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A C prototype reduced to what is compared: the return type and each parameter's type,
/// spelled `struct irq_data *`, `void *`, `int`.
#[derive(Debug, PartialEq, Eq)]
struct Proto {
    ret: String,
    params: Vec<String>,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.ret, self.params.join(", "))
    }
}

/// `struct irq_data*` and `struct  irq_data *` alike become `struct irq_data *`.
fn norm_type(t: &str) -> String {
    let spaced = t.replace('*', " * ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let mut s = words.join(" ");
    while s.contains("* *") {
        s = s.replace("* *", "**");
    }
    s
}

/// A parameter declaration without its name: `struct irq_data *data` -> `struct irq_data *`,
/// `int resp_packet_size` -> `int`.
fn param_type(decl: &str) -> String {
    let decl = decl.trim();
    if decl == "void" {
        return String::new();
    }
    let cut = decl
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let (ty, name) = decl.split_at(cut);
    assert!(
        !name.is_empty() && !ty.trim().is_empty(),
        "cannot split `{decl}` into a type and a name"
    );
    norm_type(ty)
}

/// The comment that opens hv_stub.c's block of declarations.
const BLOCK: &str = "Same prototypes as drivers/pci/controller/pci-hyperv.c";

/// The prototypes hv_stub.c declares for `names` in its block of declarations (from the line
/// with [`BLOCK`] to the next blank line; the whole text when it has no such line), each
/// declaration on one line: `void hv_irq_unmask(struct irq_data *data);`.
fn stub_prototypes(src: &str, names: &[&str]) -> Vec<(String, Proto)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = match src.lines().position(|l| l.contains(BLOCK)) {
        Some(i) => src
            .lines()
            .skip(i + 1)
            .take_while(|l| !l.trim().is_empty())
            .collect(),
        None => src.lines().collect(),
    };
    for line in lines {
        let line = line.trim();
        if !line.ends_with(");") || line.starts_with("static") {
            continue;
        }
        let Some(open) = line.find('(') else { continue };
        let head = &line[..open];
        let name = head
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if !names.contains(&name) {
            continue;
        }
        let ret = norm_type(&head[..head.len() - name.len()]);
        let params = line[open + 1..line.len() - 2]
            .split(',')
            .map(param_type)
            .filter(|p| !p.is_empty())
            .collect();
        out.push((name.to_string(), Proto { ret, params }));
    }
    out
}

/// A BTF type as C spells it (qualifiers and typedef names kept).
fn c_type(btf: &Btf, id: u32) -> String {
    if id == 0 {
        return "void".into();
    }
    let ty = btf
        .resolve_type_by_id(id)
        .unwrap_or_else(|e| panic!("type {id}: {e:#}"));
    let name = |t: &dyn BtfType| btf.resolve_name(t).unwrap_or_default();
    let inner = |t: &dyn BtfType| c_type(btf, t.get_type_id().unwrap_or(0));
    match &ty {
        Type::Void => "void".into(),
        Type::Int(t) => name(t),
        Type::Float(t) => name(t),
        Type::Typedef(t) => name(t),
        Type::Struct(t) => format!("struct {}", name(t)),
        Type::Union(t) => format!("union {}", name(t)),
        Type::Enum(t) => format!("enum {}", name(t)),
        Type::Enum64(t) => format!("enum {}", name(t)),
        Type::Fwd(t) => format!("struct {}", name(t)),
        Type::Ptr(t) => format!("{} *", inner(t)).replace("* *", "**"),
        Type::Const(t) => format!("const {}", inner(t)),
        Type::Volatile(t) => format!("volatile {}", inner(t)),
        Type::Restrict(t) => inner(t),
        Type::TypeTag(t) => inner(t),
        other => panic!("type {id}: unexpected {} in a prototype", other.name()),
    }
}

/// Every BTF_KIND_FUNC named `name` in `btf`, as prototypes.
fn btf_prototypes(btf: &Btf, name: &str) -> Vec<Proto> {
    btf.resolve_types_by_name(name)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t {
            Type::Func(f) => Some(f),
            _ => None,
        })
        .map(|f| {
            let proto = match btf.resolve_chained_type(&f) {
                Ok(Type::FuncProto(p)) => p,
                other => panic!("{name}: FUNC without a FUNC_PROTO ({other:?})"),
            };
            Proto {
                ret: norm_type(&c_type(btf, proto.return_type_id())),
                params: proto
                    .parameters
                    .iter()
                    .map(|p| norm_type(&c_type(btf, p.get_type_id().unwrap_or(0))))
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn the_stub_declares_each_function_once_with_a_parsable_prototype() {
    let src =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-module/hv_stub.c"))
            .unwrap();
    let names: Vec<&str> = ALWAYS.iter().chain(WHERE_PRESENT).copied().collect();
    let protos = stub_prototypes(&src, &names);
    for n in &names {
        assert_eq!(
            protos.iter().filter(|(p, _)| p == n).count(),
            1,
            "hv_stub.c must declare {n} exactly once, on one line, in its block of pci-hyperv \
             prototypes: {protos:?}"
        );
    }
    let unmask = &protos.iter().find(|(n, _)| n == "hv_irq_unmask").unwrap().1;
    assert_eq!(unmask.to_string(), "void (struct irq_data *)");
    let compl = &protos
        .iter()
        .find(|(n, _)| n == "hv_pci_compose_compl")
        .unwrap()
        .1;
    assert_eq!(
        compl.to_string(),
        "void (void *, struct pci_response *, int)"
    );
}

#[test]
fn stub_prototypes_match_the_real_pci_hyperv_of_every_fixture_kernel() {
    let src =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-module/hv_stub.c"))
            .unwrap();
    let names: Vec<&str> = ALWAYS.iter().chain(WHERE_PRESENT).copied().collect();
    let stub = stub_prototypes(&src, &names);
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (kernel, source) in KERNELS {
        let vmlinux_raw = unxz(&fixture(kernel, "vmlinux.btf.xz"));
        let vmlinux = Btf::from_bytes(&vmlinux_raw).unwrap_or_else(|e| panic!("{kernel}: {e:#}"));
        let module;
        let btf = match source {
            Source::None(why) => {
                eprintln!("{kernel}: skipped: {why}");
                continue;
            }
            Source::Vmlinux => &vmlinux,
            Source::Module => {
                let raw = unxz(&fixture(kernel, "pci_hyperv.btf.xz"));
                module = Btf::from_split_bytes(&raw, &vmlinux)
                    .unwrap_or_else(|e| panic!("{kernel} pci_hyperv: {e:#}"));
                &module
            }
        };
        let mut absent = Vec::new();
        for (name, want) in &stub {
            let real = btf_prototypes(btf, name);
            if real.is_empty() {
                assert!(
                    !ALWAYS.contains(&name.as_str()),
                    "{kernel}: pci-hyperv's BTF has no {name}, a chip callback every \
                     pci-hyperv has: is this the right BTF?"
                );
                absent.push(name.as_str());
                continue;
            }
            for got in &real {
                compared += 1;
                if got != want {
                    mismatches.push(format!(
                        "{kernel} {name}: pci-hyperv has {got}, hv_stub.c declares {want}"
                    ));
                }
            }
        }
        eprintln!(
            "{kernel}: compared {} ({}){}",
            stub.len() - absent.len(),
            match source {
                Source::Vmlinux => "vmlinux BTF: pci-hyperv built in",
                _ => "pci_hyperv module BTF",
            },
            if absent.is_empty() {
                String::new()
            } else {
                format!("; not in this kernel: {}", absent.join(", "))
            }
        );
    }
    assert!(
        mismatches.is_empty(),
        "hv_stub's prototypes drifted from the real driver's:\n{}",
        mismatches.join("\n")
    );
    assert!(
        compared >= 3 * ALWAYS.len(),
        "only {compared} prototypes compared"
    );
}

#[test]
fn a_drifted_prototype_is_told_apart() {
    let src = "void hv_irq_unmask(struct irq_data *data);\n\
               int hv_pci_resume(struct hv_device *hdev, int extra);\n";
    let p = stub_prototypes(src, &["hv_irq_unmask", "hv_pci_resume"]);
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].1.params, ["struct hv_device *", "int"]);
    let real = Proto {
        ret: "int".into(),
        params: vec!["struct hv_device *".into()],
    };
    assert_ne!(p[1].1, real);
}
