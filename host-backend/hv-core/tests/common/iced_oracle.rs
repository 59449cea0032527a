//! Differential oracle for `hv_core::x86::decode`: iced-x86 decodes the
//! same bytes and the two must agree.  Shared (by `#[path]`) between the
//! proptest in `tests/decode_iced.rs` and the cargo-fuzz target
//! `host-backend/fuzz/fuzz_targets/x86_decode.rs`.
//!
//! Rules:
//! - whenever hv-core accepts an instruction, iced must decode a valid
//!   instruction of the same length, of the same kind, with the same
//!   operands (registers, memory base/index/scale/displacement/segment,
//!   immediates, control registers), sizes, LOCK, REP and segment prefix;
//! - whenever hv-core refuses, iced must not decode a valid instruction
//!   of a kind hv-core covers, unless the refusal is one the decoder's
//!   documentation lists as deliberate;
//! - "need more bytes" must match iced running out of bytes, and
//!   "undefined"/"too long" must match iced's invalid.

use hv_core::x86::decode::{
    decode, CodeSize, DecodeError, Instruction, MemoryOperand, Mnemonic, Operand, RepPrefix,
    Segment,
};
use iced_x86::{Code, Decoder, DecoderOptions, MemorySize, OpKind, Register as IcedRegister};

/// What happened to one input, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    BothAccepted,
    BothRefused,
    /// hv-core refused a covered instruction for a documented reason.
    DeliberatelyRefused,
    NeedMoreBytes,
}

pub fn bitness(code_size: CodeSize) -> u32 {
    match code_size {
        CodeSize::Bits16 => 16,
        CodeSize::Bits32 => 32,
        CodeSize::Bits64 => 64,
    }
}

/// Compares both decoders on `bytes`; `Err` describes a disagreement.
pub fn check(bytes: &[u8], code_size: CodeSize) -> Result<Verdict, String> {
    let ours = decode(bytes, code_size);
    let mut decoder = Decoder::with_ip(bitness(code_size), bytes, 0, DecoderOptions::AMD);
    let theirs = decoder.decode();
    let their_error = decoder.last_error();
    let context = || {
        format!(
            "bytes {bytes:02x?} in {code_size:?}: ours {ours:?}, iced {theirs:?} ({:?}, len {})",
            their_error,
            theirs.len()
        )
    };
    match ours {
        Ok(instruction) => {
            if theirs.code() == Code::INVALID {
                return Err(format!("accepted what iced refuses: {}", context()));
            }
            compare(&instruction, &theirs, code_size)
                .map_err(|what| format!("{what}: {}", context()))?;
            Ok(Verdict::BothAccepted)
        }
        Err(DecodeError::NeedMoreBytes) => {
            if theirs.code() != Code::INVALID || bytes.len() >= 15 {
                return Err(format!("needs more bytes but iced decoded: {}", context()));
            }
            Ok(Verdict::NeedMoreBytes)
        }
        Err(DecodeError::TooLong | DecodeError::Undefined) => {
            if theirs.code() != Code::INVALID {
                return Err(format!("undefined for us, valid for iced: {}", context()));
            }
            Ok(Verdict::BothRefused)
        }
        Err(DecodeError::Unsupported) => {
            if theirs.code() == Code::INVALID || covered_mnemonic(theirs.code()).is_none() {
                return Ok(Verdict::BothRefused);
            }
            if let Some(reason) = deliberate_refusal(bytes, code_size, theirs.code()) {
                let _ = reason;
                return Ok(Verdict::DeliberatelyRefused);
            }
            Err(format!("refused a covered instruction: {}", context()))
        }
    }
}

