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

use super::constants::{
    KVM_APIC_REG_SIZE, KVM_IOAPIC_NUM_PINS, KVM_MAX_XCRS, KVM_NR_INTERRUPTS,
};
use super::wire::{Reader, Wire, Writer};

kvm_struct! {
    /// KVM_GET_REGS / KVM_SET_REGS (api.rst 4.11, 4.12): the general
    /// purpose registers, RIP and RFLAGS.
    pub struct kvm_regs {
        /// RAX.
        pub rax: u64,
        /// RBX.
        pub rbx: u64,
        /// RCX.
        pub rcx: u64,
        /// RDX.
        pub rdx: u64,
        /// RSI.
        pub rsi: u64,
        /// RDI.
        pub rdi: u64,
        /// RSP.
        pub rsp: u64,
        /// RBP.
        pub rbp: u64,
        /// R8.
        pub r8: u64,
        /// R9.
        pub r9: u64,
        /// R10.
        pub r10: u64,
        /// R11.
        pub r11: u64,
        /// R12.
        pub r12: u64,
        /// R13.
        pub r13: u64,
        /// R14.
        pub r14: u64,
        /// R15.
        pub r15: u64,
        /// The instruction pointer.
        pub rip: u64,
        /// RFLAGS (bit 1 always set).
        pub rflags: u64,
    }
}

kvm_struct! {
    /// A segment register in unpacked form (part of [`kvm_sregs`]).
    pub struct kvm_segment {
        /// The segment base address.
        pub base: u64,
        /// The segment limit in bytes (already scaled by G).
        pub limit: u32,
        /// The selector.
        pub selector: u16,
        /// The 4-bit descriptor type (code/data, accessed, ...).
        pub type_: u8,
        /// The P bit.
        pub present: u8,
        /// The descriptor privilege level.
        pub dpl: u8,
        /// The D/B bit: 32-bit default operand size.
        pub db: u8,
        /// The S bit: code or data, not system.
        pub s: u8,
        /// The L bit: 64-bit code.
        pub l: u8,
        /// The G bit: limit in 4 KiB units.
        pub g: u8,
        /// The AVL bit.
        pub avl: u8,
        /// The segment is unusable (a null selector was loaded).
        pub unusable: u8,
        /// Padding.
        pub padding: u8,
    }
}

kvm_struct! {
    /// A descriptor table register, GDTR or IDTR (part of [`kvm_sregs`]).
    pub struct kvm_dtable {
        /// The table's linear base address.
        pub base: u64,
        /// The table's limit in bytes.
        pub limit: u16,
        /// Padding.
        pub padding: [u16; 3],
    }
}

kvm_struct! {
    /// KVM_GET_SREGS / KVM_SET_SREGS (api.rst 4.13, 4.14): segment and
    /// control registers, EFER, the APIC base, and the bitmap of a pending
    /// external interrupt (at most one bit set).
    pub struct kvm_sregs {
        /// CS.
        pub cs: kvm_segment,
        /// DS.
        pub ds: kvm_segment,
        /// ES.
        pub es: kvm_segment,
        /// FS.
        pub fs: kvm_segment,
        /// GS.
        pub gs: kvm_segment,
        /// SS.
        pub ss: kvm_segment,
        /// The task register.
        pub tr: kvm_segment,
        /// The LDT register.
        pub ldt: kvm_segment,
        /// GDTR.
        pub gdt: kvm_dtable,
        /// IDTR.
        pub idt: kvm_dtable,
        /// CR0.
        pub cr0: u64,
        /// CR2, the last page fault address.
        pub cr2: u64,
        /// CR3, the page table root.
        pub cr3: u64,
        /// CR4.
        pub cr4: u64,
        /// CR8, the task priority.
        pub cr8: u64,
        /// The EFER MSR.
        pub efer: u64,
        /// The IA32_APIC_BASE MSR.
        pub apic_base: u64,
        /// The pending external interrupt's vector, as one set bit (none: no interrupt).
        pub interrupt_bitmap: [u64; KVM_NR_INTERRUPTS.div_ceil(64) as usize],
    }
}

