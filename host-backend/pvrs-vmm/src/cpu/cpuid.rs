//! The CPUID table each vCPU gets: what KVM supports
//! (`KVM_GET_SUPPORTED_CPUID`), with the per-vCPU topology filled in and the
//! KVM paravirtual leaves made explicit; or, on a device that cannot say
//! what it supports (no `KVM_CAP_EXT_CPUID`), the [`minimal_table`].
//!
//! The KVM leaves follow `Documentation/virt/kvm/x86/cpuid.rst`, through the
//! constants of `pvrs-abi`: the signature leaf `0x4000_0000` says
//! "KVMKVMKVM" and names the highest KVM leaf; the features leaf
//! `0x4000_0001` carries exactly the `KVM_FEATURE_*` bits KVM reported as
//! supported (kvmclock, steal time, PV EOI, ...), since all of them are
//! implemented inside KVM and need nothing from the VMM. The hints register
//! stays zero: vCPUs are ordinary threads, not dedicated CPUs, so
//! `KVM_HINTS_REALTIME` would be a lie.
//!
//! Without an in-kernel irqchip there is no local APIC, and
//! [`hide_local_apic`] takes the bits that promise one out of the table.

use std::arch::x86_64::CpuidResult;

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use pvrs_abi::cpuid::{
    feature_mask, Features, KVM_CPUID_FEATURES, KVM_CPUID_SIGNATURE, KVM_FEATURE_ASYNC_PF_INT,
    KVM_FEATURE_PV_EOI, KVM_FEATURE_PV_SEND_IPI, KVM_FEATURE_PV_UNHALT, KVM_SIGNATURE_EBX,
    KVM_SIGNATURE_ECX, KVM_SIGNATURE_EDX,
};

/// Leaf 1 ecx: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 edx: the "HTT" bit, meaning ebx[23:16] counts logical CPUs.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0xb / 0x1f level types (ecx[15:8]).
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// What the VM offers in the KVM features leaf, for logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvLeaves {
    /// The eax of the signature leaf (the highest KVM leaf).
    pub max_leaf: u32,
    /// The `KVM_FEATURE_*` bits offered.
    pub features: Features,
}

/// Makes sure the KVM signature and features leaves are present and well
/// formed. Returns what they offer.
pub fn fix_kvm_leaves(entries: &mut Vec<kvm_cpuid_entry2>) -> PvLeaves {
    let features = entries
        .iter()
        .find(|e| e.function == KVM_CPUID_FEATURES)
        .map_or(0, |e| e.eax);
    let mut max_leaf = KVM_CPUID_FEATURES;
    match entries
        .iter_mut()
        .find(|e| e.function == KVM_CPUID_SIGNATURE)
    {
        Some(sig) => {
            max_leaf =
                pvrs_abi::cpuid::max_kvm_leaf(KVM_CPUID_SIGNATURE, sig.eax).max(KVM_CPUID_FEATURES);
            sig.eax = max_leaf;
            sig.ebx = KVM_SIGNATURE_EBX;
            sig.ecx = KVM_SIGNATURE_ECX;
            sig.edx = KVM_SIGNATURE_EDX;
        }
        None => entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_SIGNATURE,
            eax: max_leaf,
            ebx: KVM_SIGNATURE_EBX,
            ecx: KVM_SIGNATURE_ECX,
            edx: KVM_SIGNATURE_EDX,
            ..Default::default()
        }),
    }
    match entries
        .iter_mut()
        .find(|e| e.function == KVM_CPUID_FEATURES)
    {
        Some(f) => {
            f.ebx = 0;
            f.ecx = 0;
            f.edx = 0;
        }
        None => entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_FEATURES,
            eax: features,
            ..Default::default()
        }),
    }
    PvLeaves {
        max_leaf,
        features: Features(features),
    }
}

