//! KVM hypercall numbers, their error codes and the memory layouts some of
//! them exchange.
//!
//! Sources: `Documentation/virt/kvm/x86/hypercalls.rst`,
//! `include/uapi/linux/kvm_para.h` (numbers and error codes) and
//! `arch/x86/include/uapi/asm/kvm_para.h` (x86 arguments and structures).
//!
//! On x86 the guest puts the number in rax and up to four arguments in rbx,
//! rcx, rdx and rsi, then executes `vmcall` (Intel) or `vmmcall` (AMD); the
//! host returns a value in rax, where failures are the *negated* error codes
//! below (see [`hypercall_error_value`]).  Some numbers are for other
//! architectures; they are kept so that none is ever reused by mistake.

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// The host does not know the hypercall number (KVM's own code; it is
    /// not the Linux `ENOSYS`).
    KVM_ENOSYS: i64 = 1000;
    /// A guest address argument could not be accessed (Linux `EFAULT`).
    KVM_EFAULT: i64 = 14;
    /// An argument is invalid (Linux `EINVAL`).
    KVM_EINVAL: i64 = 22;
    /// An argument is too large (Linux `E2BIG`).
    KVM_E2BIG: i64 = 7;
    /// The caller may not make this hypercall, e.g. from guest user mode
    /// (Linux `EPERM`).
    KVM_EPERM: i64 = 1;
    /// The hypercall exists but is not supported in this configuration.
    KVM_EOPNOTSUPP: i64 = 95;

    /// x86: exit to the host so that it looks for pending interrupts.
    KVM_HC_VAPIC_POLL_IRQ: u32 = 1;
    /// x86: batched MMU operations; deprecated, no longer implemented.
    KVM_HC_MMU_OP: u32 = 2;
    /// PowerPC: enumerate the available hypercalls.
    KVM_HC_FEATURES: u32 = 3;
    /// PowerPC: map the shared "magic" page.
    KVM_HC_PPC_MAP_MAGIC_PAGE: u32 = 4;
    /// x86: wake the vCPU with APIC ID a1 from HLT (a0 is reserved).
    KVM_HC_KICK_CPU: u32 = 5;
    /// MIPS: read the guest timer frequency.
    KVM_HC_MIPS_GET_CLOCK_FREQ: u32 = 6;
    /// MIPS: stop the virtual machine.
    KVM_HC_MIPS_EXIT_VM: u32 = 7;
    /// MIPS: write to the host console.
    KVM_HC_MIPS_CONSOLE_OUTPUT: u32 = 8;
    /// x86: copy a [`KvmClockPairing`] to guest physical address a0, for
    /// clock type a1.
    KVM_HC_CLOCK_PAIRING: u32 = 9;
    /// x86: send an IPI (ICR in a3) to the APIC IDs a2 + n for every bit n
    /// set in the 128-bit bitmap a1:a0; returns how many were delivered.
    KVM_HC_SEND_IPI: u32 = 10;
    /// x86: yield to the vCPU with APIC ID a0 if it is preempted.
    KVM_HC_SCHED_YIELD: u32 = 11;
    /// x86: change the attributes (a2, `KVM_MAP_GPA_RANGE_*`) of a1 4 KiB
    /// pages starting at guest physical address a0; handled by userspace.
    KVM_HC_MAP_GPA_RANGE: u32 = 12;

    /// The only clock type of `KVM_HC_CLOCK_PAIRING`: the host's
    /// `CLOCK_REALTIME`.
    KVM_CLOCK_PAIRING_WALLCLOCK: u64 = 0;

    /// `KVM_HC_MAP_GPA_RANGE` attribute: the range is mapped with 4 KiB
    /// pages.
    KVM_MAP_GPA_RANGE_PAGE_SZ_4K: u64 = 0;
    /// `KVM_HC_MAP_GPA_RANGE` attribute: the range is mapped with 2 MiB
    /// pages.
    KVM_MAP_GPA_RANGE_PAGE_SZ_2M: u64 = 1 << 0;
    /// `KVM_HC_MAP_GPA_RANGE` attribute: the range is mapped with 1 GiB
    /// pages.
    KVM_MAP_GPA_RANGE_PAGE_SZ_1G: u64 = 1 << 1;
    /// `KVM_HC_MAP_GPA_RANGE` attribute: the range holds encrypted
    /// (private) memory.
    KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = map_gpa_range_enc_stat(1);
    /// `KVM_HC_MAP_GPA_RANGE` attribute: the range holds plain-text (shared)
    /// memory.
    KVM_MAP_GPA_RANGE_DECRYPTED: u64 = map_gpa_range_enc_stat(0);

    /// The most operations one deprecated `KVM_HC_MMU_OP` call could carry.
    KVM_MAX_MMU_OP_BATCH: u32 = 32;
    /// Deprecated `KVM_HC_MMU_OP` operation: [`KvmMmuOpWritePte`].
    KVM_MMU_OP_WRITE_PTE: u32 = 1;
    /// Deprecated `KVM_HC_MMU_OP` operation: [`KvmMmuOpFlushTlb`].
    KVM_MMU_OP_FLUSH_TLB: u32 = 2;
    /// Deprecated `KVM_HC_MMU_OP` operation: [`KvmMmuOpReleasePt`].
    KVM_MMU_OP_RELEASE_PT: u32 = 3;
}