kvm_struct! {
    /// KVM_GET_FPU / KVM_SET_FPU (api.rst 4.22, 4.23): the x87 and SSE
    /// state in FXSAVE terms.
    pub struct kvm_fpu {
        /// ST0-ST7 (80 bits each in 16 bytes).
        pub fpr: [[u8; 16]; 8],
        /// The x87 control word.
        pub fcw: u16,
        /// The x87 status word.
        pub fsw: u16,
        /// The abridged tag word, as FXSAVE stores it.
        pub ftwx: u8,
        /// Padding.
        pub pad1: u8,
        /// The last x87 opcode (FOP).
        pub last_opcode: u16,
        /// The last x87 instruction pointer.
        pub last_ip: u64,
        /// The last x87 data pointer.
        pub last_dp: u64,
        /// XMM0-XMM15.
        pub xmm: [[u8; 16]; 16],
        /// MXCSR.
        pub mxcsr: u32,
        /// Padding.
        pub pad2: u32,
    }
}

kvm_struct! {
    /// KVM_SET_USER_MEMORY_REGION (api.rst 4.35).
    pub struct kvm_userspace_memory_region {
        /// Bits 0-15: the slot id; bits 16-31: the address space id.
        pub slot: u32,
        /// `KVM_MEM_*` flags.
        pub flags: u32,
        /// The slot's start in guest physical memory (page aligned).
        pub guest_phys_addr: u64,
        /// The slot's size in bytes (a page multiple); 0 deletes it.
        pub memory_size: u64,
        /// The userspace address of the slot's memory (page aligned).
        pub userspace_addr: u64,
    }
}

kvm_struct! {
    /// KVM_SET_USER_MEMORY_REGION2 (api.rst 4.140): the first five fields
    /// are those of [`kvm_userspace_memory_region`].
    pub struct kvm_userspace_memory_region2 {
        /// Bits 0-15: the slot id; bits 16-31: the address space id.
        pub slot: u32,
        /// `KVM_MEM_*` flags.
        pub flags: u32,
        /// The slot's start in guest physical memory (page aligned).
        pub guest_phys_addr: u64,
        /// The slot's size in bytes (a page multiple); 0 deletes it.
        pub memory_size: u64,
        /// The userspace address of the slot's memory (page aligned).
        pub userspace_addr: u64,
        /// Where the slot's private memory starts in `guest_memfd`, in bytes.
        pub guest_memfd_offset: u64,
        /// The `guest_memfd` descriptor (with KVM_MEM_GUEST_MEMFD).
        pub guest_memfd: u32,
        /// Padding.
        pub pad1: u32,
        /// Padding.
        pub pad2: [u64; 14],
    }
}

kvm_struct! {
    /// One CPUID leaf/subleaf (the entries of [`kvm_cpuid2`]).
    pub struct kvm_cpuid_entry2 {
        /// The leaf (EAX input).
        pub function: u32,
        /// The subleaf (ECX input), if `flags` says it matters.
        pub index: u32,
        /// `KVM_CPUID_FLAG_*`.
        pub flags: u32,
        /// EAX output.
        pub eax: u32,
        /// EBX output.
        pub ebx: u32,
        /// ECX output.
        pub ecx: u32,
        /// EDX output.
        pub edx: u32,
        /// Padding.
        pub padding: [u32; 3],
    }
}

kvm_struct! {
    /// The header of KVM_SET_CPUID2 / KVM_GET_CPUID2 /
    /// KVM_GET_SUPPORTED_CPUID (api.rst 4.20 and 4.46, which describe the
    /// `kvm_cpuid` predecessor and the struct itself): `nent` entries of
    /// [`kvm_cpuid_entry2`] follow.
    pub struct kvm_cpuid2 {
        /// The number of entries that follow (in: room for; out: filled).
        pub nent: u32,
        /// Padding.
        pub padding: u32,
        /// The entries (a C flexible array member).
        pub entries: [kvm_cpuid_entry2; 0],
    }
}

kvm_struct! {
    /// One MSR index and value (the entries of [`kvm_msrs`]).
    pub struct kvm_msr_entry {
        /// The MSR number.
        pub index: u32,
        /// Reserved.
        pub reserved: u32,
        /// The MSR value.
        pub data: u64,
    }
}

kvm_struct! {
    /// The header of KVM_GET_MSRS / KVM_SET_MSRS (api.rst 4.18, 4.19):
    /// `nmsrs` entries of [`kvm_msr_entry`] follow.
    pub struct kvm_msrs {
        /// The number of entries that follow.
        pub nmsrs: u32,
        /// Padding.
        pub pad: u32,
        /// The entries (a C flexible array member).
        pub entries: [kvm_msr_entry; 0],
    }
}

