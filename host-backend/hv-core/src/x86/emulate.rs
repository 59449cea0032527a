//! Emulation of the instructions that reach the hypervisor through an MMIO
//! nested page fault, and of the control-register instructions, on top of
//! [`decode`](super::decode) and the guest page-table walker
//! ([`paging`](crate::paging)).
//!
//! # Flow
//! 1. [`fetch_instruction`] reads the bytes at CS.base + RIP through the
//!    guest's page tables (a second page only if the instruction needs it)
//!    and decodes them.
//! 2. [`begin`] computes the memory operand's linear address (segment base,
//!    limit, canonical form), translates it (faults before any access),
//!    applies the accessed/dirty flags the access sets, and performs the
//!    accesses through the [`Mmio`] bus.
//! 3. An access the kernel cannot finish at once (MMIO handled by the VMM
//!    in userspace) returns [`Step::NeedsMmio`] with a [`Pending`] state:
//!    the kernel exits to userspace with the request, and when the VMM
//!    comes back calls [`complete`] with the value read (anything for a
//!    write).  Registers are not touched until the last access is done, so
//!    an instruction that never completes leaves no trace.
//!
//! The bus sees guest-physical addresses only; it decides whether an
//! address is RAM (a MOVS between RAM and MMIO), in-kernel MMIO (the local
//! APIC) or userspace MMIO.
//!
//! # Semantics (Intel SDM vol. 1 §3.4.1.1, vol. 2 instruction pages)
//! - A 32-bit register write zero-extends into the upper half; 8- and
//!   16-bit writes leave the other bits alone; AH/CH/DH/BH are bits 15:8.
//! - MOVZX/MOVSX/MOVSXD extend the source to the operand size.
//! - ADD/OR/ADC/SBB/AND/SUB/XOR/CMP/TEST set CF, PF, AF, ZF, SF and OF as
//!   the SDM specifies; for the logical operations AF is undefined and is
//!   cleared here.
//! - MOVS/STOS do one element per [`begin`]: RSI/RDI move by the element
//!   size (backwards with RFLAGS.DF), RCX counts down under REP, all at
//!   the address size.  With REP and RCX still non-zero, RIP stays on the
//!   instruction ([`Outcome::Repeat`]): the kernel re-enters the guest (or
//!   calls [`begin`] again), exactly as an interrupted REP string
//!   instruction resumes on hardware.
//! - MOV CR, CLTS, LMSW and INVLPG are decoded but not applied: the
//!   caller gets an [`Outcome::System`] and applies the control-register
//!   semantics (and may inject #GP) itself.
//!
//! # Not handled
//! - Accesses that cross a page boundary ([`EmulateError::Unsupported`]):
//!   Linux's MMIO accessors are naturally aligned.
//! - Segment checks beyond the limit of expand-up segments (type,
//!   expand-down, null selectors) and alignment checking (#AC).
//! - LOCK semantics: a locked read-modify-write is done as a read then a
//!   write on the bus.
//! - LMSW with a memory operand, and every decoded instruction that is not
//!   listed above (CPUID, HLT, port I/O, …: the caller steps over those
//!   with [`Registers::next_rip`] and the decoded length).

use super::decode::{
    decode, truncate, CodeSize, DecodeError, Instruction, Mnemonic, Operand, Register, Segment,
    MAX_INSTRUCTION_LENGTH,
};
use crate::paging::{
    translate, Access, AccessKind, MemoryError, PageFault, PageTableWrite, PagingFeatures,
    PagingRegisters, Translation, WalkError,
};
use crate::vendor::Gpr;

/// RFLAGS.CF (bit 0): carry out of (or borrow into) the top bit.
pub const RFLAGS_CF: u64 = 1 << 0;
/// RFLAGS.PF (bit 2): the low byte of the result has even parity.
pub const RFLAGS_PF: u64 = 1 << 2;
/// RFLAGS.AF (bit 4): carry out of bit 3 (BCD adjust).
pub const RFLAGS_AF: u64 = 1 << 4;
/// RFLAGS.ZF (bit 6): the result is zero.
pub const RFLAGS_ZF: u64 = 1 << 6;
/// RFLAGS.SF (bit 7): the result's top bit.
pub const RFLAGS_SF: u64 = 1 << 7;
/// RFLAGS.DF (bit 10): string instructions step backwards.
pub const RFLAGS_DF: u64 = 1 << 10;
/// RFLAGS.OF (bit 11): signed overflow.
pub const RFLAGS_OF: u64 = 1 << 11;
/// The RFLAGS bits the ALU instructions write.
const ARITHMETIC_FLAGS: u64 = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF;

