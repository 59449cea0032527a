//! SVM exit codes and their decoding into the vendor-neutral [`Exit`].
//!
//! Exit codes: AMD APM vol. 2 Appendix C "SVM Intercept Exit Codes", as
//! Linux 6.12's `arch/x86/include/uapi/asm/svm.h` names them (pinned by
//! `tests/svm_header.rs`).  Exit information: APM 15.7.1 and, per
//! intercept, 15.8.1 (CR/DR accesses), 15.10.2 (IOIO EXITINFO1),
//! 15.11 (MSR: EXITINFO1 = 0 read, 1 write), 15.12 (exceptions: error
//! code in EXITINFO1, #PF address in EXITINFO2) and 15.25.6 (NPF: #PF-style
//! error code in EXITINFO1, the GPA in EXITINFO2).
//!
//! Only the low 32 bits of the exit code identify the exit: QEMU's TCG
//! SVM stores VMEXIT_INVALID as `0x0000_0000_FFFF_FFFF` instead of the
//! architectural -1, so comparing all 64 bits would miss it.  For every
//! other exit the high half is zero; a non-zero high half with a known
//! low half is reported as [`Exit::Unknown`].
//!
//! Nothing here trusts EXITINFO beyond its documented bits: an IOIO exit
//! whose size field is not one of the three one-hot values is reported
//! as [`Exit::Unknown`] rather than guessed at.

use crate::vendor::{Exit, Gpr, IoDirection, IoExit, NpfExit};

