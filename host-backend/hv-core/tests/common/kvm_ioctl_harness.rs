//! The body of the `kvm_ioctl` fuzz target (host-backend/fuzz), shared
//! with `tests/kvm_ioctl_corpus.rs`, which replays the corpus on stable.
//!
//! Input: byte 0 picks the file kind (`% 3`), byte 1 the command (below
//! 0xf0: entry `% len` of the ioctl table; else the raw `u32` of bytes
//! 2-5), bytes 6-13 the `arg` value, bytes 14-15 option bits for the
//! decoders, and the rest is the argument buffer the module copied.  The
//! command goes through `classify` and then through every decoder that
//! matches it; the run page writers and readers get the same bytes.
//! Nothing may panic, every error must map to an errno KVM uses, and where
//! a decoder has an encoder, encoding what it decoded and decoding again
//! must give the same value (and, for plain structs, the same bytes).

use hv_core::kvm_api::constants::{KVM_SYNC_X86_VALID_FIELDS, PAGE_SIZE};
use hv_core::kvm_api::decode::{self, CapTarget, CpuidCall, MemoryRegionVersion};
use hv_core::kvm_api::errno::{Errno, Error};
use hv_core::kvm_api::ioctl::{self, Argument, FdKind, Ioctl, IOCTLS};
use hv_core::kvm_api::layout::*;
use hv_core::kvm_api::run::{self, Exit, ExitState, IoDirection};
use hv_core::kvm_api::wire::Wire;

/// Reads a little-endian integer at `offset`, 0 past the end.
fn le(data: &[u8], offset: usize, width: usize) -> u64 {
    let mut value = 0u64;
    for index in (0..width).rev() {
        value = value << 8 | u64::from(data.get(offset + index).copied().unwrap_or(0));
    }
    value
}

/// The errno values KVM's ioctls return for argument problems.
fn check_errno(error: Error) {
    let errno = error.errno();
    assert!(
        matches!(
            errno,
            Errno::EINVAL | Errno::EFAULT | Errno::E2BIG | Errno::ENOTTY
        ),
        "{error:?} maps to {errno:?}"
    );
}

/// `decode` then `encode` gives back the input bytes, and decoding those
/// gives the same value.
fn plain_round_trip<T: Wire + PartialEq + core::fmt::Debug>(bytes: &[u8]) {
    match decode::decode::<T>(bytes) {
        Ok(value) => {
            let mut out = vec![0u8; T::SIZE];
            assert_eq!(decode::encode(&value, &mut out), Ok(T::SIZE));
            assert_eq!(out[..], bytes[..T::SIZE], "{}", core::any::type_name::<T>());
            assert_eq!(decode::decode::<T>(&out), Ok(value));
        }
        Err(error) => {
            assert_eq!(error, Error::ShortBuffer);
            assert!(bytes.len() < T::SIZE);
        }
    }
}

/// A validated decoder whose accepted values are accepted again after
/// encoding, unchanged.
fn validated_round_trip<T: Wire + PartialEq + core::fmt::Debug>(
    bytes: &[u8],
    decoder: impl Fn(&[u8]) -> Result<T, Error>,
) {
    match decoder(bytes) {
        Ok(value) => {
            let mut out = vec![0u8; T::SIZE];
            decode::encode(&value, &mut out).unwrap();
            assert_eq!(decoder(&out), Ok(value), "{}", core::any::type_name::<T>());
        }
        Err(error) => check_errno(error),
    }
}

fn check<T>(result: Result<T, Error>) -> Option<T> {
    result.map_err(check_errno).ok()
}

