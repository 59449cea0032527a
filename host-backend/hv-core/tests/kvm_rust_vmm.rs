//! Checks `hv_core::kvm_api` against the rust-vmm crates pvrs-vmm talks
//! to KVM (and so to `/dev/pvrs`) with: `kvm-bindings` for the structs and
//! constants, `kvm-ioctls` for the ioctl numbers, at the versions of
//! `host-backend/Cargo.lock`.  If the VMM and the module disagreed on a
//! number or a size, the module would see unknown commands or short
//! buffers; this test makes that a build failure instead.
//!
//! `kvm-ioctls` keeps its ioctl numbers private (`ioctl_*_nr!` lines in
//! `src/kvm_ioctls.rs`), so the test reads that source file, found with
//! `cargo metadata`, and evaluates each line with `vmm-sys-util`'s own
//! `ioctl_expr` and the size of the named `kvm-bindings` struct: the same
//! inputs and arithmetic the VMM's build uses.  The constants are compared
//! by name with the `pub const` lines of `kvm-bindings`' x86-64 bindings
//! wherever both define a name (kvm-bindings follows an older kernel, so
//! some 6.12 names are missing there).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

use hv_core::kvm_api::constants::{
    KVM_MAX_CPUID_ENTRIES, LINUX_CONSTANTS, MAX_IO_MSRS, SYNC_REGS_SIZE_BYTES,
};
use hv_core::kvm_api::ioctl::IOCTLS;
use hv_core::kvm_api::layout as ours;
use hv_core::kvm_api::run;
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

/// The source directory of a registry dependency at the version of
/// `host-backend/Cargo.lock` (which pvrs-vmm is built with), in the cargo
/// registry cache the build unpacked it to.
fn package_source(package: &str) -> PathBuf {
    let lock_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).expect("reading host-backend/Cargo.lock");
    let versions: Vec<&str> = lock
        .split("[[package]]")
        .filter(|entry| entry.contains(&format!("name = \"{package}\"\n")))
        .filter_map(|entry| entry.split("version = \"").nth(1)?.split('"').next())
        .collect();
    let [version] = versions[..] else {
        panic!("expected one {package} in Cargo.lock, found {versions:?}");
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let registries = std::fs::read_dir(cargo_home.join("registry/src"))
        .expect("the cargo registry cache (run cargo build first)");
    registries
        .filter_map(|registry| Some(registry.ok()?.path().join(format!("{package}-{version}"))))
        .find(|path| path.is_dir())
        .unwrap_or_else(|| panic!("{package} {version} is not unpacked in the registry cache"))
}

/// The size of each `kvm-bindings` type that `kvm_ioctls.rs` names in an
/// ioctl this mirror knows.
fn binding_sizes() -> BTreeMap<&'static str, usize> {
    use kvm_bindings::*;
    BTreeMap::from([
        ("kvm_msr_list", size_of::<kvm_msr_list>()),
        ("kvm_cpuid2", size_of::<kvm_cpuid2>()),
        ("kvm_dirty_log", size_of::<kvm_dirty_log>()),
        (
            "kvm_userspace_memory_region",
            size_of::<kvm_userspace_memory_region>(),
        ),
        (
            "kvm_userspace_memory_region2",
            size_of::<kvm_userspace_memory_region2>(),
        ),
        ("u64", size_of::<u64>()),
        ("kvm_irq_level", size_of::<kvm_irq_level>()),
        (
            "kvm_coalesced_mmio_zone",
            size_of::<kvm_coalesced_mmio_zone>(),
        ),
        ("kvm_irq_routing", size_of::<kvm_irq_routing>()),
        ("kvm_irqfd", size_of::<kvm_irqfd>()),
        ("kvm_pit_config", size_of::<kvm_pit_config>()),
        ("kvm_ioeventfd", size_of::<kvm_ioeventfd>()),
        ("kvm_clock_data", size_of::<kvm_clock_data>()),
        ("kvm_msi", size_of::<kvm_msi>()),
        ("kvm_regs", size_of::<kvm_regs>()),
        ("kvm_sregs", size_of::<kvm_sregs>()),
        ("kvm_interrupt", size_of::<kvm_interrupt>()),
        ("kvm_msrs", size_of::<kvm_msrs>()),
        ("kvm_signal_mask", size_of::<kvm_signal_mask>()),
        ("kvm_fpu", size_of::<kvm_fpu>()),
        ("kvm_lapic_state", size_of::<kvm_lapic_state>()),
        ("kvm_mp_state", size_of::<kvm_mp_state>()),
        ("kvm_vcpu_events", size_of::<kvm_vcpu_events>()),
        ("kvm_debugregs", size_of::<kvm_debugregs>()),
        ("kvm_enable_cap", size_of::<kvm_enable_cap>()),
        ("kvm_xcrs", size_of::<kvm_xcrs>()),
        ("kvm_irqchip", size_of::<kvm_irqchip>()),
        ("kvm_pit_state2", size_of::<kvm_pit_state2>()),
    ])
}