pinned_constants! {
    /// Every `SVM_EXIT_*` code of uapi/asm/svm.h that pvrs mirrors.
    table EXIT_CODE_CONSTANTS;

    /// MOV from CR0 (a CRn read exits with `SVM_EXIT_READ_CR0 + n`).
    SVM_EXIT_READ_CR0: u32 = 0x000;
    /// MOV from CR2.
    SVM_EXIT_READ_CR2: u32 = 0x002;
    /// MOV from CR3.
    SVM_EXIT_READ_CR3: u32 = 0x003;
    /// MOV from CR4.
    SVM_EXIT_READ_CR4: u32 = 0x004;
    /// MOV from CR8 (the TPR).
    SVM_EXIT_READ_CR8: u32 = 0x008;
    /// MOV to CR0 (a CRn write exits with `SVM_EXIT_WRITE_CR0 + n`); also CLTS and LMSW.
    SVM_EXIT_WRITE_CR0: u32 = 0x010;
    /// MOV to CR2.
    SVM_EXIT_WRITE_CR2: u32 = 0x012;
    /// MOV to CR3.
    SVM_EXIT_WRITE_CR3: u32 = 0x013;
    /// MOV to CR4.
    SVM_EXIT_WRITE_CR4: u32 = 0x014;
    /// MOV to CR8 (the TPR).
    SVM_EXIT_WRITE_CR8: u32 = 0x018;
    /// MOV from DR0 (a DRn read exits with `SVM_EXIT_READ_DR0 + n`).
    SVM_EXIT_READ_DR0: u32 = 0x020;
    /// MOV from DR1.
    SVM_EXIT_READ_DR1: u32 = 0x021;
    /// MOV from DR2.
    SVM_EXIT_READ_DR2: u32 = 0x022;
    /// MOV from DR3.
    SVM_EXIT_READ_DR3: u32 = 0x023;
    /// MOV from DR4 (an alias of DR6 unless CR4.DE).
    SVM_EXIT_READ_DR4: u32 = 0x024;
    /// MOV from DR5 (an alias of DR7 unless CR4.DE).
    SVM_EXIT_READ_DR5: u32 = 0x025;
    /// MOV from DR6.
    SVM_EXIT_READ_DR6: u32 = 0x026;
    /// MOV from DR7.
    SVM_EXIT_READ_DR7: u32 = 0x027;
    /// MOV to DR0 (a DRn write exits with `SVM_EXIT_WRITE_DR0 + n`).
    SVM_EXIT_WRITE_DR0: u32 = 0x030;
    /// MOV to DR1.
    SVM_EXIT_WRITE_DR1: u32 = 0x031;
    /// MOV to DR2.
    SVM_EXIT_WRITE_DR2: u32 = 0x032;
    /// MOV to DR3.
    SVM_EXIT_WRITE_DR3: u32 = 0x033;
    /// MOV to DR4 (an alias of DR6 unless CR4.DE).
    SVM_EXIT_WRITE_DR4: u32 = 0x034;
    /// MOV to DR5 (an alias of DR7 unless CR4.DE).
    SVM_EXIT_WRITE_DR5: u32 = 0x035;
    /// MOV to DR6.
    SVM_EXIT_WRITE_DR6: u32 = 0x036;
    /// MOV to DR7.
    SVM_EXIT_WRITE_DR7: u32 = 0x037;
    /// Exception vector `v` exits with `SVM_EXIT_EXCP_BASE + v`.
    SVM_EXIT_EXCP_BASE: u32 = 0x040;
    /// The last exception exit code (vector 31).
    SVM_EXIT_LAST_EXCP: u32 = 0x05f;
    /// A physical maskable interrupt arrived.
    SVM_EXIT_INTR: u32 = 0x060;
    /// A physical NMI arrived.
    SVM_EXIT_NMI: u32 = 0x061;
    /// A physical SMI arrived.
    SVM_EXIT_SMI: u32 = 0x062;
    /// An INIT signal arrived.
    SVM_EXIT_INIT: u32 = 0x063;
    /// The guest became able to take the virtual interrupt (`V_IRQ`): the interrupt window opened.
    SVM_EXIT_VINTR: u32 = 0x064;
    /// A CR0 write that changed bits other than TS and MP (selective CR0 intercept).
    SVM_EXIT_CR0_SEL_WRITE: u32 = 0x065;
    /// SIDT.
    SVM_EXIT_IDTR_READ: u32 = 0x066;
    /// SGDT.
    SVM_EXIT_GDTR_READ: u32 = 0x067;
    /// SLDT.
    SVM_EXIT_LDTR_READ: u32 = 0x068;
    /// STR.
    SVM_EXIT_TR_READ: u32 = 0x069;
    /// LIDT.
    SVM_EXIT_IDTR_WRITE: u32 = 0x06a;
    /// LGDT.
    SVM_EXIT_GDTR_WRITE: u32 = 0x06b;
    /// LLDT.
    SVM_EXIT_LDTR_WRITE: u32 = 0x06c;
    /// LTR.
    SVM_EXIT_TR_WRITE: u32 = 0x06d;
    /// RDTSC.
    SVM_EXIT_RDTSC: u32 = 0x06e;
    /// RDPMC.
    SVM_EXIT_RDPMC: u32 = 0x06f;
    /// PUSHF.
    SVM_EXIT_PUSHF: u32 = 0x070;
    /// POPF.
    SVM_EXIT_POPF: u32 = 0x071;
    /// CPUID.
    SVM_EXIT_CPUID: u32 = 0x072;
    /// RSM (leaving SMM).
    SVM_EXIT_RSM: u32 = 0x073;
    /// IRET (used to detect the end of NMI blocking).
    SVM_EXIT_IRET: u32 = 0x074;
    /// INTn, a software interrupt.
    SVM_EXIT_SWINT: u32 = 0x075;
    /// INVD.
    SVM_EXIT_INVD: u32 = 0x076;
    /// PAUSE (after the pause filter count, if one is set).
    SVM_EXIT_PAUSE: u32 = 0x077;
    /// HLT.
    SVM_EXIT_HLT: u32 = 0x078;
    /// INVLPG; EXITINFO1 holds the address with DecodeAssists.
    SVM_EXIT_INVLPG: u32 = 0x079;
    /// INVLPGA.
    SVM_EXIT_INVLPGA: u32 = 0x07a;
    /// IN/OUT/INS/OUTS on an intercepted port; EXITINFO1 describes the access (`SVM_IOIO_*`), EXITINFO2 is the next RIP.
    SVM_EXIT_IOIO: u32 = 0x07b;
    /// RDMSR (EXITINFO1 = 0) or WRMSR (EXITINFO1 = 1) of an intercepted MSR.
    SVM_EXIT_MSR: u32 = 0x07c;
    /// A hardware task switch; EXITINFO1 holds the target TSS selector.
    SVM_EXIT_TASK_SWITCH: u32 = 0x07d;
    /// The processor froze on an x87 FERR (legacy FERR handling).
    SVM_EXIT_FERR_FREEZE: u32 = 0x07e;
    /// Shutdown: a triple fault, or an exception during #DF delivery.
    SVM_EXIT_SHUTDOWN: u32 = 0x07f;
    /// VMRUN in the guest.
    SVM_EXIT_VMRUN: u32 = 0x080;
    /// VMMCALL, the hypercall instruction.
    SVM_EXIT_VMMCALL: u32 = 0x081;
    /// VMLOAD in the guest.
    SVM_EXIT_VMLOAD: u32 = 0x082;
    /// VMSAVE in the guest.
    SVM_EXIT_VMSAVE: u32 = 0x083;
    /// STGI in the guest.
    SVM_EXIT_STGI: u32 = 0x084;
    /// CLGI in the guest.
    SVM_EXIT_CLGI: u32 = 0x085;
    /// SKINIT in the guest.
    SVM_EXIT_SKINIT: u32 = 0x086;
    /// RDTSCP.
    SVM_EXIT_RDTSCP: u32 = 0x087;
    /// ICEBP (INT1, opcode F1).
    SVM_EXIT_ICEBP: u32 = 0x088;
    /// WBINVD.
    SVM_EXIT_WBINVD: u32 = 0x089;
    /// MONITOR.
    SVM_EXIT_MONITOR: u32 = 0x08a;
    /// MWAIT, unconditionally.
    SVM_EXIT_MWAIT: u32 = 0x08b;
    /// MWAIT when the monitor hardware is armed.
    SVM_EXIT_MWAIT_COND: u32 = 0x08c;
    /// XSETBV.
    SVM_EXIT_XSETBV: u32 = 0x08d;
    /// RDPRU.
    SVM_EXIT_RDPRU: u32 = 0x08e;
    /// A trap after the guest wrote EFER (SEV-ES); EXITINFO1 is the new value.
    SVM_EXIT_EFER_WRITE_TRAP: u32 = 0x08f;
    /// A trap after the guest wrote CR0 (SEV-ES); CRn exits with `SVM_EXIT_CR0_WRITE_TRAP + n`.
    SVM_EXIT_CR0_WRITE_TRAP: u32 = 0x090;
    /// Write trap of CR1 (reserved register).
    SVM_EXIT_CR1_WRITE_TRAP: u32 = 0x091;
    /// Write trap of CR2.
    SVM_EXIT_CR2_WRITE_TRAP: u32 = 0x092;
    /// Write trap of CR3.
    SVM_EXIT_CR3_WRITE_TRAP: u32 = 0x093;
    /// Write trap of CR4.
    SVM_EXIT_CR4_WRITE_TRAP: u32 = 0x094;
    /// Write trap of CR5 (reserved register).
    SVM_EXIT_CR5_WRITE_TRAP: u32 = 0x095;
    /// Write trap of CR6 (reserved register).
    SVM_EXIT_CR6_WRITE_TRAP: u32 = 0x096;
    /// Write trap of CR7 (reserved register).
    SVM_EXIT_CR7_WRITE_TRAP: u32 = 0x097;
    /// Write trap of CR8 (the TPR).
    SVM_EXIT_CR8_WRITE_TRAP: u32 = 0x098;
    /// Write trap of CR9 (reserved register).
    SVM_EXIT_CR9_WRITE_TRAP: u32 = 0x099;
    /// Write trap of CR10 (reserved register).
    SVM_EXIT_CR10_WRITE_TRAP: u32 = 0x09a;
    /// Write trap of CR11 (reserved register).
    SVM_EXIT_CR11_WRITE_TRAP: u32 = 0x09b;
    /// Write trap of CR12 (reserved register).
    SVM_EXIT_CR12_WRITE_TRAP: u32 = 0x09c;
    /// Write trap of CR13 (reserved register).
    SVM_EXIT_CR13_WRITE_TRAP: u32 = 0x09d;
    /// Write trap of CR14 (reserved register).
    SVM_EXIT_CR14_WRITE_TRAP: u32 = 0x09e;
    /// Write trap of CR15 (reserved register).
    SVM_EXIT_CR15_WRITE_TRAP: u32 = 0x09f;
    /// INVPCID.
    SVM_EXIT_INVPCID: u32 = 0x0a2;
    /// A nested page fault (APM 15.25.6): EXITINFO1 is the error code, EXITINFO2 the GPA.
    SVM_EXIT_NPF: u32 = 0x400;
    /// AVIC could not deliver an IPI by itself.
    SVM_EXIT_AVIC_INCOMPLETE_IPI: u32 = 0x401;
    /// A guest APIC access AVIC does not accelerate.
    SVM_EXIT_AVIC_UNACCELERATED_ACCESS: u32 = 0x402;
    /// VMGEXIT, the SEV-ES guest's request to the hypervisor.
    SVM_EXIT_VMGEXIT: u32 = 0x403;
    /// Reserved for software.
    SVM_EXIT_SW: u32 = 0xf000_0000;
    /// VMEXIT_INVALID: C defines it as -1; only its low 32 bits are
    /// reliable (see the module docs), so this is the 32-bit value.
    SVM_EXIT_ERR: u32 = 0xffff_ffff;
}

