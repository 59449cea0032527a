//! hv-core's PV ABI (`pv.rs`) driven by arbitrary sequences of guest and
//! host MSR writes and reads, hypercalls (with and without an in-kernel
//! irqchip of four vCPUs), entry hooks, preemption marks and guest
//! scribbles over the shared areas.  Shared by the `pv_abi` fuzz target
//! and its stable replay (hv-core/tests/pv_abi_corpus.rs).
//!
//! Checked, besides "no panic": every write stays within one page (the
//! `GuestRam` contract) and inside guest RAM (pages 1-3; page 0 and
//! everything above are not RAM, so writes there must fail and leave
//! nothing); a published time area is even; hypercall results are 0, a
//! small count or a negated `KVM_E*` code.
//!
//! Input: 8-byte operations, a kind byte and seven argument bytes.

#![allow(dead_code)]

use hv_core::irqchip::vm::{VcpuIrqchip, VmIrqchip};
use hv_core::msr::MsrOrigin;
use hv_core::paging::{AccessedDirtyUpdate, GuestMemory, MemoryError, PageTableWrite};
use hv_core::pv::{self, ClockReference, PvState};
use hv_core::pvrs_abi::hypercall::{KVM_EFAULT, KVM_EINVAL, KVM_ENOSYS, KVM_EOPNOTSUPP, KVM_EPERM};
use hv_core::vcpu::GuestRam;

const PAGE: u64 = 4096;
/// Guest RAM is GPA 0x1000-0x3fff.
const RAM_START: u64 = PAGE;
const RAM_END: u64 = 4 * PAGE;

struct FuzzRam {
    bytes: Vec<u8>,
}

impl FuzzRam {
    fn slot(&self, gpa: u64, len: usize) -> Result<std::ops::Range<usize>, MemoryError> {
        let end = gpa.checked_add(len as u64).ok_or(MemoryError::Unmapped)?;
        if gpa < RAM_START || end > RAM_END {
            return Err(MemoryError::Unmapped);
        }
        Ok((gpa - RAM_START) as usize..(end - RAM_START) as usize)
    }
}

impl GuestMemory for FuzzRam {
    fn read_u32(&mut self, _: u64) -> Result<u32, MemoryError> {
        panic!("pv.rs reads through read_bytes, which keeps to one page")
    }
    fn read_u64(&mut self, _: u64) -> Result<u64, MemoryError> {
        panic!("pv.rs reads through read_bytes, which keeps to one page")
    }
    fn read_bytes(&mut self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        assert!(
            gpa % PAGE + buffer.len() as u64 <= PAGE,
            "read crosses a page: {gpa:#x}"
        );
        let slot = self.slot(gpa, buffer.len())?;
        buffer.copy_from_slice(&self.bytes[slot]);
        Ok(())
    }
}

impl PageTableWrite for FuzzRam {
    fn set_entry_bits(&mut self, _: &AccessedDirtyUpdate) -> Result<bool, MemoryError> {
        panic!("pv.rs walks no page tables")
    }
}

impl GuestRam for FuzzRam {
    fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        assert!(
            gpa % PAGE + bytes.len() as u64 <= PAGE,
            "write crosses a page: {gpa:#x}"
        );
        let slot = self.slot(gpa, bytes.len())?;
        self.bytes[slot].copy_from_slice(bytes);
        Ok(())
    }
}

/// A GPA near guest RAM (often inside, sometimes just outside or at a page
/// edge), or any 64-bit value.
fn value(args: &[u8; 7]) -> u64 {
    let wide = u64::from_le_bytes([
        args[1], args[2], args[3], args[4], args[5], args[6], args[1], args[2],
    ]);
    match args[0] % 4 {
        0 => wide,
        1 => {
            let offset = u64::from(u16::from_le_bytes([args[2], args[3]])) % PAGE;
            (u64::from(args[1] % 6) * PAGE + offset) | u64::from(args[4] & 1)
        }
        2 => {
            (u64::from(args[1] % 6) * PAGE).wrapping_sub(u64::from(args[2] % 64))
                | u64::from(args[3] & 1)
        }
        _ => {
            (u64::from(args[1] % 4) * PAGE + u64::from(args[2] % 64) * 64)
                | u64::from(args[3] & 0x3f)
        }
    }
}

fn reference(args: &[u8; 7]) -> ClockReference {
    ClockReference {
        guest_tsc: u64::from_le_bytes([args[0], args[1], args[2], args[3], 0, args[4], 0, 0]),
        kvmclock_ns: u64::from(u32::from_le_bytes([args[3], args[4], args[5], args[6]])) << 8,
        tsc_khz: [0, 1, 1_000_000, 3_700_000, u32::MAX][usize::from(args[5] % 5)],
        tsc_stable: args[6] & 1 != 0,
        wall_clock_ns: u64::from_le_bytes([
            args[6], args[5], args[4], args[3], args[2], args[1], args[0], 0x17,
        ]),
    }
}