kvm_struct! {
    /// The header of KVM_GET_MSR_INDEX_LIST and
    /// KVM_GET_MSR_FEATURE_INDEX_LIST (api.rst 4.3): in, the room for
    /// indices; out, the number of indices, which follow as `u32`s.
    pub struct kvm_msr_list {
        /// In: the room for indices; out: the number of indices.
        pub nmsrs: u32,
        /// The MSR numbers (a C flexible array member).
        pub indices: [u32; 0],
    }
}

kvm_struct! {
    /// The anonymous `exception` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_exception {
        /// An exception is being delivered (was injected before the exit).
        pub injected: u8,
        /// The exception vector.
        pub nr: u8,
        /// `error_code` is valid.
        pub has_error_code: u8,
        /// An exception is pending, not yet delivered (KVM_CAP_EXCEPTION_PAYLOAD).
        pub pending: u8,
        /// The exception's error code.
        pub error_code: u32,
    }
}

kvm_struct! {
    /// The anonymous `interrupt` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_interrupt {
        /// An external interrupt is being delivered.
        pub injected: u8,
        /// Its vector.
        pub nr: u8,
        /// It is a software interrupt (INTn).
        pub soft: u8,
        /// `KVM_X86_SHADOW_INT_*`: the interrupt shadow after STI or MOV SS.
        pub shadow: u8,
    }
}

kvm_struct! {
    /// The anonymous `nmi` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_nmi {
        /// An NMI is being delivered.
        pub injected: u8,
        /// NMIs are pending.
        pub pending: u8,
        /// NMIs are blocked (an NMI handler runs).
        pub masked: u8,
        /// Padding.
        pub pad: u8,
    }
}

kvm_struct! {
    /// The anonymous `smi` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_smi {
        /// The vCPU is in SMM.
        pub smm: u8,
        /// An SMI is pending.
        pub pending: u8,
        /// SMM was entered from an NMI handler.
        pub smm_inside_nmi: u8,
        /// An INIT arrived in SMM and waits for RSM.
        pub latched_init: u8,
    }
}

kvm_struct! {
    /// The anonymous `triple_fault` member of [`kvm_vcpu_events`].
    pub struct kvm_vcpu_events_triple_fault {
        /// A triple fault is pending (KVM_CAP_X86_TRIPLE_FAULT_EVENT).
        pub pending: u8,
    }
}

kvm_struct! {
    /// KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS (api.rst 4.31, 4.32):
    /// pending and injected exceptions, interrupts, NMIs and SMIs.
    pub struct kvm_vcpu_events {
        /// The pending or injected exception.
        pub exception: kvm_vcpu_events_exception,
        /// The injected external interrupt and the interrupt shadow.
        pub interrupt: kvm_vcpu_events_interrupt,
        /// NMI state.
        pub nmi: kvm_vcpu_events_nmi,
        /// The SIPI vector of an AP waiting for SIPI.
        pub sipi_vector: u32,
        /// `KVM_VCPUEVENT_VALID_*`: which optional fields are valid.
        pub flags: u32,
        /// SMM and SMI state.
        pub smi: kvm_vcpu_events_smi,
        /// The pending triple fault.
        pub triple_fault: kvm_vcpu_events_triple_fault,
        /// Reserved.
        pub reserved: [u8; 26],
        /// `exception_payload` is valid.
        pub exception_has_payload: u8,
        /// The pending exception's payload (CR2 for #PF, DR6 bits for #DB).
        pub exception_payload: u64,
    }
}

kvm_struct! {
    /// The registers `struct kvm_run` can carry across KVM_RUN when
    /// KVM_CAP_SYNC_REGS is enabled (api.rst 6.74).
    pub struct kvm_sync_regs {
        /// As KVM_GET_REGS / KVM_SET_REGS (KVM_SYNC_X86_REGS).
        pub regs: kvm_regs,
        /// As KVM_GET_SREGS / KVM_SET_SREGS (KVM_SYNC_X86_SREGS).
        pub sregs: kvm_sregs,
        /// As KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS (KVM_SYNC_X86_EVENTS).
        pub events: kvm_vcpu_events,
    }
}