/// The encryption-status field of a `KVM_HC_MAP_GPA_RANGE` attribute
/// (Linux macro `KVM_MAP_GPA_RANGE_ENC_STAT(n)`): 1 for encrypted, 0 for
/// plain text.
pub const fn map_gpa_range_enc_stat(status: u64) -> u64 {
    status << 4
}

/// The rax value a host returns for a failed hypercall: the error code
/// negated, as a 64-bit register value.
pub const fn hypercall_error_value(kvm_error: i64) -> u64 {
    kvm_error.wrapping_neg() as u64
}

abi_struct! {
    /// The host time at one instant, as `KVM_HC_CLOCK_PAIRING` writes it into
    /// guest memory (Linux `struct kvm_clock_pairing`, 64 bytes).
    #[derive(Default)]
    pub struct KvmClockPairing {
        /// Seconds of the requested host clock.
        pub sec: i64,
        /// Nanoseconds within that second.
        pub nsec: i64,
        /// The guest TSC value at the same instant.
        pub tsc: u64,
        /// Unused, zero.
        pub flags: u32,
        /// Reserved.
        pub pad: [u32; 9],
    }
}

assert_layout!(KvmClockPairing, size 64, { sec: 0, nsec: 8, tsc: 16, flags: 24, pad: 28 });

abi_struct! {
    /// The header of every deprecated `KVM_HC_MMU_OP` operation (Linux
    /// `struct kvm_mmu_op_header`).
    #[derive(Default)]
    pub struct KvmMmuOpHeader {
        /// One of the `KVM_MMU_OP_*` operations.
        pub op: u32,
        /// Reserved.
        pub pad: u32,
    }
}

assert_layout!(KvmMmuOpHeader, size 8, { op: 0, pad: 4 });

abi_struct! {
    /// Deprecated `KVM_MMU_OP_WRITE_PTE` (Linux `struct kvm_mmu_op_write_pte`).
    #[derive(Default)]
    pub struct KvmMmuOpWritePte {
        /// `op` is [`KVM_MMU_OP_WRITE_PTE`].
        pub header: KvmMmuOpHeader,
        /// Guest physical address of the page table entry.
        pub pte_phys: u64,
        /// The value to store there.
        pub pte_val: u64,
    }
}

assert_layout!(KvmMmuOpWritePte, size 24, { header: 0, pte_phys: 8, pte_val: 16 });

abi_struct! {
    /// Deprecated `KVM_MMU_OP_FLUSH_TLB` (Linux `struct kvm_mmu_op_flush_tlb`).
    #[derive(Default)]
    pub struct KvmMmuOpFlushTlb {
        /// `op` is [`KVM_MMU_OP_FLUSH_TLB`].
        pub header: KvmMmuOpHeader,
    }
}

assert_layout!(KvmMmuOpFlushTlb, size 8, { header: 0 });

abi_struct! {
    /// Deprecated `KVM_MMU_OP_RELEASE_PT` (Linux `struct kvm_mmu_op_release_pt`).
    #[derive(Default)]
    pub struct KvmMmuOpReleasePt {
        /// `op` is [`KVM_MMU_OP_RELEASE_PT`].
        pub header: KvmMmuOpHeader,
        /// Guest physical address of the page table the host may forget.
        pub pt_phys: u64,
    }
}

assert_layout!(KvmMmuOpReleasePt, size 16, { header: 0, pt_phys: 8 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_values_are_negated_codes() {
        assert_eq!(hypercall_error_value(KVM_ENOSYS), (-1000i64) as u64);
        assert_eq!(hypercall_error_value(KVM_EOPNOTSUPP) as i64, -95);
        assert_eq!(hypercall_error_value(0), 0);
    }

    #[test]
    fn map_gpa_range_attributes_match_hypercalls_rst() {
        // hypercalls.rst: bits 3:0 page size, bit 4 encrypted.
        assert_eq!(KVM_MAP_GPA_RANGE_ENCRYPTED, 1 << 4);
        assert_eq!(KVM_MAP_GPA_RANGE_DECRYPTED, 0);
        assert_eq!(KVM_MAP_GPA_RANGE_PAGE_SZ_1G & !0xf, 0);
    }
}
