use super::*;
use crate::kvm_api::errno::Errno;
use std::vec;
use std::vec::Vec;

fn bytes_of<T: Wire>(value: &T) -> Vec<u8> {
    let mut out = vec![0u8; T::SIZE];
    encode(value, &mut out).unwrap();
    out
}

// --- generic ---------------------------------------------------------------

#[test]
fn short_buffers_are_efault() {
    assert_eq!(decode::<kvm_regs>(&[0; 143]), Err(Error::ShortBuffer));
    assert_eq!(Error::ShortBuffer.errno(), Errno::EFAULT);
    let mut out = [0u8; 10];
    assert_eq!(encode(&kvm_regs::ZERO, &mut out), Err(Error::ShortBuffer));
}

#[test]
fn entries_need_the_whole_array() {
    let bytes = vec![0u8; 3 * 16];
    assert_eq!(entries::<kvm_msr_entry>(&bytes, 3).unwrap().count(), 3);
    assert_eq!(entries::<kvm_msr_entry>(&bytes, 2).unwrap().count(), 2);
    assert!(entries::<kvm_msr_entry>(&bytes, 4).is_err());
    assert!(entries::<kvm_msr_entry>(&bytes, u32::MAX).is_err());
    assert_eq!(array_bytes(8, 40, 3), Some(128));
}

// --- CPUID -----------------------------------------------------------------

fn cpuid_header(nent: u32) -> Vec<u8> {
    bytes_of(&kvm_cpuid2 {
        nent,
        ..kvm_cpuid2::ZERO
    })
}

#[test]
fn set_cpuid2_limit_is_e2big() {
    assert_eq!(
        decode_cpuid2_header(CpuidCall::Set, &cpuid_header(256)),
        Ok(256)
    );
    assert_eq!(
        decode_cpuid2_header(CpuidCall::Set, &cpuid_header(0)),
        Ok(0)
    );
    let error = decode_cpuid2_header(CpuidCall::Set, &cpuid_header(257)).unwrap_err();
    assert_eq!(error, Error::TooManyCpuidEntries);
    assert_eq!(error.errno(), Errno::E2BIG);
}

#[test]
fn get_supported_cpuid_clamps_and_refuses_zero() {
    let get = CpuidCall::GetSupported;
    assert_eq!(decode_cpuid2_header(get, &cpuid_header(1000)), Ok(256));
    assert_eq!(decode_cpuid2_header(get, &cpuid_header(3)), Ok(3));
    assert_eq!(
        decode_cpuid2_header(get, &cpuid_header(0))
            .unwrap_err()
            .errno(),
        Errno::E2BIG
    );
    assert_eq!(
        decode_cpuid2_header(CpuidCall::GetVcpu, &cpuid_header(u32::MAX)),
        Ok(u32::MAX)
    );
}

#[test]
fn cpuid_answers_fit_the_room() {
    let entry = kvm_cpuid_entry2 {
        function: 0x8000_0001,
        ecx: 0x21,
        ..kvm_cpuid_entry2::ZERO
    };
    let answer = [entry, entry];
    let mut out = vec![0u8; 8 + 2 * 40];
    assert_eq!(encode_cpuid2(2, &answer, &mut out), Ok(88));
    assert_eq!(decode_cpuid2_header(CpuidCall::GetVcpu, &out), Ok(2));
    let decoded: Vec<kvm_cpuid_entry2> = entries(&out[8..], 2).unwrap().collect();
    assert_eq!(decoded, answer);
    let mut untouched = vec![0xaau8; 88];
    assert_eq!(
        encode_cpuid2(1, &answer, &mut untouched),
        Err(Error::OutputTooLarge)
    );
    assert!(untouched.iter().all(|&byte| byte == 0xaa));
}

#[test]
fn emulated_cpuid_padding_must_be_zero() {
    let mut bytes = vec![0u8; 2 * 40];
    assert_eq!(check_emulated_cpuid_padding(&bytes, 2), Ok(()));
    bytes[40 + 36] = 1;
    assert_eq!(
        check_emulated_cpuid_padding(&bytes, 2),
        Err(Error::ReservedNotZero)
    );
    assert_eq!(check_emulated_cpuid_padding(&bytes, 1), Ok(()));
}

// --- MSRs ------------------------------------------------------------------

