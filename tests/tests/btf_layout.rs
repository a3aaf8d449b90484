//! The BTF layout resolver against real kernels: Debian's 5.10, 6.1, 6.12 and 7.3 (BTF extracted
//! into tests/fixtures/btf, see its README), and the running kernel, whose tracepoint record
//! offsets are checked against what tracefs says.
//!
//! The expected offsets of the fixtures were read with `pahole -F btf` (dwarves 1.24) from the
//! same BTF, not computed by the resolver.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Instant,
};

use msitrace_tests::{Scenario, Sleep, Vector};
use tracer::btf::Btf;
use tracer::btf_layout::{self, FactState, LayoutError, ResolvedLayout};
use tracer::engine::gates::Gates;
use tracer::engine::{EngineConfig, RuleId};
use tracer_common::{Field, NUM_PROBES, SPAN_MAX, Span};

const K5_10: &str = "5.10.0-46-amd64";
const K6_1: &str = "6.1.0-56-amd64";
const K6_1_CLOUD: &str = "6.1.0-57-cloud-amd64";
const K6_12: &str = "6.12.117+deb12-amd64";
/// pci-hyperv and hv_vmbus built in: vmlinux BTF only.
const K7_3: &str = "7.3.4+deb13-amd64";

fn fixture(kernel: &str, file: &str) -> PathBuf {
    msitrace_tests::btf_fixtures::path(kernel, file)
}

fn unxz(path: &Path) -> Vec<u8> {
    msitrace_tests::btf_fixtures::unxz(path).unwrap_or_else(|e| panic!("{e}"))
}

