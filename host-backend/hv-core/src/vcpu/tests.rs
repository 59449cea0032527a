//! The exit handler on the real `SvmVcpu` with synthetic exit codes, so
//! that the SVM exit decoding, EXITINTINFO and RIP handling are the ones
//! the kernel runs; guest memory is a byte vector.

use super::*;
use crate::cpuid::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
use crate::kvm_api::constants::{KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION};
use crate::msr::{EFER_LME, MSR_LSTAR};
use crate::paging::AccessedDirtyUpdate;
use crate::svm::event::{SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_VALID};
use crate::svm::exit::*;
use crate::svm::vmcb::*;
use crate::svm::{SvmFeatures, SvmVcpu, VmcbAddresses};
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

pub(crate) const RAM_SIZE: u64 = 4 << 20;
const MMIO: u64 = 0xfee0_0000;
const CODE: u64 = 0x10_0000;
/// Linear 0x40_0000 maps GPA 0x4000_0000, which no slot backs.
const UNMAPPED_CODE: u64 = 0x40_0000;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD_LOW: u64 = 0x3000;
const PD_HIGH: u64 = 0x4000;
const P: u64 = 1;
/// Writable and user-accessible (the user-mode test runs the same code).
const RW: u64 = 2 | 4;
const PS: u64 = 1 << 7;
/// x87, SSE and AVX, as a host kernel with AVX but no AVX-512 enables.
const HOST_XCR0: u64 = 0b111;
const HOST: HostState = HostState {
    tsc: 5000,
    cpu: 3,
    xcr0_mask: HOST_XCR0,
    kvmclock_ns: 0,
    tsc_khz: 0,
    tsc_stable: false,
    wall_clock_ns: 0,
};

/// RAM from 0 to `RAM_SIZE` (also under `pv.rs`'s write log).
pub(crate) struct TestRam {
    bytes: Vec<u8>,
}

impl TestRam {
    pub(crate) fn new() -> Self {
        Self {
            bytes: vec![0; RAM_SIZE as usize],
        }
    }

    pub(crate) fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, MemoryError> {
        let start = usize::try_from(gpa).map_err(|_| MemoryError::Unmapped)?;
        let end = start.checked_add(len).ok_or(MemoryError::Unmapped)?;
        if end > self.bytes.len() {
            return Err(MemoryError::Unmapped);
        }
        Ok(start..end)
    }

    pub(crate) fn poke(&mut self, gpa: u64, bytes: &[u8]) {
        let range = self.range(gpa, bytes.len()).unwrap();
        self.bytes[range].copy_from_slice(bytes);
    }

    fn poke_u64(&mut self, gpa: u64, value: u64) {
        self.poke(gpa, &value.to_le_bytes());
    }

    pub(crate) fn peek(&self, gpa: u64, len: usize) -> &[u8] {
        &self.bytes[self.range(gpa, len).unwrap()]
    }

    /// 4-level tables: the low 4 MiB identity-mapped, linear
    /// `UNMAPPED_CODE` to GPA 0x4000_0000 and the 2 MiB at `MMIO`
    /// identity-mapped.
    fn long_mode_tables(&mut self) {
        self.poke_u64(PML4, PDPT | P | RW);
        self.poke_u64(PDPT, PD_LOW | P | RW);
        self.poke_u64(PDPT + 3 * 8, PD_HIGH | P | RW);
        self.poke_u64(PD_LOW, P | RW | PS);
        self.poke_u64(PD_LOW + 8, 0x20_0000 | P | RW | PS);
        self.poke_u64(PD_LOW + 2 * 8, 0x4000_0000 | P | RW | PS);
        let index = (MMIO >> 21) & 511;
        self.poke_u64(PD_HIGH + index * 8, MMIO | P | RW | PS);
    }
}

impl GuestMemory for TestRam {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError> {
        let range = self.range(gpa, 4)?;
        Ok(u32::from_le_bytes(self.bytes[range].try_into().unwrap()))
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        let range = self.range(gpa, 8)?;
        Ok(u64::from_le_bytes(self.bytes[range].try_into().unwrap()))
    }
    fn read_bytes(&mut self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        let range = self.range(gpa, buffer.len())?;
        buffer.copy_from_slice(&self.bytes[range]);
        Ok(())
    }
}

impl PageTableWrite for TestRam {
    fn set_entry_bits(&mut self, update: &AccessedDirtyUpdate) -> Result<bool, MemoryError> {
        let current = self.read_u64(update.entry_gpa)?;
        if current != update.old_value {
            return Ok(false);
        }
        self.poke_u64(update.entry_gpa, current | update.set_bits);
        Ok(true)
    }
}

impl GuestRam for TestRam {
    fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let range = self.range(gpa, bytes.len())?;
        self.bytes[range].copy_from_slice(bytes);
        Ok(())
    }
}

/// RAM below `RAM_SIZE`, one read-only page at 0x30_0000.
struct TestMap;

const READ_ONLY: u64 = 0x30_0000;
const RAM_LAST: u64 = RAM_SIZE - 1;

impl MemoryMap for TestMap {
    fn backing(&self, gpa: u64) -> Backing {
        match gpa {
            READ_ONLY..=0x30_0fff => Backing::Ram { writable: false },
            0..=RAM_LAST => Backing::Ram { writable: true },
            _ => Backing::Unbacked,
        }
    }
}

struct Machine {
    vcpu: Box<SvmVcpu>,
    state: Box<VcpuState>,
    ram: TestRam,
}