kvm_struct! {
    /// KVM_IOEVENTFD (api.rst 4.59).
    pub struct kvm_ioeventfd {
        /// With KVM_IOEVENTFD_FLAG_DATAMATCH: the value a write must have.
        pub datamatch: u64,
        /// The port (with KVM_IOEVENTFD_FLAG_PIO) or guest physical address.
        pub addr: u64,
        /// 1, 2, 4 or 8 bytes, or 0 for any access length.
        pub len: u32,
        /// The eventfd to signal.
        pub fd: i32,
        /// `KVM_IOEVENTFD_FLAG_*`.
        pub flags: u32,
        /// Padding.
        pub pad: [u8; 36],
    }
}

kvm_struct! {
    /// KVM_IRQFD (api.rst 4.75).
    pub struct kvm_irqfd {
        /// The eventfd that raises the GSI.
        pub fd: u32,
        /// The GSI (route number).
        pub gsi: u32,
        /// `KVM_IRQFD_FLAG_*`.
        pub flags: u32,
        /// With KVM_IRQFD_FLAG_RESAMPLE: the eventfd signalled on EOI.
        pub resamplefd: u32,
        /// Padding.
        pub pad: [u8; 16],
    }
}

kvm_struct! {
    /// One extended control register (the entries of [`kvm_xcrs`]).
    pub struct kvm_xcr {
        /// The XCR number (0 for XCR0).
        pub xcr: u32,
        /// Reserved.
        pub reserved: u32,
        /// Its value.
        pub value: u64,
    }
}

kvm_struct! {
    /// KVM_GET_XCRS / KVM_SET_XCRS (api.rst 4.44, 4.45).
    pub struct kvm_xcrs {
        /// The number of valid entries of `xcrs`.
        pub nr_xcrs: u32,
        /// Must be 0.
        pub flags: u32,
        /// The registers.
        pub xcrs: [kvm_xcr; KVM_MAX_XCRS as usize],
        /// Padding.
        pub padding: [u64; 16],
    }
}

kvm_struct! {
    /// KVM_GET_DEBUGREGS / KVM_SET_DEBUGREGS (api.rst 4.33, 4.34).
    pub struct kvm_debugregs {
        /// DR0-DR3, the breakpoint addresses.
        pub db: [u64; 4],
        /// DR6, the debug status.
        pub dr6: u64,
        /// DR7, the debug control.
        pub dr7: u64,
        /// Must be 0.
        pub flags: u64,
        /// Reserved.
        pub reserved: [u64; 9],
    }
}

kvm_struct! {
    /// KVM_GET_MP_STATE / KVM_SET_MP_STATE (api.rst 4.38, 4.39).
    pub struct kvm_mp_state {
        /// `KVM_MP_STATE_*`.
        pub mp_state: u32,
    }
}

kvm_struct! {
    /// KVM_GET_CLOCK / KVM_SET_CLOCK (api.rst 4.29, 4.30): kvmclock's
    /// value, and optionally the host's realtime and TSC at that moment.
    pub struct kvm_clock_data {
        /// The kvmclock value in ns.
        pub clock: u64,
        /// `KVM_CLOCK_*`: which optional fields are valid.
        pub flags: u32,
        /// Padding.
        pub pad0: u32,
        /// With KVM_CLOCK_REALTIME: CLOCK_REALTIME in ns at the same moment.
        pub realtime: u64,
        /// With KVM_CLOCK_HOST_TSC: the host TSC at the same moment.
        pub host_tsc: u64,
        /// Padding.
        pub pad: [u32; 4],
    }
}

kvm_struct! {
    /// KVM_GET_LAPIC / KVM_SET_LAPIC (api.rst 4.57, 4.58): the APIC
    /// register page, in xAPIC layout (x2APIC IDs with KVM_CAP_X2APIC_API).
    pub struct kvm_lapic_state {
        /// The 1 KiB APIC register page.
        pub regs: [u8; KVM_APIC_REG_SIZE as usize],
    }
}

