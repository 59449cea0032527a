//! Checks `hv_core::kvm_api` against the Linux 6.12 KVM headers it
//! mirrors: `include/uapi/linux/kvm.h` and
//! `arch/x86/include/uapi/asm/kvm.h`.
//!
//! No number is typed in here.  The crate's constant tables, struct
//! layouts, `kvm_run` field table and ioctl table are compared with what a
//! C compiler computes from the real headers: the test writes a C program
//! that includes them, prints every value, and compares.  Text scans make
//! sure no constant of a mirrored family and no ioctl is left out unless
//! listed in [`UNMIRRORED_IOCTLS`] with a reason.
//!
//! How the headers are included: the uapi headers of a source tree are not
//! usable as they are (`make headers_install` would strip `__user` and
//! `<linux/compiler.h>` and place `asm/` for the architecture; building in
//! the shared tree is not allowed, and the system's `/usr/include` may hold
//! older KVM headers).  So the test includes `kvm.h` by absolute path and
//! puts a directory of its own first on the include path, holding stand-ins
//! for what the headers include by `<...>`: `linux/types.h` with the x86-64
//! types and an empty `__user`, empty `linux/compiler.h` and
//! `linux/compiler_types.h`, and one-line forwards (by absolute path) of
//! `linux/const.h`, `linux/bits.h`, `linux/stddef.h`, `linux/ioctl.h`,
//! `asm/ioctl.h` (the generic one x86 uses), `asm/kvm.h` (x86's) and
//! `asm-generic/errno-base.h`.  No kernel directory is on the include path,
//! so the libc headers the program also includes stay libc's.
//!
//! KVM's internal limits ([`kvm_api::constants::KERNEL_CONSTANTS`], the
//! IOAPIC model's numbers [`irqchip::ioapic::IOAPIC_CONSTANTS`] and a few
//! register bits) are not uapi: their `#define` lines are copied out of
//! the kernel sources into the program and evaluated there.
//!
//! The kernel tree comes from `PVRS_KERNEL_SRC`, by default
//! `$HOME/.cache/pvrs/src/linux-source-6.12`.  Nothing is written in it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use hv_core::irqchip::ioapic::{IOAPIC_CONSTANTS, IOAPIC_CONSTANT_SOURCES};
use hv_core::kvm_api::constants::{KERNEL_CONSTANTS, KERNEL_CONSTANT_SOURCES, LINUX_CONSTANTS};
use hv_core::kvm_api::decode;
use hv_core::kvm_api::errno::Errno;
use hv_core::kvm_api::ioctl::IOCTLS;
use hv_core::kvm_api::layout::*;
use hv_core::kvm_api::run::{KVM_RUN_FIELDS, KVM_RUN_SIZE};

const KVM_H: &str = "include/uapi/linux/kvm.h";
const ASM_KVM_H: &str = "arch/x86/include/uapi/asm/kvm.h";

/// Prefixes of the constant families mirrored completely: every `#define`
/// of the two headers starting with one of these is in
/// `LINUX_CONSTANTS`.
const MIRRORED_FAMILIES: [&str; 24] = [
    "KVM_EXIT_",
    "KVM_INTERNAL_ERROR_",
    "KVM_SYSTEM_EVENT_",
    "KVM_CAP_",
    "KVM_MP_STATE_",
    "KVM_MEM_",
    "KVM_IOEVENTFD_",
    "KVM_IRQFD_FLAG_",
    "KVM_CLOCK_",
    "KVM_VCPUEVENT_VALID_",
    "KVM_X86_SHADOW_INT_",
    "KVM_SYNC_X86_",
    "KVM_RUN_X86_",
    "KVM_CPUID_FLAG_",
    "KVM_IRQCHIP_",
    "KVM_IRQ_ROUTING_",
    "KVM_MSI_VALID_",
    "KVM_X86_DISABLE_",
    "KVM_X2APIC_API_",
    "KVM_PIT_",
    "KVM_PIO_PAGE_OFFSET",
    "KVM_COALESCED_MMIO_PAGE_OFFSET",
    "KVM_DIRTY_LOG_PAGE_OFFSET",
    "KVM_API_VERSION",
];

const LATER: &str = "later issue";
const S390: &str = "s390 only";
const POWERPC: &str = "powerpc only";
const ARM64: &str = "arm64 only";
const IRQCHIP_STATE: &str =
    "the legacy PIT state and PIT tick reinjection: later issue (KVM_GET/SET_PIT2 are mirrored)";