const RAX: u8 = Gpr::Rax as u8;
const RCX: u8 = Gpr::Rcx as u8;
const RSI: u8 = Gpr::Rsi as u8;
const RDI: u8 = Gpr::Rdi as u8;

/// The guest's general-purpose registers, RIP and RFLAGS.  (On SVM, RAX,
/// RSP, RIP and RFLAGS live in the VMCB: the kernel copies them in and
/// out.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15.
    pub gprs: [u64; 16],
    /// The instruction pointer (of the instruction being emulated).
    pub rip: u64,
    /// RFLAGS; the ALU instructions update the arithmetic flags.
    pub rflags: u64,
}

impl Registers {
    /// Reads `size` bytes of `register`, zero-extended.
    pub fn read(&self, register: Register, size: u8) -> u64 {
        let value = self
            .gprs
            .get(usize::from(register.index))
            .copied()
            .unwrap_or(0);
        if register.high_byte {
            (value >> 8) & 0xff
        } else {
            truncate(value, size)
        }
    }

    /// Writes `size` bytes of `register` with the architectural rules: a
    /// 4-byte write clears bits 63:32, 1- and 2-byte writes keep the rest.
    pub fn write(&mut self, register: Register, size: u8, value: u64) {
        let Some(slot) = self.gprs.get_mut(usize::from(register.index)) else {
            return;
        };
        *slot = match (size, register.high_byte) {
            (_, true) => (*slot & !0xff00) | ((value & 0xff) << 8),
            (1, false) => (*slot & !0xff) | (value & 0xff),
            (2, false) => (*slot & !0xffff) | (value & 0xffff),
            (4, false) => value & 0xffff_ffff,
            _ => value,
        };
    }

    /// The RIP after an instruction of `length` bytes, wrapping as the
    /// instruction pointer of `code_size` does.
    pub fn next_rip(&self, code_size: CodeSize, length: u8) -> u64 {
        let next = self.rip.wrapping_add(u64::from(length));
        match code_size {
            CodeSize::Bits16 => next & 0xffff,
            CodeSize::Bits32 => next & 0xffff_ffff,
            CodeSize::Bits64 => next,
        }
    }
}

/// The cached part of a segment register that address computation needs:
/// a subset of [`vendor::Segment`](crate::vendor::Segment), which converts
/// into it, kept apart so the emulator's inputs stay minimal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCache {
    /// The segment's linear base address.
    pub base: u64,
    /// The byte-granular limit (expand-up); ignored in 64-bit mode.
    pub limit: u32,
}

/// The base and limit of a vCPU's segment register (its selector and
/// attributes do not enter address computation here).
impl From<crate::vendor::Segment> for SegmentCache {
    fn from(segment: crate::vendor::Segment) -> Self {
        Self {
            base: segment.base,
            limit: segment.limit,
        }
    }
}

/// The guest state an emulation depends on besides the registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The default operand and address size (from CS and the mode).
    pub code_size: CodeSize,
    /// The current privilege level (SS.DPL / VMCB CPL).
    pub cpl: u8,
    /// The registers the guest's page-table walk depends on.
    pub paging: PagingRegisters,
    /// What the guest's CPUID says about paging (reserved bits).
    pub features: PagingFeatures,
    /// ES: destination of STOS/MOVS/INS.
    pub es: SegmentCache,
    /// CS: instruction fetches.
    pub cs: SegmentCache,
    /// SS: rSP/rBP-based operands (a limit violation is #SS).
    pub ss: SegmentCache,
    /// DS: the default data segment.
    pub ds: SegmentCache,
    /// FS (in 64-bit mode only its base applies).
    pub fs: SegmentCache,
    /// GS (in 64-bit mode only its base applies).
    pub gs: SegmentCache,
}

impl Context {
    /// The cached state of `segment`.
    pub fn segment(&self, segment: Segment) -> &SegmentCache {
        match segment {
            Segment::Es => &self.es,
            Segment::Cs => &self.cs,
            Segment::Ss => &self.ss,
            Segment::Ds => &self.ds,
            Segment::Fs => &self.fs,
            Segment::Gs => &self.gs,
        }
    }
}

