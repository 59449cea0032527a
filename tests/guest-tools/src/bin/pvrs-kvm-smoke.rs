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
//! With `--bench N` it then times four loops of N round trips, each in a
//! fresh vCPU of the same VM, and prints one line per loop
//! (`bench=NAME iterations=N kvm_runs=R ns_per_NAME_exit=X`):
//! - `pio`: `out` to port 0x80, each a KVM_EXIT_IO to this program and back;
//! - `cpuid`: handled in the kernel without leaving KVM_RUN;
//! - `mmio`: a one-byte read of an address outside every memslot, each a
//!   KVM_EXIT_MMIO that this program completes (the value is checked);
//! - `vmmcall`: a hypercall with a number no host assigns, which both
//!   pvrs-kvm (hv-core's `vcpu.rs`) and KVM (`__kvm_emulate_hypercall`)
//!   answer in the kernel with -KVM_ENOSYS in RAX (checked at the end);
//!   on an Intel host the loop uses VMCALL instead and is named `vmcall`.

use std::ffi::CString;

use hv_core::kvm_api::constants::{KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_MMIO};
use hv_core::kvm_api::decode::{decode, encode};
use hv_core::kvm_api::ioctl::{
    KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_GET_API_VERSION, KVM_GET_FPU, KVM_GET_MSRS, KVM_GET_REGS,
    KVM_GET_SREGS, KVM_GET_VCPU_MMAP_SIZE, KVM_RUN, KVM_SET_CPUID2, KVM_SET_FPU, KVM_SET_MSRS,
    KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_USER_MEMORY_REGION,
};
use hv_core::kvm_api::layout::{kvm_fpu, kvm_regs, kvm_sregs, kvm_userspace_memory_region};
use hv_core::kvm_api::run;
use hv_core::kvm_api::wire::Wire;
use pvrs_abi::hypercall::{hypercall_error_value, KVM_ENOSYS, KVM_HC_MAP_GPA_RANGE};

/// Guest memory: 64 KiB at GPA 0; the code at 0x1000.
const MEM_SIZE: usize = 0x1_0000;
const CODE: u64 = 0x1000;
/// An address no memslot covers: reads exit to userspace as MMIO.
const MMIO_ADDR: u16 = 0xf000;
const MMIO_SEGMENT: u16 = 0x1000; // 0x1000:0xf000 = GPA 0x1f000
const MMIO_VALUE: u8 = b'M';
const IN_VALUE: u8 = b'I';
/// The hypercall number of the `vmmcall` loop: unassigned (KVM allocates
/// numbers upwards from 1), the same one the pvcore benchmark's
/// `unknown_hypercall` uses, so that both backends take their cheapest
/// in-kernel path and the loop measures the exit itself.
const UNASSIGNED_HYPERCALL: u32 = 0x7fff_0000;
const _: () = assert!(UNASSIGNED_HYPERCALL > KVM_HC_MAP_GPA_RANGE);

