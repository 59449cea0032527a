//! The CPUID leaves through which KVM announces itself and its paravirtual
//! features.
//!
//! Sources: `Documentation/virt/kvm/x86/cpuid.rst` and
//! `arch/x86/include/uapi/asm/kvm_para.h`; the search for the hypervisor
//! leaves follows `hypervisor_cpuid_base()` in `arch/x86/include/asm/cpuid.h`.
//!
//! As in Linux, every `KVM_FEATURE_*` and `KVM_HINTS_*` constant is a *bit
//! number* in a register, not a mask.  Test a register value with
//! [`Features::has`] / [`Hints::has`], or build a mask with [`feature_mask`].

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// Leaf whose ebx, ecx, edx hold [`KVM_SIGNATURE`] and whose eax holds
    /// the highest KVM leaf (see [`max_kvm_leaf`] for old hosts that leave
    /// eax zero).
    KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
    /// Leaf whose eax holds the `KVM_FEATURE_*` bits and whose edx holds the
    /// `KVM_HINTS_*` bits.
    KVM_CPUID_FEATURES: u32 = 0x4000_0001;

    /// kvmclock at the deprecated MSRs 0x11 and 0x12.
    KVM_FEATURE_CLOCKSOURCE: u32 = 0;
    /// Port I/O needs no delays.
    KVM_FEATURE_NOP_IO_DELAY: u32 = 1;
    /// The MMU-operation hypercall; deprecated and no longer offered.
    KVM_FEATURE_MMU_OP: u32 = 2;
    /// kvmclock at `MSR_KVM_WALL_CLOCK_NEW` and `MSR_KVM_SYSTEM_TIME_NEW`.
    KVM_FEATURE_CLOCKSOURCE2: u32 = 3;
    /// Asynchronous page faults, enabled through `MSR_KVM_ASYNC_PF_EN`.
    KVM_FEATURE_ASYNC_PF: u32 = 4;
    /// Steal time accounting, enabled through `MSR_KVM_STEAL_TIME`.
    KVM_FEATURE_STEAL_TIME: u32 = 5;
    /// Paravirtual end-of-interrupt, enabled through `MSR_KVM_PV_EOI_EN`.
    KVM_FEATURE_PV_EOI: u32 = 6;
    /// Halted vCPUs can be woken with `KVM_HC_KICK_CPU` (paravirtual
    /// spinlocks).
    KVM_FEATURE_PV_UNHALT: u32 = 7;
    /// Paravirtual remote TLB flush through the steal-time area.
    KVM_FEATURE_PV_TLB_FLUSH: u32 = 9;
    /// Async page faults can be delivered to L1 as #PF VM exits.
    KVM_FEATURE_ASYNC_PF_VMEXIT: u32 = 10;
    /// Multicast IPIs through `KVM_HC_SEND_IPI`.
    KVM_FEATURE_PV_SEND_IPI: u32 = 11;
    /// Host-side HLT polling can be switched off through
    /// `MSR_KVM_POLL_CONTROL`.
    KVM_FEATURE_POLL_CONTROL: u32 = 12;
    /// Directed yield through `KVM_HC_SCHED_YIELD`.
    KVM_FEATURE_PV_SCHED_YIELD: u32 = 13;
    /// 'Page ready' async page faults delivered as an interrupt, with
    /// `MSR_KVM_ASYNC_PF_INT` and `MSR_KVM_ASYNC_PF_ACK`.
    KVM_FEATURE_ASYNC_PF_INT: u32 = 14;
    /// MSI address bits 11-5 extend the destination APIC ID.
    KVM_FEATURE_MSI_EXT_DEST_ID: u32 = 15;
    /// The `KVM_HC_MAP_GPA_RANGE` hypercall.
    KVM_FEATURE_HC_MAP_GPA_RANGE: u32 = 16;
    /// `MSR_KVM_MIGRATION_CONTROL`.
    KVM_FEATURE_MIGRATION_CONTROL: u32 = 17;
    /// The host guarantees that kvmclock readings do not go backwards
    /// across vCPUs, which is what makes `PVCLOCK_TSC_STABLE_BIT` in the
    /// pvclock flags meaningful.
    KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 24;

    /// vCPUs are never preempted for an unlimited time (dedicated pCPUs),
    /// so the guest may skip paravirtual spinlocks and similar remedies.
    KVM_HINTS_REALTIME: u32 = 0;
}

/// The signature KVM returns in ebx, ecx, edx of [`KVM_CPUID_SIGNATURE`]:
/// "KVMKVMKVM" padded with NULs to twelve bytes (Linux `KVM_SIGNATURE`,
/// without the C string's own terminating NUL).
pub const KVM_SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";

