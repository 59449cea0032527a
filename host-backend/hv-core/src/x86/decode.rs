//! A deliberately small x86 instruction decoder: exactly the instructions
//! pvrs-kvm must emulate or step over, in 16-, 32- and 64-bit code.
//!
//! QEMU's TCG SVM implements neither NRIPS nor DecodeAssists, so the
//! hypervisor learns neither the length of an intercepted instruction nor,
//! for an MMIO nested page fault, its operands.  It has to fetch the bytes
//! at CS.base + RIP and decode them.  Getting the length wrong corrupts the
//! guest silently, so this decoder accepts only what it fully understands
//! and refuses everything else with a [`DecodeError`]; it never guesses.
//!
//! References: Intel SDM vol. 2 chapter 2 (instruction format: prefixes,
//! REX, ModR/M, SIB, displacement, immediate; tables 2-1 to 2-3 for the
//! 16- and 32-bit addressing forms, §2.2.1 for REX and RIP-relative
//! addressing), appendix A (opcode maps) and the instruction pages of
//! vol. 2; AMD APM vol. 3 (VMMCALL, MONITOR/MWAIT, the LOCK MOV CR0 alias
//! of CR8).
//!
//! # Covered
//! - `MOV` r/m↔reg (88, 89, 8A, 8B), `MOV` r/m, imm (C6 /0, C7 /0),
//!   `MOV` with a moffs (A0–A3); `MOVZX`/`MOVSX` (0F B6, B7, BE, BF);
//!   `MOVSXD` (63, 64-bit mode only; elsewhere 63 is ARPL).
//! - `MOVS`/`STOS` (A4, A5, AA, AB) with `REP` (F2 and F3 both repeat).
//! - The ALU forms with a ModR/M operand: `ADD OR ADC SBB AND SUB XOR CMP`
//!   (00–3B, not the AL/eAX, imm short forms, which never touch memory),
//!   group 1 with an immediate (80, 81, 83, and 82 outside 64-bit mode)
//!   and `TEST` (84, 85, F6 /0, F7 /0).  Linux's `readl`/`writel` are plain
//!   MOVs (arch/x86/include/asm/io.h); the ALU forms cost little here and
//!   cover MMIO done with `|=` or tests on a mapped register.
//! - `MOV` to/from CR0, CR2, CR3, CR4, CR8 (0F 20, 0F 22, with AMD's
//!   `LOCK MOV CR0` alias of CR8), `CLTS` (0F 06), `LMSW` (0F 01 /6),
//!   `INVLPG` (0F 01 /7 with a memory operand).
//! - Instructions that are only stepped over: `CPUID`, `RDMSR`, `WRMSR`,
//!   `RDTSC`, `RDTSCP`, `HLT`, `VMMCALL`, `PAUSE`, `INVD`, `WBINVD`,
//!   `MONITOR`, `MWAIT`, `XSETBV`, and `INT3`/`INT n`/`INTO` (for the
//!   return address of a software interrupt that has to be re-injected).
//! - Port I/O: `IN`/`OUT` with an immediate port or DX (E4–E7, EC–EF) and
//!   `INS`/`OUTS` (6C–6F) with `REP`, address size and segment override.
//!
//! Prefixes: any number of legacy prefixes in any order (the last of
//! F2/F3 and the last segment override win; in 64-bit mode FS/GS take
//! precedence over ES/CS/SS/DS, which are ignored there), REX in 64-bit
//! mode (only when it immediately precedes the opcode; the last one
//! counts), and the 15-byte limit, beyond which the CPU raises #GP.
//!
//! # Deliberately refused
//! - F2/F3 in front of any two-byte (0F) opcode: they select other
//!   instructions there (F3 0F 09 is WBNOINVD, F3 0F 01 D9 is VMGEXIT).
//!   This also refuses `REP`-prefixed `MOVZX`, which hardware executes but
//!   no compiler emits.
//! - 66 in front of the register forms of 0F 01 (VMMCALL, MONITOR, …).
//! - F3 with REX.B in front of 90: the opcode map makes 41 90 an XCHG with
//!   R8, and decoders disagree whether F3 still makes it PAUSE.
//! - VEX/EVEX/XOP encodings, the 0F 38 and 0F 3A maps, and everything not
//!   listed above (including XCHG, which Linux uses for some xAPIC writes
//!   only on the 11AP erratum, and the F6/F7 /1 alias of TEST).
//!
//! # Errors
//! [`DecodeError::NeedMoreBytes`] means the bytes ran out inside an
//! instruction that is still shorter than 15 bytes: the fetch stopped at a
//! page boundary and the next page has to be read (and, if it cannot be,
//! the guest gets the #PF of that page).  [`DecodeError::TooLong`] and
//! [`DecodeError::Undefined`] are what the CPU would have raised (#GP(0)
//! and #UD).  [`DecodeError::Unsupported`] is our limit, not the guest's
//! fault.

