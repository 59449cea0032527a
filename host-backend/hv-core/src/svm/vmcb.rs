//! The VMCB (virtual machine control block) as plain Rust structs.
//!
//! Layout: AMD APM vol. 2, Appendix B "Layout of VMCB" (table B-1 control
//! area, table B-2 state save area), field for field as Linux 6.12's
//! `arch/x86/include/asm/svm.h` declares `struct vmcb_control_area`,
//! `struct vmcb_save_area` and `struct vmcb_seg`.  The C structs are
//! `__packed`, but every field sits at its natural alignment, so
//! `#[repr(C)]` gives the same offsets; the `const` asserts at the end of
//! this file and `tests/svm_header.rs` (which compiles the real header)
//! hold every offset and size in place.
//!
//! The exit code stays split into `exit_code` / `exit_code_hi` as in Linux:
//! QEMU's TCG SVM writes `VMEXIT_INVALID` as `0x0000_0000_FFFF_FFFF`
//! rather than `-1`, so the low 32 bits are what identifies an exit
//! ([`Vmcb::exit_code`] joins them only for logging).
//!
//! Intercepts use Linux's numbering: intercept `n` is bit `n % 32` of the
//! 32-bit word `n / 32` at the start of the control area (APM 15.9 and
//! table B-1), e.g. [`INTERCEPT_CPUID`] = 96 + 18.

/// The VMCB must be one 4 KiB-aligned page (APM 15.5.1, "VMRUN").
pub const VMCB_SIZE: usize = 4096;

/// The control area is the first 1 KiB of the VMCB.
pub const VMCB_CONTROL_AREA_SIZE: usize = 0x400;

/// Linux's `vmcb_save_area` (the non-SEV state save area) size.
pub const VMCB_SAVE_AREA_SIZE: usize = 0x2e8;

/// The number of 32-bit intercept words (Linux `MAX_INTERCEPT`).
pub const INTERCEPT_WORDS: usize = 6;