/// The hv-core mnemonic of an iced code, for the forms hv-core covers.
pub fn covered_mnemonic(code: Code) -> Option<Mnemonic> {
    let name = format!("{code:?}");
    // Forms of covered mnemonics that the decoder leaves out: the
    // accumulator/immediate short forms (no memory operand), MOV reg, imm
    // (B0–BF), segment and debug registers, ARPL.
    let prefix = name.split('_').next().unwrap_or("");
    let alu = [
        "Add", "Or", "Adc", "Sbb", "And", "Sub", "Xor", "Cmp", "Test",
    ]
    .contains(&prefix);
    let accumulator_immediate = ["_AL_imm8", "_AX_imm16", "_EAX_imm32", "_RAX_imm32"]
        .iter()
        .any(|form| name.contains(form));
    let excluded = (alu && accumulator_immediate)
        || matches!(
            code,
            Code::Mov_r8_imm8 | Code::Mov_r16_imm16 | Code::Mov_r32_imm32 | Code::Mov_r64_imm64
        )
        || name.contains("Sreg")
        || name.contains("_dr")
        || name.contains("_tr");
    if excluded {
        return None;
    }
    Some(match prefix {
        "Mov" => {
            if name.contains("cr") {
                Mnemonic::MovCr
            } else {
                Mnemonic::Mov
            }
        }
        "Movzx" => Mnemonic::Movzx,
        "Movsx" => Mnemonic::Movsx,
        "Movsxd" => Mnemonic::Movsxd,
        "Movsb" | "Movsw" | "Movsd" | "Movsq" if name.contains("_m") => Mnemonic::Movs,
        "Stosb" | "Stosw" | "Stosd" | "Stosq" => Mnemonic::Stos,
        "Add" => Mnemonic::Add,
        "Or" => Mnemonic::Or,
        "Adc" => Mnemonic::Adc,
        "Sbb" => Mnemonic::Sbb,
        "And" => Mnemonic::And,
        "Sub" => Mnemonic::Sub,
        "Xor" => Mnemonic::Xor,
        "Cmp" => Mnemonic::Cmp,
        "Test" => Mnemonic::Test,
        "Clts" => Mnemonic::Clts,
        "Lmsw" => Mnemonic::Lmsw,
        "Invlpg" if name == "Invlpg_m" => Mnemonic::Invlpg,
        "Cpuid" => Mnemonic::Cpuid,
        "Rdmsr" => Mnemonic::Rdmsr,
        "Wrmsr" => Mnemonic::Wrmsr,
        "Rdtsc" => Mnemonic::Rdtsc,
        "Rdtscp" => Mnemonic::Rdtscp,
        "Hlt" => Mnemonic::Hlt,
        "Vmmcall" => Mnemonic::Vmmcall,
        "Pause" => Mnemonic::Pause,
        "Invd" => Mnemonic::Invd,
        "Wbinvd" => Mnemonic::Wbinvd,
        "Monitorw" | "Monitord" | "Monitorq" => Mnemonic::Monitor,
        "Mwait" => Mnemonic::Mwait,
        "Xsetbv" => Mnemonic::Xsetbv,
        "In" => Mnemonic::In,
        "Out" => Mnemonic::Out,
        "Insb" | "Insw" | "Insd" => Mnemonic::Ins,
        "Outsb" | "Outsw" | "Outsd" => Mnemonic::Outs,
        "Int3" => Mnemonic::Int3,
        "Int" if name == "Int_imm8" => Mnemonic::Int,
        "Into" => Mnemonic::Into,
        _ => return None,
    })
}

/// Skips the legacy prefixes and REX; returns (F2/F3 seen, 66 seen, the
/// first opcode byte and the byte after it).
fn scan_prefixes(bytes: &[u8], code_size: CodeSize) -> (bool, bool, Option<u8>, Option<u8>) {
    let mut rep = false;
    let mut operand_size = false;
    for (position, &byte) in bytes.iter().enumerate() {
        match byte {
            0xf2 | 0xf3 => rep = true,
            0x66 => operand_size = true,
            0xf0 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67 => {}
            0x40..=0x4f if code_size == CodeSize::Bits64 => {}
            _ => {
                return (
                    rep,
                    operand_size,
                    Some(byte),
                    bytes.get(position + 1).copied(),
                )
            }
        }
    }
    (rep, operand_size, None, None)
}

/// The documented reasons for refusing an instruction iced decodes.
fn deliberate_refusal(bytes: &[u8], code_size: CodeSize, code: Code) -> Option<&'static str> {
    let (rep, operand_size, opcode, second) = scan_prefixes(bytes, code_size);
    if matches!(
        code,
        Code::Test_rm8_imm8_F6r1
            | Code::Test_rm16_imm16_F7r1
            | Code::Test_rm32_imm32_F7r1
            | Code::Test_rm64_imm32_F7r1
    ) {
        return Some("the F6/F7 /1 alias of TEST");
    }
    if code == Code::Pause && opcode == Some(0x90) {
        // Reached only with REX.B, where 90 alone is XCHG r8, rAX.
        return Some("F3 REX.B 90: PAUSE for iced, XCHG r8 by the opcode map");
    }
    if opcode == Some(0x0f) && rep {
        return Some("F2/F3 in front of a 0F opcode");
    }
    if opcode == Some(0x0f) && second == Some(0x01) && operand_size {
        return Some("66 in front of a register form of 0F 01");
    }
    None
}