/// ebx of [`KVM_CPUID_SIGNATURE`] on KVM: the first four signature bytes,
/// little endian.
pub const KVM_SIGNATURE_EBX: u32 = signature_register(&KVM_SIGNATURE, 0);
/// ecx of [`KVM_CPUID_SIGNATURE`] on KVM: signature bytes 4 to 7.
pub const KVM_SIGNATURE_ECX: u32 = signature_register(&KVM_SIGNATURE, 1);
/// edx of [`KVM_CPUID_SIGNATURE`] on KVM: signature bytes 8 to 11.
pub const KVM_SIGNATURE_EDX: u32 = signature_register(&KVM_SIGNATURE, 2);

/// The first leaf at which a hypervisor may place its signature leaf.
///
/// A host can expose several hypervisor interfaces (e.g. Hyper-V's and
/// KVM's), each in its own block of 0x100 leaves, so a guest looks for KVM's
/// signature at every block start in
/// `HYPERVISOR_CPUID_BASE_FIRST..HYPERVISOR_CPUID_BASE_END`, as Linux does.
pub const HYPERVISOR_CPUID_BASE_FIRST: u32 = 0x4000_0000;
/// The end (exclusive) of the range searched for hypervisor signature leaves.
pub const HYPERVISOR_CPUID_BASE_END: u32 = 0x4001_0000;
/// The distance between two candidate hypervisor signature leaves.
pub const HYPERVISOR_CPUID_BASE_STEP: u32 = 0x100;

/// Every leaf at which a hypervisor signature may be found, in the order
/// Linux probes them; the first one whose signature matches wins.
pub fn hypervisor_cpuid_bases() -> impl Iterator<Item = u32> {
    (HYPERVISOR_CPUID_BASE_FIRST..HYPERVISOR_CPUID_BASE_END)
        .step_by(HYPERVISOR_CPUID_BASE_STEP as usize)
}

/// Packs four signature bytes into the register that carries them (CPUID
/// stores strings little endian: the first byte is the low byte of ebx).
const fn signature_register(signature: &[u8; 12], register: usize) -> u32 {
    let first = register * 4;
    u32::from_le_bytes([
        signature[first],
        signature[first + 1],
        signature[first + 2],
        signature[first + 3],
    ])
}

/// Reassembles the twelve signature bytes from ebx, ecx, edx of a signature
/// leaf (any hypervisor's, so that unknown ones can be logged).
pub const fn decode_signature(ebx: u32, ecx: u32, edx: u32) -> [u8; 12] {
    let [b0, b1, b2, b3] = ebx.to_le_bytes();
    let [c0, c1, c2, c3] = ecx.to_le_bytes();
    let [d0, d1, d2, d3] = edx.to_le_bytes();
    [b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3]
}

/// Whether ebx, ecx, edx of a signature leaf spell [`KVM_SIGNATURE`],
/// including the NUL padding (as Linux compares all twelve bytes).
pub const fn is_kvm_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    ebx == KVM_SIGNATURE_EBX && ecx == KVM_SIGNATURE_ECX && edx == KVM_SIGNATURE_EDX
}

/// The highest KVM leaf, given the signature leaf `base` and the eax it
/// returned.  Old hosts return eax = 0, which cpuid.rst says to read as
/// "the features leaf exists".
pub const fn max_kvm_leaf(base: u32, eax: u32) -> u32 {
    if eax == 0 {
        features_leaf(base)
    } else {
        eax
    }
}

/// The features leaf belonging to the signature leaf found at `base`.
///
/// Linux forms it as `base | KVM_CPUID_FEATURES`, which is `base + 1` for
/// every candidate base; this does the same.
pub const fn features_leaf(base: u32) -> u32 {
    base | KVM_CPUID_FEATURES
}

/// The mask of a `KVM_FEATURE_*` or `KVM_HINTS_*` bit number; zero for bit
/// numbers that do not fit in a 32-bit register.
pub const fn feature_mask(bit: u32) -> u32 {
    match 1u32.checked_shl(bit) {
        Some(mask) => mask,
        None => 0,
    }
}