fn decode_argument(ioctl: Ioctl, fd: FdKind, options: u16, bytes: &[u8]) {
    let flag = |bit: u16| options & (1 << bit) != 0;
    let sregs_limits = decode::SregsLimits {
        max_phys_addr_bits: (options >> 8) as u8,
        cr4_reserved: u64::from(options).rotate_left(12),
        efer_reserved: !u64::from(options),
    };
    match ioctl {
        Ioctl::SetRegs | Ioctl::GetRegs => {
            plain_round_trip::<kvm_regs>(bytes);
            validated_round_trip(bytes, decode::decode_regs);
        }
        Ioctl::SetSregs | Ioctl::GetSregs => {
            plain_round_trip::<kvm_sregs>(bytes);
            validated_round_trip(bytes, |b| decode::decode_sregs(b, &sregs_limits));
        }
        Ioctl::SetFpu | Ioctl::GetFpu => plain_round_trip::<kvm_fpu>(bytes),
        Ioctl::SetLapic | Ioctl::GetLapic => plain_round_trip::<kvm_lapic_state>(bytes),
        Ioctl::SetIrqchip | Ioctl::GetIrqchip => plain_round_trip::<kvm_irqchip>(bytes),
        Ioctl::SetPit2 | Ioctl::GetPit2 => {
            plain_round_trip::<hv_core::irqchip::pit::PitState2>(bytes)
        }
        Ioctl::IrqLine | Ioctl::IrqLineStatus => plain_round_trip::<kvm_irq_level>(bytes),
        Ioctl::GetDirtyLog => plain_round_trip::<kvm_dirty_log>(bytes),
        Ioctl::SetIdentityMapAddr => plain_round_trip::<u64>(bytes),
        Ioctl::SetDebugregs | Ioctl::GetDebugregs => {
            validated_round_trip(bytes, decode::decode_debugregs)
        }
        Ioctl::SetVcpuEvents | Ioctl::GetVcpuEvents => {
            validated_round_trip(bytes, |b| decode::decode_vcpu_events(b, flag(0)))
        }
        Ioctl::SetClock | Ioctl::GetClock => validated_round_trip(bytes, decode::decode_clock_data),
        Ioctl::SignalMsi => validated_round_trip(bytes, decode::decode_msi),
        Ioctl::RegisterCoalescedMmio | Ioctl::UnregisterCoalescedMmio => {
            validated_round_trip(bytes, decode::decode_coalesced_mmio_zone)
        }
        Ioctl::SetXcrs | Ioctl::GetXcrs => {
            let supported = u64::from(options) << 1 | 1;
            if let Some(Some(xcr0)) = check(decode::decode_xcrs(bytes, supported)) {
                assert!(decode::is_valid_xcr0(xcr0, supported));
            }
        }
        Ioctl::SetMpState | Ioctl::GetMpState => {
            if let Some(state) = check(decode::decode_mp_state(bytes, flag(1))) {
                let raw = kvm_mp_state {
                    mp_state: state.to_raw(),
                };
                let mut out = [0u8; 4];
                decode::encode(&raw, &mut out).unwrap();
                assert_eq!(decode::decode_mp_state(&out, flag(1)), Ok(state));
            }
        }
        Ioctl::Interrupt => {
            if let Some(vector) = check(decode::decode_interrupt(bytes)) {
                assert_eq!(u64::from(vector), le(bytes, 0, 4));
            }
        }
        Ioctl::SetUserMemoryRegion | Ioctl::SetUserMemoryRegion2 => {
            let version = if ioctl == Ioctl::SetUserMemoryRegion {
                MemoryRegionVersion::V1
            } else {
                MemoryRegionVersion::V2
            };
            let support = decode::MemoryRegionSupport {
                readonly: flag(2),
                guest_memfd: flag(3),
            };
            if let Some(region) = check(decode::decode_memory_region(version, bytes, support)) {
                assert!(u32::from(region.slot) < 32764);
                assert!(!(region.flags.guest_memfd && region.flags.readonly));
            }
        }
        Ioctl::Irqfd => {
            check(decode::decode_irqfd(bytes));
        }
        Ioctl::Ioeventfd => {
            if let Some(decode::IoeventfdRequest::Assign(assign)) =
                check(decode::decode_ioeventfd(bytes))
            {
                assert!(matches!(assign.length, 0 | 1 | 2 | 4 | 8));
                assert!(assign.addr.checked_add(u64::from(assign.length)).is_some());
            }
        }
        Ioctl::EnableCap => {
            let target = if fd == FdKind::Vm {
                CapTarget::Vm
            } else {
                CapTarget::Vcpu
            };
            check(decode::decode_enable_cap(target, bytes));
        }
        Ioctl::CreatePit2 => {
            check(decode::decode_pit_config(bytes));
        }
        Ioctl::SetSignalMask => {
            check(decode::decode_signal_mask(bytes));
        }
        Ioctl::SetCpuid2
        | Ioctl::GetCpuid2
        | Ioctl::GetSupportedCpuid
        | Ioctl::GetEmulatedCpuid
        | Ioctl::GetSupportedHvCpuid => cpuid(ioctl, bytes),
        Ioctl::GetMsrs | Ioctl::SetMsrs => {
            if let Some(nmsrs) = check(decode::decode_msrs_header(bytes)) {
                assert!(nmsrs < 256);
                let rest = bytes.get(8..).unwrap_or(&[]);
                if let Some(entries) = check(decode::entries::<kvm_msr_entry>(rest, nmsrs)) {
                    assert_eq!(entries.count(), nmsrs as usize);
                }
            }
        }
        Ioctl::GetMsrIndexList | Ioctl::GetMsrFeatureIndexList => msr_list(bytes),
        Ioctl::SetGsiRouting => {
            if let Some(nr) = check(decode::decode_gsi_routing_header(bytes)) {
                let rest = bytes.get(8..).unwrap_or(&[]);
                let mut seen = 0;
                if check(decode::for_each_gsi_route(rest, nr, |_| seen += 1)).is_some() {
                    assert_eq!(seen, nr);
                }
            }
        }
        Ioctl::GetApiVersion
        | Ioctl::CreateVm
        | Ioctl::CheckExtension
        | Ioctl::GetVcpuMmapSize
        | Ioctl::CreateVcpu
        | Ioctl::SetTssAddr
        | Ioctl::CreateIrqchip
        | Ioctl::SetTscKhz
        | Ioctl::GetTscKhz
        | Ioctl::Run
        | Ioctl::Nmi
        | Ioctl::KvmclockCtrl => {}
    }
}