impl Machine {
    /// Real mode, CS = 0, RIP = `CODE` & 0xffff... as set by the test.
    fn real_mode() -> Self {
        let mut vcpu = Box::new(SvmVcpu::new(SvmFeatures::TCG, VmcbAddresses::default()));
        let mut cs = vcpu.segment(SegmentRegister::Cs);
        cs.selector = 0;
        cs.base = 0;
        vcpu.set_segment(SegmentRegister::Cs, cs);
        Self {
            vcpu,
            state: Box::new(VcpuState::new()),
            ram: TestRam::new(),
        }
    }

    /// 64-bit mode at CPL 0, RIP = `CODE`.
    fn long_mode() -> Self {
        let mut machine = Self::real_mode();
        machine.ram.long_mode_tables();
        let vcpu = &mut machine.vcpu;
        vcpu.set_cr0(CR0_PE | CR0_PG | (1 << 16));
        vcpu.set_cr4(CR4_PAE);
        vcpu.set_cr3(PML4);
        vcpu.set_efer(EFER_LME | EFER_LMA);
        let mut cs = vcpu.segment(SegmentRegister::Cs);
        cs.attributes |= SVM_SELECTOR_L_MASK;
        cs.selector = 0x10;
        vcpu.set_segment(SegmentRegister::Cs, cs);
        vcpu.set_rip(CODE);
        machine
    }

    fn code(&mut self, bytes: &[u8]) {
        let rip = self.vcpu.rip();
        let linear = self.vcpu.segment(SegmentRegister::Cs).base + rip;
        self.ram.poke(linear, bytes);
    }

    fn exit(&mut self, code: u32, info1: u64, info2: u64) -> Step {
        let control = &mut self.vcpu.vmcb.control;
        control.exit_code = code;
        control.exit_code_hi = 0;
        control.exit_info_1 = info1;
        control.exit_info_2 = info2;
        self.vcpu.complete_exit();
        handle_exit(
            &mut *self.vcpu,
            &mut self.state,
            &mut self.ram,
            &TestMap,
            HOST,
        )
    }

    fn npf(&mut self, gpa: u64, write: bool) -> Step {
        let mut error = NpfExit::USER | NpfExit::FINAL_TRANSLATION;
        if write {
            error |= NpfExit::WRITE;
        }
        self.exit(SVM_EXIT_NPF, error, gpa)
    }

    fn io(
        &mut self,
        port: u16,
        size: u64,
        input: bool,
        string: bool,
        rep: bool,
        next: u64,
    ) -> Step {
        let mut info1 = u64::from(port) << 16 | size << 4;
        if input {
            info1 |= SVM_IOIO_TYPE_MASK;
        }
        if string {
            info1 |= SVM_IOIO_STR_MASK;
        }
        if rep {
            info1 |= SVM_IOIO_REP_MASK;
        }
        self.exit(SVM_EXIT_IOIO, info1, next)
    }

    /// Completes the last exit with `run` and `pio` as userspace left them.
    fn complete(&mut self, run_page: &[u8], pio_page: &[u8]) -> Step {
        complete_user_exit(
            &mut *self.vcpu,
            &mut self.state,
            &mut self.ram,
            &TestMap,
            run_page,
            pio_page,
        )
        .unwrap()
    }

    fn complete_mmio_read(&mut self, data: u64) -> Step {
        let mut run_page = vec![0u8; run::KVM_RUN_SIZE];
        run_page[run::MMIO_DATA..run::MMIO_DATA + 8].copy_from_slice(&data.to_le_bytes());
        self.complete(&run_page, &[])
    }

    fn counters(&self) -> &ExitCounters {
        self.state.counters()
    }

    fn failures(&self, kind: EmulationFailureKind) -> u64 {
        self.counters().emulation_failure(kind)
    }

    fn rejections(&self, rejection: Rejection) -> u64 {
        self.counters().rejection(rejection)
    }

    fn injected(&self) -> (u32, u32) {
        (
            self.vcpu.vmcb.control.event_inj,
            self.vcpu.vmcb.control.event_inj_err,
        )
    }

    fn write_exit(&self, exit: &UserExit) -> (Vec<u8>, Vec<u8>) {
        let mut run_page = vec![0u8; run::KVM_RUN_SIZE];
        let mut pio_page = vec![0u8; PAGE_SIZE];
        write_user_exit(&*self.vcpu, &self.state, exit, &mut run_page, &mut pio_page).unwrap();
        (run_page, pio_page)
    }
}

fn word(page: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(page[offset..offset + 8].try_into().unwrap())
}

fn user_exit(step: Step) -> UserExit {
    match step {
        Step::ToUser(exit) => exit,
        other => panic!("not an exit to userspace: {other:?}"),
    }
}

fn dword(page: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(page[offset..offset + 4].try_into().unwrap())
}

const GP_INJECTION: (u32, u32) = (0x8000_0b0d, 0);

