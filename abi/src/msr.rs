//! KVM's paravirtual MSRs and the bits of the values written to them.
//!
//! Sources: `Documentation/virt/kvm/x86/msr.rst` and
//! `arch/x86/include/uapi/asm/kvm_para.h`.
//!
//! Most of these MSRs take a guest physical address of a memory area plus
//! an enable bit ([`KVM_MSR_ENABLED`]) in the low bits the alignment leaves
//! free; the areas themselves are defined in [`super::pvclock`] (kvmclock),
//! [`super::steal_time`] and, for async page faults, here
//! ([`KvmVcpuPvApfData`]).  Each MSR is only there if its
//! `KVM_FEATURE_*` bit in [`super::cpuid`] is set.

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// Deprecated wall clock MSR ([`super::pvclock::PvclockWallClock`]),
    /// outside KVM's MSR range; use `MSR_KVM_WALL_CLOCK_NEW`.
    MSR_KVM_WALL_CLOCK: u32 = 0x11;
    /// Deprecated per-vCPU time MSR
    /// ([`super::pvclock::PvclockVcpuTimeInfo`]); use
    /// `MSR_KVM_SYSTEM_TIME_NEW`.
    MSR_KVM_SYSTEM_TIME: u32 = 0x12;

    /// Bit 0 of an area-registering MSR value: the area is active.
    KVM_MSR_ENABLED: u64 = 1;

    /// Writing the 4-byte aligned address of a
    /// [`super::pvclock::PvclockWallClock`] makes the host fill it in once;
    /// the effect is global, not per vCPU.
    MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
    /// The 4-byte aligned address of this vCPU's
    /// [`super::pvclock::PvclockVcpuTimeInfo`], plus [`KVM_MSR_ENABLED`].
    MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    /// The 64-byte aligned address of this vCPU's [`KvmVcpuPvApfData`]
    /// plus the `KVM_ASYNC_PF_*` bits.
    MSR_KVM_ASYNC_PF_EN: u32 = 0x4b56_4d02;
    /// The 64-byte aligned address of this vCPU's
    /// [`super::steal_time::KvmStealTime`], plus [`KVM_MSR_ENABLED`].
    MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
    /// The 4-byte aligned address of this vCPU's zeroed PV EOI word, plus
    /// [`KVM_MSR_ENABLED`] (bit 1 reserved).
    MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
    /// Bit 0 enables (1) or disables (0) host-side polling when the vCPU
    /// halts.
    MSR_KVM_POLL_CONTROL: u32 = 0x4b56_4d05;
    /// The interrupt vector (`KVM_ASYNC_PF_VEC_MASK`) for 'page ready'
    /// notifications; set before enabling async page faults.
    MSR_KVM_ASYNC_PF_INT: u32 = 0x4b56_4d06;
    /// Writing 1 tells the host that the guest consumed the 'page ready'
    /// token and the host may deliver the next one.
    MSR_KVM_ASYNC_PF_ACK: u32 = 0x4b56_4d07;
    /// [`KVM_MIGRATION_READY`]: whether the guest allows live migration.
    MSR_KVM_MIGRATION_CONTROL: u32 = 0x4b56_4d08;

    /// The width of the reserved field between the enable bit and the
    /// address in an `MSR_KVM_STEAL_TIME` value: the address starts at bit
    /// `KVM_STEAL_ALIGNMENT_BITS + 1`, i.e. the area is 64-byte aligned.
    KVM_STEAL_ALIGNMENT_BITS: u32 = 5;
    /// The address bits of an `MSR_KVM_STEAL_TIME` value (bits 63-6).
    KVM_STEAL_VALID_BITS: u64 = u64::MAX << (KVM_STEAL_ALIGNMENT_BITS + 1);
    /// The reserved bits of an `MSR_KVM_STEAL_TIME` value (bits 5-1), which
    /// must be zero.
    KVM_STEAL_RESERVED_MASK: u64 = ((1 << KVM_STEAL_ALIGNMENT_BITS) - 1) << 1;

    /// `MSR_KVM_ASYNC_PF_EN` bit: async page faults are enabled.
    KVM_ASYNC_PF_ENABLED: u64 = 1 << 0;
    /// `MSR_KVM_ASYNC_PF_EN` bit: async page faults may also be injected
    /// while the guest runs in kernel mode (CPL 0).
    KVM_ASYNC_PF_SEND_ALWAYS: u64 = 1 << 1;
    /// `MSR_KVM_ASYNC_PF_EN` bit: deliver to L1 as #PF VM exits (needs
    /// `KVM_FEATURE_ASYNC_PF_VMEXIT`).
    KVM_ASYNC_PF_DELIVERY_AS_PF_VMEXIT: u64 = 1 << 2;
    /// `MSR_KVM_ASYNC_PF_EN` bit: deliver 'page ready' as an interrupt
    /// (needs `KVM_FEATURE_ASYNC_PF_INT`; without it nothing is delivered
    /// on current hosts).
    KVM_ASYNC_PF_DELIVERY_AS_INT: u64 = 1 << 3;
    /// The vector field of `MSR_KVM_ASYNC_PF_INT` (bits 7-0).
    KVM_ASYNC_PF_VEC_MASK: u64 = 0xff;

    /// `MSR_KVM_MIGRATION_CONTROL` bit: the guest may be live-migrated.
    KVM_MIGRATION_READY: u64 = 1 << 0;

    /// [`KvmVcpuPvApfData::flags`] value: the current #PF is an async 'page
    /// not present' event whose token is in CR2.
    KVM_PV_REASON_PAGE_NOT_PRESENT: u32 = 1;
    /// Reason code of a 'page ready' event (historically delivered through
    /// `flags` too; now the token arrives by interrupt).
    KVM_PV_REASON_PAGE_READY: u32 = 2;

    /// The bit number of the PV EOI flag in the guest's PV EOI word: when
    /// the host set it, the guest may clear it instead of writing the APIC
    /// EOI register.
    KVM_PV_EOI_BIT: u32 = 0;
    /// The PV EOI flag as a mask.
    KVM_PV_EOI_MASK: u32 = 1 << KVM_PV_EOI_BIT;
    /// PV EOI word value: the EOI write may be skipped.
    KVM_PV_EOI_ENABLED: u32 = KVM_PV_EOI_MASK;
    /// PV EOI word value: the EOI must be written to the APIC.
    KVM_PV_EOI_DISABLED: u32 = 0x0;
}

