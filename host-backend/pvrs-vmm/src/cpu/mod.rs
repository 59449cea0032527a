//! vCPUs: their initial state and the thread that runs each one.
//!
//! Every vCPU gets the CPUID table of [`cpuid`], a few boot MSRs and a
//! local APIC whose LINT0 is ExtINT (the 8259) and LINT1 NMI, as on a PC.
//! Only the boot processor gets registers ([`regs`]); the others wait for
//! INIT/SIPI inside KVM's in-kernel local APIC.
//!
//! The run loop forwards port I/O and MMIO exits to the buses and turns the
//! exits that end a VM (triple fault, KVM errors, system events) into an
//! [`ExitReason`].

pub mod cpuid;
pub mod regs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_lapic_state, kvm_msr_entry, CpuId, Msrs, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::bus::Bus;
use crate::exit::{ExitNotifier, ExitReason};
use regs::EntryPoint;

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// A failure to set up a vCPU.
#[derive(Debug)]
pub struct VcpuSetupError(pub String);

impl std::fmt::Display for VcpuSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VcpuSetupError {}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuSetupError {
    move |e| VcpuSetupError(format!("{what}: {e}"))
}

fn get_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = |i: usize| l.regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = *byte as _;
    }
}

/// Sets the delivery mode (bits 8-10) of a local vector table entry.
fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Programs LINT0 as ExtINT and LINT1 as NMI.
pub fn set_lint(l: &mut kvm_lapic_state) {
    let lvt0 = get_reg(l, APIC_LVT0);
    set_reg(l, APIC_LVT0, set_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = get_reg(l, APIC_LVT1);
    set_reg(l, APIC_LVT1, set_delivery_mode(lvt1, APIC_MODE_NMI));
}

/// Sets up vCPU `index` of `count`: CPUID, MSRs, LAPIC, FPU, and for the
/// boot processor (`entry` given) its registers.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    index: u8,
    count: u8,
    base_cpuid: &[kvm_cpuid_entry2],
    entry: Option<&EntryPoint>,
) -> Result<(), VcpuSetupError> {
    let mut entries = base_cpuid.to_vec();
    cpuid::set_vcpu_topology(&mut entries, index, count);
    let cpuid =
        CpuId::from_entries(&entries).map_err(|e| VcpuSetupError(format!("CPUID table: {e:?}")))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;

    let msrs = Msrs::from_entries(&[
        kvm_msr_entry {
            index: MSR_IA32_MISC_ENABLE,
            data: MISC_ENABLE_FAST_STRING,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_MTRR_DEF_TYPE,
            data: MTRR_ENABLE_WB,
            ..Default::default()
        },
    ])
    .map_err(|e| VcpuSetupError(format!("MSR list: {e:?}")))?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    if set != msrs.as_slice().len() {
        log::debug!(
            "vCPU {index}: KVM accepted {set} of {} boot MSRs",
            msrs.as_slice().len()
        );
    }

    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    set_lint(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;
    vcpu.set_fpu(&regs::boot_fpu())
        .map_err(kvm_err("KVM_SET_FPU"))?;

    if let Some(entry) = entry {
        let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&regs::boot_sregs(sregs, entry))
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs::boot_regs(entry))
            .map_err(kvm_err("KVM_SET_REGS"))?;
    }
    Ok(())
}

/// Counts of exits nobody decodes, for the log.
#[derive(Default)]
pub struct UnhandledCounters {
    /// Port I/O to a port no device decodes.
    pub pio: AtomicU64,
    /// MMIO to an address no device decodes.
    pub mmio: AtomicU64,
}

/// Everything a vCPU thread needs.
pub struct Vcpu {
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Its index (= APIC ID).
    pub index: usize,
    /// The port-I/O bus.
    pub pio: Arc<Bus>,
    /// The MMIO bus.
    pub mmio: Arc<Bus>,
    /// Where to report the end of the VM.
    pub exit: Arc<ExitNotifier>,
    /// Shared counters of unhandled accesses.
    pub unhandled: Arc<UnhandledCounters>,
}

/// What one `KVM_RUN` came back with, once the buses are done with it.
enum Outcome {
    Continue,
    Stop(ExitReason),
    InternalError,
}

