//! The driver shared by the `vcpu_exit` fuzz target and
//! `tests/vcpu_exit.rs`: hv-core's vCPU exit handler (`vcpu.rs`) on the
//! real `SvmVcpu` with arbitrary exit codes and exit information, guest
//! registers and modes, guest memory and memslot layout, then the
//! completion with arbitrary bytes in the run and PIO pages, then a
//! second exit.  Nothing may panic, and every exit to userspace must fit
//! the run page.
//!
//! Input: a [`HEADER`]-byte header (registers at 0-63, RIP at
//! [`RIP_OFFSET`], RFLAGS, CR3, CS base and limit, CR0's high bits and
//! the memslot end up to 119, the exit at 120-151, modes and flags at
//! 160-168), then the guest memory, which repeats every `len` bytes
//! below 4 GiB (so random page-table pointers land in it) and is
//! unmapped above; the completion bytes are taken from the memory's
//! start.

#![allow(dead_code)]

use hv_core::kvm_api::run;
use hv_core::paging::{AccessedDirtyUpdate, GuestMemory, MemoryError, PageTableWrite};
use hv_core::svm::{SvmFeatures, SvmVcpu, VmcbAddresses};
use hv_core::vcpu::{
    complete_user_exit, handle_exit, write_user_exit, Backing, GuestRam, HostState, MemoryMap,
    Step, VcpuState,
};
use hv_core::vendor::{Gpr, Segment, SegmentRegister, VendorVcpu};

pub const HEADER: usize = 176;
/// Where RIP is in the header (little-endian).
pub const RIP_OFFSET: usize = 64;

struct WrappingRam<'a> {
    bytes: &'a mut [u8],
}

impl WrappingRam<'_> {
    fn index(&self, gpa: u64) -> Result<usize, MemoryError> {
        if gpa >= 1 << 32 || self.bytes.is_empty() {
            return Err(MemoryError::Unmapped);
        }
        Ok((gpa % self.bytes.len() as u64) as usize)
    }
}

impl GuestMemory for WrappingRam<'_> {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError> {
        let mut bytes = [0; 4];
        self.read_bytes(gpa, &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0; 8];
        self.read_bytes(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
    fn read_bytes(&mut self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        for (offset, byte) in buffer.iter_mut().enumerate() {
            *byte = self.bytes[self.index(gpa.wrapping_add(offset as u64))?];
        }
        Ok(())
    }
}

impl PageTableWrite for WrappingRam<'_> {
    fn set_entry_bits(&mut self, update: &AccessedDirtyUpdate) -> Result<bool, MemoryError> {
        let current = self.read_u64(update.entry_gpa)?;
        if current != update.old_value {
            return Ok(false);
        }
        self.write_bytes(update.entry_gpa, &(current | update.set_bits).to_le_bytes())?;
        Ok(true)
    }
}

impl GuestRam for WrappingRam<'_> {
    fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        for (offset, byte) in bytes.iter().enumerate() {
            let index = self.index(gpa.wrapping_add(offset as u64))?;
            self.bytes[index] = *byte;
        }
        Ok(())
    }
}

struct Map {
    ram_end: u64,
    read_only_page: u64,
}

impl MemoryMap for Map {
    fn backing(&self, gpa: u64) -> Backing {
        if gpa >= self.ram_end {
            Backing::Unbacked
        } else {
            Backing::Ram {
                writable: gpa >> 12 != self.read_only_page,
            }
        }
    }
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(value)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u64_at(bytes, offset) as u32
}

/// Exit codes worth hitting often; other values are taken as they are.
const CODES: [u32; 16] = [
    0x400, // NPF
    0x07b, // IOIO
    0x072, // CPUID
    0x07c, // MSR
    0x078, // HLT
    0x081, // VMMCALL
    0x07f, // SHUTDOWN
    0xffff_ffff,
    0x064, // VINTR
    0x060, // INTR
    0x06e, // RDTSC
    0x06f, // RDPMC
    0x08d, // XSETBV
    0x080, // VMRUN
    0x04e, // #PF
    0x052, // #MC
];

fn set_exit(vcpu: &mut SvmVcpu, header: &[u8], offset: usize) {
    let selector = header[offset];
    let code = if selector & 0x80 == 0 {
        CODES[usize::from(selector) % CODES.len()]
    } else {
        u32_at(header, offset + 1)
    };
    let control = &mut vcpu.vmcb.control;
    control.exit_code = code;
    control.exit_code_hi = if selector & 0x40 != 0 {
        u32_at(header, offset + 5)
    } else {
        0
    };
    control.exit_info_1 = u64_at(header, offset + 8);
    control.exit_info_2 = u64_at(header, offset + 16);
    control.exit_int_info = if selector & 0x20 != 0 {
        u32_at(header, offset + 24)
    } else {
        0
    };
    control.exit_int_info_err = u32_at(header, offset + 28);
}

