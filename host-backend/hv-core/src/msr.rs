//! Guest MSR emulation for the MSRs that are the vCPU's own state.
//!
//! Which MSRs, and why (host-backend notes §2.2; KVM `__kvm_set_msr`,
//! `kvm_set_msr_common`, `set_efer` in `arch/x86/kvm/x86.c` for the
//! rules):
//! - EFER: the guest sees and writes its own value; the VMCB's copy has
//!   SVME forced on because VMRUN refuses a guest without it (AMD APM
//!   vol. 2 15.5.1).  The vendor hides that ([`VendorVcpu::efer`]).
//!   Reserved bits #GP; changing LME while paging is on #GPs; LMA is the
//!   processor's and guest writes to it are ignored.
//! - PAT: only memory types 0, 1, 4, 5, 6, 7 in each byte (SDM vol. 3
//!   11.12.2); kept in the VMCB's gPAT.  QEMU TCG ignores gPAT, which is
//!   why PAT must be intercepted at all: a passed-through write would
//!   change L1's own PAT.
//! - IA32_TSC and IA32_TSC_ADJUST: an offset to the host TSC, as KVM
//!   keeps it (a guest write to one moves the other by the same amount).
//!   TCG reads IA32_TSC as 0, so this must be emulated.
//! - TSC_AUX: not in the VMCB; stored here for the world switch to swap.
//!   AMD drops bits 63:32 on write rather than faulting.
//! - MISC_ENABLE, MTRRdefType, APIC_BASE: stored (pvrs-vmm writes them
//!   with KVM_SET_MSRS); APIC_BASE's mode transitions are checked here,
//!   what they do belongs to the LAPIC.
//! - STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_*, FS/GS base:
//!   in the vendor's control structure ([`ContextMsr`]), with KVM's
//!   canonical-address checks.
//!
//! Everything else is [`MsrError::Unknown`]: #GP for the guest, after the
//! caller gave the LAPIC (x2APIC range) and the paravirtual MSRs their
//! turn.  Numbers are Linux's `arch/x86/include/asm/msr-index.h`, pinned
//! by `tests/svm_header.rs`.

// Linux's mixed-case `MSR_MTRRcap`/`MSR_MTRRdefType` are kept so the
// header check can find them by name.
#![allow(non_upper_case_globals)]

use crate::paging::CR0_PG;
use crate::vendor::{ContextMsr, SegmentRegister, VendorVcpu};