pinned_constants! {
    /// The exit-information `#define`s of asm/svm.h.
    table EXIT_INFO_CONSTANTS;

    /// IOIO EXITINFO1 (APM 15.10.2): bit 0 is 1 for IN.
    SVM_IOIO_TYPE_MASK: u64 = 1;
    /// Bit of [`SVM_IOIO_STR_MASK`].
    SVM_IOIO_STR_SHIFT: u64 = 2;
    /// Bit of [`SVM_IOIO_REP_MASK`].
    SVM_IOIO_REP_SHIFT: u64 = 3;
    /// First bit of [`SVM_IOIO_SIZE_MASK`].
    SVM_IOIO_SIZE_SHIFT: u64 = 4;
    /// First bit of [`SVM_IOIO_ASIZE_MASK`].
    SVM_IOIO_ASIZE_SHIFT: u64 = 7;
    /// A string instruction (INS/OUTS).
    SVM_IOIO_STR_MASK: u64 = 1 << SVM_IOIO_STR_SHIFT;
    /// With a REP prefix.
    SVM_IOIO_REP_MASK: u64 = 1 << SVM_IOIO_REP_SHIFT;
    /// One-hot operand size: bit 4 = 8-bit, 5 = 16-bit, 6 = 32-bit.
    SVM_IOIO_SIZE_MASK: u64 = 7 << SVM_IOIO_SIZE_SHIFT;
    /// One-hot address size: bit 7 = 16-bit, 8 = 32-bit, 9 = 64-bit.
    SVM_IOIO_ASIZE_MASK: u64 = 7 << SVM_IOIO_ASIZE_SHIFT;

    /// Task switch EXITINFO2 bit: caused by an IRET.
    SVM_EXITINFOSHIFT_TS_REASON_IRET: u64 = 36;
    /// Task switch EXITINFO2: caused by a far JMP.
    SVM_EXITINFOSHIFT_TS_REASON_JMP: u64 = 38;
    /// Task switch EXITINFO2: an error code is to be pushed (it is in the low 32 bits).
    SVM_EXITINFOSHIFT_TS_HAS_ERROR_CODE: u64 = 44;

    /// CR/DR access EXITINFO1 with DecodeAssists: the GPR number.
    SVM_EXITINFO_REG_MASK: u64 = 0x0f;
    /// The CR0 bits a selective-CR0 intercept ignores (TS, MP).
    SVM_CR0_SELECTIVE_MASK: u64 = (1 << 3) | (1 << 1);
}

