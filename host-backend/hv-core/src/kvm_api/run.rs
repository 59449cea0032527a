//! `struct kvm_run`, the page a vCPU shares with userspace through mmap
//! (api.rst section 5): where each field lives, the writers that describe
//! an exit, and the reader of what userspace leaves there before the next
//! KVM_RUN.
//!
//! The vCPU mmap is [`KVM_VCPU_MMAP_SIZE`] bytes: `kvm_run` in page 0, the
//! data of a port I/O exit in page [`KVM_PIO_PAGE_OFFSET`] (so
//! `io.data_offset` is always one page, as in `emulator_pio_in_out`), and
//! the coalesced MMIO ring in page [`KVM_COALESCED_MMIO_PAGE_OFFSET`]; see
//! [`VcpuMmapPage`].  The writers take the run page and the PIO page as two
//! buffers because the module allocates them as two pages.
//!
//! Userspace can change the page at any time.  The module must hand
//! [`read_run_request`] and the completion readers a private copy, taken
//! once per KVM_RUN, so that a value checked is the value used.
//!
//! [`VcpuMmapPage`]: super::constants::VcpuMmapPage

use super::constants::*;
use super::errno::Error;
use super::layout::kvm_sync_regs;
use super::wire::Wire;

/// The size of `struct kvm_run` on x86.
pub const KVM_RUN_SIZE: usize = 2352;

// Offsets of the fields of `struct kvm_run` (`tests/kvm_uapi_header.rs`
// checks each against `offsetof`).
/// Offset of `request_interrupt_window` (u8, in): exit once an interrupt can be injected.
pub const REQUEST_INTERRUPT_WINDOW: usize = 0;
/// Offset of `immediate_exit` (u8, in): return EINTR at once instead of running.
pub const IMMEDIATE_EXIT: usize = 1;
/// Offset of `exit_reason` (u32, out): `KVM_EXIT_*`.
pub const EXIT_REASON: usize = 8;
/// Offset of `ready_for_interrupt_injection` (u8, out): KVM_INTERRUPT would be taken now.
pub const READY_FOR_INTERRUPT_INJECTION: usize = 12;
/// Offset of `if_flag` (u8, out): the guest's RFLAGS.IF.
pub const IF_FLAG: usize = 13;
/// Offset of `flags` (u16, out): `KVM_RUN_X86_*`.
pub const FLAGS: usize = 14;
/// Offset of `cr8` (u64, in and out): the task priority.
pub const CR8: usize = 16;
/// Offset of `apic_base` (u64, out): the IA32_APIC_BASE MSR.
pub const APIC_BASE: usize = 24;
/// The start of the exit union, 256 bytes.
pub const EXIT_UNION: usize = 32;
/// The size of the exit union in bytes.
pub const EXIT_UNION_SIZE: usize = 256;
/// Offset of `hw.hardware_exit_reason` (u64) of KVM_EXIT_UNKNOWN.
pub const HW_HARDWARE_EXIT_REASON: usize = 32;
/// Offset of `fail_entry.hardware_entry_failure_reason` (u64).
pub const FAIL_ENTRY_HARDWARE_ENTRY_FAILURE_REASON: usize = 32;
/// Offset of `fail_entry.cpu` (u32).
pub const FAIL_ENTRY_CPU: usize = 40;
/// Offset of `ex.exception` (u32): the vector of KVM_EXIT_EXCEPTION.
pub const EX_EXCEPTION: usize = 32;
/// Offset of `ex.error_code` (u32).
pub const EX_ERROR_CODE: usize = 36;
/// Offset of `io.direction` (u8): `KVM_EXIT_IO_IN` or `KVM_EXIT_IO_OUT`.
pub const IO_DIRECTION: usize = 32;
/// Offset of `io.size` (u8): bytes per access.
pub const IO_SIZE: usize = 33;
/// Offset of `io.port` (u16).
pub const IO_PORT: usize = 34;
/// Offset of `io.count` (u32): the number of accesses.
pub const IO_COUNT: usize = 36;
/// Offset of `io.data_offset` (u64): where the data are, from the start of the mmap.
pub const IO_DATA_OFFSET: usize = 40;
/// Offset of `mmio.phys_addr` (u64).
pub const MMIO_PHYS_ADDR: usize = 32;
/// Offset of `mmio.data` (8 bytes): written bytes, or where userspace puts read data.
pub const MMIO_DATA: usize = 40;
/// Offset of `mmio.len` (u32): the access size in bytes.
pub const MMIO_LEN: usize = 48;
/// Offset of `mmio.is_write` (u8).
pub const MMIO_IS_WRITE: usize = 52;
/// Offset of `internal.suberror` (u32): `KVM_INTERNAL_ERROR_*`.
pub const INTERNAL_SUBERROR: usize = 32;
/// Offset of `internal.ndata` (u32): the valid words of `internal.data`.
pub const INTERNAL_NDATA: usize = 36;
/// Offset of `internal.data` (16 u64s).
pub const INTERNAL_DATA: usize = 40;
/// The words of `internal.data` and `system_event.data`.
pub const EXIT_DATA_WORDS: usize = 16;
/// Offset of `emulation_failure.flags` (u64), over `internal.data[0]`.
pub const EMULATION_FAILURE_FLAGS: usize = 40;
/// Offset of `emulation_failure.insn_size` (u8).
pub const EMULATION_FAILURE_INSN_SIZE: usize = 48;
/// Offset of `emulation_failure.insn_bytes` (15 bytes).
pub const EMULATION_FAILURE_INSN_BYTES: usize = 49;
/// The room for instruction bytes in an emulation failure exit.
pub const EMULATION_FAILURE_INSN_MAX: usize = 15;
/// Offset of `system_event.type` (u32): `KVM_SYSTEM_EVENT_*`.
pub const SYSTEM_EVENT_TYPE: usize = 32;
/// Offset of `system_event.ndata` (u32): the valid words of `system_event.data`.
pub const SYSTEM_EVENT_NDATA: usize = 36;
/// Offset of `system_event.data` (16 u64s).
pub const SYSTEM_EVENT_DATA: usize = 40;
/// Offset of `kvm_valid_regs` (u64, out): `KVM_SYNC_X86_*` bits KVM filled in `s`.
pub const KVM_VALID_REGS: usize = 288;
/// `kvm_dirty_regs` (u64, in): `KVM_SYNC_X86_*` bits userspace changed in `s`.
pub const KVM_DIRTY_REGS: usize = 296;
/// The start of the `s` union holding [`kvm_sync_regs`].
pub const SYNC_REGS: usize = 304;

