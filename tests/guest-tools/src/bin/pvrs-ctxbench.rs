//! Scheduler and interrupt round trips as a guest's workloads see them,
//! for comparing hypervisors (the `hv` benchmark of `tests/bench`):
//!
//! ```text
//! pvrs-ctxbench ctx [--rounds N] [--batches B]
//!     two processes pinned to one CPU (the first this process may use,
//!     CPU 0 in the guest) pass one byte back and forth through two pipes
//!     (lat_ctx-style ping-pong); a switch is one handoff, 2 per round:
//!     BENCH: ctx us_per_switch=... us_per_switch_min=... switches=... batches=B
//! pvrs-ctxbench ipi [--rounds N] [--batches B]
//!     the same with the processes on the first two CPUs (0 and 1 in the
//!     guest): each handoff wakes the partner on the other (usually idle,
//!     halted) CPU with a reschedule IPI, so a round is two IPI + wake-up
//!     trips:
//!     BENCH: ipi us_per_roundtrip=... us_per_roundtrip_min=... rounds=... batches=B
//!     (with fewer than 2 CPUs: `BENCH: ipi skipped=1 cpus=N`, exit 0)
//! pvrs-ctxbench timer [--rounds N] [--sleep-us U]
//!     N relative clock_nanosleep(CLOCK_MONOTONIC) of U µs (default 50)
//!     with a timer slack of 1 ns; the overshoot (slept - requested) is
//!     the timer-interrupt round trip: the timer armed, its interrupt
//!     delivered, the task woken and run:
//!     BENCH: timer us_overshoot_median=... us_overshoot_p90=...
//!            us_overshoot_min=... rounds=N sleep_us=U   (one line)
//! ```
//!
//! `ctx` and `ipi` time `B` (default 5) batches of `N/B` rounds (after a
//! warm-up batch) and report the median batch, so that one disturbed stretch does
//! not move the result. Exits 1 on any failed system call.

use std::time::Instant;

const USAGE: &str = "usage: pvrs-ctxbench ctx|ipi|timer [--rounds N] [--batches B] [--sleep-us U]";

fn die(msg: String) -> ! {
    eprintln!("pvrs-ctxbench: {msg}");
    std::process::exit(1);
}

fn os_error(what: &str) -> ! {
    die(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `p`th percentile of `values` (0 ≤ p ≤ 100), interpolated linearly
/// between the closest ranks (as numpy's default); NaN for no values.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

fn minimum(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// `rounds` split into `batches` batches as evenly as possible (each at
/// least one round).
fn batch_sizes(rounds: u64, batches: u64) -> Vec<u64> {
    let batches = batches.clamp(1, rounds.max(1));
    let rounds = rounds.max(1);
    (0..batches)
        .map(|i| rounds / batches + u64::from(i < rounds % batches))
        .collect()
}

/// The CPUs this process may run on, in order (in the guest: all of them).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid, empty set; sched_getaffinity
    // fills it and reads nothing else.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        os_error("sched_getaffinity");
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET only reads the set, within its size.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling process to `cpu`. In the forked child too: it only
/// makes system calls.
fn pin(cpu: usize) -> Result<(), std::io::Error> {
    // SAFETY: a zeroed cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes within the set (it ignores a cpu beyond it).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> [libc::c_int; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        os_error("pipe2");
    }
    fds
}

/// Reads or writes exactly one byte; false on end of file or an error.
fn read_byte(fd: libc::c_int) -> bool {
    let mut b = 0u8;
    // SAFETY: reads at most one byte into `b`.
    unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) == 1 }
}

fn write_byte(fd: libc::c_int) -> bool {
    let b = 0x5au8;
    // SAFETY: writes one byte from `b`.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) == 1 }
}

