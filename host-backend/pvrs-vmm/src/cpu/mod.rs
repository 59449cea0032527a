//! vCPUs: their initial state and the thread that runs each one.
//!
//! Every vCPU gets the CPUID table of [`cpuid`], a few boot MSRs and, with
//! an in-kernel irqchip, a local APIC whose LINT0 is ExtINT (the 8259) and
//! LINT1 NMI, as on a PC. Only the boot processor gets registers
//! ([`regs`]); the others wait for INIT/SIPI inside KVM's in-kernel local
//! APIC. [`configure_vcpu`] says which setup ioctls a device may lack.
//!
//! The run loop forwards port I/O and MMIO exits to the buses and turns the
//! exits that end a VM (triple fault, KVM errors, system events) into an
//! [`ExitReason`]. Without an in-kernel local APIC, `HLT` comes back to
//! the VMM, and since nothing can interrupt the guest then, the vCPU stays
//! halted until the VM ends.

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

/// Whether an ioctl failed because the device does not implement it:
/// `ENOTTY` is the usual answer, and `EINVAL` is what KVM's own vCPU file
/// (`kvm_arch_vcpu_ioctl`) and pvrs-kvm's return for a command they do not
/// know.
pub fn ioctl_unimplemented(e: &kvm_ioctls::Error) -> bool {
    matches!(e.errno(), libc::ENOTTY | libc::EINVAL)
}

/// What [`configure_vcpu`] needs besides the vCPU itself.
pub struct VcpuSetup<'a> {
    /// The CPUID table common to all vCPUs, before the per-vCPU topology.
    pub cpuid: &'a [kvm_cpuid_entry2],
    /// The device has `KVM_CAP_EXT_CPUID`, the documented capability of
    /// `KVM_SET_CPUID2`, so that ioctl must work.
    pub set_cpuid_promised: bool,
    /// The guest executes CPUID (any kernel does; the raw test payloads do
    /// not), so `KVM_SET_CPUID2` must work.
    pub guest_reads_cpuid: bool,
    /// There is an in-kernel local APIC to program (`KVM_CAP_IRQCHIP`).
    pub in_kernel_lapic: bool,
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
///
/// On a device other than `/dev/kvm` some of these ioctls may be missing
/// ([`ioctl_unimplemented`]); what then happens is decided by what the
/// guest would lose, and never hidden:
///
/// * `KVM_SET_CPUID2` is required when the device has `KVM_CAP_EXT_CPUID`
///   or the guest executes CPUID (every kernel). Otherwise (the raw test
///   payloads) its absence is logged at info level: the guest's CPUID is
///   then whatever the device answers by itself.
/// * `KVM_SET_MSRS` is never required. It sets `IA32_MISC_ENABLE` fast
///   strings and MTRRs enabled with write-back default, which differ from
///   a new vCPU's reset values; without them a Linux guest on an Intel
///   model leaves out its `rep movs` fast paths and takes memory types
///   from PAT alone (guest MTRRs do not reach the hardware with nested
///   paging anyway): slower, not wrong. Logged at info level.
/// * `KVM_SET_FPU` is never required: it sets FCW 0x37f and MXCSR 0x1f80,
///   the state KVM gives every new vCPU (FNINIT's, with the default MXCSR)
///   and the one every kernel sets itself before it uses the FPU. Logged at
///   debug level.
/// * `KVM_GET/SET_LAPIC` are only called with an in-kernel local APIC.
/// * `KVM_GET/SET_SREGS` and `KVM_SET_REGS` are the base API: required.
///
/// Any other failure, and any failure of an ioctl the device has, is an
/// error.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    index: u8,
    count: u8,
    setup: &VcpuSetup<'_>,
    entry: Option<&EntryPoint>,
) -> Result<(), VcpuSetupError> {
    let mut entries = setup.cpuid.to_vec();
    cpuid::set_vcpu_topology(&mut entries, index, count);
    let cpuid =
        CpuId::from_entries(&entries).map_err(|e| VcpuSetupError(format!("CPUID table: {e:?}")))?;
    match vcpu.set_cpuid2(&cpuid) {
        Ok(()) => {}
        Err(e)
            if ioctl_unimplemented(&e) && !setup.set_cpuid_promised && !setup.guest_reads_cpuid =>
        {
            log::info!(
                "vCPU {index}: KVM_SET_CPUID2 not implemented ({e}); the guest's CPUID is the device's own (this payload does not execute CPUID)"
            );
        }
        Err(e) => return Err(kvm_err("KVM_SET_CPUID2")(e)),
    }

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
    match vcpu.set_msrs(&msrs) {
        Ok(set) if set == msrs.as_slice().len() => {}
        Ok(set) => log::debug!(
            "vCPU {index}: KVM accepted {set} of {} boot MSRs",
            msrs.as_slice().len()
        ),
        Err(e) if ioctl_unimplemented(&e) => log::info!(
            "vCPU {index}: KVM_SET_MSRS not implemented ({e}); fast strings stay off and MTRRs disabled (slower for a Linux guest, not wrong)"
        ),
        Err(e) => return Err(kvm_err("KVM_SET_MSRS")(e)),
    }

    if setup.in_kernel_lapic {
        let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        set_lint(&mut lapic);
        vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;
    }
    match vcpu.set_fpu(&regs::boot_fpu()) {
        Ok(()) => {}
        Err(e) if ioctl_unimplemented(&e) => log::debug!(
            "vCPU {index}: KVM_SET_FPU not implemented ({e}); the vCPU keeps its reset FPU state"
        ),
        Err(e) => return Err(kvm_err("KVM_SET_FPU")(e)),
    }

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
    /// Whether the local APIC is in the kernel; without one, `HLT` exits to
    /// the VMM and nothing can wake the vCPU again.
    pub in_kernel_lapic: bool,
}

/// What one `KVM_RUN` came back with, once the buses are done with it.
enum Outcome {
    Continue,
    /// Halted with nothing that could wake it: no in-kernel local APIC and
    /// no interrupt injection from the VMM.
    HaltedForGood,
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
        in_kernel_lapic: bool,
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
            // Without a local APIC in the kernel, HLT is the guest waiting
            // for an interrupt, and the VMM injects none (it has no
            // interrupt controller of its own): resuming would spin on the
            // HLT or run past it as if an interrupt had come.
            VcpuExit::Hlt if !in_kernel_lapic => Outcome::HaltedForGood,
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
                Ok(exit) => Self::handle(
                    exit,
                    self.index,
                    &self.pio,
                    &self.mmio,
                    &self.unhandled,
                    self.in_kernel_lapic,
                ),
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
                Outcome::HaltedForGood => {
                    log::info!(
                        "vCPU {}: halted, and without an in-kernel irqchip no interrupt can wake it; it stays halted until the VM ends",
                        self.index
                    );
                    while self.exit.wait(1000).is_none() {}
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
    fn unimplemented_ioctls_are_told_apart_from_failures() {
        use kvm_ioctls::Error;
        assert!(ioctl_unimplemented(&Error::new(libc::ENOTTY)));
        assert!(ioctl_unimplemented(&Error::new(libc::EINVAL)));
        for errno in [libc::EFAULT, libc::ENOMEM, libc::EIO, libc::EPERM] {
            assert!(!ioctl_unimplemented(&Error::new(errno)), "{errno}");
        }
    }

    #[test]
    fn lint_modes() {
        let mut l = kvm_lapic_state::default();
        set_reg(&mut l, APIC_LVT0, 0x0001_0000); // masked, fixed
        set_lint(&mut l);
        assert_eq!(get_reg(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!(get_reg(&l, APIC_LVT1), 0x0000_0400);
    }
}