#[test]
fn msrs_below_max_io_msrs() {
    let header = |nmsrs| {
        bytes_of(&kvm_msrs {
            nmsrs,
            ..kvm_msrs::ZERO
        })
    };
    assert_eq!(decode_msrs_header(&header(255)), Ok(255));
    assert_eq!(decode_msrs_header(&header(256)), Err(Error::TooManyMsrs));
    assert_eq!(Error::TooManyMsrs.errno(), Errno::E2BIG);
    assert_eq!(
        decode_msrs_header(&header(u32::MAX)),
        Err(Error::TooManyMsrs)
    );
}

#[test]
fn msr_list_header_is_written_even_when_too_small() {
    let indices = [0x10, 0x174, 0xc000_0080];
    let mut out = vec![0u8; 4 + 12];
    assert_eq!(encode_msr_list(3, &indices, &mut out), Ok(16));
    assert_eq!(decode_msr_list_header(&out), Ok(3));
    let decoded: Vec<u32> = entries(&out[4..], 3).unwrap().collect();
    assert_eq!(decoded, indices);

    let mut small = vec![0u8; 16];
    assert_eq!(
        encode_msr_list(2, &indices, &mut small),
        Err(Error::OutputTooLarge)
    );
    // The count is there for userspace to retry with enough room.
    assert_eq!(decode_msr_list_header(&small), Ok(3));
    assert_eq!(small[4..], [0; 12]);
}

// --- memory regions --------------------------------------------------------

const ALL_SUPPORT: MemoryRegionSupport = MemoryRegionSupport {
    readonly: true,
    guest_memfd: true,
};

fn region_v1(slot: u32, flags: u32) -> Vec<u8> {
    bytes_of(&kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: 0x10_0000,
        memory_size: 0x20_0000,
        userspace_addr: 0x7f00_0000_0000,
    })
}

fn region_v2(slot: u32, flags: u32) -> Vec<u8> {
    bytes_of(&kvm_userspace_memory_region2 {
        slot,
        flags,
        guest_memfd: 9,
        guest_memfd_offset: 0x1000,
        ..kvm_userspace_memory_region2::ZERO
    })
}

