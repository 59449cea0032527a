//! The MMIO emulator: instruction fetch through the guest page tables,
//! operand translation, the two-phase (deferred) bus protocol, register
//! write-back rules, string iterations, ALU flags and control-register
//! requests.

mod common;

use std::collections::BTreeMap;

use common::SparseMemory;
use hv_core::paging::*;
use hv_core::x86::decode::{decode, CodeSize, Register};
use hv_core::x86::emulate::*;

const MMIO: u64 = 0xfee0_0000;
const CODE: u64 = 0x40_0000;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const PT: u64 = 0x4000;

const RAX: usize = 0;
const RCX: usize = 1;
const RBX: usize = 3;
const RSI: usize = 6;
const RDI: usize = 7;

/// The device side: MMIO at `MMIO`, RAM elsewhere; optionally defers MMIO.
#[derive(Default)]
struct Bus {
    ram: SparseMemory,
    registers: BTreeMap<u64, u64>,
    defer: bool,
    log: Vec<(u64, u8, bool, u64)>,
}

impl Mmio for Bus {
    fn read(&mut self, gpa: u64, size: u8) -> Result<MmioResult, MemoryError> {
        self.log.push((gpa, size, false, 0));
        if (MMIO..MMIO + 0x1000).contains(&gpa) {
            if self.defer {
                return Ok(MmioResult::Deferred);
            }
            return Ok(MmioResult::Done(*self.registers.get(&gpa).unwrap_or(&0)));
        }
        let mut bytes = [0u8; 8];
        self.ram.load(gpa, &mut bytes[..usize::from(size)])?;
        Ok(MmioResult::Done(u64::from_le_bytes(bytes)))
    }

    fn write(&mut self, gpa: u64, size: u8, value: u64) -> Result<MmioResult, MemoryError> {
        self.log.push((gpa, size, true, value));
        if (MMIO..MMIO + 0x1000).contains(&gpa) {
            if self.defer {
                return Ok(MmioResult::Deferred);
            }
            self.registers.insert(gpa, value);
            return Ok(MmioResult::Done(0));
        }
        self.ram
            .write_bytes(gpa, &value.to_le_bytes()[..usize::from(size)]);
        Ok(MmioResult::Done(0))
    }
}

/// A 64-bit guest: the low 4 GiB identity-mapped with 2 MiB pages, except
/// the code page, the MMIO page and the 2 MiB at 0x60_0000, which go
/// through a page table (4 KiB pages, for fault tests).
struct Guest {
    memory: SparseMemory,
    context: Context,
    regs: Registers,
    bus: Bus,
}

const ALL: u64 = 0b111;

impl Guest {
    fn long_mode() -> Self {
        let mut memory = SparseMemory::new();
        memory.write_u64(PML4, PDPT | ALL);
        for gb in 0..4u64 {
            memory.write_u64(PDPT + gb * 8, (PD + gb * 0x1000) | ALL);
            for mb2 in 0..512u64 {
                let address = (gb << 30) | (mb2 << 21);
                memory.write_u64(PD + gb * 0x1000 + mb2 * 8, address | ALL | 0x80);
            }
        }
        // 0x60_0000..0x80_0000 through a page table of 4 KiB pages.
        memory.write_u64(PD + 3 * 8, PT | ALL);
        for page in 0..512u64 {
            memory.write_u64(PT + page * 8, (0x60_0000 + page * 0x1000) | ALL);
        }
        let context = Context {
            code_size: CodeSize::Bits64,
            cpl: 0,
            paging: PagingRegisters {
                cr0: CR0_PE | CR0_PG | CR0_WP,
                cr3: PML4,
                cr4: CR4_PAE,
                efer: EFER_LMA | EFER_NXE,
                ..Default::default()
            },
            features: PagingFeatures {
                max_phys_addr_bits: 40,
                pse36: true,
                gb_pages: true,
            },
            es: SegmentCache::default(),
            cs: SegmentCache::default(),
            ss: SegmentCache::default(),
            ds: SegmentCache::default(),
            fs: SegmentCache::default(),
            gs: SegmentCache::default(),
        };
        let regs = Registers {
            rip: CODE,
            rflags: 2,
            ..Default::default()
        };
        Self {
            memory,
            context,
            regs,
            bus: Bus::default(),
        }
    }