/// Every field above: the C member designator, its offset and size, for
/// the header test.
pub const KVM_RUN_FIELDS: &[(&str, usize, usize)] = &[
    ("request_interrupt_window", REQUEST_INTERRUPT_WINDOW, 1),
    ("immediate_exit", IMMEDIATE_EXIT, 1),
    ("exit_reason", EXIT_REASON, 4),
    (
        "ready_for_interrupt_injection",
        READY_FOR_INTERRUPT_INJECTION,
        1,
    ),
    ("if_flag", IF_FLAG, 1),
    ("flags", FLAGS, 2),
    ("cr8", CR8, 8),
    ("apic_base", APIC_BASE, 8),
    ("padding", EXIT_UNION, EXIT_UNION_SIZE),
    ("hw.hardware_exit_reason", HW_HARDWARE_EXIT_REASON, 8),
    (
        "fail_entry.hardware_entry_failure_reason",
        FAIL_ENTRY_HARDWARE_ENTRY_FAILURE_REASON,
        8,
    ),
    ("fail_entry.cpu", FAIL_ENTRY_CPU, 4),
    ("ex.exception", EX_EXCEPTION, 4),
    ("ex.error_code", EX_ERROR_CODE, 4),
    ("io.direction", IO_DIRECTION, 1),
    ("io.size", IO_SIZE, 1),
    ("io.port", IO_PORT, 2),
    ("io.count", IO_COUNT, 4),
    ("io.data_offset", IO_DATA_OFFSET, 8),
    ("mmio.phys_addr", MMIO_PHYS_ADDR, 8),
    ("mmio.data", MMIO_DATA, 8),
    ("mmio.len", MMIO_LEN, 4),
    ("mmio.is_write", MMIO_IS_WRITE, 1),
    ("internal.suberror", INTERNAL_SUBERROR, 4),
    ("internal.ndata", INTERNAL_NDATA, 4),
    ("internal.data", INTERNAL_DATA, 8 * EXIT_DATA_WORDS),
    ("emulation_failure.suberror", INTERNAL_SUBERROR, 4),
    ("emulation_failure.ndata", INTERNAL_NDATA, 4),
    ("emulation_failure.flags", EMULATION_FAILURE_FLAGS, 8),
    (
        "emulation_failure.insn_size",
        EMULATION_FAILURE_INSN_SIZE,
        1,
    ),
    (
        "emulation_failure.insn_bytes",
        EMULATION_FAILURE_INSN_BYTES,
        EMULATION_FAILURE_INSN_MAX,
    ),
    ("system_event.type", SYSTEM_EVENT_TYPE, 4),
    ("system_event.ndata", SYSTEM_EVENT_NDATA, 4),
    ("system_event.data", SYSTEM_EVENT_DATA, 8 * EXIT_DATA_WORDS),
    ("system_event.flags", SYSTEM_EVENT_DATA, 8),
    ("kvm_valid_regs", KVM_VALID_REGS, 8),
    ("kvm_dirty_regs", KVM_DIRTY_REGS, 8),
    ("s", SYNC_REGS, SYNC_REGS_SIZE_BYTES as usize),
];