#[test]
fn memory_region_v1_flags() {
    let v1 = MemoryRegionVersion::V1;
    let region = decode_memory_region(v1, &region_v1(0x1_0005, 3), ALL_SUPPORT).unwrap();
    assert_eq!((region.address_space, region.slot), (1, 5));
    assert!(region.flags.log_dirty_pages && region.flags.readonly);
    assert_eq!(region.memory_size, 0x20_0000);
    // GUEST_MEMFD needs the second version.
    assert_eq!(
        decode_memory_region(v1, &region_v1(0, KVM_MEM_GUEST_MEMFD), ALL_SUPPORT),
        Err(Error::UnknownFlags)
    );
    assert_eq!(
        decode_memory_region(v1, &region_v1(0, 1 << 8), ALL_SUPPORT)
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
    let no_readonly = MemoryRegionSupport {
        readonly: false,
        guest_memfd: false,
    };
    assert_eq!(
        decode_memory_region(v1, &region_v1(0, KVM_MEM_READONLY), no_readonly),
        Err(Error::UnknownFlags)
    );
}

#[test]
fn memory_region_slot_bound() {
    let v1 = MemoryRegionVersion::V1;
    assert!(decode_memory_region(v1, &region_v1(32763, 0), ALL_SUPPORT).is_ok());
    assert_eq!(
        decode_memory_region(v1, &region_v1(32764, 0), ALL_SUPPORT),
        Err(Error::MemorySlotOutOfRange)
    );
    // Only the low 16 bits are the slot id.
    assert!(decode_memory_region(v1, &region_v1(0xffff_0000, 0), ALL_SUPPORT).is_ok());
}

#[test]
fn memory_region_v2_guest_memfd() {
    let v2 = MemoryRegionVersion::V2;
    let region = decode_memory_region(v2, &region_v2(2, KVM_MEM_GUEST_MEMFD), ALL_SUPPORT).unwrap();
    assert!(region.flags.guest_memfd);
    assert_eq!((region.guest_memfd, region.guest_memfd_offset), (9, 0x1000));
    for excluded in [KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY] {
        assert_eq!(
            decode_memory_region(
                v2,
                &region_v2(2, KVM_MEM_GUEST_MEMFD | excluded),
                ALL_SUPPORT
            ),
            Err(Error::UnknownFlags)
        );
    }
    let plain = MemoryRegionSupport {
        readonly: true,
        guest_memfd: false,
    };
    assert_eq!(
        decode_memory_region(v2, &region_v2(2, KVM_MEM_GUEST_MEMFD), plain),
        Err(Error::UnknownFlags)
    );
    assert!(decode_memory_region(v2, &region_v1(0, 0), plain).is_err());
}

// --- irqfd / ioeventfd -----------------------------------------------------

fn irqfd(flags: u32) -> Vec<u8> {
    bytes_of(&kvm_irqfd {
        fd: 7,
        gsi: 5,
        flags,
        resamplefd: 8,
        ..kvm_irqfd::ZERO
    })
}

#[test]
fn irqfd_flags() {
    assert_eq!(
        decode_irqfd(&irqfd(0)),
        Ok(IrqfdRequest::Assign {
            fd: 7,
            gsi: 5,
            resample_fd: None
        })
    );
    assert_eq!(
        decode_irqfd(&irqfd(KVM_IRQFD_FLAG_RESAMPLE)),
        Ok(IrqfdRequest::Assign {
            fd: 7,
            gsi: 5,
            resample_fd: Some(8)
        })
    );
    assert_eq!(
        decode_irqfd(&irqfd(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE)),
        Ok(IrqfdRequest::Deassign { fd: 7, gsi: 5 })
    );
    assert_eq!(decode_irqfd(&irqfd(4)), Err(Error::UnknownFlags));
    assert_eq!(Error::UnknownFlags.errno(), Errno::EINVAL);
}

fn ioeventfd(addr: u64, len: u32, flags: u32) -> Vec<u8> {
    bytes_of(&kvm_ioeventfd {
        datamatch: 0x55,
        addr,
        len,
        fd: 11,
        flags,
        ..kvm_ioeventfd::ZERO
    })
}

#[test]
fn ioeventfd_lengths() {
    for len in [0, 1, 2, 4, 8] {
        assert!(
            decode_ioeventfd(&ioeventfd(0x1000, len, 0)).is_ok(),
            "{len}"
        );
    }
    for len in [3, 5, 16, u32::MAX] {
        let error = decode_ioeventfd(&ioeventfd(0x1000, len, 0)).unwrap_err();
        assert_eq!(error, Error::IoeventfdLength);
        assert_eq!(error.errno(), Errno::EINVAL);
    }
    // No alignment rule, as in KVM.
    assert!(decode_ioeventfd(&ioeventfd(0x1001, 4, 0)).is_ok());
}

#[test]
fn ioeventfd_assign_rules() {
    assert_eq!(
        decode_ioeventfd(&ioeventfd(u64::MAX - 3, 4, 0)),
        Err(Error::IoeventfdRangeWraps)
    );
    assert!(decode_ioeventfd(&ioeventfd(u64::MAX - 3, 2, 0)).is_ok());
    assert_eq!(
        decode_ioeventfd(&ioeventfd(0, 4, 1 << 5)),
        Err(Error::UnknownFlags)
    );
    assert_eq!(
        decode_ioeventfd(&ioeventfd(0, 0, KVM_IOEVENTFD_FLAG_DATAMATCH)),
        Err(Error::IoeventfdDatamatchWithoutLength)
    );
    // The unnamed fast_mmio bit 4 is inside the valid mask and ignored.
    assert!(decode_ioeventfd(&ioeventfd(0, 4, 1 << 4)).is_ok());
}

#[test]
fn ioeventfd_decoded_fields() {
    let flags = KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DATAMATCH;
    assert_eq!(
        decode_ioeventfd(&ioeventfd(0x3f8, 1, flags)),
        Ok(IoeventfdRequest::Assign(Ioeventfd {
            bus: IoeventfdBus::Pio,
            addr: 0x3f8,
            length: 1,
            datamatch: Some(0x55),
            fd: 11,
        }))
    );
    let Ok(IoeventfdRequest::Assign(mmio)) = decode_ioeventfd(&ioeventfd(0xd000_0000, 0, 0)) else {
        panic!("plain MMIO ioeventfd refused")
    };
    assert_eq!((mmio.bus, mmio.datamatch), (IoeventfdBus::Mmio, None));
    let Ok(IoeventfdRequest::Assign(ccw)) =
        decode_ioeventfd(&ioeventfd(0, 8, KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY))
    else {
        panic!("ccw ioeventfd refused")
    };
    assert_eq!(ccw.bus, IoeventfdBus::VirtioCcwNotify);
}

#[test]
fn ioeventfd_deassign_is_not_checked() {
    // KVM only searches for an exact match, so a length it would never
    // have assigned is simply not found later.
    let request = decode_ioeventfd(&ioeventfd(
        u64::MAX,
        3,
        KVM_IOEVENTFD_FLAG_DEASSIGN | 1 << 9,
    ));
    let Ok(IoeventfdRequest::Deassign(ioeventfd)) = request else {
        panic!("deassign refused: {request:?}")
    };
    assert_eq!(ioeventfd.length, 3);
}

// --- KVM_ENABLE_CAP --------------------------------------------------------

fn enable_cap(cap: u32, flags: u32, argument: u64) -> Vec<u8> {
    bytes_of(&kvm_enable_cap {
        cap,
        flags,
        args: [argument, 2, 3, 4],
        ..kvm_enable_cap::ZERO
    })
}

#[test]
fn enable_cap_flags_must_be_zero() {
    for target in [CapTarget::Vm, CapTarget::Vcpu] {
        assert_eq!(
            decode_enable_cap(target, &enable_cap(KVM_CAP_HALT_POLL, 1, 0)),
            Err(Error::UnknownFlags)
        );
    }
}

#[test]
fn enable_cap_vm_arguments() {
    let vm = CapTarget::Vm;
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_SPLIT_IRQCHIP, 0, 24)),
        Ok(EnableCap::SplitIrqchip {
            reserved_ioapic_pins: 24
        })
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_SPLIT_IRQCHIP, 0, 4097)),
        Err(Error::InvalidCapability)
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_X2APIC_API, 0, 3)),
        Ok(EnableCap::X2apicApi {
            use_32bit_ids: true,
            disable_broadcast_quirk: true
        })
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_X2APIC_API, 0, 4)),
        Err(Error::InvalidCapability)
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_X86_DISABLE_EXITS, 0, 0b1010)),
        Ok(EnableCap::DisableExits {
            mwait: false,
            hlt: true,
            pause: false,
            cstate: true
        })
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_X86_DISABLE_EXITS, 0, 16)),
        Err(Error::InvalidCapability)
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_HALT_POLL, 0, 200_000)),
        Ok(EnableCap::HaltPoll {
            max_halt_poll_ns: 200_000
        })
    );
    assert_eq!(
        decode_enable_cap(vm, &enable_cap(KVM_CAP_HALT_POLL, 0, 1 << 32))
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
}