    /// A 32-bit or 16-bit protected/real-mode guest without paging.
    fn unpaged(code_size: CodeSize) -> Self {
        let mut guest = Self::long_mode();
        guest.context.code_size = code_size;
        guest.context.paging = PagingRegisters {
            cr0: CR0_PE,
            ..Default::default()
        };
        let flat = SegmentCache {
            base: 0,
            limit: 0xffff_ffff,
        };
        for segment in [
            &mut guest.context.es,
            &mut guest.context.cs,
            &mut guest.context.ss,
            &mut guest.context.ds,
            &mut guest.context.fs,
            &mut guest.context.gs,
        ] {
            *segment = flat;
        }
        guest
    }

    fn code(&mut self, bytes: &[u8]) {
        let linear = self.context.cs.base + self.regs.rip;
        self.memory.write_bytes(linear, bytes);
    }

    fn step(&mut self) -> Result<Step, EmulateError> {
        let instruction = fetch_instruction(&self.context, &self.regs, &mut self.memory)?;
        begin(
            &self.context,
            &mut self.regs,
            &instruction,
            &mut self.memory,
            &mut self.bus,
        )
    }

    fn run(&mut self, bytes: &[u8]) -> Result<Step, EmulateError> {
        self.code(bytes);
        self.step()
    }
}

fn completed(step: Result<Step, EmulateError>) {
    assert_eq!(step, Ok(Step::Done(Outcome::Completed)));
}

// ------------------------------------------------------------ registers

#[test]
fn register_writes_follow_the_operand_size_rules() {
    let mut regs = Registers::default();
    let rax = Register {
        index: 0,
        high_byte: false,
    };
    let ah = Register {
        index: 0,
        high_byte: true,
    };
    regs.gprs[RAX] = 0x1122_3344_5566_7788;
    regs.write(rax, 1, 0xaa);
    assert_eq!(regs.gprs[RAX], 0x1122_3344_5566_77aa);
    regs.write(ah, 1, 0xbb);
    assert_eq!(regs.gprs[RAX], 0x1122_3344_5566_bbaa);
    assert_eq!(regs.read(ah, 1), 0xbb);
    regs.write(rax, 2, 0xcccc);
    assert_eq!(regs.gprs[RAX], 0x1122_3344_5566_cccc);
    regs.write(rax, 4, 0xdddd_dddd);
    assert_eq!(regs.gprs[RAX], 0xdddd_dddd);
    regs.write(rax, 8, u64::MAX);
    assert_eq!(regs.read(rax, 4), 0xffff_ffff);
    // Out-of-range register numbers are ignored, never a panic.
    regs.write(
        Register {
            index: 200,
            high_byte: false,
        },
        8,
        1,
    );
    assert_eq!(
        regs.read(
            Register {
                index: 200,
                high_byte: false
            },
            8
        ),
        0
    );
}

#[test]
fn next_rip_wraps_with_the_code_size() {
    let regs = Registers {
        rip: 0xfffe,
        ..Default::default()
    };
    assert_eq!(regs.next_rip(CodeSize::Bits16, 3), 1);
    assert_eq!(regs.next_rip(CodeSize::Bits32, 3), 0x1_0001);
    let regs = Registers {
        rip: 0xffff_fffe,
        ..Default::default()
    };
    assert_eq!(regs.next_rip(CodeSize::Bits32, 3), 1);
    assert_eq!(regs.next_rip(CodeSize::Bits64, 3), 0x1_0000_0001);
}

// ------------------------------------------------------------ MOV family

#[test]
fn mov_store_to_mmio() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RSI] = MMIO;
    guest.regs.gprs[RAX] = 0xdead_beef_1234_5678;
    completed(guest.run(&[0x89, 0x86, 0x00, 0x03, 0x00, 0x00])); // mov [rsi+0x300], eax
    assert_eq!(guest.bus.log, vec![(MMIO + 0x300, 4, true, 0x1234_5678)]);
    assert_eq!(guest.regs.rip, CODE + 6);
}