/// `io.data_offset`: the PIO data page, one page into the vCPU mmap.
pub const PIO_DATA_OFFSET: u64 = KVM_PIO_PAGE_OFFSET as u64 * PAGE_SIZE as u64;

fn put<T: Wire>(page: &mut [u8], offset: usize, value: T) -> Result<(), Error> {
    value
        .to_bytes(page.get_mut(offset..).ok_or(Error::ShortBuffer)?)
        .ok_or(Error::ShortBuffer)
}

fn get<T: Wire>(page: &[u8], offset: usize) -> Result<T, Error> {
    T::from_bytes(page.get(offset..).ok_or(Error::ShortBuffer)?).ok_or(Error::ShortBuffer)
}

/// What KVM reports on every exit (`post_kvm_run_save` in `x86.c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitState {
    /// RFLAGS.IF of the guest.
    pub if_flag: bool,
    /// The task priority, CR8.
    pub cr8: u64,
    /// The APIC base MSR.
    pub apic_base: u64,
    /// Whether KVM_INTERRUPT would be delivered now (always true with an
    /// in-kernel PIC).
    pub ready_for_interrupt_injection: bool,
    /// `KVM_RUN_X86_*` bits; KVM clears `flags` at each KVM_RUN, so this
    /// is the whole value.
    pub flags: u16,
}

/// The direction of a port I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// The guest reads (IN, INS): userspace fills the data page.
    In,
    /// The guest writes (OUT, OUTS): the data page holds what it wrote.
    Out,
}

/// An exit to describe in the run page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit<'a> {
    /// KVM_EXIT_IO: `count` accesses of `size` (1, 2 or 4) bytes to
    /// `port`, all data together at most one page.  For `Out`, `data` is
    /// the `size * count` bytes written; for `In` it is ignored and the
    /// data page is zeroed, as KVM does.
    Io {
        /// In or out.
        direction: IoDirection,
        /// The access size in bytes.
        size: u8,
        /// The port.
        port: u16,
        /// The number of accesses (more than 1 for REP INS/OUTS).
        count: u32,
        /// The bytes written (`Out` only).
        data: &'a [u8],
    },
    /// KVM_EXIT_MMIO: an access of `len` (1 to 8) bytes; `write` holds the
    /// bytes of a write, `None` for a read (completed with
    /// [`read_mmio_completion`]).
    Mmio {
        /// The guest physical address accessed.
        phys_addr: u64,
        /// The access size in bytes.
        len: u32,
        /// The bytes of a write; `None` for a read.
        write: Option<&'a [u8]>,
    },
    /// KVM_EXIT_HLT: the guest halted without an in-kernel local APIC.
    Hlt,
    /// KVM_EXIT_SHUTDOWN: a triple fault (or SVM's shutdown intercept).
    Shutdown,
    /// KVM_EXIT_IRQ_WINDOW_OPEN: userspace asked with
    /// `request_interrupt_window` and interrupts can now be injected.
    IrqWindowOpen,
    /// KVM_EXIT_INTR: a signal interrupted KVM_RUN (the ioctl returns
    /// EINTR).
    Intr,
    /// KVM_EXIT_FAIL_ENTRY: VMRUN failed; on SVM the reason is the exit
    /// code (`SVM_EXIT_ERR`) and `cpu` the CPU of the attempt.
    FailEntry {
        /// The hardware's reason (the SVM exit code).
        hardware_entry_failure_reason: u64,
        /// The CPU the entry was attempted on.
        cpu: u32,
    },
    /// KVM_EXIT_INTERNAL_ERROR with any sub-code except EMULATION, and at
    /// most 16 words of data (`ndata` is their number).
    InternalError {
        /// `KVM_INTERNAL_ERROR_*`.
        suberror: u32,
        /// The words of `internal.data`.
        data: &'a [u64],
    },
    /// KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION, laid out as
    /// `prepare_emulation_failure_exit` does: `flags` as data word 0, then
    /// with `insn` (at most 15 bytes, padded with NOPs, 0x90) its size and
    /// bytes as words 1-2, then `data`.
    EmulationFailure {
        /// The bytes of the instruction that failed, if they were read.
        insn: Option<&'a [u8]>,
        /// Further words after the flags and instruction.
        data: &'a [u64],
    },
    /// KVM_EXIT_SYSTEM_EVENT of `type_` (`KVM_SYSTEM_EVENT_*`) with at most
    /// 16 words of data.
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        type_: u32,
        /// The words of `system_event.data`.
        data: &'a [u64],
    },
    /// KVM_EXIT_UNKNOWN with the hardware's exit reason.
    Unknown {
        /// The hardware's exit code.
        hardware_exit_reason: u64,
    },
}