/// The ping-pong of `ctx` and `ipi`: a child pinned to `child_cpu` echoes
/// every byte it gets; this process, pinned to `parent_cpu`, sends a byte
/// and waits for the echo, `sizes[i]` times per batch after a warm-up of
/// `sizes[0]`. Returns the ns per round of each batch.
fn ping_pong(parent_cpu: usize, child_cpu: usize, sizes: &[u64]) -> Vec<f64> {
    let to_child = pipe();
    let to_parent = pipe();
    // SAFETY: this program is single-threaded, so the child may run any
    // code; it only makes system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        os_error("fork");
    }
    if pid == 0 {
        // The child: echo until the parent closes its end.
        // SAFETY: closing the descriptors the child does not use.
        unsafe {
            libc::close(to_child[1]);
            libc::close(to_parent[0]);
        }
        let code = match pin(child_cpu) {
            Err(e) => {
                eprintln!("pvrs-ctxbench: pinning the child to CPU {child_cpu}: {e}");
                1
            }
            Ok(()) => {
                while read_byte(to_child[0]) {
                    if !write_byte(to_parent[1]) {
                        break;
                    }
                }
                0
            }
        };
        // SAFETY: ends the child without running the parent's atexit
        // handlers or flushing its copied stdio buffers.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closing the child's ends in the parent.
    unsafe {
        libc::close(to_child[0]);
        libc::close(to_parent[1]);
    }
    if let Err(e) = pin(parent_cpu) {
        die(format!("pinning to CPU {parent_cpu}: {e}"));
    }
    let round = || {
        if !write_byte(to_child[1]) || !read_byte(to_parent[0]) {
            die("the partner process went away (see above)".to_string());
        }
    };
    for _ in 0..sizes[0] {
        round();
    }
    let per_round = sizes
        .iter()
        .map(|&n| {
            let start = Instant::now();
            for _ in 0..n {
                round();
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    // SAFETY: closing our write end ends the child's loop; waitpid reaps it.
    let mut status = 0;
    unsafe {
        libc::close(to_child[1]);
        libc::waitpid(pid, &mut status, 0);
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        die(format!(
            "the partner process failed (wait status {status:#x})"
        ));
    }
    per_round
}

fn ctx(rounds: u64, batches: u64) -> String {
    let cpu = allowed_cpus()[0];
    let sizes = batch_sizes(rounds, batches);
    // Two switches per round: to the child and back.
    let per_switch: Vec<f64> = ping_pong(cpu, cpu, &sizes)
        .iter()
        .map(|ns| ns / 2.0 / 1000.0)
        .collect();
    format!(
        "ctx us_per_switch={:.3} us_per_switch_min={:.3} switches={} batches={} cpu={cpu}",
        median(&per_switch),
        minimum(&per_switch),
        2 * sizes.iter().sum::<u64>(),
        sizes.len()
    )
}

fn ipi(rounds: u64, batches: u64) -> String {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return format!("ipi skipped=1 cpus={}", cpus.len());
    }
    let sizes = batch_sizes(rounds, batches);
    let per_round: Vec<f64> = ping_pong(cpus[0], cpus[1], &sizes)
        .iter()
        .map(|ns| ns / 1000.0)
        .collect();
    format!(
        "ipi us_per_roundtrip={:.3} us_per_roundtrip_min={:.3} rounds={} batches={} cpus={},{}",
        median(&per_round),
        minimum(&per_round),
        sizes.iter().sum::<u64>(),
        sizes.len(),
        cpus[0],
        cpus[1]
    )
}

fn timer(rounds: u64, sleep_us: u64) -> String {
    // Without this the kernel may fire the timer up to the default 50 µs
    // of slack late, to batch it with others.
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        os_error("prctl(PR_SET_TIMERSLACK)");
    }
    let request = libc::timespec {
        tv_sec: (sleep_us / 1_000_000) as libc::time_t,
        tv_nsec: ((sleep_us % 1_000_000) * 1000) as libc::c_long,
    };
    let requested_ns = sleep_us as f64 * 1000.0;
    let sleep = || {
        let start = Instant::now();
        // SAFETY: a relative sleep; `request` is valid, no remainder asked.
        let ret = unsafe {
            libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &request, std::ptr::null_mut())
        };
        if ret != 0 {
            die(format!("clock_nanosleep: error {ret}"));
        }
        (start.elapsed().as_nanos() as f64 - requested_ns) / 1000.0
    };
    for _ in 0..(rounds / 10).max(1) {
        sleep();
    }
    let overshoot: Vec<f64> = (0..rounds.max(1)).map(|_| sleep()).collect();
    format!(
        "timer us_overshoot_median={:.3} us_overshoot_p90={:.3} us_overshoot_min={:.3} rounds={} sleep_us={sleep_us}",
        median(&overshoot),
        percentile(&overshoot, 90.0),
        minimum(&overshoot),
        overshoot.len()
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    if matches!(mode.as_str(), "" | "-h" | "--help" | "help") {
        println!("{USAGE}");
        println!(
            "see the top of tests/guest-tools/src/bin/pvrs-ctxbench.rs for what each measures"
        );
        return;
    }
    let (mut rounds, mut batches, mut sleep_us) = (None, 5u64, 50u64);
    while let Some(arg) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| die(format!("{arg} needs a number\n{USAGE}")));
        match arg.as_str() {
            "--rounds" => rounds = Some(value.max(1)),
            "--batches" => batches = value.max(1),
            "--sleep-us" => sleep_us = value,
            other => die(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let line = match mode.as_str() {
        "ctx" => ctx(rounds.unwrap_or(10_000), batches),
        "ipi" => ipi(rounds.unwrap_or(2_000), batches),
        "timer" => timer(rounds.unwrap_or(1_000), sleep_us),
        other => die(format!("unknown mode {other}\n{USAGE}")),
    };
    println!("BENCH: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_unsorted() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentile_interpolates() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 90.0), 10.0);
        assert_eq!(percentile(&v, 100.0), 11.0);
        assert_eq!(percentile(&[0.0, 10.0], 90.0), 9.0);
        assert_eq!(percentile(&[5.0], 90.0), 5.0);
    }

    #[test]
    fn minimum_of_values() {
        assert_eq!(minimum(&[2.0, -1.0, 3.0]), -1.0);
    }

    #[test]
    fn batches_cover_all_rounds() {
        assert_eq!(batch_sizes(10, 3), vec![4, 3, 3]);
        assert_eq!(batch_sizes(2, 5), vec![1, 1]);
        assert_eq!(batch_sizes(0, 5), vec![1]);
        assert_eq!(batch_sizes(7, 0), vec![7]);
        assert_eq!(batch_sizes(1000, 5).iter().sum::<u64>(), 1000);
    }

    #[test]
    fn ping_pong_runs_on_one_cpu() {
        let cpu = allowed_cpus()[0];
        let per_round = ping_pong(cpu, cpu, &[10, 10]);
        assert_eq!(per_round.len(), 2);
        assert!(per_round.iter().all(|&ns| ns > 0.0));
    }
}
