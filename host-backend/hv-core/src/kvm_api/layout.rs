//! The structs of the KVM userspace API that `/dev/pvrs` exchanges in its
//! first version, with KVM's names and x86-64 layouts.
//!
//! Sources: `include/uapi/linux/kvm.h` and
//! `arch/x86/include/uapi/asm/kvm.h` of Linux 6.12, and for what each
//! struct means, `Documentation/virt/kvm/api.rst` section 4 (the ioctl
//! that uses it is named on each struct).  `tests/kvm_uapi_header.rs`
//! compares every size and offset with what a C compiler makes of those
//! headers.
//!
//! C unions become one field of the union's size, named after the member
//! KVM uses on x86 (`kvm_irq_level::irq`, also `status`); C flexible array
//! members become zero-length arrays (the entries follow the header in the
//! same user buffer and are decoded one by one, see [`super::decode`]).
//! A C field named `type` is `type_` here.

use super::constants::{KVM_APIC_REG_SIZE, KVM_MAX_XCRS, KVM_NR_INTERRUPTS};
use super::wire::{Reader, Wire, Writer};

kvm_struct! {
    /// KVM_GET_REGS / KVM_SET_REGS (api.rst 4.11, 4.12): the general
    /// purpose registers, RIP and RFLAGS.
    pub struct kvm_regs {
        pub rax: u64,
        pub rbx: u64,
        pub rcx: u64,
        pub rdx: u64,
        pub rsi: u64,
        pub rdi: u64,
        pub rsp: u64,
        pub rbp: u64,
        pub r8: u64,
        pub r9: u64,
        pub r10: u64,
        pub r11: u64,
        pub r12: u64,
        pub r13: u64,
        pub r14: u64,
        pub r15: u64,
        pub rip: u64,
        pub rflags: u64,
    }
}

kvm_struct! {
    /// A segment register in unpacked form (part of [`kvm_sregs`]).
    pub struct kvm_segment {
        pub base: u64,
        pub limit: u32,
        pub selector: u16,
        pub type_: u8,
        pub present: u8,
        pub dpl: u8,
        pub db: u8,
        pub s: u8,
        pub l: u8,
        pub g: u8,
        pub avl: u8,
        pub unusable: u8,
        pub padding: u8,
    }
}

kvm_struct! {
    /// A descriptor table register, GDTR or IDTR (part of [`kvm_sregs`]).
    pub struct kvm_dtable {
        pub base: u64,
        pub limit: u16,
        pub padding: [u16; 3],
    }
}

kvm_struct! {
    /// KVM_GET_SREGS / KVM_SET_SREGS (api.rst 4.13, 4.14): segment and
    /// control registers, EFER, the APIC base, and the bitmap of a pending
    /// external interrupt (at most one bit set).
    pub struct kvm_sregs {
        pub cs: kvm_segment,
        pub ds: kvm_segment,
        pub es: kvm_segment,
        pub fs: kvm_segment,
        pub gs: kvm_segment,
        pub ss: kvm_segment,
        pub tr: kvm_segment,
        pub ldt: kvm_segment,
        pub gdt: kvm_dtable,
        pub idt: kvm_dtable,
        pub cr0: u64,
        pub cr2: u64,
        pub cr3: u64,
        pub cr4: u64,
        pub cr8: u64,
        pub efer: u64,
        pub apic_base: u64,
        pub interrupt_bitmap: [u64; KVM_NR_INTERRUPTS.div_ceil(64) as usize],
    }
}

kvm_struct! {
    /// KVM_GET_FPU / KVM_SET_FPU (api.rst 4.22, 4.23): the x87 and SSE
    /// state in FXSAVE terms.
    pub struct kvm_fpu {
        pub fpr: [[u8; 16]; 8],
        pub fcw: u16,
        pub fsw: u16,
        /// The abridged tag word, as FXSAVE stores it.
        pub ftwx: u8,
        pub pad1: u8,
        pub last_opcode: u16,
        pub last_ip: u64,
        pub last_dp: u64,
        pub xmm: [[u8; 16]; 16],
        pub mxcsr: u32,
        pub pad2: u32,
    }
}