const XEN: &str = "Xen guest emulation: not planned";
const SEV: &str = "SEV memory encryption: not planned";
const PRIVATE_MEMORY: &str = "private memory (guest_memfd) and pre-faulting: not planned";
const DIRTY_TRACKING: &str = "dirty tracking beyond KVM_GET_DIRTY_LOG: later issue, with migration";
const DEVICE_API: &str = "device API (VFIO, vCPU TSC offset attributes): later issue";
const MCE: &str = "machine check injection: later issue";

/// The ioctls of `kvm.h` that `/dev/pvrs` does not mirror, and why.
const UNMIRRORED_IOCTLS: &[(&str, &str)] = &[
    ("KVM_S390_ENABLE_SIE", S390),
    (
        "KVM_SET_NR_MMU_PAGES",
        "shadow MMU sizing; pvrs uses nested paging only",
    ),
    (
        "KVM_GET_NR_MMU_PAGES",
        "deprecated; x86 KVM of 6.12 no longer answers it",
    ),
    ("KVM_S390_UCAS_MAP", S390),
    ("KVM_S390_UCAS_UNMAP", S390),
    ("KVM_S390_VCPU_FAULT", S390),
    (
        "KVM_CREATE_PIT",
        "superseded by KVM_CREATE_PIT2 (which pvrs mirrors)",
    ),
    ("KVM_GET_PIT", IRQCHIP_STATE),
    ("KVM_SET_PIT", IRQCHIP_STATE),
    ("KVM_REINJECT_CONTROL", IRQCHIP_STATE),
    (
        "KVM_SET_BOOT_CPU_ID",
        "later issue: pvrs-vmm boots from vCPU 0, the default",
    ),
    ("KVM_XEN_HVM_CONFIG", XEN),
    ("KVM_PPC_GET_PVINFO", POWERPC),
    ("KVM_PPC_GET_SMMU_INFO", POWERPC),
    ("KVM_PPC_ALLOCATE_HTAB", POWERPC),
    ("KVM_CREATE_SPAPR_TCE", POWERPC),
    ("KVM_CREATE_SPAPR_TCE_64", POWERPC),
    ("KVM_ALLOCATE_RMA", POWERPC),
    ("KVM_PPC_GET_HTAB_FD", POWERPC),
    ("KVM_ARM_SET_DEVICE_ADDR", ARM64),
    ("KVM_PPC_RTAS_DEFINE_TOKEN", POWERPC),
    ("KVM_PPC_RESIZE_HPT_PREPARE", POWERPC),
    ("KVM_PPC_RESIZE_HPT_COMMIT", POWERPC),
    ("KVM_PPC_CONFIGURE_V3_MMU", POWERPC),
    ("KVM_PPC_GET_RMMU_INFO", POWERPC),
    ("KVM_PPC_GET_CPU_CHAR", POWERPC),
    (
        "KVM_SET_PMU_EVENT_FILTER",
        "PMU virtualisation: not in the first version",
    ),
    ("KVM_PPC_SVM_OFF", POWERPC),
    ("KVM_ARM_MTE_COPY_TAGS", ARM64),
    ("KVM_ARM_SET_COUNTER_OFFSET", ARM64),
    ("KVM_ARM_GET_REG_WRITABLE_MASKS", ARM64),
    ("KVM_CREATE_DEVICE", DEVICE_API),
    ("KVM_SET_DEVICE_ATTR", DEVICE_API),
    ("KVM_GET_DEVICE_ATTR", DEVICE_API),
    ("KVM_HAS_DEVICE_ATTR", DEVICE_API),
    (
        "KVM_TRANSLATE",
        "address translation for debuggers: later issue",
    ),
    (
        "KVM_SET_CPUID",
        "the obsolete struct kvm_cpuid; QEMU and rust-vmm use KVM_SET_CPUID2",
    ),
    (
        "KVM_TPR_ACCESS_REPORTING",
        "TPR patching for 32-bit Windows (kvmvapic): not planned",
    ),
    (
        "KVM_SET_VAPIC_ADDR",
        "TPR patching for 32-bit Windows (kvmvapic): not planned",
    ),
    ("KVM_S390_INTERRUPT", S390),
    ("KVM_S390_STORE_STATUS", S390),
    ("KVM_S390_SET_INITIAL_PSW", S390),
    ("KVM_S390_INITIAL_RESET", S390),
    (
        "KVM_SET_GUEST_DEBUG",
        "guest debugging (gdbstub): later issue",
    ),
    ("KVM_X86_SETUP_MCE", MCE),
    ("KVM_X86_GET_MCE_CAP_SUPPORTED", MCE),
    ("KVM_X86_SET_MCE", MCE),
    (
        "KVM_GET_XSAVE",
        "XSAVE state: later issue (KVM_GET_FPU covers x87 and SSE first)",
    ),
    (
        "KVM_SET_XSAVE",
        "XSAVE state: later issue (KVM_SET_FPU covers x87 and SSE first)",
    ),
    ("KVM_DIRTY_TLB", "powerpc e500 only"),
    (
        "KVM_GET_ONE_REG",
        "register interface of other architectures; x86 KVM does not answer it",
    ),
    (
        "KVM_SET_ONE_REG",
        "register interface of other architectures; x86 KVM does not answer it",
    ),
    ("KVM_ARM_VCPU_INIT", ARM64),
    ("KVM_ARM_PREFERRED_TARGET", ARM64),
    (
        "KVM_GET_REG_LIST",
        "register interface of other architectures; x86 KVM does not answer it",
    ),
    ("KVM_S390_MEM_OP", S390),
    ("KVM_S390_GET_SKEYS", S390),
    ("KVM_S390_SET_SKEYS", S390),
    ("KVM_S390_IRQ", S390),
    ("KVM_S390_SET_IRQ_STATE", S390),
    ("KVM_S390_GET_IRQ_STATE", S390),
    ("KVM_SMI", "System Management Mode is not offered"),
    ("KVM_S390_GET_CMMA_BITS", S390),
    ("KVM_S390_SET_CMMA_BITS", S390),
    ("KVM_MEMORY_ENCRYPT_OP", SEV),
    ("KVM_MEMORY_ENCRYPT_REG_REGION", SEV),
    ("KVM_MEMORY_ENCRYPT_UNREG_REGION", SEV),
    ("KVM_HYPERV_EVENTFD", "Hyper-V emulation: not planned"),
    (
        "KVM_GET_NESTED_STATE",
        "nested virtualisation for the guest: not planned",
    ),
    (
        "KVM_SET_NESTED_STATE",
        "nested virtualisation for the guest: not planned",
    ),
    ("KVM_CLEAR_DIRTY_LOG", DIRTY_TRACKING),
    ("KVM_ARM_VCPU_FINALIZE", ARM64),
    ("KVM_S390_NORMAL_RESET", S390),
    ("KVM_S390_CLEAR_RESET", S390),
    ("KVM_S390_PV_COMMAND", S390),
    (
        "KVM_X86_SET_MSR_FILTER",
        "userspace MSR filtering: later issue",
    ),
    ("KVM_RESET_DIRTY_RINGS", DIRTY_TRACKING),
    ("KVM_XEN_HVM_GET_ATTR", XEN),
    ("KVM_XEN_HVM_SET_ATTR", XEN),
    ("KVM_XEN_VCPU_GET_ATTR", XEN),
    ("KVM_XEN_VCPU_SET_ATTR", XEN),
    ("KVM_XEN_HVM_EVTCHN_SEND", XEN),
    (
        "KVM_GET_SREGS2",
        "sregs with PDPTRs: later issue (KVM_CAP_SREGS2 not offered)",
    ),
    (
        "KVM_SET_SREGS2",
        "sregs with PDPTRs: later issue (KVM_CAP_SREGS2 not offered)",
    ),
    ("KVM_GET_STATS_FD", "binary statistics: later issue"),
    ("KVM_GET_XSAVE2", "XSAVE state: later issue"),
    ("KVM_S390_PV_CPU_COMMAND", S390),
    ("KVM_S390_ZPCI_OP", S390),
    ("KVM_SET_MEMORY_ATTRIBUTES", PRIVATE_MEMORY),
    ("KVM_CREATE_GUEST_MEMFD", PRIVATE_MEMORY),
    ("KVM_PRE_FAULT_MEMORY", PRIVATE_MEMORY),
];