pinned_constants! {
    /// The msr-index.h numbers and bits this module uses.
    table MSR_CONSTANTS;

    /// EFER, extended feature enables (APM vol. 2 3.1.7): SCE, LME, LMA, NXE, SVME...
    MSR_EFER: u32 = 0xc000_0080;
    /// STAR: SYSCALL/SYSRET CS and SS selectors, legacy SYSCALL EIP.
    MSR_STAR: u32 = 0xc000_0081;
    /// LSTAR: the 64-bit-mode SYSCALL target RIP.
    MSR_LSTAR: u32 = 0xc000_0082;
    /// CSTAR: the compatibility-mode SYSCALL target RIP.
    MSR_CSTAR: u32 = 0xc000_0083;
    /// SFMASK: RFLAGS bits SYSCALL clears.
    MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    /// FS.base, as WRMSR reaches it.
    MSR_FS_BASE: u32 = 0xc000_0100;
    /// GS.base, as WRMSR reaches it.
    MSR_GS_BASE: u32 = 0xc000_0101;
    /// KernelGSbase: the value SWAPGS exchanges with GS.base.
    MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// TSC_AUX: the value RDTSCP returns in ECX (and RDPID returns).
    MSR_TSC_AUX: u32 = 0xc000_0103;
    /// IA32_TSC, the time-stamp counter.
    MSR_IA32_TSC: u32 = 0x10;
    /// IA32_APIC_BASE: LAPIC base address, enable, x2APIC mode, BSP flag.
    MSR_IA32_APICBASE: u32 = 0x1b;
    /// IA32_UCODE_REV: the microcode revision (bits 63:32).
    MSR_IA32_UCODE_REV: u32 = 0x8b;
    /// IA32_TSC_ADJUST: the running total of writes to IA32_TSC.
    MSR_IA32_TSC_ADJUST: u32 = 0x3b;
    /// MTRRcap: which MTRR features exist (read-only).
    MSR_MTRRcap: u32 = 0xfe;
    /// SYSENTER_CS: the SYSENTER/SYSEXIT code selector.
    MSR_IA32_SYSENTER_CS: u32 = 0x174;
    /// SYSENTER_ESP: the SYSENTER stack pointer.
    MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    /// SYSENTER_EIP: the SYSENTER target.
    MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    /// IA32_MISC_ENABLE: miscellaneous feature enables (Intel; stored only).
    MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    /// IA32_PAT, the page attribute table (SDM vol. 3 11.12).
    MSR_IA32_CR_PAT: u32 = 0x277;
    /// MTRRdefType: default memory type and the MTRR enables.
    MSR_MTRRdefType: u32 = 0x2ff;
    /// Host side: SVM lock/disable control.
    MSR_VM_CR: u32 = 0xc001_0114;
    /// Host side: the physical address of the host save area for VMRUN.
    MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
    /// VM_CR.SVMDIS: the firmware disabled SVM.
    SVM_VM_CR_SVM_DIS_MASK: u64 = 0x10;

    /// EFER bit 0: SYSCALL/SYSRET enabled.
    EFER_SCE: u64 = 1 << 0;
    /// EFER bit 8: long mode enabled (active once CR0.PG is set).
    EFER_LME: u64 = 1 << 8;
    /// EFER bit 10: long mode active (set by the processor).
    EFER_LMA: u64 = 1 << 10;
    /// EFER bit 11 (NXE): the no-execute page bit is honoured.
    EFER_NX: u64 = 1 << 11;
    /// EFER bit 12: SVM enabled (VMRUN needs it in the guest's VMCB EFER too).
    EFER_SVME: u64 = 1 << 12;
    /// EFER bit 13: long-mode segment limits (legacy, not offered).
    EFER_LMSLE: u64 = 1 << 13;
    /// EFER bit 14: fast FXSAVE/FXRSTOR.
    EFER_FFXSR: u64 = 1 << 14;
    /// EFER bit 21: automatic IBRS.
    EFER_AUTOIBRS: u64 = 1 << 21;

    /// APIC_BASE bit 8: this is the bootstrap processor.
    MSR_IA32_APICBASE_BSP: u64 = 1 << 8;
    /// APIC_BASE bit 11: the LAPIC is enabled (xAPIC mode).
    MSR_IA32_APICBASE_ENABLE: u64 = 1 << 11;
}

/// APIC_BASE bit 10 (EXTD): x2APIC mode (Linux `X2APIC_ENABLE` in
/// apicdef.h).
pub const APIC_BASE_X2APIC_ENABLE: u64 = 1 << 10;
/// APIC_BASE bits that are reserved whatever MAXPHYADDR is: 7:0 and 9.
const APIC_BASE_LOW_RESERVED: u64 = 0x2ff;
/// The power-on PAT (SDM vol. 3 11.12.4): WB, WT, UC-, UC, twice.
pub const PAT_POWER_ON: u64 = 0x0007_0406_0007_0406;
/// MTRRdefType: type in 7:0, FE bit 10, E bit 11; the rest reserved.
const MTRR_DEF_TYPE_VALID_BITS: u64 = 0xcff;

/// Who performs the access: the guest (RDMSR/WRMSR exit) or the VMM
/// (KVM_GET/SET_MSRS, KVM's `host_initiated`), which may set state the
/// guest may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrOrigin {
    /// A guest RDMSR/WRMSR: architectural rules apply, read-only bits stay.
    Guest,
    /// The VMM through KVM_GET/SET_MSRS: may restore state a guest cannot write.
    Host,
}

/// Why an MSR access fails; a guest gets #GP(0) for either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrError {
    /// Not an MSR this module emulates.
    Unknown(u32),
    /// The value is not allowed for this MSR (or not in this state).
    InvalidValue {
        /// The MSR number.
        msr: u32,
        /// The refused value.
        value: u64,
    },
}