/// The size of the integer memory operands our instructions use (iced's
/// `MemorySize::size` needs its `instr_info` feature).
fn memory_bytes(size: MemorySize) -> usize {
    match size {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 => 2,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => 0,
    }
}

fn iced_segment(segment: Segment) -> IcedRegister {
    match segment {
        Segment::Es => IcedRegister::ES,
        Segment::Cs => IcedRegister::CS,
        Segment::Ss => IcedRegister::SS,
        Segment::Ds => IcedRegister::DS,
        Segment::Fs => IcedRegister::FS,
        Segment::Gs => IcedRegister::GS,
    }
}

/// The iced register for GPR `index` at `size` bytes.
fn iced_gpr(index: u8, high_byte: bool, size: u8) -> IcedRegister {
    let base = match (size, high_byte) {
        (1, true) => return IcedRegister::AH + u32::from(index),
        (1, false) => {
            // iced numbers AL..BL, AH..BH, SPL..DIL, R8L..R15L.
            if index < 4 {
                return IcedRegister::AL + u32::from(index);
            }
            return IcedRegister::SPL + u32::from(index - 4);
        }
        (2, _) => IcedRegister::AX,
        (4, _) => IcedRegister::EAX,
        _ => IcedRegister::RAX,
    };
    base + u32::from(index)
}

fn address_register(index: Option<u8>, address_size: u8) -> IcedRegister {
    match index {
        Some(index) => iced_gpr(index, false, address_size),
        None => IcedRegister::None,
    }
}

fn compare_memory(
    ours: &MemoryOperand,
    instruction: &Instruction,
    theirs: &iced_x86::Instruction,
    size: u8,
) -> Result<(), String> {
    let address_size = instruction.address_size;
    if ours.rip_relative {
        let expected_base = if address_size == 8 {
            IcedRegister::RIP
        } else {
            IcedRegister::EIP
        };
        if theirs.memory_base() != expected_base {
            return Err(format!("RIP-relative base {:?}", theirs.memory_base()));
        }
        let target = (ours.displacement as u64).wrapping_add(u64::from(instruction.length));
        let target = hv_core::x86::decode::truncate(target, address_size);
        if theirs.memory_displacement64() != target {
            return Err(format!(
                "RIP-relative target {target:#x} vs {:#x}",
                theirs.memory_displacement64()
            ));
        }
    } else {
        if theirs.memory_base() != address_register(ours.base, address_size) {
            return Err(format!("base {:?}", theirs.memory_base()));
        }
        let displacement = hv_core::x86::decode::truncate(ours.displacement as u64, address_size);
        let their_displacement =
            hv_core::x86::decode::truncate(theirs.memory_displacement64(), address_size);
        if displacement != their_displacement {
            return Err(format!(
                "displacement {displacement:#x} vs {their_displacement:#x}"
            ));
        }
    }
    if theirs.memory_index() != address_register(ours.index, address_size) {
        return Err(format!("index {:?}", theirs.memory_index()));
    }
    if ours.index.is_some() && u32::from(ours.scale) != theirs.memory_index_scale() {
        return Err(format!("scale {}", ours.scale));
    }
    if theirs.memory_segment() != iced_segment(ours.segment) {
        return Err(format!("segment {:?}", ours.segment));
    }
    // iced gives INVLPG and LMSW an unsized or 16-bit memory operand.
    let their_size = memory_bytes(theirs.memory_size());
    if instruction.mnemonic != Mnemonic::Invlpg && their_size != usize::from(size) {
        return Err(format!("memory size {size} vs {their_size}"));
    }
    Ok(())
}