impl Exit<'_> {
    /// The `exit_reason` this exit writes.
    pub const fn reason(&self) -> u32 {
        match self {
            Exit::Io { .. } => KVM_EXIT_IO,
            Exit::Mmio { .. } => KVM_EXIT_MMIO,
            Exit::Hlt => KVM_EXIT_HLT,
            Exit::Shutdown => KVM_EXIT_SHUTDOWN,
            Exit::IrqWindowOpen => KVM_EXIT_IRQ_WINDOW_OPEN,
            Exit::Intr => KVM_EXIT_INTR,
            Exit::FailEntry { .. } => KVM_EXIT_FAIL_ENTRY,
            Exit::InternalError { .. } | Exit::EmulationFailure { .. } => KVM_EXIT_INTERNAL_ERROR,
            Exit::SystemEvent { .. } => KVM_EXIT_SYSTEM_EVENT,
            Exit::Unknown { .. } => KVM_EXIT_UNKNOWN,
        }
    }
}

/// The bytes of a PIO transfer, refusing what does not fit the data page.
fn pio_length(size: u8, count: u32) -> Result<usize, Error> {
    if !matches!(size, 1 | 2 | 4) || count == 0 {
        return Err(Error::ExitDoesNotFit);
    }
    let length = usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(usize::from(size)))
        .ok_or(Error::ExitDoesNotFit)?;
    if length > PAGE_SIZE {
        return Err(Error::ExitDoesNotFit);
    }
    Ok(length)
}

fn mmio_length(len: u32) -> Result<usize, Error> {
    match len {
        1..=8 => Ok(len as usize),
        _ => Err(Error::ExitDoesNotFit),
    }
}

/// Refuses an exit that cannot be written whole, before anything is
/// written.
fn check_exit(exit: &Exit<'_>, run: &[u8], pio_page: &[u8]) -> Result<(), Error> {
    if run.len() < KVM_RUN_SIZE {
        return Err(Error::ShortBuffer);
    }
    match *exit {
        Exit::Io {
            direction,
            size,
            count,
            data,
            ..
        } => {
            let length = pio_length(size, count)?;
            if pio_page.len() < length {
                return Err(Error::ShortBuffer);
            }
            if direction == IoDirection::Out && data.len() != length {
                return Err(Error::ExitDoesNotFit);
            }
        }
        Exit::Mmio { len, write, .. } => {
            let length = mmio_length(len)?;
            if write.is_some_and(|bytes| bytes.len() != length) {
                return Err(Error::ExitDoesNotFit);
            }
        }
        Exit::InternalError { suberror, data } => {
            if suberror == KVM_INTERNAL_ERROR_EMULATION || data.len() > EXIT_DATA_WORDS {
                return Err(Error::ExitDoesNotFit);
            }
        }
        Exit::EmulationFailure { insn, data } => {
            let insn_words = match insn {
                Some(bytes) if bytes.is_empty() || bytes.len() > EMULATION_FAILURE_INSN_MAX => {
                    return Err(Error::ExitDoesNotFit)
                }
                Some(_) => 2,
                None => 0,
            };
            if 1 + insn_words + data.len() > EXIT_DATA_WORDS {
                return Err(Error::ExitDoesNotFit);
            }
        }
        Exit::SystemEvent { data, .. } => {
            if data.len() > EXIT_DATA_WORDS {
                return Err(Error::ExitDoesNotFit);
            }
        }
        Exit::Hlt
        | Exit::Shutdown
        | Exit::IrqWindowOpen
        | Exit::Intr
        | Exit::FailEntry { .. }
        | Exit::Unknown { .. } => {}
    }
    Ok(())
}