/// CR/DR EXITINFO1 bit 63 (APM 15.8.1, DecodeAssists): the access was a
/// MOV and bits 3:0 name its GPR.
const CR_DR_EXITINFO_MOV: u64 = 1 << 63;
/// IOIO EXITINFO1: the port in bits 31:16.
const IOIO_PORT_SHIFT: u32 = 16;

/// Decodes an exit from the VMCB's exit fields.  `exit_code` and
/// `exit_code_hi` are the two halves as the VMCB stores them.
pub fn decode_exit(exit_code: u32, exit_code_hi: u32, exit_info_1: u64, exit_info_2: u64) -> Exit {
    let full_code = u64::from(exit_code_hi) << 32 | u64::from(exit_code);
    if exit_code == SVM_EXIT_ERR {
        return Exit::Invalid;
    }
    if exit_code_hi != 0 {
        return Exit::Unknown(full_code);
    }
    let decode_assisted_gpr = || {
        (exit_info_1 & CR_DR_EXITINFO_MOV != 0)
            .then(|| Gpr::from_number((exit_info_1 & SVM_EXITINFO_REG_MASK) as u8))
            .flatten()
    };
    match exit_code {
        SVM_EXIT_READ_CR0..=0x0f => Exit::ControlRegister {
            cr: exit_code as u8,
            write: false,
            gpr: decode_assisted_gpr(),
        },
        SVM_EXIT_WRITE_CR0..=0x1f => Exit::ControlRegister {
            cr: (exit_code - SVM_EXIT_WRITE_CR0) as u8,
            write: true,
            gpr: decode_assisted_gpr(),
        },
        SVM_EXIT_CR0_SEL_WRITE => Exit::ControlRegister {
            cr: 0,
            write: true,
            gpr: decode_assisted_gpr(),
        },
        SVM_EXIT_READ_DR0..=0x2f => Exit::DebugRegister {
            dr: (exit_code - SVM_EXIT_READ_DR0) as u8,
            write: false,
        },
        SVM_EXIT_WRITE_DR0..=0x3f => Exit::DebugRegister {
            dr: (exit_code - SVM_EXIT_WRITE_DR0) as u8,
            write: true,
        },
        SVM_EXIT_EXCP_BASE..=SVM_EXIT_LAST_EXCP => Exit::Exception {
            vector: (exit_code - SVM_EXIT_EXCP_BASE) as u8,
            error_code: exit_info_1 as u32,
            fault_address: exit_info_2,
        },
        SVM_EXIT_INTR => Exit::ExternalInterrupt,
        SVM_EXIT_NMI => Exit::Nmi,
        SVM_EXIT_SMI => Exit::Smi,
        SVM_EXIT_INIT => Exit::Init,
        SVM_EXIT_VINTR => Exit::InterruptWindow,
        SVM_EXIT_RDTSC => Exit::Rdtsc,
        SVM_EXIT_RDPMC => Exit::Rdpmc,
        SVM_EXIT_CPUID => Exit::Cpuid,
        SVM_EXIT_IRET => Exit::Iret,
        SVM_EXIT_INVD => Exit::Invd,
        SVM_EXIT_PAUSE => Exit::Pause,
        SVM_EXIT_HLT => Exit::Hlt,
        SVM_EXIT_INVLPG => Exit::Invlpg {
            // EXITINFO1 holds the address only with DecodeAssists; without
            // them (QEMU TCG) it is 0, which is also a valid address, so
            // the caller decides from the feature bit (see SvmVcpu).
            address: Some(exit_info_1),
        },
        SVM_EXIT_IOIO => {
            decode_ioio(exit_info_1, exit_info_2).map_or(Exit::Unknown(full_code), Exit::Io)
        }
        SVM_EXIT_MSR => match exit_info_1 {
            0 => Exit::Msr { write: false },
            1 => Exit::Msr { write: true },
            _ => Exit::Unknown(full_code),
        },
        SVM_EXIT_TASK_SWITCH => Exit::TaskSwitch,
        SVM_EXIT_SHUTDOWN => Exit::Shutdown,
        SVM_EXIT_VMRUN | SVM_EXIT_VMLOAD | SVM_EXIT_VMSAVE | SVM_EXIT_STGI | SVM_EXIT_CLGI
        | SVM_EXIT_SKINIT | SVM_EXIT_INVLPGA => Exit::VirtualizationInstruction,
        SVM_EXIT_VMMCALL => Exit::Hypercall,
        SVM_EXIT_RDTSCP => Exit::Rdtscp,
        SVM_EXIT_WBINVD => Exit::Wbinvd,
        SVM_EXIT_MONITOR => Exit::Monitor,
        SVM_EXIT_MWAIT | SVM_EXIT_MWAIT_COND => Exit::Mwait,
        SVM_EXIT_XSETBV => Exit::Xsetbv,
        SVM_EXIT_NPF => Exit::Npf(NpfExit {
            gpa: exit_info_2,
            error_code: exit_info_1,
        }),
        code if is_defined_exit_code(code) => Exit::Unexpected(full_code),
        _ => Exit::Unknown(full_code),
    }
}