/// One `ioctl_*_nr!(NAME, KVMIO, NR[, TYPE]);` of `kvm_ioctls.rs`.
struct RustVmmIoctl {
    name: String,
    direction: u32,
    number: u32,
    argument_type: Option<String>,
}

fn parse_number(text: &str) -> u32 {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .unwrap_or_else(|_| panic!("ioctl number {text:?}"))
}

fn rust_vmm_ioctls(source: &str) -> Vec<RustVmmIoctl> {
    let mut found = Vec::new();
    for (macro_name, direction) in [
        ("ioctl_io_nr!(", _IOC_NONE),
        ("ioctl_ior_nr!(", _IOC_READ),
        ("ioctl_iow_nr!(", _IOC_WRITE),
        ("ioctl_iowr_nr!(", _IOC_READ | _IOC_WRITE),
    ] {
        for invocation in source.split(macro_name).skip(1) {
            let arguments = invocation.split(')').next().unwrap();
            let parts: Vec<&str> = arguments
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .collect();
            assert_eq!(parts.get(1), Some(&"KVMIO"), "{macro_name}{arguments}");
            found.push(RustVmmIoctl {
                name: parts[0].to_string(),
                direction,
                number: parse_number(parts[2]),
                argument_type: parts.get(3).map(|part| part.to_string()),
            });
        }
    }
    found
}