/// An exception to inject into the guest instead of completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// #PF: CR2 and the error code to inject.
    PageFault(PageFault),
    /// #GP(0): a segment-limit violation, a non-canonical address or an
    /// instruction longer than 15 bytes.
    GeneralProtection,
    /// #SS(0): the same for a stack-segment access.
    StackFault,
    /// #UD.
    InvalidOpcode,
}

/// Why an instruction was not emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulateError {
    /// The guest takes this exception; no state was changed.
    Exception(Exception),
    /// A guest-physical access (a paging structure, instruction bytes or
    /// an operand) failed; see [`MemoryError`].
    Memory {
        /// The guest-physical address accessed.
        gpa: u64,
        /// Why the access failed.
        error: MemoryError,
    },
    /// The guest changed a paging-structure entry while we walked it:
    /// nothing was done; re-entering the guest re-executes the instruction.
    Retry,
    /// Valid guest code that this emulator does not handle (an instruction
    /// the decoder does not cover, one without a memory operand here, or
    /// an access crossing a page).  KVM reports this to userspace as an
    /// emulation failure.
    Unsupported,
    /// The paging registers are inconsistent (a hypervisor bug).
    InvalidState,
}

impl From<WalkError> for EmulateError {
    fn from(error: WalkError) -> Self {
        match error {
            WalkError::PageFault(fault) => EmulateError::Exception(Exception::PageFault(fault)),
            WalkError::NonCanonical { .. } => EmulateError::Exception(Exception::GeneralProtection),
            WalkError::Memory { gpa, error } => EmulateError::Memory { gpa, error },
            WalkError::InvalidPagingState => EmulateError::InvalidState,
        }
    }
}

/// Whether the bus finished an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioResult {
    /// Done; for a read, the value (in the low `size` bytes).
    Done(u64),
    /// Handled later (by the VMM in userspace): see [`Step::NeedsMmio`].
    Deferred,
}

/// The guest-physical bus: RAM, in-kernel devices and userspace MMIO.
/// `size` is 1, 2, 4 or 8 and the access never crosses a page.
pub trait Mmio {
    /// Reads `size` bytes at `gpa` (little-endian, in the low bytes).
    fn read(&mut self, gpa: u64, size: u8) -> Result<MmioResult, MemoryError>;
    /// Writes the low `size` bytes of `value` at `gpa`.
    fn write(&mut self, gpa: u64, size: u8, value: u64) -> Result<MmioResult, MemoryError>;
}

/// An access the caller must perform before calling [`complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioRequest {
    /// The guest-physical address of the access.
    pub gpa: u64,
    /// The access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// A write (of `data`) rather than a read.
    pub write: bool,
    /// The value to write (for a write).
    pub data: u64,
}

/// A control-register instruction for the caller to apply.  The caller
/// applies it, then sets RIP to the `next_rip` of [`Outcome::System`]
/// (or injects the #GP its checks call for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemRequest {
    /// MOV CRn, reg: the value to load into CR`cr`.
    WriteControlRegister {
        /// The control register number.
        cr: u8,
        /// The source register's value (already sized).
        value: u64,
    },
    /// MOV reg, CRn: store CR`cr` into `destination` with
    /// [`Registers::write`] and `size`.
    ReadControlRegister {
        /// The control register number.
        cr: u8,
        /// The general-purpose register to write.
        destination: Register,
        /// The operand size in bytes (8 in 64-bit mode, else 4).
        size: u8,
    },
    /// CLTS: clear CR0.TS.
    ClearTaskSwitched,
    /// LMSW: load CR0 bits 3:0 from `value` (PE cannot be cleared by it).
    LoadMachineStatusWord {
        /// The 16-bit source operand.
        value: u16,
    },
    /// INVLPG: flush the translation of `linear`.
    InvalidatePage {
        /// The linear address (segment base applied).
        linear: u64,
    },
}

/// What a finished instruction asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: registers written, RIP past the instruction.
    Completed,
    /// One iteration of a REP string instruction done; RIP still points at
    /// it and RCX is not zero yet.
    Repeat,
    /// Apply `request`, then set RIP to `next_rip`; registers untouched.
    System {
        /// The control-register operation to apply.
        request: SystemRequest,
        /// The RIP past the instruction.
        next_rip: u64,
    },
}