fn cpuid(ioctl: Ioctl, bytes: &[u8]) {
    let call = match ioctl {
        Ioctl::SetCpuid2 => CpuidCall::Set,
        Ioctl::GetCpuid2 => CpuidCall::GetVcpu,
        _ => CpuidCall::GetSupported,
    };
    let Some(count) = check(decode::decode_cpuid2_header(call, bytes)) else {
        return;
    };
    if call != CpuidCall::GetVcpu {
        assert!(count <= 256);
    }
    let rest = bytes.get(8..).unwrap_or(&[]);
    let Some(entries) = check(decode::entries::<kvm_cpuid_entry2>(rest, count)) else {
        return;
    };
    let answer: Vec<kvm_cpuid_entry2> = entries.collect();
    if ioctl == Ioctl::GetEmulatedCpuid {
        check(decode::check_emulated_cpuid_padding(rest, count));
    }
    let room = count / 2 + (count & 1);
    let mut out = vec![0u8; 8 + 40 * answer.len()];
    match decode::encode_cpuid2(room, &answer, &mut out) {
        Ok(length) => {
            assert_eq!(length, out.len());
            assert_eq!(
                decode::decode_cpuid2_header(CpuidCall::GetVcpu, &out),
                Ok(answer.len() as u32)
            );
            let again: Vec<kvm_cpuid_entry2> = decode::entries(&out[8..], answer.len() as u32)
                .unwrap()
                .collect();
            assert_eq!(again, answer);
        }
        Err(error) => {
            assert_eq!(error, Error::OutputTooLarge);
            assert!(answer.len() as u32 > room);
        }
    }
}

fn msr_list(bytes: &[u8]) {
    let Some(room) = check(decode::decode_msr_list_header(bytes)) else {
        return;
    };
    let indices: Vec<u32> = bytes
        .get(4..)
        .unwrap_or(&[])
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes(chunk.try_into().unwrap()))
        .take(300)
        .collect();
    let mut out = vec![0u8; 4 + 4 * indices.len()];
    let result = decode::encode_msr_list(room, &indices, &mut out);
    // The count is written whether or not the indices fit.
    assert_eq!(
        decode::decode_msr_list_header(&out),
        Ok(indices.len() as u32)
    );
    match result {
        Ok(length) => assert_eq!(length, out.len()),
        Err(error) => {
            assert_eq!(error, Error::OutputTooLarge);
            assert!(indices.len() as u32 > room);
        }
    }
}