#[test]
fn real_mode_out_exits_with_the_data_and_advances_at_completion() {
    let mut machine = Machine::real_mode();
    machine.vcpu.set_rip(0x7c00);
    machine.code(&[0xe6, 0x80]); // out 0x80, al
    machine.vcpu.set_gpr(Gpr::Rax, 0xabcd_1255);
    let step = machine.io(0x80, 1, false, false, false, 0x7c02);
    let exit = user_exit(step);
    assert_eq!(
        exit,
        UserExit::Io {
            direction: RunIoDirection::Out,
            size: 1,
            port: 0x80,
            count: 1
        }
    );
    assert_eq!(machine.vcpu.rip(), 0x7c00, "RIP moves at completion");
    let (run_page, pio_page) = machine.write_exit(&exit);
    assert_eq!(run_page[run::IO_DIRECTION], 1);
    assert_eq!(run_page[run::IO_PORT..run::IO_PORT + 2], [0x80, 0]);
    assert_eq!(word(&run_page, run::IO_DATA_OFFSET), 4096);
    assert_eq!(pio_page[0], 0x55);
    assert!(machine.state.has_pending_completion());
    assert_eq!(machine.complete(&run_page, &pio_page), Step::Resume);
    assert_eq!(machine.vcpu.rip(), 0x7c02);
    assert!(!machine.state.has_pending_completion());
    let counters = machine.counters();
    assert_eq!(counters.port(PortClass::PostCode), 1);
    assert_eq!(counters.exit(ExitReason::Io), 1);
}

#[test]
fn in_completes_into_rax_with_the_width_rules() {
    let mut machine = Machine::long_mode();
    machine.code(&[0xed]); // in eax, dx
    machine.vcpu.set_gpr(Gpr::Rax, u64::MAX);
    let step = machine.io(0x3f8, 4, true, false, false, CODE + 1);
    assert!(matches!(
        step,
        Step::ToUser(UserExit::Io {
            direction: RunIoDirection::In,
            size: 4,
            port: 0x3f8,
            count: 1
        })
    ));
    let run_page = vec![0u8; run::KVM_RUN_SIZE];
    assert_eq!(machine.complete(&run_page, &[1, 2, 3, 4]), Step::Resume);
    // A 32-bit destination zero-extends.
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), 0x0403_0201);
    assert_eq!(machine.vcpu.rip(), CODE + 1);

    machine.code(&[0xec]); // in al, dx
    machine.vcpu.set_gpr(Gpr::Rax, 0x1122_3344_5566_7788);
    machine.io(0x71, 1, true, false, false, CODE + 2);
    machine.complete(&run_page, &[0xaa]);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), 0x1122_3344_5566_77aa);
    assert_eq!(machine.counters().port(PortClass::Rtc), 1);
    assert_eq!(machine.counters().port(PortClass::Serial), 1);
}

#[test]
fn a_completion_is_dropped_when_userspace_moved_rip() {
    let mut machine = Machine::long_mode();
    machine.code(&[0xec]);
    machine.io(0x60, 1, true, false, false, CODE + 1);
    machine.vcpu.set_rip(0x5000);
    let run_page = vec![0u8; run::KVM_RUN_SIZE];
    assert_eq!(machine.complete(&run_page, &[7]), Step::Resume);
    assert_eq!(machine.vcpu.rip(), 0x5000);
    assert_eq!(machine.rejections(Rejection::CompletionDropped), 1);
}

#[test]
fn a_short_pio_page_keeps_the_completion() {
    let mut machine = Machine::long_mode();
    machine.code(&[0xed]);
    machine.io(0x60, 4, true, false, false, CODE + 1);
    let result = complete_user_exit(
        &mut *machine.vcpu,
        &mut machine.state,
        &mut machine.ram,
        &TestMap,
        &[],
        &[1, 2],
    );
    assert!(matches!(result, Err(CompletionError::RunPage(_))));
    assert!(machine.state.has_pending_completion());
}

#[test]
fn mmio_write_from_64_bit_code_through_the_page_tables() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x89, 0x08]); // mov [rax], ecx
    machine.vcpu.set_gpr(Gpr::Rax, MMIO + 0x300);
    machine.vcpu.set_gpr(Gpr::Rcx, 0xdead_beef_cafe_f00d);
    let step = machine.npf(MMIO + 0x300, true);
    let expected = UserExit::Mmio {
        gpa: MMIO + 0x300,
        len: 4,
        // Only the four bytes of ECX.
        write: Some(0xcafe_f00d_u64.to_le_bytes()),
    };
    assert_eq!(step, Step::ToUser(expected));
    let (run_page, _) = machine.write_exit(&expected);
    assert_eq!(word(&run_page, run::MMIO_PHYS_ADDR), MMIO + 0x300);
    assert_eq!(
        run_page[run::MMIO_DATA..run::MMIO_DATA + 8],
        [0x0d, 0xf0, 0xfe, 0xca, 0, 0, 0, 0]
    );
    assert_eq!(run_page[run::MMIO_LEN], 4);
    assert_eq!(run_page[run::MMIO_IS_WRITE], 1);
    assert_eq!(machine.vcpu.rip(), CODE);
    assert_eq!(machine.complete(&run_page, &[]), Step::Resume);
    assert_eq!(machine.vcpu.rip(), CODE + 2);
    assert_eq!(machine.counters().mmio_writes, 1);
}

#[test]
fn mmio_read_into_r8d_zero_extends() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x44, 0x8b, 0x00]); // mov r8d, [rax]
    machine.vcpu.set_gpr(Gpr::Rax, MMIO + 0x20);
    machine.vcpu.set_gpr(Gpr::R8, u64::MAX);
    let step = machine.npf(MMIO + 0x20, false);
    assert_eq!(
        step,
        Step::ToUser(UserExit::Mmio {
            gpa: MMIO + 0x20,
            len: 4,
            write: None
        })
    );
    assert_eq!(
        machine.vcpu.gpr(Gpr::R8),
        u64::MAX,
        "untouched until completion"
    );
    // Bytes beyond the access length are ignored.
    assert_eq!(
        machine.complete_mmio_read(0xffff_ffff_1122_3344),
        Step::Resume
    );
    assert_eq!(machine.vcpu.gpr(Gpr::R8), 0x1122_3344);
    assert_eq!(machine.vcpu.rip(), CODE + 3);
    assert_eq!(machine.counters().mmio_reads, 1);
}