/// The guest's CPU model as far as MSR validity depends on it (from its
/// CPUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFeatures {
    /// CPUID 8000_0001 EDX\[29\] LM: EFER.LME/LMA exist.
    pub long_mode: bool,
    /// CPUID 8000_0001 EDX\[20\] NX: EFER.NXE exists.
    pub nx: bool,
    /// CPUID 8000_0001 EDX\[25\] FFXSR: EFER.FFXSR exists.
    pub ffxsr: bool,
    /// CPUID 8000_0001 EDX\[27\] RDTSCP or 7.0 ECX\[22\] RDPID: TSC_AUX exists.
    pub tsc_aux: bool,
    /// x2APIC is offered (CPUID 1 ECX\[21\]).
    pub x2apic: bool,
    /// The guest's MAXPHYADDR (CPUID 8000_0008 EAX\[7:0\]).
    pub physical_address_bits: u8,
    /// 48, or 57 with LA57 (CPUID 8000_0008 EAX\[15:8\]).
    pub virtual_address_bits: u8,
}

impl MsrFeatures {
    /// The EFER bits the guest may set.
    pub fn efer_writable_bits(&self) -> u64 {
        let mut bits = EFER_SCE;
        if self.long_mode {
            bits |= EFER_LME | EFER_LMA;
        }
        if self.nx {
            bits |= EFER_NX;
        }
        if self.ffxsr {
            bits |= EFER_FFXSR;
        }
        bits
    }
}

/// The MSR state that lives neither in the VMCB nor elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMsrs {
    /// Added (wrapping) to the host TSC; the vendor's TSC offset.
    pub tsc_offset: u64,
    /// IA32_TSC_ADJUST as the guest reads it.
    pub tsc_adjust: u64,
    /// TSC_AUX (32 bits on AMD).
    pub tsc_aux: u32,
    /// IA32_MISC_ENABLE, stored for the VMM.
    pub misc_enable: u64,
    /// MTRRdefType, stored (validated against reserved bits).
    pub mtrr_def_type: u64,
    /// IA32_APIC_BASE: base, enable, x2APIC and BSP bits.
    pub apic_base: u64,
    /// IA32_UCODE_REV as the guest reads it; only the VMM sets it (a
    /// guest write is ignored, as in KVM, where it would start a
    /// microcode update on Intel).
    pub microcode_version: u64,
}

impl GuestMsrs {
    /// The reset state: APIC enabled at 0xfee00000 (BSP bit set by the
    /// caller for vCPU 0), everything else 0.
    pub const RESET: Self = Self {
        tsc_offset: 0,
        tsc_adjust: 0,
        tsc_aux: 0,
        misc_enable: 0,
        mtrr_def_type: 0,
        apic_base: 0xfee0_0000 | MSR_IA32_APICBASE_ENABLE,
        // KVM's default (`kvm_vcpu_reset`): revision 1.
        microcode_version: 0x1_0000_0000,
    };
}

/// Whether every byte of `pat` is a valid memory type (0, 1, 4-7).
pub fn pat_is_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&memory_type| matches!(memory_type, 0 | 1 | 4..=7))
}

/// Whether `address` is canonical for `virtual_address_bits` (48 or 57):
/// the bits above the top one all equal it.
pub fn is_canonical(address: u64, virtual_address_bits: u8) -> bool {
    let bits = u32::from(virtual_address_bits.clamp(1, 64));
    let shift = 64 - bits;
    (((address << shift) as i64) >> shift) as u64 == address
}

/// Checks a write of `new` to EFER whose current value is `current`, and
/// returns the value to install (LMA kept from `current`).
pub fn validate_efer_write(
    current: u64,
    new: u64,
    cr0: u64,
    features: &MsrFeatures,
    origin: MsrOrigin,
) -> Result<u64, MsrError> {
    let invalid = Err(MsrError::InvalidValue {
        msr: MSR_EFER,
        value: new,
    });
    if new & !features.efer_writable_bits() != 0 {
        return invalid;
    }
    if origin == MsrOrigin::Guest && cr0 & CR0_PG != 0 && (current ^ new) & EFER_LME != 0 {
        return invalid;
    }
    Ok(new & !EFER_LMA | current & EFER_LMA)
}

fn apic_mode(apic_base: u64) -> (bool, bool) {
    (
        apic_base & MSR_IA32_APICBASE_ENABLE != 0,
        apic_base & APIC_BASE_X2APIC_ENABLE != 0,
    )
}