pinned_constants! {
    /// The intercept bit numbers of `enum { INTERCEPT_* }` in svm.h.
    table INTERCEPT_CONSTANTS;

    /// Word 0 (offset 0x00): CR reads, bits 0-15 (CRn = bit n); MOV from CR0.
    INTERCEPT_CR0_READ: u8 = 0;
    /// MOV from CR3.
    INTERCEPT_CR3_READ: u8 = 3;
    /// MOV from CR4.
    INTERCEPT_CR4_READ: u8 = 4;
    /// MOV from CR8 (the TPR).
    INTERCEPT_CR8_READ: u8 = 8;
    /// CR writes, bits 16-31 of word 0; MOV to CR0, CLTS, LMSW.
    INTERCEPT_CR0_WRITE: u8 = 16;
    /// MOV to CR3.
    INTERCEPT_CR3_WRITE: u8 = 16 + 3;
    /// MOV to CR4.
    INTERCEPT_CR4_WRITE: u8 = 16 + 4;
    /// MOV to CR8 (the TPR).
    INTERCEPT_CR8_WRITE: u8 = 16 + 8;
    /// Word 1 (offset 0x04): DR reads, bits 0-15 (DRn = base + n); MOV from DR0.
    INTERCEPT_DR0_READ: u8 = 32;
    /// MOV from DR1.
    INTERCEPT_DR1_READ: u8 = 33;
    /// MOV from DR2.
    INTERCEPT_DR2_READ: u8 = 34;
    /// MOV from DR3.
    INTERCEPT_DR3_READ: u8 = 35;
    /// MOV from DR4.
    INTERCEPT_DR4_READ: u8 = 36;
    /// MOV from DR5.
    INTERCEPT_DR5_READ: u8 = 37;
    /// MOV from DR6.
    INTERCEPT_DR6_READ: u8 = 38;
    /// MOV from DR7.
    INTERCEPT_DR7_READ: u8 = 39;
    /// DR writes, bits 16-31 of word 1; MOV to DR0.
    INTERCEPT_DR0_WRITE: u8 = 48;
    /// MOV to DR1.
    INTERCEPT_DR1_WRITE: u8 = 49;
    /// MOV to DR2.
    INTERCEPT_DR2_WRITE: u8 = 50;
    /// MOV to DR3.
    INTERCEPT_DR3_WRITE: u8 = 51;
    /// MOV to DR4.
    INTERCEPT_DR4_WRITE: u8 = 52;
    /// MOV to DR5.
    INTERCEPT_DR5_WRITE: u8 = 53;
    /// MOV to DR6.
    INTERCEPT_DR6_WRITE: u8 = 54;
    /// MOV to DR7.
    INTERCEPT_DR7_WRITE: u8 = 55;
    /// Word 2 (offset 0x08): exception vector `v` is bit `64 + v`.
    INTERCEPT_EXCEPTION_OFFSET: u8 = 64;
    /// Word 3 (offset 0x0C): physical maskable interrupts.
    INTERCEPT_INTR: u8 = 96;
    /// Physical NMIs.
    INTERCEPT_NMI: u8 = 97;
    /// Physical SMIs.
    INTERCEPT_SMI: u8 = 98;
    /// INIT signals.
    INTERCEPT_INIT: u8 = 99;
    /// The virtual interrupt (`V_IRQ`) becoming deliverable: the interrupt window.
    INTERCEPT_VINTR: u8 = 100;
    /// CR0 writes that change bits other than TS and MP.
    INTERCEPT_SELECTIVE_CR0: u8 = 101;
    /// SIDT.
    INTERCEPT_STORE_IDTR: u8 = 102;
    /// SGDT.
    INTERCEPT_STORE_GDTR: u8 = 103;
    /// SLDT.
    INTERCEPT_STORE_LDTR: u8 = 104;
    /// STR.
    INTERCEPT_STORE_TR: u8 = 105;
    /// LIDT.
    INTERCEPT_LOAD_IDTR: u8 = 106;
    /// LGDT.
    INTERCEPT_LOAD_GDTR: u8 = 107;
    /// LLDT.
    INTERCEPT_LOAD_LDTR: u8 = 108;
    /// LTR.
    INTERCEPT_LOAD_TR: u8 = 109;
    /// RDTSC.
    INTERCEPT_RDTSC: u8 = 110;
    /// RDPMC.
    INTERCEPT_RDPMC: u8 = 111;
    /// PUSHF.
    INTERCEPT_PUSHF: u8 = 112;
    /// POPF.
    INTERCEPT_POPF: u8 = 113;
    /// CPUID.
    INTERCEPT_CPUID: u8 = 114;
    /// RSM.
    INTERCEPT_RSM: u8 = 115;
    /// IRET (to see NMI blocking end).
    INTERCEPT_IRET: u8 = 116;
    /// INTn software interrupts (Linux's mixed-case name, kept so the
    /// header check finds it).
    #[allow(non_upper_case_globals)]
    INTERCEPT_INTn: u8 = 117;
    /// INVD.
    INTERCEPT_INVD: u8 = 118;
    /// PAUSE (filtered by `pause_filter_count`).
    INTERCEPT_PAUSE: u8 = 119;
    /// HLT.
    INTERCEPT_HLT: u8 = 120;
    /// INVLPG.
    INTERCEPT_INVLPG: u8 = 121;
    /// INVLPGA.
    INTERCEPT_INVLPGA: u8 = 122;
    /// IN/OUT/INS/OUTS, filtered by the I/O permission map.
    INTERCEPT_IOIO_PROT: u8 = 123;
    /// RDMSR/WRMSR, filtered by the MSR permission map.
    INTERCEPT_MSR_PROT: u8 = 124;
    /// Hardware task switches.
    INTERCEPT_TASK_SWITCH: u8 = 125;
    /// The x87 FERR freeze (legacy FERR handling).
    INTERCEPT_FERR_FREEZE: u8 = 126;
    /// Shutdown (triple fault).
    INTERCEPT_SHUTDOWN: u8 = 127;
    /// Word 4 (offset 0x10): VMRUN (must be set, APM 15.5.1).
    INTERCEPT_VMRUN: u8 = 128;
    /// VMMCALL, the hypercall.
    INTERCEPT_VMMCALL: u8 = 129;
    /// VMLOAD.
    INTERCEPT_VMLOAD: u8 = 130;
    /// VMSAVE.
    INTERCEPT_VMSAVE: u8 = 131;
    /// STGI.
    INTERCEPT_STGI: u8 = 132;
    /// CLGI.
    INTERCEPT_CLGI: u8 = 133;
    /// SKINIT.
    INTERCEPT_SKINIT: u8 = 134;
    /// RDTSCP.
    INTERCEPT_RDTSCP: u8 = 135;
    /// ICEBP (INT1).
    INTERCEPT_ICEBP: u8 = 136;
    /// WBINVD (and WBNOINVD).
    INTERCEPT_WBINVD: u8 = 137;
    /// MONITOR.
    INTERCEPT_MONITOR: u8 = 138;
    /// MWAIT, unconditionally.
    INTERCEPT_MWAIT: u8 = 139;
    /// MWAIT only when the monitor is armed.
    INTERCEPT_MWAIT_COND: u8 = 140;
    /// XSETBV.
    INTERCEPT_XSETBV: u8 = 141;
    /// RDPRU.
    INTERCEPT_RDPRU: u8 = 142;
    /// Write traps (exit after the write completed; SEV-ES, not on TCG
    /// 7.2): EFER.
    TRAP_EFER_WRITE: u8 = 143;
    /// Trap after CR0 writes.
    TRAP_CR0_WRITE: u8 = 144;
    /// Trap after CR1 writes (reserved register).
    TRAP_CR1_WRITE: u8 = 145;
    /// Trap after CR2 writes.
    TRAP_CR2_WRITE: u8 = 146;
    /// Trap after CR3 writes.
    TRAP_CR3_WRITE: u8 = 147;
    /// Trap after CR4 writes.
    TRAP_CR4_WRITE: u8 = 148;
    /// Trap after CR5 writes (reserved register).
    TRAP_CR5_WRITE: u8 = 149;
    /// Trap after CR6 writes (reserved register).
    TRAP_CR6_WRITE: u8 = 150;
    /// Trap after CR7 writes (reserved register).
    TRAP_CR7_WRITE: u8 = 151;
    /// Trap after CR8 (TPR) writes.
    TRAP_CR8_WRITE: u8 = 152;
    /// Word 5 (offset 0x14): INVLPGB (broadcast TLB invalidation).
    INTERCEPT_INVLPGB: u8 = 160;
    /// INVLPGB with an illegal operand combination.
    INTERCEPT_INVLPGB_ILLEGAL: u8 = 161;
    /// INVPCID.
    INTERCEPT_INVPCID: u8 = 162;
    /// MCOMMIT.
    INTERCEPT_MCOMMIT: u8 = 163;
    /// TLBSYNC.
    INTERCEPT_TLBSYNC: u8 = 164;
}