/// Hardware refuses longer instructions with #GP(0) (SDM vol. 2 §2.1).
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// The default operand and address size of the code segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSize {
    /// 16-bit code: real mode, virtual-8086, or a CS with D=0.
    Bits16,
    /// 32-bit code: a protected-mode CS with D=1 (and L=0).
    Bits32,
    /// 64-bit code: long mode with CS.L=1.
    Bits64,
}

impl CodeSize {
    /// The code size of the guest's current mode: 16-bit in real and
    /// virtual-8086 mode, 64-bit for a CS with L=1 in long mode, otherwise
    /// CS.D selects 32 or 16.  (Real mode with a 32-bit CS cached from
    /// protected mode, "unreal" code, is treated as 16-bit.)
    pub fn of_guest(
        protected_mode: bool,
        virtual_8086: bool,
        long_mode_active: bool,
        cs_long: bool,
        cs_default_big: bool,
    ) -> Self {
        if !protected_mode || virtual_8086 {
            CodeSize::Bits16
        } else if long_mode_active && cs_long {
            CodeSize::Bits64
        } else if cs_default_big {
            CodeSize::Bits32
        } else {
            CodeSize::Bits16
        }
    }
}

/// Why an instruction was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes ended inside the instruction, before 15 bytes: fetch more.
    NeedMoreBytes,
    /// The instruction would be longer than 15 bytes: #GP(0) on hardware.
    TooLong,
    /// The encoding raises #UD on hardware (a LOCK prefix where none is
    /// allowed, a control register that does not exist).
    Undefined,
    /// An instruction or encoding this decoder does not cover.
    Unsupported,
}

/// A segment register as an instruction names it (segment override
/// prefixes, default segments, the sreg field), in sreg encoding order.
///
/// Only these six can hold an operand's segment; the vCPU-state type
/// [`vendor::SegmentRegister`](crate::vendor::SegmentRegister) adds LDTR,
/// TR, GDTR and IDTR and converts from this one with `From`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// ES (sreg 0, prefix 26); the fixed destination of string stores.
    Es,
    /// CS (sreg 1, prefix 2E).
    Cs,
    /// SS (sreg 2, prefix 36); the default for rSP/rBP-based addresses.
    Ss,
    /// DS (sreg 3, prefix 3E); the default for other addresses.
    Ds,
    /// FS (sreg 4, prefix 64).
    Fs,
    /// GS (sreg 5, prefix 65).
    Gs,
}

/// Which repeat prefix an instruction carries (the last of F2/F3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepPrefix {
    /// F3: REP / REPE.
    Rep,
    /// F2: REPNE (MOVS/STOS/INS/OUTS repeat with it just as with F3).
    Repne,
}

/// A general-purpose register as an operand.  `index` is the register
/// number 0–15 (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15);
/// `high_byte` selects AH/CH/DH/BH (bits 15:8 of registers 0–3), which a
/// byte operand encoded as 4–7 means when there is no REX prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    /// The register number (0-15).
    pub index: u8,
    /// AH/CH/DH/BH rather than the low byte.
    pub high_byte: bool,
}

impl Register {
    const fn full(index: u8) -> Self {
        Self {
            index,
            high_byte: false,
        }
    }
}

/// A memory operand: `segment:[base + index * scale + displacement]`,
/// or `[next RIP + displacement]` when `rip_relative`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOperand {
    /// The segment after overrides (SS for rBP/rSP-based addressing).
    pub segment: Segment,
    /// The base register's number (0-15), if any.
    pub base: Option<u8>,
    /// The index register's number (0-15), if any (scaled by `scale`).
    pub index: Option<u8>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    /// Sign-extended to 64 bits (a 64-bit moffs is stored as is).
    pub displacement: i64,
    /// `[rip + disp32]` (64-bit mode, ModRM mod=00 rm=101).
    pub rip_relative: bool,
}

impl MemoryOperand {
    /// The effective address (the offset within the segment): the sum
    /// wraps to the address size, as the CPU computes it.  `next_rip` is
    /// the address of the following instruction, for RIP-relative forms.
    pub fn effective_address(&self, gprs: &[u64; 16], next_rip: u64, address_size: u8) -> u64 {
        let register = |index: u8| gprs.get(usize::from(index)).copied().unwrap_or(0);
        let mut address = self.displacement as u64;
        if self.rip_relative {
            address = address.wrapping_add(next_rip);
        }
        if let Some(base) = self.base {
            address = address.wrapping_add(register(base));
        }
        if let Some(index) = self.index {
            address = address.wrapping_add(register(index).wrapping_mul(u64::from(self.scale)));
        }
        truncate(address, address_size)
    }
}