/// Register bits the decoders use, defined outside the KVM headers: the
/// uapi `processor-flags.h` is included; `msr-index.h` is not uapi, so its
/// lines are copied like the kernel constants.
const REGISTER_BITS: [(&str, u64); 8] = [
    ("X86_CR0_PE", decode::X86_CR0_PE),
    ("X86_CR0_NW", decode::X86_CR0_NW),
    ("X86_CR0_CD", decode::X86_CR0_CD),
    ("X86_CR0_PG", decode::X86_CR0_PG),
    ("X86_CR4_PAE", decode::X86_CR4_PAE),
    ("X86_EFLAGS_FIXED", decode::X86_EFLAGS_FIXED),
    ("EFER_LME", decode::EFER_LME),
    ("EFER_LMA", decode::EFER_LMA),
];

/// The `msr-index.h` defines copied into the C program.
const MSR_INDEX_DEFINES: [&str; 4] = ["_EFER_LME", "_EFER_LMA", "EFER_LME", "EFER_LMA"];
const MSR_INDEX_H: &str = "arch/x86/include/asm/msr-index.h";

fn kernel_source() -> PathBuf {
    let tree = match std::env::var_os("PVRS_KERNEL_SRC") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/pvrs/src/linux-source-6.12")
        }
    };
    let missing: Vec<_> = [KVM_H, ASM_KVM_H, MSR_INDEX_H, "Makefile"]
        .into_iter()
        .chain(
            KERNEL_CONSTANT_SOURCES
                .iter()
                .chain(IOAPIC_CONSTANT_SOURCES)
                .map(|&(_, file)| file),
        )
        .filter(|file| !tree.join(file).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the Linux 6.12 source tree is missing or incomplete at {} (lacks {missing:?}): \
         run `make kernel-source`, or point PVRS_KERNEL_SRC at an extracted linux-6.12 tree",
        tree.display()
    );
    tree
}

