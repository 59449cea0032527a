//! The register ioctls, KVM_GET/SET_REGS and KVM_GET/SET_SREGS
//! (`Documentation/virt/kvm/api.rst` 4.11-4.14), on any vendor's vCPU.
//!
//! `kvm_segment` spells a segment's attributes out field by field; the
//! VMCB keeps them packed in 12 bits (AMD APM vol. 2, 15.5.1, "Segment
//! state in the VMCB": type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9, D/B 10,
//! G 11), which is also what [`Segment::attributes`] holds.  KVM's
//! `unusable` flag has no SVM counterpart: like KVM's SVM code, an unusable
//! segment is stored as not present, and a non-present one reads back as
//! unusable.
//!
//! KVM_SET_SREGS is refused (EINVAL) for the combinations KVM refuses in
//! `kvm_is_valid_sregs`: long mode without PAE paging, and CR0.PG without
//! CR0.PE.  `interrupt_bitmap` (a pending external interrupt) is only
//! meaningful with an in-kernel irqchip, which this backend does not have
//! yet: a set bit is refused rather than dropped.

use crate::kvm_api::decode::{check_sregs, SregsError, SregsLimits};
use crate::kvm_api::layout::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use crate::vendor::{Gpr, Segment, SegmentRegister, VendorVcpu};


/// Why a register write is refused (all EINVAL for KVM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegsError {
    /// `kvm_is_valid_sregs` refuses the control registers or EFER.
    Invalid(SregsError),
    /// A pending interrupt in `interrupt_bitmap` without an irqchip.
    PendingInterrupt,
}

impl RegsError {
    /// The errno KVM returns (EINVAL).
    pub fn errno(self) -> i32 {
        22
    }
}

/// The order of `kvm_regs`' general-purpose fields, by register.
fn regs_fields(regs: &mut kvm_regs) -> [(Gpr, &mut u64); 16] {
    [
        (Gpr::Rax, &mut regs.rax),
        (Gpr::Rbx, &mut regs.rbx),
        (Gpr::Rcx, &mut regs.rcx),
        (Gpr::Rdx, &mut regs.rdx),
        (Gpr::Rsi, &mut regs.rsi),
        (Gpr::Rdi, &mut regs.rdi),
        (Gpr::Rsp, &mut regs.rsp),
        (Gpr::Rbp, &mut regs.rbp),
        (Gpr::R8, &mut regs.r8),
        (Gpr::R9, &mut regs.r9),
        (Gpr::R10, &mut regs.r10),
        (Gpr::R11, &mut regs.r11),
        (Gpr::R12, &mut regs.r12),
        (Gpr::R13, &mut regs.r13),
        (Gpr::R14, &mut regs.r14),
        (Gpr::R15, &mut regs.r15),
    ]
}

/// KVM_GET_REGS.
pub fn get_regs(vcpu: &impl VendorVcpu) -> kvm_regs {
    let mut regs = kvm_regs {
        rax: 0,
        rbx: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        rsp: 0,
        rbp: 0,
        r8: 0,
        r9: 0,
        r10: 0,
        r11: 0,
        r12: 0,
        r13: 0,
        r14: 0,
        r15: 0,
        rip: vcpu.rip(),
        rflags: vcpu.rflags(),
    };
    for (gpr, field) in regs_fields(&mut regs) {
        *field = vcpu.gpr(gpr);
    }
    regs
}

/// KVM_SET_REGS.  RFLAGS bit 1 is forced on (it always reads as 1; a VMRUN
/// with it clear is still accepted, but the guest must never see 0 there).
pub fn set_regs(vcpu: &mut impl VendorVcpu, regs: &kvm_regs) {
    let mut copy = *regs;
    for (gpr, field) in regs_fields(&mut copy) {
        vcpu.set_gpr(gpr, *field);
    }
    vcpu.set_rip(regs.rip);
    vcpu.set_rflags(regs.rflags | 0x2);
}

/// Packs `kvm_segment` into the VMCB's attribute format.
pub fn segment_from_kvm(segment: &kvm_segment) -> Segment {
    let present = segment.present != 0 && segment.unusable == 0;
    let attributes = u16::from(segment.type_ & 0xf)
        | u16::from(segment.s & 1) << 4
        | u16::from(segment.dpl & 3) << 5
        | u16::from(present) << 7
        | u16::from(segment.avl & 1) << 8
        | u16::from(segment.l & 1) << 9
        | u16::from(segment.db & 1) << 10
        | u16::from(segment.g & 1) << 11;
    Segment {
        selector: segment.selector,
        attributes,
        limit: segment.limit,
        base: segment.base,
    }
}

