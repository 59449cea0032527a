//! AMD SVM: the VMCB, exit decoding, event injection, permission maps,
//! and [`SvmVcpu`], the in-memory vCPU that implements
//! [`VendorVcpu`] over a VMCB (AMD APM vol. 2
//! chapter 15).
//!
//! The kernel module's world switch (VMLOAD, VMRUN, VMSAVE in a `.S`
//! file) works on an [`SvmVcpu`] it allocated (16 KiB, 4 KiB aligned,
//! physically contiguous): the VMCB is at offset 0, the MSR permission
//! map at [`SVM_VCPU_MSRPM_OFFSET`], the guest GPRs that VMRUN does not
//! switch at [`SVM_VCPU_GPRS_OFFSET`] (8 bytes each, by register number).
//! Around each VMRUN it calls [`SvmVcpu::prepare_entry`] and
//! [`SvmVcpu::complete_exit`].

pub mod event;
pub mod exit;
pub mod iopm;
pub mod msrpm;
pub mod vmcb;

use crate::asid::{CpuAsids, VcpuAsid};
use crate::msr::{EFER_LMA, EFER_SVME, PAT_POWER_ON};
use crate::vendor::{
    ContextMsr, Event, EventError, Exit, ExitInfo, Gpr, HardwareExitInfo, MsrInterceptError,
    Segment, SegmentRegister, SkipError, VendorVcpu,
};
use event::RawEvent;
use msrpm::MsrPermissionMap;
use vmcb::*;

/// The SVM features of CPUID 8000_000A EDX that change what the vCPU
/// does.  QEMU TCG 7.2 has none of them ([`SvmFeatures::TCG`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmFeatures {
    /// EDX\[3\]: the VMCB's `next_rip` is written on instruction intercepts.
    pub nrips: bool,
    /// EDX\[7\]: CR/DR/INVLPG exit information and instruction bytes.
    pub decode_assists: bool,
    /// EDX\[6\]: `TLB_CONTROL_FLUSH_ASID` works.
    pub flush_by_asid: bool,
}

impl SvmFeatures {
    /// What QEMU TCG 7.2's `-cpu max` offers.
    pub const TCG: Self = Self {
        nrips: false,
        decode_assists: false,
        flush_by_asid: false,
    };

    /// From CPUID 8000_000A EDX.
    pub fn from_cpuid_edx(edx: u32) -> Self {
        Self {
            nrips: edx & (1 << 3) != 0,
            decode_assists: edx & (1 << 7) != 0,
            flush_by_asid: edx & (1 << 6) != 0,
        }
    }
}

/// Host physical addresses the VMCB points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbAddresses {
    /// The (per-VM) I/O permission map.
    pub iopm_base_pa: u64,
    /// This vCPU's [`SvmVcpu::msrpm`].
    pub msrpm_base_pa: u64,
    /// The NPT root.
    pub nested_cr3: u64,
}

/// One SVM vCPU: its VMCB, its MSR permission map, the GPRs VMRUN leaves
/// to software, and the software state around them.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct SvmVcpu {
    /// The VMCB, first so that its page-aligned physical address is the
    /// struct's (VMRUN's RAX operand).
    pub vmcb: Vmcb,
    /// This vCPU's MSR permission map, right after the VMCB (at
    /// [`SVM_VCPU_MSRPM_OFFSET`]); `msrpm_base_pa` points at it.
    pub msrpm: MsrPermissionMap,
    /// Guest GPRs by register number.  The RAX and RSP slots are unused:
    /// VMRUN loads and saves those from the VMCB.
    pub gprs: [u64; 16],
    /// The vCPU's ASID state, for [`SvmVcpu::prepare_entry`].
    pub asid: VcpuAsid,
    features: SvmFeatures,
    /// The EFER the guest last wrote: its SVME bit is the guest's view
    /// (the VMCB's has SVME forced on); the other bits are the VMCB's,
    /// which the processor updates (LMA).
    guest_efer: u64,
    tlb_flush_requested: bool,
}

/// Offset of [`SvmVcpu::msrpm`] in the struct (for its physical address).
pub const SVM_VCPU_MSRPM_OFFSET: usize = core::mem::offset_of!(SvmVcpu, msrpm);
/// Offset of [`SvmVcpu::gprs`] in the struct (for the assembly).
pub const SVM_VCPU_GPRS_OFFSET: usize = core::mem::offset_of!(SvmVcpu, gprs);