fn put_words(run: &mut [u8], offset: usize, words: &[u64]) -> Result<(), Error> {
    for (index, &word) in words.iter().enumerate() {
        put(run, offset + 8 * index, word)?;
    }
    Ok(())
}

/// Writes `exit` and the per-exit `state` into the run page (and, for port
/// I/O, the PIO data page).  The exit union is zeroed first so no field of
/// an earlier exit lingers.  On error nothing is written.
pub fn write_exit(
    run: &mut [u8],
    pio_page: &mut [u8],
    state: &ExitState,
    exit: &Exit<'_>,
) -> Result<(), Error> {
    check_exit(exit, run, pio_page)?;

    put(run, EXIT_REASON, exit.reason())?;
    put(run, IF_FLAG, u8::from(state.if_flag))?;
    put(run, CR8, state.cr8)?;
    put(run, APIC_BASE, state.apic_base)?;
    put(
        run,
        READY_FOR_INTERRUPT_INJECTION,
        u8::from(state.ready_for_interrupt_injection),
    )?;
    put(run, FLAGS, state.flags)?;
    put(run, EXIT_UNION, [0u8; EXIT_UNION_SIZE])?;

    match *exit {
        Exit::Io {
            direction,
            size,
            port,
            count,
            data,
        } => {
            let length = pio_length(size, count)?;
            let target = pio_page.get_mut(..length).ok_or(Error::ShortBuffer)?;
            match direction {
                IoDirection::In => target.fill(0),
                IoDirection::Out => {
                    target.copy_from_slice(data.get(..length).ok_or(Error::ShortBuffer)?)
                }
            }
            let direction = match direction {
                IoDirection::In => KVM_EXIT_IO_IN,
                IoDirection::Out => KVM_EXIT_IO_OUT,
            };
            put(run, IO_DIRECTION, direction)?;
            put(run, IO_SIZE, size)?;
            put(run, IO_PORT, port)?;
            put(run, IO_COUNT, count)?;
            put(run, IO_DATA_OFFSET, PIO_DATA_OFFSET)?;
        }
        Exit::Mmio {
            phys_addr,
            len,
            write,
        } => {
            put(run, MMIO_PHYS_ADDR, phys_addr)?;
            if let Some(bytes) = write {
                let target = run
                    .get_mut(MMIO_DATA..MMIO_DATA + bytes.len())
                    .ok_or(Error::ShortBuffer)?;
                target.copy_from_slice(bytes);
            }
            put(run, MMIO_LEN, len)?;
            put(run, MMIO_IS_WRITE, u8::from(write.is_some()))?;
        }
        Exit::FailEntry {
            hardware_entry_failure_reason,
            cpu,
        } => {
            put(
                run,
                FAIL_ENTRY_HARDWARE_ENTRY_FAILURE_REASON,
                hardware_entry_failure_reason,
            )?;
            put(run, FAIL_ENTRY_CPU, cpu)?;
        }
        Exit::InternalError { suberror, data } => {
            put(run, INTERNAL_SUBERROR, suberror)?;
            put(run, INTERNAL_NDATA, data.len() as u32)?;
            put_words(run, INTERNAL_DATA, data)?;
        }
        Exit::EmulationFailure { insn, data } => {
            put(run, INTERNAL_SUBERROR, KVM_INTERNAL_ERROR_EMULATION)?;
            let mut words = 1;
            let mut flags = 0;
            if let Some(bytes) = insn {
                flags |= KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;
                words += 2;
                put(run, EMULATION_FAILURE_INSN_SIZE, bytes.len() as u8)?;
                let mut padded = [0x90u8; EMULATION_FAILURE_INSN_MAX];
                padded
                    .get_mut(..bytes.len())
                    .ok_or(Error::ExitDoesNotFit)?
                    .copy_from_slice(bytes);
                put(run, EMULATION_FAILURE_INSN_BYTES, padded)?;
            }
            put(run, EMULATION_FAILURE_FLAGS, flags)?;
            put_words(run, INTERNAL_DATA + 8 * words, data)?;
            put(run, INTERNAL_NDATA, (words + data.len()) as u32)?;
        }
        Exit::SystemEvent { type_, data } => {
            put(run, SYSTEM_EVENT_TYPE, type_)?;
            put(run, SYSTEM_EVENT_NDATA, data.len() as u32)?;
            put_words(run, SYSTEM_EVENT_DATA, data)?;
        }
        Exit::Unknown {
            hardware_exit_reason,
        } => put(run, HW_HARDWARE_EXIT_REASON, hardware_exit_reason)?,
        Exit::Hlt | Exit::Shutdown | Exit::IrqWindowOpen | Exit::Intr => {}
    }
    Ok(())
}

