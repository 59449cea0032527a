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

    /// Word 0 (offset 0x00): CR reads, bits 0-15; CR writes, bits 16-31.
    INTERCEPT_CR0_READ: u8 = 0;
    INTERCEPT_CR3_READ: u8 = 3;
    INTERCEPT_CR4_READ: u8 = 4;
    INTERCEPT_CR8_READ: u8 = 8;
    INTERCEPT_CR0_WRITE: u8 = 16;
    INTERCEPT_CR3_WRITE: u8 = 16 + 3;
    INTERCEPT_CR4_WRITE: u8 = 16 + 4;
    INTERCEPT_CR8_WRITE: u8 = 16 + 8;
    /// Word 1 (offset 0x04): DR reads, bits 0-15 (DRn = base + n).
    INTERCEPT_DR0_READ: u8 = 32;
    INTERCEPT_DR1_READ: u8 = 33;
    INTERCEPT_DR2_READ: u8 = 34;
    INTERCEPT_DR3_READ: u8 = 35;
    INTERCEPT_DR4_READ: u8 = 36;
    INTERCEPT_DR5_READ: u8 = 37;
    INTERCEPT_DR6_READ: u8 = 38;
    INTERCEPT_DR7_READ: u8 = 39;
    /// DR writes, bits 16-31 of word 1.
    INTERCEPT_DR0_WRITE: u8 = 48;
    INTERCEPT_DR1_WRITE: u8 = 49;
    INTERCEPT_DR2_WRITE: u8 = 50;
    INTERCEPT_DR3_WRITE: u8 = 51;
    INTERCEPT_DR4_WRITE: u8 = 52;
    INTERCEPT_DR5_WRITE: u8 = 53;
    INTERCEPT_DR6_WRITE: u8 = 54;
    INTERCEPT_DR7_WRITE: u8 = 55;
    /// Word 2 (offset 0x08): exception vector `v` is bit `64 + v`.
    INTERCEPT_EXCEPTION_OFFSET: u8 = 64;
    /// Word 3 (offset 0x0C).
    INTERCEPT_INTR: u8 = 96;
    INTERCEPT_NMI: u8 = 97;
    INTERCEPT_SMI: u8 = 98;
    INTERCEPT_INIT: u8 = 99;
    INTERCEPT_VINTR: u8 = 100;
    INTERCEPT_SELECTIVE_CR0: u8 = 101;
    INTERCEPT_STORE_IDTR: u8 = 102;
    INTERCEPT_STORE_GDTR: u8 = 103;
    INTERCEPT_STORE_LDTR: u8 = 104;
    INTERCEPT_STORE_TR: u8 = 105;
    INTERCEPT_LOAD_IDTR: u8 = 106;
    INTERCEPT_LOAD_GDTR: u8 = 107;
    INTERCEPT_LOAD_LDTR: u8 = 108;
    INTERCEPT_LOAD_TR: u8 = 109;
    INTERCEPT_RDTSC: u8 = 110;
    INTERCEPT_RDPMC: u8 = 111;
    INTERCEPT_PUSHF: u8 = 112;
    INTERCEPT_POPF: u8 = 113;
    INTERCEPT_CPUID: u8 = 114;
    INTERCEPT_RSM: u8 = 115;
    INTERCEPT_IRET: u8 = 116;
    /// Linux's mixed-case name, kept so the header check finds it.
    #[allow(non_upper_case_globals)]
    INTERCEPT_INTn: u8 = 117;
    INTERCEPT_INVD: u8 = 118;
    INTERCEPT_PAUSE: u8 = 119;
    INTERCEPT_HLT: u8 = 120;
    INTERCEPT_INVLPG: u8 = 121;
    INTERCEPT_INVLPGA: u8 = 122;
    INTERCEPT_IOIO_PROT: u8 = 123;
    INTERCEPT_MSR_PROT: u8 = 124;
    INTERCEPT_TASK_SWITCH: u8 = 125;
    INTERCEPT_FERR_FREEZE: u8 = 126;
    INTERCEPT_SHUTDOWN: u8 = 127;
    /// Word 4 (offset 0x10).
    INTERCEPT_VMRUN: u8 = 128;
    INTERCEPT_VMMCALL: u8 = 129;
    INTERCEPT_VMLOAD: u8 = 130;
    INTERCEPT_VMSAVE: u8 = 131;
    INTERCEPT_STGI: u8 = 132;
    INTERCEPT_CLGI: u8 = 133;
    INTERCEPT_SKINIT: u8 = 134;
    INTERCEPT_RDTSCP: u8 = 135;
    INTERCEPT_ICEBP: u8 = 136;
    INTERCEPT_WBINVD: u8 = 137;
    INTERCEPT_MONITOR: u8 = 138;
    INTERCEPT_MWAIT: u8 = 139;
    INTERCEPT_MWAIT_COND: u8 = 140;
    INTERCEPT_XSETBV: u8 = 141;
    INTERCEPT_RDPRU: u8 = 142;
    /// Write traps (exit after the write completed; not on TCG 7.2).
    TRAP_EFER_WRITE: u8 = 143;
    TRAP_CR0_WRITE: u8 = 144;
    TRAP_CR1_WRITE: u8 = 145;
    TRAP_CR2_WRITE: u8 = 146;
    TRAP_CR3_WRITE: u8 = 147;
    TRAP_CR4_WRITE: u8 = 148;
    TRAP_CR5_WRITE: u8 = 149;
    TRAP_CR6_WRITE: u8 = 150;
    TRAP_CR7_WRITE: u8 = 151;
    TRAP_CR8_WRITE: u8 = 152;
    /// Word 5 (offset 0x14).
    INTERCEPT_INVLPGB: u8 = 160;
    INTERCEPT_INVLPGB_ILLEGAL: u8 = 161;
    INTERCEPT_INVPCID: u8 = 162;
    INTERCEPT_MCOMMIT: u8 = 163;
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
    /// Flush this guest's ASID (needs FlushByAsid, CPUID 8000_000A EDX[6]).
    TLB_CONTROL_FLUSH_ASID: u8 = 3;
    /// Flush this ASID's non-global entries (needs FlushByAsid).
    TLB_CONTROL_FLUSH_ASID_LOCAL: u8 = 7;

    /// `int_ctl` (APM 15.21.1 "Virtual Interrupt Control"): the virtual TPR.
    V_TPR_MASK: u32 = 0x0f;
    V_IRQ_SHIFT: u32 = 8;
    /// A virtual interrupt is pending; with vector 0, [`V_IGN_TPR_MASK`]
    /// and the VINTR intercept, an interrupt-window detector.
    V_IRQ_MASK: u32 = 1 << V_IRQ_SHIFT;
    V_GIF_SHIFT: u32 = 9;
    V_GIF_MASK: u32 = 1 << V_GIF_SHIFT;
    V_NMI_PENDING_SHIFT: u32 = 11;
    V_NMI_PENDING_MASK: u32 = 1 << V_NMI_PENDING_SHIFT;
    V_NMI_BLOCKING_SHIFT: u32 = 12;
    V_NMI_BLOCKING_MASK: u32 = 1 << V_NMI_BLOCKING_SHIFT;
    V_INTR_PRIO_SHIFT: u32 = 16;
    V_INTR_PRIO_MASK: u32 = 0x0f << V_INTR_PRIO_SHIFT;
    V_IGN_TPR_SHIFT: u32 = 20;
    /// The pending virtual interrupt ignores the virtual TPR.
    V_IGN_TPR_MASK: u32 = 1 << V_IGN_TPR_SHIFT;
    V_IRQ_INJECTION_BITS_MASK: u32 = V_IRQ_MASK | V_INTR_PRIO_MASK | V_IGN_TPR_MASK;
    V_INTR_MASKING_SHIFT: u32 = 24;
    /// Guest RFLAGS.IF and CR8 are virtual; physical interrupts are gated
    /// by the host's IF.  pvrs always sets it.
    V_INTR_MASKING_MASK: u32 = 1 << V_INTR_MASKING_SHIFT;
    V_GIF_ENABLE_SHIFT: u32 = 25;
    V_GIF_ENABLE_MASK: u32 = 1 << V_GIF_ENABLE_SHIFT;
    V_NMI_ENABLE_SHIFT: u32 = 26;
    V_NMI_ENABLE_MASK: u32 = 1 << V_NMI_ENABLE_SHIFT;
    X2APIC_MODE_SHIFT: u32 = 30;
    X2APIC_MODE_MASK: u32 = 1 << X2APIC_MODE_SHIFT;
    AVIC_ENABLE_SHIFT: u32 = 31;
    AVIC_ENABLE_MASK: u32 = 1 << AVIC_ENABLE_SHIFT;

    /// `virt_ext` bits.
    LBR_CTL_ENABLE_MASK: u64 = 1 << 0;
    VIRTUAL_VMLOAD_VMSAVE_ENABLE_MASK: u64 = 1 << 1;

    /// `int_state` (APM 15.21.5): the guest is in an interrupt shadow
    /// (after STI or MOV SS).
    SVM_INTERRUPT_SHADOW_MASK: u64 = 1 << 0;
    /// `int_state`: the guest's GIF, with vGIF.
    SVM_GUEST_INTERRUPT_MASK: u64 = 1 << 1;

    /// `nested_ctl` (APM 15.25.3): enable nested paging; `nested_cr3`
    /// then holds the NPT root.
    SVM_NESTED_CTL_NP_ENABLE: u64 = 1 << 0;
    SVM_NESTED_CTL_SEV_ENABLE: u64 = 1 << 1;
    SVM_NESTED_CTL_SEV_ES_ENABLE: u64 = 1 << 2;

    /// Segment attribute bits in the VMCB's compressed format (APM 15.5.1
    /// and Appendix B: descriptor bits 40-47 and 52-55 packed into 12 bits).
    SVM_SELECTOR_S_SHIFT: u16 = 4;
    SVM_SELECTOR_DPL_SHIFT: u16 = 5;
    SVM_SELECTOR_P_SHIFT: u16 = 7;
    SVM_SELECTOR_AVL_SHIFT: u16 = 8;
    SVM_SELECTOR_L_SHIFT: u16 = 9;
    SVM_SELECTOR_DB_SHIFT: u16 = 10;
    SVM_SELECTOR_G_SHIFT: u16 = 11;
    SVM_SELECTOR_TYPE_MASK: u16 = 0xf;
    SVM_SELECTOR_S_MASK: u16 = 1 << SVM_SELECTOR_S_SHIFT;
    SVM_SELECTOR_DPL_MASK: u16 = 3 << SVM_SELECTOR_DPL_SHIFT;
    SVM_SELECTOR_P_MASK: u16 = 1 << SVM_SELECTOR_P_SHIFT;
    SVM_SELECTOR_AVL_MASK: u16 = 1 << SVM_SELECTOR_AVL_SHIFT;
    SVM_SELECTOR_L_MASK: u16 = 1 << SVM_SELECTOR_L_SHIFT;
    SVM_SELECTOR_DB_MASK: u16 = 1 << SVM_SELECTOR_DB_SHIFT;
    SVM_SELECTOR_G_MASK: u16 = 1 << SVM_SELECTOR_G_SHIFT;
    SVM_SELECTOR_WRITE_MASK: u16 = 1 << 1;
    SVM_SELECTOR_READ_MASK: u16 = SVM_SELECTOR_WRITE_MASK;
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
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbSegment {
    pub selector: u16,
    /// Descriptor attributes in the compressed 12-bit format
    /// (`SVM_SELECTOR_*`).
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// The control area (APM table B-1; Linux `struct vmcb_control_area`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcbControlArea {
    /// Intercept words, indexed by `INTERCEPT_* / 32`.
    pub intercepts: [u32; INTERCEPT_WORDS],
    pub reserved_1: [u32; 15 - INTERCEPT_WORDS],
    pub pause_filter_thresh: u16,
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
    pub reserved_2: [u8; 3],
    /// `V_*` virtual interrupt control bits.
    pub int_ctl: u32,
    /// The vector of the virtual interrupt `V_IRQ` raises.
    pub int_vector: u32,
    /// `SVM_INTERRUPT_SHADOW_MASK`, `SVM_GUEST_INTERRUPT_MASK`.
    pub int_state: u32,
    pub reserved_3: [u8; 4],
    /// `SVM_EXIT_*`, low half; see the module docs for why it is split.
    pub exit_code: u32,
    pub exit_code_hi: u32,
    pub exit_info_1: u64,
    pub exit_info_2: u64,
    /// The event that was being delivered when the exit happened, in the
    /// EVENTINJ format (APM 15.7.2).
    pub exit_int_info: u32,
    pub exit_int_info_err: u32,
    /// `SVM_NESTED_CTL_*`.
    pub nested_ctl: u64,
    pub avic_vapic_bar: u64,
    pub ghcb_gpa: u64,
    /// The event to inject at the next VMRUN (APM 15.20).
    pub event_inj: u32,
    pub event_inj_err: u32,
    /// The NPT root (host physical), used when NP is enabled.
    pub nested_cr3: u64,
    /// LBR virtualization and virtual VMLOAD/VMSAVE enables.
    pub virt_ext: u64,
    /// VMCB clean bits ([`clean`]).
    pub clean: u32,
    pub reserved_5: u32,
    /// The RIP after the intercepted instruction, with NRIPS only (APM
    /// 15.7.1); QEMU TCG 7.2 never writes it.
    pub next_rip: u64,
    /// Decode assists (APM 15.33): the bytes fetched at the faulting RIP.
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    pub avic_backing_page: u64,
    pub reserved_6: [u8; 8],
    pub avic_logical_id: u64,
    pub avic_physical_id: u64,
    pub reserved_7: [u8; 8],
    pub vmsa_pa: u64,
    pub reserved_8: [u8; 720],
    /// Offset 0x3e0: reserved for the hypervisor (Linux overlays Hyper-V
    /// enlightenments here).
    pub reserved_sw: [u8; 32],
}

/// The state save area (APM table B-2; Linux `struct vmcb_save_area`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcbSaveArea {
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    pub reserved_0xa0: [u8; 42],
    pub vmpl: u8,
    /// The CPL real hardware uses; QEMU derives it from SS.DPL instead,
    /// so keep both consistent.
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    /// The EFER the processor runs the guest with; SVME must be set.
    pub efer: u64,
    pub reserved_0xd8: [u8; 112],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub reserved_0x180: [u8; 88],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_0x248: [u8; 32],
    /// The guest PAT used with nested paging (ignored by QEMU TCG).
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_0x298: [u8; 72],
    pub spec_ctrl: u64,
}

/// A whole VMCB page: control area, state save area, and the rest of the
/// 4 KiB page (reserved, left as padding).
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmcb {
    pub control: VmcbControlArea,
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
