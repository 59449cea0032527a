use super::*;
use crate::kvm_api::errno::Errno;
use crate::kvm_api::layout::{kvm_regs, kvm_sregs, kvm_vcpu_events};
use std::vec;
use std::vec::Vec;

const STATE: ExitState = ExitState {
    if_flag: true,
    cr8: 5,
    apic_base: 0xfee0_0900,
    ready_for_interrupt_injection: true,
    flags: KVM_RUN_X86_SMM,
};

fn pages() -> (Vec<u8>, Vec<u8>) {
    (vec![0xccu8; PAGE_SIZE], vec![0xccu8; PAGE_SIZE])
}

fn u8_at(page: &[u8], offset: usize) -> u8 {
    page[offset]
}

fn u16_at(page: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(page[offset..offset + 2].try_into().unwrap())
}

fn u32_at(page: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(page[offset..offset + 4].try_into().unwrap())
}

fn u64_at(page: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(page[offset..offset + 8].try_into().unwrap())
}

const _: () = assert!(KVM_RUN_SIZE <= PAGE_SIZE);

#[test]
fn layout_constants() {
    assert_eq!(KVM_RUN_SIZE, SYNC_REGS + SYNC_REGS_SIZE_BYTES as usize);
    assert_eq!(KVM_VALID_REGS, EXIT_UNION + EXIT_UNION_SIZE);
    assert!(kvm_sync_regs::SIZE <= SYNC_REGS_SIZE_BYTES as usize);
    assert_eq!(PIO_DATA_OFFSET, 4096);
    for &(name, offset, size) in KVM_RUN_FIELDS {
        assert!(offset + size <= KVM_RUN_SIZE, "{name}");
    }
}

#[test]
fn every_exit_writes_the_common_fields() {
    let (mut run, mut pio) = pages();
    write_exit(&mut run, &mut pio, &STATE, &Exit::Hlt).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_HLT);
    assert_eq!(u8_at(&run, IF_FLAG), 1);
    assert_eq!(u64_at(&run, CR8), 5);
    assert_eq!(u64_at(&run, APIC_BASE), 0xfee0_0900);
    assert_eq!(u8_at(&run, READY_FOR_INTERRUPT_INJECTION), 1);
    assert_eq!(u16_at(&run, FLAGS), KVM_RUN_X86_SMM);
    // The union is cleared, the request fields and sync area are not ours.
    assert!(run[EXIT_UNION..EXIT_UNION + EXIT_UNION_SIZE]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(u8_at(&run, REQUEST_INTERRUPT_WINDOW), 0xcc);
    assert_eq!(u8_at(&run, KVM_VALID_REGS), 0xcc);
    assert!(pio.iter().all(|&b| b == 0xcc));
}

#[test]
fn simple_exit_reasons() {
    for (exit, reason) in [
        (Exit::Hlt, KVM_EXIT_HLT),
        (Exit::Shutdown, KVM_EXIT_SHUTDOWN),
        (Exit::IrqWindowOpen, KVM_EXIT_IRQ_WINDOW_OPEN),
        (Exit::Intr, KVM_EXIT_INTR),
    ] {
        let (mut run, mut pio) = pages();
        write_exit(&mut run, &mut pio, &ExitState::default(), &exit).unwrap();
        assert_eq!(u32_at(&run, EXIT_REASON), reason);
        assert_eq!(exit.reason(), reason);
    }
}

#[test]
fn pio_out_copies_the_data_to_the_pio_page() {
    let (mut run, mut pio) = pages();
    let data = [1, 2, 3, 4, 5, 6];
    let exit = Exit::Io {
        direction: IoDirection::Out,
        size: 2,
        port: 0x3f8,
        count: 3,
        data: &data,
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_IO);
    assert_eq!(u8_at(&run, IO_DIRECTION), KVM_EXIT_IO_OUT);
    assert_eq!(u8_at(&run, IO_SIZE), 2);
    assert_eq!(u16_at(&run, IO_PORT), 0x3f8);
    assert_eq!(u32_at(&run, IO_COUNT), 3);
    assert_eq!(u64_at(&run, IO_DATA_OFFSET), 4096);
    assert_eq!(pio[..6], data);
    assert_eq!(pio[6], 0xcc);
}