/// The guest, 16-bit real mode:
///   xor eax, eax ; cpuid ; mov [0x500], ebx  (leaf 0 as userspace set it)
///   mov dx, 0x3f8
///   mov al, 'P'  ; out dx, al
///   mov al, 'V'  ; out dx, al
///   in al, dx    ; out dx, al      (echo what userspace gave)
///   mov ax, 0x1000 ; mov ds, ax
///   mov al, [0xf000] ; out dx, al  (MMIO read, echoed)
///   mov ebx, 0x1234
///   hlt
fn guest_code() -> Vec<u8> {
    let mut c = vec![0x66, 0x31, 0xc0, 0x0f, 0xa2, 0x66, 0x89, 0x1e, 0x00, 0x05];
    c.extend_from_slice(&[0xba, 0xf8, 0x03]);
    c.extend_from_slice(&[0xb0, b'P', 0xee]);
    c.extend_from_slice(&[0xb0, b'V', 0xee]);
    c.extend_from_slice(&[0xec, 0xee]);
    c.extend_from_slice(&[0xb8, 0x00, 0x10, 0x8e, 0xd8]);
    c.extend_from_slice(&[0xa0, 0x00, 0xf0, 0xee]);
    c.extend_from_slice(&[0x66, 0xbb, 0x34, 0x12, 0x00, 0x00]);
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

/// Leaf 0's EBX as userspace sets it ("pvrs"); the guest stores what its
/// CPUID returns at 0x500.
const CPUID0_EBX: u32 = u32::from_le_bytes(*b"pvrs");

/// KVM_SET_CPUID2 with leaf 0 only (api.rst 4.73).
fn set_cpuid_leaf0(vcpu: i32) {
    let mut buf = [0u8; 8 + 40];
    buf[0..4].copy_from_slice(&1u32.to_le_bytes());
    let entry = &mut buf[8..];
    entry[12..16].copy_from_slice(&1u32.to_le_bytes()); // eax: max leaf 1
    entry[16..20].copy_from_slice(&CPUID0_EBX.to_le_bytes());
    checked(
        "KVM_SET_CPUID2",
        ioctl(vcpu, KVM_SET_CPUID2, buf.as_ptr() as u64),
    );
}

/// KVM_SET_MSRS then KVM_GET_MSRS of SYSENTER_CS (api.rst 4.18, 4.19):
/// both return the number of MSRs processed.
fn check_msrs(vcpu: i32) {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    let mut buf = [0u8; 8 + 16];
    buf[0..4].copy_from_slice(&1u32.to_le_bytes());
    buf[8..12].copy_from_slice(&MSR_IA32_SYSENTER_CS.to_le_bytes());
    buf[16..24].copy_from_slice(&0x10u64.to_le_bytes());
    let set = checked(
        "KVM_SET_MSRS",
        ioctl(vcpu, KVM_SET_MSRS, buf.as_ptr() as u64),
    );
    buf[16..24].fill(0);
    let got = checked(
        "KVM_GET_MSRS",
        ioctl(vcpu, KVM_GET_MSRS, buf.as_mut_ptr() as u64),
    );
    let value = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    println!("set_msrs={set} get_msrs={got} sysenter_cs={value:#x}");
    if set != 1 || got != 1 || value != 0x10 {
        fail("MSR round trip");
    }
}

/// KVM_SET_FPU then KVM_GET_FPU (api.rst 4.22, 4.23): the x87 control
/// word and an XMM register come back as set.
fn check_fpu(vcpu: i32) {
    let mut fpu: kvm_fpu = get(vcpu, KVM_GET_FPU, "KVM_GET_FPU");
    println!("reset_fcw={:#x} reset_mxcsr={:#x}", fpu.fcw, fpu.mxcsr);
    fpu.fcw = 0x27f;
    fpu.xmm[3][7] = 0x5a;
    set(vcpu, KVM_SET_FPU, &fpu, "KVM_SET_FPU");
    let back: kvm_fpu = get(vcpu, KVM_GET_FPU, "KVM_GET_FPU");
    println!("fcw={:#x} xmm3_7={:#x}", back.fcw, back.xmm[3][7]);
    if back.fcw != 0x27f || back.xmm[3][7] != 0x5a {
        fail("FPU round trip");
    }
}

/// With PVRS_SMOKE_DEBUGFS set: prints this process's VM statistics from
/// pvrs-kvm's debugfs directory (`pvrs_kvm-<pid>-<n>/exits`), while the
/// VM still exists, as `debugfs: ` lines.
fn print_pvrs_debugfs() {
    let prefix = format!("pvrs_kvm-{}-", std::process::id());
    let Ok(dir) = std::fs::read_dir("/sys/kernel/debug") else {
        println!("debugfs: not mounted");
        return;
    };
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let text = std::fs::read_to_string(entry.path().join("exits")).unwrap_or_default();
            for line in text.lines() {
                println!("debugfs: {line}");
            }
        }
    }
}