/// Checks a write to APIC_BASE (KVM `kvm_apic_set_base` /
/// `kvm_set_apic_base`): reserved bits, the invalid mode (x2APIC without
/// enable), and for the guest the two forbidden transitions (x2APIC
/// straight to xAPIC, disabled straight to x2APIC).
pub fn validate_apic_base_write(
    current: u64,
    new: u64,
    features: &MsrFeatures,
    origin: MsrOrigin,
) -> Result<(), MsrError> {
    let invalid = Err(MsrError::InvalidValue {
        msr: MSR_IA32_APICBASE,
        value: new,
    });
    let physical_bits = u32::from(features.physical_address_bits.min(64));
    let above_maxphyaddr = u64::MAX.checked_shl(physical_bits).unwrap_or(0);
    let mut reserved = APIC_BASE_LOW_RESERVED | above_maxphyaddr;
    if !features.x2apic {
        reserved |= APIC_BASE_X2APIC_ENABLE;
    }
    if new & reserved != 0 {
        return invalid;
    }
    let (enabled, x2apic) = apic_mode(new);
    if x2apic && !enabled {
        return invalid;
    }
    if origin == MsrOrigin::Guest {
        let (was_enabled, was_x2apic) = apic_mode(current);
        let x2apic_to_xapic = was_x2apic && enabled && !x2apic;
        let disabled_to_x2apic = !was_enabled && x2apic;
        if x2apic_to_xapic || disabled_to_x2apic {
            return invalid;
        }
    }
    Ok(())
}

fn context_msr_of(msr: u32) -> Option<ContextMsr> {
    Some(match msr {
        MSR_STAR => ContextMsr::Star,
        MSR_LSTAR => ContextMsr::Lstar,
        MSR_CSTAR => ContextMsr::Cstar,
        MSR_SYSCALL_MASK => ContextMsr::Sfmask,
        MSR_KERNEL_GS_BASE => ContextMsr::KernelGsBase,
        MSR_IA32_SYSENTER_CS => ContextMsr::SysenterCs,
        MSR_IA32_SYSENTER_ESP => ContextMsr::SysenterEsp,
        MSR_IA32_SYSENTER_EIP => ContextMsr::SysenterEip,
        MSR_IA32_CR_PAT => ContextMsr::Pat,
        _ => return None,
    })
}

/// KVM_GET_MSR_INDEX_LIST (api.rst 4.3): the MSRs a VMM saves and
/// restores with KVM_GET/SET_MSRS to migrate a vCPU; every one is read and
/// written by [`read_msr`]/[`write_msr`].  EFER and the FS/GS bases travel
/// in KVM_GET/SET_SREGS and are not listed, as in KVM.
pub const MSRS_TO_SAVE: &[u32] = &[
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_SYSENTER_EIP,
    MSR_STAR,
    MSR_CSTAR,
    MSR_KERNEL_GS_BASE,
    MSR_SYSCALL_MASK,
    MSR_LSTAR,
    MSR_IA32_TSC,
    MSR_TSC_AUX,
    MSR_IA32_TSC_ADJUST,
    MSR_IA32_CR_PAT,
    MSR_IA32_MISC_ENABLE,
    MSR_MTRRdefType,
    MSR_IA32_APICBASE,
];

/// The second part of KVM_GET_MSR_INDEX_LIST (KVM's `emulated_msrs`):
/// the paravirtual MSRs, read and written by [`crate::pv::read_msr`] and
/// [`crate::pv::write_msr`] instead of [`read_msr`]/[`write_msr`].  The
/// index list is [`MSRS_TO_SAVE`] followed by these.
pub const EMULATED_MSRS: &[u32] = crate::pv::PV_MSRS;

/// KVM_GET_MSR_FEATURE_INDEX_LIST (api.rst 4.3): the feature MSRs a VMM
/// reads with KVM_GET_MSRS on the system file to learn what the host
/// offers, and may then set on a vCPU.  Only the microcode revision: the
/// capability MSRs KVM also lists (ARCH_CAPABILITIES, PERF_CAPABILITIES,
/// DE_CFG) are not emulated.
pub const FEATURE_MSRS: &[u32] = &[MSR_IA32_UCODE_REV];