/// The result of [`begin`] or [`complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The instruction finished (or needs the caller's help, for `System`).
    Done(Outcome),
    /// Perform `request` (outside the kernel), then call [`complete`] with
    /// `pending`.
    NeedsMmio {
        /// The access to perform.
        request: MmioRequest,
        /// The state [`complete`] resumes from.
        pending: Pending,
    },
}

/// The accesses of one instruction, with their guest-physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    instruction: Instruction,
    next_rip: u64,
    /// Read `size` bytes at this GPA first.
    load: Option<(u64, u8)>,
    /// Then write `size` bytes here.
    store: Option<(u64, u8)>,
}

/// What an instruction does to the registers once its accesses are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Effects {
    store_value: u64,
    register: Option<(Register, u8, u64)>,
    rflags: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitingLoad,
    AwaitingStore(Effects),
}

/// An instruction waiting for a deferred bus access.  Plain data: the
/// kernel keeps it with the vCPU while userspace handles the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    plan: Plan,
    stage: Stage,
}

impl Pending {
    /// The instruction being emulated.
    pub fn instruction(&self) -> &Instruction {
        &self.plan.instruction
    }
}

// ------------------------------------------------------------ fetching

/// Reads and decodes the instruction at CS.base + RIP.
///
/// Bytes are read up to the end of the page (and of the CS limit outside
/// 64-bit mode); the next page is translated and read only if the
/// instruction continues there, so a fault on it is reported only when
/// the guest would have taken it.  The A flags of the pages used are set.
pub fn fetch_instruction<M: PageTableWrite + ?Sized>(
    context: &Context,
    regs: &Registers,
    memory: &mut M,
) -> Result<Instruction, EmulateError> {
    let mut bytes = [0u8; MAX_INSTRUCTION_LENGTH];
    let mut available = 0usize;
    // Outside 64-bit mode, bytes past the CS limit cannot be fetched.
    let limit_room = match context.code_size {
        CodeSize::Bits64 => MAX_INSTRUCTION_LENGTH,
        _ => match u64::from(context.cs.limit).checked_sub(regs.rip) {
            Some(room) => room.saturating_add(1).min(MAX_INSTRUCTION_LENGTH as u64) as usize,
            None => 0,
        },
    };
    let linear = code_linear(context, regs.rip);
    let mut translations: [Option<Translation>; 2] = [None, None];
    let access = Access::explicit(AccessKind::Fetch, context.cpl, regs.rflags);
    for translation_slot in translations.iter_mut() {
        if available >= limit_room {
            return Err(EmulateError::Exception(Exception::GeneralProtection));
        }
        let page_linear = code_wrap(context, linear.wrapping_add(available as u64));
        let translation = translate(
            memory,
            &context.paging,
            &context.features,
            page_linear,
            access,
        )?;
        let chunk =
            (translation.bytes_to_page_end().min(4096) as usize).min(limit_room - available);
        let target = bytes
            .get_mut(available..available + chunk)
            .ok_or(EmulateError::InvalidState)?;
        memory
            .read_bytes(translation.gpa, target)
            .map_err(|error| EmulateError::Memory {
                gpa: translation.gpa,
                error,
            })?;
        available += chunk;
        *translation_slot = Some(translation);
        let decoded = bytes.get(..available).ok_or(EmulateError::InvalidState)?;
        match decode(decoded, context.code_size) {
            Ok(instruction) => {
                for translation in translations.iter().flatten() {
                    if !translation.accessed_dirty.apply(memory).map_err(|error| {
                        EmulateError::Memory {
                            gpa: translation.gpa,
                            error,
                        }
                    })? {
                        return Err(EmulateError::Retry);
                    }
                }
                return Ok(instruction);
            }
            // The instruction goes on in the next page: read that too.
            Err(DecodeError::NeedMoreBytes) => {}
            Err(error) => return Err(decode_error(error)),
        }
    }
    // Two pages always hold 15 bytes; only the CS limit can stop earlier.
    Err(EmulateError::Exception(Exception::GeneralProtection))
}

fn decode_error(error: DecodeError) -> EmulateError {
    match error {
        DecodeError::TooLong => EmulateError::Exception(Exception::GeneralProtection),
        DecodeError::Undefined => EmulateError::Exception(Exception::InvalidOpcode),
        DecodeError::NeedMoreBytes | DecodeError::Unsupported => EmulateError::Unsupported,
    }
}