pinned_constants! {
    /// The `#define`s of svm.h for the control area's fields.
    table CONTROL_CONSTANTS;

    /// `tlb_ctl` (APM 15.16.1): no flush.
    TLB_CONTROL_DO_NOTHING: u8 = 0;
    /// Flush every ASID's TLB entries on VMRUN; the only value QEMU TCG
    /// acts on, and the only flush available without FlushByAsid.
    TLB_CONTROL_FLUSH_ALL_ASID: u8 = 1;
    /// Flush this guest's ASID (needs FlushByAsid, CPUID 8000_000A EDX\[6\]).
    TLB_CONTROL_FLUSH_ASID: u8 = 3;
    /// Flush this ASID's non-global entries (needs FlushByAsid).
    TLB_CONTROL_FLUSH_ASID_LOCAL: u8 = 7;

    /// `int_ctl` (APM 15.21.1 "Virtual Interrupt Control"): the virtual TPR.
    V_TPR_MASK: u32 = 0x0f;
    /// Bit of [`V_IRQ_MASK`].
    V_IRQ_SHIFT: u32 = 8;
    /// A virtual interrupt is pending; with vector 0, [`V_IGN_TPR_MASK`]
    /// and the VINTR intercept, an interrupt-window detector.
    V_IRQ_MASK: u32 = 1 << V_IRQ_SHIFT;
    /// Bit of [`V_GIF_MASK`].
    V_GIF_SHIFT: u32 = 9;
    /// The virtual GIF, with vGIF ([`V_GIF_ENABLE_MASK`]).
    V_GIF_MASK: u32 = 1 << V_GIF_SHIFT;
    /// Bit of [`V_NMI_PENDING_MASK`].
    V_NMI_PENDING_SHIFT: u32 = 11;
    /// A virtual NMI is pending (vNMI).
    V_NMI_PENDING_MASK: u32 = 1 << V_NMI_PENDING_SHIFT;
    /// Bit of [`V_NMI_BLOCKING_MASK`].
    V_NMI_BLOCKING_SHIFT: u32 = 12;
    /// Virtual NMIs are blocked (an NMI handler runs; vNMI).
    V_NMI_BLOCKING_MASK: u32 = 1 << V_NMI_BLOCKING_SHIFT;
    /// First bit of [`V_INTR_PRIO_MASK`].
    V_INTR_PRIO_SHIFT: u32 = 16;
    /// The pending virtual interrupt's priority, compared with the virtual TPR.
    V_INTR_PRIO_MASK: u32 = 0x0f << V_INTR_PRIO_SHIFT;
    /// Bit of [`V_IGN_TPR_MASK`].
    V_IGN_TPR_SHIFT: u32 = 20;
    /// The pending virtual interrupt ignores the virtual TPR.
    V_IGN_TPR_MASK: u32 = 1 << V_IGN_TPR_SHIFT;
    /// Every bit that describes the pending virtual interrupt.
    V_IRQ_INJECTION_BITS_MASK: u32 = V_IRQ_MASK | V_INTR_PRIO_MASK | V_IGN_TPR_MASK;
    /// Bit of [`V_INTR_MASKING_MASK`].
    V_INTR_MASKING_SHIFT: u32 = 24;
    /// Guest RFLAGS.IF and CR8 are virtual; physical interrupts are gated
    /// by the host's IF.  pvrs always sets it.
    V_INTR_MASKING_MASK: u32 = 1 << V_INTR_MASKING_SHIFT;
    /// Bit of [`V_GIF_ENABLE_MASK`].
    V_GIF_ENABLE_SHIFT: u32 = 25;
    /// Enables virtual GIF ([`V_GIF_MASK`]).
    V_GIF_ENABLE_MASK: u32 = 1 << V_GIF_ENABLE_SHIFT;
    /// Bit of [`V_NMI_ENABLE_MASK`].
    V_NMI_ENABLE_SHIFT: u32 = 26;
    /// Enables virtual NMIs (vNMI).
    V_NMI_ENABLE_MASK: u32 = 1 << V_NMI_ENABLE_SHIFT;
    /// Bit of [`X2APIC_MODE_MASK`].
    X2APIC_MODE_SHIFT: u32 = 30;
    /// AVIC runs the guest APIC in x2APIC mode.
    X2APIC_MODE_MASK: u32 = 1 << X2APIC_MODE_SHIFT;
    /// Bit of [`AVIC_ENABLE_MASK`].
    AVIC_ENABLE_SHIFT: u32 = 31;
    /// Enables AVIC (the hardware-accelerated virtual APIC).
    AVIC_ENABLE_MASK: u32 = 1 << AVIC_ENABLE_SHIFT;

    /// `virt_ext` bit 0: LBR virtualization (DBGCTL and the LBR MSRs
    /// are swapped by VMRUN/#VMEXIT).
    LBR_CTL_ENABLE_MASK: u64 = 1 << 0;
    /// `virt_ext` bit 1: the guest's VMLOAD/VMSAVE run without an exit.
    VIRTUAL_VMLOAD_VMSAVE_ENABLE_MASK: u64 = 1 << 1;

    /// `int_state` (APM 15.21.5): the guest is in an interrupt shadow
    /// (after STI or MOV SS).
    SVM_INTERRUPT_SHADOW_MASK: u64 = 1 << 0;
    /// `int_state`: the guest's GIF, with vGIF.
    SVM_GUEST_INTERRUPT_MASK: u64 = 1 << 1;

    /// `nested_ctl` (APM 15.25.3): enable nested paging; `nested_cr3`
    /// then holds the NPT root.
    SVM_NESTED_CTL_NP_ENABLE: u64 = 1 << 0;
    /// `nested_ctl`: run the guest encrypted (SEV).
    SVM_NESTED_CTL_SEV_ENABLE: u64 = 1 << 1;
    /// `nested_ctl`: encrypt the guest's register state too (SEV-ES).
    SVM_NESTED_CTL_SEV_ES_ENABLE: u64 = 1 << 2;

    /// Segment attribute bits in the VMCB's compressed format (APM 15.5.1
    /// and Appendix B: descriptor bits 40-47 and 52-55 packed into 12 bits):
    /// S, descriptor bit 44 (code/data rather than system).
    SVM_SELECTOR_S_SHIFT: u16 = 4;
    /// DPL, two bits (descriptor bits 45-46).
    SVM_SELECTOR_DPL_SHIFT: u16 = 5;
    /// P, present (descriptor bit 47).
    SVM_SELECTOR_P_SHIFT: u16 = 7;
    /// AVL, available to software (descriptor bit 52).
    SVM_SELECTOR_AVL_SHIFT: u16 = 8;
    /// L, 64-bit code (descriptor bit 53).
    SVM_SELECTOR_L_SHIFT: u16 = 9;
    /// D/B, 32-bit default operand or stack size (descriptor bit 54).
    SVM_SELECTOR_DB_SHIFT: u16 = 10;
    /// G, limit in 4 KiB units (descriptor bit 55).
    SVM_SELECTOR_G_SHIFT: u16 = 11;
    /// The 4-bit descriptor type (descriptor bits 40-43).
    SVM_SELECTOR_TYPE_MASK: u16 = 0xf;
    /// The S bit.
    SVM_SELECTOR_S_MASK: u16 = 1 << SVM_SELECTOR_S_SHIFT;
    /// The DPL field.
    SVM_SELECTOR_DPL_MASK: u16 = 3 << SVM_SELECTOR_DPL_SHIFT;
    /// The P bit.
    SVM_SELECTOR_P_MASK: u16 = 1 << SVM_SELECTOR_P_SHIFT;
    /// The AVL bit.
    SVM_SELECTOR_AVL_MASK: u16 = 1 << SVM_SELECTOR_AVL_SHIFT;
    /// The L bit.
    SVM_SELECTOR_L_MASK: u16 = 1 << SVM_SELECTOR_L_SHIFT;
    /// The D/B bit.
    SVM_SELECTOR_DB_MASK: u16 = 1 << SVM_SELECTOR_DB_SHIFT;
    /// The G bit.
    SVM_SELECTOR_G_MASK: u16 = 1 << SVM_SELECTOR_G_SHIFT;
    /// Type bit 1 of a data segment: writable.
    SVM_SELECTOR_WRITE_MASK: u16 = 1 << 1;
    /// Type bit 1 of a code segment: readable (same bit as writable).
    SVM_SELECTOR_READ_MASK: u16 = SVM_SELECTOR_WRITE_MASK;
    /// Type bit 3: a code segment.
    SVM_SELECTOR_CODE_MASK: u16 = 1 << 3;

    /// The CPUID leaf with the SVM revision, ASID count and SVM features.
    SVM_CPUID_FUNC: u32 = 0x8000_000a;
}

