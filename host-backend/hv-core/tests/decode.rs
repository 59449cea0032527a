//! Hand-picked decoder cases, one per decision in x86/decode.rs; the
//! differential test against iced-x86 (decode_iced.rs) covers the rest.

use hv_core::x86::decode::*;
use CodeSize::{Bits16, Bits32, Bits64};

fn ok(bytes: &[u8], code_size: CodeSize) -> Instruction {
    decode(bytes, code_size).unwrap_or_else(|error| panic!("{bytes:02x?}: {error:?}"))
}

fn memory(instruction: &Instruction) -> MemoryOperand {
    instruction.memory_operand().expect("a memory operand")
}

fn gpr(index: u8) -> Operand {
    Operand::Register(Register {
        index,
        high_byte: false,
    })
}

#[test]
fn lengths_of_the_stepped_over_instructions() {
    let cases: &[(&[u8], Mnemonic)] = &[
        (&[0x0f, 0xa2], Mnemonic::Cpuid),
        (&[0x0f, 0x32], Mnemonic::Rdmsr),
        (&[0x0f, 0x30], Mnemonic::Wrmsr),
        (&[0x0f, 0x31], Mnemonic::Rdtsc),
        (&[0x0f, 0x01, 0xf9], Mnemonic::Rdtscp),
        (&[0xf4], Mnemonic::Hlt),
        (&[0x0f, 0x01, 0xd9], Mnemonic::Vmmcall),
        (&[0xf3, 0x90], Mnemonic::Pause),
        (&[0x0f, 0x08], Mnemonic::Invd),
        (&[0x0f, 0x09], Mnemonic::Wbinvd),
        (&[0x0f, 0x01, 0xc8], Mnemonic::Monitor),
        (&[0x0f, 0x01, 0xc9], Mnemonic::Mwait),
        (&[0x0f, 0x01, 0xd1], Mnemonic::Xsetbv),
        (&[0xcc], Mnemonic::Int3),
        (&[0xcd, 0x80], Mnemonic::Int),
    ];
    for code_size in [Bits16, Bits32, Bits64] {
        for (bytes, mnemonic) in cases {
            let instruction = ok(bytes, code_size);
            assert_eq!(instruction.mnemonic, *mnemonic);
            assert_eq!(usize::from(instruction.length), bytes.len());
        }
    }
    // Prefixes count in the length.
    assert_eq!(ok(&[0x2e, 0x66, 0x0f, 0xa2], Bits64).length, 4);
    assert_eq!(ok(&[0x48, 0xf4], Bits64).length, 2);
    assert_eq!(ok(&[0xce], Bits32).mnemonic, Mnemonic::Into);
    assert_eq!(decode(&[0xce], Bits64), Err(DecodeError::Unsupported));
}

#[test]
fn need_more_bytes_too_long_and_trailing_bytes() {
    assert_eq!(decode(&[], Bits64), Err(DecodeError::NeedMoreBytes));
    assert_eq!(
        decode(&[0x66, 0x0f], Bits64),
        Err(DecodeError::NeedMoreBytes)
    );
    assert_eq!(
        decode(&[0x8b, 0x84, 0x24, 0x00], Bits64),
        Err(DecodeError::NeedMoreBytes)
    );
    // 14 prefixes + HLT is 15 bytes: fine; one more prefix is too long,
    // even when the buffer ends there.
    let mut bytes = vec![0x66; 14];
    bytes.push(0xf4);
    assert_eq!(ok(&bytes, Bits32).length, 15);
    bytes.insert(0, 0x66);
    assert_eq!(decode(&bytes, Bits32), Err(DecodeError::TooLong));
    assert_eq!(decode(&[0x66; 15], Bits32), Err(DecodeError::TooLong));
    assert_eq!(decode(&[0x66; 14], Bits32), Err(DecodeError::NeedMoreBytes));
    // A prefixed MOV with a 4-byte displacement and immediate reaching 16.
    let long = [
        0x26, 0x26, 0x26, 0x26, 0x66, 0xc7, 0x84, 0x24, 0, 0, 0, 0, 0x34, 0x12,
    ];
    assert_eq!(ok(&long, Bits32).length, 14);
    let mut longer = long.to_vec();
    longer.insert(0, 0x26);
    longer.insert(0, 0x26);
    assert_eq!(decode(&longer, Bits32), Err(DecodeError::TooLong));
    // Bytes after the instruction are not looked at.
    assert_eq!(ok(&[0xf4, 0xff, 0xff], Bits64).length, 1);
}