#[test]
fn enable_cap_depends_on_the_file() {
    assert_eq!(
        decode_enable_cap(
            CapTarget::Vcpu,
            &enable_cap(KVM_CAP_ENFORCE_PV_FEATURE_CPUID, 0, 1)
        ),
        Ok(EnableCap::EnforcePvFeatureCpuid { enforce: true })
    );
    // A VM capability on a vCPU is passed through for the caller to refuse.
    assert_eq!(
        decode_enable_cap(
            CapTarget::Vcpu,
            &enable_cap(KVM_CAP_SPLIT_IRQCHIP, 0, 1 << 40)
        ),
        Ok(EnableCap::Other {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            args: [1 << 40, 2, 3, 4]
        })
    );
}

// --- registers -------------------------------------------------------------

#[test]
fn set_regs_forces_the_fixed_rflags_bit() {
    let regs = kvm_regs {
        rip: 0xfff0,
        rflags: 0,
        ..kvm_regs::ZERO
    };
    let decoded = decode_regs(&bytes_of(&regs)).unwrap();
    assert_eq!(decoded.rflags, 2);
    assert_eq!(decoded.rip, 0xfff0);
}

const LIMITS: SregsLimits = SregsLimits {
    max_phys_addr_bits: 48,
    cr4_reserved: 1 << 12,
    efer_reserved: !(EFER_LME | EFER_LMA | 1 | (1 << 11)),
};

/// One change to a valid `kvm_sregs`, for the table-driven tests.
type SregsChange = fn(&mut kvm_sregs);

fn long_mode_sregs() -> kvm_sregs {
    let mut sregs = kvm_sregs::ZERO;
    sregs.cr0 = X86_CR0_PE | X86_CR0_PG | (1 << 4);
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs.cr3 = 0x1000;
    sregs.cs.l = 1;
    sregs
}

#[test]
fn valid_sregs_pass() {
    assert_eq!(check_sregs(&long_mode_sregs(), &LIMITS), Ok(()));
    assert_eq!(check_sregs(&kvm_sregs::ZERO, &LIMITS), Ok(()));
    let decoded = decode_sregs(&bytes_of(&long_mode_sregs()), &LIMITS).unwrap();
    assert_eq!(decoded, long_mode_sregs());
}