kvm_struct! {
    /// The IOAPIC member of the `chip` union of `struct kvm_irqchip`
    /// (KVM_GET_IRQCHIP / KVM_SET_IRQCHIP with `chip_id`
    /// KVM_IRQCHIP_IOAPIC, api.rst 4.26, 4.27); see
    /// `irqchip::ioapic::Ioapic::to_kvm_state`.
    pub struct kvm_ioapic_state {
        /// The guest-physical address of the MMIO window.
        pub base_address: u64,
        /// The register select (IOREGSEL).
        pub ioregsel: u32,
        /// The IOAPIC id, bits 3:0 (as IOAPICID bits 27:24 reads it).
        pub id: u32,
        /// The asserted input lines, bit per pin.
        pub irr: u32,
        /// Padding.
        pub pad: u32,
        /// The redirection entries, raw (the C union's `bits`).
        pub redirtbl: [u64; KVM_IOAPIC_NUM_PINS as usize],
    }
}

/// The size of the `chip` union of `struct kvm_irqchip` (its `dummy`
/// member, the largest).
pub const KVM_IRQCHIP_UNION_SIZE: usize = 512;

kvm_struct! {
    /// KVM_GET_IRQCHIP / KVM_SET_IRQCHIP (api.rst 4.26, 4.27): one chip's
    /// state, `chip_id` KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE
    /// (a `struct kvm_pic_state` at the start of `chip`) or
    /// KVM_IRQCHIP_IOAPIC (a [`kvm_ioapic_state`]); see
    /// `irqchip::vm::VmIrqchip::get_irqchip`.
    pub struct kvm_irqchip {
        /// Which chip.
        pub chip_id: u32,
        /// Padding.
        pub pad: u32,
        /// The C union `chip` as little-endian 64-bit words (the union is
        /// 8-byte aligned for the IOAPIC's `base_address`); the chip's
        /// struct is at its start and the rest is zero on KVM_GET_IRQCHIP.
        /// See [`kvm_irqchip::chip_bytes`].
        pub chip: [u64; KVM_IRQCHIP_UNION_SIZE / 8],
    }
}

impl kvm_irqchip {
    /// The `chip` union's bytes.
    pub fn chip_bytes(&self) -> [u8; KVM_IRQCHIP_UNION_SIZE] {
        // Indexed rather than zipped with `chunks_exact`: the kernel's
        // objtool flags the iterator adapter that zip specialises to.
        let mut bytes = [0u8; KVM_IRQCHIP_UNION_SIZE];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (self.chip[i / 8] >> (8 * (i % 8))) as u8;
        }
        bytes
    }

    /// A `kvm_irqchip` for `chip_id` whose union starts with `state` (at
    /// most 512 bytes are taken) and is zero after it.
    pub fn with_chip_bytes(chip_id: u32, state: &[u8]) -> Self {
        let mut bytes = [0u8; KVM_IRQCHIP_UNION_SIZE];
        for (target, source) in bytes.iter_mut().zip(state) {
            *target = *source;
        }
        let mut chip = [0u64; KVM_IRQCHIP_UNION_SIZE / 8];
        for (i, byte) in bytes.iter().enumerate() {
            chip[i / 8] |= u64::from(*byte) << (8 * (i % 8));
        }
        Self {
            chip_id,
            pad: 0,
            chip,
        }
    }
}

kvm_struct! {
    /// KVM_CREATE_PIT2 (api.rst 4.71, the second of that number).
    pub struct kvm_pit_config {
        /// `KVM_PIT_SPEAKER_DUMMY`.
        pub flags: u32,
        /// Padding.
        pub pad: [u32; 15],
    }
}

kvm_struct! {
    /// KVM_IRQ_LINE / KVM_IRQ_LINE_STATUS (api.rst 4.25).
    pub struct kvm_irq_level {
        /// The GSI on the way in; with KVM_IRQ_LINE_STATUS, the signed
        /// delivery status on the way out (the C union's `status`).
        pub irq: u32,
        /// 1 to raise the line, 0 to lower it.
        pub level: u32,
    }
}

impl kvm_irq_level {
    /// The C union member `status`, which KVM_IRQ_LINE_STATUS writes back
    /// over `irq`: > 0 delivered, 0 coalesced, < 0 masked or failed.
    pub const fn status(&self) -> i32 {
        self.irq as i32
    }

    /// Stores `status` over `irq` for KVM_IRQ_LINE_STATUS to return.
    pub fn set_status(&mut self, status: i32) {
        self.irq = status as u32;
    }
}