#[test]
fn pio_in_zeroes_then_reads_back() {
    let (mut run, mut pio) = pages();
    let exit = Exit::Io {
        direction: IoDirection::In,
        size: 4,
        port: 0xcfc,
        count: 1,
        data: &[],
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u8_at(&run, IO_DIRECTION), KVM_EXIT_IO_IN);
    assert_eq!(pio[..4], [0; 4]);
    assert_eq!(pio[4], 0xcc);
    pio[..4].copy_from_slice(&[0x86, 0x80, 0x37, 0x12]);
    assert_eq!(
        read_pio_in_data(&pio, 4, 1),
        Ok(&[0x86, 0x80, 0x37, 0x12][..])
    );
}

#[test]
fn pio_limits() {
    let (mut run, mut pio) = pages();
    let page = vec![0u8; PAGE_SIZE];
    let full = Exit::Io {
        direction: IoDirection::Out,
        size: 4,
        port: 0,
        count: 1024,
        data: &page,
    };
    assert!(write_exit(&mut run, &mut pio, &STATE, &full).is_ok());
    let bad = [(1, 4097), (4, 1025), (3, 1), (8, 1), (1, 0), (4, u32::MAX)];
    for (size, count) in bad {
        let (mut run, mut pio) = pages();
        let exit = Exit::Io {
            direction: IoDirection::In,
            size,
            port: 0,
            count,
            data: &[],
        };
        assert_eq!(
            write_exit(&mut run, &mut pio, &STATE, &exit),
            Err(Error::ExitDoesNotFit),
            "size {size} count {count}"
        );
        assert!(run.iter().all(|&b| b == 0xcc), "nothing written");
        assert!(read_pio_in_data(&pio, size, count).is_err());
    }
    let short_data = Exit::Io {
        direction: IoDirection::Out,
        size: 4,
        port: 0,
        count: 2,
        data: &[0; 4],
    };
    assert_eq!(
        write_exit(&mut run, &mut pio, &STATE, &short_data),
        Err(Error::ExitDoesNotFit)
    );
}