fn read(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn identifier_len(text: &str) -> usize {
    text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len())
}

/// The logical lines of a C file: continuation lines joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// `(name, body)` of every `#define` in `text`, in order.
fn defines_in(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .iter()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('#')?.trim_start();
            let rest = rest.strip_prefix("define")?.trim_start();
            let (name, body) = rest.split_at(identifier_len(rest));
            Some((name.to_string(), body.trim().to_string()))
        })
        .collect()
}

/// The first `#define name ...` of `file`, as a line for the C program.
fn copied_define(tree: &Path, file: &str, name: &str) -> String {
    let (_, body) = defines_in(&read(tree, file))
        .into_iter()
        .find(|(defined, _)| defined == name)
        .unwrap_or_else(|| panic!("no #define {name} in {file}"));
    format!("#define {name} {body}\n")
}

#[test]
fn kernel_source_is_linux_6_12() {
    let makefile = read(&kernel_source(), "Makefile");
    let variable = |name: &str| {
        makefile
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .trim_start()
                    .strip_prefix('=')
                    .map(str::trim)
            })
            .unwrap_or_else(|| panic!("no {name} in the kernel Makefile"))
            .to_string()
    };
    assert_eq!(
        (variable("VERSION"), variable("PATCHLEVEL")),
        ("6".to_string(), "12".to_string()),
        "the KVM API is pinned to Linux 6.12 headers"
    );
}

/// Both directions: every define of a mirrored family is a crate
/// constant, and every crate constant is defined in the two headers.
#[test]
fn every_family_define_is_a_crate_constant() {
    let tree = kernel_source();
    let header_names: BTreeSet<String> = [KVM_H, ASM_KVM_H]
        .iter()
        .flat_map(|file| defines_in(&read(&tree, file)))
        .map(|(name, _)| name)
        .collect();
    let constants: BTreeSet<&str> = LINUX_CONSTANTS.iter().map(|&(name, _, _)| name).collect();
    assert_eq!(constants.len(), LINUX_CONSTANTS.len(), "a constant twice");

    let missing: Vec<&String> = header_names
        .iter()
        .filter(|name| {
            MIRRORED_FAMILIES
                .iter()
                .any(|family| name.starts_with(family))
        })
        .filter(|name| !constants.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "in the headers, not in kvm_api: {missing:?}"
    );

    let invented: Vec<&&str> = constants
        .iter()
        .filter(|name| !header_names.contains(**name))
        .collect();
    assert!(
        invented.is_empty(),
        "in kvm_api, not in the headers: {invented:?}"
    );

    for family in MIRRORED_FAMILIES {
        assert!(
            header_names.iter().any(|name| name.starts_with(family)),
            "the scan found no {family}: has the header format changed?"
        );
    }
}

/// The `#define KVM_... _IO*(KVMIO, ...)` lines of `kvm.h`.
fn header_ioctls(tree: &Path) -> BTreeSet<String> {
    defines_in(&read(tree, KVM_H))
        .into_iter()
        .filter(|(_, body)| {
            ["_IO(", "_IOR(", "_IOW(", "_IOWR("]
                .iter()
                .any(|start| body.starts_with(start))
                && body.contains("KVMIO")
        })
        .map(|(name, _)| name)
        .collect()
}