#[test]
fn mov_loads_zero_extend_32_bit_and_merge_smaller() {
    let mut guest = Guest::long_mode();
    guest.bus.registers.insert(MMIO + 0x20, 0x8765_4321);
    guest.regs.gprs[RDI] = MMIO + 0x20;
    guest.regs.gprs[RAX] = u64::MAX;
    completed(guest.run(&[0x8b, 0x07])); // mov eax, [rdi]
    assert_eq!(guest.regs.gprs[RAX], 0x8765_4321);

    guest.regs.gprs[RAX] = u64::MAX;
    completed(guest.run(&[0x66, 0x8b, 0x07])); // mov ax, [rdi]
    assert_eq!(guest.regs.gprs[RAX], 0xffff_ffff_ffff_4321);

    guest.regs.gprs[RAX] = 0;
    completed(guest.run(&[0x8a, 0x27])); // mov ah, [rdi]
    assert_eq!(guest.regs.gprs[RAX], 0x2100);

    guest.regs.gprs[4] = 0x1111;
    completed(guest.run(&[0x40, 0x8a, 0x27])); // mov spl, [rdi]
    assert_eq!(guest.regs.gprs[4], 0x1121);
    assert_eq!(
        guest
            .bus
            .log
            .iter()
            .map(|access| access.1)
            .collect::<Vec<_>>(),
        vec![4, 2, 1, 1]
    );
}

#[test]
fn mov_immediate_and_64_bit_store() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = MMIO;
    completed(guest.run(&[0xc7, 0x07, 0x78, 0x56, 0x34, 0x12])); // mov dword [rdi], imm32
    completed(guest.run(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff])); // mov qword [rdi], -1
    completed(guest.run(&[0xc6, 0x47, 0x08, 0x5a])); // mov byte [rdi+8], 0x5a
    assert_eq!(
        guest.bus.log,
        vec![
            (MMIO, 4, true, 0x1234_5678),
            (MMIO, 8, true, u64::MAX),
            (MMIO + 8, 1, true, 0x5a)
        ]
    );
}

#[test]
fn movzx_movsx_movsxd() {
    let mut guest = Guest::long_mode();
    guest.bus.registers.insert(MMIO, 0x8081);
    guest.regs.gprs[RDI] = MMIO;
    guest.regs.gprs[RBX] = u64::MAX;
    completed(guest.run(&[0x0f, 0xb6, 0x1f])); // movzx ebx, byte [rdi]
    assert_eq!(guest.regs.gprs[RBX], 0x81);
    completed(guest.run(&[0x48, 0x0f, 0xbe, 0x1f])); // movsx rbx, byte [rdi]
    assert_eq!(guest.regs.gprs[RBX], 0xffff_ffff_ffff_ff81);
    completed(guest.run(&[0x0f, 0xbf, 0x1f])); // movsx ebx, word [rdi]
    assert_eq!(guest.regs.gprs[RBX], 0xffff_8081);
    guest.bus.registers.insert(MMIO, 0x8000_0000);
    completed(guest.run(&[0x48, 0x63, 0x1f])); // movsxd rbx, dword [rdi]
    assert_eq!(guest.regs.gprs[RBX], 0xffff_ffff_8000_0000);
    assert_eq!(
        guest
            .bus
            .log
            .iter()
            .map(|access| access.1)
            .collect::<Vec<_>>(),
        vec![1, 1, 2, 4]
    );
}