/// The linear address of `offset` in CS.
fn code_linear(context: &Context, offset: u64) -> u64 {
    code_wrap(context, context.cs.base.wrapping_add(offset))
}

fn code_wrap(context: &Context, linear: u64) -> u64 {
    match context.code_size {
        CodeSize::Bits64 => linear,
        _ => linear & 0xffff_ffff,
    }
}

// ------------------------------------------------------------ addressing

/// The linear address of `size` bytes at `offset` in `segment`, after the
/// limit check (outside 64-bit mode) that the CPU does first.
fn data_linear(
    context: &Context,
    segment: Segment,
    offset: u64,
    size: u8,
) -> Result<u64, EmulateError> {
    let cache = context.segment(segment);
    if context.code_size == CodeSize::Bits64 {
        // Only FS and GS have a base in 64-bit mode; there is no limit.
        let base = match segment {
            Segment::Fs | Segment::Gs => cache.base,
            _ => 0,
        };
        return Ok(base.wrapping_add(offset));
    }
    let last = offset.wrapping_add(u64::from(size) - 1);
    if last < offset || last > u64::from(cache.limit) {
        return Err(segment_fault(segment));
    }
    Ok(cache.base.wrapping_add(offset) & 0xffff_ffff)
}

fn segment_fault(segment: Segment) -> EmulateError {
    EmulateError::Exception(if segment == Segment::Ss {
        Exception::StackFault
    } else {
        Exception::GeneralProtection
    })
}

/// Translates a data access of `size` bytes; refuses one that crosses a
/// page.  Returns the GPA and the translation (for its A/D updates).
fn translate_data<M: PageTableWrite + ?Sized>(
    context: &Context,
    regs: &Registers,
    memory: &mut M,
    segment: Segment,
    linear: u64,
    size: u8,
    kind: AccessKind,
) -> Result<Translation, EmulateError> {
    let access = Access::explicit(kind, context.cpl, regs.rflags);
    let translation = translate(memory, &context.paging, &context.features, linear, access)
        .map_err(|error| match error {
            WalkError::NonCanonical { .. } => segment_fault(segment),
            other => other.into(),
        })?;
    if translation.bytes_to_page_end() < u64::from(size) {
        return Err(EmulateError::Unsupported);
    }
    Ok(translation)
}

// ------------------------------------------------------------ emulation

/// Starts emulating `instruction` (from [`fetch_instruction`]) at `regs`.
///
/// Translates every operand before touching anything, so a #PF or #GP
/// leaves no side effect; then performs the accesses through `bus`.
pub fn begin<M, B>(
    context: &Context,
    regs: &mut Registers,
    instruction: &Instruction,
    memory: &mut M,
    bus: &mut B,
) -> Result<Step, EmulateError>
where
    M: PageTableWrite + ?Sized,
    B: Mmio + ?Sized,
{
    let next_rip = regs.next_rip(context.code_size, instruction.length);
    if let Some(request) = system_request(context, regs, instruction, next_rip)? {
        return Ok(Step::Done(Outcome::System { request, next_rip }));
    }
    let mut plan = Plan {
        instruction: *instruction,
        next_rip,
        load: None,
        store: None,
    };
    let mut translations: [Option<Translation>; 2] = [None, None];
    match instruction.mnemonic {
        Mnemonic::Stos | Mnemonic::Movs => {
            let count = truncate(regs.gprs[usize::from(RCX)], instruction.address_size);
            if instruction.rep.is_some() && count == 0 {
                regs.rip = next_rip;
                return Ok(Step::Done(Outcome::Completed));
            }
            let size = instruction.operand_size;
            if instruction.mnemonic == Mnemonic::Movs {
                let segment = instruction.segment_override.unwrap_or(Segment::Ds);
                let offset = truncate(regs.gprs[usize::from(RSI)], instruction.address_size);
                let linear = data_linear(context, segment, offset, size)?;
                let source = translate_data(
                    context,
                    regs,
                    memory,
                    segment,
                    linear,
                    size,
                    AccessKind::Read,
                )?;
                plan.load = Some((source.gpa, size));
                translations[0] = Some(source);
            }
            let offset = truncate(regs.gprs[usize::from(RDI)], instruction.address_size);
            let linear = data_linear(context, Segment::Es, offset, size)?;
            let destination = translate_data(
                context,
                regs,
                memory,
                Segment::Es,
                linear,
                size,
                AccessKind::Write,
            )?;
            plan.store = Some((destination.gpa, size));
            translations[1] = Some(destination);
        }
        _ => {
            let (load, store) = memory_accesses(instruction).ok_or(EmulateError::Unsupported)?;
            if let (Some(operand), Some(size)) = (
                instruction.memory_operand(),
                memory_access_size(instruction),
            ) {
                let offset =
                    operand.effective_address(&regs.gprs, next_rip, instruction.address_size);
                let linear = data_linear(context, operand.segment, offset, size)?;
                let kind = if store {
                    AccessKind::Write
                } else {
                    AccessKind::Read
                };
                let translation =
                    translate_data(context, regs, memory, operand.segment, linear, size, kind)?;
                if load {
                    plan.load = Some((translation.gpa, size));
                }
                if store {
                    plan.store = Some((translation.gpa, size));
                }
                translations[0] = Some(translation);
            }
        }
    }
    for translation in translations.iter().flatten() {
        let applied =
            translation
                .accessed_dirty
                .apply(memory)
                .map_err(|error| EmulateError::Memory {
                    gpa: translation.gpa,
                    error,
                })?;
        if !applied {
            return Err(EmulateError::Retry);
        }
    }
    run(plan, regs, bus, None)
}