/// VMCB clean bits (APM 15.15.3, table 15-9): a set bit promises that the
/// matching group of fields is unchanged since the last VMRUN on this
/// CPU, so the processor may use a cached copy.  These are the bit
/// numbers of the anonymous enum in Linux's `arch/x86/kvm/svm/svm.h`.
/// QEMU's TCG SVM does not implement VmcbClean and pvrs leaves `clean`
/// at 0 (everything dirty), but a backend on real hardware must clear a
/// group's bit whenever it writes one of its fields.
pub mod clean {
    pinned_constants! {
        /// The clean-bit numbers, named as in KVM's enum.
        table CLEAN_BIT_CONSTANTS;

        /// Intercept vectors, TSC offset, pause filter count.
        VMCB_INTERCEPTS: u32 = 0;
        /// IOPM and MSRPM base addresses.
        VMCB_PERM_MAP: u32 = 1;
        /// The ASID.
        VMCB_ASID: u32 = 2;
        /// `int_ctl`, `int_vector`.
        VMCB_INTR: u32 = 3;
        /// NP enable, nCR3, gPAT.
        VMCB_NPT: u32 = 4;
        /// CR0, CR3, CR4, EFER.
        VMCB_CR: u32 = 5;
        /// DR6, DR7.
        VMCB_DR: u32 = 6;
        /// GDTR, IDTR.
        VMCB_DT: u32 = 7;
        /// CS, DS, SS, ES, CPL.
        VMCB_SEG: u32 = 8;
        /// CR2.
        VMCB_CR2: u32 = 9;
        /// DBGCTL and the LBR MSRs.
        VMCB_LBR: u32 = 10;
        /// The AVIC pointers.
        VMCB_AVIC: u32 = 11;
        /// Reserved for software.
        VMCB_SW: u32 = 31;
    }
}