/// Every ioctl of `kvm.h` is mirrored or listed as unmirrored with a
/// reason, and neither list names one the header lacks.
#[test]
fn every_ioctl_is_mirrored_or_excused() {
    let tree = kernel_source();
    let in_header = header_ioctls(&tree);
    assert!(
        in_header.len() > 100,
        "the ioctl scan found only {}",
        in_header.len()
    );
    let mirrored: BTreeSet<String> = IOCTLS.iter().map(|info| info.name.to_string()).collect();
    let unmirrored: BTreeSet<String> = UNMIRRORED_IOCTLS
        .iter()
        .map(|&(name, reason)| {
            assert!(!reason.is_empty(), "{name} has no reason");
            name.to_string()
        })
        .collect();
    assert_eq!(unmirrored.len(), UNMIRRORED_IOCTLS.len(), "listed twice");
    let both: Vec<_> = mirrored.intersection(&unmirrored).collect();
    assert!(both.is_empty(), "mirrored and excused: {both:?}");
    let covered: BTreeSet<String> = mirrored.union(&unmirrored).cloned().collect();
    let missing: Vec<_> = in_header.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "ioctls neither mirrored nor excused: {missing:?}"
    );
    let unknown: Vec<_> = covered.difference(&in_header).collect();
    assert!(unknown.is_empty(), "not ioctls of kvm.h: {unknown:?}");
    assert!(LATER.starts_with("later"));
}

/// One struct's layout as Rust computes it, to compare with C.
struct StructLayout {
    c_type: String,
    size: usize,
    align: usize,
    /// (C member, offset, size); size 0 marks a flexible array member,
    /// which C gives an offset but no `sizeof`.
    fields: Vec<(&'static str, usize, usize)>,
}

fn returned_size<S, T>(_field: impl Fn(&S) -> T) -> usize {
    size_of::<T>()
}

macro_rules! c_field_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $c_name:literal) => {
        $c_name
    };
}

macro_rules! layout {
    ($rust:ty, $c_type:expr, [$($field:ident $(as $c_field:literal)?),+ $(,)?]) => {
        StructLayout {
            c_type: String::from($c_type),
            size: size_of::<$rust>(),
            align: align_of::<$rust>(),
            fields: vec![$((
                c_field_name!($field $($c_field)?),
                offset_of!($rust, $field),
                returned_size(|value: &$rust| value.$field),
            )),+],
        }
    };
}