fn check_exit(vcpu: &SvmVcpu, state: &VcpuState, step: &Step) {
    if let Step::ToUser(exit) = step {
        let mut run_page = vec![0u8; run::KVM_RUN_SIZE];
        let mut pio_page = vec![0u8; 4096];
        write_user_exit(vcpu, state, exit, &mut run_page, &mut pio_page)
            .expect("every exit fits the run page");
    }
}

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    if data.len() < HEADER {
        return;
    }
    let (header, memory) = data.split_at(HEADER);
    let mut memory = memory.to_vec();
    let mut vcpu = Box::new(SvmVcpu::new(SvmFeatures::TCG, VmcbAddresses::default()));
    let mut state = Box::new(VcpuState::new());

    // Bytes 0-63: RAX, RCX, RDX, RSI, RDI, R8, RSP and RBX.
    for (slot, register) in [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::Rsp,
        Gpr::Rbx,
    ]
    .iter()
    .enumerate()
    {
        vcpu.set_gpr(*register, u64_at(header, 8 * slot));
    }
    // Bytes 64-119: RIP, RFLAGS, CR3, CS base and limit, CR0's high bits,
    // the memslot end; bytes 160-168: modes and flags.
    vcpu.set_rip(
        u64_at(header, RIP_OFFSET)
            & if header[160] & 1 != 0 {
                0xffff
            } else {
                u64::MAX
            },
    );
    vcpu.set_rflags(u64_at(header, 72));
    vcpu.set_cr3(u64_at(header, 80));
    let mode = header[161];
    let (cr0, cr4, efer) = match mode % 6 {
        0 => (0x10, 0, 0),                           // real mode
        1 => (0x11, 0, 0),                           // protected, unpaged
        2 => (0x8000_0011, 0, 0),                    // 32-bit paging
        3 => (0x8000_0011, 1 << 5, 0),               // PAE
        4 => (0x8001_0033, 1 << 5, 0x500),           // 4-level
        _ => (0x8001_0033, 1 << 5 | 1 << 12, 0x500), // 5-level
    };
    vcpu.set_cr0(cr0 | u64_at(header, 104) & 0xffff_0000_0000_0000);
    vcpu.set_cr4(cr4 | (u64::from(header[162]) << 16));
    vcpu.set_efer(efer | u64::from(header[163] & 0x8) << 8);
    vcpu.set_segment(
        SegmentRegister::Cs,
        Segment {
            selector: 8,
            attributes: u16::from_le_bytes([header[164], header[165]]),
            limit: u32_at(header, 96),
            base: if mode & 0x80 != 0 {
                u64_at(header, 88)
            } else {
                0
            },
        },
    );
    let mut ss = vcpu.segment(SegmentRegister::Ss);
    ss.attributes |= u16::from(header[166] & 3) << 5;
    vcpu.set_segment(SegmentRegister::Ss, ss);
    let map = Map {
        ram_end: match header[167] % 4 {
            0 => 0,
            1 => 1 << 20,
            2 => 1 << 32,
            _ => u64_at(header, 112),
        },
        read_only_page: u64::from(header[168]),
    };
    let host = HostState {
        tsc: 1 << 40,
        cpu: 1,
        // x87, SSE, AVX.
        xcr0_mask: 0b111,
        ..HostState::default()
    };

    // Bytes 120-151: the first exit.
    set_exit(&mut vcpu, header, 120);
    let step = {
        let mut ram = WrappingRam { bytes: &mut memory };
        handle_exit(&mut *vcpu, &mut state, &mut ram, &map, host)
    };
    check_exit(&vcpu, &state, &step);

    // Userspace completes with whatever the memory's start holds.
    let completion_length = memory.len().min(run::KVM_RUN_SIZE + 64);
    let completion = memory[..completion_length].to_vec();
    let pio = completion
        .get(..completion.len().min(4096))
        .unwrap_or(&[])
        .to_vec();
    let completed = {
        let mut ram = WrappingRam { bytes: &mut memory };
        complete_user_exit(&mut *vcpu, &mut state, &mut ram, &map, &completion, &pio)
    };
    if let Ok(step) = completed {
        check_exit(&vcpu, &state, &step);
    }

    // The guest runs again and exits with the same information.
    vcpu.complete_exit();
    let step = {
        let mut ram = WrappingRam { bytes: &mut memory };
        handle_exit(&mut *vcpu, &mut state, &mut ram, &map, host)
    };
    check_exit(&vcpu, &state, &step);
}