#[test]
fn sregs_long_mode_rules() {
    let cases: [(SregsChange, SregsError); 5] = [
        (|s| s.cr4 = 0, SregsError::LongModeWithoutPae),
        (|s| s.efer = EFER_LME, SregsError::LongModeWithoutLma),
        (|s| s.cr3 = 1 << 48, SregsError::Cr3BeyondMaxPhysAddr),
        (|s| s.cr0 = X86_CR0_PE, SregsError::LmaOutsideLongMode),
        (
            |s| {
                s.cr0 = X86_CR0_PE;
                s.efer = EFER_LME;
            },
            SregsError::LongCodeSegmentOutsideLongMode,
        ),
    ];
    for (change, expected) in cases {
        let mut sregs = long_mode_sregs();
        change(&mut sregs);
        assert_eq!(check_sregs(&sregs, &LIMITS), Err(expected));
        let error = decode_sregs(&bytes_of(&sregs), &LIMITS).unwrap_err();
        assert_eq!(error, Error::InvalidSregs(expected));
        assert_eq!(error.errno(), Errno::EINVAL);
    }
}

#[test]
fn sregs_control_register_rules() {
    let cases: [(SregsChange, SregsError); 5] = [
        (|s| s.cr4 |= 1 << 12, SregsError::Cr4Reserved),
        (|s| s.cr0 |= 1 << 32, SregsError::Cr0HighBits),
        (|s| s.cr0 |= X86_CR0_NW, SregsError::Cr0NwWithoutCd),
        (|s| s.cr0 &= !X86_CR0_PE, SregsError::Cr0PgWithoutPe),
        (|s| s.efer |= 1 << 12, SregsError::EferReserved),
    ];
    for (change, expected) in cases {
        let mut sregs = long_mode_sregs();
        change(&mut sregs);
        assert_eq!(check_sregs(&sregs, &LIMITS), Err(expected));
    }
    let mut cached = long_mode_sregs();
    cached.cr0 |= X86_CR0_NW | X86_CR0_CD;
    assert_eq!(check_sregs(&cached, &LIMITS), Ok(()));
}

#[test]
fn sregs_cr3_limit_edges() {
    let mut sregs = long_mode_sregs();
    sregs.cr3 = (1 << 48) - 0x1000;
    assert_eq!(check_sregs(&sregs, &LIMITS), Ok(()));
    let wide = SregsLimits {
        max_phys_addr_bits: 64,
        ..LIMITS
    };
    sregs.cr3 = u64::MAX;
    assert_eq!(check_sregs(&sregs, &wide), Ok(()));
    let huge = SregsLimits {
        max_phys_addr_bits: 255,
        ..LIMITS
    };
    assert_eq!(check_sregs(&sregs, &huge), Ok(()));
    // Outside long mode CR3 is not checked.
    let mut legacy = kvm_sregs::ZERO;
    legacy.cr3 = u64::MAX;
    assert_eq!(check_sregs(&legacy, &LIMITS), Ok(()));
}

#[test]
fn debugregs_rules() {
    let good = kvm_debugregs {
        dr6: 0xffff_0ff0,
        dr7: 0x400,
        ..kvm_debugregs::ZERO
    };
    assert_eq!(decode_debugregs(&bytes_of(&good)), Ok(good));
    let flagged = kvm_debugregs { flags: 1, ..good };
    assert_eq!(
        decode_debugregs(&bytes_of(&flagged)),
        Err(Error::UnknownFlags)
    );
    for bad in [
        kvm_debugregs {
            dr6: 1 << 32,
            ..good
        },
        kvm_debugregs {
            dr7: 1 << 63,
            ..good
        },
    ] {
        assert_eq!(decode_debugregs(&bytes_of(&bad)), Err(Error::InvalidValue));
    }
}

#[test]
fn xcr0_rules() {
    let supported = 0x2e7; // x87 SSE AVX, AVX-512 (5-7), PKRU (9)
    assert!(is_valid_xcr0(1, supported));
    assert!(is_valid_xcr0(7, supported));
    assert!(is_valid_xcr0(0xe7, supported));
    assert!(!is_valid_xcr0(0, supported), "x87 must stay on");
    assert!(!is_valid_xcr0(5, supported), "AVX without SSE");
    assert!(!is_valid_xcr0(0x1f, supported), "MPX not supported");
    assert!(!is_valid_xcr0(0x67, supported), "AVX-512 partly on");
    assert!(!is_valid_xcr0(0xe3, supported), "AVX-512 without AVX");
    assert!(is_valid_xcr0(0x1f, 0x1f));
    assert!(!is_valid_xcr0(0x0f, 0x1f), "MPX halves go together");
    let amx = 0x6_0007;
    assert!(is_valid_xcr0(amx, amx));
    assert!(!is_valid_xcr0(0x2_0007, amx), "AMX halves go together");
}