/// Leaf 1 edx: the on-chip local APIC.
const LEAF1_EDX_APIC: u32 = 1 << 9;
/// Leaf 1 ecx: x2APIC mode of the local APIC.
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ecx: the local APIC timer's TSC-deadline mode.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// The `KVM_FEATURE_*` bits that work through the local APIC or interrupt
/// delivery: PV EOI (an APIC EOI shortcut), PV unhalt (wakes a vCPU halted
/// in the in-kernel APIC), PV send-IPI (IPIs through the APIC), and
/// async page faults announced by interrupt.
const KVM_FEATURES_NEEDING_LAPIC: u32 = feature_mask(KVM_FEATURE_PV_EOI)
    | feature_mask(KVM_FEATURE_PV_UNHALT)
    | feature_mask(KVM_FEATURE_PV_SEND_IPI)
    | feature_mask(KVM_FEATURE_ASYNC_PF_INT);

/// Removes what promises a local APIC, for a VM without an in-kernel
/// irqchip: the leaf 1 APIC, x2APIC and TSC-deadline bits and the KVM
/// paravirtual features built on the APIC. There is no local APIC behind
/// 0xfee0_0000 nor behind the x2APIC MSRs, and a guest that believed
/// otherwise would wait for interrupts that cannot come.
/// `KVM_GET_SUPPORTED_CPUID` reports these whether or not the VM has an
/// irqchip. Call it before [`fix_kvm_leaves`], which reports the features.
pub fn hide_local_apic(entries: &mut [kvm_cpuid_entry2]) {
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.edx &= !LEAF1_EDX_APIC;
                e.ecx &= !(LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE);
            }
            KVM_CPUID_FEATURES => e.eax &= !KVM_FEATURES_NEEDING_LAPIC,
            _ => {}
        }
    }
}

/// Leaf 1 edx bits of the [`minimal_table`]: FPU, PSE, TSC, MSR, PAE, CX8,
/// PGE, CMOV, PAT, CLFSH, MMX, FXSR, SSE, SSE2 (APIC is added when there is
/// an in-kernel local APIC).
const MINIMAL_LEAF1_EDX: u32 = 1 << 0 // FPU
    | 1 << 3 // PSE
    | 1 << 4 // TSC
    | 1 << 5 // MSR
    | 1 << 6 // PAE
    | 1 << 8 // CX8
    | 1 << 13 // PGE
    | 1 << 15 // CMOV
    | 1 << 16 // PAT
    | 1 << 19 // CLFSH
    | 1 << 23 // MMX
    | 1 << 24 // FXSR
    | 1 << 25 // SSE
    | 1 << 26; // SSE2
/// Leaf 0x8000_0001 edx bits of the [`minimal_table`]: SYSCALL, NX, LM.
const MINIMAL_EXT1_EDX: u32 = 1 << 11 | 1 << 20 | 1 << 29;
/// Leaf 1 ebx: the CLFLUSH line size in 8-byte units (bits 15:8); the rest
/// (APIC ID, logical CPU count) is per vCPU.
const LEAF1_EBX_CLFLUSH_SIZE: u32 = 0xff00;
/// The highest basic and extended leaves of the [`minimal_table`].
const MINIMAL_MAX_BASIC_LEAF: u32 = 1;
const MINIMAL_MAX_EXT_LEAF: u32 = 0x8000_0008;
/// Leaf 0x8000_0008 eax: the guest-physical address width (bits 7:0) and
/// the linear address width (15:8). 48-bit linear addresses: the table
/// does not offer LA57, and KVM refuses any width other than 48 or 57.
const EXT8_PHYS_BITS: u32 = 0xff;
const EXT8_LINEAR_48: u32 = 48 << 8;
/// What a CPU without leaf 0x8000_0008 implies for the physical width.
const DEFAULT_PHYS_BITS: u32 = 36;