/// Keeps the low `size` bytes of `value` (`size` 1, 2, 4 or 8).
pub const fn truncate(value: u64, size: u8) -> u64 {
    match size {
        1 => value & 0xff,
        2 => value & 0xffff,
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

/// An operand, destination first as in Intel syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// No operand in this slot.
    None,
    /// A general-purpose register (sized by the instruction).
    Register(Register),
    /// A memory operand.
    Memory(MemoryOperand),
    /// Truncated to the operand size (sign-extended first where the
    /// encoding says so, e.g. 83 /n ib).
    Immediate(u64),
    /// CR0–CR15 by number (only 0, 2, 3, 4 and 8 are decoded).
    ControlRegister(u8),
    /// The I/O port in DX.
    PortDx,
}

/// What an instruction does.  The fields of [`Instruction`] it uses are
/// described with each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mnemonic {
    /// `operands = [destination, source]`, register, memory or immediate.
    Mov,
    /// Zero-extending load of `source_size` bytes into a register.
    Movzx,
    /// Sign-extending load of `source_size` bytes into a register.
    Movsx,
    /// Sign-extending load of `source_size` (2 or 4) bytes; 64-bit mode.
    Movsxd,
    /// `MOVS`: \[seg:rSI\] → ES:\[rDI\]; no explicit operands.
    Movs,
    /// `STOS`: rAX → ES:\[rDI\]; no explicit operands.
    Stos,
    /// ADD: `operands = [destination, source]`, as for every ALU operation below.
    Add,
    /// OR.
    Or,
    /// ADC: add with carry.
    Adc,
    /// SBB: subtract with borrow.
    Sbb,
    /// AND.
    And,
    /// SUB.
    Sub,
    /// XOR.
    Xor,
    /// CMP: SUB that only sets the flags.
    Cmp,
    /// TEST: AND that only sets the flags.
    Test,
    /// `operands = [ControlRegister, Register]` for a write, the other
    /// way round for a read; the operand size is 8 in 64-bit mode, 4
    /// otherwise.
    MovCr,
    /// CLTS: clear CR0.TS; no operands.
    Clts,
    /// `operands[0]` is the 16-bit source (register or memory).
    Lmsw,
    /// `operands[0]` is the memory operand whose linear address is flushed.
    Invlpg,
    /// CPUID; no operands (these system instructions are decoded for their length).
    Cpuid,
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// RDTSC.
    Rdtsc,
    /// RDTSCP.
    Rdtscp,
    /// HLT.
    Hlt,
    /// VMMCALL (0F 01 D9).
    Vmmcall,
    /// PAUSE (F3 90).
    Pause,
    /// INVD.
    Invd,
    /// WBINVD.
    Wbinvd,
    /// MONITOR.
    Monitor,
    /// MWAIT.
    Mwait,
    /// XSETBV.
    Xsetbv,
    /// `operands = [Register(rAX part), Immediate(port) or PortDx]`.
    In,
    /// `operands = [Immediate(port) or PortDx, Register(rAX part)]`.
    Out,
    /// `INS`: port DX → ES:\[rDI\].
    Ins,
    /// `OUTS`: \[seg:rSI\] → port DX.
    Outs,
    /// INT3 (CC), the breakpoint trap.
    Int3,
    /// `operands[0]` is the vector.
    Int,
    /// 16/32-bit mode only.
    Into,
}

impl Mnemonic {
    /// ADD, OR, ADC, SBB, AND, SUB, XOR: the ALU operations that write
    /// their result (CMP and TEST only set flags).
    pub fn is_arithmetic_with_result(self) -> bool {
        matches!(
            self,
            Mnemonic::Add
                | Mnemonic::Or
                | Mnemonic::Adc
                | Mnemonic::Sbb
                | Mnemonic::And
                | Mnemonic::Sub
                | Mnemonic::Xor
        )
    }
}