#[test]
fn rip_relative_and_moffs_operands() {
    let mut guest = Guest::long_mode();
    // mov eax, [rip + disp]: the target is relative to the next RIP.
    let start = MMIO - 0x1000;
    guest.regs.rip = start;
    let displacement = (MMIO + 0x30 - (start + 6)) as u32;
    let mut code = vec![0x8b, 0x05];
    code.extend_from_slice(&displacement.to_le_bytes());
    completed(guest.run(&code));
    // mov rax, [moffs64]
    let mut code = vec![0x48, 0xa1];
    code.extend_from_slice(&(MMIO + 0x40).to_le_bytes());
    completed(guest.run(&code));
    assert_eq!(guest.regs.rip, start + 6 + 10);
    assert_eq!(
        guest.bus.log,
        vec![(MMIO + 0x30, 4, false, 0), (MMIO + 0x40, 8, false, 0)]
    );
}

#[test]
fn fs_and_gs_bases_apply_in_64_bit_mode_and_others_do_not() {
    let mut guest = Guest::long_mode();
    guest.context.gs.base = MMIO;
    guest.context.ds.base = 0x1234_0000;
    completed(guest.run(&[0x65, 0x8b, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00])); // mov eax, gs:[0x10]
    guest.regs.gprs[RBX] = MMIO;
    completed(guest.run(&[0x8b, 0x03])); // mov eax, [rbx]: DS base ignored
    assert_eq!(
        guest
            .bus
            .log
            .iter()
            .map(|access| access.0)
            .collect::<Vec<_>>(),
        vec![MMIO + 0x10, MMIO]
    );
}

// ------------------------------------------------------------ two phases

#[test]
fn deferred_read_completes_later() {
    let mut guest = Guest::long_mode();
    guest.bus.defer = true;
    guest.regs.gprs[RDI] = MMIO + 4;
    guest.regs.gprs[RAX] = u64::MAX;
    let before = guest.regs;
    let Ok(Step::NeedsMmio { request, pending }) = guest.run(&[0x8b, 0x07]) else {
        panic!("expected a deferred read");
    };
    assert_eq!(
        request,
        MmioRequest {
            gpa: MMIO + 4,
            size: 4,
            write: false,
            data: 0
        }
    );
    assert_eq!(guest.regs, before, "nothing changes before completion");
    assert_eq!(pending.instruction().length, 2);
    completed(complete(
        &pending,
        &mut guest.regs,
        &mut guest.bus,
        0x1_2345_6789,
    ));
    assert_eq!(guest.regs.gprs[RAX], 0x2345_6789);
    assert_eq!(guest.regs.rip, CODE + 2);
}

#[test]
fn deferred_write_completes_later() {
    let mut guest = Guest::long_mode();
    guest.bus.defer = true;
    guest.regs.gprs[RDI] = MMIO;
    guest.regs.gprs[RAX] = 0x55;
    let Ok(Step::NeedsMmio { request, pending }) = guest.run(&[0x88, 0x07]) else {
        panic!("expected a deferred write");
    };
    assert_eq!(
        request,
        MmioRequest {
            gpa: MMIO,
            size: 1,
            write: true,
            data: 0x55
        }
    );
    assert_eq!(guest.regs.rip, CODE);
    completed(complete(&pending, &mut guest.regs, &mut guest.bus, 0));
    assert_eq!(guest.regs.rip, CODE + 2);
}

#[test]
fn deferred_read_modify_write_defers_twice() {
    let mut guest = Guest::long_mode();
    guest.bus.defer = true;
    guest.regs.gprs[RDI] = MMIO;
    let Ok(Step::NeedsMmio { pending, .. }) = guest.run(&[0x83, 0x0f, 0x01]) else {
        panic!("expected a deferred read"); // or dword [rdi], 1
    };
    let Ok(Step::NeedsMmio { request, pending }) =
        complete(&pending, &mut guest.regs, &mut guest.bus, 0x10)
    else {
        panic!("expected a deferred write");
    };
    assert_eq!(request.data, 0x11);
    assert!(request.write);
    assert_eq!(guest.regs.rip, CODE);
    completed(complete(&pending, &mut guest.regs, &mut guest.bus, 0));
    assert_eq!(guest.regs.rip, CODE + 3);
    assert_eq!(guest.regs.rflags & RFLAGS_ZF, 0);
}

// ------------------------------------------------------------ strings