/// A guest CPUID built from nothing but the host CPU, for a device that
/// cannot report what it supports (no `KVM_CAP_EXT_CPUID`, so no
/// `KVM_GET_SUPPORTED_CPUID`). `host` runs CPUID on the host for a leaf
/// (subleaf 0).
///
/// It offers only what a 64-bit guest cannot do without and what the CPU
/// executes in guest mode without the hypervisor's help, each bit only if
/// the host CPU has it:
///
/// * leaf 0: highest basic leaf 1 and the host's vendor string (the guest
///   runs on that CPU, so vendor-specific instruction behaviour follows it);
/// * leaf 1: the host's family/model/stepping (errata workarounds key off
///   them) and CLFLUSH line size; edx the x86-64 baseline ISA (FPU, CX8,
///   CMOV, MMX, FXSR, SSE, SSE2, TSC) and the paging and system features
///   Linux's x86-64 build requires or always uses (PSE, PAE, PGE, PAT, MSR,
///   CLFSH), plus APIC only with an in-kernel local APIC; ecx empty but for
///   the hypervisor bit that [`set_vcpu_topology`] sets;
/// * leaf 0x8000_0000..0x8000_0004: highest extended leaf 0x8000_0008, the
///   host's vendor (AMD repeats it there) and brand string;
/// * leaf 0x8000_0001: SYSCALL, NX, LM;
/// * leaf 0x8000_0008: the host's physical address width, 48-bit linear.
///
/// Left out on purpose, because each needs support from the hypervisor
/// that nothing confirms: XSAVE/AVX and everything in leaves 7 and 0xd
/// (XCR0 management), x2APIC and TSC-deadline (an APIC), MCE/MCA and MTRR
/// (their MSRs), SYSENTER and RDTSCP (MSRs), PCID, performance monitoring,
/// VMX/SVM, topology leaves (one vCPU without an irqchip), and the KVM
/// paravirtual leaves (no `KVM_FEATURE_*` can be confirmed).
pub fn minimal_table(
    host: impl Fn(u32) -> CpuidResult,
    in_kernel_lapic: bool,
) -> Vec<kvm_cpuid_entry2> {
    let entry = |function: u32, r: CpuidResult| kvm_cpuid_entry2 {
        function,
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
        ..Default::default()
    };
    let vendor = host(0);
    let mut table = vec![entry(
        0,
        CpuidResult {
            eax: MINIMAL_MAX_BASIC_LEAF.min(vendor.eax),
            ..vendor
        },
    )];
    if vendor.eax >= 1 {
        let leaf1 = host(1);
        let apic = if in_kernel_lapic { LEAF1_EDX_APIC } else { 0 };
        table.push(entry(
            1,
            CpuidResult {
                eax: leaf1.eax,
                ebx: leaf1.ebx & LEAF1_EBX_CLFLUSH_SIZE,
                ecx: 0,
                edx: leaf1.edx & (MINIMAL_LEAF1_EDX | apic),
            },
        ));
    }
    let host_max_ext = host(0x8000_0000).eax;
    if host_max_ext < 0x8000_0001 {
        return table;
    }
    let max_ext = host_max_ext.min(MINIMAL_MAX_EXT_LEAF);
    table.push(entry(
        0x8000_0000,
        CpuidResult {
            eax: MINIMAL_MAX_EXT_LEAF,
            ..host(0x8000_0000)
        },
    ));
    let ext1 = host(0x8000_0001);
    table.push(entry(
        0x8000_0001,
        CpuidResult {
            eax: ext1.eax,
            ebx: 0,
            ecx: 0,
            edx: ext1.edx & MINIMAL_EXT1_EDX,
        },
    ));
    for brand in 0x8000_0002..=max_ext.min(0x8000_0004) {
        table.push(entry(brand, host(brand)));
    }
    let phys_bits = if max_ext >= 0x8000_0008 {
        host(0x8000_0008).eax & EXT8_PHYS_BITS
    } else {
        DEFAULT_PHYS_BITS
    };
    table.push(entry(
        0x8000_0008,
        CpuidResult {
            eax: phys_bits | EXT8_LINEAR_48,
            ..ZERO_LEAF
        },
    ));
    table
}

/// The registers of a leaf that does not exist.
const ZERO_LEAF: CpuidResult = CpuidResult {
    eax: 0,
    ebx: 0,
    ecx: 0,
    edx: 0,
};

/// CPUID `leaf` (subleaf 0) on the CPU this runs on.
pub fn host_cpuid(leaf: u32) -> CpuidResult {
    // `__cpuid` is an unsafe fn before Rust 1.87 (the crate's floor is
    // 1.85) and safe after.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID has no side effects and exists on every x86-64 CPU.
    unsafe {
        std::arch::x86_64::__cpuid(leaf)
    }
}