fn xcrs(nr_xcrs: u32, flags: u32, entries: &[(u32, u64)]) -> Vec<u8> {
    let mut value = kvm_xcrs {
        nr_xcrs,
        flags,
        ..kvm_xcrs::ZERO
    };
    for (slot, &(xcr, xcr_value)) in value.xcrs.iter_mut().zip(entries) {
        slot.xcr = xcr;
        slot.value = xcr_value;
    }
    bytes_of(&value)
}

#[test]
fn set_xcrs_rules() {
    assert_eq!(decode_xcrs(&xcrs(1, 0, &[(0, 7)]), 7), Ok(Some(7)));
    assert_eq!(decode_xcrs(&xcrs(2, 0, &[(5, 1), (0, 3)]), 7), Ok(Some(3)));
    assert_eq!(decode_xcrs(&xcrs(0, 0, &[(0, 3)]), 7), Ok(None));
    assert_eq!(decode_xcrs(&xcrs(1, 0, &[(1, 3)]), 7), Ok(None));
    assert_eq!(decode_xcrs(&xcrs(17, 0, &[]), 7), Err(Error::InvalidValue));
    assert_eq!(
        decode_xcrs(&xcrs(1, 1, &[(0, 1)]), 7),
        Err(Error::UnknownFlags)
    );
    assert_eq!(
        decode_xcrs(&xcrs(1, 0, &[(0, 0xf)]), 7),
        Err(Error::InvalidValue)
    );
}

// --- events ----------------------------------------------------------------

#[test]
fn interrupt_vector_bound() {
    let interrupt = |irq| bytes_of(&kvm_interrupt { irq });
    assert_eq!(decode_interrupt(&interrupt(0x20)), Ok(0x20));
    assert_eq!(decode_interrupt(&interrupt(255)), Ok(255));
    let error = decode_interrupt(&interrupt(256)).unwrap_err();
    assert_eq!(error, Error::InterruptVectorOutOfRange);
    assert_eq!(error.errno(), Errno::EINVAL);
}

#[test]
fn mp_states() {
    let state = |mp_state| bytes_of(&kvm_mp_state { mp_state });
    assert_eq!(decode_mp_state(&state(0), false), Ok(MpState::Runnable));
    for (raw, expected) in [
        (1, MpState::Uninitialized),
        (2, MpState::InitReceived),
        (3, MpState::Halted),
        (4, MpState::SipiReceived),
        (9, MpState::ApResetHold),
    ] {
        assert_eq!(decode_mp_state(&state(raw), true), Ok(expected));
        assert_eq!(expected.to_raw(), raw);
        assert_eq!(
            decode_mp_state(&state(raw), false),
            Err(Error::InvalidValue)
        );
    }
    for raw in [5, 6, 7, 8, 10, 11, u32::MAX] {
        assert_eq!(decode_mp_state(&state(raw), true), Err(Error::InvalidValue));
    }
}

fn events_with(change: impl FnOnce(&mut kvm_vcpu_events)) -> Vec<u8> {
    let mut events = kvm_vcpu_events::ZERO;
    change(&mut events);
    bytes_of(&events)
}

#[test]
fn vcpu_events_flags() {
    assert!(decode_vcpu_events(&events_with(|e| e.flags = 0x3f), true).is_ok());
    assert_eq!(
        decode_vcpu_events(&events_with(|e| e.flags = 0x40), true),
        Err(Error::UnknownFlags)
    );
    assert_eq!(
        decode_vcpu_events(
            &events_with(|e| e.flags = KVM_VCPUEVENT_VALID_PAYLOAD),
            false
        ),
        Err(Error::UnknownFlags)
    );
}

#[test]
fn vcpu_events_payload_normalisation() {
    let pending_with_payload = events_with(|e| {
        e.flags = KVM_VCPUEVENT_VALID_PAYLOAD;
        e.exception.pending = 1;
        e.exception.injected = 1;
        e.exception.nr = 14;
        e.exception_has_payload = 1;
        e.exception_payload = 0xdead_b000;
    });
    let events = decode_vcpu_events(&pending_with_payload, true).unwrap();
    assert_eq!(
        (events.exception.pending, events.exception.injected),
        (1, 0)
    );
    assert_eq!(events.exception_has_payload, 1);

    let injected = events_with(|e| {
        e.flags = KVM_VCPUEVENT_VALID_PAYLOAD;
        e.exception.injected = 1;
        e.exception.nr = 13;
        e.exception_has_payload = 1;
    });
    let events = decode_vcpu_events(&injected, true).unwrap();
    assert_eq!(
        (events.exception.injected, events.exception_has_payload),
        (1, 0)
    );

    let without_payload_flag = events_with(|e| {
        e.exception.pending = 1;
        e.exception.nr = 200;
        e.exception_has_payload = 1;
    });
    let events = decode_vcpu_events(&without_payload_flag, false).unwrap();
    assert_eq!(
        (events.exception.pending, events.exception_has_payload),
        (0, 0)
    );
}

