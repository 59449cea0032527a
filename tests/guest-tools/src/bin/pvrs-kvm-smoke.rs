//! Runs a tiny real-mode guest on a KVM device, with nothing but the base
//! KVM API (api.rst 4.1-4.14, 4.35), and checks what a VMM would see:
//! the bytes it writes to port 0x3f8 arrive as KVM_EXIT_IO exits with the
//! data in the PIO page, an IN gets the value userspace put there (the
//! guest echoes it back), a read of an unbacked address is a KVM_EXIT_MMIO
//! whose data the guest then outputs, and HLT ends the run with
//! KVM_EXIT_HLT, with the registers where the code left them.
//!
//! `pvrs-kvm-smoke [DEVICE] [--bench N]` (default /dev/kvm). Prints
//! `key=value` lines and `SMOKE: ok` (exit 0) or `SMOKE: FAILED ...`
//! (exit 1). It drives /dev/pvrs (pvrs-kvm) and /dev/kvm (kvm_amd) alike,
//! so the nested tests run it on both in one L1.
//!
//! With `--bench N` it then times two loops of N round trips in a fresh
//! vCPU of the same VM: `out` to port 0x80, each a KVM_EXIT_IO to this
//! program and back (`ns_per_pio_exit`), and `cpuid`, each handled in the
//! kernel without leaving KVM_RUN (`ns_per_cpuid_exit`).

use std::ffi::CString;

use hv_core::kvm_api::constants::{KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_MMIO};
use hv_core::kvm_api::decode::{decode, encode};
use hv_core::kvm_api::ioctl::{
    KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_GET_API_VERSION, KVM_GET_REGS, KVM_GET_SREGS,
    KVM_GET_VCPU_MMAP_SIZE, KVM_RUN, KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_USER_MEMORY_REGION,
};
use hv_core::kvm_api::layout::{kvm_regs, kvm_sregs, kvm_userspace_memory_region};
use hv_core::kvm_api::run;
use hv_core::kvm_api::wire::Wire;

/// Guest memory: 64 KiB at GPA 0; the code at 0x1000.
const MEM_SIZE: usize = 0x1_0000;
const CODE: u64 = 0x1000;
/// An address no memslot covers: reads exit to userspace as MMIO.
const MMIO_ADDR: u16 = 0xf000;
const MMIO_SEGMENT: u16 = 0x1000; // 0x1000:0xf000 = GPA 0x1f000
const MMIO_VALUE: u8 = b'M';
const IN_VALUE: u8 = b'I';

/// The guest, 16-bit real mode:
///   mov dx, 0x3f8
///   mov al, 'P'  ; out dx, al
///   mov al, 'V'  ; out dx, al
///   in al, dx    ; out dx, al      (echo what userspace gave)
///   mov ax, 0x1000 ; mov ds, ax
///   mov al, [0xf000] ; out dx, al  (MMIO read, echoed)
///   mov bx, 0x1234
///   hlt
fn guest_code() -> Vec<u8> {
    let mut c = vec![0xba, 0xf8, 0x03];
    c.extend_from_slice(&[0xb0, b'P', 0xee]);
    c.extend_from_slice(&[0xb0, b'V', 0xee]);
    c.extend_from_slice(&[0xec, 0xee]);
    c.extend_from_slice(&[0xb8, 0x00, 0x10, 0x8e, 0xd8]);
    c.extend_from_slice(&[0xa0, 0x00, 0xf0, 0xee]);
    c.extend_from_slice(&[0xbb, 0x34, 0x12]);
    c.push(0xf4);
    c
}

fn fail(what: &str) -> ! {
    println!("SMOKE: FAILED {what}");
    std::process::exit(1);
}

fn ioctl(fd: i32, cmd: u32, arg: u64) -> i64 {
    // SAFETY: The callers pass a KVM command with the argument it expects
    // (a value, or a pointer to a buffer of the command's size).
    unsafe { libc::ioctl(fd, cmd as _, arg) as i64 }
}

fn checked(what: &str, ret: i64) -> i64 {
    if ret < 0 {
        fail(&format!("{what}: {}", std::io::Error::last_os_error()));
    }
    ret
}