#[test]
fn movzx_mmio_read() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x0f, 0xb7, 0x08]); // movzx ecx, word [rax]
    machine.vcpu.set_gpr(Gpr::Rax, MMIO + 0x10);
    machine.vcpu.set_gpr(Gpr::Rcx, u64::MAX);
    assert_eq!(
        machine.npf(MMIO + 0x10, false),
        Step::ToUser(UserExit::Mmio {
            gpa: MMIO + 0x10,
            len: 2,
            write: None
        })
    );
    machine.complete_mmio_read(0xbeef);
    assert_eq!(machine.vcpu.gpr(Gpr::Rcx), 0xbeef);
    assert_eq!(machine.vcpu.rip(), CODE + 3);
}

#[test]
fn read_modify_write_to_mmio_exits_twice() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x01, 0x08]); // add [rax], ecx
    machine.vcpu.set_gpr(Gpr::Rax, MMIO);
    machine.vcpu.set_gpr(Gpr::Rcx, 5);
    assert!(matches!(
        machine.npf(MMIO, true),
        Step::ToUser(UserExit::Mmio { write: None, .. })
    ));
    let step = machine.complete_mmio_read(10);
    assert_eq!(
        step,
        Step::ToUser(UserExit::Mmio {
            gpa: MMIO,
            len: 4,
            write: Some(15u64.to_le_bytes())
        })
    );
    assert_eq!(machine.vcpu.rip(), CODE);
    let run_page = vec![0u8; run::KVM_RUN_SIZE];
    assert_eq!(machine.complete(&run_page, &[]), Step::Resume);
    assert_eq!(machine.vcpu.rip(), CODE + 2);
}

#[test]
fn npf_on_ram_maps_the_page_and_read_only_writes_are_mmio() {
    let mut machine = Machine::long_mode();
    assert_eq!(
        machine.npf(0x20_1000, true),
        Step::MapPage {
            gpa: 0x20_1000,
            write: true
        }
    );
    assert_eq!(
        machine.npf(READ_ONLY + 8, false),
        Step::MapPage {
            gpa: READ_ONLY + 8,
            write: false
        }
    );
    machine.code(&[0x88, 0x08]); // mov [rax], cl
    machine.vcpu.set_gpr(Gpr::Rax, READ_ONLY + 8);
    machine.vcpu.set_gpr(Gpr::Rcx, 0x42);
    assert_eq!(
        machine.npf(READ_ONLY + 8, true),
        Step::ToUser(UserExit::Mmio {
            gpa: READ_ONLY + 8,
            len: 1,
            write: Some(0x42u64.to_le_bytes())
        })
    );
    assert_eq!(machine.counters().map_page, 2);
}

#[test]
fn cpuid_answers_from_the_table_with_runtime_bits() {
    let mut machine = Machine::long_mode();
    let entry = |function, index, flags, eax, ebx, ecx, edx| CpuidEntry {
        function,
        index,
        flags,
        eax,
        ebx,
        ecx,
        edx,
    };
    machine
        .state
        .set_cpuid(&[
            entry(0, 0, 0, 0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            entry(1, 0, 0, 0x00a0_0f11, 0, 1 << 26, 0),
            entry(7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 0, 0, 0),
            entry(
                0x4000_0000,
                0,
                0,
                0x4000_0001,
                0x4b4d_564b,
                0x564b_4d56,
                0x4d,
            ),
            entry(0x4000_0001, 0, 0, 0x0100_00fb, 0, 0, 0),
        ])
        .unwrap();
    machine.code(&[0x0f, 0xa2]);
    machine.vcpu.set_gpr(Gpr::Rax, 0xffff_ffff_4000_0000);
    assert_eq!(machine.exit(SVM_EXIT_CPUID, 0, 0), Step::Resume);
    assert_eq!(
        [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].map(|register| machine.vcpu.gpr(register)),
        [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]
    );
    assert_eq!(machine.vcpu.rip(), CODE + 2);

    // CR4.OSXSAVE shows in CPUID.1:ECX[27]; the enabled APIC in EDX[9].
    machine.vcpu.set_cr4(CR4_PAE | CR4_OSXSAVE);
    machine.code(&[0x0f, 0xa2]);
    machine.vcpu.set_gpr(Gpr::Rax, 1);
    machine.exit(SVM_EXIT_CPUID, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rcx), 1 << 26 | 1 << 27);
    assert_eq!(machine.vcpu.gpr(Gpr::Rdx), 1 << 9);
    // CR4.PKE shows in CPUID.7.0:ECX[4].
    machine.vcpu.set_cr4(CR4_PAE | CR4_PKE);
    machine.code(&[0x0f, 0xa2]);
    machine.vcpu.set_gpr(Gpr::Rax, 7);
    machine.vcpu.set_gpr(Gpr::Rcx, 0);
    machine.exit(SVM_EXIT_CPUID, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rcx), 1 << 4);
    assert_eq!(machine.counters().lengths_verified, 3);
}

#[test]
fn a_prefixed_cpuid_is_skipped_by_its_decoded_length() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x2e, 0x0f, 0xa2]); // cs cpuid
    machine.exit(SVM_EXIT_CPUID, 0, 0);
    assert_eq!(machine.vcpu.rip(), CODE + 3);
    assert_eq!(machine.counters().lengths_corrected, 1);
}