/// A decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// What the instruction does.
    pub mnemonic: Mnemonic,
    /// Length in bytes, prefixes included (1–15).
    pub length: u8,
    /// Bytes of the operation (1, 2, 4 or 8); for instructions without
    /// data operands, the operand size their encoding selects.
    pub operand_size: u8,
    /// Bytes of a memory address (2, 4 or 8).
    pub address_size: u8,
    /// Destination then source; [`Operand::None`] where there is none.
    pub operands: [Operand; 2],
    /// For `MOVZX`/`MOVSX`/`MOVSXD`: bytes of the source; otherwise equal
    /// to `operand_size`.
    pub source_size: u8,
    /// The segment override prefix in effect, if any (for string
    /// instructions it selects the source segment; ES:rDI cannot be
    /// overridden).
    pub segment_override: Option<Segment>,
    /// The F2/F3 prefix, if any.
    pub rep: Option<RepPrefix>,
    /// A LOCK (F0) prefix was present.
    pub lock: bool,
}

impl Instruction {
    /// The memory operand, if the instruction has an explicit one.
    pub fn memory_operand(&self) -> Option<MemoryOperand> {
        self.operands.iter().find_map(|operand| match operand {
            Operand::Memory(memory) => Some(*memory),
            _ => None,
        })
    }
}

#[derive(Default)]
struct Prefixes {
    lock: bool,
    rep: Option<RepPrefix>,
    segment: Option<Segment>,
    operand_size_override: bool,
    address_size_override: bool,
    /// The REX byte (0 if none).
    rex: u8,
}

const REX_W: u8 = 8;
const REX_R: u8 = 4;
const REX_X: u8 = 2;
const REX_B: u8 = 1;

/// The ModR/M byte, with its memory operand already decoded.
struct ModRm {
    /// mod field (0–3).
    mode: u8,
    /// reg field, without REX.R (used as an opcode extension).
    reg_field: u8,
    /// reg field with REX.R.
    reg: u8,
    /// rm field with REX.B (a register number when `mode == 3`).
    rm: u8,
    memory: Option<MemoryOperand>,
}

struct Decoder<'a> {
    bytes: &'a [u8],
    position: usize,
    code_size: CodeSize,
    prefixes: Prefixes,
}