/// A short lowercase name, for logs, of every `KVM_FEATURE_*` bit: the Linux
/// name without its prefix.
pub const FEATURE_NAMES: &[(u32, &str)] = &[
    (KVM_FEATURE_CLOCKSOURCE, "clocksource"),
    (KVM_FEATURE_NOP_IO_DELAY, "nop_io_delay"),
    (KVM_FEATURE_MMU_OP, "mmu_op"),
    (KVM_FEATURE_CLOCKSOURCE2, "clocksource2"),
    (KVM_FEATURE_ASYNC_PF, "async_pf"),
    (KVM_FEATURE_STEAL_TIME, "steal_time"),
    (KVM_FEATURE_PV_EOI, "pv_eoi"),
    (KVM_FEATURE_PV_UNHALT, "pv_unhalt"),
    (KVM_FEATURE_PV_TLB_FLUSH, "pv_tlb_flush"),
    (KVM_FEATURE_ASYNC_PF_VMEXIT, "async_pf_vmexit"),
    (KVM_FEATURE_PV_SEND_IPI, "pv_send_ipi"),
    (KVM_FEATURE_POLL_CONTROL, "poll_control"),
    (KVM_FEATURE_PV_SCHED_YIELD, "pv_sched_yield"),
    (KVM_FEATURE_ASYNC_PF_INT, "async_pf_int"),
    (KVM_FEATURE_MSI_EXT_DEST_ID, "msi_ext_dest_id"),
    (KVM_FEATURE_HC_MAP_GPA_RANGE, "hc_map_gpa_range"),
    (KVM_FEATURE_MIGRATION_CONTROL, "migration_control"),
    (KVM_FEATURE_CLOCKSOURCE_STABLE_BIT, "clocksource_stable_bit"),
];

/// A short lowercase name, for logs, of every `KVM_HINTS_*` bit.
pub const HINT_NAMES: &[(u32, &str)] = &[(KVM_HINTS_REALTIME, "realtime")];

/// Defines a newtype over one CPUID register whose bits are named by a
/// `(bit number, name)` table.
macro_rules! cpuid_bit_register {
    ($(#[$attr:meta])* $type:ident, $names:ident) => {
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $type(pub u32);

        impl $type {
            /// Whether bit number `bit` is set; false for bit numbers beyond
            /// the register.
            pub const fn has(self, bit: u32) -> bool {
                self.0 & feature_mask(bit) != 0
            }

            /// This value with bit number `bit` set as well, for a host that
            /// assembles what it offers.
            pub const fn with(self, bit: u32) -> Self {
                Self(self.0 | feature_mask(bit))
            }

            /// The names of the set bits that Linux defines, lowest bit
            /// first.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                $names
                    .iter()
                    .filter(move |&&(bit, _)| self.has(bit))
                    .map(|&(_, name)| name)
            }

            /// The set bits that have no name in this crate, so that logs
            /// can show what a newer host offers.
            pub fn unknown_bits(self) -> u32 {
                $names
                    .iter()
                    .fold(self.0, |rest, &(bit, _)| rest & !feature_mask(bit))
            }
        }
    };
}

cpuid_bit_register!(
    /// The eax value of [`KVM_CPUID_FEATURES`]: the `KVM_FEATURE_*` bits.
    Features,
    FEATURE_NAMES
);