#[test]
fn unreadable_bytes_fall_back_to_the_fixed_length() {
    let mut machine = Machine::long_mode();
    machine.vcpu.set_rip(UNMAPPED_CODE);
    machine.exit(SVM_EXIT_CPUID, 0, 0);
    assert_eq!(machine.vcpu.rip(), UNMAPPED_CODE + 2);
    assert_eq!(machine.counters().lengths_unverified, 1);
}

#[test]
fn msrs_are_emulated_and_unknown_ones_fault() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x0f, 0x30]); // wrmsr
    machine.vcpu.set_gpr(Gpr::Rcx, u64::from(MSR_LSTAR));
    machine.vcpu.set_gpr(Gpr::Rdx, 0xffff_ffff);
    machine.vcpu.set_gpr(Gpr::Rax, 0x8100_0000);
    assert_eq!(machine.exit(SVM_EXIT_MSR, 1, 0), Step::Resume);
    assert_eq!(machine.vcpu.vmcb.save.lstar, 0xffff_ffff_8100_0000);
    assert_eq!(machine.vcpu.rip(), CODE + 2);

    machine.code(&[0x0f, 0x32]); // rdmsr
    machine.vcpu.set_gpr(Gpr::Rax, u64::MAX);
    machine.vcpu.set_gpr(Gpr::Rdx, u64::MAX);
    machine.exit(SVM_EXIT_MSR, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), 0x8100_0000);
    assert_eq!(machine.vcpu.gpr(Gpr::Rdx), 0xffff_ffff);
    assert_eq!(machine.vcpu.rip(), CODE + 4);

    // IA32_TSC reads the host TSC plus the offset.
    machine.code(&[0x0f, 0x32]);
    machine.vcpu.set_gpr(Gpr::Rcx, 0x10);
    machine.exit(SVM_EXIT_MSR, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), HOST.tsc);

    // An unknown MSR: #GP(0), RIP stays.
    machine.code(&[0x0f, 0x32]);
    machine.vcpu.set_gpr(Gpr::Rcx, 0x1234);
    let rip = machine.vcpu.rip();
    assert_eq!(machine.exit(SVM_EXIT_MSR, 0, 0), Step::Resume);
    assert_eq!(machine.vcpu.rip(), rip);
    assert_eq!(machine.injected(), GP_INJECTION);
    assert_eq!(machine.rejections(Rejection::UnknownMsr), 1);

    // A non-canonical LSTAR: #GP(0) too.
    machine.vcpu.complete_exit();
    machine.code(&[0x0f, 0x30]);
    machine.vcpu.set_gpr(Gpr::Rcx, u64::from(MSR_LSTAR));
    machine.vcpu.set_gpr(Gpr::Rdx, 0x8000);
    machine.exit(SVM_EXIT_MSR, 1, 0);
    assert_eq!(machine.injected(), GP_INJECTION);
    assert_eq!(machine.rejections(Rejection::InvalidMsrValue), 1);
}

#[test]
fn hypercalls_answer_enosys() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x0f, 0x01, 0xd9]); // vmmcall
    machine.vcpu.set_gpr(Gpr::Rax, 12);
    assert_eq!(machine.exit(SVM_EXIT_VMMCALL, 0, 0), Step::Resume);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), (-1000i64) as u64);
    assert_eq!(machine.vcpu.rip(), CODE + 3);

    // 32-bit code gets 32 bits.
    let mut machine = Machine::real_mode();
    machine.vcpu.set_rip(0x1000);
    machine.code(&[0x0f, 0x01, 0xd9]);
    machine.exit(SVM_EXIT_VMMCALL, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), 0xffff_fc18);
    assert_eq!(machine.counters().hypercalls, 1);
}

#[test]
fn xsetbv_sets_what_the_guest_cpuid_and_the_host_allow() {
    let xsetbv = |machine: &mut Machine, index: u64, value: u64| {
        machine.code(&[0x0f, 0x01, 0xd1]);
        machine.vcpu.set_gpr(Gpr::Rcx, index);
        machine.vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
        machine.vcpu.set_gpr(Gpr::Rdx, value >> 32);
        machine.exit(SVM_EXIT_XSETBV, 0, 0)
    };
    let mut machine = Machine::long_mode();
    // Leaf 0xD lists x87, SSE, AVX and the AVX-512 trio; the host only
    // the first three.
    let leaf = CpuidEntry { function: 0xd, index: 0, flags: 1, eax: 0xe7, ..Default::default() };
    machine.state.set_cpuid(&[leaf]).unwrap();
    assert_eq!(machine.state.xcr0(), 1);
    assert_eq!(xsetbv(&mut machine, 0, 0b111), Step::Resume);
    assert_eq!(machine.state.xcr0(), 0b111);
    assert_eq!(machine.vcpu.rip(), CODE + 3);

    // AVX-512 is not the host's; AVX without SSE, no x87, XCR1, and CPL 3
    // are invalid: #GP, XCR0 and RIP unchanged.
    for (index, value) in [(0, 0xe7), (0, 0b101), (0, 0b110), (1, 0b11)] {
        let rip = machine.vcpu.rip();
        xsetbv(&mut machine, index, value);
        assert_eq!(machine.injected(), GP_INJECTION, "{index} {value:#x}");
        machine.vcpu.vmcb.control.event_inj = 0;
        assert_eq!((machine.state.xcr0(), machine.vcpu.rip()), (0b111, rip));
    }
    machine.vcpu.vmcb.save.cpl = 3;
    xsetbv(&mut machine, 0, 0b11);
    assert_eq!(machine.injected(), GP_INJECTION);
    assert_eq!(machine.state.xcr0(), 0b111);
    assert_eq!(machine.rejections(Rejection::InvalidXsetbv), 5);
}