impl Decoder<'_> {
    fn next_byte(&mut self) -> Result<u8, DecodeError> {
        if self.position >= MAX_INSTRUCTION_LENGTH {
            return Err(DecodeError::TooLong);
        }
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(DecodeError::NeedMoreBytes)?;
        self.position += 1;
        Ok(byte)
    }

    /// A little-endian unsigned value of `size` bytes.
    fn next_unsigned(&mut self, size: u8) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in 0..u32::from(size) {
            value |= u64::from(self.next_byte()?) << (8 * shift);
        }
        Ok(value)
    }

    /// A little-endian value of `size` bytes, sign-extended to 64 bits.
    fn next_signed(&mut self, size: u8) -> Result<i64, DecodeError> {
        let value = self.next_unsigned(size)?;
        let unused = 64 - 8 * u32::from(size);
        Ok(((value << unused) as i64) >> unused)
    }

    fn is_64bit(&self) -> bool {
        self.code_size == CodeSize::Bits64
    }

    fn rex(&self, bit: u8) -> u8 {
        if self.prefixes.rex & bit != 0 {
            8
        } else {
            0
        }
    }

    /// The operand size of an instruction whose size follows 66/REX.W.
    fn operand_size(&self) -> u8 {
        if self.prefixes.rex & REX_W != 0 {
            8
        } else {
            match (self.code_size, self.prefixes.operand_size_override) {
                (CodeSize::Bits16, false) | (CodeSize::Bits32 | CodeSize::Bits64, true) => 2,
                _ => 4,
            }
        }
    }

    fn address_size(&self) -> u8 {
        match (self.code_size, self.prefixes.address_size_override) {
            (CodeSize::Bits16, false) | (CodeSize::Bits32, true) => 2,
            (CodeSize::Bits16, true) | (CodeSize::Bits32, false) | (CodeSize::Bits64, true) => 4,
            (CodeSize::Bits64, false) => 8,
        }
    }

    /// A general-purpose register of `size` bytes numbered `index` (REX
    /// already applied): without REX, byte registers 4–7 are AH–BH.
    fn register(&self, index: u8, size: u8) -> Register {
        if size == 1 && self.prefixes.rex == 0 && (4..8).contains(&index) {
            Register {
                index: index - 4,
                high_byte: true,
            }
        } else {
            Register::full(index)
        }
    }

    fn read_prefixes(&mut self) -> Result<u8, DecodeError> {
        loop {
            let byte = self.next_byte()?;
            let segment = match byte {
                0x26 => Some(Segment::Es),
                0x2e => Some(Segment::Cs),
                0x36 => Some(Segment::Ss),
                0x3e => Some(Segment::Ds),
                0x64 => Some(Segment::Fs),
                0x65 => Some(Segment::Gs),
                _ => None,
            };
            match byte {
                0xf0 => self.prefixes.lock = true,
                0xf2 => self.prefixes.rep = Some(RepPrefix::Repne),
                0xf3 => self.prefixes.rep = Some(RepPrefix::Rep),
                0x66 => self.prefixes.operand_size_override = true,
                0x67 => self.prefixes.address_size_override = true,
                0x40..=0x4f if self.is_64bit() => {
                    // REX counts only right before the opcode; a later
                    // REX replaces an earlier one.
                    self.prefixes.rex = byte;
                    continue;
                }
                _ if segment.is_some() => {
                    // In 64-bit mode ES/CS/SS/DS overrides are ignored
                    // once FS or GS has been seen (SDM vol. 1 §3.3.7.1).
                    let fs_or_gs = matches!(self.prefixes.segment, Some(Segment::Fs | Segment::Gs));
                    if !(self.is_64bit() && fs_or_gs)
                        || matches!(segment, Some(Segment::Fs | Segment::Gs))
                    {
                        self.prefixes.segment = segment;
                    }
                }
                _ => return Ok(byte),
            }
            // A legacy prefix after REX cancels the REX.
            self.prefixes.rex = 0;
        }
    }

    fn modrm(&mut self) -> Result<ModRm, DecodeError> {
        let byte = self.next_byte()?;
        let mode = byte >> 6;
        let reg_field = (byte >> 3) & 7;
        let rm_field = byte & 7;
        let mut modrm = ModRm {
            mode,
            reg_field,
            reg: reg_field | self.rex(REX_R),
            rm: rm_field | self.rex(REX_B),
            memory: None,
        };
        if mode == 3 {
            return Ok(modrm);
        }
        modrm.memory = Some(if self.address_size() == 2 {
            self.memory_16(mode, rm_field)?
        } else {
            self.memory_32_64(mode, rm_field)?
        });
        Ok(modrm)
    }

    /// A ModR/M byte whose mod field is ignored and read as 3 (MOV CR).
    fn modrm_register_only(&mut self) -> Result<ModRm, DecodeError> {
        let byte = self.next_byte()?;
        let reg_field = (byte >> 3) & 7;
        Ok(ModRm {
            mode: 3,
            reg_field,
            reg: reg_field | self.rex(REX_R),
            rm: (byte & 7) | self.rex(REX_B),
            memory: None,
        })
    }

    fn default_or_override(&self, stack_based: bool) -> Segment {
        self.prefixes.segment.unwrap_or(if stack_based {
            Segment::Ss
        } else {
            Segment::Ds
        })
    }

    /// 16-bit addressing (SDM vol. 2 table 2-1).
    fn memory_16(&mut self, mode: u8, rm: u8) -> Result<MemoryOperand, DecodeError> {
        const BX: u8 = 3;
        const BP: u8 = 5;
        const SI: u8 = 6;
        const DI: u8 = 7;
        let (base, index) = match rm {
            0 => (Some(BX), Some(SI)),
            1 => (Some(BX), Some(DI)),
            2 => (Some(BP), Some(SI)),
            3 => (Some(BP), Some(DI)),
            4 => (Some(SI), None),
            5 => (Some(DI), None),
            6 if mode == 0 => (None, None),
            6 => (Some(BP), None),
            _ => (Some(BX), None),
        };
        let displacement = match (mode, base) {
            (0, None) => self.next_signed(2)?,
            (0, _) => 0,
            (1, _) => self.next_signed(1)?,
            _ => self.next_signed(2)?,
        };
        Ok(MemoryOperand {
            segment: self.default_or_override(base == Some(BP)),
            base,
            index,
            scale: 1,
            displacement,
            rip_relative: false,
        })
    }

    /// 32- and 64-bit addressing (SDM vol. 2 tables 2-2, 2-3, §2.2.1.6).
    fn memory_32_64(&mut self, mode: u8, rm: u8) -> Result<MemoryOperand, DecodeError> {
        let mut base = None;
        let mut index = None;
        let mut scale = 1;
        let mut rip_relative = false;
        let mut displacement_size = match mode {
            1 => 1,
            2 => 4,
            _ => 0,
        };
        if rm == 4 {
            let sib = self.next_byte()?;
            scale = 1 << (sib >> 6);
            let index_register = ((sib >> 3) & 7) | self.rex(REX_X);
            if index_register != 4 {
                index = Some(index_register);
            }
            let base_field = sib & 7;
            if base_field == 5 && mode == 0 {
                displacement_size = 4;
            } else {
                base = Some(base_field | self.rex(REX_B));
            }
        } else if rm == 5 && mode == 0 {
            displacement_size = 4;
            rip_relative = self.is_64bit();
        } else {
            base = Some(rm | self.rex(REX_B));
        }
        let displacement = if displacement_size == 0 {
            0
        } else {
            self.next_signed(displacement_size)?
        };
        Ok(MemoryOperand {
            segment: self.default_or_override(matches!(base, Some(4 | 5))),
            base,
            index,
            scale,
            displacement,
            rip_relative,
        })
    }

    /// The r/m operand of `modrm` as a register of `size` bytes or memory.
    fn rm_operand(&self, modrm: &ModRm, size: u8) -> Operand {
        match modrm.memory {
            Some(memory) => Operand::Memory(memory),
            None => Operand::Register(self.register(modrm.rm, size)),
        }
    }

    fn reg_operand(&self, modrm: &ModRm, size: u8) -> Operand {
        Operand::Register(self.register(modrm.reg, size))
    }

    /// An immediate of `encoded` bytes, sign-extended and truncated to
    /// `size` bytes.
    fn immediate(&mut self, encoded: u8, size: u8) -> Result<Operand, DecodeError> {
        let value = self.next_signed(encoded)? as u64;
        Ok(Operand::Immediate(truncate(value, size)))
    }

    fn finish(
        &self,
        mnemonic: Mnemonic,
        operand_size: u8,
        operands: [Operand; 2],
    ) -> Result<Instruction, DecodeError> {
        Ok(Instruction {
            mnemonic,
            length: self.position as u8,
            operand_size,
            address_size: self.address_size(),
            operands,
            source_size: operand_size,
            segment_override: self.prefixes.segment,
            rep: self.prefixes.rep,
            lock: self.prefixes.lock,
        })
    }

    /// An instruction without operands whose encoding ends at the opcode.
    fn bare(&self, mnemonic: Mnemonic) -> Result<Instruction, DecodeError> {
        self.finish(
            mnemonic,
            self.operand_size(),
            [Operand::None, Operand::None],
        )
    }

    fn decode(&mut self) -> Result<Instruction, DecodeError> {
        let opcode = self.read_prefixes()?;
        let instruction = match opcode {
            0x0f => self.decode_two_byte()?,
            _ => self.decode_one_byte(opcode)?,
        };
        if instruction.lock && !lock_allowed(&instruction) {
            return Err(DecodeError::Undefined);
        }
        Ok(instruction)
    }

    /// `mnemonic r/m, imm` whose ModR/M reg field must be 0 (C6, C7, F6,
    /// F7): a byte immediate for byte operands, else 16 or 32 bits.
    fn rm_immediate(&mut self, mnemonic: Mnemonic, size: u8) -> Result<Instruction, DecodeError> {
        let modrm = self.modrm()?;
        if modrm.reg_field != 0 {
            return Err(DecodeError::Unsupported);
        }
        let immediate = self.immediate(size.min(4), size)?;
        self.finish(mnemonic, size, [self.rm_operand(&modrm, size), immediate])
    }

    fn decode_one_byte(&mut self, opcode: u8) -> Result<Instruction, DecodeError> {
        let full = self.operand_size();
        // Byte-sized forms have the low opcode bit clear.
        let size_of = |opcode: u8| if opcode & 1 == 0 { 1 } else { full };
        match opcode {
            // ALU r/m, reg (x0/x1) and reg, r/m (x2/x3).
            0x00..=0x3b if opcode & 7 < 4 && opcode & 0xc0 == 0 => {
                let mnemonic = alu_operation(opcode >> 3);
                let size = size_of(opcode);
                let modrm = self.modrm()?;
                let rm = self.rm_operand(&modrm, size);
                let reg = self.reg_operand(&modrm, size);
                let operands = if opcode & 2 == 0 {
                    [rm, reg]
                } else {
                    [reg, rm]
                };
                self.finish(mnemonic, size, operands)
            }
            0x63 if self.is_64bit() => {
                let modrm = self.modrm()?;
                let size = full;
                let source_size = size.min(4);
                let mut instruction = self.finish(
                    Mnemonic::Movsxd,
                    size,
                    [
                        self.reg_operand(&modrm, size),
                        self.rm_operand(&modrm, source_size),
                    ],
                )?;
                instruction.source_size = source_size;
                Ok(instruction)
            }
            0x80..=0x83 => {
                if opcode == 0x82 && self.is_64bit() {
                    return Err(DecodeError::Unsupported);
                }
                let size = size_of(opcode);
                let modrm = self.modrm()?;
                let mnemonic = alu_operation(modrm.reg_field);
                let immediate = match opcode {
                    0x81 => self.immediate(size.min(4), size)?,
                    _ => self.immediate(1, size)?,
                };
                self.finish(mnemonic, size, [self.rm_operand(&modrm, size), immediate])
            }
            0x84 | 0x85 => {
                let size = size_of(opcode);
                let modrm = self.modrm()?;
                let operands = [
                    self.rm_operand(&modrm, size),
                    self.reg_operand(&modrm, size),
                ];
                self.finish(Mnemonic::Test, size, operands)
            }
            0x88..=0x8b => {
                let size = size_of(opcode);
                let modrm = self.modrm()?;
                let rm = self.rm_operand(&modrm, size);
                let reg = self.reg_operand(&modrm, size);
                let operands = if opcode & 2 == 0 {
                    [rm, reg]
                } else {
                    [reg, rm]
                };
                self.finish(Mnemonic::Mov, size, operands)
            }
            0x90 if self.prefixes.rep == Some(RepPrefix::Rep) && self.prefixes.rex & REX_B == 0 => {
                self.bare(Mnemonic::Pause)
            }
            0xa0..=0xa3 => {
                let size = size_of(opcode);
                let offset = self.next_unsigned(self.address_size())?;
                let memory = Operand::Memory(MemoryOperand {
                    segment: self.default_or_override(false),
                    base: None,
                    index: None,
                    scale: 1,
                    displacement: offset as i64,
                    rip_relative: false,
                });
                let accumulator = Operand::Register(Register::full(0));
                let operands = if opcode & 2 == 0 {
                    [accumulator, memory]
                } else {
                    [memory, accumulator]
                };
                self.finish(Mnemonic::Mov, size, operands)
            }
            0xa4 | 0xa5 => self.finish(
                Mnemonic::Movs,
                size_of(opcode),
                [Operand::None, Operand::None],
            ),
            0xaa | 0xab => self.finish(
                Mnemonic::Stos,
                size_of(opcode),
                [Operand::None, Operand::None],
            ),
            // C6 F8 / C7 F8 are XABORT/XBEGIN; C6/C7 /1–/7 are undefined.
            0xc6 | 0xc7 => self.rm_immediate(Mnemonic::Mov, size_of(opcode)),
            0xcc => self.bare(Mnemonic::Int3),
            0xcd => {
                let vector = self.next_unsigned(1)?;
                self.finish(
                    Mnemonic::Int,
                    self.operand_size(),
                    [Operand::Immediate(vector), Operand::None],
                )
            }
            0xce if !self.is_64bit() => self.bare(Mnemonic::Into),
            0xe4..=0xe7 | 0xec..=0xef => {
                // IN/OUT never have a 64-bit operand: REX.W is ignored.
                let size = if opcode & 1 == 0 { 1 } else { full.min(4) };
                let port = if opcode & 8 == 0 {
                    Operand::Immediate(self.next_unsigned(1)?)
                } else {
                    Operand::PortDx
                };
                let accumulator = Operand::Register(Register::full(0));
                let (mnemonic, operands) = if opcode & 2 == 0 {
                    (Mnemonic::In, [accumulator, port])
                } else {
                    (Mnemonic::Out, [port, accumulator])
                };
                self.finish(mnemonic, size, operands)
            }
            0x6c..=0x6f => {
                let size = if opcode & 1 == 0 { 1 } else { full.min(4) };
                let mnemonic = if opcode & 2 == 0 {
                    Mnemonic::Ins
                } else {
                    Mnemonic::Outs
                };
                self.finish(mnemonic, size, [Operand::None, Operand::None])
            }
            0xf4 => self.bare(Mnemonic::Hlt),
            // F6/F7 /1 is an undocumented alias of TEST: refused.
            0xf6 | 0xf7 => self.rm_immediate(Mnemonic::Test, size_of(opcode)),
            _ => Err(DecodeError::Unsupported),
        }
    }

    fn decode_two_byte(&mut self) -> Result<Instruction, DecodeError> {
        let opcode = self.next_byte()?;
        if self.prefixes.rep.is_some() {
            return Err(DecodeError::Unsupported);
        }
        match opcode {
            0x01 => self.decode_group7(),
            0x06 => self.bare(Mnemonic::Clts),
            0x08 => self.bare(Mnemonic::Invd),
            0x09 => self.bare(Mnemonic::Wbinvd),
            0x20 | 0x22 => {
                // The mod field is ignored: the operand is always a
                // register and no SIB or displacement follows (SDM vol. 2,
                // MOV—Move to/from Control Registers).
                let modrm = self.modrm_register_only()?;
                let mut control_register = modrm.reg;
                // AMD: LOCK MOV CR0 is MOV CR8 (APM vol. 3, MOV CRn).
                if self.prefixes.lock {
                    if control_register != 0 {
                        return Err(DecodeError::Undefined);
                    }
                    control_register = 8;
                }
                if !matches!(control_register, 0 | 2 | 3 | 4 | 8) {
                    return Err(DecodeError::Undefined);
                }
                let size = if self.is_64bit() { 8 } else { 4 };
                let cr = Operand::ControlRegister(control_register);
                let gpr = Operand::Register(Register::full(modrm.rm));
                let operands = if opcode == 0x22 { [cr, gpr] } else { [gpr, cr] };
                // The LOCK of the CR8 alias is part of the encoding, not a
                // bus lock.
                self.prefixes.lock = false;
                self.finish(Mnemonic::MovCr, size, operands)
            }
            0x30 => self.bare(Mnemonic::Wrmsr),
            0x31 => self.bare(Mnemonic::Rdtsc),
            0x32 => self.bare(Mnemonic::Rdmsr),
            0xa2 => self.bare(Mnemonic::Cpuid),
            0xb6 | 0xb7 | 0xbe | 0xbf => {
                let size = self.operand_size();
                let source_size = if opcode & 1 == 0 { 1 } else { 2 };
                let mnemonic = if opcode & 8 == 0 {
                    Mnemonic::Movzx
                } else {
                    Mnemonic::Movsx
                };
                let modrm = self.modrm()?;
                let mut instruction = self.finish(
                    mnemonic,
                    size,
                    [
                        self.reg_operand(&modrm, size),
                        self.rm_operand(&modrm, source_size),
                    ],
                )?;
                instruction.source_size = source_size;
                Ok(instruction)
            }
            _ => Err(DecodeError::Unsupported),
        }
    }

    /// 0F 01: the system-instruction group 7 (SDM vol. 2 table A-6).
    fn decode_group7(&mut self) -> Result<Instruction, DecodeError> {
        let modrm = self.modrm()?;
        if modrm.mode != 3 {
            return match modrm.reg_field {
                6 => self.finish(
                    Mnemonic::Lmsw,
                    2,
                    [self.rm_operand(&modrm, 2), Operand::None],
                ),
                7 => self.finish(
                    Mnemonic::Invlpg,
                    self.operand_size(),
                    [self.rm_operand(&modrm, 1), Operand::None],
                ),
                _ => Err(DecodeError::Unsupported),
            };
        }
        if modrm.reg_field == 6 {
            return self.finish(
                Mnemonic::Lmsw,
                2,
                [self.rm_operand(&modrm, 2), Operand::None],
            );
        }
        if self.prefixes.operand_size_override {
            return Err(DecodeError::Unsupported);
        }
        let modrm_byte = 0xc0 | (modrm.reg_field << 3) | (modrm.rm & 7);
        let mnemonic = match modrm_byte {
            0xc8 => Mnemonic::Monitor,
            0xc9 => Mnemonic::Mwait,
            0xd1 => Mnemonic::Xsetbv,
            0xd9 => Mnemonic::Vmmcall,
            0xf9 => Mnemonic::Rdtscp,
            _ => return Err(DecodeError::Unsupported),
        };
        self.bare(mnemonic)
    }
}