#[test]
fn vcpu_events_exception_vectors() {
    for (nr, ok) in [
        (0, true),
        (14, true),
        (31, true),
        (2, false),
        (32, false),
        (255, false),
    ] {
        let events = events_with(|e| {
            e.exception.injected = 1;
            e.exception.nr = nr;
        });
        assert_eq!(
            decode_vcpu_events(&events, false).is_ok(),
            ok,
            "vector {nr}"
        );
    }
    // Not queued: the vector is not looked at.
    assert!(decode_vcpu_events(&events_with(|e| e.exception.nr = 2), false).is_ok());
}

// --- VM-wide ---------------------------------------------------------------

#[test]
fn clock_flags() {
    let clock = |flags| {
        bytes_of(&kvm_clock_data {
            clock: 123,
            flags,
            realtime: 456,
            ..kvm_clock_data::ZERO
        })
    };
    let decoded = decode_clock_data(&clock(KVM_CLOCK_REALTIME | KVM_CLOCK_TSC_STABLE)).unwrap();
    assert_eq!((decoded.clock, decoded.realtime), (123, 456));
    assert!(decode_clock_data(&clock(KVM_CLOCK_HOST_TSC)).is_ok());
    assert_eq!(decode_clock_data(&clock(1)), Err(Error::UnknownFlags));
    assert_eq!(decode_clock_data(&clock(1 << 4)), Err(Error::UnknownFlags));
}

#[test]
fn pit_config_ignores_unknown_bits() {
    let config = |flags| {
        bytes_of(&kvm_pit_config {
            flags,
            pad: [7; 15],
        })
    };
    assert_eq!(
        decode_pit_config(&config(KVM_PIT_SPEAKER_DUMMY | 0x100)),
        Ok(PitConfig {
            speaker_dummy: true
        })
    );
    assert_eq!(
        decode_pit_config(&config(0)),
        Ok(PitConfig {
            speaker_dummy: false
        })
    );
}

#[test]
fn tss_address_bound() {
    assert_eq!(decode_tss_addr(0xfffb_d000), Ok(0xfffb_d000));
    assert_eq!(decode_tss_addr(0xffff_d000), Ok(0xffff_d000));
    assert_eq!(decode_tss_addr(0xffff_d001), Err(Error::InvalidValue));
    assert_eq!(decode_tss_addr(1 << 32), Err(Error::InvalidValue));
    assert_eq!(decode_tsc_khz(0x1_0000_0001), 1);
}

#[test]
fn msi_and_coalesced_mmio() {
    let msi = |flags| {
        bytes_of(&kvm_msi {
            address_lo: 0xfee0_0000,
            data: 0x41,
            flags,
            ..kvm_msi::ZERO
        })
    };
    assert!(decode_msi(&msi(KVM_MSI_VALID_DEVID)).is_ok());
    assert_eq!(decode_msi(&msi(2)), Err(Error::UnknownFlags));
    let zone = |pio| {
        bytes_of(&kvm_coalesced_mmio_zone {
            addr: 0xa0000,
            size: 0x10000,
            pio,
        })
    };
    assert!(decode_coalesced_mmio_zone(&zone(0)).is_ok());
    assert!(decode_coalesced_mmio_zone(&zone(1)).is_ok());
    assert_eq!(
        decode_coalesced_mmio_zone(&zone(2)),
        Err(Error::InvalidValue)
    );
}

#[test]
fn signal_mask_length() {
    let mut bytes = bytes_of(&kvm_signal_mask { len: 8, sigset: [] });
    bytes.extend_from_slice(&(1u64 << 13).to_le_bytes());
    assert_eq!(decode_signal_mask(&bytes), Ok(1 << 13));
    assert_eq!(decode_signal_mask(&bytes[..11]), Err(Error::ShortBuffer));
    bytes[0] = 16;
    let error = decode_signal_mask(&bytes).unwrap_err();
    assert_eq!(error, Error::SignalMaskLength);
    assert_eq!(error.errno(), Errno::EINVAL);
}

// --- GSI routing -----------------------------------------------------------