kvm_struct! {
    /// KVM_SET_USER_MEMORY_REGION (api.rst 4.35).
    pub struct kvm_userspace_memory_region {
        /// Bits 0-15: the slot id; bits 16-31: the address space id.
        pub slot: u32,
        pub flags: u32,
        pub guest_phys_addr: u64,
        pub memory_size: u64,
        pub userspace_addr: u64,
    }
}

kvm_struct! {
    /// KVM_SET_USER_MEMORY_REGION2 (api.rst 4.140): the first five fields
    /// are those of [`kvm_userspace_memory_region`].
    pub struct kvm_userspace_memory_region2 {
        pub slot: u32,
        pub flags: u32,
        pub guest_phys_addr: u64,
        pub memory_size: u64,
        pub userspace_addr: u64,
        pub guest_memfd_offset: u64,
        pub guest_memfd: u32,
        pub pad1: u32,
        pub pad2: [u64; 14],
    }
}

kvm_struct! {
    /// One CPUID leaf/subleaf (the entries of [`kvm_cpuid2`]).
    pub struct kvm_cpuid_entry2 {
        pub function: u32,
        pub index: u32,
        pub flags: u32,
        pub eax: u32,
        pub ebx: u32,
        pub ecx: u32,
        pub edx: u32,
        pub padding: [u32; 3],
    }
}

kvm_struct! {
    /// The header of KVM_SET_CPUID2 / KVM_GET_CPUID2 /
    /// KVM_GET_SUPPORTED_CPUID (api.rst 4.20 and 4.46, which describe the
    /// `kvm_cpuid` predecessor and the struct itself): `nent` entries of
    /// [`kvm_cpuid_entry2`] follow.
    pub struct kvm_cpuid2 {
        pub nent: u32,
        pub padding: u32,
        pub entries: [kvm_cpuid_entry2; 0],
    }
}

kvm_struct! {
    /// One MSR index and value (the entries of [`kvm_msrs`]).
    pub struct kvm_msr_entry {
        pub index: u32,
        pub reserved: u32,
        pub data: u64,
    }
}

kvm_struct! {
    /// The header of KVM_GET_MSRS / KVM_SET_MSRS (api.rst 4.18, 4.19):
    /// `nmsrs` entries of [`kvm_msr_entry`] follow.
    pub struct kvm_msrs {
        pub nmsrs: u32,
        pub pad: u32,
        pub entries: [kvm_msr_entry; 0],
    }
}

kvm_struct! {
    /// The header of KVM_GET_MSR_INDEX_LIST and
    /// KVM_GET_MSR_FEATURE_INDEX_LIST (api.rst 4.3): in, the room for
    /// indices; out, the number of indices, which follow as `u32`s.
    pub struct kvm_msr_list {
        pub nmsrs: u32,
        pub indices: [u32; 0],
    }
}

kvm_struct! {
    /// The anonymous `exception` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_exception {
        pub injected: u8,
        pub nr: u8,
        pub has_error_code: u8,
        pub pending: u8,
        pub error_code: u32,
    }
}

kvm_struct! {
    /// The anonymous `interrupt` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_interrupt {
        pub injected: u8,
        pub nr: u8,
        pub soft: u8,
        pub shadow: u8,
    }
}

kvm_struct! {
    /// The anonymous `nmi` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_nmi {
        pub injected: u8,
        pub pending: u8,
        pub masked: u8,
        pub pad: u8,
    }
}

kvm_struct! {
    /// The anonymous `smi` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_smi {
        pub smm: u8,
        pub pending: u8,
        pub smm_inside_nmi: u8,
        pub latched_init: u8,
    }
}

kvm_struct! {
    /// The anonymous `triple_fault` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_triple_fault {
        pub pending: u8,
    }
}