fn crate_layouts() -> Vec<StructLayout> {
    vec![
        layout!(
            kvm_regs,
            "struct kvm_regs",
            [
                rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip,
                rflags,
            ]
        ),
        layout!(kvm_segment, "struct kvm_segment", [
            base, limit, selector, type_ as "type", present, dpl, db, s, l, g, avl, unusable,
            padding,
        ]),
        layout!(kvm_dtable, "struct kvm_dtable", [base, limit, padding]),
        layout!(
            kvm_sregs,
            "struct kvm_sregs",
            [
                cs,
                ds,
                es,
                fs,
                gs,
                ss,
                tr,
                ldt,
                gdt,
                idt,
                cr0,
                cr2,
                cr3,
                cr4,
                cr8,
                efer,
                apic_base,
                interrupt_bitmap,
            ]
        ),
        layout!(
            kvm_fpu,
            "struct kvm_fpu",
            [
                fpr,
                fcw,
                fsw,
                ftwx,
                pad1,
                last_opcode,
                last_ip,
                last_dp,
                xmm,
                mxcsr,
                pad2,
            ]
        ),
        layout!(
            kvm_userspace_memory_region,
            "struct kvm_userspace_memory_region",
            [slot, flags, guest_phys_addr, memory_size, userspace_addr,]
        ),
        layout!(
            kvm_userspace_memory_region2,
            "struct kvm_userspace_memory_region2",
            [
                slot,
                flags,
                guest_phys_addr,
                memory_size,
                userspace_addr,
                guest_memfd_offset,
                guest_memfd,
                pad1,
                pad2,
            ]
        ),
        layout!(
            kvm_cpuid_entry2,
            "struct kvm_cpuid_entry2",
            [function, index, flags, eax, ebx, ecx, edx, padding,]
        ),
        layout!(kvm_cpuid2, "struct kvm_cpuid2", [nent, padding, entries]),
        layout!(
            kvm_msr_entry,
            "struct kvm_msr_entry",
            [index, reserved, data]
        ),
        layout!(kvm_msrs, "struct kvm_msrs", [nmsrs, pad, entries]),
        layout!(kvm_msr_list, "struct kvm_msr_list", [nmsrs, indices]),
        layout!(
            kvm_vcpu_events_exception,
            "__typeof__(((struct kvm_vcpu_events *)0)->exception)",
            [injected, nr, has_error_code, pending, error_code]
        ),
        layout!(
            kvm_vcpu_events_interrupt,
            "__typeof__(((struct kvm_vcpu_events *)0)->interrupt)",
            [injected, nr, soft, shadow]
        ),
        layout!(
            kvm_vcpu_events_nmi,
            "__typeof__(((struct kvm_vcpu_events *)0)->nmi)",
            [injected, pending, masked, pad]
        ),
        layout!(
            kvm_vcpu_events_smi,
            "__typeof__(((struct kvm_vcpu_events *)0)->smi)",
            [smm, pending, smm_inside_nmi, latched_init]
        ),
        layout!(
            kvm_vcpu_events_triple_fault,
            "__typeof__(((struct kvm_vcpu_events *)0)->triple_fault)",
            [pending]
        ),
        layout!(
            kvm_vcpu_events,
            "struct kvm_vcpu_events",
            [
                exception,
                interrupt,
                nmi,
                sipi_vector,
                flags,
                smi,
                triple_fault,
                reserved,
                exception_has_payload,
                exception_payload,
            ]
        ),
        layout!(kvm_sync_regs, "struct kvm_sync_regs", [regs, sregs, events]),
        layout!(
            kvm_ioeventfd,
            "struct kvm_ioeventfd",
            [datamatch, addr, len, fd, flags, pad]
        ),
        layout!(
            kvm_irqfd,
            "struct kvm_irqfd",
            [fd, gsi, flags, resamplefd, pad]
        ),
        layout!(kvm_xcr, "struct kvm_xcr", [xcr, reserved, value]),
        layout!(kvm_xcrs, "struct kvm_xcrs", [nr_xcrs, flags, xcrs, padding]),
        layout!(
            kvm_debugregs,
            "struct kvm_debugregs",
            [db, dr6, dr7, flags, reserved]
        ),
        layout!(kvm_mp_state, "struct kvm_mp_state", [mp_state]),
        layout!(
            kvm_clock_data,
            "struct kvm_clock_data",
            [clock, flags, pad0, realtime, host_tsc, pad,]
        ),
        layout!(kvm_lapic_state, "struct kvm_lapic_state", [regs]),
        layout!(kvm_pit_config, "struct kvm_pit_config", [flags, pad]),
        layout!(kvm_irq_level, "struct kvm_irq_level", [irq, level]),
        layout!(
            kvm_enable_cap,
            "struct kvm_enable_cap",
            [cap, flags, args, pad]
        ),
        layout!(kvm_interrupt, "struct kvm_interrupt", [irq]),
        layout!(kvm_signal_mask, "struct kvm_signal_mask", [len, sigset]),
        layout!(kvm_irq_routing_entry, "struct kvm_irq_routing_entry", [
            gsi, type_ as "type", flags, pad, u,
        ]),
        layout!(
            kvm_irq_routing_irqchip,
            "struct kvm_irq_routing_irqchip",
            [irqchip, pin]
        ),
        layout!(
            kvm_irq_routing_msi,
            "struct kvm_irq_routing_msi",
            [address_lo, address_hi, data, devid,]
        ),
        layout!(
            kvm_irq_routing,
            "struct kvm_irq_routing",
            [nr, flags, entries]
        ),
        layout!(
            kvm_msi,
            "struct kvm_msi",
            [address_lo, address_hi, data, flags, devid, pad]
        ),
        layout!(
            kvm_ioapic_state,
            "struct kvm_ioapic_state",
            [base_address, ioregsel, id, irr, pad, redirtbl]
        ),
        layout!(kvm_irqchip, "struct kvm_irqchip", [chip_id, pad, chip]),
        layout!(
            kvm_coalesced_mmio_zone,
            "struct kvm_coalesced_mmio_zone",
            [addr, size, pio]
        ),
        layout!(
            kvm_dirty_log,
            "struct kvm_dirty_log",
            [slot, padding1, dirty_bitmap]
        ),
    ]
}

/// The Rust fields of each struct tile it without gaps: with the C
/// comparison of every offset and size, no C field can be missing.
#[test]
fn layouts_tile_their_structs() {
    for layout in crate_layouts() {
        let mut end = 0;
        for (index, &(field, offset, size)) in layout.fields.iter().enumerate() {
            assert_eq!(offset, end, "gap before {}.{field}", layout.c_type);
            assert!(
                size != 0 || index + 1 == layout.fields.len(),
                "flexible array {}.{field} is not last",
                layout.c_type
            );
            end = offset + size;
        }
        assert_eq!(end, layout.size, "padding at the end of {}", layout.c_type);
    }
}

/// One value the C program prints: a C expression and the crate's value.
struct Check {
    c_expression: String,
    expected: u64,
}

fn check(c_expression: impl Into<String>, expected: impl TryInto<u64>) -> Check {
    Check {
        c_expression: c_expression.into(),
        expected: expected.try_into().ok().expect("expected value fits u64"),
    }
}