#[test]
fn fetch_from_unmapped_memory_is_an_emulation_failure() {
    let mut machine = Machine::long_mode();
    machine.vcpu.set_rip(UNMAPPED_CODE);
    machine.vcpu.set_gpr(Gpr::Rax, MMIO);
    let step = machine.npf(MMIO, false);
    let Step::ToUser(exit @ UserExit::EmulationFailure { instruction, data }) = step else {
        panic!("{step:?}")
    };
    assert_eq!(instruction.map(|bytes| bytes.len), Some(0));
    // KVM's exit information: reason, EXITINFO1, EXITINFO2, EXITINTINFO,
    // its error code.
    assert_eq!(
        data.as_slice(),
        [
            u64::from(SVM_EXIT_NPF),
            NpfExit::USER | NpfExit::FINAL_TRANSLATION,
            MMIO,
            0,
            0
        ]
    );
    let (run_page, _) = machine.write_exit(&exit);
    assert_eq!(dword(&run_page, run::EXIT_REASON), KVM_EXIT_INTERNAL_ERROR);
    assert_eq!(word(&run_page, run::EMULATION_FAILURE_FLAGS), 0, "no bytes");
    // KVM queues #UD as well.
    assert_eq!(machine.injected().0, 0x8000_0306);
    assert_eq!(machine.failures(EmulationFailureKind::FetchUnmapped), 1);
}

#[test]
fn garbage_instruction_bytes_are_reported() {
    let mut machine = Machine::long_mode();
    let garbage = [
        0x0f, 0x0b, 0xc4, 0xff, 0xff, 0xff, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99,
    ];
    machine.code(&garbage);
    let step = machine.npf(MMIO, false);
    let Step::ToUser(exit @ UserExit::EmulationFailure { instruction, .. }) = step else {
        panic!("{step:?}")
    };
    let bytes = instruction.unwrap();
    assert!(!bytes.as_slice().is_empty());
    assert_eq!(bytes.as_slice(), &garbage[..bytes.as_slice().len()]);
    let (run_page, _) = machine.write_exit(&exit);
    assert_eq!(
        dword(&run_page, run::INTERNAL_SUBERROR),
        KVM_INTERNAL_ERROR_EMULATION
    );
    assert_eq!(word(&run_page, run::EMULATION_FAILURE_FLAGS), 1);
    let size = usize::from(run_page[run::EMULATION_FAILURE_INSN_SIZE]);
    assert_eq!(
        &run_page[run::EMULATION_FAILURE_INSN_BYTES..][..size],
        bytes.as_slice()
    );
    assert_eq!(machine.failures(EmulationFailureKind::Decode), 1);
}

#[test]
fn emulation_failures_in_user_mode_become_ud() {
    let mut machine = Machine::long_mode();
    let mut ss = machine.vcpu.segment(SegmentRegister::Ss);
    ss.attributes |= 3 << SVM_SELECTOR_DPL_SHIFT;
    machine.vcpu.set_segment(SegmentRegister::Ss, ss);
    machine.code(&[0x0f, 0x0b]);
    assert_eq!(machine.npf(MMIO, false), Step::Resume);
    assert_eq!(machine.injected().0, 0x8000_0306);
}

#[test]
fn a_page_fault_on_the_second_code_page_is_injected() {
    let mut machine = Machine::long_mode();
    // An instruction that starts on the last byte of a mapped page and
    // continues on a page whose PDE is not present.
    machine.ram.poke_u64(PD_LOW + 2 * 8, 0);
    machine.vcpu.set_rip(0x3f_ffff);
    machine.code(&[0x8b]); // mov ecx, [rax] continues on the next page
    let step = machine.npf(MMIO, false);
    assert_eq!(step, Step::Resume);
    assert_eq!(machine.vcpu.cr2(), 0x40_0000);
    assert_eq!(machine.injected().0 & 0xff, 14);
}

#[test]
fn triple_fault_is_shutdown_and_invalid_is_fail_entry() {
    let mut machine = Machine::long_mode();
    assert_eq!(
        machine.exit(SVM_EXIT_SHUTDOWN, 0, 0),
        Step::ToUser(UserExit::Shutdown)
    );
    assert_eq!(
        machine.exit(SVM_EXIT_ERR, 0, 0),
        Step::ToUser(UserExit::FailEntry {
            hardware_entry_failure_reason: 0xffff_ffff,
            cpu: HOST.cpu
        })
    );
    assert_eq!(machine.counters().exit(ExitReason::Shutdown), 1);
}

#[test]
fn unknown_exits_are_internal_errors_with_the_code() {
    let mut machine = Machine::long_mode();
    assert_eq!(
        machine.exit(0x5555, 0, 0),
        Step::ToUser(UserExit::InternalError {
            suberror: KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
            data: ExitWords::from_slice(&[0x5555, u64::from(HOST.cpu)])
        })
    );
}

#[test]
fn hlt_advances_and_exits() {
    let mut machine = Machine::long_mode();
    machine.code(&[0xf4]);
    assert_eq!(
        machine.exit(SVM_EXIT_HLT, 0, 0),
        Step::ToUser(UserExit::Hlt)
    );
    assert_eq!(machine.vcpu.rip(), CODE + 1);
}