/// One fixture kernel: its vmlinux BTF and the module BTF shipped beside it, each raw and
/// parsed. Decompressing and parsing take seconds in a debug build: each kernel is loaded once
/// and shared by the tests.
struct Kernel {
    vmlinux_raw: Vec<u8>,
    vmlinux: Btf,
    modules: Vec<(&'static str, Vec<u8>, Btf)>,
}

fn load(kernel: &str) -> Kernel {
    let vmlinux_raw = unxz(&fixture(kernel, "vmlinux.btf.xz"));
    let vmlinux =
        Btf::from_bytes(&vmlinux_raw).unwrap_or_else(|e| panic!("{kernel} vmlinux: {e:#}"));
    let modules = ["hv_vmbus", "pci_hyperv"]
        .into_iter()
        .filter_map(|m| {
            let path = fixture(kernel, &format!("{m}.btf.xz"));
            path.exists().then(|| {
                let raw = unxz(&path);
                let btf = Btf::from_split_bytes(&raw, &vmlinux)
                    .unwrap_or_else(|e| panic!("{kernel} {m}: {e:#}"));
                (m, raw, btf)
            })
        })
        .collect();
    Kernel {
        vmlinux_raw,
        vmlinux,
        modules,
    }
}

fn kernel(name: &'static str) -> &'static Kernel {
    static KERNELS: [(&str, OnceLock<Kernel>); 5] = [
        (K5_10, OnceLock::new()),
        (K6_1, OnceLock::new()),
        (K6_1_CLOUD, OnceLock::new()),
        (K6_12, OnceLock::new()),
        (K7_3, OnceLock::new()),
    ];
    let (_, cell) = KERNELS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fixture kernel {name}"));
    cell.get_or_init(|| load(name))
}

/// Resolve `k` with the BTF of `modules` (which must be among its fixtures) given.
fn resolve(k: &Kernel, modules: &[&str]) -> ResolvedLayout {
    let refs: Vec<(&str, &Btf)> = modules
        .iter()
        .map(|&m| {
            let (name, _, btf) = k
                .modules
                .iter()
                .find(|(n, _, _)| *n == m)
                .unwrap_or_else(|| panic!("no {m} fixture"));
            (*name, btf)
        })
        .collect();
    btf_layout::resolve(&k.vmlinux, &refs)
}

/// A `Layout` member by name (through serde, so the test names members as the reports do).
fn field(r: &ResolvedLayout, name: &str) -> Field {
    let json = serde_json::to_value(r.layout).expect("Layout serialises");
    serde_json::from_value(json[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (member, path that must resolve, off, size, bit_off, bit_len)
type Expect = (&'static str, &'static str, u32, u8, u8, u8);

fn check(kernel: &str, r: &ResolvedLayout, expected: &[Expect]) {
    for &(name, path, off, size, bit_off, bit_len) in expected {
        let report = r
            .report(name)
            .unwrap_or_else(|| panic!("{kernel}: no report {name}"));
        assert_eq!(
            report.path.as_deref(),
            Some(path),
            "{kernel} {name}: {report:?}"
        );
        let want = Field {
            off,
            size,
            bit_off,
            bit_len,
            present: 1,
        };
        assert_eq!(field(r, name), want, "{kernel} {name} ({path})");
    }
}

/// Identical on 5.10, 6.1 and 6.12 (pahole).
const COMMON: &[Expect] = &[
    ("irq_data_irq", "irq_data.irq", 4, 4, 0, 0),
    ("irq_data_hwirq", "irq_data.hwirq", 8, 8, 0, 0),
    ("irq_data_common", "irq_data.common", 16, 8, 0, 0),
    ("irq_data_chip", "irq_data.chip", 24, 8, 0, 0),
    ("irq_data_domain", "irq_data.domain", 32, 8, 0, 0),
    ("irq_data_chip_data", "irq_data.chip_data", 48, 8, 0, 0),
    (
        "irq_common_state",
        "irq_common_data.state_use_accessors",
        0,
        4,
        0,
        0,
    ),
    (
        "irq_common_msi_desc",
        "irq_common_data.msi_desc",
        16,
        8,
        0,
        0,
    ),
    ("irq_desc_irq_data", "irq_desc.irq_data", 40, 0, 0, 0),
    ("msi_msg_address_lo", "msi_msg.address_lo", 0, 4, 0, 0),
    ("msi_msg_address_hi", "msi_msg.address_hi", 4, 4, 0, 0),
    ("msi_msg_data", "msi_msg.data", 8, 4, 0, 0),
    ("device_kobj_name", "device.kobj.name", 0, 8, 0, 0),
    ("device_driver_data", "device.driver_data", 120, 8, 0, 0),
    (
        "tp_suspend_resume_action",
        "trace_event_raw_suspend_resume.action",
        8,
        8,
        0,
        0,
    ),
    (
        "tp_suspend_resume_val",
        "trace_event_raw_suspend_resume.val",
        16,
        4,
        0,
        0,
    ),
    (
        "tp_suspend_resume_start",
        "trace_event_raw_suspend_resume.start",
        20,
        1,
        0,
        0,
    ),
    (
        "tp_pm_start_device",
        "trace_event_raw_device_pm_callback_start.__data_loc_device",
        8,
        4,
        0,
        0,
    ),
    (
        "tp_pm_start_driver",
        "trace_event_raw_device_pm_callback_start.__data_loc_driver",
        12,
        4,
        0,
        0,
    ),
    (
        "tp_pm_start_pm_ops",
        "trace_event_raw_device_pm_callback_start.__data_loc_pm_ops",
        20,
        4,
        0,
        0,
    ),
    (
        "tp_pm_start_event",
        "trace_event_raw_device_pm_callback_start.event",
        24,
        4,
        0,
        0,
    ),
    (
        "tp_pm_end_device",
        "trace_event_raw_device_pm_callback_end.__data_loc_device",
        8,
        4,
        0,
        0,
    ),
    (
        "tp_pm_end_driver",
        "trace_event_raw_device_pm_callback_end.__data_loc_driver",
        12,
        4,
        0,
        0,
    ),
    (
        "tp_pm_end_error",
        "trace_event_raw_device_pm_callback_end.error",
        16,
        4,
        0,
        0,
    ),
    (
        "tp_vector_mod_irq",
        "trace_event_raw_vector_mod.irq",
        8,
        4,
        0,
        0,
    ),
    (
        "tp_vector_mod_vector",
        "trace_event_raw_vector_mod.vector",
        12,
        4,
        0,
        0,
    ),
    (
        "tp_vector_mod_cpu",
        "trace_event_raw_vector_mod.cpu",
        16,
        4,
        0,
        0,
    ),
    (
        "tp_vector_mod_prev_vector",
        "trace_event_raw_vector_mod.prev_vector",
        20,
        4,
        0,
        0,
    ),
    (
        "tp_vector_mod_prev_cpu",
        "trace_event_raw_vector_mod.prev_cpu",
        24,
        4,
        0,
        0,
    ),
    (
        "tp_vector_config_irq",
        "trace_event_raw_vector_config.irq",
        8,
        4,
        0,
        0,
    ),
    (
        "tp_vector_config_vector",
        "trace_event_raw_vector_config.vector",
        12,
        4,
        0,
        0,
    ),
    (
        "tp_vector_config_cpu",
        "trace_event_raw_vector_config.cpu",
        16,
        4,
        0,
        0,
    ),
    (
        "tp_vector_config_apicdest",
        "trace_event_raw_vector_config.apicdest",
        20,
        4,
        0,
        0,
    ),
    (
        "tp_vector_activate_irq",
        "trace_event_raw_vector_activate.irq",
        8,
        4,
        0,
        0,
    ),
    (
        "tp_vector_activate_is_managed",
        "trace_event_raw_vector_activate.is_managed",
        12,
        1,
        0,
        0,
    ),
    (
        "tp_vector_activate_can_reserve",
        "trace_event_raw_vector_activate.can_reserve",
        13,
        1,
        0,
        0,
    ),
    (
        "tp_vector_activate_reserve",
        "trace_event_raw_vector_activate.reserve",
        14,
        1,
        0,
        0,
    ),
    // A raw tracepoint's argument: argument 0 of TP_PROTO(int irq, struct irqaction *).
    (
        "tp_irq_handler_entry_irq",
        "btf_trace_irq_handler_entry.0",
        0,
        4,
        0,
        0,
    ),
];

/// The 5.17+ msi_desc (6.1 and 6.12 agree): mask cache under `pci.`, `msi_index` at the top.
const MSI_DESC_5_17: &[Expect] = &[
    ("msi_desc_irq", "msi_desc.irq", 0, 4, 0, 0),
    ("msi_desc_dev", "msi_desc.dev", 8, 8, 0, 0),
    ("msi_desc_msi_index", "msi_desc.msi_index", 72, 2, 0, 0),
    ("msi_desc_msi_mask", "msi_desc.pci.msi_mask", 80, 4, 0, 0),
    ("msi_desc_msix_ctrl", "msi_desc.pci.msix_ctrl", 80, 4, 0, 0),
    (
        "msi_desc_is_msix",
        "msi_desc.pci.msi_attrib.is_msix",
        84,
        1,
        0,
        1,
    ),
];

fn check_irqd(kernel: &str, r: &ResolvedLayout) {
    let l = &r.layout;
    assert_eq!(
        (
            l.irqd_irq_masked,
            l.irqd_irq_disabled,
            l.irqd_affinity_managed,
            l.irqd_managed_shutdown
        ),
        (1 << 17, 1 << 16, 1 << 21, 1 << 23),
        "{kernel}"
    );
}

#[test]
fn debian_5_10_uses_the_old_mask_cache() {
    let k = kernel(K5_10);
    assert!(k.modules.is_empty());
    let r = resolve(k, &[]);
    check(K5_10, &r, COMMON);
    check(
        K5_10,
        &r,
        &[
            ("msi_desc_irq", "msi_desc.irq", 16, 4, 0, 0),
            ("msi_desc_dev", "msi_desc.dev", 24, 8, 0, 0),
            // One `masked` word for both kinds, in an anonymous struct in an anonymous union.
            ("msi_desc_msi_mask", "msi_desc.masked", 80, 4, 0, 0),
            ("msi_desc_msix_ctrl", "msi_desc.masked", 80, 4, 0, 0),
            (
                "msi_desc_is_msix",
                "msi_desc.msi_attrib.is_msix",
                84,
                1,
                0,
                1,
            ),
            // 5.10's msi_desc also has `platform.msi_index`, in a named member: not taken.
            (
                "msi_desc_msi_index",
                "msi_desc.msi_attrib.entry_nr",
                86,
                2,
                0,
                0,
            ),
            ("pci_dev_dev", "pci_dev.dev", 200, 0, 0, 0),
            (
                "pci_dev_current_state",
                "pci_dev.current_state",
                152,
                4,
                0,
                0,
            ),
            // pahole: `msi_enabled:1 /* 2056:20 4 */`, i.e. bit 4 of byte 2058.
            ("pci_dev_msi_enabled", "pci_dev.msi_enabled", 2058, 1, 4, 1),
            (
                "pci_dev_msix_enabled",
                "pci_dev.msix_enabled",
                2058,
                1,
                5,
                1,
            ),
        ],
    );
    check_irqd(K5_10, &r);
    // Debian 5.10 has no module BTF (CONFIG_DEBUG_INFO_BTF_MODULES came in 5.11).
    let missing: Vec<&str> = r.missing().map(|f| f.name.as_str()).collect();
    assert_eq!(
        missing,
        ["hv_device_device", "hv_pcibus_state", "pci_response_status"]
    );
    let hv = r.report("hv_pcibus_state").expect("reported");
    assert_eq!(
        hv.reason.as_deref(),
        Some(
            "hv_pcibus_device.state: no struct hv_pcibus_device in the BTF of vmlinux; \
             no BTF for module pci_hyperv (not loaded?)"
        )
    );
    assert_eq!(r.layout.hv_pcibus_state, Field::ABSENT);
    assert_eq!(r.sources, ["vmlinux"]);
}

#[test]
fn debian_6_1_with_hyperv_modules() {
    let r = resolve(kernel(K6_1), &["hv_vmbus", "pci_hyperv"]);
    check(K6_1, &r, COMMON);
    check(K6_1, &r, MSI_DESC_5_17);
    check(
        K6_1,
        &r,
        &[
            ("pci_dev_dev", "pci_dev.dev", 208, 0, 0, 0),
            (
                "pci_dev_current_state",
                "pci_dev.current_state",
                160,
                4,
                0,
                0,
            ),
            // pahole: `/* 2120:20 4 */`
            ("pci_dev_msi_enabled", "pci_dev.msi_enabled", 2122, 1, 4, 1),
            (
                "pci_dev_msix_enabled",
                "pci_dev.msix_enabled",
                2122,
                1,
                5,
                1,
            ),
            ("hv_device_device", "hv_device.device", 40, 0, 0, 0),
            ("hv_pcibus_state", "hv_pcibus_device.state", 96, 4, 0, 0),
            // pahole: struct pci_response { struct vmpacket_descriptor hdr; s32 status; }
            ("pci_response_status", "pci_response.status", 16, 4, 0, 0),
        ],
    );
    check_irqd(K6_1, &r);
    assert_eq!(
        r.missing().count(),
        0,
        "{:?}",
        r.missing().collect::<Vec<_>>()
    );
    let source = |n: &str| r.report(n).and_then(|f| f.source.clone());
    assert_eq!(source("hv_device_device").as_deref(), Some("hv_vmbus"));
    assert_eq!(source("hv_pcibus_state").as_deref(), Some("pci_hyperv"));
    assert_eq!(source("msi_desc_msix_ctrl").as_deref(), Some("vmlinux"));
    assert_eq!(r.sources, ["vmlinux", "hv_vmbus", "pci_hyperv"]);
    assert_eq!(r.hv_pcibus_state_name(3), Some("hv_pcibus_removing"));
    assert_eq!(r.hv_pcibus_state_name(2), Some("hv_pcibus_installed"));
}

/// The cloud flavour (what Debian's Azure images boot) builds struct device without some
/// options, so everything placed after it moves: one more reason no offset is compiled in.
/// Every kernel of the matrix fetches each object a streaming record reads in one read (the
/// cost of a probe is mostly its helper calls), and each span holds its fields aligned.
/// tracer's BTF reader (types read in place, for msitrace's start) against btf-rs (every type
/// built as an owned value) on every type of every fixture kernel and its modules' split BTF:
/// kind, name, size or referenced type, members, enumerators and parameters.
#[test]
fn the_btf_reader_agrees_with_btf_rs_on_every_type_of_every_fixture() {
    use btf_rs::{BtfType, Type as R};
    use tracer::btf::Kind;
    for name in [K5_10, K6_1, K6_1_CLOUD, K6_12, K7_3] {
        let k = kernel(name);
        let rs_base = btf_rs::Btf::from_bytes(&k.vmlinux_raw).unwrap();
        let rs_modules: Vec<btf_rs::Btf> = k
            .modules
            .iter()
            .map(|(_, raw, _)| btf_rs::Btf::from_split_bytes(raw, &rs_base).unwrap())
            .collect();
        let mut objects = vec![("vmlinux", &k.vmlinux, &rs_base)];
        for ((m, _, btf), rs) in k.modules.iter().zip(&rs_modules) {
            objects.push((m, btf, rs));
        }
        let mut compared = 0usize;
        for (object, ours, rs) in &objects {
            let ids = ours.ids();
            assert!(
                rs.resolve_type_by_id(ids.end).is_err(),
                "{name} {object}: btf-rs has more types"
            );
            for id in ids {
                let t = ours.ty(id).unwrap();
                let r = rs.resolve_type_by_id(id).unwrap();
                let at = format!("{name} {object} type {id}");
                assert_eq!(t.kind.name(), r.name(), "{at}");
                let rname = r
                    .as_btf_type()
                    .map(|b| rs.resolve_name(b).unwrap_or_default());
                if let Some(rname) = rname {
                    assert_eq!(t.name().unwrap(), rname, "{at}");
                }
                match &r {
                    R::Int(i) => assert_eq!(t.size() as usize, i.size(), "{at}"),
                    R::Struct(s) | R::Union(s) => {
                        assert_eq!(t.size() as usize, s.size(), "{at}");
                        let ms: Vec<_> = t.members().collect();
                        assert_eq!(ms.len(), s.members.len(), "{at}");
                        for (m, rm) in ms.iter().zip(&s.members) {
                            assert_eq!(
                                ours.str_at(m.name_off).unwrap(),
                                rs.resolve_name(rm).unwrap(),
                                "{at}"
                            );
                            assert_eq!(m.type_id, rm.get_type_id().unwrap(), "{at}");
                            assert_eq!(m.bit_offset, rm.bit_offset(), "{at}");
                            assert_eq!(m.bitfield_size, rm.bitfield_size(), "{at}");
                        }
                    }
                    R::Enum(_) | R::Enum64(_) => {
                        let vs: Vec<_> = t
                            .enumerators()
                            .map(|(n, v)| (n.unwrap().to_string(), v))
                            .collect();
                        let rv: Vec<_> = match &r {
                            R::Enum(e) => e
                                .members
                                .iter()
                                .map(|m| {
                                    let v = if e.is_signed() {
                                        i64::from(m.val() as i32) as u64
                                    } else {
                                        u64::from(m.val())
                                    };
                                    (rs.resolve_name(m).unwrap(), v)
                                })
                                .collect(),
                            R::Enum64(e) => e
                                .members
                                .iter()
                                .map(|m| (rs.resolve_name(m).unwrap(), m.val()))
                                .collect(),
                            _ => unreachable!(),
                        };
                        assert_eq!(vs, rv, "{at}");
                    }
                    R::FuncProto(f) => {
                        assert_eq!(t.type_id(), f.return_type_id(), "{at}");
                        let ps: Vec<u32> = f
                            .parameters
                            .iter()
                            .map(|p| p.get_type_id().unwrap_or(0))
                            .collect();
                        assert_eq!(t.params(), ps, "{at}");
                    }
                    other => {
                        if let Some(b) = other.as_btf_type()
                            && let Ok(to) = b.get_type_id()
                            && !matches!(
                                other,
                                R::Array(_) | R::Var(_) | R::Datasec(_) | R::DeclTag(_)
                            )
                        {
                            assert_eq!(t.type_id(), to, "{at}");
                        }
                    }
                }
                compared += 1;
            }
        }
        // Lookups by name see the base first, then the module, as btf-rs's do.
        for (object, ours, rs) in &objects {
            for n in [
                "pci_dev",
                "hv_pcibus_device",
                "irq_data",
                "hv_pcibus_state",
                "btf_trace_irq_handler_entry",
            ] {
                let a: Vec<u32> = ours.types_by_name(n).iter().map(|t| t.id).collect();
                let b = rs.resolve_ids_by_name(n).unwrap_or_default();
                assert_eq!(a, b, "{name} {object}: {n}");
            }
        }
        assert!(
            objects[0]
                .1
                .types_by_name("pci_dev")
                .iter()
                .any(|t| t.kind == Kind::Struct)
        );
        assert!(compared > 50_000, "{name}: {compared} types");
    }
}

#[test]
fn every_fixture_kernel_reads_each_object_in_one_span() {
    let hv: &[&str] = &["hv_vmbus", "pci_hyperv"];
    for (name, modules) in [
        (K5_10, &[][..]),
        (K6_1, hv),
        (K6_1_CLOUD, hv),
        (K6_12, hv),
        (K7_3, &[][..]),
    ] {
        let l = resolve(kernel(name), modules).layout;
        for (what, span, fields) in l.span_groups() {
            // The bytes of the programs' buffer for each object (tracer-ebpf's vector.rs and
            // tracepoints.rs): a wider span would be read field by field.
            let buffer = match what {
                "irq_data" | "irq_common_data" => 64,
                "msi_desc" => 128,
                "msi_msg" => 16,
                _ => 32,
            };
            assert_ne!(span, Span::NONE, "{name}: {what} has no span");
            assert!(
                span.off % 8 == 0 && span.len <= SPAN_MAX && span.len <= buffer,
                "{name}: {what} {span:?} does not fit the program's {buffer} bytes"
            );
            for f in fields.iter().filter(|f| f.is_present()) {
                let size = u32::from(f.size);
                assert!(
                    f.off >= span.off && f.off + size <= span.off + span.len,
                    "{name}: {what}: {f:?} outside {span:?}"
                );
                assert_eq!(
                    (f.off - span.off) % size,
                    0,
                    "{name}: {what}: {f:?} unaligned"
                );
            }
        }
    }
}

#[test]
fn spans_leave_out_what_they_cannot_hold() {
    assert_eq!(Span::covering(&[]), Span::NONE);
    assert_eq!(Span::covering(&[Field::ABSENT]), Span::NONE);
    assert_eq!(
        Span::covering(&[Field::at(12, 4), Field::ABSENT, Field::at(40, 8)]),
        Span { off: 8, len: 40 }
    );
    // Wider than the programs' buffer: read field by field.
    assert_eq!(
        Span::covering(&[Field::at(0, 8), Field::at(SPAN_MAX, 8)]),
        Span::NONE
    );
    // A field not aligned to its size within the span (stack reads must be aligned).
    assert_eq!(
        Span::covering(&[Field::at(8, 8), Field::at(18, 4)]),
        Span::NONE
    );
}

#[test]
fn debian_6_1_cloud_places_the_bus_state_where_its_own_btf_says() {
    let cloud = resolve(kernel(K6_1_CLOUD), &["hv_vmbus", "pci_hyperv"]);
    let generic = resolve(kernel(K6_1), &["hv_vmbus", "pci_hyperv"]);
    assert_eq!(field(&cloud, "hv_pcibus_state"), Field::at(88, 4));
    assert_eq!(field(&generic, "hv_pcibus_state"), Field::at(96, 4));
    assert_eq!(
        cloud.missing().count(),
        0,
        "{:?}",
        cloud.missing().collect::<Vec<_>>()
    );
    assert_eq!(cloud.hv_pcibus_state_name(3), Some("hv_pcibus_removing"));
}

#[test]
fn debian_6_12_has_pci_inside_an_anonymous_union() {
    let r = resolve(kernel(K6_12), &["hv_vmbus", "pci_hyperv"]);
    check(K6_12, &r, COMMON);
    check(K6_12, &r, MSI_DESC_5_17);
    check(
        K6_12,
        &r,
        &[
            ("pci_dev_dev", "pci_dev.dev", 200, 0, 0, 0),
            (
                "pci_dev_current_state",
                "pci_dev.current_state",
                160,
                4,
                0,
                0,
            ),
            // pahole: `/* 2128:20 4 */`
            ("pci_dev_msi_enabled", "pci_dev.msi_enabled", 2130, 1, 4, 1),
            (
                "pci_dev_msix_enabled",
                "pci_dev.msix_enabled",
                2130,
                1,
                5,
                1,
            ),
            ("hv_device_device", "hv_device.device", 40, 0, 0, 0),
            ("hv_pcibus_state", "hv_pcibus_device.state", 96, 4, 0, 0),
            // pahole: struct pci_response { struct vmpacket_descriptor hdr; s32 status; }
            ("pci_response_status", "pci_response.status", 16, 4, 0, 0),
        ],
    );
    check_irqd(K6_12, &r);
    assert_eq!(
        r.missing().count(),
        0,
        "{:?}",
        r.missing().collect::<Vec<_>>()
    );
}

#[test]
fn hv_device_comes_from_pci_hyperv_when_hv_vmbus_btf_is_not_given() {
    let r = resolve(kernel(K6_12), &["pci_hyperv"]);
    let hv = r.report("hv_device_device").expect("reported");
    assert!(hv.present, "{hv:?}");
    assert_eq!(hv.source.as_deref(), Some("pci_hyperv"));
    assert_eq!(field(&r, "hv_device_device"), Field::at(40, 0));
}

#[test]
fn without_module_btf_only_the_hyperv_members_are_missing() {
    let r = resolve(kernel(K6_1), &[]);
    let missing: Vec<&str> = r.missing().map(|f| f.name.as_str()).collect();
    assert_eq!(
        missing,
        ["hv_device_device", "hv_pcibus_state", "pci_response_status"]
    );
    let hv = r.report("hv_device_device").expect("reported");
    assert_eq!(
        hv.reason.as_deref(),
        Some(
            "hv_device.device: no struct hv_device in the BTF of vmlinux; \
             no BTF for module hv_vmbus, pci_hyperv (not loaded?)"
        )
    );
    assert!(r.hv_pcibus_states.is_empty());
}

#[test]
fn resolve_files_reads_raw_and_split_btf() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("btf_layout");
    fs::create_dir_all(&dir).expect("tmp dir");
    let vmlinux = dir.join("vmlinux-6.1");
    let module = dir.join("pci_hyperv-6.1");
    let k = kernel(K6_1);
    let (_, pci_hyperv, _) = k
        .modules
        .iter()
        .find(|(n, _, _)| *n == "pci_hyperv")
        .expect("6.1 has pci_hyperv BTF");
    fs::write(&vmlinux, &k.vmlinux_raw).expect("write");
    fs::write(&module, pci_hyperv).expect("write");

    let r = btf_layout::resolve_files(&vmlinux, &[("pci_hyperv", &module)]).expect("resolves");
    assert!(r.is_present("hv_pcibus_state"));
    assert!(r.is_present("hv_device_device"));
    assert_eq!(r.sources, ["vmlinux", "pci_hyperv"]);

    // Module BTF is split BTF: parsed on its own it is not valid.
    let err = btf_layout::resolve_files(&module, &[]).expect_err("split BTF alone");
    assert!(matches!(err, LayoutError::Parse { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn btf_facts_say_whether_pci_hyperv_has_the_state_lock_series() {
    for k in [K6_1, K6_12] {
        let r = resolve(kernel(k), &["hv_vmbus", "pci_hyperv"]);
        for name in [btf_layout::HV_STATE_LOCK, btf_layout::HV_RESTORE_MSI_MSG] {
            let f = r.facts.iter().find(|f| f.name == name).expect("reported");
            assert_eq!(f.state, FactState::Present, "{k} {f:?}");
            assert_eq!(f.source.as_deref(), Some("pci_hyperv"), "{k} {f:?}");
        }
    }
    // 5.10 has no module BTF, and a pci_hyperv that is not loaded gives none: unknown, not
    // absent, and the reason says why.
    for (k, modules) in [(K5_10, &[][..]), (K6_1, &["hv_vmbus"][..])] {
        let r = resolve(kernel(k), modules);
        assert_eq!(r.fact(btf_layout::HV_STATE_LOCK), FactState::Unknown, "{k}");
        let f = r
            .facts
            .iter()
            .find(|f| f.name == btf_layout::HV_STATE_LOCK)
            .expect("reported");
        assert!(
            f.reason
                .as_deref()
                .is_some_and(|r| r.contains("no BTF for module pci_hyperv")),
            "{f:?}"
        );
    }
}

/// The rules not evaluated on a fixture kernel, every probe attached, its BTF facts given.
fn gated(release: &str, k: &'static str, modules: &[&str]) -> Vec<(RuleId, String)> {
    let facts = resolve(kernel(k), modules).facts;
    Gates::new(release, &EngineConfig::all_probes_attached(), &facts)
        .static_not_evaluated(&[0; NUM_PROBES as usize])
        .into_iter()
        .map(|n| (n.rule, n.reason))
        .collect()
}

#[test]
fn h5_is_gated_by_what_pci_hyperv_btf_shows_not_by_the_version() {
    // Debian 6.1 carries hv_irq_unmask's early return (2738d5ab7929, upstream 6.4) with the
    // state_lock series: its BTF shows hv_pcibus_device.state_lock, so H5 is evaluated.
    let ne = gated(K6_1, K6_1, &["hv_vmbus", "pci_hyperv"]);
    assert!(ne.is_empty(), "{ne:?}");
    let ne = gated(K6_12, K6_12, &["hv_vmbus", "pci_hyperv"]);
    assert!(ne.is_empty(), "{ne:?}");
    // Without pci_hyperv's BTF the version has to decide, and the reason says why.
    let ne = gated(K5_10, K5_10, &[]);
    let h5: Vec<&String> = ne
        .iter()
        .filter(|n| n.0 == RuleId::H5)
        .map(|n| &n.1)
        .collect();
    assert_eq!(h5.len(), 1, "{ne:?}");
    assert!(h5[0].contains("hv_pcibus_device.state_lock"), "{}", h5[0]);
    assert!(h5[0].contains("before 6.4"), "{}", h5[0]);
    assert!(!ne.iter().any(|n| n.0 == RuleId::H4), "{ne:?}");
}

#[test]
fn h4_is_gated_by_what_the_btf_shows_of_the_msi_parent_series() {
    // Debian's 7.3 builds pci-hyperv into vmlinux, whose BTF has hv_pcie_init_dev_msi_info
    // (the 6.17 MSI parent series): H4 is not evaluated, and the reason names the fact.
    let new = gated(K7_3, K7_3, &[]);
    let h4: Vec<&String> = new
        .iter()
        .filter(|n| n.0 == RuleId::H4)
        .map(|n| &n.1)
        .collect();
    assert_eq!(h4.len(), 1, "{new:?}");
    assert!(
        h4[0].contains("hv_pcie_init_dev_msi_info") && !h4[0].contains("version"),
        "{}",
        h4[0]
    );
    // 6.12's pci_hyperv has no such function: evaluated even under a 6.17 version string (a
    // vendor kernel numbered past the series without it), so the fact, not the number, decides.
    for release in [K6_12, "6.17.1"] {
        let old = gated(release, K6_12, &["hv_vmbus", "pci_hyperv"]);
        assert!(!old.iter().any(|n| n.0 == RuleId::H4), "{release}: {old:?}");
    }
    // 6.12 without pci_hyperv's BTF: no fact, and 6.12 is before the series.
    let unknown = gated(K6_12, K6_12, &["hv_vmbus"]);
    assert!(!unknown.iter().any(|n| n.0 == RuleId::H4), "{unknown:?}");
}

#[test]
fn h5_fires_on_debian_6_1_given_its_btf_facts() {
    let v = Vector::msix(46, "0000:00:09.0", 1);
    let mut s = Scenario::new(K6_1).seed_vector(v, Some("gpu"), Some(0), 1);
    s.btf_facts = resolve(kernel(K6_1), &["hv_vmbus", "pci_hyperv"]).facts;
    s.suspend_devices(Sleep::S3)
        .sleep(Sleep::S3)
        .resume_noirq(Sleep::S3, |s| {
            s.hv_unmask_with_chip_data(v, Some(0));
        });
    let out = s.run();
    assert_eq!(out.fired(), vec![(RuleId::H5, Some(46))]);
    assert!(out.not_evaluated(RuleId::H5).is_empty());
    // The same trace without the facts (an older recording): the version decides.
    s.btf_facts = Vec::new();
    let out = s.run();
    assert_eq!(out.fired(), vec![]);
    assert!(out.not_evaluated(RuleId::H5)[0].contains("before 6.4"));
}

/// Where tracefs is, mounting it if it is not (as root).
fn tracefs_events() -> Result<PathBuf, String> {
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    if let Some(dir) = candidates
        .iter()
        .map(|d| Path::new(d).join("events"))
        .find(|d| d.is_dir())
    {
        return Ok(dir);
    }
    let mounted = Command::new("mount")
        .args(["-t", "tracefs", "nodev", candidates[0]])
        .status()
        .is_ok_and(|s| s.success());
    let events = Path::new(candidates[0]).join("events");
    if mounted && events.is_dir() {
        Ok(events)
    } else {
        Err("tracefs is not mounted and `mount -t tracefs nodev /sys/kernel/tracing` failed".into())
    }
}

/// The `field:<decl> <name>; offset:N; size:M;` lines of an event's format file.
fn format_fields(format: &str) -> Vec<(String, u32, u32)> {
    format
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(';').map(str::trim);
            let decl = parts.next()?.strip_prefix("field:")?;
            let name = decl.rsplit(' ').next()?;
            let name = name.split('[').next()?.to_string();
            let off = parts.next()?.strip_prefix("offset:")?.parse().ok()?;
            let size = parts.next()?.strip_prefix("size:")?.parse().ok()?;
            Some((name, off, size))
        })
        .collect()
}

/// Layout member prefix → the record struct and the events that use it.
const TRACEPOINTS: &[(&str, &str, &[&str])] = &[
    (
        "tp_suspend_resume_",
        "trace_event_raw_suspend_resume",
        &["power/suspend_resume"],
    ),
    (
        "tp_pm_start_",
        "trace_event_raw_device_pm_callback_start",
        &["power/device_pm_callback_start"],
    ),
    (
        "tp_pm_end_",
        "trace_event_raw_device_pm_callback_end",
        &["power/device_pm_callback_end"],
    ),
    (
        "tp_vector_mod_",
        "trace_event_raw_vector_mod",
        &["irq_vectors/vector_update", "irq_vectors/vector_clear"],
    ),
    (
        "tp_vector_config_",
        "trace_event_raw_vector_config",
        &["irq_vectors/vector_config"],
    ),
    (
        "tp_vector_activate_",
        "trace_event_raw_vector_activate",
        &[
            "irq_vectors/vector_activate",
            "irq_vectors/vector_deactivate",
        ],
    ),
];

#[test]
fn running_kernel_matches_tracefs() {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("SKIP running_kernel_matches_tracefs: /sys/kernel/btf/vmlinux is missing");
        return;
    }
    let start = Instant::now();
    let r = btf_layout::resolve_running().expect("the running kernel's BTF resolves");
    let total = start.elapsed();
    let start = Instant::now();
    let vmlinux = Btf::from_file("/sys/kernel/btf/vmlinux").expect("parses");
    let parse = start.elapsed();
    let start = Instant::now();
    let alone = btf_layout::resolve(&vmlinux, &[]);
    let lookups = start.elapsed();
    eprintln!(
        "resolve_running: {total:?} (vmlinux parse {parse:?}, resolve {lookups:?}), sources {:?}",
        r.sources
    );
    if r.sources == ["vmlinux"] {
        assert_eq!(alone.layout, r.layout);
    }
    for f in r.missing() {
        eprintln!("  absent {}: {}", f.name, f.reason.as_deref().unwrap_or(""));
    }
    // Every kernel msitrace supports (≥5.10, CONFIG_PCI_MSI, x86) has these.
    for name in [
        "irq_data_irq",
        "irq_data_chip_data",
        "irq_common_msi_desc",
        "irq_desc_irq_data",
        "msi_desc_irq",
        "msi_desc_msix_ctrl",
        "msi_desc_is_msix",
        "msi_msg_address_lo",
        "device_kobj_name",
        "pci_dev_msix_enabled",
        "irqd_irq_masked",
    ] {
        assert!(r.is_present(name), "{name}: {:?}", r.report(name));
    }

    let events = match tracefs_events() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("SKIP tracefs cross-check: {why}");
            return;
        }
    };
    // Raw tracepoint arguments have no record to compare with: the prototype is checked
    // against the tracepoint's own fields instead (`int irq` in its format).
    let irq_arg = field(&r, "tp_irq_handler_entry_irq");
    assert_eq!((irq_arg.off, irq_arg.size), (0, 4), "{irq_arg:?}");
    let format = fs::read_to_string(events.join("irq/irq_handler_entry/format"))
        .expect("irq/irq_handler_entry/format");
    assert!(
        format_fields(&format)
            .iter()
            .any(|(n, _, size)| n == "irq" && *size == 4),
        "irq_handler_entry has no 4-byte irq field:\n{format}"
    );
    let mut compared = 0;
    for report in r
        .fields
        .iter()
        .filter(|f| f.name.starts_with("tp_") && f.name != "tp_irq_handler_entry_irq")
    {
        let &(_, record, tps) = TRACEPOINTS
            .iter()
            .find(|(prefix, _, _)| report.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("{}: add its tracepoint to TRACEPOINTS", report.name));
        let Some(path) = report.path.as_deref() else {
            // Absent from BTF: then the kernel has no such event either.
            for tp in tps {
                assert!(
                    !events.join(tp).exists(),
                    "{}: absent from BTF ({:?}) but tracefs has {tp}",
                    report.name,
                    report.reason
                );
            }
            continue;
        };
        let member = path
            .strip_prefix(record)
            .and_then(|m| m.strip_prefix('.'))
            .unwrap_or_else(|| panic!("{}: {path} is not in {record}", report.name));
        let member = member.strip_prefix("__data_loc_").unwrap_or(member);
        let f = field(&r, &report.name);
        for tp in tps {
            let format_path = events.join(tp).join("format");
            let format = fs::read_to_string(&format_path)
                .unwrap_or_else(|e| panic!("{}: {e}", format_path.display()));
            let (_, off, size) = format_fields(&format)
                .into_iter()
                .find(|(n, _, _)| n == member)
                .unwrap_or_else(|| panic!("{tp} has no field {member}"));
            assert_eq!(
                (f.off, u32::from(f.size)),
                (off, size),
                "{} ({path}) against {tp}",
                report.name
            );
            compared += 1;
        }
    }
    eprintln!("tracefs cross-check: {compared} field/event pairs agree");
    assert!(compared > 0, "no tracepoint field was compared");
}

/// BTF as the symbol table of last resort (when /proc/kallsyms and tracefs are hidden): the
/// hooks' functions of the fixture kernels are found in the right object, the module's only
/// through its split BTF; on 7.3, where pci-hyperv is built in, in vmlinux.
#[test]
fn btf_function_names_place_each_hook_in_its_object() {
    for name in [K6_1, K6_12, K7_3] {
        let k = kernel(name);
        let dir =
            std::env::temp_dir().join(format!("msitrace-btf-names-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinux"), &k.vmlinux_raw).unwrap();
        for (m, raw, _) in &k.modules {
            fs::write(dir.join(m), raw).unwrap();
        }
        let names = btf_layout::function_names(&dir, |_| true).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert!(
            names.unreadable.is_empty(),
            "{name}: {:?}",
            names.unreadable
        );
        let module_of = |f: &str| {
            names
                .functions
                .iter()
                .find(|(n, _)| n == f)
                .map(|(_, m)| m.as_deref())
        };
        for f in [
            "pci_restore_msi_state",
            "__pci_write_msi_msg",
            "irq_migrate_all_off_this_cpu",
            "irq_do_set_affinity",
        ] {
            assert_eq!(module_of(f), Some(None), "{name}: {f}");
        }
        let hv_object = if name == K7_3 {
            None
        } else {
            Some("pci_hyperv")
        };
        for f in [
            "hv_compose_msi_msg",
            "hv_irq_unmask",
            "hv_pci_resume",
            "hv_pci_compose_compl",
        ] {
            assert_eq!(module_of(f), Some(hv_object), "{name}: {f}");
        }
        // The per-device MSI domains' mask callbacks came in 6.2.
        for f in [
            "pci_irq_mask_msi",
            "pci_irq_unmask_msi",
            "pci_irq_mask_msix",
            "pci_irq_unmask_msix",
        ] {
            let want = if name == K6_1 { None } else { Some(None) };
            assert_eq!(module_of(f), want, "{name}: {f}");
        }
        // Inlined into irq_migrate_all_off_this_cpu on both kernels: BTF, like kallsyms, has
        // no out-of-line copy to describe.
        assert_eq!(module_of("migrate_one_irq"), None, "{name}");
    }
}