/// Reads `msr`.  `host_tsc` is the host's TSC now.
pub fn read_msr(
    vcpu: &impl VendorVcpu,
    state: &GuestMsrs,
    msr: u32,
    host_tsc: u64,
) -> Result<u64, MsrError> {
    if let Some(context) = context_msr_of(msr) {
        return Ok(vcpu.context_msr(context));
    }
    Ok(match msr {
        MSR_EFER => vcpu.efer(),
        MSR_FS_BASE => vcpu.segment(SegmentRegister::Fs).base,
        MSR_GS_BASE => vcpu.segment(SegmentRegister::Gs).base,
        MSR_TSC_AUX => u64::from(state.tsc_aux),
        MSR_IA32_TSC => host_tsc.wrapping_add(state.tsc_offset),
        MSR_IA32_TSC_ADJUST => state.tsc_adjust,
        MSR_IA32_MISC_ENABLE => state.misc_enable,
        MSR_MTRRdefType => state.mtrr_def_type,
        MSR_IA32_APICBASE => state.apic_base,
        MSR_IA32_UCODE_REV => state.microcode_version,
        _ => return Err(MsrError::Unknown(msr)),
    })
}

/// Writes `value` to `msr`, updating the vCPU (EFER, context MSRs, TSC
/// offset) and `state`.
pub fn write_msr(
    vcpu: &mut impl VendorVcpu,
    state: &mut GuestMsrs,
    features: &MsrFeatures,
    msr: u32,
    value: u64,
    host_tsc: u64,
    origin: MsrOrigin,
) -> Result<(), MsrError> {
    let invalid = Err(MsrError::InvalidValue { msr, value });
    let canonical = is_canonical(value, features.virtual_address_bits);
    match msr {
        MSR_EFER => {
            let efer = validate_efer_write(vcpu.efer(), value, vcpu.cr0(), features, origin)?;
            vcpu.set_efer(efer);
        }
        MSR_IA32_CR_PAT if !pat_is_valid(value) => return invalid,
        MSR_LSTAR
        | MSR_CSTAR
        | MSR_KERNEL_GS_BASE
        | MSR_IA32_SYSENTER_ESP
        | MSR_IA32_SYSENTER_EIP
        | MSR_FS_BASE
        | MSR_GS_BASE
            if !canonical =>
        {
            return invalid
        }
        MSR_FS_BASE | MSR_GS_BASE => {
            let register = if msr == MSR_FS_BASE {
                SegmentRegister::Fs
            } else {
                SegmentRegister::Gs
            };
            let mut segment = vcpu.segment(register);
            segment.base = value;
            vcpu.set_segment(register, segment);
        }
        MSR_TSC_AUX => {
            if origin == MsrOrigin::Guest && !features.tsc_aux {
                return invalid;
            }
            state.tsc_aux = value as u32;
        }
        MSR_IA32_TSC => {
            let new_offset = value.wrapping_sub(host_tsc);
            if origin == MsrOrigin::Guest {
                let moved_by = new_offset.wrapping_sub(state.tsc_offset);
                state.tsc_adjust = state.tsc_adjust.wrapping_add(moved_by);
            }
            state.tsc_offset = new_offset;
            vcpu.set_tsc_offset(new_offset);
        }
        MSR_IA32_TSC_ADJUST => {
            if origin == MsrOrigin::Guest {
                let moved_by = value.wrapping_sub(state.tsc_adjust);
                state.tsc_offset = state.tsc_offset.wrapping_add(moved_by);
                vcpu.set_tsc_offset(state.tsc_offset);
            }
            state.tsc_adjust = value;
        }
        MSR_IA32_MISC_ENABLE => state.misc_enable = value,
        MSR_IA32_UCODE_REV => {
            if origin == MsrOrigin::Host {
                state.microcode_version = value;
            }
        }
        MSR_MTRRdefType => {
            let valid_type = matches!(value & 0xff, 0 | 1 | 4 | 5 | 6);
            if value & !MTRR_DEF_TYPE_VALID_BITS != 0 || !valid_type {
                return invalid;
            }
            state.mtrr_def_type = value;
        }
        MSR_IA32_APICBASE => {
            validate_apic_base_write(state.apic_base, value, features, origin)?;
            state.apic_base = value;
        }
        _ => match context_msr_of(msr) {
            Some(context) => vcpu.set_context_msr(context, value),
            None => return Err(MsrError::Unknown(msr)),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_microcode_revision_is_the_vmms_to_set() {
        let (mut vcpu, mut state) = (vcpu(), GuestMsrs::RESET);
        assert_eq!(read_msr(&*vcpu, &state, MSR_IA32_UCODE_REV, 0), Ok(0x1_0000_0000));
        let guest = write_msr(&mut *vcpu, &mut state, &FEATURES, MSR_IA32_UCODE_REV, 0, 0, MsrOrigin::Guest);
        assert_eq!(guest, Ok(()));
        assert_eq!(state.microcode_version, 0x1_0000_0000, "a guest write is ignored");
        let host = 0x0a00_1234_0000_0000;
        write_msr(&mut *vcpu, &mut state, &FEATURES, MSR_IA32_UCODE_REV, host, 0, MsrOrigin::Host).unwrap();
        assert_eq!(read_msr(&*vcpu, &state, MSR_IA32_UCODE_REV, 0), Ok(host));
    }

    #[test]
    fn every_msr_to_save_round_trips_from_the_host() {
        let (mut vcpu, mut state) = (vcpu(), GuestMsrs::RESET);
        for &msr in MSRS_TO_SAVE {
            let value = read_msr(&*vcpu, &state, msr, 1000).unwrap_or_else(|e| panic!("{msr:#x}: {e:?}"));
            write_msr(&mut *vcpu, &mut state, &FEATURES, msr, value, 1000, MsrOrigin::Host)
                .unwrap_or_else(|e| panic!("{msr:#x}: {e:?}"));
            assert_eq!(read_msr(&*vcpu, &state, msr, 1000), Ok(value), "{msr:#x}");
        }
    }
    use crate::svm::{SvmFeatures, SvmVcpu, VmcbAddresses};

    const FEATURES: MsrFeatures = MsrFeatures {
        long_mode: true,
        nx: true,
        ffxsr: false,
        tsc_aux: true,
        x2apic: true,
        physical_address_bits: 40,
        virtual_address_bits: 48,
    };

    fn vcpu() -> std::boxed::Box<SvmVcpu> {
        std::boxed::Box::new(SvmVcpu::new(SvmFeatures::TCG, VmcbAddresses::default()))
    }

    fn write(
        vcpu: &mut SvmVcpu,
        state: &mut GuestMsrs,
        msr: u32,
        value: u64,
    ) -> Result<(), MsrError> {
        write_msr(vcpu, state, &FEATURES, msr, value, 1000, MsrOrigin::Guest)
    }

    #[test]
    fn efer_hides_svme_and_keeps_lma() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        write(
            &mut vcpu,
            &mut state,
            MSR_EFER,
            EFER_LME | EFER_SCE | EFER_LMA,
        )
        .unwrap();
        assert_eq!(
            read_msr(&*vcpu, &state, MSR_EFER, 0),
            Ok(EFER_LME | EFER_SCE)
        );
        assert_eq!(vcpu.vmcb.save.efer, EFER_LME | EFER_SCE | EFER_SVME);
        assert_eq!(
            write(&mut vcpu, &mut state, MSR_EFER, EFER_SVME),
            Err(MsrError::InvalidValue {
                msr: MSR_EFER,
                value: EFER_SVME
            })
        );
        assert!(write(&mut vcpu, &mut state, MSR_EFER, EFER_FFXSR).is_err());
    }

    #[test]
    fn efer_lme_toggle_with_paging() {
        let paging = CR0_PG | 1;
        assert!(validate_efer_write(0, EFER_LME, paging, &FEATURES, MsrOrigin::Guest).is_err());
        assert_eq!(
            validate_efer_write(0, EFER_LME, paging, &FEATURES, MsrOrigin::Host),
            Ok(EFER_LME)
        );
        assert_eq!(
            validate_efer_write(
                EFER_LME | EFER_LMA,
                EFER_LME | EFER_NX,
                paging,
                &FEATURES,
                MsrOrigin::Guest
            ),
            Ok(EFER_LME | EFER_LMA | EFER_NX)
        );
        let no_lm = MsrFeatures {
            long_mode: false,
            ..FEATURES
        };
        assert!(validate_efer_write(0, EFER_LME, 0, &no_lm, MsrOrigin::Host).is_err());
    }

    #[test]
    fn pat_validation() {
        assert!(pat_is_valid(PAT_POWER_ON));
        assert!(pat_is_valid(0));
        assert!(!pat_is_valid(0x02));
        assert!(!pat_is_valid(0x0300_0000_0000_0000));
        assert!(!pat_is_valid(0x08));
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        assert!(write(&mut vcpu, &mut state, MSR_IA32_CR_PAT, 0x02).is_err());
        write(
            &mut vcpu,
            &mut state,
            MSR_IA32_CR_PAT,
            0x0007_0406_0007_0401,
        )
        .unwrap();
        assert_eq!(vcpu.vmcb.save.g_pat, 0x0007_0406_0007_0401);
    }

    #[test]
    fn tsc_and_tsc_adjust_move_together() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        // Host TSC is 1000 in `write`; the guest sets its TSC to 5000.
        write(&mut vcpu, &mut state, MSR_IA32_TSC, 5000).unwrap();
        assert_eq!(state.tsc_offset, 4000);
        assert_eq!(state.tsc_adjust, 4000);
        assert_eq!(vcpu.vmcb.control.tsc_offset, 4000);
        assert_eq!(read_msr(&*vcpu, &state, MSR_IA32_TSC, 2000), Ok(6000));
        // TSC_ADJUST back to 0 moves the TSC back by 4000.
        write(&mut vcpu, &mut state, MSR_IA32_TSC_ADJUST, 0).unwrap();
        assert_eq!(state.tsc_offset, 0);
        assert_eq!(read_msr(&*vcpu, &state, MSR_IA32_TSC, 2000), Ok(2000));
        // Setting the TSC backwards wraps the offset instead of panicking.
        write(&mut vcpu, &mut state, MSR_IA32_TSC, 0).unwrap();
        assert_eq!(state.tsc_offset, 1000u64.wrapping_neg());
        assert_eq!(read_msr(&*vcpu, &state, MSR_IA32_TSC, 1000), Ok(0));
    }

    #[test]
    fn host_tsc_writes_leave_adjust_alone() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        write_msr(
            &mut *vcpu,
            &mut state,
            &FEATURES,
            MSR_IA32_TSC,
            0,
            500,
            MsrOrigin::Host,
        )
        .unwrap();
        assert_eq!(state.tsc_adjust, 0);
        write_msr(
            &mut *vcpu,
            &mut state,
            &FEATURES,
            MSR_IA32_TSC_ADJUST,
            7,
            0,
            MsrOrigin::Host,
        )
        .unwrap();
        assert_eq!(state.tsc_adjust, 7);
        assert_eq!(state.tsc_offset, 500u64.wrapping_neg());
    }

    #[test]
    fn tsc_aux_truncates_and_needs_rdtscp() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        write(&mut vcpu, &mut state, MSR_TSC_AUX, 0x1_0000_0003).unwrap();
        assert_eq!(read_msr(&*vcpu, &state, MSR_TSC_AUX, 0), Ok(3));
        let no_rdtscp = MsrFeatures {
            tsc_aux: false,
            ..FEATURES
        };
        assert!(write_msr(
            &mut *vcpu,
            &mut state,
            &no_rdtscp,
            MSR_TSC_AUX,
            1,
            0,
            MsrOrigin::Guest
        )
        .is_err());
        assert!(write_msr(
            &mut *vcpu,
            &mut state,
            &no_rdtscp,
            MSR_TSC_AUX,
            1,
            0,
            MsrOrigin::Host
        )
        .is_ok());
    }

    #[test]
    fn mtrr_def_type() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        write(&mut vcpu, &mut state, MSR_MTRRdefType, 0xc06).unwrap();
        assert_eq!(read_msr(&*vcpu, &state, MSR_MTRRdefType, 0), Ok(0xc06));
        assert!(write(&mut vcpu, &mut state, MSR_MTRRdefType, 0x7).is_err());
        assert!(write(&mut vcpu, &mut state, MSR_MTRRdefType, 0x2).is_err());
        assert!(write(&mut vcpu, &mut state, MSR_MTRRdefType, 0x1006).is_err());
    }

    #[test]
    fn apic_base_rules() {
        let base = 0xfee0_0000;
        let xapic = base | MSR_IA32_APICBASE_ENABLE;
        let x2apic = xapic | APIC_BASE_X2APIC_ENABLE;
        let guest = MsrOrigin::Guest;
        assert!(validate_apic_base_write(xapic, x2apic, &FEATURES, guest).is_ok());
        assert!(validate_apic_base_write(x2apic, xapic, &FEATURES, guest).is_err());
        assert!(validate_apic_base_write(x2apic, xapic, &FEATURES, MsrOrigin::Host).is_ok());
        assert!(validate_apic_base_write(x2apic, base, &FEATURES, guest).is_ok());
        assert!(validate_apic_base_write(base, x2apic, &FEATURES, guest).is_err());
        // x2APIC without enable is never valid.
        assert!(validate_apic_base_write(
            xapic,
            base | APIC_BASE_X2APIC_ENABLE,
            &FEATURES,
            MsrOrigin::Host
        )
        .is_err());
        // Reserved bits: low ones, above MAXPHYADDR, x2APIC when not offered.
        assert!(validate_apic_base_write(xapic, xapic | 1, &FEATURES, guest).is_err());
        assert!(validate_apic_base_write(xapic, xapic | 1 << 40, &FEATURES, guest).is_err());
        assert!(
            validate_apic_base_write(xapic, xapic | MSR_IA32_APICBASE_BSP, &FEATURES, guest)
                .is_ok()
        );
        let no_x2apic = MsrFeatures {
            x2apic: false,
            ..FEATURES
        };
        assert!(validate_apic_base_write(xapic, x2apic, &no_x2apic, guest).is_err());
        let wide = MsrFeatures {
            physical_address_bits: 64,
            ..FEATURES
        };
        assert!(validate_apic_base_write(xapic, xapic | 1 << 63, &wide, guest).is_ok());
    }

    #[test]
    fn context_msrs_and_canonical_checks() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        write(&mut vcpu, &mut state, MSR_LSTAR, 0xffff_ffff_8100_0000).unwrap();
        assert_eq!(vcpu.vmcb.save.lstar, 0xffff_ffff_8100_0000);
        assert!(write(&mut vcpu, &mut state, MSR_LSTAR, 0x0000_8000_0000_0000).is_err());
        write(&mut vcpu, &mut state, MSR_GS_BASE, 0xffff_8880_0000_0000).unwrap();
        assert_eq!(vcpu.vmcb.save.gs.base, 0xffff_8880_0000_0000);
        assert_eq!(
            read_msr(&*vcpu, &state, MSR_GS_BASE, 0),
            Ok(0xffff_8880_0000_0000)
        );
        write(&mut vcpu, &mut state, MSR_STAR, 0x0023_0010_0000_0000).unwrap();
        assert_eq!(
            read_msr(&*vcpu, &state, MSR_STAR, 0),
            Ok(0x0023_0010_0000_0000)
        );
        write(&mut vcpu, &mut state, MSR_IA32_SYSENTER_CS, 0x10).unwrap();
        assert_eq!(vcpu.vmcb.save.sysenter_cs, 0x10);
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0x0000_7fff_ffff_ffff, 48));
        assert!(!is_canonical(0x0000_8000_0000_0000, 48));
        assert!(is_canonical(0xffff_8000_0000_0000, 48));
        assert!(is_canonical(0x0000_8000_0000_0000, 57));
        assert!(!is_canonical(0x0100_0000_0000_0000, 57));
        assert!(is_canonical(u64::MAX, 0));
        assert!(is_canonical(0x8000_0000_0000_0000, 64));
    }

    #[test]
    fn unknown_msrs() {
        let mut vcpu = vcpu();
        let mut state = GuestMsrs::RESET;
        assert_eq!(
            read_msr(&*vcpu, &state, 0xc001_0015, 0),
            Err(MsrError::Unknown(0xc001_0015))
        );
        assert_eq!(
            write(&mut vcpu, &mut state, MSR_MTRRcap, 0),
            Err(MsrError::Unknown(MSR_MTRRcap))
        );
    }
}