const _: () = assert!(core::mem::offset_of!(SvmVcpu, vmcb) == 0);
const _: () = assert!(SVM_VCPU_MSRPM_OFFSET == VMCB_SIZE);
const _: () = assert!(core::mem::size_of::<SvmVcpu>() <= 16 * 1024);

/// CR0 at reset: CD | NW | ET (APM 14.1.3).
const CR0_RESET: u64 = 0x6000_0010;
/// RFLAGS bit 1 is always set.
const RFLAGS_RESET: u64 = 0x2;
const DR6_RESET: u64 = 0xffff_0ff0;
const DR7_RESET: u64 = 0x400;
/// Exception vector of #MC, intercepted so a machine check during the
/// guest reaches the host's handler.
const MC_VECTOR: u8 = 18;

/// The intercepts pvrs always sets (host-backend notes §2.1): physical
/// events, everything that must not run natively, and the instructions
/// pvrs emulates.  CR3, INVLPG, #PF and PAUSE are left alone with NPT.
const DEFAULT_INTERCEPTS: [u8; 24] = [
    INTERCEPT_INTR,
    INTERCEPT_NMI,
    INTERCEPT_SMI,
    INTERCEPT_CPUID,
    INTERCEPT_RDPMC,
    INTERCEPT_INVD,
    INTERCEPT_HLT,
    INTERCEPT_INVLPGA,
    INTERCEPT_IOIO_PROT,
    INTERCEPT_MSR_PROT,
    INTERCEPT_TASK_SWITCH,
    INTERCEPT_SHUTDOWN,
    INTERCEPT_RSM,
    // VMRUN must be intercepted or VMRUN itself fails (APM 15.5.1).
    INTERCEPT_VMRUN,
    INTERCEPT_VMMCALL,
    INTERCEPT_VMLOAD,
    INTERCEPT_VMSAVE,
    INTERCEPT_STGI,
    INTERCEPT_CLGI,
    INTERCEPT_SKINIT,
    INTERCEPT_WBINVD,
    INTERCEPT_MONITOR,
    INTERCEPT_MWAIT,
    // The guest's XCR0 lives in VcpuState and is loaded around VMRUN:
    // every XSETBV must exit (TCG 7.2 honours the intercept too).
    INTERCEPT_XSETBV,
];

fn real_mode_segment(selector: u16, attributes: u16) -> VmcbSegment {
    VmcbSegment {
        selector,
        attrib: attributes,
        limit: 0xffff,
        base: u64::from(selector) << 4,
    }
}

impl SvmVcpu {
    /// A vCPU in the reset state (see [`SvmVcpu::reset`]).  This value is
    /// 16 KiB: in the kernel, allocate it and call `reset` in place.
    pub fn new(features: SvmFeatures, addresses: VmcbAddresses) -> Self {
        let mut vcpu = Self {
            vmcb: Vmcb::ZERO,
            msrpm: MsrPermissionMap::INTERCEPT_ALL,
            gprs: [0; 16],
            asid: VcpuAsid::NEW,
            features,
            guest_efer: 0,
            tlb_flush_requested: false,
        };
        vcpu.reset(features, addresses);
        vcpu
    }

    /// Puts the vCPU in the architectural reset state (APM 14.1.3: real
    /// mode at F000:FFF0), with pvrs's intercepts, V_INTR_MASKING, nested
    /// paging on, every MSR intercepted, and no ASID.
    pub fn reset(&mut self, features: SvmFeatures, addresses: VmcbAddresses) {
        self.vmcb.control = VmcbControlArea::ZERO;
        self.vmcb.save = VmcbSaveArea::ZERO;
        self.msrpm.0.fill(0xff);
        self.gprs = [0; 16];
        self.asid = VcpuAsid::NEW;
        self.features = features;
        self.guest_efer = 0;
        self.tlb_flush_requested = false;

        let control = &mut self.vmcb.control;
        control.iopm_base_pa = addresses.iopm_base_pa;
        control.msrpm_base_pa = addresses.msrpm_base_pa;
        control.nested_cr3 = addresses.nested_cr3;
        control.nested_ctl = SVM_NESTED_CTL_NP_ENABLE;
        // Guest IF and TPR are virtual; host interrupts stay the host's.
        control.int_ctl = V_INTR_MASKING_MASK;
        for intercept in DEFAULT_INTERCEPTS {
            self.vmcb.set_intercept(intercept);
        }
        self.vmcb.set_exception_intercept(MC_VECTOR);

        let data = SVM_SELECTOR_P_MASK | SVM_SELECTOR_S_MASK | SVM_SELECTOR_WRITE_MASK;
        let code = SVM_SELECTOR_P_MASK
            | SVM_SELECTOR_S_MASK
            | SVM_SELECTOR_READ_MASK
            | SVM_SELECTOR_CODE_MASK;
        let save = &mut self.vmcb.save;
        save.cs = VmcbSegment {
            selector: 0xf000,
            attrib: code,
            limit: 0xffff,
            base: 0xffff_0000,
        };
        for segment in [
            &mut save.es,
            &mut save.ss,
            &mut save.ds,
            &mut save.fs,
            &mut save.gs,
        ] {
            *segment = real_mode_segment(0, data);
        }
        // LDT (type 2) and busy 16-bit TSS (type 3), present.
        save.ldtr = real_mode_segment(0, SVM_SELECTOR_P_MASK | 2);
        save.tr = real_mode_segment(0, SVM_SELECTOR_P_MASK | 3);
        save.gdtr.limit = 0xffff;
        save.idtr.limit = 0xffff;
        save.cr0 = CR0_RESET;
        save.rflags = RFLAGS_RESET;
        save.rip = 0xfff0;
        save.dr6 = DR6_RESET;
        save.dr7 = DR7_RESET;
        save.efer = EFER_SVME;
        save.g_pat = PAT_POWER_ON;
    }