/// Unpacks the VMCB's attribute format into `kvm_segment`.
pub fn segment_to_kvm(segment: &Segment) -> kvm_segment {
    let a = segment.attributes;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    let present = bit(7);
    kvm_segment {
        base: segment.base,
        limit: segment.limit,
        selector: segment.selector,
        type_: (a & 0xf) as u8,
        present,
        dpl: ((a >> 5) & 3) as u8,
        db: bit(10),
        s: bit(4),
        l: bit(9),
        g: bit(11),
        avl: bit(8),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn dtable_to_kvm(segment: &Segment) -> kvm_dtable {
    kvm_dtable {
        base: segment.base,
        limit: segment.limit as u16,
        padding: [0; 3],
    }
}

fn dtable_from_kvm(table: &kvm_dtable) -> Segment {
    Segment {
        selector: 0,
        attributes: 0,
        limit: u32::from(table.limit),
        base: table.base,
    }
}

const SEGMENTS: [SegmentRegister; 8] = [
    SegmentRegister::Cs,
    SegmentRegister::Ds,
    SegmentRegister::Es,
    SegmentRegister::Fs,
    SegmentRegister::Gs,
    SegmentRegister::Ss,
    SegmentRegister::Tr,
    SegmentRegister::Ldtr,
];

fn sregs_segment(sregs: &mut kvm_sregs, register: SegmentRegister) -> Option<&mut kvm_segment> {
    Some(match register {
        SegmentRegister::Cs => &mut sregs.cs,
        SegmentRegister::Ds => &mut sregs.ds,
        SegmentRegister::Es => &mut sregs.es,
        SegmentRegister::Fs => &mut sregs.fs,
        SegmentRegister::Gs => &mut sregs.gs,
        SegmentRegister::Ss => &mut sregs.ss,
        SegmentRegister::Tr => &mut sregs.tr,
        SegmentRegister::Ldtr => &mut sregs.ldt,
        SegmentRegister::Gdtr | SegmentRegister::Idtr => return None,
    })
}

/// KVM_GET_SREGS.  `cr8` is 0 and `apic_base` is the caller's (both
/// belong to the local APIC, which lives outside the vendor state).
pub fn get_sregs(vcpu: &impl VendorVcpu, apic_base: u64) -> kvm_sregs {
    let blank = segment_to_kvm(&Segment::default());
    let mut sregs = kvm_sregs {
        cs: blank,
        ds: blank,
        es: blank,
        fs: blank,
        gs: blank,
        ss: blank,
        tr: blank,
        ldt: blank,
        gdt: dtable_to_kvm(&vcpu.segment(SegmentRegister::Gdtr)),
        idt: dtable_to_kvm(&vcpu.segment(SegmentRegister::Idtr)),
        cr0: vcpu.cr0(),
        cr2: vcpu.cr2(),
        cr3: vcpu.cr3(),
        cr4: vcpu.cr4(),
        cr8: 0,
        efer: vcpu.efer(),
        apic_base,
        interrupt_bitmap: [0; 4],
    };
    for register in SEGMENTS {
        let value = segment_to_kvm(&vcpu.segment(register));
        if let Some(slot) = sregs_segment(&mut sregs, register) {
            *slot = value;
        }
    }
    sregs
}

/// KVM_SET_SREGS: all or nothing (checked first).  The caller flushes the
/// guest's TLB afterwards (KVM does, since CR3/CR4/EFER may have changed).
/// `limits` come from the guest's CPUID ([`crate::vcpu::VcpuState::sregs_limits`]).
pub fn set_sregs(
    vcpu: &mut impl VendorVcpu,
    sregs: &kvm_sregs,
    limits: &SregsLimits,
) -> Result<(), RegsError> {
    check_sregs(sregs, limits).map_err(RegsError::Invalid)?;
    if sregs.interrupt_bitmap.iter().any(|word| *word != 0) {
        return Err(RegsError::PendingInterrupt);
    }
    let mut copy = *sregs;
    for register in SEGMENTS {
        if let Some(slot) = sregs_segment(&mut copy, register) {
            vcpu.set_segment(register, segment_from_kvm(slot));
        }
    }
    vcpu.set_segment(SegmentRegister::Gdtr, dtable_from_kvm(&sregs.gdt));
    vcpu.set_segment(SegmentRegister::Idtr, dtable_from_kvm(&sregs.idt));
    vcpu.set_cr0(sregs.cr0);
    vcpu.set_cr2(sregs.cr2);
    vcpu.set_cr3(sregs.cr3);
    vcpu.set_cr4(sregs.cr4);
    // LMA agrees with LME and CR0.PG (checked above), as KVM requires.
    vcpu.set_efer(sregs.efer);
    Ok(())
}

/// The FXSAVE image at the start of an XSAVE buffer (SDM vol. 1,
/// 10.5.1, table 10-2, 64-bit format): the layout KVM_GET/SET_FPU
/// (api.rst 4.22, 4.23) read and write through the guest's XSAVE state.
pub const FXSAVE_SIZE: usize = 512;
/// XSTATE_BV in the XSAVE header, right after the FXSAVE image.
const XSTATE_BV: usize = 512;
/// XSTATE_BV bits of the x87 and SSE components.
const XFEATURE_MASK_FPSSE: u64 = 0b11;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

/// KVM_GET_FPU from an XSAVE buffer (`None` if it is shorter than the
/// FXSAVE image).
pub fn fpu_from_xsave(xsave: &[u8]) -> Option<kvm_fpu> {
    let fx = xsave.get(..FXSAVE_SIZE)?;
    let mut fpu = kvm_fpu {
        fpr: [[0; 16]; 8],
        fcw: le16(fx, 0),
        fsw: le16(fx, 2),
        ftwx: fx[4],
        pad1: 0,
        last_opcode: le16(fx, 6),
        last_ip: le64(fx, 8),
        last_dp: le64(fx, 16),
        xmm: [[0; 16]; 16],
        mxcsr: le32(fx, 24),
        pad2: 0,
    };
    for (i, st) in fpu.fpr.iter_mut().enumerate() {
        // ST(i) is 10 bytes in a 16-byte slot; the rest is reserved.
        st[..10].copy_from_slice(&fx[32 + 16 * i..32 + 16 * i + 10]);
    }
    for (i, xmm) in fpu.xmm.iter_mut().enumerate() {
        xmm.copy_from_slice(&fx[160 + 16 * i..176 + 16 * i]);
    }
    Some(fpu)
}

/// KVM_SET_FPU into an XSAVE buffer: replaces the FXSAVE image's x87 and
/// SSE state and marks both components present in XSTATE_BV, so that a
/// restore loads them (as KVM's `kvm_arch_vcpu_ioctl_set_fpu` does on the
/// guest's fxsave area). Returns false if the buffer is too short.
pub fn fpu_into_xsave(fpu: &kvm_fpu, xsave: &mut [u8]) -> bool {
    if xsave.len() < XSTATE_BV + 8 {
        return false;
    }
    xsave[0..2].copy_from_slice(&fpu.fcw.to_le_bytes());
    xsave[2..4].copy_from_slice(&fpu.fsw.to_le_bytes());
    xsave[4] = fpu.ftwx;
    xsave[6..8].copy_from_slice(&fpu.last_opcode.to_le_bytes());
    xsave[8..16].copy_from_slice(&fpu.last_ip.to_le_bytes());
    xsave[16..24].copy_from_slice(&fpu.last_dp.to_le_bytes());
    xsave[24..28].copy_from_slice(&fpu.mxcsr.to_le_bytes());
    for (i, st) in fpu.fpr.iter().enumerate() {
        xsave[32 + 16 * i..32 + 16 * i + 10].copy_from_slice(&st[..10]);
    }
    for (i, xmm) in fpu.xmm.iter().enumerate() {
        xsave[160 + 16 * i..176 + 16 * i].copy_from_slice(xmm);
    }
    let bv = le64(xsave, XSTATE_BV) | XFEATURE_MASK_FPSSE;
    xsave[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svm::{SvmFeatures, SvmVcpu, VmcbAddresses};
    use std::boxed::Box;

    fn vcpu() -> Box<SvmVcpu> {
        Box::new(SvmVcpu::new(SvmFeatures::TCG, VmcbAddresses::default()))
    }

    #[test]
    fn regs_round_trip_every_register() {
        let mut v = vcpu();
        let mut regs = get_regs(&*v);
        for (i, (_, field)) in regs_fields(&mut regs).into_iter().enumerate() {
            *field = 0x1000 + i as u64;
        }
        regs.rip = 0xfff0;
        regs.rflags = 0x200;
        set_regs(&mut *v, &regs);
        let back = get_regs(&*v);
        assert_eq!(back.rax, 0x1000);
        assert_eq!(back.rsp, 0x1006);
        assert_eq!(back.r15, 0x100f);
        assert_eq!(back.rip, 0xfff0);
        assert_eq!(back.rflags, 0x202, "bit 1 always reads as 1");
    }

    #[test]
    fn segment_attributes_pack_as_the_vmcb_wants() {
        // A 64-bit code segment: type 0xb, S, DPL 0, P, L, G.
        let kvm = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x10,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let packed = segment_from_kvm(&kvm);
        assert_eq!(packed.attributes, 0xa9b);
        assert_eq!(segment_to_kvm(&packed), kvm);
    }

    #[test]
    fn unusable_segments_are_not_present() {
        let mut kvm = segment_to_kvm(&Segment::default());
        assert_eq!(kvm.unusable, 1);
        kvm.present = 1;
        kvm.unusable = 1;
        assert_eq!(segment_from_kvm(&kvm).attributes & 0x80, 0);
    }

    #[test]
    fn sregs_round_trip_in_long_mode() {
        let mut v = vcpu();
        let mut sregs = get_sregs(&*v, 0xfee0_0900);
        assert_eq!(sregs.apic_base, 0xfee0_0900);
        sregs.cr0 = CR0_PE | CR0_PG;
        sregs.cr4 = CR4_PAE;
        sregs.cr3 = 0x9000;
        // KVM wants LMA with LME and paging, as the processor would set it.
        sregs.efer = EFER_LME;
        assert_eq!(
            set_sregs(&mut *v, &sregs, &LIMITS),
            Err(RegsError::Invalid(SregsError::LongModeWithoutLma))
        );
        sregs.efer = EFER_LME | EFER_LMA;
        sregs.cs.l = 1;
        sregs.cs.present = 1;
        sregs.cs.unusable = 0;
        sregs.gdt.base = 0x500;
        sregs.gdt.limit = 0x1f;
        set_sregs(&mut *v, &sregs, &LIMITS).unwrap();
        let back = get_sregs(&*v, 0);
        assert_eq!(back.cr3, 0x9000);
        assert_eq!(back.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(back.cs.l, 1);
        assert_eq!(back.gdt.base, 0x500);
        assert_eq!(back.gdt.limit, 0x1f);
    }

    #[test]
    fn fpu_round_trips_through_an_xsave_image() {
        let mut xsave = std::vec![0u8; 576];
        let mut fpu = fpu_from_xsave(&xsave).unwrap();
        fpu.fcw = 0x37f;
        fpu.mxcsr = 0x1f80;
        fpu.fpr[7][9] = 0xaa;
        fpu.xmm[15][15] = 0x55;
        fpu.last_ip = 0x1234_5678_9abc;
        assert!(fpu_into_xsave(&fpu, &mut xsave));
        assert_eq!(&xsave[0..2], &[0x7f, 0x03]);
        assert_eq!(xsave[32 + 16 * 7 + 9], 0xaa);
        assert_eq!(xsave[160 + 16 * 15 + 15], 0x55);
        assert_eq!(xsave[512] & 3, 3, "x87 and SSE marked present");
        assert_eq!(fpu_from_xsave(&xsave), Some(fpu));
        assert_eq!(fpu_from_xsave(&xsave[..100]), None);
        assert!(!fpu_into_xsave(&fpu, &mut xsave[..512]));
    }

    use crate::msr::{EFER_LMA, EFER_LME};
    use crate::paging::{CR0_PE, CR0_PG, CR4_PAE};

    /// A guest whose CPUID allows long mode and every CR4 bit.
    const LIMITS: SregsLimits =
        SregsLimits { max_phys_addr_bits: 48, cr4_reserved: 0, efer_reserved: 0 };

    #[test]
    fn invalid_sregs_change_nothing() {
        let mut v = vcpu();
        let before = get_sregs(&*v, 0);
        let mut bad = before;
        bad.cr0 = CR0_PG;
        bad.cr3 = 0x1234_5000;
        assert_eq!(
            set_sregs(&mut *v, &bad, &LIMITS),
            Err(RegsError::Invalid(SregsError::Cr0PgWithoutPe))
        );
        assert_eq!(get_sregs(&*v, 0).cr3, before.cr3);
        let mut bad = before;
        bad.cr0 = CR0_PE | CR0_PG;
        bad.efer = EFER_LME;
        assert_eq!(
            set_sregs(&mut *v, &bad, &LIMITS),
            Err(RegsError::Invalid(SregsError::LongModeWithoutPae))
        );
        // A CR4 bit the guest's CPUID leaves reserved (UMIP here).
        let mut bad = before;
        bad.cr4 = 1 << 11;
        let no_umip = SregsLimits { cr4_reserved: 1 << 11, ..LIMITS };
        assert_eq!(
            set_sregs(&mut *v, &bad, &no_umip),
            Err(RegsError::Invalid(SregsError::Cr4Reserved))
        );
        let mut bad = before;
        bad.interrupt_bitmap[1] = 1;
        assert_eq!(set_sregs(&mut *v, &bad, &LIMITS), Err(RegsError::PendingInterrupt));
    }
}