/// Continues an instruction after the deferred access of `pending` was
/// done; `read_value` is the value read (ignored after a write).
pub fn complete<B: Mmio + ?Sized>(
    pending: &Pending,
    regs: &mut Registers,
    bus: &mut B,
    read_value: u64,
) -> Result<Step, EmulateError> {
    match pending.stage {
        Stage::AwaitingLoad => run(pending.plan, regs, bus, Some(read_value)),
        Stage::AwaitingStore(effects) => Ok(Step::Done(apply(&pending.plan, regs, &effects))),
    }
}

/// Which accesses an instruction makes to its memory operand: (load,
/// store).  `None` for instructions this emulator does not execute.
fn memory_accesses(instruction: &Instruction) -> Option<(bool, bool)> {
    let destination_in_memory = matches!(instruction.operands[0], Operand::Memory(_));
    let source_in_memory = matches!(instruction.operands[1], Operand::Memory(_));
    Some(match instruction.mnemonic {
        Mnemonic::Mov => (source_in_memory, destination_in_memory),
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => (source_in_memory, false),
        Mnemonic::Cmp | Mnemonic::Test => (destination_in_memory || source_in_memory, false),
        mnemonic if mnemonic.is_arithmetic_with_result() => (
            destination_in_memory || source_in_memory,
            destination_in_memory,
        ),
        _ => return None,
    })
}

/// The control-register instructions, which only describe what to do.
fn system_request(
    context: &Context,
    regs: &Registers,
    instruction: &Instruction,
    next_rip: u64,
) -> Result<Option<SystemRequest>, EmulateError> {
    let size = instruction.operand_size;
    Ok(Some(match (instruction.mnemonic, instruction.operands) {
        (Mnemonic::MovCr, [Operand::ControlRegister(cr), Operand::Register(source)]) => {
            SystemRequest::WriteControlRegister {
                cr,
                value: regs.read(source, size),
            }
        }
        (Mnemonic::MovCr, [Operand::Register(destination), Operand::ControlRegister(cr)]) => {
            SystemRequest::ReadControlRegister {
                cr,
                destination,
                size,
            }
        }
        (Mnemonic::Clts, _) => SystemRequest::ClearTaskSwitched,
        (Mnemonic::Lmsw, [Operand::Register(source), _]) => SystemRequest::LoadMachineStatusWord {
            value: regs.read(source, 2) as u16,
        },
        (Mnemonic::Invlpg, [Operand::Memory(operand), _]) => {
            let offset = operand.effective_address(&regs.gprs, next_rip, instruction.address_size);
            let linear = match context.code_size {
                CodeSize::Bits64 => match operand.segment {
                    Segment::Fs | Segment::Gs => {
                        context.segment(operand.segment).base.wrapping_add(offset)
                    }
                    _ => offset,
                },
                _ => context.segment(operand.segment).base.wrapping_add(offset) & 0xffff_ffff,
            };
            SystemRequest::InvalidatePage { linear }
        }
        _ => return Ok(None),
    }))
}