#[test]
fn rep_stos_runs_one_element_per_call() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = MMIO;
    guest.regs.gprs[RCX] = 3;
    guest.regs.gprs[RAX] = 0xabcd;
    guest.code(&[0xf3, 0xab]); // rep stosd
    assert_eq!(guest.step(), Ok(Step::Done(Outcome::Repeat)));
    assert_eq!(guest.regs.rip, CODE);
    assert_eq!(guest.step(), Ok(Step::Done(Outcome::Repeat)));
    completed(guest.step());
    assert_eq!(guest.regs.rip, CODE + 2);
    assert_eq!(guest.regs.gprs[RCX], 0);
    assert_eq!(guest.regs.gprs[RDI], MMIO + 12);
    assert_eq!(
        guest
            .bus
            .log
            .iter()
            .map(|access| access.0)
            .collect::<Vec<_>>(),
        vec![MMIO, MMIO + 4, MMIO + 8]
    );
    // With RCX=0 nothing is stored.
    guest.regs.rip = CODE;
    completed(guest.step());
    assert_eq!(guest.bus.log.len(), 3);
}

#[test]
fn stos_backwards_with_df_and_without_rep() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = MMIO + 0x10;
    guest.regs.gprs[RCX] = 7;
    guest.regs.rflags |= RFLAGS_DF;
    completed(guest.run(&[0x48, 0xab])); // stosq
    assert_eq!(guest.regs.gprs[RDI], MMIO + 8);
    assert_eq!(guest.regs.gprs[RCX], 7);
}

#[test]
fn movs_from_ram_to_mmio_with_32_bit_addresses() {
    let mut guest = Guest::long_mode();
    guest.bus.ram.write_u32(0x9000, 0xcafe_f00d);
    guest.regs.gprs[RSI] = 0xffff_ffff_0000_9000; // upper half ignored (67)
    guest.regs.gprs[RDI] = MMIO;
    guest.regs.gprs[RCX] = 0x1_0000_0001;
    completed(guest.run(&[0x67, 0xf3, 0xa5])); // rep movsd with ECX=1
    assert_eq!(
        guest.bus.log,
        vec![(0x9000, 4, false, 0), (MMIO, 4, true, 0xcafe_f00d)]
    );
    // 32-bit address registers are written zero-extended.
    assert_eq!(guest.regs.gprs[RSI], 0x9004);
    assert_eq!(guest.regs.gprs[RDI], MMIO + 4);
    assert_eq!(guest.regs.gprs[RCX], 0);
}

#[test]
fn movs_16_bit_addresses_keep_the_upper_bits() {
    let mut guest = Guest::unpaged(CodeSize::Bits16);
    guest.context.ds.base = 0x1_0000;
    guest.context.es.base = 0xfee0_0000;
    guest.context.cs.base = 0x2_0000;
    guest.regs.rip = 0x100;
    guest.bus.ram.write_bytes(0x1_fffe, &[0x42]);
    guest.regs.gprs[RSI] = 0xaaaa_fffe;
    guest.regs.gprs[RDI] = 0xbbbb_0000;
    completed(guest.run(&[0xa4])); // movsb
    assert_eq!(
        guest.bus.log,
        vec![(0x1_fffe, 1, false, 0), (MMIO, 1, true, 0x42)]
    );
    assert_eq!(guest.regs.gprs[RSI], 0xaaaa_ffff);
    assert_eq!(guest.regs.gprs[RDI], 0xbbbb_0001);
    assert_eq!(guest.regs.rip, 0x101);
}

// ------------------------------------------------------------ ALU