#[test]
fn interrupted_events_are_reinjected() {
    let mut machine = Machine::long_mode();
    machine.vcpu.vmcb.control.exit_int_info = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_INTR | 0x30;
    assert_eq!(
        machine.npf(0x1000, false),
        Step::MapPage {
            gpa: 0x1000,
            write: false
        }
    );
    assert_eq!(machine.injected().0, SVM_EVTINJ_VALID | 0x30);
    assert_eq!(machine.counters().events_reinjected, 1);

    // MMIO during that delivery is not the instruction's.
    machine.vcpu.complete_exit();
    let step = machine.npf(MMIO, true);
    assert!(matches!(
        step,
        Step::ToUser(UserExit::InternalError {
            suberror: KVM_INTERNAL_ERROR_DELIVERY_EV,
            ..
        })
    ));
}

#[test]
fn reflected_exceptions_and_svm_instructions() {
    let mut machine = Machine::long_mode();
    assert_eq!(
        machine.exit(SVM_EXIT_EXCP_BASE + 14, 2, 0xdead_0000),
        Step::Resume
    );
    assert_eq!(machine.vcpu.cr2(), 0xdead_0000);
    assert_eq!(machine.injected(), (0x8000_0b0e, 2));
    machine.vcpu.complete_exit();
    assert_eq!(machine.exit(SVM_EXIT_EXCP_BASE + 18, 0, 0), Step::Resume);
    assert_eq!(machine.injected().0, 0, "#MC is the host's");
    assert_eq!(machine.exit(SVM_EXIT_VMRUN, 0, 0), Step::Resume);
    assert_eq!(machine.injected().0, 0x8000_0306);
}

#[test]
fn interrupt_window_exit_when_userspace_asked() {
    let mut machine = Machine::long_mode();
    machine.state.begin_run(&RunRequest {
        request_interrupt_window: true,
        immediate_exit: false,
        cr8: 0,
        kvm_valid_regs: 0,
        kvm_dirty_regs: 0,
    });
    prepare_entry(&mut *machine.vcpu, &machine.state);
    assert!(machine.vcpu.vmcb.is_intercepted(INTERCEPT_VINTR));
    machine.vcpu.set_rflags(RFLAGS_IF);
    assert_eq!(
        machine.exit(SVM_EXIT_VINTR, 0, 0),
        Step::ToUser(UserExit::IrqWindowOpen)
    );
    let exit_state = exit_state(&*machine.vcpu, &machine.state);
    assert!(exit_state.if_flag && exit_state.ready_for_interrupt_injection);
}

#[test]
fn rep_outsb_in_real_mode() {
    let mut machine = Machine::real_mode();
    machine.vcpu.set_rip(0x1000);
    machine.code(&[0xf3, 0x6e]); // rep outsb
    let mut ds = machine.vcpu.segment(SegmentRegister::Ds);
    ds.selector = 0x200;
    ds.base = 0x2000;
    machine.vcpu.set_segment(SegmentRegister::Ds, ds);
    machine.vcpu.set_gpr(Gpr::Rsi, 0x10);
    machine.vcpu.set_gpr(Gpr::Rcx, 0xdead_0003);
    machine.vcpu.set_gpr(Gpr::Rdx, 0x3f8);
    machine.ram.poke(0x2010, b"abc");
    let step = machine.io(0x3f8, 1, false, true, true, 0x1002);
    let exit = user_exit(step);
    assert_eq!(
        exit,
        UserExit::Io {
            direction: RunIoDirection::Out,
            size: 1,
            port: 0x3f8,
            count: 3
        }
    );
    let (run_page, pio_page) = machine.write_exit(&exit);
    assert_eq!(&pio_page[..3], b"abc");
    machine.complete(&run_page, &pio_page);
    // 16-bit address size: only CX and SI move.
    assert_eq!(machine.vcpu.gpr(Gpr::Rcx), 0xdead_0000);
    assert_eq!(machine.vcpu.gpr(Gpr::Rsi), 0x13);
    assert_eq!(machine.vcpu.rip(), 0x1002);
    assert_eq!(machine.counters().string_io, 1);
}

#[test]
fn rep_insw_backwards_in_long_mode_stops_at_the_page() {
    let mut machine = Machine::long_mode();
    machine.code(&[0x66, 0xf3, 0x6d]); // rep insw
    machine.vcpu.set_rflags(RFLAGS_DF);
    machine.vcpu.set_gpr(Gpr::Rdi, 0x20_0004);
    machine.vcpu.set_gpr(Gpr::Rcx, 10);
    let step = machine.io(0x60, 2, true, true, true, CODE + 3);
    // Elements at 0x20_0004, 0x20_0002, 0x20_0000: three fit in the page.
    assert_eq!(
        step,
        Step::ToUser(UserExit::Io {
            direction: RunIoDirection::In,
            size: 2,
            port: 0x60,
            count: 3
        })
    );
    let run_page = vec![0u8; run::KVM_RUN_SIZE];
    machine.complete(&run_page, &[1, 2, 3, 4, 5, 6]);
    assert_eq!(machine.ram.peek(0x20_0000, 6), [5, 6, 3, 4, 1, 2]);
    assert_eq!(machine.vcpu.gpr(Gpr::Rdi), 0x1f_fffe);
    assert_eq!(machine.vcpu.gpr(Gpr::Rcx), 7);
    assert_eq!(machine.vcpu.rip(), CODE, "RCX is not zero: run it again");
}

