//! Times port-I/O exits that the VMM handles in userspace: each access
//! leaves the guest, crosses KVM into the VMM process and comes back.
//!
//! `pvrs-pio [--via tty|outb] [--count N] [--rounds R]`
//!
//! * `--via tty` (the default): `ioctl(TIOCMGET)` on /dev/ttyS0, which the
//!   8250 driver serves with exactly one `inb` of the 16550's modem status
//!   register (port 0x3fe); QEMU and pvrs-vmm both emulate the 16550 in
//!   userspace. The same loop with `TCGETS` (the same ioctl entry and tty
//!   locking, no hardware access) is the baseline that is subtracted.
//!   This needs nothing beyond the serial console, unlike `outb`: the
//!   pvrs guest kernel is built without `CONFIG_X86_IOPL_IOPERM` and
//!   `CONFIG_DEVPORT`.
//! * `--via outb`: `outb` to port 0x80 (the POST port; QEMU's `ioport80`,
//!   pvrs-vmm's `PostPort`) after `ioperm`, with no baseline to subtract.
//!
//! Prints one `key=value` line: per round, CLOCK_MONOTONIC around `N`
//! operations; the median and best round in ns per operation, and the
//! exit cost (`ns_per_exit_*`: the access minus the baseline).

use std::arch::asm;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid output location for clock_gettime.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(ret, 0, "clock_gettime failed");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn parse(text: &str) -> u64 {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .unwrap_or_else(|_| panic!("not a number: {text}"))
}

fn die(msg: String) -> ! {
    eprintln!("pvrs-pio: {msg}");
    std::process::exit(1);
}

/// ns per operation of `op` over rounds of `count`: (median, best), after a
/// warm-up so that the first round does not pay for cold caches.
fn time_rounds(count: u64, rounds: usize, mut op: impl FnMut(u64)) -> (f64, f64) {
    for i in 0..count / 10 + 1 {
        op(i);
    }
    let mut per_op: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = now_ns();
            for i in 0..count {
                op(i);
            }
            (now_ns() - start) as f64 / count as f64
        })
        .collect();
    per_op.sort_by(|a, b| a.total_cmp(b));
    (per_op[per_op.len() / 2], per_op[0])
}

fn via_tty(count: u64, rounds: usize) -> String {
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/dev/ttyS0")
        .unwrap_or_else(|e| die(format!("/dev/ttyS0: {e}")));
    let fd = tty.as_raw_fd();
    let mut bits: libc::c_int = 0;
    // SAFETY: TIOCMGET writes one int to `bits`, which outlives the call.
    let mut tiocmget = || unsafe { libc::ioctl(fd, libc::TIOCMGET, &mut bits) };
    if tiocmget() != 0 {
        die(format!("TIOCMGET: {}", std::io::Error::last_os_error()));
    }
    let access = time_rounds(count, rounds, |_| {
        tiocmget();
    });
    // SAFETY: a zeroed termios is a valid output buffer for TCGETS.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    let baseline = time_rounds(count, rounds, |_| {
        // SAFETY: TCGETS writes one termios to `termios`.
        unsafe { libc::ioctl(fd, libc::TCGETS, &mut termios) };
    });
    format!(
        "pio via=tty-msr port=0x3fe count={count} rounds={rounds} ns_per_access_median={:.0} \
         ns_per_baseline_median={:.0} ns_per_exit_median={:.0} ns_per_exit_best={:.0}",
        access.0,
        baseline.0,
        access.0 - baseline.0,
        access.1 - baseline.1
    )
}

fn via_outb(count: u64, rounds: usize) -> String {
    const PORT: u16 = 0x80;
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(u64::from(PORT), 1, 1) } != 0 {
        die(format!(
            "ioperm({PORT:#x}): {} (a kernel without CONFIG_X86_IOPL_IOPERM? try --via tty)",
            std::io::Error::last_os_error()
        ));
    }
    let access = time_rounds(count, rounds, |i| {
        // SAFETY: the process holds I/O permission for PORT; a write to
        // the POST port has no effect on guest memory.
        unsafe {
            asm!("out dx, al", in("dx") PORT, in("al") i as u8, options(nomem, nostack, preserves_flags));
        }
    });
    format!(
        "pio via=outb port={PORT:#x} count={count} rounds={rounds} ns_per_access_median={:.0} \
         ns_per_baseline_median=0 ns_per_exit_median={:.0} ns_per_exit_best={:.0}",
        access.0, access.0, access.1
    )
}

fn main() {
    let mut via = String::from("tty");
    let mut count: u64 = 20_000;
    let mut rounds: usize = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| die(format!("{arg} needs a value")));
        match arg.as_str() {
            "--via" => via = value,
            "--count" => count = parse(&value).max(1),
            "--rounds" => rounds = (parse(&value) as usize).max(1),
            other => die(format!("unknown option {other}")),
        }
    }
    let line = match via.as_str() {
        "tty" => via_tty(count, rounds),
        "outb" => via_outb(count, rounds),
        other => die(format!("--via {other}: expected tty or outb")),
    };
    println!("{line}");
}