/// The first MSR of the range msr.rst reserves for KVM's own MSRs
/// (0x4b564d00, "KVM" in ASCII in the high bytes).
pub const KVM_CUSTOM_MSR_FIRST: u32 = 0x4b56_4d00;
/// The last MSR (inclusive) of the range reserved for KVM's own MSRs.
pub const KVM_CUSTOM_MSR_LAST: u32 = 0x4b56_4dff;

/// Whether `msr` lies in the range reserved for KVM's own MSRs (the two
/// deprecated kvmclock MSRs do not).
pub const fn is_kvm_custom_msr(msr: u32) -> bool {
    KVM_CUSTOM_MSR_FIRST <= msr && msr <= KVM_CUSTOM_MSR_LAST
}

abi_struct! {
    /// The per-vCPU async page fault area registered with
    /// `MSR_KVM_ASYNC_PF_EN` (Linux `struct kvm_vcpu_pv_apf_data`, 64 bytes;
    /// the guest must place it 64-byte aligned).
    pub struct KvmVcpuPvApfData {
        /// Written by the host when it injects a 'page not present' #PF
        /// ([`KVM_PV_REASON_PAGE_NOT_PRESENT`]); the guest clears it when done,
        /// so a zero here means an ordinary page fault.
        pub flags: u32,
        /// Written by the host with the token of a 'page ready' event; the
        /// guest clears it and then writes 1 to `MSR_KVM_ASYNC_PF_ACK`.
        pub token: u32,
        /// Reserved.
        pub pad: [u8; 56],
    }
}

impl KvmVcpuPvApfData {
    /// An all-zero area, usable in `static` initialisers.
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            token: 0,
            pad: [0; 56],
        }
    }
}

impl Default for KvmVcpuPvApfData {
    fn default() -> Self {
        Self::zeroed()
    }
}

assert_layout!(KvmVcpuPvApfData, size 64, { flags: 0, token: 4, pad: 8 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_time_msr_bits_partition_the_value() {
        // Address bits, reserved bits and the enable bit cover all 64 bits
        // exactly once.
        assert_eq!(KVM_STEAL_VALID_BITS & KVM_STEAL_RESERVED_MASK, 0);
        assert_eq!(KVM_STEAL_VALID_BITS & KVM_MSR_ENABLED, 0);
        assert_eq!(KVM_STEAL_RESERVED_MASK & KVM_MSR_ENABLED, 0);
        assert_eq!(
            KVM_STEAL_VALID_BITS | KVM_STEAL_RESERVED_MASK | KVM_MSR_ENABLED,
            u64::MAX
        );
    }

    #[test]
    fn kvm_msrs_are_in_the_custom_range_except_the_old_ones() {
        assert!(!is_kvm_custom_msr(MSR_KVM_WALL_CLOCK));
        assert!(!is_kvm_custom_msr(MSR_KVM_SYSTEM_TIME));
        for msr in [
            MSR_KVM_WALL_CLOCK_NEW,
            MSR_KVM_SYSTEM_TIME_NEW,
            MSR_KVM_ASYNC_PF_EN,
            MSR_KVM_STEAL_TIME,
            MSR_KVM_PV_EOI_EN,
            MSR_KVM_POLL_CONTROL,
            MSR_KVM_ASYNC_PF_INT,
            MSR_KVM_ASYNC_PF_ACK,
            MSR_KVM_MIGRATION_CONTROL,
        ] {
            assert!(is_kvm_custom_msr(msr), "{msr:#x}");
        }
        assert!(!is_kvm_custom_msr(KVM_CUSTOM_MSR_LAST + 1));
    }

    #[test]
    fn apf_data_default_is_zero() {
        assert_eq!(KvmVcpuPvApfData::default(), KvmVcpuPvApfData::zeroed());
        assert_eq!(KvmVcpuPvApfData::zeroed().pad, [0; 56]);
    }
}