/// Creates vCPU `id`, maps its run pages (api.rst 4.5) and sets it up in
/// real mode at CS:IP = 0:`rip`, with DS = `data_segment` if given.
fn real_mode_vcpu(
    vm: i32,
    id: u64,
    mmap_size: usize,
    rip: u64,
    data_segment: Option<u16>,
) -> (i32, &'static mut [u8]) {
    let vcpu = checked("KVM_CREATE_VCPU", ioctl(vm, KVM_CREATE_VCPU, id)) as i32;
    // SAFETY: Maps the vCPU's run pages, as KVM documents.
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
        fail(&format!(
            "mmap vcpu {id}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: The mapping is `mmap_size` bytes, readable and writable, is
    // never unmapped, and only this thread touches it between KVM_RUNs.
    let run_page = unsafe { std::slice::from_raw_parts_mut(run_map as *mut u8, mmap_size) };
    let mut sregs: kvm_sregs = get(vcpu, KVM_GET_SREGS, "KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if let Some(segment) = data_segment {
        sregs.ds.base = u64::from(segment) << 4;
        sregs.ds.selector = segment;
    }
    set(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    let mut regs: kvm_regs = get(vcpu, KVM_GET_REGS, "KVM_GET_REGS");
    regs.rip = rip;
    regs.rflags = 0x2;
    set(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
    (vcpu, run_page)
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

    let (vcpu, run_page) = real_mode_vcpu(vm, 0, mmap_size, CODE, None);
    set_cpuid_leaf0(vcpu);
    check_msrs(vcpu);
    check_fpu(vcpu);

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
    // SAFETY: `mem` is MEM_SIZE bytes of our mapping; 0x500 is inside.
    let cpuid_ebx =
        unsafe { std::ptr::read_unaligned((mem as *const u8).add(0x500) as *const u32) };
    println!("guest_cpuid0_ebx={cpuid_ebx:#x}");
    if cpuid_ebx != CPUID0_EBX {
        fail(&format!(
            "guest CPUID leaf 0 EBX {cpuid_ebx:#x}, set {CPUID0_EBX:#x}"
        ));
    }
    if std::env::var_os("PVRS_SMOKE_DEBUGFS").is_some() {
        print_pvrs_debugfs();
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

/// What a bench loop's guest must have left in its registers, so that a
/// backend that skipped the work (or did other work) does not pass as fast.
enum Expect {
    Nothing,
    /// RAX & 0xffff_ffff: a hypercall's result seen by 16-bit code.
    Eax(u32),
    /// AL: the byte this program supplied for the last MMIO read.
    Al(u8),
}

/// The hypercall instruction of this CPU, by name and bytes: VMMCALL on
/// AMD and Hygon (SVM), VMCALL elsewhere (VMX). The other one is #UD in
/// hardware, which KVM would emulate and a plain KVM-API backend need not
/// (the guest then runs off into an empty IVT), and which would not time
/// the bare hypercall exit anyway.
fn hypercall_instruction() -> (&'static str, [u8; 3]) {
    let r = std::arch::x86_64::__cpuid(0);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    match &vendor {
        b"AuthenticAMD" | b"HygonGenuine" => ("vmmcall", [0x0f, 0x01, 0xd9]),
        _ => ("vmcall", [0x0f, 0x01, 0xc1]),
    }
}

fn bench(vm: i32, mem: *mut u8, mmap_size: usize, n: u32) {
    const BENCH_CODE: usize = 0x3000;
    let [h0, h1, h2, h3] = UNASSIGNED_HYPERCALL.to_le_bytes();
    let (hypercall, [i0, i1, i2]) = hypercall_instruction();
    let [a0, a1] = MMIO_ADDR.to_le_bytes();
    // The hypercall result is 32 bits outside 64-bit mode (KVM and hv-core
    // both truncate it).
    let enosys = hypercall_error_value(KVM_ENOSYS) as u32;
    let loops: [(&str, Vec<u8>, Expect); 4] = [
        // out dx, al (DX = 0x80 from loop_code)
        ("pio", vec![0xee], Expect::Nothing),
        // xor eax, eax; cpuid
        ("cpuid", vec![0x66, 0x31, 0xc0, 0x0f, 0xa2], Expect::Nothing),
        // mov al, [MMIO_ADDR] with DS = MMIO_SEGMENT (set through SREGS
        // below, so that the loop body is the access alone)
        ("mmio", vec![0xa0, a0, a1], Expect::Al(MMIO_VALUE)),
        // mov eax, UNASSIGNED_HYPERCALL; vmmcall (RAX is reloaded every
        // time: the previous call left -KVM_ENOSYS in it). Last: the
        // software /dev/kvm of some development machines never returns
        // from KVM_RUN on a VMCALL, and the other loops still report there.
        (
            hypercall,
            vec![0x66, 0xb8, h0, h1, h2, h3, i0, i1, i2],
            Expect::Eax(enosys),
        ),
    ];
    let mmio_gpa = (u64::from(MMIO_SEGMENT) << 4) + u64::from(MMIO_ADDR);
    for (index, (name, body, expect)) in loops.into_iter().enumerate() {
        let code = loop_code(&body, n);
        // SAFETY: The guest memory is ours, MEM_SIZE bytes, and the code
        // fits at BENCH_CODE; no vCPU runs while we write it.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(BENCH_CODE), code.len()) };
        // vCPU 0 ran the smoke test; each loop gets its own, so that none
        // inherits another's state (pending completions, registers).
        let id = index as u64 + 1;
        let (vcpu, run_page) =
            real_mode_vcpu(vm, id, mmap_size, BENCH_CODE as u64, Some(MMIO_SEGMENT));
        let (mut runs, start) = (0u64, now_ns());
        loop {
            checked("KVM_RUN", ioctl(vcpu, KVM_RUN, 0));
            runs += 1;
            let reason = u32::from_le_bytes(run_page[run::EXIT_REASON..][..4].try_into().unwrap());
            match reason {
                KVM_EXIT_IO => {}
                KVM_EXIT_MMIO => {
                    // Checked on every exit (a few loads, next to a
                    // round trip of microseconds): a backend reporting the
                    // wrong access must not pass as fast.
                    let addr = u64::from_le_bytes(
                        run_page[run::MMIO_PHYS_ADDR..][..8].try_into().unwrap(),
                    );
                    if addr != mmio_gpa || run_page[run::MMIO_IS_WRITE] != 0 {
                        fail(&format!("bench {name}: unexpected mmio addr={addr:#x}"));
                    }
                    // The read's data, copied into AL by the next KVM_RUN.
                    run_page[run::MMIO_DATA] = MMIO_VALUE;
                }
                KVM_EXIT_HLT => break,
                other => fail(&format!("bench {name}: exit reason {other}")),
            }
        }
        let ns = now_ns() - start;
        let regs: kvm_regs = get(vcpu, KVM_GET_REGS, "KVM_GET_REGS");
        match expect {
            Expect::Eax(want) if regs.rax as u32 != want => fail(&format!(
                "bench {name}: eax={:#x}, want {want:#x}",
                regs.rax as u32
            )),
            Expect::Al(want) if regs.rax as u8 != want => fail(&format!(
                "bench {name}: al={:#x}, want {want:#x}",
                regs.rax as u8
            )),
            _ => {}
        }
        println!(
            "bench={name} iterations={n} kvm_runs={runs} ns_per_{name}_exit={}",
            ns / u64::from(n)
        );
    }
}