/// One segment register as the VMCB stores it (Linux `struct vmcb_seg`).
/// The same content as the vendor-neutral [`crate::vendor::Segment`], kept
/// apart because this layout and these field names are the hardware's
/// and Linux's; `SvmVcpu` converts between the two.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbSegment {
    /// The visible selector.
    pub selector: u16,
    /// Descriptor attributes in the compressed 12-bit format
    /// (`SVM_SELECTOR_*`).
    pub attrib: u16,
    /// The expanded limit in bytes.
    pub limit: u32,
    /// The linear base address.
    pub base: u64,
}

/// The control area (APM table B-1; Linux `struct vmcb_control_area`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcbControlArea {
    /// Intercept words, indexed by `INTERCEPT_* / 32`.
    pub intercepts: [u32; INTERCEPT_WORDS],
    /// Reserved, zero.
    pub reserved_1: [u32; 15 - INTERCEPT_WORDS],
    /// Cycles between PAUSEs below which they count as one spin loop (PauseFilterThreshold).
    pub pause_filter_thresh: u16,
    /// PAUSEs allowed before the PAUSE intercept exits (PauseFilter).
    pub pause_filter_count: u16,
    /// Physical address of the 12 KiB I/O permission map (APM 15.10.1).
    pub iopm_base_pa: u64,
    /// Physical address of the 8 KiB MSR permission map (APM 15.11).
    pub msrpm_base_pa: u64,
    /// Added to the host TSC for guest RDTSC/RDTSCP (APM 15.30.5).
    pub tsc_offset: u64,
    /// The guest's ASID; 0 is the host's and makes VMRUN fail.
    pub asid: u32,
    /// `TLB_CONTROL_*`.
    pub tlb_ctl: u8,
    /// Reserved, zero.
    pub reserved_2: [u8; 3],
    /// `V_*` virtual interrupt control bits.
    pub int_ctl: u32,
    /// The vector of the virtual interrupt `V_IRQ` raises.
    pub int_vector: u32,
    /// `SVM_INTERRUPT_SHADOW_MASK`, `SVM_GUEST_INTERRUPT_MASK`.
    pub int_state: u32,
    /// Reserved, zero.
    pub reserved_3: [u8; 4],
    /// `SVM_EXIT_*`, low half; see the module docs for why it is split.
    pub exit_code: u32,
    /// `SVM_EXIT_*`, high half (0 except for VMEXIT_INVALID on hardware).
    pub exit_code_hi: u32,
    /// EXITINFO1: per-exit information (APM 15.7.1; see `svm::exit`).
    pub exit_info_1: u64,
    /// EXITINFO2: per-exit information, e.g. the NPF GPA or IOIO next RIP.
    pub exit_info_2: u64,
    /// The event that was being delivered when the exit happened, in the
    /// EVENTINJ format (APM 15.7.2).
    pub exit_int_info: u32,
    /// The error code of `exit_int_info`, when its EV bit is set.
    pub exit_int_info_err: u32,
    /// `SVM_NESTED_CTL_*`.
    pub nested_ctl: u64,
    /// The guest physical address AVIC maps the APIC page at.
    pub avic_vapic_bar: u64,
    /// The SEV-ES guest-hypervisor communication block's GPA.
    pub ghcb_gpa: u64,
    /// The event to inject at the next VMRUN (APM 15.20).
    pub event_inj: u32,
    /// The error code pushed with `event_inj`, when its EV bit is set.
    pub event_inj_err: u32,
    /// The NPT root (host physical), used when NP is enabled.
    pub nested_cr3: u64,
    /// LBR virtualization and virtual VMLOAD/VMSAVE enables.
    pub virt_ext: u64,
    /// VMCB clean bits ([`clean`]).
    pub clean: u32,
    /// Reserved, zero.
    pub reserved_5: u32,
    /// The RIP after the intercepted instruction, with NRIPS only (APM
    /// 15.7.1); QEMU TCG 7.2 never writes it.
    pub next_rip: u64,
    /// Decode assists (APM 15.33): the bytes fetched at the faulting RIP.
    pub insn_len: u8,
    /// The bytes themselves (`insn_len` of them are valid).
    pub insn_bytes: [u8; 15],
    /// Host physical address of the AVIC backing page.
    pub avic_backing_page: u64,
    /// Reserved, zero.
    pub reserved_6: [u8; 8],
    /// Host physical address of the AVIC logical APIC ID table.
    pub avic_logical_id: u64,
    /// Host physical address of the AVIC physical APIC ID table.
    pub avic_physical_id: u64,
    /// Reserved, zero.
    pub reserved_7: [u8; 8],
    /// Host physical address of the SEV-ES encrypted save area (VMSA).
    pub vmsa_pa: u64,
    /// Reserved, zero.
    pub reserved_8: [u8; 720],
    /// Offset 0x3e0: reserved for the hypervisor (Linux overlays Hyper-V
    /// enlightenments here).
    pub reserved_sw: [u8; 32],
}