fn route(gsi: u32, type_: u32, flags: u32, u: [u32; 8]) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_,
        flags,
        pad: 0,
        u,
    }
}

#[test]
fn gsi_routing_header() {
    let header = |nr, flags| {
        bytes_of(&kvm_irq_routing {
            nr,
            flags,
            entries: [],
        })
    };
    assert_eq!(decode_gsi_routing_header(&header(4096, 0)), Ok(4096));
    assert_eq!(
        decode_gsi_routing_header(&header(4097, 0)),
        Err(Error::TooManyRoutes)
    );
    assert_eq!(
        decode_gsi_routing_header(&header(1, 1)),
        Err(Error::UnknownFlags)
    );
}

#[test]
fn gsi_route_irqchip_pins() {
    let irqchip = |chip, pin| route(3, KVM_IRQ_ROUTING_IRQCHIP, 0, [chip, pin, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        decode_gsi_route(&irqchip(KVM_IRQCHIP_IOAPIC, 23)),
        Ok(GsiRoute::Irqchip {
            gsi: 3,
            irqchip: Irqchip::Ioapic,
            pin: 23
        })
    );
    assert!(decode_gsi_route(&irqchip(KVM_IRQCHIP_PIC_MASTER, 7)).is_ok());
    assert!(decode_gsi_route(&irqchip(KVM_IRQCHIP_PIC_SLAVE, 7)).is_ok());
    for (chip, pin) in [(0, 8), (1, 8), (2, 24), (3, 0)] {
        assert_eq!(
            decode_gsi_route(&irqchip(chip, pin)),
            Err(Error::InvalidValue),
            "chip {chip} pin {pin}"
        );
    }
}

#[test]
fn gsi_route_msi_and_flags() {
    let msi = route(
        40,
        KVM_IRQ_ROUTING_MSI,
        KVM_MSI_VALID_DEVID,
        [0xfee0_0000, 0, 0x4021, 9, 0, 0, 0, 0],
    );
    assert_eq!(
        decode_gsi_route(&msi),
        Ok(GsiRoute::Msi {
            gsi: 40,
            address_lo: 0xfee0_0000,
            address_hi: 0,
            data: 0x4021,
            devid: Some(9)
        })
    );
    let flagged_msi = route(40, KVM_IRQ_ROUTING_MSI, 2, [0; 8]);
    assert_eq!(decode_gsi_route(&flagged_msi), Err(Error::UnknownFlags));
    let flagged_irqchip = route(1, KVM_IRQ_ROUTING_IRQCHIP, KVM_MSI_VALID_DEVID, [0; 8]);
    assert_eq!(decode_gsi_route(&flagged_irqchip), Err(Error::UnknownFlags));
    for type_ in [
        0,
        KVM_IRQ_ROUTING_S390_ADAPTER,
        KVM_IRQ_ROUTING_HV_SINT,
        5,
        99,
    ] {
        assert_eq!(
            decode_gsi_route(&route(1, type_, 0, [0; 8])),
            Err(Error::InvalidValue)
        );
    }
    assert_eq!(
        decode_gsi_route(&route(4096, KVM_IRQ_ROUTING_MSI, 0, [0; 8])),
        Err(Error::TooManyRoutes)
    );
}

#[test]
fn gsi_routes_are_walked_in_order() {
    let mut bytes = Vec::new();
    for gsi in 0..3 {
        bytes.extend(bytes_of(&route(
            gsi,
            KVM_IRQ_ROUTING_IRQCHIP,
            0,
            [2, gsi, 0, 0, 0, 0, 0, 0],
        )));
    }
    let mut seen = Vec::new();
    for_each_gsi_route(&bytes, 3, |route| seen.push(route)).unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[2],
        GsiRoute::Irqchip {
            gsi: 2,
            irqchip: Irqchip::Ioapic,
            pin: 2
        }
    );
    assert_eq!(
        for_each_gsi_route(&bytes, 4, |_| {}),
        Err(Error::ShortBuffer)
    );
    bytes[48 + 4] = 9; // the second entry's type
    assert_eq!(
        for_each_gsi_route(&bytes, 3, |_| {}),
        Err(Error::InvalidValue)
    );
}

#[test]
fn irq_level_status_alias() {
    let mut level: kvm_irq_level = decode(&bytes_of(&kvm_irq_level { irq: 4, level: 1 })).unwrap();
    assert_eq!((level.irq, level.level), (4, 1));
    level.set_status(-1);
    assert_eq!(level.status(), -1);
    assert_eq!(level.irq, u32::MAX);
}