/// The number of bits needed to number `n` items (ceil(log2 n)).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Fills in what differs between vCPUs: the initial APIC ID in leaf 1 and
/// the x2APIC ID and topology in leaves 0xb and 0x1f (one socket with
/// `cpu_count` single-threaded cores), and sets the hypervisor bit.
pub fn set_vcpu_topology(entries: &mut [kvm_cpuid_entry2], cpu_index: u8, cpu_count: u8) {
    let apic_id = u32::from(cpu_index);
    let count = u32::from(cpu_count.max(1));
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count.min(255) << 16);
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                }
                e.ecx |= LEAF1_ECX_HYPERVISOR;
            }
            0xb | 0x1f => {
                e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                e.edx = apic_id;
                let (eax, ebx, level_type) = match e.index {
                    0 => (0, 1, LEVEL_TYPE_SMT),
                    1 => (bits_for(count), count, LEVEL_TYPE_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = (level_type << 8) | (e.index & 0xff);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvrs_abi::cpuid::{is_kvm_signature, KVM_FEATURE_CLOCKSOURCE2};

    fn leaf(function: u32, index: u32, eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ..Default::default()
        }
    }

    #[test]
    fn kvm_leaves_keep_supported_features() {
        let feats = feature_mask(KVM_FEATURE_CLOCKSOURCE2) | 1 << 24;
        let mut e = vec![
            leaf(0x4000_0000, 0, 0x4000_0001),
            leaf(0x4000_0001, 0, feats),
        ];
        e[1].edx = 1; // a realtime hint must not leak through
        let pv = fix_kvm_leaves(&mut e);
        assert_eq!(pv.features, Features(feats));
        assert!(pv.features.has(KVM_FEATURE_CLOCKSOURCE2));
        assert!(is_kvm_signature(e[0].ebx, e[0].ecx, e[0].edx));
        assert_eq!(e[0].eax, 0x4000_0001);
        assert_eq!(e[1].edx, 0);
    }

    #[test]
    fn kvm_leaves_are_added_when_missing() {
        let mut e = vec![leaf(0, 0, 0xd)];
        let pv = fix_kvm_leaves(&mut e);
        assert_eq!(pv.features, Features(0));
        let sig = e.iter().find(|x| x.function == 0x4000_0000).unwrap();
        assert!(is_kvm_signature(sig.ebx, sig.ecx, sig.edx));
        assert!(e.iter().any(|x| x.function == 0x4000_0001));
    }

    #[test]
    fn old_style_zero_max_leaf_is_fixed() {
        let mut e = vec![leaf(0x4000_0000, 0, 0)];
        assert_eq!(fix_kvm_leaves(&mut e).max_leaf, 0x4000_0001);
        assert_eq!(e[0].eax, 0x4000_0001);
    }

    #[test]
    fn topology_per_vcpu() {
        let mut e = vec![
            leaf(1, 0, 0),
            leaf(0xb, 0, 0),
            leaf(0xb, 1, 0),
            leaf(0xb, 2, 0),
        ];
        e[0].ebx = 0xff00_0800; // stale APIC ID, CLFLUSH size 8
        set_vcpu_topology(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert!(e[1..].iter().all(|x| x.edx == 3));
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx), (0, 1, 0x100));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx), (2, 4, 0x201));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx), (0, 0, 2));
    }

    /// A host CPU: an AMD-like vendor with many features, leaves up to
    /// 0x8000_0008, 52 physical address bits.
    fn fake_host(leaf: u32) -> CpuidResult {
        let r = |eax, ebx, ecx, edx| CpuidResult { eax, ebx, ecx, edx };
        match leaf {
            0 => r(0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            1 => r(0x00a2_0f12, 0x0a08_0800, 0xfef8_3203, 0x178b_fbff),
            0x8000_0000 => r(0x8000_0021, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            0x8000_0001 => r(0x00a2_0f12, 0, 0x75c2_37ff, 0x2fd3_fbff),
            0x8000_0002..=0x8000_0004 => r(leaf, leaf, leaf, leaf),
            0x8000_0008 => r(0x3034, 0, 0, 0),
            _ => ZERO_LEAF,
        }
    }

    fn find(t: &[kvm_cpuid_entry2], function: u32) -> kvm_cpuid_entry2 {
        *t.iter().find(|e| e.function == function).unwrap()
    }

    #[test]
    fn minimal_table_offers_only_the_baseline() {
        let t = minimal_table(fake_host, false);
        let leaf0 = find(&t, 0);
        assert_eq!(
            (leaf0.eax, leaf0.ebx, leaf0.ecx, leaf0.edx),
            (1, 0x6874_7541, 0x444d_4163, 0x6974_6e65)
        );
        let leaf1 = find(&t, 1);
        assert_eq!(leaf1.eax, 0x00a2_0f12);
        assert_eq!(leaf1.ebx, 0x0800, "only the CLFLUSH size");
        assert_eq!(leaf1.ecx, 0, "no SSE3.., no x2APIC, no XSAVE/OSXSAVE/AVX");
        assert_eq!(leaf1.edx, MINIMAL_LEAF1_EDX);
        assert_eq!(leaf1.edx & LEAF1_EDX_APIC, 0);
        assert_eq!(find(&t, 0x8000_0000).eax, 0x8000_0008);
        let ext1 = find(&t, 0x8000_0001);
        assert_eq!((ext1.ecx, ext1.edx), (0, MINIMAL_EXT1_EDX));
        assert_eq!(find(&t, 0x8000_0003).ebx, 0x8000_0003);
        assert_eq!(find(&t, 0x8000_0008).eax, 0x3034);
        // Nothing else: no leaf 7, 0xd, 0xb, no hypervisor leaves.
        let functions: Vec<u32> = t.iter().map(|e| e.function).collect();
        assert_eq!(
            functions,
            [
                0,
                1,
                0x8000_0000,
                0x8000_0001,
                0x8000_0002,
                0x8000_0003,
                0x8000_0004,
                0x8000_0008
            ]
        );
    }

    #[test]
    fn minimal_table_apic_only_with_an_in_kernel_lapic() {
        let t = minimal_table(fake_host, true);
        assert_ne!(find(&t, 1).edx & LEAF1_EDX_APIC, 0);
    }

    #[test]
    fn minimal_table_never_offers_what_the_host_lacks() {
        let sparse = |leaf: u32| match leaf {
            0 => CpuidResult {
                eax: 1,
                ..ZERO_LEAF
            },
            1 => CpuidResult {
                edx: 1 << 0 | 1 << 25, // FPU, SSE
                ..ZERO_LEAF
            },
            0x8000_0000 => CpuidResult {
                eax: 0x8000_0001,
                ..ZERO_LEAF
            },
            0x8000_0001 => CpuidResult {
                edx: 1 << 29,
                ..ZERO_LEAF
            },
            _ => ZERO_LEAF,
        };
        let t = minimal_table(sparse, true);
        assert_eq!(find(&t, 1).edx, 1 << 0 | 1 << 25);
        assert_eq!(find(&t, 0x8000_0001).edx, 1 << 29);
        assert_eq!(find(&t, 0x8000_0008).eax, DEFAULT_PHYS_BITS | 48 << 8);
        assert!(t
            .iter()
            .all(|e| !(0x8000_0002..=0x8000_0004).contains(&e.function)));
    }

    #[test]
    fn minimal_table_of_this_host_is_accepted_shape() {
        let t = minimal_table(host_cpuid, false);
        assert_eq!(find(&t, 0).eax, 1);
        assert_eq!(find(&t, 1).ecx, 0);
        assert_eq!(find(&t, 0x8000_0008).eax >> 8 & 0xff, 48);
    }

    #[test]
    fn local_apic_bits_are_hidden() {
        let clock = feature_mask(KVM_FEATURE_CLOCKSOURCE2);
        let pv_eoi = feature_mask(KVM_FEATURE_PV_EOI);
        let mut e = vec![
            leaf(1, 0, 0),
            leaf(7, 0, 0),
            leaf(KVM_CPUID_FEATURES, 0, clock | pv_eoi),
        ];
        e[0].ecx = LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE | 1;
        e[0].edx = LEAF1_EDX_APIC | 1;
        e[1].edx = LEAF1_EDX_APIC;
        hide_local_apic(&mut e);
        assert_eq!((e[0].ecx, e[0].edx), (1, 1));
        assert_eq!(e[1].edx, LEAF1_EDX_APIC, "leaf 7 has no APIC bit");
        assert_eq!(e[2].eax, clock, "kvmclock needs no APIC");
        assert_eq!(fix_kvm_leaves(&mut e).features, Features(clock));
    }

    #[test]
    fn bits() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
    }
}