/// The state save area (APM table B-2; Linux `struct vmcb_save_area`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcbSaveArea {
    /// ES; the save-area segments are the hidden (cached) descriptor state.
    pub es: VmcbSegment,
    /// CS; its attributes' L and D/B bits select the code size.
    pub cs: VmcbSegment,
    /// SS; its DPL is the CPL on QEMU.
    pub ss: VmcbSegment,
    /// DS.
    pub ds: VmcbSegment,
    /// FS; `base` is the FS_BASE MSR.
    pub fs: VmcbSegment,
    /// GS; `base` is the GS_BASE MSR.
    pub gs: VmcbSegment,
    /// GDTR; only `base` and `limit` are used.
    pub gdtr: VmcbSegment,
    /// LDTR.
    pub ldtr: VmcbSegment,
    /// IDTR; only `base` and `limit` are used.
    pub idtr: VmcbSegment,
    /// TR, the task register.
    pub tr: VmcbSegment,
    /// Reserved, zero.
    pub reserved_0xa0: [u8; 42],
    /// The SEV-SNP VM permission level (0 otherwise).
    pub vmpl: u8,
    /// The CPL real hardware uses; QEMU derives it from SS.DPL instead,
    /// so keep both consistent.
    pub cpl: u8,
    /// Reserved, zero.
    pub reserved_0xcc: [u8; 4],
    /// The EFER the processor runs the guest with; SVME must be set.
    pub efer: u64,
    /// Reserved, zero.
    pub reserved_0xd8: [u8; 112],
    /// The guest's CR4.
    pub cr4: u64,
    /// The guest's CR3 (a guest physical address with NPT).
    pub cr3: u64,
    /// The guest's CR0.
    pub cr0: u64,
    /// The guest's DR7.
    pub dr7: u64,
    /// The guest's DR6.
    pub dr6: u64,
    /// The guest's RFLAGS.
    pub rflags: u64,
    /// The guest's RIP.
    pub rip: u64,
    /// Reserved, zero.
    pub reserved_0x180: [u8; 88],
    /// The guest's RSP.
    pub rsp: u64,
    /// The guest's S_CET MSR (supervisor shadow-stack control).
    pub s_cet: u64,
    /// The guest's shadow-stack pointer.
    pub ssp: u64,
    /// The guest's interrupt SSP table address (ISST_ADDR MSR).
    pub isst_addr: u64,
    /// The guest's RAX (the other GPRs are saved by the world switch).
    pub rax: u64,
    /// STAR MSR (loaded by VMLOAD).
    pub star: u64,
    /// LSTAR MSR (loaded by VMLOAD).
    pub lstar: u64,
    /// CSTAR MSR (loaded by VMLOAD).
    pub cstar: u64,
    /// SFMASK MSR (loaded by VMLOAD).
    pub sfmask: u64,
    /// KernelGSbase MSR (loaded by VMLOAD).
    pub kernel_gs_base: u64,
    /// SYSENTER_CS MSR (loaded by VMLOAD).
    pub sysenter_cs: u64,
    /// SYSENTER_ESP MSR (loaded by VMLOAD).
    pub sysenter_esp: u64,
    /// SYSENTER_EIP MSR (loaded by VMLOAD).
    pub sysenter_eip: u64,
    /// The guest's CR2.
    pub cr2: u64,
    /// Reserved, zero.
    pub reserved_0x248: [u8; 32],
    /// The guest PAT used with nested paging (ignored by QEMU TCG).
    pub g_pat: u64,
    /// The guest's DBGCTL MSR, with LBR virtualization.
    pub dbgctl: u64,
    /// Last branch from-address, with LBR virtualization.
    pub br_from: u64,
    /// Last branch to-address, with LBR virtualization.
    pub br_to: u64,
    /// Last exception from-address, with LBR virtualization.
    pub last_excp_from: u64,
    /// Last exception to-address, with LBR virtualization.
    pub last_excp_to: u64,
    /// Reserved, zero.
    pub reserved_0x298: [u8; 72],
    /// The guest's SPEC_CTRL MSR, when the hardware swaps it (V_SPEC_CTRL).
    pub spec_ctrl: u64,
}