#[test]
fn alu_flags() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = MMIO;
    let flags = |guest: &Guest| {
        guest.regs.rflags & (RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF)
    };

    guest.bus.registers.insert(MMIO, 0x7f);
    completed(guest.run(&[0x80, 0x07, 0x01])); // add byte [rdi], 1 → 0x80
    assert_eq!(guest.bus.registers[&MMIO], 0x80);
    assert_eq!(flags(&guest), RFLAGS_OF | RFLAGS_SF | RFLAGS_AF);

    guest.regs.gprs[RAX] = 1;
    guest.bus.registers.insert(MMIO, 0);
    completed(guest.run(&[0x2b, 0x07])); // sub eax, [rdi] → 1
    assert_eq!(flags(&guest), 0);
    completed(guest.run(&[0x39, 0x07])); // cmp [rdi], eax: 0 - 1
    assert_eq!(flags(&guest), RFLAGS_CF | RFLAGS_SF | RFLAGS_AF | RFLAGS_PF);
    assert_eq!(guest.bus.registers[&MMIO], 0, "CMP does not write");

    guest.bus.registers.insert(MMIO, 0xff00);
    completed(guest.run(&[0x66, 0x85, 0x07])); // test [rdi], ax (ax = 1)
    assert_eq!(flags(&guest), RFLAGS_ZF | RFLAGS_PF);

    guest.regs.rflags |= RFLAGS_CF;
    guest.bus.registers.insert(MMIO, u64::MAX);
    completed(guest.run(&[0x48, 0x11, 0x07])); // adc [rdi], rax: -1 + 1 + 1
    assert_eq!(guest.bus.registers[&MMIO], 1);
    assert_eq!(flags(&guest), RFLAGS_CF | RFLAGS_AF);

    guest.regs.rflags |= RFLAGS_CF;
    guest.bus.registers.insert(MMIO, 1);
    completed(guest.run(&[0x19, 0x07])); // sbb [rdi], eax: 1 - 1 - 1
    assert_eq!(guest.bus.registers[&MMIO], 0xffff_ffff);
    assert_eq!(flags(&guest), RFLAGS_CF | RFLAGS_SF | RFLAGS_AF | RFLAGS_PF);

    guest.bus.registers.insert(MMIO, 0xf0);
    completed(guest.run(&[0x80, 0x37, 0xff])); // xor byte [rdi], 0xff
    assert_eq!(guest.bus.registers[&MMIO], 0x0f);
    assert_eq!(flags(&guest), RFLAGS_PF);
    // Flags outside the arithmetic set are kept.
    assert_ne!(guest.regs.rflags & 2, 0);
}

// ------------------------------------------------------------ system

#[test]
fn control_register_instructions_are_reported() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RAX] = 0x1234_5678_9abc;
    assert_eq!(
        guest.run(&[0x0f, 0x22, 0xe0]), // mov cr4, rax
        Ok(Step::Done(Outcome::System {
            request: SystemRequest::WriteControlRegister {
                cr: 4,
                value: 0x1234_5678_9abc
            },
            next_rip: CODE + 3
        }))
    );
    assert_eq!(guest.regs.rip, CODE, "the caller moves RIP");
    assert_eq!(
        guest.run(&[0x41, 0x0f, 0x20, 0xd8]), // mov r8, cr3
        Ok(Step::Done(Outcome::System {
            request: SystemRequest::ReadControlRegister {
                cr: 3,
                destination: Register {
                    index: 8,
                    high_byte: false
                },
                size: 8
            },
            next_rip: CODE + 4
        }))
    );
    assert!(matches!(
        guest.run(&[0x44, 0x0f, 0x22, 0xc0]), // mov cr8, rax
        Ok(Step::Done(Outcome::System {
            request: SystemRequest::WriteControlRegister { cr: 8, .. },
            ..
        }))
    ));
    assert!(matches!(
        guest.run(&[0x0f, 0x06]),
        Ok(Step::Done(Outcome::System {
            request: SystemRequest::ClearTaskSwitched,
            ..
        }))
    ));
    guest.regs.gprs[RBX] = 0xffff_0009;
    assert!(matches!(
        guest.run(&[0x0f, 0x01, 0xf3]), // lmsw bx
        Ok(Step::Done(Outcome::System {
            request: SystemRequest::LoadMachineStatusWord { value: 9 },
            ..
        }))
    ));
    guest.context.fs.base = 0x1000;
    assert!(matches!(
        guest.run(&[0x64, 0x0f, 0x01, 0x7b, 0x08]), // invlpg fs:[rbx+8]
        Ok(Step::Done(Outcome::System {
            request: SystemRequest::InvalidatePage { linear: 0xffff_1011 },
            next_rip
        })) if next_rip == CODE + 5
    ));
    assert!(guest.bus.log.is_empty());
}