/// Performs the plan's accesses from the load on (`loaded` is the value
/// of a load already done) and applies the effects.
fn run<B: Mmio + ?Sized>(
    plan: Plan,
    regs: &mut Registers,
    bus: &mut B,
    loaded: Option<u64>,
) -> Result<Step, EmulateError> {
    let loaded = match (plan.load, loaded) {
        (Some(_), Some(value)) => value,
        (Some((gpa, size)), None) => match bus
            .read(gpa, size)
            .map_err(|error| EmulateError::Memory { gpa, error })?
        {
            MmioResult::Done(value) => value,
            MmioResult::Deferred => {
                return Ok(Step::NeedsMmio {
                    request: MmioRequest {
                        gpa,
                        size,
                        write: false,
                        data: 0,
                    },
                    pending: Pending {
                        plan,
                        stage: Stage::AwaitingLoad,
                    },
                })
            }
        },
        (None, _) => 0,
    };
    let effects = compute(&plan.instruction, regs, loaded)?;
    if let Some((gpa, size)) = plan.store {
        let data = truncate(effects.store_value, size);
        match bus
            .write(gpa, size, data)
            .map_err(|error| EmulateError::Memory { gpa, error })?
        {
            MmioResult::Done(_) => {}
            MmioResult::Deferred => {
                return Ok(Step::NeedsMmio {
                    request: MmioRequest {
                        gpa,
                        size,
                        write: true,
                        data,
                    },
                    pending: Pending {
                        plan,
                        stage: Stage::AwaitingStore(effects),
                    },
                })
            }
        }
    }
    Ok(Step::Done(apply(&plan, regs, &effects)))
}

/// The value of a non-memory operand, or of the memory operand (`loaded`).
fn operand_value(regs: &Registers, operand: Operand, size: u8, loaded: u64) -> u64 {
    match operand {
        Operand::Register(register) => regs.read(register, size),
        Operand::Immediate(value) => truncate(value, size),
        Operand::Memory(_) => truncate(loaded, size),
        Operand::None | Operand::ControlRegister(_) | Operand::PortDx => 0,
    }
}

/// Sign-extends the low `size` bytes of `value` to 64 bits.
fn sign_extend(value: u64, size: u8) -> u64 {
    let unused = 64 - 8 * u32::from(size.clamp(1, 8));
    (((value << unused) as i64) >> unused) as u64
}

/// Works out the stored value, the register written and the new RFLAGS.
fn compute(
    instruction: &Instruction,
    regs: &Registers,
    loaded: u64,
) -> Result<Effects, EmulateError> {
    let size = instruction.operand_size;
    let [destination, source] = instruction.operands;
    let mut effects = Effects {
        store_value: 0,
        register: None,
        rflags: regs.rflags,
    };
    let register_destination = |value: u64| match destination {
        Operand::Register(register) => Some((register, size, value)),
        _ => None,
    };
    match instruction.mnemonic {
        Mnemonic::Stos => {
            effects.store_value = regs.read(
                Register {
                    index: RAX,
                    high_byte: false,
                },
                size,
            )
        }
        Mnemonic::Movs => effects.store_value = loaded,
        Mnemonic::Mov => {
            let value = operand_value(regs, source, size, loaded);
            effects.store_value = value;
            effects.register = register_destination(value);
        }
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
            let value = operand_value(regs, source, instruction.source_size, loaded);
            let value = if instruction.mnemonic == Mnemonic::Movzx {
                value
            } else {
                sign_extend(value, instruction.source_size)
            };
            effects.register = register_destination(truncate(value, size));
        }
        mnemonic => {
            let left = operand_value(regs, destination, size, loaded);
            let right = operand_value(regs, source, size, loaded);
            let (result, flags) = alu(mnemonic, size, left, right, regs.rflags & RFLAGS_CF != 0)
                .ok_or(EmulateError::Unsupported)?;
            effects.rflags = (regs.rflags & !ARITHMETIC_FLAGS) | flags;
            if !matches!(mnemonic, Mnemonic::Cmp | Mnemonic::Test) {
                effects.store_value = result;
                effects.register = register_destination(result);
            }
        }
    }
    Ok(effects)
}