/// Whether `code` is one of the exit codes in [`EXIT_CODE_CONSTANTS`]
/// (the exception range included).
pub fn is_defined_exit_code(code: u32) -> bool {
    (SVM_EXIT_EXCP_BASE..=SVM_EXIT_LAST_EXCP).contains(&code)
        || EXIT_CODE_CONSTANTS
            .iter()
            .any(|&(_, value, _)| value == u64::from(code))
}

/// Decodes IOIO EXITINFO1/EXITINFO2 (APM 15.10.2); `None` if the size
/// field is not exactly one of the three sizes or the address-size field
/// has more than one bit.
pub fn decode_ioio(exit_info_1: u64, exit_info_2: u64) -> Option<IoExit> {
    let size = match (exit_info_1 & SVM_IOIO_SIZE_MASK) >> SVM_IOIO_SIZE_SHIFT {
        0b001 => 1,
        0b010 => 2,
        0b100 => 4,
        _ => return None,
    };
    let address_size = match (exit_info_1 & SVM_IOIO_ASIZE_MASK) >> SVM_IOIO_ASIZE_SHIFT {
        // QEMU TCG leaves the field empty.
        0 => None,
        0b001 => Some(16),
        0b010 => Some(32),
        0b100 => Some(64),
        _ => return None,
    };
    Some(IoExit {
        port: (exit_info_1 >> IOIO_PORT_SHIFT) as u16,
        size,
        direction: if exit_info_1 & SVM_IOIO_TYPE_MASK != 0 {
            IoDirection::In
        } else {
            IoDirection::Out
        },
        string: exit_info_1 & SVM_IOIO_STR_MASK != 0,
        rep: exit_info_1 & SVM_IOIO_REP_MASK != 0,
        address_size,
        next_rip: exit_info_2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_compares_low_half_only() {
        assert_eq!(decode_exit(0xffff_ffff, 0, 0, 0), Exit::Invalid);
        assert_eq!(decode_exit(0xffff_ffff, 0xffff_ffff, 0, 0), Exit::Invalid);
    }

    #[test]
    fn high_half_set_on_known_code_is_unknown() {
        assert_eq!(
            decode_exit(SVM_EXIT_CPUID, 1, 0, 0),
            Exit::Unknown(0x1_0000_0072)
        );
    }

    #[test]
    fn simple_exits() {
        for (code, exit) in [
            (SVM_EXIT_CPUID, Exit::Cpuid),
            (SVM_EXIT_HLT, Exit::Hlt),
            (SVM_EXIT_VMMCALL, Exit::Hypercall),
            (SVM_EXIT_INTR, Exit::ExternalInterrupt),
            (SVM_EXIT_NMI, Exit::Nmi),
            (SVM_EXIT_VINTR, Exit::InterruptWindow),
            (SVM_EXIT_IRET, Exit::Iret),
            (SVM_EXIT_SHUTDOWN, Exit::Shutdown),
            (SVM_EXIT_VMRUN, Exit::VirtualizationInstruction),
            (SVM_EXIT_CLGI, Exit::VirtualizationInstruction),
            (SVM_EXIT_MWAIT_COND, Exit::Mwait),
            (SVM_EXIT_XSETBV, Exit::Xsetbv),
        ] {
            assert_eq!(decode_exit(code, 0, 0, 0), exit, "{code:#x}");
        }
    }

    #[test]
    fn msr_direction_and_bad_exitinfo() {
        assert_eq!(
            decode_exit(SVM_EXIT_MSR, 0, 0, 0),
            Exit::Msr { write: false }
        );
        assert_eq!(
            decode_exit(SVM_EXIT_MSR, 0, 1, 0),
            Exit::Msr { write: true }
        );
        assert_eq!(decode_exit(SVM_EXIT_MSR, 0, 2, 0), Exit::Unknown(0x7c));
    }

    #[test]
    fn exceptions_carry_error_code_and_address() {
        assert_eq!(
            decode_exit(SVM_EXIT_EXCP_BASE + 14, 0, 0x1_0000_0006, 0xdead_b000),
            Exit::Exception {
                vector: 14,
                error_code: 6,
                fault_address: 0xdead_b000
            }
        );
        assert!(matches!(
            decode_exit(SVM_EXIT_LAST_EXCP, 0, 0, 0),
            Exit::Exception { vector: 31, .. }
        ));
    }

    #[test]
    fn cr_and_dr_accesses() {
        assert_eq!(
            decode_exit(SVM_EXIT_WRITE_CR4, 0, 0, 0),
            Exit::ControlRegister {
                cr: 4,
                write: true,
                gpr: None
            }
        );
        assert_eq!(
            decode_exit(SVM_EXIT_READ_CR3, 0, 1 << 63 | 11, 0),
            Exit::ControlRegister {
                cr: 3,
                write: false,
                gpr: Some(Gpr::R11)
            }
        );
        assert_eq!(
            decode_exit(SVM_EXIT_CR0_SEL_WRITE, 0, 0, 0),
            Exit::ControlRegister {
                cr: 0,
                write: true,
                gpr: None
            }
        );
        assert_eq!(
            decode_exit(SVM_EXIT_WRITE_DR7, 0, 0, 0),
            Exit::DebugRegister { dr: 7, write: true }
        );
    }

    #[test]
    fn ioio_tcg_style() {
        // OUT DX, AL to 0x3f8 as QEMU TCG reports it: no address size.
        let info1 = 0x3f8 << 16 | 1 << 4;
        assert_eq!(
            decode_exit(SVM_EXIT_IOIO, 0, info1, 0x1003),
            Exit::Io(IoExit {
                port: 0x3f8,
                size: 1,
                direction: IoDirection::Out,
                string: false,
                rep: false,
                address_size: None,
                next_rip: 0x1003,
            })
        );
    }

    #[test]
    fn ioio_rep_insw_with_address_size() {
        let info1 = 0x1f0 << 16 | 1 << 8 | 1 << 5 | SVM_IOIO_REP_MASK | SVM_IOIO_STR_MASK | 1;
        let Exit::Io(io) = decode_exit(SVM_EXIT_IOIO, 0, info1, 7) else {
            panic!("not an IO exit");
        };
        assert_eq!(io.port, 0x1f0);
        assert_eq!(io.size, 2);
        assert_eq!(io.direction, IoDirection::In);
        assert!(io.string && io.rep);
        assert_eq!(io.address_size, Some(32));
    }

    #[test]
    fn ioio_malformed_sizes() {
        assert_eq!(decode_ioio(0, 0), None);
        assert_eq!(decode_ioio(0b011 << 4, 0), None);
        assert_eq!(decode_ioio(1 << 4 | 0b110 << 7, 0), None);
        assert!(matches!(
            decode_exit(SVM_EXIT_IOIO, 0, 0b111 << 4, 0),
            Exit::Unknown(0x7b)
        ));
    }

    #[test]
    fn npf_fields() {
        assert_eq!(
            decode_exit(
                SVM_EXIT_NPF,
                0,
                NpfExit::WRITE | NpfExit::FINAL_TRANSLATION,
                0xfee0_0030
            ),
            Exit::Npf(NpfExit {
                gpa: 0xfee0_0030,
                error_code: NpfExit::WRITE | NpfExit::FINAL_TRANSLATION
            })
        );
    }

    #[test]
    fn defined_but_unrequested_and_unknown() {
        assert_eq!(decode_exit(SVM_EXIT_RDPRU, 0, 0, 0), Exit::Unexpected(0x8e));
        assert_eq!(
            decode_exit(SVM_EXIT_VMGEXIT, 0, 0, 0),
            Exit::Unexpected(0x403)
        );
        assert_eq!(decode_exit(0xa0, 0, 0, 0), Exit::Unknown(0xa0));
        assert_eq!(decode_exit(0x500, 0, 0, 0), Exit::Unknown(0x500));
    }

    #[test]
    fn decoding_never_panics() {
        // Every code in and around the defined ranges, with hostile info.
        for code in (0..0x500).chain([0xf000_0000, 0xffff_fffe]) {
            for info in [0, 1, u64::MAX, 1 << 63] {
                let _ = decode_exit(code, 0, info, info);
            }
        }
    }
}