/// What userspace asks of the next KVM_RUN, read from the run page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// Exit with KVM_EXIT_IRQ_WINDOW_OPEN as soon as an interrupt can be
    /// injected.
    pub request_interrupt_window: bool,
    /// Return EINTR without entering the guest, after completing a pending
    /// I/O or MMIO exit (`vcpu->wants_to_run` in `kvm_vcpu_ioctl`).
    pub immediate_exit: bool,
    /// The task priority to load, used only without an in-kernel local
    /// APIC.
    pub cr8: u64,
    /// `KVM_SYNC_X86_*` register sets to store in the page on exit.
    pub kvm_valid_regs: u64,
    /// `KVM_SYNC_X86_*` register sets userspace changed in the page, to load
    /// before entry ([`read_sync_regs`]).
    pub kvm_dirty_regs: u64,
}

/// Reads and checks the request fields of a private copy of the run page,
/// as `kvm_arch_vcpu_ioctl_run` does: valid and dirty register sets
/// outside `sync_regs_supported` (0 without KVM_CAP_SYNC_REGS,
/// `KVM_SYNC_X86_VALID_FIELDS` with it) are EINVAL, and so is a `cr8` with
/// bits above the task priority when there is no in-kernel local APIC.
pub fn read_run_request(
    run: &[u8],
    sync_regs_supported: u64,
    lapic_in_kernel: bool,
) -> Result<RunRequest, Error> {
    let request = RunRequest {
        request_interrupt_window: get::<u8>(run, REQUEST_INTERRUPT_WINDOW)? != 0,
        immediate_exit: get::<u8>(run, IMMEDIATE_EXIT)? != 0,
        cr8: get(run, CR8)?,
        kvm_valid_regs: get(run, KVM_VALID_REGS)?,
        kvm_dirty_regs: get(run, KVM_DIRTY_REGS)?,
    };
    if (request.kvm_valid_regs | request.kvm_dirty_regs) & !sync_regs_supported != 0 {
        return Err(Error::UnknownFlags);
    }
    if !lapic_in_kernel && request.cr8 & CR8_RESERVED_BITS != 0 {
        return Err(Error::InvalidValue);
    }
    Ok(request)
}

/// The data userspace left for an MMIO read of `len` bytes
/// (`complete_emulated_mmio` copies `min(8, len)` bytes of `mmio.data`).
pub fn read_mmio_completion(run: &[u8], len: u32) -> Result<[u8; 8], Error> {
    let length = mmio_length(len)?;
    let mut data: [u8; 8] = get(run, MMIO_DATA)?;
    if let Some(unused) = data.get_mut(length..) {
        unused.fill(0);
    }
    Ok(data)
}

/// The data userspace left in the PIO page for an IN of `count` accesses
/// of `size` bytes.
pub fn read_pio_in_data(pio_page: &[u8], size: u8, count: u32) -> Result<&[u8], Error> {
    let length = pio_length(size, count)?;
    pio_page.get(..length).ok_or(Error::ShortBuffer)
}

/// The synced registers in the run page (KVM_CAP_SYNC_REGS, api.rst 6.74).
pub fn read_sync_regs(run: &[u8]) -> Result<kvm_sync_regs, Error> {
    get(run, SYNC_REGS)
}

/// Stores the synced registers userspace asked for with `kvm_valid_regs`.
pub fn write_sync_regs(run: &mut [u8], regs: &kvm_sync_regs) -> Result<(), Error> {
    put(run, SYNC_REGS, *regs)
}

#[cfg(test)]
mod tests;
