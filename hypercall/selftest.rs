// SPDX-License-Identifier: GPL-2.0

//! The selftest interface: `/sys/kernel/debug/pvrs/hypercall`.
//!
//! A guest script writes one command per write and reads the result back:
//!
//! ```text
//! raw nr=N [a0=X] [a1=X] [a2=X] [a3=X]   any hypercall number (except the
//!                                          ones that write guest memory or
//!                                          inject interrupts)
//! kick_cpu apic=N
//! send_ipi vector=V apic=N[,N...] [count=C]
//! sched_yield apic=N
//! vapic_poll_irq
//! clock_pairing
//! bench [loops=N]                          cycles per call of each hypercall
//!                                          and per clock read
//! ```
//!
//! Numbers are decimal or `0x` hexadecimal. The result is one line per
//! outcome, `key=value` pairs: `op=... ret=<raw RAX>` and `result=ok` or
//! `result=error errno=<-E...>`. A command that cannot be parsed fails the
//! write with `EINVAL`; on a host that is not KVM every command fails with
//! `ENODEV`.

use core::fmt::Write;

use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    debugfs::{TextAttribute, TextBuffer},
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    time::{ktime_get_real_ns, Ktime},
};

use crate::abi::hypercall::{KVM_HC_KICK_CPU, KVM_HC_SCHED_YIELD, KVM_HC_VAPIC_POLL_IRQ};
use crate::hypercall::kvm::{cycles, host_result, ClockPairingArea, Kvm};

/// The largest result text kept.
const RESULT_MAX: usize = 4000;
/// Calls per timed batch in `bench`.
const BATCH: u64 = 100;
/// An unassigned hypercall number, for the cost of a bare exit.
const UNASSIGNED_HYPERCALL: u32 = 0x7fff_0000;

/// The state behind the file.
#[pin_data]
pub struct Selftest {
    kvm: Option<Kvm>,
    pairing: ClockPairingArea,
    #[pin]
    last: Mutex<KVec<u8>>,
}

/// A result being composed; text beyond [`RESULT_MAX`] is dropped.
struct Output(KVec<u8>);

impl Write for Output {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = RESULT_MAX.saturating_sub(self.0.len());
        let part = s.as_bytes().get(..room).unwrap_or(s.as_bytes());
        self.0
            .extend_from_slice(part, GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

impl Selftest {
    /// The selftest state for `kvm` (None: not on KVM).
    pub fn new(kvm: Option<Kvm>) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                kvm,
                pairing: ClockPairingArea::new()?,
                last <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL,
        )
    }
}

/// The `key=value` arguments of a command.
struct Args<'a> {
    text: &'a str,
}

impl<'a> Args<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.text
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    fn number(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(parse_number).transpose()
    }

    fn required(&self, key: &str) -> Result<u64> {
        self.number(key)?.ok_or(EINVAL)
    }

    /// Only the keys in `allowed` may appear, each as `key=value`.
    fn check_keys(&self, allowed: &[&str]) -> Result {
        for word in self.text.split_ascii_whitespace() {
            match word.split_once('=') {
                Some((k, _)) if allowed.contains(&k) => {}
                _ => return Err(EINVAL),
            }
        }
        Ok(())
    }
}

fn parse_number(text: &str) -> Result<u64> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|_| EINVAL)
}

fn parse_u32(text: &str) -> Result<u32> {
    u32::try_from(parse_number(text)?).map_err(|_| EINVAL)
}

/// Writes ` ret=.. result=..` for a hypercall outcome.
fn outcome(out: &mut Output, ret: Option<i64>, result: Result<u64>) -> Result {
    if let Some(ret) = ret {
        write!(out, " ret={}", ret)?;
    }
    match result {
        Ok(_) => write!(out, " result=ok")?,
        Err(e) => write!(out, " result=error errno={}", e.to_errno())?,
    }
    Ok(())
}

impl Selftest {
    fn run(&self, kvm: &Kvm, command: &str, out: &mut Output) -> Result {
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        let args = Args { text: rest };
        match verb {
            "raw" => {
                args.check_keys(&["nr", "a0", "a1", "a2", "a3"])?;
                let nr = u32::try_from(args.required("nr")?).map_err(|_| EINVAL)?;
                let mut regs = [0u64; 4];
                for (i, key) in ["a0", "a1", "a2", "a3"].iter().enumerate() {
                    regs[i] = args.number(key)?.unwrap_or(0);
                }
                write!(out, "op=raw nr={}", nr)?;
                match kvm.raw_checked(nr, regs) {
                    Ok(ret) => outcome(out, Some(ret), host_result(ret)),
                    Err(e) => outcome(out, None, Err(e)),
                }
            }
            "kick_cpu" => {
                args.check_keys(&["apic"])?;
                let apic = parse_u32(args.get("apic").ok_or(EINVAL)?)?;
                write!(out, "op=kick_cpu apic={}", apic)?;
                outcome(out, None, kvm.kick_cpu(apic).map(|()| 0))
            }
            "sched_yield" => {
                args.check_keys(&["apic"])?;
                let apic = parse_u32(args.get("apic").ok_or(EINVAL)?)?;
                write!(out, "op=sched_yield apic={}", apic)?;
                outcome(out, None, kvm.sched_yield(apic).map(|()| 0))
            }
            "vapic_poll_irq" => {
                args.check_keys(&[])?;
                write!(out, "op=vapic_poll_irq")?;
                outcome(out, None, kvm.vapic_poll_irq().map(|()| 0))
            }
            "send_ipi" => self.send_ipi(kvm, &args, out),
            "clock_pairing" => {
                args.check_keys(&[])?;
                let before = ktime_get_real_ns();
                let pairing = kvm.clock_pairing(&self.pairing);
                let after = ktime_get_real_ns();
                write!(out, "op=clock_pairing")?;
                if let Ok(p) = &pairing {
                    write!(
                        out,
                        " host_ns={} tsc={} guest_before_ns={} guest_after_ns={}",
                        p.host_ns(),
                        p.tsc,
                        before,
                        after
                    )?;
                }
                outcome(out, None, pairing.map(|_| 0))
            }
            "bench" => {
                args.check_keys(&["loops"])?;
                let loops = args.number("loops")?.unwrap_or(10_000).clamp(1, 10_000_000);
                self.bench(kvm, loops, out)
            }
            _ => Err(EINVAL),
        }
    }