fn check_result(result: i64) {
    let errors = [
        KVM_EFAULT,
        KVM_EINVAL,
        KVM_ENOSYS,
        KVM_EOPNOTSUPP,
        KVM_EPERM,
    ];
    assert!(
        (0..=4).contains(&result) || errors.iter().any(|&error| result == -error),
        "hypercall result {result}"
    );
}

pub fn run(data: &[u8]) {
    let mut ram = FuzzRam {
        bytes: vec![0; (RAM_END - RAM_START) as usize],
    };
    let mut state = PvState::new();
    let mut chip = Box::new(VmIrqchip::<4>::default());
    for vcpu in 0..4 {
        chip.add_vcpu(vcpu, false).unwrap();
        let _ = chip.mmio_write(vcpu, 0, 0xfee0_00f0, &0x1ffu32.to_le_bytes());
    }
    for op in data.chunks_exact(8) {
        let args: [u8; 7] = op[1..].try_into().unwrap();
        let reference = reference(&args);
        match op[0] % 9 {
            kind @ (0 | 1) => {
                let msr = pv::PV_MSRS
                    .get(usize::from(args[6] % 7))
                    .copied()
                    .unwrap_or(0x4b56_4d05);
                let origin = if kind == 0 {
                    MsrOrigin::Guest
                } else {
                    MsrOrigin::Host
                };
                let value = value(&args);
                if pv::write_msr(&mut state, &mut ram, msr, value, &reference, origin).is_ok() {
                    assert_eq!(pv::read_msr(&state, msr), Ok(value));
                }
            }
            2 => {
                let msr = pv::PV_MSRS
                    .get(usize::from(args[0] % 7))
                    .copied()
                    .unwrap_or(0x11 + 0x100);
                let _ = pv::read_msr(&state, msr);
            }
            3 => {
                let delta = u64::from(u16::from_le_bytes([args[0], args[1]])) << (args[2] % 50);
                let published =
                    pv::before_entry(&mut state, &mut ram, &reference, delta, args[3] & 1 != 0);
                // The steal area, updated after the clock, may overlap the
                // time area (the guest's choice); only then can the
                // version read back differ.
                if published.clock_published && !state.steal_time_enabled() {
                    assert_eq!(state.pvclock_version() % 2, 0);
                    let area = pv::read_msr(&state, 0x4b56_4d01).unwrap() & !1;
                    let mut version = [0; 4];
                    ram.read_bytes(area, &mut version).unwrap();
                    let version = u32::from_le_bytes(version);
                    assert_eq!(version, state.pvclock_version());
                }
            }
            4 => {
                let _ = pv::mark_preempted(&mut state, &mut ram);
            }
            kind @ (5 | 6) => {
                let registers = [
                    u64::from(args[0] % 14),
                    value(&args),
                    value(&[
                        args[1], args[2], args[3], args[4], args[5], args[6], args[0],
                    ]),
                    u64::from(args[5]) << (args[6] % 40),
                    u64::from(u16::from_le_bytes([args[6], args[2]])) << (args[3] % 20),
                ];
                let long_mode = args[4] & 1 != 0;
                let cpl = if args[4] & 0x6 == 0x6 { 3 } else { 0 };
                let call = pv::decode_hypercall(
                    registers[0],
                    registers[1],
                    registers[2],
                    registers[3],
                    registers[4],
                    cpl,
                    long_mode,
                );
                let result = if kind == 5 {
                    let mut view =
                        VcpuIrqchip::new(&mut chip, usize::from(args[5] % 4), 0, 1_000_000);
                    let result = pv::handle_hypercall(
                        &mut state,
                        &mut ram,
                        &call,
                        &reference,
                        Some(&mut view),
                    );
                    assert_eq!(
                        view.effects.kick & !0xf,
                        0,
                        "kick of a vCPU that does not exist"
                    );
                    result
                } else {
                    pv::handle_hypercall(&mut state, &mut ram, &call, &reference, None)
                };
                check_result(result);
                let register = pv::hypercall_result(result, long_mode);
                assert!(long_mode || register <= u64::from(u32::MAX));
                if args[6] & 1 != 0 {
                    chip.clear_pv_unhalt(usize::from(args[5] % 4));
                }
            }
            7 => {
                // The guest scribbles over its own memory (versions, flags).
                let gpa = RAM_START
                    + u64::from(u16::from_le_bytes([args[0], args[1]])) % (RAM_END - RAM_START - 4);
                let _ = ram.write_bytes(gpa & !3, &[args[2], args[3], args[4], args[5]]);
            }
            _ => {
                let result =
                    pv::clock_pairing(&mut ram, value(&args), u64::from(args[6] % 2), &reference);
                check_result(result);
            }
        }
    }
}