cpuid_bit_register!(
    /// The edx value of [`KVM_CPUID_FEATURES`]: the `KVM_HINTS_*` bits.
    Hints,
    HINT_NAMES
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_signature_registers_are_the_documented_values() {
        // The register values cpuid.rst lists for the signature leaf.
        assert_eq!(KVM_SIGNATURE_EBX, 0x4b4d_564b);
        assert_eq!(KVM_SIGNATURE_ECX, 0x564b_4d56);
        assert_eq!(KVM_SIGNATURE_EDX, 0x4d);
    }

    #[test]
    fn decode_signature_inverts_the_register_split() {
        let bytes = decode_signature(KVM_SIGNATURE_EBX, KVM_SIGNATURE_ECX, KVM_SIGNATURE_EDX);
        assert_eq!(&bytes, b"KVMKVMKVM\0\0\0");
        assert!(is_kvm_signature(
            KVM_SIGNATURE_EBX,
            KVM_SIGNATURE_ECX,
            KVM_SIGNATURE_EDX
        ));
    }

    #[test]
    fn other_hypervisor_signatures_are_decoded_but_not_kvm() {
        // Hyper-V's signature leaf spells "Microsoft Hv".
        let hyperv = *b"Microsoft Hv";
        let ebx = u32::from_le_bytes([hyperv[0], hyperv[1], hyperv[2], hyperv[3]]);
        let ecx = u32::from_le_bytes([hyperv[4], hyperv[5], hyperv[6], hyperv[7]]);
        let edx = u32::from_le_bytes([hyperv[8], hyperv[9], hyperv[10], hyperv[11]]);
        assert_eq!(decode_signature(ebx, ecx, edx), hyperv);
        assert!(!is_kvm_signature(ebx, ecx, edx));
        // The padding matters: "KVMKVMKVM" followed by garbage is not KVM.
        assert!(!is_kvm_signature(
            KVM_SIGNATURE_EBX,
            KVM_SIGNATURE_ECX,
            KVM_SIGNATURE_EDX | 0x100
        ));
    }

    #[test]
    fn hypervisor_bases_cover_the_linux_search_range() {
        let mut bases = hypervisor_cpuid_bases();
        assert_eq!(bases.next(), Some(KVM_CPUID_SIGNATURE));
        assert_eq!(bases.next(), Some(KVM_CPUID_SIGNATURE + 0x100));
        assert_eq!(bases.last(), Some(0x4000_ff00));
        assert_eq!(hypervisor_cpuid_bases().count(), 0x100);
        assert!(hypervisor_cpuid_bases().all(|base| features_leaf(base) == base + 1));
    }

    #[test]
    fn max_kvm_leaf_reads_zero_as_features_leaf() {
        assert_eq!(max_kvm_leaf(KVM_CPUID_SIGNATURE, 0), KVM_CPUID_FEATURES);
        assert_eq!(max_kvm_leaf(0x4000_0100, 0), 0x4000_0101);
        assert_eq!(max_kvm_leaf(KVM_CPUID_SIGNATURE, 0x4000_0010), 0x4000_0010);
    }

    #[test]
    fn features_test_bit_numbers_not_masks() {
        let offered =
            Features(feature_mask(KVM_FEATURE_CLOCKSOURCE2) | feature_mask(KVM_FEATURE_PV_EOI));
        assert!(offered.has(KVM_FEATURE_CLOCKSOURCE2));
        assert!(offered.has(KVM_FEATURE_PV_EOI));
        assert!(!offered.has(KVM_FEATURE_CLOCKSOURCE));
        assert!(!offered.has(KVM_FEATURE_STEAL_TIME));
        assert!(!Features(u32::MAX).has(32));
        assert!(!Features(u32::MAX).has(u32::MAX));
        assert_eq!(feature_mask(KVM_FEATURE_CLOCKSOURCE_STABLE_BIT), 1 << 24);
        assert_eq!(feature_mask(32), 0);
    }

    #[test]
    fn features_with_builds_the_register() {
        let built = Features::default()
            .with(KVM_FEATURE_CLOCKSOURCE2)
            .with(KVM_FEATURE_CLOCKSOURCE_STABLE_BIT);
        assert_eq!(built, Features((1 << 3) | (1 << 24)));
        assert_eq!(Hints::default().with(KVM_HINTS_REALTIME), Hints(1));
    }

    #[test]
    fn features_names_lists_known_set_bits_in_bit_order() {
        let offered = Features::default()
            .with(KVM_FEATURE_STEAL_TIME)
            .with(KVM_FEATURE_CLOCKSOURCE2)
            .with(30);
        let mut names = offered.names();
        assert_eq!(names.next(), Some("clocksource2"));
        assert_eq!(names.next(), Some("steal_time"));
        assert_eq!(names.next(), None);
        assert_eq!(offered.unknown_bits(), 1 << 30);
        assert_eq!(Hints(1).names().next(), Some("realtime"));
        assert_eq!(Hints(u32::MAX).unknown_bits(), u32::MAX - 1);
    }

    /// Every `KVM_FEATURE_*` / `KVM_HINTS_*` constant has a name-table entry
    /// with its own bit, and the name is the lowercase Linux suffix.
    #[test]
    fn name_tables_cover_every_bit_constant() {
        for (prefix, names) in [("KVM_FEATURE_", FEATURE_NAMES), ("KVM_HINTS_", HINT_NAMES)] {
            let constants = LINUX_CONSTANTS
                .iter()
                .filter_map(|&(c_name, value)| Some((c_name.strip_prefix(prefix)?, value)));
            let mut count = 0;
            for (suffix, bit) in constants {
                count += 1;
                let entry = names
                    .iter()
                    .find(|&&(_, name)| name.eq_ignore_ascii_case(suffix));
                let Some(&(named_bit, name)) = entry else {
                    panic!("{prefix}{suffix} has no entry in its name table");
                };
                assert_eq!(u64::from(named_bit), bit, "{name}");
                assert!(
                    !name.bytes().any(|byte| byte.is_ascii_uppercase()),
                    "{name}"
                );
            }
            assert_eq!(
                count,
                names.len(),
                "name table of {prefix} has extra entries"
            );
        }
    }
}