#[test]
fn mmio_write_and_read() {
    let (mut run, mut pio) = pages();
    let write = Exit::Mmio {
        phys_addr: 0xfed0_0010,
        len: 4,
        write: Some(&[0xde, 0xad, 0xbe, 0xef]),
    };
    write_exit(&mut run, &mut pio, &STATE, &write).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_MMIO);
    assert_eq!(u64_at(&run, MMIO_PHYS_ADDR), 0xfed0_0010);
    assert_eq!(
        run[MMIO_DATA..MMIO_DATA + 8],
        [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]
    );
    assert_eq!(u32_at(&run, MMIO_LEN), 4);
    assert_eq!(u8_at(&run, MMIO_IS_WRITE), 1);

    let read = Exit::Mmio {
        phys_addr: 0xfed0_0000,
        len: 2,
        write: None,
    };
    write_exit(&mut run, &mut pio, &STATE, &read).unwrap();
    assert_eq!(u8_at(&run, MMIO_IS_WRITE), 0);
    assert_eq!(run[MMIO_DATA..MMIO_DATA + 8], [0; 8]);
    // Userspace fills more than asked: only `len` bytes count.
    run[MMIO_DATA..MMIO_DATA + 8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(read_mmio_completion(&run, 2), Ok([1, 2, 0, 0, 0, 0, 0, 0]));
    assert_eq!(read_mmio_completion(&run, 8), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(read_mmio_completion(&run, 0), Err(Error::ExitDoesNotFit));
    assert_eq!(read_mmio_completion(&run, 9), Err(Error::ExitDoesNotFit));
}

#[test]
fn mmio_limits() {
    let (mut run, mut pio) = pages();
    for (len, write) in [(0, None), (9, None), (4, Some(&[0u8; 3][..]))] {
        let exit = Exit::Mmio {
            phys_addr: 0,
            len,
            write,
        };
        assert_eq!(
            write_exit(&mut run, &mut pio, &STATE, &exit),
            Err(Error::ExitDoesNotFit)
        );
    }
}

#[test]
fn fail_entry() {
    let (mut run, mut pio) = pages();
    let exit = Exit::FailEntry {
        hardware_entry_failure_reason: u64::MAX,
        cpu: 1,
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_FAIL_ENTRY);
    assert_eq!(
        u64_at(&run, FAIL_ENTRY_HARDWARE_ENTRY_FAILURE_REASON),
        u64::MAX
    );
    assert_eq!(u32_at(&run, FAIL_ENTRY_CPU), 1);
}

#[test]
fn internal_error_with_data() {
    let (mut run, mut pio) = pages();
    let exit = Exit::InternalError {
        suberror: KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
        data: &[0x7b, 1],
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_INTERNAL_ERROR);
    assert_eq!(u32_at(&run, INTERNAL_SUBERROR), 4);
    assert_eq!(u32_at(&run, INTERNAL_NDATA), 2);
    assert_eq!(u64_at(&run, INTERNAL_DATA), 0x7b);
    assert_eq!(u64_at(&run, INTERNAL_DATA + 8), 1);
    let full = [9u64; 16];
    let exit = Exit::InternalError {
        suberror: KVM_INTERNAL_ERROR_DELIVERY_EV,
        data: &full,
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u64_at(&run, INTERNAL_DATA + 15 * 8), 9);
    for exit in [
        Exit::InternalError {
            suberror: 2,
            data: &[0; 17],
        },
        Exit::InternalError {
            suberror: KVM_INTERNAL_ERROR_EMULATION,
            data: &[],
        },
    ] {
        assert_eq!(
            write_exit(&mut run, &mut pio, &STATE, &exit),
            Err(Error::ExitDoesNotFit)
        );
    }
}

#[test]
fn emulation_failure_layout() {
    let (mut run, mut pio) = pages();
    let exit = Exit::EmulationFailure {
        insn: Some(&[0x0f, 0x01, 0xd9]),
        data: &[0x400, 7],
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(
        u32_at(&run, INTERNAL_SUBERROR),
        KVM_INTERNAL_ERROR_EMULATION
    );
    assert_eq!(u32_at(&run, INTERNAL_NDATA), 5);
    assert_eq!(
        u64_at(&run, EMULATION_FAILURE_FLAGS),
        KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
    );
    assert_eq!(u8_at(&run, EMULATION_FAILURE_INSN_SIZE), 3);
    assert_eq!(
        run[EMULATION_FAILURE_INSN_BYTES..EMULATION_FAILURE_INSN_BYTES + 4],
        [0x0f, 0x01, 0xd9, 0x90]
    );
    assert_eq!(run[EMULATION_FAILURE_INSN_BYTES + 14], 0x90);
    assert_eq!(u64_at(&run, INTERNAL_DATA + 24), 0x400);
    assert_eq!(u64_at(&run, INTERNAL_DATA + 32), 7);

    let without_insn = Exit::EmulationFailure {
        insn: None,
        data: &[1, 2, 3, 4, 5],
    };
    write_exit(&mut run, &mut pio, &STATE, &without_insn).unwrap();
    assert_eq!(u32_at(&run, INTERNAL_NDATA), 6);
    assert_eq!(u64_at(&run, EMULATION_FAILURE_FLAGS), 0);
    assert_eq!(u64_at(&run, INTERNAL_DATA + 8), 1);

    for bad in [
        Exit::EmulationFailure {
            insn: Some(&[0x90; 16]),
            data: &[],
        },
        Exit::EmulationFailure {
            insn: Some(&[]),
            data: &[],
        },
        Exit::EmulationFailure {
            insn: Some(&[0x90]),
            data: &[0; 14],
        },
        Exit::EmulationFailure {
            insn: None,
            data: &[0; 16],
        },
    ] {
        assert_eq!(
            write_exit(&mut run, &mut pio, &STATE, &bad),
            Err(Error::ExitDoesNotFit)
        );
    }
}

#[test]
fn system_event() {
    let (mut run, mut pio) = pages();
    let exit = Exit::SystemEvent {
        type_: KVM_SYSTEM_EVENT_RESET,
        data: &[0x42],
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_SYSTEM_EVENT);
    assert_eq!(u32_at(&run, SYSTEM_EVENT_TYPE), KVM_SYSTEM_EVENT_RESET);
    assert_eq!(u32_at(&run, SYSTEM_EVENT_NDATA), 1);
    assert_eq!(u64_at(&run, SYSTEM_EVENT_DATA), 0x42);
    let too_much = Exit::SystemEvent {
        type_: KVM_SYSTEM_EVENT_CRASH,
        data: &[0; 17],
    };
    assert_eq!(
        write_exit(&mut run, &mut pio, &STATE, &too_much),
        Err(Error::ExitDoesNotFit)
    );
}

#[test]
fn unknown_exit() {
    let (mut run, mut pio) = pages();
    let exit = Exit::Unknown {
        hardware_exit_reason: 0x7f,
    };
    write_exit(&mut run, &mut pio, &STATE, &exit).unwrap();
    assert_eq!(u32_at(&run, EXIT_REASON), KVM_EXIT_UNKNOWN);
    assert_eq!(u64_at(&run, HW_HARDWARE_EXIT_REASON), 0x7f);
}

#[test]
fn short_run_page_is_refused() {
    let mut run = vec![0u8; KVM_RUN_SIZE - 1];
    let mut pio = vec![0u8; PAGE_SIZE];
    assert_eq!(
        write_exit(&mut run, &mut pio, &STATE, &Exit::Hlt),
        Err(Error::ShortBuffer)
    );
    let mut run = vec![0u8; KVM_RUN_SIZE];
    let mut small_pio = vec![0u8; 8];
    let exit = Exit::Io {
        direction: IoDirection::In,
        size: 4,
        port: 0,
        count: 4,
        data: &[],
    };
    assert_eq!(
        write_exit(&mut run, &mut small_pio, &STATE, &exit),
        Err(Error::ShortBuffer)
    );
    assert!(write_exit(&mut run, &mut small_pio, &STATE, &Exit::Hlt).is_ok());
}

fn request_page(change: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut run = vec![0u8; PAGE_SIZE];
    change(&mut run);
    run
}

#[test]
fn run_request_fields() {
    let run = request_page(|run| {
        run[REQUEST_INTERRUPT_WINDOW] = 1;
        run[IMMEDIATE_EXIT] = 7;
        run[CR8] = 0xf;
    });
    assert_eq!(
        read_run_request(&run, 0, false),
        Ok(RunRequest {
            request_interrupt_window: true,
            immediate_exit: true,
            cr8: 0xf,
            kvm_valid_regs: 0,
            kvm_dirty_regs: 0,
        })
    );
}

#[test]
fn run_request_cr8_reserved_bits() {
    let run = request_page(|run| run[CR8] = 0x10);
    let error = read_run_request(&run, 0, false).unwrap_err();
    assert_eq!(error.errno(), Errno::EINVAL);
    // With an in-kernel local APIC KVM does not look at cr8.
    assert!(read_run_request(&run, 0, true).is_ok());
}

#[test]
fn run_request_sync_regs_bits() {
    let run = request_page(|run| run[KVM_DIRTY_REGS] = KVM_SYNC_X86_REGS as u8);
    assert_eq!(read_run_request(&run, 0, true), Err(Error::UnknownFlags));
    let request = read_run_request(&run, KVM_SYNC_X86_VALID_FIELDS, true).unwrap();
    assert_eq!(request.kvm_dirty_regs, KVM_SYNC_X86_REGS);
    let run = request_page(|run| run[KVM_VALID_REGS] = 8);
    assert_eq!(
        read_run_request(&run, KVM_SYNC_X86_VALID_FIELDS, true),
        Err(Error::UnknownFlags)
    );
    assert_eq!(
        read_run_request(&run[..100], 0, true),
        Err(Error::ShortBuffer)
    );
}

#[test]
fn sync_regs_round_trip() {
    let mut run = vec![0u8; PAGE_SIZE];
    let regs = kvm_sync_regs {
        regs: kvm_regs {
            rip: 0x1000,
            ..kvm_regs::ZERO
        },
        sregs: kvm_sregs {
            cr0: 0x11,
            ..kvm_sregs::ZERO
        },
        events: kvm_vcpu_events::ZERO,
    };
    write_sync_regs(&mut run, &regs).unwrap();
    assert_eq!(u64_at(&run, SYNC_REGS + 16 * 8), 0x1000);
    assert_eq!(read_sync_regs(&run), Ok(regs));
}