/// A constant compared after conversion to the Rust type's width, plus a
/// check that the conversion lost nothing (C's `1 << 31` is a negative
/// `int`; `(__u32)(-1)` is positive).
fn constant_checks(name: &str, value: u64, bits: u32) -> [Check; 2] {
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    [
        check(
            format!("(unsigned long long)({name}) & {mask:#x}ULL"),
            value,
        ),
        check(
            format!(
                "(({name}) < 0 ? (unsigned long long)(-({name})) - 1 : \
                 (unsigned long long)({name})) <= {mask:#x}ULL"
            ),
            1u8,
        ),
    ]
}

fn c_program_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for &(name, value, bits) in LINUX_CONSTANTS
        .iter()
        .chain(KERNEL_CONSTANTS)
        .chain(IOAPIC_CONSTANTS)
    {
        checks.extend(constant_checks(name, value, bits));
    }
    for (name, value) in REGISTER_BITS {
        checks.push(check(format!("(unsigned long long)({name})"), value));
    }
    checks.push(check("sizeof(sigset_t_kernel)", decode::KERNEL_SIGSET_SIZE));
    for (name, errno) in Errno::ALL {
        checks.push(check(name, errno.code() as u64));
    }
    for info in IOCTLS {
        checks.push(check(
            format!("(unsigned long long){}", info.name),
            info.command,
        ));
    }
    for layout in crate_layouts() {
        let c_type = &layout.c_type;
        checks.push(check(format!("sizeof({c_type})"), layout.size));
        checks.push(check(format!("_Alignof({c_type})"), layout.align));
        for &(field, offset, size) in &layout.fields {
            checks.push(check(format!("offsetof({c_type}, {field})"), offset));
            if size != 0 {
                checks.push(check(format!("sizeof((({c_type} *)0)->{field})"), size));
            }
        }
    }
    // The C unions mirrored as one field.
    checks.push(check(
        "offsetof(struct kvm_irq_level, status)",
        offset_of!(kvm_irq_level, irq),
    ));
    checks.push(check(
        "offsetof(struct kvm_irq_routing_msi, pad)",
        offset_of!(kvm_irq_routing_msi, devid),
    ));
    checks.push(check(
        "offsetof(struct kvm_coalesced_mmio_zone, pad)",
        offset_of!(kvm_coalesced_mmio_zone, pio),
    ));
    checks.push(check(
        "offsetof(struct kvm_dirty_log, padding2)",
        offset_of!(kvm_dirty_log, dirty_bitmap),
    ));
    for (member, rust_offset, rust_size) in [
        ("irqchip", 0, size_of::<kvm_irq_routing_irqchip>()),
        ("msi", 0, size_of::<kvm_irq_routing_msi>()),
    ] {
        checks.push(check(
            format!("offsetof(struct kvm_irq_routing_entry, u.{member})"),
            offset_of!(kvm_irq_routing_entry, u) + rust_offset,
        ));
        checks.push(check(
            format!("sizeof(((struct kvm_irq_routing_entry *)0)->u.{member})"),
            rust_size,
        ));
    }
    checks.push(check("sizeof(struct kvm_run)", KVM_RUN_SIZE));
    for &(member, offset, size) in KVM_RUN_FIELDS {
        checks.push(check(format!("offsetof(struct kvm_run, {member})"), offset));
        checks.push(check(
            format!("sizeof(((struct kvm_run *)0)->{member})"),
            size,
        ));
    }
    checks
}

fn c_include(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    let path = path.to_str().expect("kernel path is UTF-8");
    assert!(
        !path.contains(['"', '\\', '\n']),
        "unusual kernel path {path:?}"
    );
    format!("#include \"{path}\"\n")
}

fn c_program(tree: &Path, checks: &[Check]) -> String {
    let mut program = String::from(
        "#include <limits.h>\n\
         #include <stddef.h>\n\
         #include <stdio.h>\n\
         \n",
    );
    program.push_str(&c_include(tree, KVM_H));
    program.push_str(&c_include(
        tree,
        "arch/x86/include/uapi/asm/processor-flags.h",
    ));
    program.push_str(&c_include(tree, "include/uapi/asm-generic/errno.h"));
    program.push_str("\n/* KVM's internal limits, copied from its sources. */\n");
    for &(name, file) in KERNEL_CONSTANT_SOURCES
        .iter()
        .chain(IOAPIC_CONSTANT_SOURCES)
    {
        program.push_str(&copied_define(tree, file, name));
    }
    for name in MSR_INDEX_DEFINES {
        program.push_str(&copied_define(tree, MSR_INDEX_H, name));
    }
    program.push_str(
        "\n/* The kernel's sigset_t on x86-64: _NSIG (64) bits. */\n\
         typedef struct { unsigned long sig[64 / (8 * sizeof(unsigned long))]; } sigset_t_kernel;\n\
         \n\
         int main(void)\n\
         {\n",
    );
    for (index, check) in checks.iter().enumerate() {
        writeln!(
            program,
            "\tprintf(\"{index} %llu\\n\", (unsigned long long)({}));",
            check.c_expression
        )
        .unwrap();
    }
    program.push_str("\treturn 0;\n}\n");
    program
}