fn get<T: Wire>(fd: i32, cmd: u32, what: &str) -> T {
    let mut bytes = vec![0u8; T::SIZE];
    checked(what, ioctl(fd, cmd, bytes.as_mut_ptr() as u64));
    decode(&bytes).unwrap_or_else(|e| fail(&format!("{what}: {e:?}")))
}

fn set<T: Wire>(fd: i32, cmd: u32, value: &T, what: &str) {
    let mut bytes = vec![0u8; T::SIZE];
    encode(value, &mut bytes).unwrap_or_else(|e| fail(&format!("{what}: {e:?}")));
    checked(what, ioctl(fd, cmd, bytes.as_ptr() as u64));
}

fn main() {
    let device = std::env::args().nth(1).unwrap_or_else(|| "/dev/kvm".into());
    let path = CString::new(device.clone()).unwrap();
    // SAFETY: `path` is a valid C string.
    let sys = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if sys < 0 {
        fail(&format!(
            "open {device}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let api = checked("KVM_GET_API_VERSION", ioctl(sys, KVM_GET_API_VERSION, 0));
    let mmap_size = checked(
        "KVM_GET_VCPU_MMAP_SIZE",
        ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0),
    ) as usize;
    let vm = checked("KVM_CREATE_VM", ioctl(sys, KVM_CREATE_VM, 0)) as i32;
    println!("device={device} api={api} vcpu_mmap_size={mmap_size}");

    // SAFETY: An anonymous private mapping; no existing memory is touched.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        fail("mmap guest memory");
    }
    let code = guest_code();
    // SAFETY: `mem` is MEM_SIZE bytes of our own writable memory and the
    // code fits at CODE.
    unsafe {
        std::ptr::copy_nonoverlapping(
            code.as_ptr(),
            (mem as *mut u8).add(CODE as usize),
            code.len(),
        )
    };
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
    };
    set(
        vm,
        KVM_SET_USER_MEMORY_REGION,
        &region,
        "KVM_SET_USER_MEMORY_REGION",
    );

    let vcpu = checked("KVM_CREATE_VCPU", ioctl(vm, KVM_CREATE_VCPU, 0)) as i32;
    // SAFETY: Maps the vCPU's run pages, as KVM documents (api.rst 4.5).
    let run_map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mmap_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        )
    };
    if run_map == libc::MAP_FAILED {
        fail(&format!("mmap vcpu: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: The mapping is `mmap_size` bytes, readable and writable, and
    // stays mapped for the rest of the program.
    let run_page = unsafe { std::slice::from_raw_parts_mut(run_map as *mut u8, mmap_size) };

    let mut sregs: kvm_sregs = get(vcpu, KVM_GET_SREGS, "KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    set(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    let mut regs: kvm_regs = get(vcpu, KVM_GET_REGS, "KVM_GET_REGS");
    regs.rip = CODE;
    regs.rflags = 0x2;
    set(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");

    let mut out = Vec::new();
    let mut exits = 0;
    loop {
        checked("KVM_RUN", ioctl(vcpu, KVM_RUN, 0));
        exits += 1;
        if exits > 100 {
            fail("more than 100 exits");
        }
        let reason = u32::from_le_bytes(run_page[run::EXIT_REASON..][..4].try_into().unwrap());
        match reason {
            KVM_EXIT_IO => {
                let direction = run_page[run::IO_DIRECTION];
                let size = run_page[run::IO_SIZE];
                let port = u16::from_le_bytes(run_page[run::IO_PORT..][..2].try_into().unwrap());
                let offset =
                    u64::from_le_bytes(run_page[run::IO_DATA_OFFSET..][..8].try_into().unwrap())
                        as usize;
                if port != 0x3f8 || size != 1 || offset >= mmap_size {
                    fail(&format!(
                        "unexpected io port={port:#x} size={size} offset={offset}"
                    ));
                }
                if direction == 1 {
                    out.push(run_page[offset]);
                } else {
                    run_page[offset] = IN_VALUE;
                }
            }
            KVM_EXIT_MMIO => {
                let addr =
                    u64::from_le_bytes(run_page[run::MMIO_PHYS_ADDR..][..8].try_into().unwrap());
                let len = u32::from_le_bytes(run_page[run::MMIO_LEN..][..4].try_into().unwrap());
                let write = run_page[run::MMIO_IS_WRITE];
                let want = (u64::from(MMIO_SEGMENT) << 4) + u64::from(MMIO_ADDR);
                if addr != want || len != 1 || write != 0 {
                    fail(&format!(
                        "unexpected mmio addr={addr:#x} len={len} write={write}"
                    ));
                }
                run_page[run::MMIO_DATA] = MMIO_VALUE;
            }
            KVM_EXIT_HLT => break,
            other => fail(&format!("exit reason {other}")),
        }
    }
    let regs: kvm_regs = get(vcpu, KVM_GET_REGS, "KVM_GET_REGS");
    let text = String::from_utf8_lossy(&out).into_owned();
    println!(
        "exits={exits} output={text} rbx={:#x} rip={:#x}",
        regs.rbx, regs.rip
    );
    let want_rip = CODE + code.len() as u64;
    if text != "PVIM" || regs.rbx != 0x1234 || regs.rip != want_rip {
        fail(&format!("want output=PVIM rbx=0x1234 rip={want_rip:#x}"));
    }
    println!("SMOKE: ok");

    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bench") {
        let n: u32 = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        bench(vm, mem as *mut u8, mmap_size, n);
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid output location.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A 16-bit loop of `n` iterations of `body`, counted in ESI (CPUID
/// overwrites ECX): `mov dx, 0x80; mov esi, n; body; dec esi; jnz body;
/// hlt` (66 BE imm32, 66 4E, 75 rel8 in 16-bit code).
fn loop_code(body: &[u8], n: u32) -> Vec<u8> {
    let mut c = vec![0xba, 0x80, 0x00, 0x66, 0xbe];
    c.extend_from_slice(&n.to_le_bytes());
    c.extend_from_slice(body);
    let back = -(body.len() as i8) - 4;
    c.extend_from_slice(&[0x66, 0x4e, 0x75, back as u8, 0xf4]);
    c
}

fn bench(vm: i32, mem: *mut u8, mmap_size: usize, n: u32) {
    const BENCH_CODE: usize = 0x3000;
    for (name, body) in [
        ("pio", &[0xee][..]),
        ("cpuid", &[0x66, 0x31, 0xc0, 0x0f, 0xa2][..]),
    ] {
        let code = loop_code(body, n);
        // SAFETY: The guest memory is ours, MEM_SIZE bytes, and the code
        // fits at BENCH_CODE; no vCPU runs while we write it.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(BENCH_CODE), code.len()) };
        let id = if name == "pio" { 1 } else { 2 };
        let vcpu = checked("KVM_CREATE_VCPU", ioctl(vm, KVM_CREATE_VCPU, id)) as i32;
        // SAFETY: As for the first vCPU's run pages.
        let run_map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu,
                0,
            )
        };
        if run_map == libc::MAP_FAILED {
            fail("mmap bench vcpu");
        }
        // SAFETY: The mapping is `mmap_size` bytes and stays mapped.
        let run_page = unsafe { std::slice::from_raw_parts(run_map as *const u8, mmap_size) };
        let mut sregs: kvm_sregs = get(vcpu, KVM_GET_SREGS, "KVM_GET_SREGS");
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        set(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
        let mut regs: kvm_regs = get(vcpu, KVM_GET_REGS, "KVM_GET_REGS");
        regs.rip = BENCH_CODE as u64;
        regs.rflags = 0x2;
        set(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
        let (mut runs, start) = (0u64, now_ns());
        loop {
            checked("KVM_RUN", ioctl(vcpu, KVM_RUN, 0));
            runs += 1;
            let reason = u32::from_le_bytes(run_page[run::EXIT_REASON..][..4].try_into().unwrap());
            match reason {
                KVM_EXIT_IO => {}
                KVM_EXIT_HLT => break,
                other => fail(&format!("bench {name}: exit reason {other}")),
            }
        }
        let ns = now_ns() - start;
        println!(
            "bench={name} iterations={n} kvm_runs={runs} ns_per_{name}_exit={}",
            ns / u64::from(n)
        );
    }
}