/// The group-1 ALU operation numbered `number` (its /digit in 80–83, and
/// the row of 00–3B it heads); only the low three bits count.
fn alu_operation(number: u8) -> Mnemonic {
    match number & 7 {
        0 => Mnemonic::Add,
        1 => Mnemonic::Or,
        2 => Mnemonic::Adc,
        3 => Mnemonic::Sbb,
        4 => Mnemonic::And,
        5 => Mnemonic::Sub,
        6 => Mnemonic::Xor,
        _ => Mnemonic::Cmp,
    }
}

/// LOCK is allowed only on a read-modify-write of memory by ADD … XOR (not
/// CMP or TEST) (SDM vol. 2, LOCK), besides AMD's MOV CR8 alias, whose
/// LOCK the decoder has already consumed.
fn lock_allowed(instruction: &Instruction) -> bool {
    instruction.mnemonic.is_arithmetic_with_result()
        && matches!(instruction.operands[0], Operand::Memory(_))
}

/// Decodes the instruction at the start of `bytes` in code of `code_size`.
///
/// `bytes` may be shorter than the instruction (see
/// [`DecodeError::NeedMoreBytes`]); bytes after it are ignored.
pub fn decode(bytes: &[u8], code_size: CodeSize) -> Result<Instruction, DecodeError> {
    Decoder {
        bytes,
        position: 0,
        code_size,
        prefixes: Prefixes::default(),
    }
    .decode()
}