kvm_struct! {
    /// KVM_ENABLE_CAP (api.rst 4.37).
    pub struct kvm_enable_cap {
        /// The `KVM_CAP_*` to enable.
        pub cap: u32,
        /// Must be 0.
        pub flags: u32,
        /// The capability's arguments.
        pub args: [u64; 4],
        /// Padding.
        pub pad: [u8; 64],
    }
}

kvm_struct! {
    /// KVM_INTERRUPT (api.rst 4.16): a vector to inject, without an
    /// in-kernel local APIC.
    pub struct kvm_interrupt {
        /// The interrupt vector.
        pub irq: u32,
    }
}

kvm_struct! {
    /// The header of KVM_SET_SIGNAL_MASK (api.rst 4.21): `len` bytes of
    /// the kernel's `sigset_t` follow.
    pub struct kvm_signal_mask {
        /// The size of the signal set in bytes (8 on x86-64).
        pub len: u32,
        /// The signal set (a C flexible array member).
        pub sigset: [u8; 0],
    }
}

kvm_struct! {
    /// One GSI route (the entries of [`kvm_irq_routing`]); `u` is a union
    /// whose meaning `type_` selects, see [`super::decode::GsiRoute`].  The
    /// union's s390 member holds `__u64`s, hence the alignment of 8.
    #[repr(align(8))]
    pub struct kvm_irq_routing_entry {
        /// The GSI this route serves.
        pub gsi: u32,
        /// `KVM_IRQ_ROUTING_*`: which member of `u` applies.
        pub type_: u32,
        /// `KVM_MSI_VALID_DEVID` for MSI routes, else 0.
        pub flags: u32,
        /// Padding.
        pub pad: u32,
        /// The union of route kinds, raw.
        pub u: [u32; 8],
    }
}

kvm_struct! {
    /// The `irqchip` member of [`kvm_irq_routing_entry::u`].
    pub struct kvm_irq_routing_irqchip {
        /// `KVM_IRQCHIP_*`.
        pub irqchip: u32,
        /// The input pin of that controller.
        pub pin: u32,
    }
}

kvm_struct! {
    /// The `msi` member of [`kvm_irq_routing_entry::u`].
    pub struct kvm_irq_routing_msi {
        /// Bits 31:0 of the MSI address.
        pub address_lo: u32,
        /// Bits 63:32 of the MSI address.
        pub address_hi: u32,
        /// The MSI data word.
        pub data: u32,
        /// The C union of `pad` and `devid`; x86 has no device ids.
        pub devid: u32,
    }
}

kvm_struct! {
    /// The header of KVM_SET_GSI_ROUTING (api.rst 4.52): `nr` entries of
    /// [`kvm_irq_routing_entry`] follow.
    pub struct kvm_irq_routing {
        /// The number of entries that follow.
        pub nr: u32,
        /// Must be 0.
        pub flags: u32,
        /// The entries (a C flexible array member).
        pub entries: [kvm_irq_routing_entry; 0],
    }
}

kvm_struct! {
    /// KVM_SIGNAL_MSI (api.rst 4.71).
    pub struct kvm_msi {
        /// Bits 31:0 of the MSI address.
        pub address_lo: u32,
        /// Bits 63:32 of the MSI address.
        pub address_hi: u32,
        /// The MSI data word.
        pub data: u32,
        /// `KVM_MSI_VALID_DEVID`.
        pub flags: u32,
        /// The requester id, with KVM_MSI_VALID_DEVID.
        pub devid: u32,
        /// Padding.
        pub pad: [u8; 12],
    }
}

kvm_struct! {
    /// KVM_REGISTER_COALESCED_MMIO / KVM_UNREGISTER_COALESCED_MMIO
    /// (api.rst 4.116).
    pub struct kvm_coalesced_mmio_zone {
        /// The zone's start: a guest physical address or port.
        pub addr: u64,
        /// The zone's length in bytes.
        pub size: u32,
        /// The C union of `pad` and `pio`: nonzero for a port I/O zone.
        pub pio: u32,
    }
}

kvm_struct! {
    /// KVM_GET_DIRTY_LOG (api.rst 4.8).
    pub struct kvm_dirty_log {
        /// Bits 0-15: the slot id; bits 16-31: the address space id.
        pub slot: u32,
        /// Padding.
        pub padding1: u32,
        /// The C union of the user pointer `dirty_bitmap` and `padding2`.
        pub dirty_bitmap: u64,
    }
}