kvm_struct! {
    /// KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS (api.rst 4.31, 4.32):
    /// pending and injected exceptions, interrupts, NMIs and SMIs.
    pub struct kvm_vcpu_events {
        pub exception: kvm_vcpu_events_exception,
        pub interrupt: kvm_vcpu_events_interrupt,
        pub nmi: kvm_vcpu_events_nmi,
        pub sipi_vector: u32,
        pub flags: u32,
        pub smi: kvm_vcpu_events_smi,
        pub triple_fault: kvm_vcpu_events_triple_fault,
        pub reserved: [u8; 26],
        pub exception_has_payload: u8,
        pub exception_payload: u64,
    }
}

kvm_struct! {
    /// The registers `struct kvm_run` can carry across KVM_RUN when
    /// KVM_CAP_SYNC_REGS is enabled (api.rst 6.74).
    pub struct kvm_sync_regs {
        pub regs: kvm_regs,
        pub sregs: kvm_sregs,
        pub events: kvm_vcpu_events,
    }
}

kvm_struct! {
    /// KVM_IOEVENTFD (api.rst 4.59).
    pub struct kvm_ioeventfd {
        pub datamatch: u64,
        pub addr: u64,
        /// 1, 2, 4 or 8 bytes, or 0 for any access length.
        pub len: u32,
        pub fd: i32,
        pub flags: u32,
        pub pad: [u8; 36],
    }
}

kvm_struct! {
    /// KVM_IRQFD (api.rst 4.75).
    pub struct kvm_irqfd {
        pub fd: u32,
        pub gsi: u32,
        pub flags: u32,
        pub resamplefd: u32,
        pub pad: [u8; 16],
    }
}

kvm_struct! {
    /// One extended control register (the entries of [`kvm_xcrs`]).
    pub struct kvm_xcr {
        pub xcr: u32,
        pub reserved: u32,
        pub value: u64,
    }
}

kvm_struct! {
    /// KVM_GET_XCRS / KVM_SET_XCRS (api.rst 4.44, 4.45).
    pub struct kvm_xcrs {
        pub nr_xcrs: u32,
        pub flags: u32,
        pub xcrs: [kvm_xcr; KVM_MAX_XCRS as usize],
        pub padding: [u64; 16],
    }
}

kvm_struct! {
    /// KVM_GET_DEBUGREGS / KVM_SET_DEBUGREGS (api.rst 4.33, 4.34).
    pub struct kvm_debugregs {
        pub db: [u64; 4],
        pub dr6: u64,
        pub dr7: u64,
        pub flags: u64,
        pub reserved: [u64; 9],
    }
}

kvm_struct! {
    /// KVM_GET_MP_STATE / KVM_SET_MP_STATE (api.rst 4.38, 4.39).
    pub struct kvm_mp_state {
        pub mp_state: u32,
    }
}

kvm_struct! {
    /// KVM_GET_CLOCK / KVM_SET_CLOCK (api.rst 4.29, 4.30): kvmclock's
    /// value, and optionally the host's realtime and TSC at that moment.
    pub struct kvm_clock_data {
        pub clock: u64,
        pub flags: u32,
        pub pad0: u32,
        pub realtime: u64,
        pub host_tsc: u64,
        pub pad: [u32; 4],
    }
}

kvm_struct! {
    /// KVM_GET_LAPIC / KVM_SET_LAPIC (api.rst 4.57, 4.58): the APIC
    /// register page, in xAPIC layout (x2APIC IDs with KVM_CAP_X2APIC_API).
    pub struct kvm_lapic_state {
        pub regs: [u8; KVM_APIC_REG_SIZE as usize],
    }
}

kvm_struct! {
    /// KVM_CREATE_PIT2 (api.rst 4.71, the second of that number).
    pub struct kvm_pit_config {
        pub flags: u32,
        pub pad: [u32; 15],
    }
}