/// A whole VMCB page: control area, state save area, and the rest of the
/// 4 KiB page (reserved, left as padding).
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmcb {
    /// The control area: intercepts, exit information, event injection.
    pub control: VmcbControlArea,
    /// The state save area: the guest's registers.
    pub save: VmcbSaveArea,
}

const ZERO_SEGMENT: VmcbSegment = VmcbSegment {
    selector: 0,
    attrib: 0,
    limit: 0,
    base: 0,
};

impl VmcbControlArea {
    /// All fields zero.
    pub const ZERO: Self = Self {
        intercepts: [0; INTERCEPT_WORDS],
        reserved_1: [0; 15 - INTERCEPT_WORDS],
        pause_filter_thresh: 0,
        pause_filter_count: 0,
        iopm_base_pa: 0,
        msrpm_base_pa: 0,
        tsc_offset: 0,
        asid: 0,
        tlb_ctl: 0,
        reserved_2: [0; 3],
        int_ctl: 0,
        int_vector: 0,
        int_state: 0,
        reserved_3: [0; 4],
        exit_code: 0,
        exit_code_hi: 0,
        exit_info_1: 0,
        exit_info_2: 0,
        exit_int_info: 0,
        exit_int_info_err: 0,
        nested_ctl: 0,
        avic_vapic_bar: 0,
        ghcb_gpa: 0,
        event_inj: 0,
        event_inj_err: 0,
        nested_cr3: 0,
        virt_ext: 0,
        clean: 0,
        reserved_5: 0,
        next_rip: 0,
        insn_len: 0,
        insn_bytes: [0; 15],
        avic_backing_page: 0,
        reserved_6: [0; 8],
        avic_logical_id: 0,
        avic_physical_id: 0,
        reserved_7: [0; 8],
        vmsa_pa: 0,
        reserved_8: [0; 720],
        reserved_sw: [0; 32],
    };
}

impl VmcbSaveArea {
    /// All fields zero.
    pub const ZERO: Self = Self {
        es: ZERO_SEGMENT,
        cs: ZERO_SEGMENT,
        ss: ZERO_SEGMENT,
        ds: ZERO_SEGMENT,
        fs: ZERO_SEGMENT,
        gs: ZERO_SEGMENT,
        gdtr: ZERO_SEGMENT,
        ldtr: ZERO_SEGMENT,
        idtr: ZERO_SEGMENT,
        tr: ZERO_SEGMENT,
        reserved_0xa0: [0; 42],
        vmpl: 0,
        cpl: 0,
        reserved_0xcc: [0; 4],
        efer: 0,
        reserved_0xd8: [0; 112],
        cr4: 0,
        cr3: 0,
        cr0: 0,
        dr7: 0,
        dr6: 0,
        rflags: 0,
        rip: 0,
        reserved_0x180: [0; 88],
        rsp: 0,
        s_cet: 0,
        ssp: 0,
        isst_addr: 0,
        rax: 0,
        star: 0,
        lstar: 0,
        cstar: 0,
        sfmask: 0,
        kernel_gs_base: 0,
        sysenter_cs: 0,
        sysenter_esp: 0,
        sysenter_eip: 0,
        cr2: 0,
        reserved_0x248: [0; 32],
        g_pat: 0,
        dbgctl: 0,
        br_from: 0,
        br_to: 0,
        last_excp_from: 0,
        last_excp_to: 0,
        reserved_0x298: [0; 72],
        spec_ctrl: 0,
    };
}

impl Vmcb {
    /// A VMCB with every byte zero.
    pub const ZERO: Self = Self {
        control: VmcbControlArea::ZERO,
        save: VmcbSaveArea::ZERO,
    };

    /// Sets intercept `bit` (an `INTERCEPT_*` / `TRAP_*` number).  A
    /// number beyond the six intercept words is ignored: all callers
    /// pass the named constants.
    pub fn set_intercept(&mut self, bit: u8) {
        if let Some(word) = self.control.intercepts.get_mut(usize::from(bit / 32)) {
            *word |= 1 << (bit % 32);
        }
    }

    /// Clears intercept `bit`; out-of-range numbers are ignored.
    pub fn clear_intercept(&mut self, bit: u8) {
        if let Some(word) = self.control.intercepts.get_mut(usize::from(bit / 32)) {
            *word &= !(1 << (bit % 32));
        }
    }

    /// Whether intercept `bit` is set (false for out-of-range numbers).
    pub fn is_intercepted(&self, bit: u8) -> bool {
        self.control
            .intercepts
            .get(usize::from(bit / 32))
            .is_some_and(|word| word & (1 << (bit % 32)) != 0)
    }