#[test]
fn stepped_over_instructions_are_not_emulated() {
    let mut guest = Guest::long_mode();
    guest.code(&[0x66, 0x0f, 0xa2]); // cpuid with a stray prefix
    let instruction = fetch_instruction(&guest.context, &guest.regs, &mut guest.memory).unwrap();
    assert_eq!(instruction.length, 3);
    assert_eq!(
        begin(
            &guest.context,
            &mut guest.regs,
            &instruction,
            &mut guest.memory,
            &mut guest.bus
        ),
        Err(EmulateError::Unsupported)
    );
    assert_eq!(
        guest.regs.next_rip(CodeSize::Bits64, instruction.length),
        CODE + 3
    );
}

// ------------------------------------------------------------ faults

#[test]
fn operand_faults_come_before_any_access() {
    let mut guest = Guest::long_mode();
    // Page 0x60_5000 not present, 0x60_6000 read-only.
    guest.memory.write_u64(PT + 5 * 8, 0x60_5000);
    guest.memory.write_u64(PT + 6 * 8, 0x60_6000 | 0b101);
    guest.regs.gprs[RDI] = 0x60_5008;
    assert_eq!(
        guest.run(&[0x8b, 0x07]),
        Err(EmulateError::Exception(Exception::PageFault(PageFault {
            linear_address: 0x60_5008,
            error_code: 0
        })))
    );
    guest.regs.gprs[RDI] = 0x60_6000;
    assert_eq!(
        guest.run(&[0x89, 0x07]),
        Err(EmulateError::Exception(Exception::PageFault(PageFault {
            linear_address: 0x60_6000,
            error_code: PF_PRESENT | PF_WRITE
        })))
    );
    // MOVS: the destination faults, so the source is not read either.
    guest.regs.gprs[RSI] = MMIO;
    assert!(matches!(
        guest.run(&[0xa5]),
        Err(EmulateError::Exception(Exception::PageFault(_)))
    ));
    assert!(guest.bus.log.is_empty());
    assert_eq!(guest.regs.rip, CODE);
}

#[test]
fn non_canonical_operands_raise_gp_or_ss() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = 0x8000_0000_0000_0000;
    assert_eq!(
        guest.run(&[0x8b, 0x07]),
        Err(EmulateError::Exception(Exception::GeneralProtection))
    );
    guest.regs.gprs[5] = 0x8000_0000_0000_0000;
    assert_eq!(
        guest.run(&[0x8b, 0x45, 0x00]),
        Err(EmulateError::Exception(Exception::StackFault))
    );
}

#[test]
fn segment_limits_outside_64_bit_mode() {
    let mut guest = Guest::unpaged(CodeSize::Bits32);
    guest.context.ds = SegmentCache {
        base: MMIO,
        limit: 0xfff,
    };
    guest.regs.rip = CODE;
    guest.regs.gprs[RDI] = 0xffc;
    completed(guest.run(&[0x8b, 0x07])); // the last dword of the segment
    assert_eq!(guest.bus.log, vec![(MMIO + 0xffc, 4, false, 0)]);
    guest.regs.gprs[RDI] = 0xffd;
    assert_eq!(
        guest.run(&[0x8b, 0x07]),
        Err(EmulateError::Exception(Exception::GeneralProtection))
    );
    guest.context.ss = guest.context.ds;
    guest.regs.gprs[4] = 0x1000;
    assert_eq!(
        guest.run(&[0x8b, 0x04, 0x24]),
        Err(EmulateError::Exception(Exception::StackFault))
    );
}

