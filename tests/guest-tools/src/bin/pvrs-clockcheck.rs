//! Reads a clock from several threads at once, each pinned to its own CPU,
//! and counts backward steps: within a thread (two consecutive reads) and
//! across threads (a read that is older than a value another thread had
//! already published before this read began).
//!
//! `pvrs-clockcheck [--reads TOTAL] [--threads N] [--clock monotonic|realtime|raw]`
//!
//! Prints one `key=value` line; exits 1 on any backward step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid output location for clock_gettime.
    let ret = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(ret, 0, "clock_gettime failed");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: A zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only access the set given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[derive(Default)]
struct ThreadResult {
    local_backward: u64,
    cross_backward: u64,
    max_backward_ns: u64,
}

fn reader(clock: libc::clockid_t, reads: u64, newest: &AtomicU64) -> ThreadResult {
    let mut r = ThreadResult::default();
    let mut previous = 0u64;
    for _ in 0..reads {
        let published = newest.load(Ordering::Acquire);
        let t = now_ns(clock);
        if t < previous {
            r.local_backward += 1;
            r.max_backward_ns = r.max_backward_ns.max(previous - t);
        }
        if t < published {
            r.cross_backward += 1;
            r.max_backward_ns = r.max_backward_ns.max(published - t);
        }
        newest.fetch_max(t, Ordering::AcqRel);
        previous = t;
    }
    r
}

fn main() {
    let mut reads: u64 = 10_000_000;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut clock = libc::CLOCK_MONOTONIC;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--reads" => reads = value.parse().expect("--reads: a number"),
            "--threads" => threads = value.parse().expect("--threads: a number"),
            "--clock" => {
                clock = match value.as_str() {
                    "monotonic" => libc::CLOCK_MONOTONIC,
                    "realtime" => libc::CLOCK_REALTIME,
                    "raw" => libc::CLOCK_MONOTONIC_RAW,
                    other => panic!("unknown clock {other}"),
                }
            }
            other => panic!("unknown option {other}"),
        }
    }
    let newest = Arc::new(AtomicU64::new(0));
    let per_thread = reads / threads as u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|cpu| {
            let newest = Arc::clone(&newest);
            std::thread::spawn(move || {
                let pinned = pin_to_cpu(cpu);
                (pinned, reader(clock, per_thread, &newest))
            })
        })
        .collect();
    let mut total = ThreadResult::default();
    let mut pinned_all = true;
    for h in handles {
        let (pinned, r) = h.join().expect("reader thread");
        pinned_all &= pinned;
        total.local_backward += r.local_backward;
        total.cross_backward += r.cross_backward;
        total.max_backward_ns = total.max_backward_ns.max(r.max_backward_ns);
    }
    let elapsed = start.elapsed();
    let done = per_thread * threads as u64;
    println!(
        "clockcheck reads={} threads={} pinned={} local_backward={} cross_backward={} max_backward_ns={} elapsed_ms={} ns_per_read={}",
        done,
        threads,
        pinned_all,
        total.local_backward,
        total.cross_backward,
        total.max_backward_ns,
        elapsed.as_millis(),
        elapsed.as_nanos() as u64 * threads as u64 / done.max(1)
    );
    if total.local_backward + total.cross_backward > 0 {
        std::process::exit(1);
    }
}