    /// The features this vCPU was reset with.
    pub fn features(&self) -> SvmFeatures {
        self.features
    }

    /// Just before VMRUN, on CPU `cpu_id` whose allocator is `cpu`
    /// (preemption off): picks the ASID and the TLB control for this
    /// entry.  A flush requested with `request_tlb_flush` becomes a fresh
    /// ASID, or `TLB_CONTROL_FLUSH_ASID` where FlushByAsid exists.
    pub fn prepare_entry(&mut self, cpu: &mut CpuAsids, cpu_id: u32) {
        let mut tlb_ctl = TLB_CONTROL_DO_NOTHING;
        if core::mem::take(&mut self.tlb_flush_requested) {
            if self.features.flush_by_asid {
                tlb_ctl = TLB_CONTROL_FLUSH_ASID;
            } else {
                self.asid.invalidate();
            }
        }
        let assignment = cpu.assign(cpu_id, &mut self.asid);
        if assignment.flush_all {
            tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
        }
        self.vmcb.control.asid = assignment.asid;
        self.vmcb.control.tlb_ctl = tlb_ctl;
    }

    /// Just after #VMEXIT: the flush was done, the injected event was
    /// either delivered or is now in EXITINTINFO, and a window whose exit
    /// this is has served its purpose (the caller asks again if it still
    /// needs one).
    pub fn complete_exit(&mut self) {
        self.vmcb.control.tlb_ctl = TLB_CONTROL_DO_NOTHING;
        self.vmcb.control.event_inj = 0;
        self.vmcb.control.event_inj_err = 0;
        match self.exit_info().exit {
            Exit::InterruptWindow => self.set_interrupt_window(false),
            Exit::Iret => self.set_nmi_window(false),
            _ => {}
        }
    }

    fn segment_slot(&self, register: SegmentRegister) -> &VmcbSegment {
        let save = &self.vmcb.save;
        match register {
            SegmentRegister::Es => &save.es,
            SegmentRegister::Cs => &save.cs,
            SegmentRegister::Ss => &save.ss,
            SegmentRegister::Ds => &save.ds,
            SegmentRegister::Fs => &save.fs,
            SegmentRegister::Gs => &save.gs,
            SegmentRegister::Ldtr => &save.ldtr,
            SegmentRegister::Tr => &save.tr,
            SegmentRegister::Gdtr => &save.gdtr,
            SegmentRegister::Idtr => &save.idtr,
        }
    }

    fn segment_slot_mut(&mut self, register: SegmentRegister) -> &mut VmcbSegment {
        let save = &mut self.vmcb.save;
        match register {
            SegmentRegister::Es => &mut save.es,
            SegmentRegister::Cs => &mut save.cs,
            SegmentRegister::Ss => &mut save.ss,
            SegmentRegister::Ds => &mut save.ds,
            SegmentRegister::Fs => &mut save.fs,
            SegmentRegister::Gs => &mut save.gs,
            SegmentRegister::Ldtr => &mut save.ldtr,
            SegmentRegister::Tr => &mut save.tr,
            SegmentRegister::Gdtr => &mut save.gdtr,
            SegmentRegister::Idtr => &mut save.idtr,
        }
    }

    fn in_64_bit_mode(&self) -> bool {
        self.vmcb.save.efer & EFER_LMA != 0 && self.vmcb.save.cs.attrib & SVM_SELECTOR_L_MASK != 0
    }
}