#[test]
fn userspace_lowering_rcx_during_rep_insb_completes_only_what_is_left() {
    // userspace_io_test: the guest's REP INSB of 2 exits with count 2;
    // userspace sets RCX to 1 meanwhile. One byte lands, RCX ends at 0 and
    // the instruction retires (RCX must not wrap and run on).
    let mut machine = Machine::long_mode();
    machine.code(&[0xf3, 0x6c]); // rep insb
    machine.vcpu.set_gpr(Gpr::Rdi, 0x20_0000);
    machine.vcpu.set_gpr(Gpr::Rcx, 2);
    let step = machine.io(0x80, 1, true, true, true, CODE + 2);
    assert!(matches!(step, Step::ToUser(UserExit::Io { count: 2, .. })));
    machine.vcpu.set_gpr(Gpr::Rcx, 1);
    let run_page = vec![0u8; run::KVM_RUN_SIZE];
    machine.complete(&run_page, &[0xaa, 0xbb]);
    assert_eq!(machine.ram.peek(0x20_0000, 2), [0xaa, 0]);
    assert_eq!(machine.vcpu.gpr(Gpr::Rcx), 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rdi), 0x20_0001);
    assert_eq!(machine.vcpu.rip(), CODE + 2);
}

#[test]
fn string_io_that_disagrees_with_the_exit_is_refused() {
    let mut machine = Machine::long_mode();
    machine.code(&[0xec]); // in al, dx: not INS
    let step = machine.io(0x60, 1, true, true, false, CODE + 1);
    assert!(matches!(
        step,
        Step::ToUser(UserExit::EmulationFailure { .. })
    ));
    assert_eq!(machine.failures(EmulationFailureKind::StringIo), 1);
}

#[test]
fn a_bad_next_rip_is_refused() {
    let mut machine = Machine::long_mode();
    let step = machine.io(0x60, 1, true, false, false, CODE + 100);
    assert!(matches!(
        step,
        Step::ToUser(UserExit::EmulationFailure { .. })
    ));
}

#[test]
fn counters_are_listed_for_debugfs() {
    let mut machine = Machine::long_mode();
    machine.exit(SVM_EXIT_INTR, 0, 0);
    let mut lines = Vec::new();
    machine
        .counters()
        .for_each(|group, name, value| lines.push((group, name, value)));
    assert!(lines.contains(&("exit", "intr", 1)));
    assert_eq!(
        lines.len(),
        ExitReason::COUNT + PortClass::COUNT + EmulationFailureKind::COUNT + Rejection::COUNT + 23
    );
}

#[test]
fn reset_clears_everything() {
    let mut machine = Machine::long_mode();
    machine.code(&[0xec]);
    machine.io(0x60, 1, true, false, false, CODE + 1);
    machine.state.reset();
    assert!(!machine.state.has_pending_completion());
    assert_eq!(*machine.counters(), ExitCounters::ZERO);
}

mod irqchip;

#[test]
fn pv_msrs_and_clock_pairing_reach_pv_rs() {
    use crate::pvrs_abi::hypercall::KVM_HC_CLOCK_PAIRING;
    use crate::pvrs_abi::msr::MSR_KVM_SYSTEM_TIME_NEW;
    let mut machine = Machine::long_mode();
    machine.code(&[0x0f, 0x30]); // wrmsr
    machine.vcpu.set_gpr(Gpr::Rcx, u64::from(MSR_KVM_SYSTEM_TIME_NEW));
    machine.vcpu.set_gpr(Gpr::Rax, 0x5001);
    machine.vcpu.set_gpr(Gpr::Rdx, 0);
    assert_eq!(machine.exit(SVM_EXIT_MSR, 1, 0), Step::Resume);
    assert_eq!(machine.vcpu.rip(), CODE + 2);
    assert!(machine.state.pv.clock_update_pending());
    machine.code(&[0x0f, 0x32]); // rdmsr
    machine.vcpu.set_gpr(Gpr::Rax, 0);
    machine.exit(SVM_EXIT_MSR, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), 0x5001);

    // CLOCK_PAIRING with the host's clocks of the exit.
    let host = HostState { tsc_stable: true, wall_clock_ns: 3_000_000_007, ..HOST };
    machine.code(&[0x0f, 0x01, 0xd9]); // vmmcall
    machine.vcpu.set_gpr(Gpr::Rax, u64::from(KVM_HC_CLOCK_PAIRING));
    machine.vcpu.set_gpr(Gpr::Rbx, 0x6000);
    machine.vcpu.set_gpr(Gpr::Rcx, 0);
    let control = &mut machine.vcpu.vmcb.control;
    control.exit_code = SVM_EXIT_VMMCALL;
    control.exit_code_hi = 0;
    machine.vcpu.complete_exit();
    let step = handle_exit(&mut *machine.vcpu, &mut machine.state, &mut machine.ram, &TestMap, host);
    assert_eq!(step, Step::Resume);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), 0);
    assert_eq!(machine.ram.peek(0x6000, 8), 3u64.to_le_bytes());
    assert_eq!(machine.ram.peek(0x6008, 8), 7u64.to_le_bytes());
    assert_eq!(machine.ram.peek(0x6010, 8), HOST.tsc.to_le_bytes(), "offset 0");

    // From user mode: -KVM_EPERM and a rejection.
    machine.code(&[0x0f, 0x01, 0xd9]);
    let mut ss = machine.vcpu.segment(SegmentRegister::Ss);
    ss.attributes |= 3 << 5;
    machine.vcpu.set_segment(SegmentRegister::Ss, ss);
    machine.exit(SVM_EXIT_VMMCALL, 0, 0);
    assert_eq!(machine.vcpu.gpr(Gpr::Rax), (-1i64) as u64);
    assert_eq!(machine.rejections(Rejection::PrivilegedHypercall), 1);
}