#[test]
fn operand_and_address_sizes() {
    assert_eq!(ok(&[0x8b, 0x07], Bits16).operand_size, 2);
    assert_eq!(ok(&[0x66, 0x8b, 0x07], Bits16).operand_size, 4);
    assert_eq!(ok(&[0x8b, 0x07], Bits32).operand_size, 4);
    assert_eq!(ok(&[0x66, 0x8b, 0x07], Bits32).operand_size, 2);
    assert_eq!(ok(&[0x8b, 0x07], Bits64).operand_size, 4);
    assert_eq!(ok(&[0x48, 0x8b, 0x07], Bits64).operand_size, 8);
    // REX.W wins over 66.
    assert_eq!(ok(&[0x66, 0x48, 0x8b, 0x07], Bits64).operand_size, 8);
    assert_eq!(ok(&[0x8b, 0x07], Bits64).address_size, 8);
    assert_eq!(ok(&[0x67, 0x8b, 0x07], Bits64).address_size, 4);
    assert_eq!(ok(&[0x67, 0x8b, 0x07], Bits32).address_size, 2);
    assert_eq!(ok(&[0x67, 0x8b, 0x07], Bits16).address_size, 4);
}

#[test]
fn rex_must_be_last_and_the_last_rex_counts() {
    // REX then 66: the REX is dropped (operand size 16, register 0).
    let dropped = ok(&[0x48, 0x66, 0x8b, 0x07], Bits64);
    assert_eq!(dropped.operand_size, 2);
    let replaced = ok(&[0x48, 0x44, 0x8b, 0x07], Bits64);
    assert_eq!(replaced.operand_size, 4);
    assert_eq!(replaced.operands[0], gpr(8));
    // In 32-bit code 0x48 is DEC eax: not ours.
    assert_eq!(
        decode(&[0x48, 0x8b, 0x07], Bits32),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn byte_registers_with_and_without_rex() {
    let without = ok(&[0x88, 0xe0], Bits64); // mov al, ah
    assert_eq!(
        without.operands,
        [
            gpr(0),
            Operand::Register(Register {
                index: 0,
                high_byte: true
            })
        ]
    );
    let with = ok(&[0x40, 0x88, 0xe0], Bits64); // mov al, spl
    assert_eq!(with.operands, [gpr(0), gpr(4)]);
}

#[test]
fn segment_override_rules() {
    assert_eq!(memory(&ok(&[0x8b, 0x07], Bits32)).segment, Segment::Ds);
    assert_eq!(
        memory(&ok(&[0x8b, 0x45, 0x00], Bits32)).segment,
        Segment::Ss
    ); // [ebp]
    assert_eq!(
        memory(&ok(&[0x8b, 0x04, 0x24], Bits32)).segment,
        Segment::Ss
    ); // [esp]
    assert_eq!(
        memory(&ok(&[0x41, 0x8b, 0x45, 0x00], Bits64)).segment,
        Segment::Ds
    ); // [r13]
    assert_eq!(memory(&ok(&[0x8b, 0x02], Bits16)).segment, Segment::Ss); // [bp+si]
                                                                         // The last override wins outside 64-bit mode...
    assert_eq!(
        memory(&ok(&[0x64, 0x26, 0x8b, 0x07], Bits32)).segment,
        Segment::Es
    );
    // ...but in 64-bit mode FS/GS beat the ignored ES/CS/SS/DS.
    assert_eq!(
        memory(&ok(&[0x64, 0x26, 0x8b, 0x07], Bits64)).segment,
        Segment::Fs
    );
    assert_eq!(
        memory(&ok(&[0x26, 0x65, 0x8b, 0x07], Bits64)).segment,
        Segment::Gs
    );
}

#[test]
fn addressing_forms_16_bit() {
    let absolute = memory(&ok(&[0x8b, 0x06, 0x34, 0x12], Bits16)); // [0x1234]
    assert_eq!(
        (absolute.base, absolute.index, absolute.displacement),
        (None, None, 0x1234)
    );
    let bp = memory(&ok(&[0x8b, 0x46, 0xfe], Bits16)); // [bp-2]
    assert_eq!(
        (bp.base, bp.displacement, bp.segment),
        (Some(5), -2, Segment::Ss)
    );
    let bx_di = memory(&ok(&[0x8b, 0x81, 0x00, 0x80], Bits16)); // [bx+di-0x8000]
    assert_eq!(
        (bx_di.base, bx_di.index, bx_di.displacement),
        (Some(3), Some(7), -0x8000)
    );
    let gprs = {
        let mut gprs = [0u64; 16];
        gprs[3] = 0xffff;
        gprs[7] = 0x8002;
        gprs
    };
    // The sum wraps at 16 bits.
    assert_eq!(bx_di.effective_address(&gprs, 0, 2), 0x0001);
}

#[test]
fn addressing_forms_32_and_64_bit() {
    // SIB with no base (mod 0, base 5): disp32 only.
    let no_base = memory(&ok(&[0x8b, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00], Bits32));
    assert_eq!(
        (
            no_base.base,
            no_base.index,
            no_base.scale,
            no_base.displacement
        ),
        (None, Some(1), 4, 0x1000)
    );
    // SIB index 4 means none; REX.X makes it R12.
    assert_eq!(memory(&ok(&[0x8b, 0x04, 0x24], Bits64)).index, None);
    assert_eq!(
        memory(&ok(&[0x42, 0x8b, 0x04, 0x24], Bits64)).index,
        Some(12)
    );
    // R12 as a base still needs a SIB; R13 with mod 0 is still RIP-relative.
    let r12 = ok(&[0x41, 0x8b, 0x04, 0x24], Bits64);
    assert_eq!((r12.length, memory(&r12).base), (4, Some(12)));
    let rip = ok(&[0x41, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00], Bits64);
    assert!(memory(&rip).rip_relative);
    assert_eq!(memory(&rip).base, None);
    // The same encoding in 32-bit code is an absolute disp32.
    assert!(!memory(&ok(&[0x8b, 0x05, 0x10, 0x00, 0x00, 0x00], Bits32)).rip_relative);
    // RIP-relative addresses count from the next instruction.
    let operand = memory(&rip);
    assert_eq!(operand.effective_address(&[0; 16], 0x1007, 8), 0x1017);
    // With 67 the sum wraps at 32 bits.
    assert_eq!(operand.effective_address(&[0; 16], 0xffff_fff8, 4), 0x8);
}

#[test]
fn moffs_size_follows_the_address_size() {
    assert_eq!(ok(&[0xa1, 0, 0, 0, 0, 0, 0, 0, 0], Bits64).length, 9);
    assert_eq!(ok(&[0x67, 0xa1, 0, 0, 0, 0], Bits64).length, 6);
    assert_eq!(ok(&[0xa3, 0x00, 0x10], Bits16).length, 3);
    let store = ok(&[0xa2, 0x00, 0x00, 0xe0, 0xfe], Bits32); // mov [0xfee00000], al
    assert_eq!(store.operand_size, 1);
    assert_eq!(
        memory(&store).displacement as u64 & 0xffff_ffff,
        0xfee0_0000
    );
    assert_eq!(store.operands[1], gpr(0));
}

#[test]
fn immediates_are_sized_and_sign_extended() {
    assert_eq!(
        ok(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff], Bits64).operands[1],
        Operand::Immediate(u64::MAX)
    );
    assert_eq!(
        ok(&[0x66, 0xc7, 0x07, 0x34, 0x12], Bits64).operands[1],
        Operand::Immediate(0x1234)
    );
    assert_eq!(
        ok(&[0x83, 0x07, 0xff], Bits32).operands[1],
        Operand::Immediate(0xffff_ffff)
    );
    assert_eq!(
        ok(&[0x80, 0x07, 0xff], Bits32).operands[1],
        Operand::Immediate(0xff)
    );
    assert_eq!(ok(&[0xf7, 0x07, 1, 0, 0, 0], Bits32).length, 6);
    // C6/C7 need /0; F6/F7 /1 (an undocumented TEST alias) is refused.
    assert_eq!(
        decode(&[0xc7, 0x0f, 0, 0, 0, 0], Bits32),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(
        decode(&[0xf6, 0x0f, 0], Bits32),
        Err(DecodeError::Unsupported)
    );
    // 82 is an alias of 80 outside 64-bit mode only.
    assert_eq!(ok(&[0x82, 0x07, 0x01], Bits32).mnemonic, Mnemonic::Add);
    assert_eq!(
        decode(&[0x82, 0x07, 0x01], Bits64),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn alu_direction_and_group_numbers() {
    let to_memory = ok(&[0x29, 0x07], Bits64); // sub [rdi], eax
    assert_eq!(
        (to_memory.mnemonic, to_memory.operands[1]),
        (Mnemonic::Sub, gpr(0))
    );
    assert!(matches!(to_memory.operands[0], Operand::Memory(_)));
    let from_memory = ok(&[0x2b, 0x07], Bits64); // sub eax, [rdi]
    assert_eq!(from_memory.operands[0], gpr(0));
    let mnemonics: Vec<_> = (0..8u8)
        .map(|n| ok(&[0x83, n << 3 | 7, 1], Bits64).mnemonic)
        .collect();
    assert_eq!(
        mnemonics,
        [
            Mnemonic::Add,
            Mnemonic::Or,
            Mnemonic::Adc,
            Mnemonic::Sbb,
            Mnemonic::And,
            Mnemonic::Sub,
            Mnemonic::Xor,
            Mnemonic::Cmp
        ]
    );
    // The accumulator short forms have no memory operand: not covered.
    assert_eq!(
        decode(&[0x05, 1, 0, 0, 0], Bits32),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn lock_is_undefined_except_on_memory_read_modify_write() {
    assert!(ok(&[0xf0, 0x01, 0x07], Bits64).lock);
    assert_eq!(
        decode(&[0xf0, 0x01, 0xc0], Bits64),
        Err(DecodeError::Undefined)
    ); // register destination
    assert_eq!(
        decode(&[0xf0, 0x03, 0x07], Bits64),
        Err(DecodeError::Undefined)
    ); // register destination
    assert_eq!(
        decode(&[0xf0, 0x39, 0x07], Bits64),
        Err(DecodeError::Undefined)
    ); // CMP
    assert_eq!(
        decode(&[0xf0, 0x89, 0x07], Bits64),
        Err(DecodeError::Undefined)
    ); // MOV
    assert_eq!(decode(&[0xf0, 0xf4], Bits64), Err(DecodeError::Undefined));
}

#[test]
fn control_register_moves() {
    let write = ok(&[0x0f, 0x22, 0xd8], Bits64); // mov cr3, rax
    assert_eq!(write.operands, [Operand::ControlRegister(3), gpr(0)]);
    assert_eq!(write.operand_size, 8);
    // mod is ignored: 0x18 reads as 0xd8, and no displacement follows.
    let ignored_mod = ok(&[0x0f, 0x20, 0x18], Bits32);
    assert_eq!(
        (ignored_mod.length, ignored_mod.operands),
        (3, [gpr(0), Operand::ControlRegister(3)])
    );
    assert_eq!(ignored_mod.operand_size, 4);
    // REX.R reaches CR8; REX.B reaches R8; 66 changes nothing.
    let cr8 = ok(&[0x66, 0x45, 0x0f, 0x22, 0xc0], Bits64);
    assert_eq!(
        (cr8.operands, cr8.operand_size),
        ([Operand::ControlRegister(8), gpr(8)], 8)
    );
    // AMD's LOCK MOV CR0 is CR8, also in 32-bit code.
    let alias = ok(&[0xf0, 0x0f, 0x20, 0xc0], Bits32);
    assert_eq!(
        (alias.operands[1], alias.lock),
        (Operand::ControlRegister(8), false)
    );
    assert_eq!(
        decode(&[0xf0, 0x0f, 0x20, 0xd0], Bits32),
        Err(DecodeError::Undefined)
    );
    for reserved in [1u8, 5, 6, 7] {
        assert_eq!(
            decode(&[0x0f, 0x22, 0xc0 | reserved << 3], Bits64),
            Err(DecodeError::Undefined)
        );
    }
    assert_eq!(
        decode(&[0x44, 0x0f, 0x22, 0xc8], Bits64),
        Err(DecodeError::Undefined)
    ); // CR9
}

#[test]
fn group_7_forms() {
    let invlpg = ok(&[0x0f, 0x01, 0x38], Bits64);
    assert_eq!(
        (invlpg.mnemonic, memory(&invlpg).base),
        (Mnemonic::Invlpg, Some(0))
    );
    let lmsw_memory = ok(&[0x0f, 0x01, 0x36, 0x00, 0x10], Bits16);
    assert_eq!(
        (lmsw_memory.mnemonic, lmsw_memory.length),
        (Mnemonic::Lmsw, 5)
    );
    let lmsw_register = ok(&[0x0f, 0x01, 0xf3], Bits64);
    assert_eq!(lmsw_register.operands[0], gpr(3));
    // SWAPGS (0F 01 F8), SGDT and VMGEXIT (F3 0F 01 D9) are not ours.
    assert_eq!(
        decode(&[0x0f, 0x01, 0xf8], Bits64),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(
        decode(&[0x0f, 0x01, 0x00], Bits64),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(
        decode(&[0xf3, 0x0f, 0x01, 0xd9], Bits64),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(
        decode(&[0x66, 0x0f, 0x01, 0xd9], Bits64),
        Err(DecodeError::Unsupported)
    );
    // F3 0F 09 is WBNOINVD.
    assert_eq!(
        decode(&[0xf3, 0x0f, 0x09], Bits64),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn pause_needs_f3_last_and_no_rex_b() {
    assert_eq!(ok(&[0xf2, 0xf3, 0x90], Bits64).mnemonic, Mnemonic::Pause);
    assert_eq!(ok(&[0xf3, 0x48, 0x90], Bits64).mnemonic, Mnemonic::Pause);
    assert_eq!(
        decode(&[0xf3, 0xf2, 0x90], Bits64),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(
        decode(&[0xf3, 0x41, 0x90], Bits64),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(decode(&[0x90], Bits64), Err(DecodeError::Unsupported));
}

#[test]
fn string_instructions() {
    let rep_stos = ok(&[0xf3, 0x48, 0xab], Bits64);
    assert_eq!(
        (rep_stos.mnemonic, rep_stos.operand_size, rep_stos.rep),
        (Mnemonic::Stos, 8, Some(RepPrefix::Rep))
    );
    let movs = ok(&[0x65, 0x67, 0xf2, 0xa4], Bits64);
    assert_eq!(
        (
            movs.operand_size,
            movs.address_size,
            movs.rep,
            movs.segment_override
        ),
        (1, 4, Some(RepPrefix::Repne), Some(Segment::Gs))
    );
    assert_eq!(ok(&[0xa5], Bits16).operand_size, 2);
}

#[test]
fn port_io() {
    let in_imm = ok(&[0xe5, 0x60], Bits64);
    assert_eq!(
        (in_imm.mnemonic, in_imm.operands, in_imm.operand_size),
        (Mnemonic::In, [gpr(0), Operand::Immediate(0x60)], 4)
    );
    // No 64-bit port I/O: REX.W is ignored; 66 gives 16 bits.
    assert_eq!(ok(&[0x48, 0xef], Bits64).operand_size, 4);
    assert_eq!(
        ok(&[0x66, 0xef], Bits64).operands,
        [Operand::PortDx, gpr(0)]
    );
    assert_eq!(ok(&[0x66, 0xef], Bits64).operand_size, 2);
    assert_eq!(ok(&[0xee], Bits16).operand_size, 1);
    let outs = ok(&[0x2e, 0x67, 0xf3, 0x6f], Bits32);
    assert_eq!(
        (
            outs.mnemonic,
            outs.address_size,
            outs.rep,
            outs.segment_override
        ),
        (Mnemonic::Outs, 2, Some(RepPrefix::Rep), Some(Segment::Cs))
    );
    assert_eq!(ok(&[0x6c], Bits32).mnemonic, Mnemonic::Ins);
}

#[test]
fn movzx_movsx_movsxd() {
    let movzx = ok(&[0x48, 0x0f, 0xb7, 0x07], Bits64);
    assert_eq!(
        (movzx.mnemonic, movzx.operand_size, movzx.source_size),
        (Mnemonic::Movzx, 8, 2)
    );
    let movsx = ok(&[0x66, 0x0f, 0xbe, 0x07], Bits32);
    assert_eq!(
        (movsx.mnemonic, movsx.operand_size, movsx.source_size),
        (Mnemonic::Movsx, 2, 1)
    );
    let movsxd = ok(&[0x48, 0x63, 0x07], Bits64);
    assert_eq!((movsxd.mnemonic, movsxd.source_size), (Mnemonic::Movsxd, 4));
    assert_eq!(ok(&[0x66, 0x63, 0x07], Bits64).source_size, 2);
    // 63 is ARPL outside 64-bit mode.
    assert_eq!(decode(&[0x63, 0x07], Bits32), Err(DecodeError::Unsupported));
    // F3 in front of a 0F opcode is refused (F3 0F B8 is POPCNT).
    assert_eq!(
        decode(&[0xf3, 0x0f, 0xb6, 0x07], Bits64),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn code_size_of_guest_modes() {
    assert_eq!(CodeSize::of_guest(false, false, false, false, true), Bits16);
    assert_eq!(CodeSize::of_guest(true, true, false, false, true), Bits16);
    assert_eq!(CodeSize::of_guest(true, false, true, true, false), Bits64);
    assert_eq!(CodeSize::of_guest(true, false, true, false, true), Bits32);
    assert_eq!(CodeSize::of_guest(true, false, false, true, false), Bits16);
}