fn compare_operand(
    instruction: &Instruction,
    operand: &Operand,
    theirs: &iced_x86::Instruction,
    position: u32,
) -> Result<(), String> {
    let kind = theirs.op_kind(position);
    // The size of this operand: the source of MOVZX/MOVSX(D) is narrower.
    let size = if position == 1 {
        instruction.source_size
    } else {
        instruction.operand_size
    };
    let register = theirs.op_register(position);
    let agrees = match *operand {
        Operand::None => return Ok(()),
        Operand::Register(ours) if instruction.mnemonic == Mnemonic::Lmsw => {
            // iced names LMSW's register at the operand size; only its
            // low 16 bits are used.
            kind == OpKind::Register
                && [2, 4, 8]
                    .iter()
                    .any(|&width| register == iced_gpr(ours.index, false, width))
        }
        Operand::Register(ours) => {
            kind == OpKind::Register && register == iced_gpr(ours.index, ours.high_byte, size)
        }
        Operand::ControlRegister(number) => {
            kind == OpKind::Register && register == IcedRegister::CR0 + u32::from(number)
        }
        Operand::PortDx => kind == OpKind::Register && register == IcedRegister::DX,
        Operand::Immediate(value) => {
            let is_immediate = matches!(
                kind,
                OpKind::Immediate8
                    | OpKind::Immediate16
                    | OpKind::Immediate32
                    | OpKind::Immediate64
                    | OpKind::Immediate8to16
                    | OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32to64
            );
            let width = if matches!(
                instruction.mnemonic,
                Mnemonic::In | Mnemonic::Out | Mnemonic::Int
            ) {
                1
            } else {
                size
            };
            is_immediate
                && hv_core::x86::decode::truncate(theirs.immediate(position), width) == value
        }
        Operand::Memory(memory) => {
            if kind != OpKind::Memory {
                return Err(format!("operand {position}: memory vs {kind:?}"));
            }
            return compare_memory(&memory, instruction, theirs, size);
        }
    };
    if agrees {
        Ok(())
    } else {
        Err(format!(
            "operand {position}: {operand:?} vs {kind:?} {register:?}"
        ))
    }
}

fn compare(
    ours: &Instruction,
    theirs: &iced_x86::Instruction,
    code_size: CodeSize,
) -> Result<(), String> {
    if usize::from(ours.length) != theirs.len() {
        return Err(format!("length {} vs {}", ours.length, theirs.len()));
    }
    if covered_mnemonic(theirs.code()) != Some(ours.mnemonic) {
        return Err(format!("kind {:?} vs {:?}", ours.mnemonic, theirs.code()));
    }
    if ours.lock != theirs.has_lock_prefix() {
        return Err("lock".into());
    }
    if theirs.segment_prefix()
        != ours
            .segment_override
            .map_or(IcedRegister::None, iced_segment)
    {
        return Err(format!("segment prefix {:?}", theirs.segment_prefix()));
    }
    match ours.mnemonic {
        Mnemonic::Movs | Mnemonic::Stos | Mnemonic::Ins | Mnemonic::Outs => {
            let rep = match ours.rep {
                None => !theirs.has_rep_prefix() && !theirs.has_repne_prefix(),
                Some(RepPrefix::Rep) => theirs.has_rep_prefix(),
                Some(RepPrefix::Repne) => theirs.has_repne_prefix(),
            };
            if !rep {
                return Err("rep prefix".into());
            }
            if memory_bytes(theirs.memory_size()) != usize::from(ours.operand_size) {
                return Err(format!("element size {}", ours.operand_size));
            }
            // The string operand kinds encode the address size.
            let destination_or_source =
                (0..theirs.op_count())
                    .map(|i| theirs.op_kind(i))
                    .find(|kind| {
                        matches!(
                            kind,
                            OpKind::MemorySegSI
                                | OpKind::MemorySegESI
                                | OpKind::MemorySegRSI
                                | OpKind::MemoryESDI
                                | OpKind::MemoryESEDI
                                | OpKind::MemoryESRDI
                        )
                    });
            let their_address_size = match destination_or_source {
                Some(OpKind::MemorySegSI | OpKind::MemoryESDI) => 2,
                Some(OpKind::MemorySegESI | OpKind::MemoryESEDI) => 4,
                Some(_) => 8,
                None => return Err("no string operand".into()),
            };
            if their_address_size != ours.address_size {
                return Err(format!("address size {}", ours.address_size));
            }
            if matches!(ours.mnemonic, Mnemonic::Movs | Mnemonic::Outs)
                && theirs.memory_segment()
                    != ours.segment_override.map_or(IcedRegister::DS, iced_segment)
            {
                return Err("source segment".into());
            }
        }
        _ => {
            let explicit = ours
                .operands
                .iter()
                .filter(|operand| **operand != Operand::None)
                .count() as u32;
            // iced lists implicit operands of a few instructions too
            // (MONITOR's rAX, and none of ours otherwise).
            if ours.mnemonic != Mnemonic::Monitor && explicit != theirs.op_count() {
                return Err(format!("{explicit} operands vs {}", theirs.op_count()));
            }
            for (position, operand) in ours.operands.iter().enumerate() {
                compare_operand(ours, operand, theirs, position as u32)?;
            }
        }
    }
    let _ = code_size;
    Ok(())
}