    fn send_ipi(&self, kvm: &Kvm, args: &Args<'_>, out: &mut Output) -> Result {
        args.check_keys(&["vector", "apic", "count"])?;
        let vector = u8::try_from(args.required("vector")?).map_err(|_| EINVAL)?;
        let count = args.number("count")?.unwrap_or(1).clamp(1, 1_000_000);
        let mut ids = KVec::new();
        for id in args.get("apic").ok_or(EINVAL)?.split(',') {
            ids.push(parse_u32(id)?, GFP_KERNEL)?;
        }
        let min = ids.iter().copied().min().ok_or(EINVAL)?;
        let mut bitmap = [0u64; 2];
        for &id in ids.iter() {
            // The hypercall addresses 128 APIC IDs from `min`.
            let bit = id.wrapping_sub(min);
            let word = bitmap.get_mut((bit / 64) as usize).ok_or(EINVAL)?;
            *word |= 1 << (bit % 64);
        }
        write!(out, "op=send_ipi vector={:#x} count={}", vector, count)?;
        let mut delivered = 0u64;
        let mut last = Ok(0);
        for _ in 0..count {
            last = kvm.send_ipi(bitmap, min, vector).map(u64::from);
            match last {
                Ok(n) => delivered = delivered.saturating_add(n),
                Err(_) => break,
            }
        }
        write!(out, " delivered={}", delivered)?;
        outcome(out, None, last)
    }

    /// Cycles per call, timed over batches of [`BATCH`] calls (so that the
    /// timer reads around them cost little per call): the mean over all
    /// batches and the fastest batch.
    fn bench(&self, kvm: &Kvm, loops: u64, out: &mut Output) -> Result {
        write!(out, "op=bench loops={} result=ok", loops)?;
        let apic_self = 0;
        let batches = loops.div_ceil(BATCH).max(1);
        let mut measure = |name: &str, call: &mut dyn FnMut() -> bool| -> Result {
            let (mut total, mut min) = (0u64, u64::MAX);
            for _ in 0..batches {
                let start = cycles();
                let mut ok = true;
                for _ in 0..BATCH {
                    ok &= call();
                }
                let spent = cycles().wrapping_sub(start);
                if !ok {
                    write!(out, "\nbench name={} result=unsupported", name)?;
                    return Ok(());
                }
                total = total.wrapping_add(spent);
                min = min.min(spent);
            }
            let calls = batches.saturating_mul(BATCH);
            let mean = total.checked_div(calls).unwrap_or(0);
            let best = min.checked_div(BATCH).unwrap_or(0);
            write!(
                out,
                "\nbench name={} cycles_mean={} cycles_min={}",
                name, mean, best
            )?;
            Ok(())
        };
        measure("vapic_poll_irq", &mut || kvm.vapic_poll_irq().is_ok())?;
        measure(
            "unknown_hypercall",
            &mut || matches!(kvm.raw_checked(UNASSIGNED_HYPERCALL, [0; 4]), Ok(ret) if ret < 0),
        )?;
        measure("kick_cpu", &mut || kvm.kick_cpu(apic_self).is_ok())?;
        measure("sched_yield", &mut || kvm.sched_yield(apic_self).is_ok())?;
        measure("clock_pairing", &mut || {
            kvm.clock_pairing(&self.pairing).is_ok()
        })?;
        measure("ktime_get", &mut || Ktime::ktime_get().to_ns() > 0)?;
        measure("ktime_get_real", &mut || ktime_get_real_ns() > 0)?;
        // The numbers a row refers to, for readers of the result.
        write!(
            out,
            "\nbench hypercall_numbers vapic_poll_irq={} kick_cpu={} sched_yield={} unknown={:#x}",
            KVM_HC_VAPIC_POLL_IRQ, KVM_HC_KICK_CPU, KVM_HC_SCHED_YIELD, UNASSIGNED_HYPERCALL
        )?;
        Ok(())
    }
}

impl TextAttribute for Selftest {
    fn show(&self, out: &mut TextBuffer) -> Result {
        let last = self.last.lock();
        let text = core::str::from_utf8(&last).map_err(|_| EINVAL)?;
        writeln!(out, "{}", text)?;
        Ok(())
    }

    fn store(&self, input: &str) -> Result {
        let kvm = self.kvm.as_ref().ok_or(ENODEV)?;
        let mut out = Output(KVec::with_capacity(RESULT_MAX, GFP_KERNEL)?);
        self.run(kvm, input.trim(), &mut out)?;
        *self.last.lock() = out.0;
        Ok(())
    }
}