/// An exit built from the input, written, and read back.
fn run_page(options: u16, bytes: &[u8]) {
    let mut run_page = vec![0u8; PAGE_SIZE];
    let mut pio_page = vec![0u8; PAGE_SIZE];
    let state = ExitState {
        if_flag: options & 1 != 0,
        cr8: le(bytes, 0, 1),
        apic_base: le(bytes, 1, 8),
        ready_for_interrupt_injection: options & 2 != 0,
        flags: options >> 2,
    };
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap()))
        .take(usize::from(options >> 11))
        .collect();
    let size = bytes.first().copied().unwrap_or(0) % 9;
    let count = le(bytes, 1, 2) as u32;
    let data_length = usize::from(size) * count as usize;
    let payload = bytes.get(3..).unwrap_or(&[]);
    let out_data = payload.get(..data_length.min(payload.len())).unwrap_or(&[]);
    let insn_length = usize::from(options >> 8 & 0x1f);
    let insn = payload.get(..insn_length.min(payload.len()));
    let exit = match options % 11 {
        0 => Exit::Io {
            direction: if options & 0x10 != 0 {
                IoDirection::Out
            } else {
                IoDirection::In
            },
            size,
            port: le(bytes, 3, 2) as u16,
            count,
            data: out_data,
        },
        1 => Exit::Mmio {
            phys_addr: le(bytes, 0, 8),
            len: u32::from(size),
            write: (options & 0x10 != 0).then_some(out_data),
        },
        2 => Exit::Hlt,
        3 => Exit::Shutdown,
        4 => Exit::IrqWindowOpen,
        5 => Exit::Intr,
        6 => Exit::FailEntry {
            hardware_entry_failure_reason: le(bytes, 0, 8),
            cpu: le(bytes, 8, 4) as u32,
        },
        7 => Exit::InternalError {
            suberror: le(bytes, 0, 4) as u32,
            data: &words,
        },
        8 => Exit::EmulationFailure { insn, data: &words },
        9 => Exit::SystemEvent {
            type_: le(bytes, 0, 4) as u32,
            data: &words,
        },
        _ => Exit::Unknown {
            hardware_exit_reason: le(bytes, 0, 8),
        },
    };
    match run::write_exit(&mut run_page, &mut pio_page, &state, &exit) {
        Ok(()) => {
            assert_eq!(le(&run_page, run::EXIT_REASON, 4), u64::from(exit.reason()));
            assert_eq!(le(&run_page, run::APIC_BASE, 8), state.apic_base);
            match exit {
                Exit::Io {
                    direction: IoDirection::Out,
                    data,
                    ..
                } => assert_eq!(&pio_page[..data.len()], data),
                Exit::Io {
                    direction: IoDirection::In,
                    size,
                    count,
                    ..
                } => {
                    let data = run::read_pio_in_data(&pio_page, size, count).unwrap();
                    assert!(data.iter().all(|&byte| byte == 0));
                }
                Exit::Mmio { len, write, .. } => {
                    let back = run::read_mmio_completion(&run_page, len).unwrap();
                    if let Some(written) = write {
                        assert_eq!(&back[..written.len()], written);
                    }
                }
                Exit::InternalError { data, .. } | Exit::SystemEvent { data, .. } => {
                    assert_eq!(le(&run_page, run::INTERNAL_NDATA, 4), data.len() as u64)
                }
                _ => {}
            }
        }
        Err(error) => assert_eq!(error, Error::ExitDoesNotFit),
    }

    // The request fields, from the input as if userspace wrote them.
    let mut request_page = vec![0u8; PAGE_SIZE];
    let copied = bytes.len().min(PAGE_SIZE);
    request_page[..copied].copy_from_slice(&bytes[..copied]);
    let supported = if options & 4 != 0 {
        KVM_SYNC_X86_VALID_FIELDS
    } else {
        0
    };
    if let Some(request) = check(run::read_run_request(
        &request_page,
        supported,
        options & 8 != 0,
    )) {
        assert_eq!(request.kvm_dirty_regs & !supported, 0);
        if options & 8 == 0 {
            assert!(request.cr8 <= 15);
        }
    }
    check(run::read_sync_regs(&request_page));
}

pub fn run(data: &[u8]) {
    let fd = match data.first().copied().unwrap_or(0) % 3 {
        0 => FdKind::System,
        1 => FdKind::Vm,
        _ => FdKind::Vcpu,
    };
    let selector = data.get(1).copied().unwrap_or(0);
    let command = if selector < 0xf0 {
        IOCTLS[usize::from(selector) % IOCTLS.len()].command
    } else {
        le(data, 2, 4) as u32
    };
    let arg = le(data, 6, 8);
    let options = le(data, 14, 2) as u16;
    let bytes = data.get(16..).unwrap_or(&[]);

    match ioctl::classify(fd, command) {
        Ok(request) => {
            let info = ioctl::info(request.ioctl).unwrap();
            assert_eq!(info.command, command);
            assert!(info.fds.contains(fd));
            match ioctl::check_zero_argument(request.argument, arg) {
                Ok(()) => assert!(request.argument != Argument::MustBeZero || arg == 0),
                Err(error) => assert_eq!(error.errno(), Errno::EINVAL),
            }
            if let Argument::Array(array) = request.argument {
                let _ = decode::array_bytes(array.header_size, array.entry_size, arg as u32);
            }
            decode_argument(request.ioctl, fd, options, bytes);
        }
        Err(error) => {
            assert_eq!(error, Error::UnknownIoctl(fd));
            assert_eq!(error.errno(), ioctl::unknown_ioctl_errno(fd));
        }
    }
    assert_eq!(decode::decode_tss_addr(arg).is_ok(), arg <= 0xffff_d000);
    run_page(options, bytes);
}