/// One ALU operation on `size`-byte values: (result, arithmetic flags).
fn alu(mnemonic: Mnemonic, size: u8, left: u64, right: u64, carry: bool) -> Option<(u64, u64)> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let bits = 8 * u32::from(size);
    let mask = truncate(u64::MAX, size);
    let sign = 1u64 << (bits - 1);
    let carry = u64::from(carry);
    let (left, right) = (left & mask, right & mask);
    // Carry and borrow from the full sums in 128 bits, which cannot wrap.
    let (result, carry_out, overflow) = match mnemonic {
        Mnemonic::Add | Mnemonic::Adc => {
            let carry_in = if mnemonic == Mnemonic::Adc { carry } else { 0 };
            let wide = u128::from(left) + u128::from(right) + u128::from(carry_in);
            let result = wide as u64 & mask;
            let overflow = (left ^ result) & (right ^ result) & sign != 0;
            (result, wide > u128::from(mask), overflow)
        }
        Mnemonic::Sub | Mnemonic::Sbb | Mnemonic::Cmp => {
            let borrow_in = if mnemonic == Mnemonic::Sbb { carry } else { 0 };
            let subtrahend = u128::from(right) + u128::from(borrow_in);
            let result = left.wrapping_sub(right).wrapping_sub(borrow_in) & mask;
            let overflow = (left ^ right) & (left ^ result) & sign != 0;
            (result, u128::from(left) < subtrahend, overflow)
        }
        Mnemonic::And | Mnemonic::Test => (left & right, false, false),
        Mnemonic::Or => (left | right, false, false),
        Mnemonic::Xor => (left ^ right, false, false),
        _ => return None,
    };
    let mut flags = 0;
    if carry_out {
        flags |= RFLAGS_CF;
    }
    if overflow {
        flags |= RFLAGS_OF;
    }
    if result == 0 {
        flags |= RFLAGS_ZF;
    }
    if result & sign != 0 {
        flags |= RFLAGS_SF;
    }
    if (result as u8).count_ones() % 2 == 0 {
        flags |= RFLAGS_PF;
    }
    let arithmetic = !matches!(
        mnemonic,
        Mnemonic::And | Mnemonic::Test | Mnemonic::Or | Mnemonic::Xor
    );
    if arithmetic && (left ^ right ^ result) & 0x10 != 0 {
        flags |= RFLAGS_AF;
    }
    Some((result, flags))
}

/// Writes the effects into the registers and moves RIP (or, for a string
/// instruction, RSI/RDI/RCX).
fn apply(plan: &Plan, regs: &mut Registers, effects: &Effects) -> Outcome {
    let instruction = &plan.instruction;
    if let Some((register, size, value)) = effects.register {
        regs.write(register, size, value);
    }
    regs.rflags = effects.rflags;
    if matches!(instruction.mnemonic, Mnemonic::Stos | Mnemonic::Movs) {
        let address_size = instruction.address_size;
        let step = u64::from(instruction.operand_size);
        let step = if regs.rflags & RFLAGS_DF != 0 {
            step.wrapping_neg()
        } else {
            step
        };
        let advance = |regs: &mut Registers, index: u8| {
            let register = Register {
                index,
                high_byte: false,
            };
            let value = regs.read(register, address_size).wrapping_add(step);
            regs.write(register, address_size, value);
        };
        advance(regs, RDI);
        if instruction.mnemonic == Mnemonic::Movs {
            advance(regs, RSI);
        }
        if instruction.rep.is_some() {
            let counter = Register {
                index: RCX,
                high_byte: false,
            };
            let remaining = regs.read(counter, address_size).wrapping_sub(1);
            regs.write(counter, address_size, remaining);
            if truncate(remaining, address_size) != 0 {
                return Outcome::Repeat;
            }
        }
    }
    regs.rip = plan.next_rip;
    Outcome::Completed
}

/// The size of the memory access a decoded instruction makes (the
/// element size of a string instruction), or `None` without one.
pub fn memory_access_size(instruction: &Instruction) -> Option<u8> {
    match instruction.mnemonic {
        Mnemonic::Stos | Mnemonic::Movs => Some(instruction.operand_size),
        _ => {
            instruction.memory_operand()?;
            Some(if matches!(instruction.operands[0], Operand::Memory(_)) {
                instruction.operand_size
            } else {
                instruction.source_size
            })
        }
    }
}