kvm_struct! {
    /// KVM_IRQ_LINE / KVM_IRQ_LINE_STATUS (api.rst 4.25).
    pub struct kvm_irq_level {
        /// The GSI on the way in; with KVM_IRQ_LINE_STATUS, the signed
        /// delivery status on the way out (the C union's `status`).
        pub irq: u32,
        pub level: u32,
    }
}

impl kvm_irq_level {
    /// The C union member `status`, which KVM_IRQ_LINE_STATUS writes back
    /// over `irq`: > 0 delivered, 0 coalesced, < 0 masked or failed.
    pub const fn status(&self) -> i32 {
        self.irq as i32
    }

    pub fn set_status(&mut self, status: i32) {
        self.irq = status as u32;
    }
}

kvm_struct! {
    /// KVM_ENABLE_CAP (api.rst 4.37).
    pub struct kvm_enable_cap {
        pub cap: u32,
        pub flags: u32,
        pub args: [u64; 4],
        pub pad: [u8; 64],
    }
}

kvm_struct! {
    /// KVM_INTERRUPT (api.rst 4.16): a vector to inject, without an
    /// in-kernel local APIC.
    pub struct kvm_interrupt {
        pub irq: u32,
    }
}

kvm_struct! {
    /// The header of KVM_SET_SIGNAL_MASK (api.rst 4.21): `len` bytes of
    /// the kernel's `sigset_t` follow.
    pub struct kvm_signal_mask {
        pub len: u32,
        pub sigset: [u8; 0],
    }
}

kvm_struct! {
    /// One GSI route (the entries of [`kvm_irq_routing`]); `u` is a union
    /// whose meaning `type_` selects, see [`super::decode::GsiRoute`].  The
    /// union's s390 member holds `__u64`s, hence the alignment of 8.
    #[repr(align(8))]
    pub struct kvm_irq_routing_entry {
        pub gsi: u32,
        pub type_: u32,
        pub flags: u32,
        pub pad: u32,
        pub u: [u32; 8],
    }
}

kvm_struct! {
    /// The `irqchip` member of [`kvm_irq_routing_entry::u`].
    pub struct kvm_irq_routing_irqchip {
        pub irqchip: u32,
        pub pin: u32,
    }
}

kvm_struct! {
    /// The `msi` member of [`kvm_irq_routing_entry::u`].
    pub struct kvm_irq_routing_msi {
        pub address_lo: u32,
        pub address_hi: u32,
        pub data: u32,
        /// The C union of `pad` and `devid`; x86 has no device ids.
        pub devid: u32,
    }
}

kvm_struct! {
    /// The header of KVM_SET_GSI_ROUTING (api.rst 4.52): `nr` entries of
    /// [`kvm_irq_routing_entry`] follow.
    pub struct kvm_irq_routing {
        pub nr: u32,
        pub flags: u32,
        pub entries: [kvm_irq_routing_entry; 0],
    }
}

kvm_struct! {
    /// KVM_SIGNAL_MSI (api.rst 4.71).
    pub struct kvm_msi {
        pub address_lo: u32,
        pub address_hi: u32,
        pub data: u32,
        pub flags: u32,
        pub devid: u32,
        pub pad: [u8; 12],
    }
}

kvm_struct! {
    /// KVM_REGISTER_COALESCED_MMIO / KVM_UNREGISTER_COALESCED_MMIO
    /// (api.rst 4.116).
    pub struct kvm_coalesced_mmio_zone {
        pub addr: u64,
        pub size: u32,
        /// The C union of `pad` and `pio`: nonzero for a port I/O zone.
        pub pio: u32,
    }
}

kvm_struct! {
    /// KVM_GET_DIRTY_LOG (api.rst 4.8).
    pub struct kvm_dirty_log {
        pub slot: u32,
        pub padding1: u32,
        /// The C union of the user pointer `dirty_bitmap` and `padding2`.
        pub dirty_bitmap: u64,
    }
}