    /// Intercepts exception `vector` (0-31); larger vectors are ignored.
    pub fn set_exception_intercept(&mut self, vector: u8) {
        if vector < 32 {
            self.set_intercept(INTERCEPT_EXCEPTION_OFFSET + vector);
        }
    }

    /// The full 64-bit exit code, for logging.  Decode with the low half
    /// only (see the module docs).
    pub fn exit_code(&self) -> u64 {
        u64::from(self.control.exit_code_hi) << 32 | u64::from(self.control.exit_code)
    }
}

/// Compile-time pins of the offsets VMRUN, the exit path and the
/// assembly world switch depend on (APM table B-1 / B-2).
macro_rules! assert_offsets {
    ($type:ty { $($field:ident: $offset:expr),* $(,)? }) => {
        $(const _: () = assert!(core::mem::offset_of!($type, $field) == $offset);)*
    };
}

assert_offsets!(VmcbControlArea {
    intercepts: 0x000,
    pause_filter_thresh: 0x03c,
    pause_filter_count: 0x03e,
    iopm_base_pa: 0x040,
    msrpm_base_pa: 0x048,
    tsc_offset: 0x050,
    asid: 0x058,
    tlb_ctl: 0x05c,
    int_ctl: 0x060,
    int_vector: 0x064,
    int_state: 0x068,
    exit_code: 0x070,
    exit_code_hi: 0x074,
    exit_info_1: 0x078,
    exit_info_2: 0x080,
    exit_int_info: 0x088,
    exit_int_info_err: 0x08c,
    nested_ctl: 0x090,
    event_inj: 0x0a8,
    event_inj_err: 0x0ac,
    nested_cr3: 0x0b0,
    virt_ext: 0x0b8,
    clean: 0x0c0,
    next_rip: 0x0c8,
    insn_len: 0x0d0,
    insn_bytes: 0x0d1,
    avic_backing_page: 0x0e0,
    vmsa_pa: 0x108,
    reserved_sw: 0x3e0,
});

assert_offsets!(VmcbSaveArea {
    es: 0x000,
    cs: 0x010,
    gdtr: 0x060,
    idtr: 0x080,
    tr: 0x090,
    cpl: 0x0cb,
    efer: 0x0d0,
    cr4: 0x148,
    cr3: 0x150,
    cr0: 0x158,
    dr7: 0x160,
    dr6: 0x168,
    rflags: 0x170,
    rip: 0x178,
    rsp: 0x1d8,
    rax: 0x1f8,
    star: 0x200,
    kernel_gs_base: 0x220,
    sysenter_eip: 0x238,
    cr2: 0x240,
    g_pat: 0x268,
    spec_ctrl: 0x2e0,
});

assert_offsets!(Vmcb {
    control: 0,
    save: VMCB_CONTROL_AREA_SIZE,
});

const _: () = assert!(core::mem::size_of::<VmcbSegment>() == 16);
const _: () = assert!(core::mem::size_of::<VmcbControlArea>() == VMCB_CONTROL_AREA_SIZE);
const _: () = assert!(core::mem::size_of::<VmcbSaveArea>() == VMCB_SAVE_AREA_SIZE);
const _: () = assert!(core::mem::size_of::<Vmcb>() == VMCB_SIZE);
const _: () = assert!(core::mem::align_of::<Vmcb>() == VMCB_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercept_bits_land_in_linux_words() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.set_intercept(INTERCEPT_CPUID);
        vmcb.set_intercept(INTERCEPT_VMRUN);
        vmcb.set_intercept(INTERCEPT_CR4_WRITE);
        assert_eq!(vmcb.control.intercepts[3], 1 << 18);
        assert_eq!(vmcb.control.intercepts[4], 1);
        assert_eq!(vmcb.control.intercepts[0], 1 << 20);
        assert!(vmcb.is_intercepted(INTERCEPT_CPUID));
        vmcb.clear_intercept(INTERCEPT_CPUID);
        assert!(!vmcb.is_intercepted(INTERCEPT_CPUID));
        assert!(vmcb.is_intercepted(INTERCEPT_VMRUN));
    }

    #[test]
    fn exception_intercepts_are_word_two() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.set_exception_intercept(18);
        vmcb.set_exception_intercept(32);
        assert_eq!(vmcb.control.intercepts[2], 1 << 18);
        assert_eq!(vmcb.control.intercepts[3], 0);
    }

    #[test]
    fn out_of_range_intercepts_are_ignored() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.set_intercept(200);
        vmcb.clear_intercept(255);
        assert!(!vmcb.is_intercepted(200));
        assert_eq!(vmcb, Vmcb::ZERO);
    }

    #[test]
    fn exit_code_joins_both_halves() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.control.exit_code = 0xffff_ffff;
        assert_eq!(vmcb.exit_code(), 0xffff_ffff);
        vmcb.control.exit_code_hi = 0xffff_ffff;
        assert_eq!(vmcb.exit_code(), u64::MAX);
    }
}