fn note_unhandled(counter: &AtomicU64, what: &str, addr: u64, write: bool) {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if n < 16 || n.is_power_of_two() {
        let dir = if write { "write" } else { "read" };
        log::debug!("unhandled {what} {dir} at {addr:#x} ({} so far)", n + 1);
    }
}

impl Vcpu {
    fn handle(
        exit: VcpuExit<'_>,
        index: usize,
        pio: &Bus,
        mmio: &Bus,
        unhandled: &UnhandledCounters,
    ) -> Outcome {
        match exit {
            VcpuExit::IoIn(port, data) => {
                if !pio.read(u64::from(port), data) {
                    data.fill(0xff);
                    note_unhandled(&unhandled.pio, "port", u64::from(port), false);
                }
                Outcome::Continue
            }
            VcpuExit::IoOut(port, data) => {
                if !pio.write(u64::from(port), data) {
                    note_unhandled(&unhandled.pio, "port", u64::from(port), true);
                }
                Outcome::Continue
            }
            VcpuExit::MmioRead(addr, data) => {
                if !mmio.read(addr, data) {
                    data.fill(0);
                    note_unhandled(&unhandled.mmio, "MMIO", addr, false);
                }
                Outcome::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !mmio.write(addr, data) {
                    note_unhandled(&unhandled.mmio, "MMIO", addr, true);
                }
                Outcome::Continue
            }
            // With the in-kernel local APIC, HLT only reaches userspace on
            // odd configurations; resuming the vCPU is always correct.
            VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen | VcpuExit::IoapicEoi(_) => {
                Outcome::Continue
            }
            VcpuExit::Shutdown => Outcome::Stop(ExitReason::TripleFault { vcpu: index }),
            VcpuExit::SystemEvent(kind, _) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::Stop(ExitReason::PowerOff),
                KVM_SYSTEM_EVENT_RESET => Outcome::Stop(ExitReason::Reboot),
                KVM_SYSTEM_EVENT_CRASH => Outcome::Stop(ExitReason::CrashEvent { vcpu: index }),
                other => Outcome::Stop(ExitReason::KvmFailure {
                    vcpu: index,
                    detail: format!("unexpected system event {other}"),
                }),
            },
            VcpuExit::FailEntry(reason, cpu) => Outcome::Stop(ExitReason::KvmFailure {
                vcpu: index,
                detail: format!(
                    "KVM: entry failed, hardware entry failure reason {reason:#x} (host cpu {cpu})"
                ),
            }),
            VcpuExit::InternalError => Outcome::InternalError,
            other => Outcome::Stop(ExitReason::KvmFailure {
                vcpu: index,
                detail: format!("unexpected exit {other:?}"),
            }),
        }
    }

    /// The suberror of a `KVM_EXIT_INTERNAL_ERROR`, with its data words.
    fn internal_error_detail(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which the
        // kernel fills the `internal` member of the exit union; it is plain
        // integers, valid for any bit pattern.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..n]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        format!(
            "KVM internal error. Suberror: {} (data: {})",
            internal.suberror,
            data.join(" ")
        )
    }

    /// Runs the vCPU until the VM ends. Returns after reporting the reason.
    pub fn run(mut self) {
        loop {
            let outcome = match self.fd.run() {
                Ok(exit) => Self::handle(exit, self.index, &self.pio, &self.mmio, &self.unhandled),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Outcome::Continue
                }
                Err(e) => Outcome::Stop(ExitReason::KvmFailure {
                    vcpu: self.index,
                    detail: format!("KVM_RUN: {e}"),
                }),
            };
            match outcome {
                Outcome::Continue => {
                    if self.exit.reason().is_some() {
                        return;
                    }
                }
                Outcome::Stop(reason) => {
                    self.exit.exit(reason);
                    return;
                }
                Outcome::InternalError => {
                    let detail = self.internal_error_detail();
                    self.exit.exit(ExitReason::KvmFailure {
                        vcpu: self.index,
                        detail,
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes() {
        let mut l = kvm_lapic_state::default();
        set_reg(&mut l, APIC_LVT0, 0x0001_0000); // masked, fixed
        set_lint(&mut l);
        assert_eq!(get_reg(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!(get_reg(&l, APIC_LVT1), 0x0000_0400);
    }
}