/// The stand-ins described in the module documentation.
fn write_include_stubs(dir: &Path, tree: &Path) {
    for sub in ["linux", "asm", "asm-generic"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::write(
        dir.join("linux/types.h"),
        "#ifndef PVRS_STUB_LINUX_TYPES_H\n\
         #define PVRS_STUB_LINUX_TYPES_H\n\
         /* As asm-generic/int-ll64.h defines them for x86-64. */\n\
         typedef unsigned char __u8;\n\
         typedef signed char __s8;\n\
         typedef unsigned short __u16;\n\
         typedef signed short __s16;\n\
         typedef unsigned int __u32;\n\
         typedef signed int __s32;\n\
         typedef unsigned long long __u64;\n\
         typedef signed long long __s64;\n\
         /* What headers_install strips. */\n\
         #define __user\n\
         /* What asm/bitsperlong.h says on x86-64. */\n\
         #define __BITS_PER_LONG 64\n\
         #define __BITS_PER_LONG_LONG 64\n\
         #endif\n",
    )
    .unwrap();
    fs::write(
        dir.join("linux/compiler.h"),
        "/* nothing for userspace */\n",
    )
    .unwrap();
    fs::write(
        dir.join("linux/compiler_types.h"),
        "/* nothing for userspace */\n",
    )
    .unwrap();
    for (stub, real) in [
        ("linux/const.h", "include/uapi/linux/const.h"),
        ("linux/bits.h", "include/uapi/linux/bits.h"),
        ("linux/stddef.h", "include/uapi/linux/stddef.h"),
        ("linux/ioctl.h", "include/uapi/linux/ioctl.h"),
        ("asm/ioctl.h", "include/uapi/asm-generic/ioctl.h"),
        ("asm/kvm.h", ASM_KVM_H),
        (
            "asm-generic/errno-base.h",
            "include/uapi/asm-generic/errno-base.h",
        ),
    ] {
        fs::write(dir.join(stub), c_include(tree, real)).unwrap();
    }
}

/// A directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(purpose: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("pvrs-hv-core-{purpose}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("creating the temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn numbers_and_layouts_match_the_c_compiler() {
    let tree = kernel_source();
    let checks = c_program_checks();
    let work = TempDir::new("kvm-uapi");
    let stubs = work.0.join("include");
    write_include_stubs(&stubs, &tree);
    let source = work.0.join("kvm_values.c");
    let binary = work.0.join("kvm_values");
    fs::write(&source, c_program(&tree, &checks)).unwrap();

    let compiled = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-I"])
        .arg(&stubs)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("running the C compiler `cc`");
    assert!(
        compiled.status.success(),
        "cc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&binary)
        .output()
        .expect("running the C program");
    assert!(
        ran.status.success(),
        "the C program failed: {:?}",
        ran.status
    );
    let stdout = String::from_utf8(ran.stdout).expect("C output is ASCII");

    let mut seen = vec![false; checks.len()];
    let mut mismatches = Vec::new();
    for line in stdout.lines() {
        let (index, value) = line.split_once(' ').expect("`index value` lines");
        let index: usize = index.parse().unwrap();
        let value: u64 = value.parse().unwrap();
        seen[index] = true;
        let check = &checks[index];
        if value != check.expected {
            mismatches.push(format!(
                "{}: C says {value:#x}, kvm_api says {:#x}",
                check.c_expression, check.expected
            ));
        }
    }
    assert!(
        seen.iter().all(|&seen| seen),
        "the C program skipped values"
    );
    assert!(
        mismatches.is_empty(),
        "kvm_api disagrees with Linux:\n{}",
        mismatches.join("\n")
    );
    println!(
        "compared {} values with the Linux 6.12 headers: {} uapi and {} internal constants, \
         {} ioctl numbers, {} struct layouts, {} kvm_run fields",
        checks.len(),
        LINUX_CONSTANTS.len(),
        KERNEL_CONSTANTS.len(),
        IOCTLS.len(),
        crate_layouts().len(),
        KVM_RUN_FIELDS.len()
    );
}