#[test]
fn ioctl_numbers_match_kvm_ioctls() {
    let source_file = package_source("kvm-ioctls").join("src/kvm_ioctls.rs");
    let source = std::fs::read_to_string(&source_file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", source_file.display()));
    let sizes = binding_sizes();
    let theirs = rust_vmm_ioctls(&source);
    assert!(theirs.len() > 60, "parsed only {} ioctls", theirs.len());

    let mut compared = Vec::new();
    let mut mismatches = Vec::new();
    for ours in IOCTLS {
        // A name may be declared once per architecture; the x86 one is the
        // one whose argument type we know (or one without argument).
        let candidates: Vec<u64> = theirs
            .iter()
            .filter(|theirs| theirs.name == ours.name)
            .filter_map(|theirs| {
                let size = match &theirs.argument_type {
                    None => 0,
                    Some(name) => *sizes.get(name.as_str())?,
                };
                Some(ioctl_expr(theirs.direction, 0xae, theirs.number, size as u32) as u64)
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        compared.push(ours.name);
        if !candidates.contains(&u64::from(ours.command)) {
            mismatches.push(format!(
                "{}: kvm-ioctls {candidates:#x?}, kvm_api {:#x}",
                ours.name, ours.command
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Everything else is compared: kvm-ioctls has no wrapper for these.
    let not_in_kvm_ioctls: Vec<&str> = IOCTLS
        .iter()
        .map(|info| info.name)
        .filter(|name| !compared.contains(name))
        .collect();
    assert_eq!(not_in_kvm_ioctls, NOT_IN_KVM_IOCTLS);
    println!("{} ioctl numbers equal kvm-ioctls'", compared.len());
}

/// The mirrored ioctls `kvm-ioctls` 0.25 does not declare.
const NOT_IN_KVM_IOCTLS: [&str; 4] = [
    "KVM_IRQ_LINE_STATUS",
    "KVM_INTERRUPT",
    "KVM_SET_SIGNAL_MASK",
    "KVM_GET_SUPPORTED_HV_CPUID",
];

#[test]
fn constants_match_kvm_bindings() {
    let bindings_file = package_source("kvm-bindings").join("src/x86_64/bindings.rs");
    let bindings = std::fs::read_to_string(&bindings_file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", bindings_file.display()));
    let mut theirs = BTreeMap::new();
    for line in bindings.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some(value) = rest.split_once('=').map(|(_, value)| value.trim()) else {
            continue;
        };
        let value = value.trim_end_matches(';');
        let parsed = if let Some(negative) = value.strip_prefix('-') {
            negative.parse::<i64>().ok().map(|v| (-v) as u64)
        } else {
            value.parse::<u64>().ok()
        };
        if let Some(parsed) = parsed {
            theirs.insert(name.trim().to_string(), parsed);
        }
    }
    assert!(theirs.len() > 500, "parsed only {} constants", theirs.len());

    let mut compared = 0;
    let mut mismatches = Vec::new();
    for &(name, value, bits) in LINUX_CONSTANTS {
        let Some(&their_value) = theirs.get(name) else {
            continue;
        };
        compared += 1;
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        if their_value & mask != value {
            mismatches.push(format!(
                "{name}: kvm-bindings {their_value:#x}, kvm_api {value:#x}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(compared > 300, "compared only {compared} constants");
    println!("{compared} constants equal kvm-bindings'");
}

#[test]
fn struct_sizes_match_kvm_bindings() {
    use kvm_bindings as theirs;
    let pairs = [
        (size_of::<ours::kvm_regs>(), size_of::<theirs::kvm_regs>()),
        (
            size_of::<ours::kvm_segment>(),
            size_of::<theirs::kvm_segment>(),
        ),
        (
            size_of::<ours::kvm_dtable>(),
            size_of::<theirs::kvm_dtable>(),
        ),
        (size_of::<ours::kvm_sregs>(), size_of::<theirs::kvm_sregs>()),
        (size_of::<ours::kvm_fpu>(), size_of::<theirs::kvm_fpu>()),
        (
            size_of::<ours::kvm_userspace_memory_region>(),
            size_of::<theirs::kvm_userspace_memory_region>(),
        ),
        (
            size_of::<ours::kvm_userspace_memory_region2>(),
            size_of::<theirs::kvm_userspace_memory_region2>(),
        ),
        (
            size_of::<ours::kvm_cpuid_entry2>(),
            size_of::<theirs::kvm_cpuid_entry2>(),
        ),
        (
            size_of::<ours::kvm_cpuid2>(),
            size_of::<theirs::kvm_cpuid2>(),
        ),
        (
            size_of::<ours::kvm_msr_entry>(),
            size_of::<theirs::kvm_msr_entry>(),
        ),
        (size_of::<ours::kvm_msrs>(), size_of::<theirs::kvm_msrs>()),
        (
            size_of::<ours::kvm_msr_list>(),
            size_of::<theirs::kvm_msr_list>(),
        ),
        (
            size_of::<ours::kvm_vcpu_events>(),
            size_of::<theirs::kvm_vcpu_events>(),
        ),
        (
            size_of::<ours::kvm_sync_regs>(),
            size_of::<theirs::kvm_sync_regs>(),
        ),
        (
            size_of::<ours::kvm_ioeventfd>(),
            size_of::<theirs::kvm_ioeventfd>(),
        ),
        (size_of::<ours::kvm_irqfd>(), size_of::<theirs::kvm_irqfd>()),
        (size_of::<ours::kvm_xcr>(), size_of::<theirs::kvm_xcr>()),
        (size_of::<ours::kvm_xcrs>(), size_of::<theirs::kvm_xcrs>()),
        (
            size_of::<ours::kvm_debugregs>(),
            size_of::<theirs::kvm_debugregs>(),
        ),
        (
            size_of::<ours::kvm_mp_state>(),
            size_of::<theirs::kvm_mp_state>(),
        ),
        (
            size_of::<ours::kvm_clock_data>(),
            size_of::<theirs::kvm_clock_data>(),
        ),
        (
            size_of::<ours::kvm_lapic_state>(),
            size_of::<theirs::kvm_lapic_state>(),
        ),
        (
            size_of::<ours::kvm_pit_config>(),
            size_of::<theirs::kvm_pit_config>(),
        ),
        (
            size_of::<ours::kvm_irq_level>(),
            size_of::<theirs::kvm_irq_level>(),
        ),
        (
            size_of::<ours::kvm_enable_cap>(),
            size_of::<theirs::kvm_enable_cap>(),
        ),
        (
            size_of::<ours::kvm_interrupt>(),
            size_of::<theirs::kvm_interrupt>(),
        ),
        (
            size_of::<ours::kvm_signal_mask>(),
            size_of::<theirs::kvm_signal_mask>(),
        ),
        (
            size_of::<ours::kvm_irq_routing_entry>(),
            size_of::<theirs::kvm_irq_routing_entry>(),
        ),
        (
            size_of::<ours::kvm_irq_routing>(),
            size_of::<theirs::kvm_irq_routing>(),
        ),
        (size_of::<ours::kvm_msi>(), size_of::<theirs::kvm_msi>()),
        (
            size_of::<ours::kvm_coalesced_mmio_zone>(),
            size_of::<theirs::kvm_coalesced_mmio_zone>(),
        ),
        (
            size_of::<ours::kvm_dirty_log>(),
            size_of::<theirs::kvm_dirty_log>(),
        ),
        (run::KVM_RUN_SIZE, size_of::<theirs::kvm_run>()),
    ];
    for (index, (ours, theirs)) in pairs.iter().enumerate() {
        assert_eq!(ours, theirs, "struct #{index} of the list");
    }
}

#[test]
fn run_fields_match_kvm_bindings() {
    use kvm_bindings::kvm_run;
    assert_eq!(run::EXIT_REASON, offset_of!(kvm_run, exit_reason));
    assert_eq!(run::IMMEDIATE_EXIT, offset_of!(kvm_run, immediate_exit));
    assert_eq!(
        run::REQUEST_INTERRUPT_WINDOW,
        offset_of!(kvm_run, request_interrupt_window)
    );
    assert_eq!(
        run::READY_FOR_INTERRUPT_INJECTION,
        offset_of!(kvm_run, ready_for_interrupt_injection)
    );
    assert_eq!(run::IF_FLAG, offset_of!(kvm_run, if_flag));
    assert_eq!(run::FLAGS, offset_of!(kvm_run, flags));
    assert_eq!(run::CR8, offset_of!(kvm_run, cr8));
    assert_eq!(run::APIC_BASE, offset_of!(kvm_run, apic_base));
    assert_eq!(run::KVM_VALID_REGS, offset_of!(kvm_run, kvm_valid_regs));
    assert_eq!(run::KVM_DIRTY_REGS, offset_of!(kvm_run, kvm_dirty_regs));
    assert_eq!(run::SYNC_REGS, offset_of!(kvm_run, s));
    assert_eq!(
        SYNC_REGS_SIZE_BYTES as usize,
        size_of::<kvm_bindings::kvm_run__bindgen_ty_2>()
    );

    // The exit union members pvrs writes, at their bindgen names.
    use kvm_bindings::{
        kvm_run__bindgen_ty_1 as exit, kvm_run__bindgen_ty_1__bindgen_ty_13 as internal,
        kvm_run__bindgen_ty_1__bindgen_ty_19 as system_event,
        kvm_run__bindgen_ty_1__bindgen_ty_2 as fail_entry,
        kvm_run__bindgen_ty_1__bindgen_ty_4 as io, kvm_run__bindgen_ty_1__bindgen_ty_6 as mmio,
    };
    let union = offset_of!(kvm_run, __bindgen_anon_1);
    assert_eq!(run::EXIT_UNION, union);
    assert_eq!(run::EXIT_UNION_SIZE, size_of::<exit>());
    let fields = [
        (run::IO_DIRECTION, offset_of!(io, direction)),
        (run::IO_SIZE, offset_of!(io, size)),
        (run::IO_PORT, offset_of!(io, port)),
        (run::IO_COUNT, offset_of!(io, count)),
        (run::IO_DATA_OFFSET, offset_of!(io, data_offset)),
        (run::MMIO_PHYS_ADDR, offset_of!(mmio, phys_addr)),
        (run::MMIO_DATA, offset_of!(mmio, data)),
        (run::MMIO_LEN, offset_of!(mmio, len)),
        (run::MMIO_IS_WRITE, offset_of!(mmio, is_write)),
        (
            run::FAIL_ENTRY_HARDWARE_ENTRY_FAILURE_REASON,
            offset_of!(fail_entry, hardware_entry_failure_reason),
        ),
        (run::FAIL_ENTRY_CPU, offset_of!(fail_entry, cpu)),
        (run::INTERNAL_SUBERROR, offset_of!(internal, suberror)),
        (run::INTERNAL_NDATA, offset_of!(internal, ndata)),
        (run::INTERNAL_DATA, offset_of!(internal, data)),
        (run::SYSTEM_EVENT_TYPE, offset_of!(system_event, type_)),
        (run::SYSTEM_EVENT_NDATA, offset_of!(system_event, ndata)),
        (
            run::SYSTEM_EVENT_DATA,
            offset_of!(system_event, __bindgen_anon_1),
        ),
    ];
    for (index, (ours, in_union)) in fields.into_iter().enumerate() {
        assert_eq!(ours, union + in_union, "union field #{index}");
    }
}

#[test]
fn array_limits_match_kvm_bindings() {
    // rust-vmm's FamStructWrapper for CPUID holds what KVM accepts.
    assert_eq!(
        kvm_bindings::KVM_MAX_CPUID_ENTRIES,
        KVM_MAX_CPUID_ENTRIES as usize
    );
    // Its MSR wrapper holds 256 entries, but KVM (and /dev/pvrs) refuse
    // `nmsrs` of 256 with E2BIG: a VMM must stay below MAX_IO_MSRS.
    assert_eq!(kvm_bindings::KVM_MAX_MSR_ENTRIES, MAX_IO_MSRS as usize);
}