#[test]
fn real_mode_addressing() {
    let mut guest = Guest::unpaged(CodeSize::Bits16);
    guest.context.cs.base = 0x9_0000;
    guest.context.ds = SegmentCache {
        base: 0xfee0_0000,
        limit: 0xffff,
    };
    guest.regs.rip = 0x10;
    guest.regs.gprs[RBX] = 0x0f00;
    guest.regs.gprs[RSI] = 0x0004;
    completed(guest.run(&[0x8b, 0x40, 0x10])); // mov ax, [bx+si+0x10]
    assert_eq!(guest.bus.log, vec![(MMIO + 0xf14, 2, false, 0)]);
    assert_eq!(guest.regs.rip, 0x13);
}

#[test]
fn page_crossing_accesses_are_refused() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = 0x60_0ffe;
    assert_eq!(guest.run(&[0x8b, 0x07]), Err(EmulateError::Unsupported));
    assert!(guest.bus.log.is_empty());
}

#[test]
fn accessed_and_dirty_flags_are_set_for_operands() {
    let mut guest = Guest::long_mode();
    guest.regs.gprs[RDI] = 0x60_7000;
    completed(guest.run(&[0x89, 0x07]));
    let pte = guest.memory.peek_u64(PT + 7 * 8);
    assert_eq!(pte & 0x60, 0x60);
    // The code page's entry got A only.
    let code_pde = guest.memory.peek_u64(PD + 2 * 8);
    assert_eq!(code_pde & 0x60, 0x20);
}

// ------------------------------------------------------------ fetching

#[test]
fn fetch_crosses_a_page_only_when_needed() {
    let mut guest = Guest::long_mode();
    // An instruction ending right at the end of page 0x60_1000, with the
    // next page not present: fine.
    guest.memory.write_u64(PT + 2 * 8, 0x60_2000);
    guest.regs.rip = 0x60_1ffe;
    guest.code(&[0x8b, 0x07]);
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory)
            .unwrap()
            .length,
        2
    );
    // One that continues there faults on the next page, as a fetch.
    guest.regs.rip = 0x60_1ffd;
    guest.code(&[0x89, 0x86]);
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Exception(Exception::PageFault(PageFault {
            linear_address: 0x60_2000,
            error_code: PF_FETCH
        })))
    );
    // Mapped: the bytes join up.
    guest.memory.write_u64(PT + 2 * 8, 0x60_2000 | ALL);
    guest
        .memory
        .write_bytes(0x60_1ffd, &[0x66, 0x89, 0x86, 0x00, 0x01, 0x00, 0x00]);
    let instruction = fetch_instruction(&guest.context, &guest.regs, &mut guest.memory).unwrap();
    assert_eq!(instruction.length, 7);
}

#[test]
fn fetch_respects_the_code_segment_limit() {
    let mut guest = Guest::unpaged(CodeSize::Bits32);
    guest.context.cs.limit = 0x1001;
    guest.regs.rip = 0x1000;
    guest.code(&[0x8b, 0x07]);
    assert!(fetch_instruction(&guest.context, &guest.regs, &mut guest.memory).is_ok());
    guest.code(&[0x8b, 0x47, 0x01]);
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Exception(Exception::GeneralProtection))
    );
    guest.regs.rip = 0x2000;
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Exception(Exception::GeneralProtection))
    );
}

#[test]
fn fetch_reports_undefined_and_too_long() {
    let mut guest = Guest::long_mode();
    guest.code(&[0xf0, 0x89, 0x07]); // lock mov
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Exception(Exception::InvalidOpcode))
    );
    guest.code(&[0x66; 15]);
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Exception(Exception::GeneralProtection))
    );
    guest.code(&[0x0f, 0x0b]); // ud2: not ours
    assert_eq!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Unsupported)
    );
}

#[test]
fn fetch_from_unbacked_memory_is_a_memory_error() {
    let mut guest = Guest::long_mode();
    guest.regs.rip = 0x7000_0000;
    assert!(matches!(
        fetch_instruction(&guest.context, &guest.regs, &mut guest.memory),
        Err(EmulateError::Memory {
            error: MemoryError::Unmapped,
            ..
        })
    ));
    let _ = decode(&[0x90], CodeSize::Bits64);
}