impl VendorVcpu for SvmVcpu {
    fn gpr(&self, register: Gpr) -> u64 {
        match register {
            Gpr::Rax => self.vmcb.save.rax,
            Gpr::Rsp => self.vmcb.save.rsp,
            other => self.gprs[other as usize],
        }
    }

    fn set_gpr(&mut self, register: Gpr, value: u64) {
        match register {
            Gpr::Rax => self.vmcb.save.rax = value,
            Gpr::Rsp => self.vmcb.save.rsp = value,
            other => self.gprs[other as usize] = value,
        }
    }

    fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.vmcb.save.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.vmcb.save.rflags
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.vmcb.save.rflags = rflags | RFLAGS_RESET;
    }

    fn cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }

    fn set_cr0(&mut self, value: u64) {
        self.vmcb.save.cr0 = value;
    }

    fn cr2(&self) -> u64 {
        self.vmcb.save.cr2
    }

    fn set_cr2(&mut self, value: u64) {
        self.vmcb.save.cr2 = value;
    }

    fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }

    fn set_cr3(&mut self, value: u64) {
        self.vmcb.save.cr3 = value;
    }

    fn cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    fn set_cr4(&mut self, value: u64) {
        self.vmcb.save.cr4 = value;
    }

    fn efer(&self) -> u64 {
        // The processor's EFER, which it changes itself (LMA when the
        // guest turns paging on with LME set, a CR0 write SVM with nested
        // paging does not intercept), with the guest's own SVME bit in
        // place of the one VMRUN needs.
        (self.vmcb.save.efer & !EFER_SVME) | (self.guest_efer & EFER_SVME)
    }

    fn set_efer(&mut self, value: u64) {
        self.guest_efer = value;
        self.vmcb.save.efer = value | EFER_SVME;
    }

    fn segment(&self, register: SegmentRegister) -> Segment {
        let slot = self.segment_slot(register);
        Segment {
            selector: slot.selector,
            attributes: slot.attrib,
            limit: slot.limit,
            base: slot.base,
        }
    }

    fn set_segment(&mut self, register: SegmentRegister, segment: Segment) {
        *self.segment_slot_mut(register) = VmcbSegment {
            selector: segment.selector,
            attrib: segment.attributes,
            limit: segment.limit,
            base: segment.base,
        };
        if register == SegmentRegister::Ss {
            // Hardware takes the CPL from the VMCB, QEMU from SS.DPL:
            // keep them equal, as KVM's svm_set_segment does.
            self.vmcb.save.cpl =
                ((segment.attributes & SVM_SELECTOR_DPL_MASK) >> SVM_SELECTOR_DPL_SHIFT) as u8;
        }
    }

    fn cpl(&self) -> u8 {
        self.vmcb.save.cpl
    }

    fn context_msr(&self, msr: ContextMsr) -> u64 {
        let save = &self.vmcb.save;
        match msr {
            ContextMsr::Star => save.star,
            ContextMsr::Lstar => save.lstar,
            ContextMsr::Cstar => save.cstar,
            ContextMsr::Sfmask => save.sfmask,
            ContextMsr::KernelGsBase => save.kernel_gs_base,
            ContextMsr::SysenterCs => save.sysenter_cs,
            ContextMsr::SysenterEsp => save.sysenter_esp,
            ContextMsr::SysenterEip => save.sysenter_eip,
            ContextMsr::Pat => save.g_pat,
        }
    }

    fn set_context_msr(&mut self, msr: ContextMsr, value: u64) {
        let save = &mut self.vmcb.save;
        let slot = match msr {
            ContextMsr::Star => &mut save.star,
            ContextMsr::Lstar => &mut save.lstar,
            ContextMsr::Cstar => &mut save.cstar,
            ContextMsr::Sfmask => &mut save.sfmask,
            ContextMsr::KernelGsBase => &mut save.kernel_gs_base,
            ContextMsr::SysenterCs => &mut save.sysenter_cs,
            ContextMsr::SysenterEsp => &mut save.sysenter_esp,
            ContextMsr::SysenterEip => &mut save.sysenter_eip,
            ContextMsr::Pat => &mut save.g_pat,
        };
        *slot = value;
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.control.tsc_offset = offset;
    }

    fn cr8(&self) -> u64 {
        u64::from(self.vmcb.control.int_ctl & V_TPR_MASK)
    }

    fn set_cr8(&mut self, cr8: u64) {
        let control = &mut self.vmcb.control;
        control.int_ctl = (control.int_ctl & !V_TPR_MASK) | (cr8 as u32 & V_TPR_MASK);
    }

    fn interrupt_shadow(&self) -> bool {
        u64::from(self.vmcb.control.int_state) & SVM_INTERRUPT_SHADOW_MASK != 0
    }

    fn exit_info(&self) -> ExitInfo {
        let control = &self.vmcb.control;
        let mut exit = exit::decode_exit(
            control.exit_code,
            control.exit_code_hi,
            control.exit_info_1,
            control.exit_info_2,
        );
        if let Exit::Invlpg { address } = &mut exit {
            if !self.features.decode_assists {
                *address = None;
            }
        }
        let raw = event::repair_tcg_exit_int_info(RawEvent {
            word: control.exit_int_info,
            error_code: control.exit_int_info_err,
        });
        ExitInfo {
            exit,
            interrupted_event: event::decode(raw),
        }
    }

    fn skip_instruction(&mut self, exit: &Exit) -> Result<(), SkipError> {
        let hardware_next_rip = match exit {
            Exit::Io(io) => Some(io.next_rip),
            _ if self.features.nrips && self.vmcb.control.next_rip != 0 => {
                Some(self.vmcb.control.next_rip)
            }
            _ => None,
        };
        let next_rip = match hardware_next_rip {
            Some(rip) => rip,
            None => {
                let length = exit
                    .fixed_instruction_length()
                    .ok_or(SkipError::LengthUnknown)?;
                let rip = self.vmcb.save.rip.wrapping_add(u64::from(length));
                // Outside 64-bit mode EIP wraps at 4 GiB.
                if self.in_64_bit_mode() {
                    rip
                } else {
                    rip & 0xffff_ffff
                }
            }
        };
        self.vmcb.save.rip = next_rip;
        // The instruction retired, so an STI/MOV SS shadow is over.
        self.vmcb.control.int_state &= !(SVM_INTERRUPT_SHADOW_MASK as u32);
        Ok(())
    }

    fn hardware_exit_info(&self) -> HardwareExitInfo {
        let control = &self.vmcb.control;
        let has_error_code = event::SVM_EXITINTINFO_VALID | event::SVM_EXITINTINFO_VALID_ERR;
        HardwareExitInfo {
            reason: u64::from(control.exit_code_hi) << 32 | u64::from(control.exit_code),
            info1: control.exit_info_1,
            info2: control.exit_info_2,
            interrupt_info: control.exit_int_info,
            // As svm_get_exit_info: the error code only when it is valid.
            interrupt_error_code: if control.exit_int_info & has_error_code == has_error_code {
                control.exit_int_info_err
            } else {
                0
            },
        }
    }

    fn retire_instruction(&mut self, next_rip: u64) {
        self.vmcb.save.rip = next_rip;
        self.vmcb.control.int_state &= !(SVM_INTERRUPT_SHADOW_MASK as u32);
    }

    fn inject_event(&mut self, event: Event) -> Result<(), EventError> {
        if self.injection_pending() {
            return Err(EventError::InjectionPending);
        }
        let raw = event::encode(&event)?;
        self.vmcb.control.event_inj = raw.word;
        self.vmcb.control.event_inj_err = raw.error_code;
        Ok(())
    }

    fn injection_pending(&self) -> bool {
        self.vmcb.control.event_inj & event::SVM_EVTINJ_VALID != 0
    }

    fn set_interrupt_window(&mut self, open: bool) {
        let control = &mut self.vmcb.control;
        control.int_ctl &= !V_IRQ_INJECTION_BITS_MASK;
        if open {
            // A virtual interrupt that ignores the TPR, never delivered:
            // the VINTR intercept fires first, as soon as the guest could
            // take it (IF=1, no shadow).  Vector 0 because QEMU mislabels
            // V_IRQ deliveries (notes §1.5), so none must ever happen.
            control.int_ctl |= V_IRQ_MASK | V_IGN_TPR_MASK | V_INTR_PRIO_MASK;
            control.int_vector = 0;
            self.vmcb.set_intercept(INTERCEPT_VINTR);
        } else {
            self.vmcb.clear_intercept(INTERCEPT_VINTR);
        }
    }

    fn set_nmi_window(&mut self, open: bool) {
        if open {
            self.vmcb.set_intercept(INTERCEPT_IRET);
        } else {
            self.vmcb.clear_intercept(INTERCEPT_IRET);
        }
    }

    fn set_msr_intercept(
        &mut self,
        msr: u32,
        intercept_read: bool,
        intercept_write: bool,
    ) -> Result<(), MsrInterceptError> {
        // The owned map has the right size, so the only error is an MSR
        // outside the three ranges.
        self.msrpm
            .set(msr, intercept_read, intercept_write)
            .map_err(|_| MsrInterceptError::NotMappable(msr))
    }

    fn request_tlb_flush(&mut self) {
        self.tlb_flush_requested = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendor::{EventKind, IoDirection};
    use std::boxed::Box;

    fn vcpu(features: SvmFeatures) -> Box<SvmVcpu> {
        Box::new(SvmVcpu::new(
            features,
            VmcbAddresses {
                iopm_base_pa: 0x10_0000,
                msrpm_base_pa: 0x20_0000,
                nested_cr3: 0x30_0000,
            },
        ))
    }

    fn set_exit(vcpu: &mut SvmVcpu, code: u32, info1: u64, info2: u64) {
        vcpu.vmcb.control.exit_code = code;
        vcpu.vmcb.control.exit_code_hi = 0;
        vcpu.vmcb.control.exit_info_1 = info1;
        vcpu.vmcb.control.exit_info_2 = info2;
    }

    #[test]
    fn reset_state_is_what_vmrun_accepts() {
        let vcpu = vcpu(SvmFeatures::TCG);
        let vmcb = &vcpu.vmcb;
        assert!(vmcb.is_intercepted(INTERCEPT_VMRUN));
        assert!(vmcb.is_intercepted(INTERCEPT_INTR));
        assert!(vmcb.is_intercepted(INTERCEPT_MSR_PROT));
        assert!(vmcb.is_intercepted(INTERCEPT_IOIO_PROT));
        assert!(!vmcb.is_intercepted(INTERCEPT_CR3_WRITE));
        assert!(!vmcb.is_intercepted(INTERCEPT_INVLPG));
        assert!(!vmcb.is_intercepted(INTERCEPT_PAUSE));
        assert_eq!(vmcb.control.intercepts[2], 1 << MC_VECTOR);
        assert_eq!(vmcb.save.efer, EFER_SVME);
        assert_eq!(vcpu.efer(), 0);
        assert_eq!(vmcb.control.nested_ctl, SVM_NESTED_CTL_NP_ENABLE);
        assert_eq!(vmcb.control.nested_cr3, 0x30_0000);
        assert_eq!(vmcb.control.int_ctl, V_INTR_MASKING_MASK);
        assert_eq!(vmcb.save.cs.base + vmcb.save.rip, 0xffff_fff0);
        assert_eq!(vmcb.save.g_pat, PAT_POWER_ON);
        assert!(vcpu.msrpm.is_intercepted(0xc000_0080, false));
    }

    #[test]
    fn gprs_route_rax_and_rsp_to_the_vmcb() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        for register in Gpr::ALL {
            vcpu.set_gpr(register, 0x100 + register as u64);
        }
        assert_eq!(vcpu.vmcb.save.rax, 0x100);
        assert_eq!(vcpu.vmcb.save.rsp, 0x104);
        assert_eq!(vcpu.gprs[Gpr::R15 as usize], 0x10f);
        for register in Gpr::ALL {
            assert_eq!(vcpu.gpr(register), 0x100 + register as u64);
        }
    }

    #[test]
    fn ss_sets_cpl() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        let mut ss = vcpu.segment(SegmentRegister::Ss);
        ss.attributes |= 3 << SVM_SELECTOR_DPL_SHIFT;
        vcpu.set_segment(SegmentRegister::Ss, ss);
        assert_eq!(vcpu.cpl(), 3);
        assert_eq!(vcpu.segment(SegmentRegister::Ss), ss);
    }

    #[test]
    fn skip_uses_fixed_length_without_nrips() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        vcpu.vmcb.control.int_state = SVM_INTERRUPT_SHADOW_MASK as u32;
        vcpu.set_rip(0x1000);
        vcpu.vmcb.control.next_rip = 0x9999;
        assert_eq!(vcpu.skip_instruction(&Exit::Cpuid), Ok(()));
        assert_eq!(vcpu.rip(), 0x1002);
        assert!(!vcpu.interrupt_shadow());
        assert_eq!(vcpu.skip_instruction(&Exit::Hlt), Ok(()));
        assert_eq!(vcpu.rip(), 0x1003);
        assert_eq!(
            vcpu.skip_instruction(&Exit::Shutdown),
            Err(SkipError::LengthUnknown)
        );
        // EIP wraps outside 64-bit mode.
        vcpu.set_rip(0xffff_ffff);
        vcpu.skip_instruction(&Exit::Hypercall).unwrap();
        assert_eq!(vcpu.rip(), 2);
    }

    #[test]
    fn skip_in_64_bit_mode_does_not_wrap() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        vcpu.set_efer(crate::msr::EFER_LME | EFER_LMA);
        vcpu.vmcb.save.cs.attrib |= SVM_SELECTOR_L_MASK;
        vcpu.set_rip(0xffff_ffff);
        vcpu.skip_instruction(&Exit::Cpuid).unwrap();
        assert_eq!(vcpu.rip(), 0x1_0000_0001);
    }

    #[test]
    fn efer_shows_the_lma_the_processor_set() {
        let mut vcpu = SvmVcpu::new(SvmFeatures::TCG, VmcbAddresses::default());
        let lme = crate::msr::EFER_LME;
        vcpu.set_efer(lme);
        assert_eq!(vcpu.vmcb.save.efer, lme | EFER_SVME);
        // The guest turns paging on (not intercepted with nested paging):
        // the processor sets LMA in the VMCB at the next #VMEXIT.
        vcpu.vmcb.save.efer |= EFER_LMA;
        assert_eq!(vcpu.efer(), lme | EFER_LMA, "SVME stays hidden");
        vcpu.vmcb.save.cs.attrib |= SVM_SELECTOR_L_MASK;
        assert!(vcpu.in_64_bit_mode());
    }

    #[test]
    fn skip_prefers_hardware_next_rip() {
        let mut vcpu = vcpu(SvmFeatures {
            nrips: true,
            ..SvmFeatures::TCG
        });
        vcpu.set_rip(0x1000);
        vcpu.vmcb.control.next_rip = 0x1004;
        vcpu.skip_instruction(&Exit::Cpuid).unwrap();
        assert_eq!(vcpu.rip(), 0x1004);
        // IOIO's EXITINFO2 works without NRIPS.
        let mut tcg = self::vcpu(SvmFeatures::TCG);
        set_exit(
            &mut tcg,
            exit::SVM_EXIT_IOIO,
            0x60 << 16 | 1 << 4 | 1,
            0x2002,
        );
        let info = tcg.exit_info();
        let Exit::Io(io) = info.exit else {
            panic!("not IO")
        };
        assert_eq!(io.direction, IoDirection::In);
        tcg.skip_instruction(&info.exit).unwrap();
        assert_eq!(tcg.rip(), 0x2002);
    }

    #[test]
    fn injection_validates_and_refuses_a_second() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        assert_eq!(
            vcpu.inject_event(Event::exception(2, None)),
            Err(EventError::InvalidExceptionVector(2))
        );
        assert!(!vcpu.injection_pending());
        vcpu.inject_event(Event::exception(13, Some(0))).unwrap();
        assert_eq!(vcpu.vmcb.control.event_inj, 0x8000_0b0d);
        assert_eq!(
            vcpu.inject_event(Event::interrupt(0x30)),
            Err(EventError::InjectionPending)
        );
        vcpu.complete_exit();
        assert!(!vcpu.injection_pending());
    }

    #[test]
    fn exit_info_repairs_tcg_exit_int_info() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        set_exit(&mut vcpu, exit::SVM_EXIT_NPF, 0, 0x1000);
        vcpu.vmcb.control.exit_int_info =
            event::SVM_EVTINJ_VALID | event::SVM_EVTINJ_TYPE_EXEPT | 0xec;
        let info = vcpu.exit_info();
        assert_eq!(info.interrupted_event, Ok(Some(Event::interrupt(0xec))));
        vcpu.vmcb.control.exit_int_info = event::SVM_EVTINJ_VALID | (5 << 8);
        assert_eq!(
            vcpu.exit_info().interrupted_event,
            Err(EventError::ReservedType(5))
        );
        vcpu.vmcb.control.exit_int_info =
            event::SVM_EVTINJ_VALID | event::SVM_EVTINJ_TYPE_SOFT | 0x80;
        assert_eq!(
            vcpu.exit_info().interrupted_event.unwrap().unwrap().kind,
            EventKind::SoftwareInterrupt
        );
    }

    #[test]
    fn invlpg_address_only_with_decode_assists() {
        let mut tcg = vcpu(SvmFeatures::TCG);
        set_exit(&mut tcg, exit::SVM_EXIT_INVLPG, 0, 0);
        assert_eq!(tcg.exit_info().exit, Exit::Invlpg { address: None });
        let mut assisted = vcpu(SvmFeatures {
            decode_assists: true,
            ..SvmFeatures::TCG
        });
        set_exit(&mut assisted, exit::SVM_EXIT_INVLPG, 0x7000, 0);
        assert_eq!(
            assisted.exit_info().exit,
            Exit::Invlpg {
                address: Some(0x7000)
            }
        );
    }

    #[test]
    fn interrupt_window_opens_and_closes_on_its_exit() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        vcpu.vmcb.control.int_vector = 0x55;
        vcpu.set_interrupt_window(true);
        assert!(vcpu.vmcb.is_intercepted(INTERCEPT_VINTR));
        assert_eq!(
            vcpu.vmcb.control.int_ctl,
            V_INTR_MASKING_MASK | V_IRQ_MASK | V_IGN_TPR_MASK | V_INTR_PRIO_MASK
        );
        assert_eq!(vcpu.vmcb.control.int_vector, 0);
        set_exit(&mut vcpu, exit::SVM_EXIT_VINTR, 0, 0);
        vcpu.complete_exit();
        assert!(!vcpu.vmcb.is_intercepted(INTERCEPT_VINTR));
        assert_eq!(vcpu.vmcb.control.int_ctl, V_INTR_MASKING_MASK);
    }

    #[test]
    fn nmi_window_is_the_iret_intercept() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        vcpu.set_nmi_window(true);
        assert!(vcpu.vmcb.is_intercepted(INTERCEPT_IRET));
        set_exit(&mut vcpu, exit::SVM_EXIT_HLT, 0, 0);
        vcpu.complete_exit();
        assert!(vcpu.vmcb.is_intercepted(INTERCEPT_IRET));
        set_exit(&mut vcpu, exit::SVM_EXIT_IRET, 0, 0);
        vcpu.complete_exit();
        assert!(!vcpu.vmcb.is_intercepted(INTERCEPT_IRET));
    }

    #[test]
    fn tlb_flush_request_without_flush_by_asid_takes_a_fresh_asid() {
        let mut cpu = CpuAsids::new(16).unwrap();
        let mut vcpu = vcpu(SvmFeatures::TCG);
        vcpu.prepare_entry(&mut cpu, 0);
        assert_eq!(vcpu.vmcb.control.asid, 1);
        assert_eq!(vcpu.vmcb.control.tlb_ctl, TLB_CONTROL_FLUSH_ALL_ASID);
        vcpu.complete_exit();
        assert_eq!(vcpu.vmcb.control.tlb_ctl, TLB_CONTROL_DO_NOTHING);
        vcpu.prepare_entry(&mut cpu, 0);
        assert_eq!(
            (vcpu.vmcb.control.asid, vcpu.vmcb.control.tlb_ctl),
            (1, TLB_CONTROL_DO_NOTHING)
        );
        vcpu.request_tlb_flush();
        vcpu.prepare_entry(&mut cpu, 0);
        assert_eq!(
            (vcpu.vmcb.control.asid, vcpu.vmcb.control.tlb_ctl),
            (2, TLB_CONTROL_DO_NOTHING)
        );
    }

    #[test]
    fn tlb_flush_request_with_flush_by_asid() {
        let mut cpu = CpuAsids::new(16).unwrap();
        let mut vcpu = vcpu(SvmFeatures {
            flush_by_asid: true,
            ..SvmFeatures::TCG
        });
        vcpu.prepare_entry(&mut cpu, 0);
        vcpu.request_tlb_flush();
        vcpu.prepare_entry(&mut cpu, 0);
        assert_eq!(
            (vcpu.vmcb.control.asid, vcpu.vmcb.control.tlb_ctl),
            (1, TLB_CONTROL_FLUSH_ASID)
        );
    }

    #[test]
    fn msr_intercepts_through_the_trait() {
        let mut vcpu = vcpu(SvmFeatures::TCG);
        vcpu.set_msr_intercept(0xc000_0082, false, false).unwrap();
        assert!(!vcpu.msrpm.is_intercepted(0xc000_0082, true));
        assert_eq!(
            vcpu.set_msr_intercept(0x4b56_4d01, false, false),
            Err(MsrInterceptError::NotMappable(0x4b56_4d01))
        );
    }

    #[test]
    fn features_from_cpuid() {
        assert_eq!(SvmFeatures::from_cpuid_edx(0x1_0001), SvmFeatures::TCG);
        assert_eq!(
            SvmFeatures::from_cpuid_edx(1 << 3 | 1 << 6 | 1 << 7),
            SvmFeatures {
                nrips: true,
                decode_assists: true,
                flush_by_asid: true
            }
        );
    }
}
