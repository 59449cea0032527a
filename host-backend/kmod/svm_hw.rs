// SPDX-License-Identifier: GPL-2.0

//! The SVM hardware, as the rest of the module sees it: turning SVM on and
//! off per CPU, the world switch, and the GIF/IF dance around it.
//!
//! This file and `svm_vmrun.S` are the module's only `unsafe` hardware
//! code; everything they do is described in AMD64 APM vol. 2:
//! - 15.4 "Enabling SVM": EFER.SVME, VM_CR.SVMDIS, and the host save area
//!   whose address goes to VM_HSAVE_PA before the first VMRUN;
//! - 15.5 "VMRUN", 15.6 "#VMEXIT": what the processor saves and loads;
//! - 15.17 "Global Interrupt Flag, STGI and CLGI";
//! - 15.5.2 "VMSAVE and VMLOAD": the state VMRUN does not switch (FS, GS,
//!   TR, LDTR, KernelGsBase, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*).
//!
//! KVM does the same in `arch/x86/kvm/svm/svm.c` (`svm_enable_virtualization_cpu`,
//! `svm_vcpu_enter_exit`) and `vmenter.S`.

use core::arch::asm;
use kernel::{
    alloc::{flags, KVec},
    bindings, cpu,
    mm::page_phys_addr,
    page::Page,
    prelude::*,
    x86::{read_msr, write_msr},
};

const MSR_EFER: u32 = bindings::MSR_EFER;
const EFER_SVME: u64 = bindings::EFER_SVME as u64;
const MSR_VM_CR: u32 = bindings::MSR_VM_CR;
const VM_CR_SVMDIS: u64 = bindings::SVM_VM_CR_SVM_DIS_MASK as u64;
const MSR_VM_HSAVE_PA: u32 = bindings::MSR_VM_HSAVE_PA;

/// Whether the boot CPU has SVM (CPUID 8000_0001h ECX bit 2).
pub(crate) fn cpu_has_svm() -> bool {
    kernel::x86::boot_cpu_has(bindings::X86_FEATURE_SVM)
}

/// The per-CPU pages SVM needs: the host save area that VM_HSAVE_PA names
/// (the processor's own, APM 15.30.4), and a VMCB-format page for the host
/// state that VMSAVE/VMLOAD switch around each VMRUN.
pub(crate) struct HostCpuPages {
    hsave: KVec<Page>,
    host_vmsave: KVec<Page>,
}

impl HostCpuPages {
    /// Pages for every possible CPU, so that a CPU coming online later
    /// finds its own.
    pub(crate) fn new() -> Result<Self> {
        let n = cpu::nr_cpu_ids() as usize;
        let mut hsave = KVec::with_capacity(n, flags::GFP_KERNEL)?;
        let mut host_vmsave = KVec::with_capacity(n, flags::GFP_KERNEL)?;
        for _ in 0..n {
            hsave.push(
                Page::alloc_page(flags::GFP_KERNEL | flags::__GFP_ZERO)?,
                flags::GFP_KERNEL,
            )?;
            host_vmsave.push(
                Page::alloc_page(flags::GFP_KERNEL | flags::__GFP_ZERO)?,
                flags::GFP_KERNEL,
            )?;
        }
        Ok(Self { hsave, host_vmsave })
    }

    /// The physical address of `cpu`'s host VMSAVE area.
    pub(crate) fn host_vmsave_pa(&self, cpu: u32) -> Option<u64> {
        self.host_vmsave.get(cpu as usize).map(page_phys_addr)
    }

    fn hsave_pa(&self, cpu: u32) -> Option<u64> {
        self.hsave.get(cpu as usize).map(page_phys_addr)
    }
}

/// Whether SVM is on on the current CPU (EFER.SVME), i.e. some hypervisor
/// owns it.
pub(crate) fn enabled_on_this_cpu() -> bool {
    // SAFETY: Reading EFER has no side effect.
    unsafe { read_msr(MSR_EFER) }.is_ok_and(|efer| efer & EFER_SVME != 0)
}

/// Turns SVM on on the current CPU, which must be `cpu`.
///
/// Refuses with EBUSY when EFER.SVME is already set: another hypervisor
/// (kvm_amd) owns SVM on this CPU, and sharing it would let one overwrite
/// the other's VM_HSAVE_PA or turn SVM off under it. Refuses with ENODEV
/// when the firmware disabled SVM (VM_CR.SVMDIS).
pub(crate) fn enable_on_this_cpu(pages: &HostCpuPages, cpu: u32) -> Result {
    let hsave = pages.hsave_pa(cpu).ok_or(EINVAL)?;
    // SAFETY: Reading EFER and VM_CR has no side effect.
    let (efer, vm_cr) = unsafe { (read_msr(MSR_EFER)?, read_msr(MSR_VM_CR)?) };
    if efer & EFER_SVME != 0 {
        pr_err!("CPU{}: SVM is already enabled (is kvm_amd loaded?)\n", cpu);
        return Err(EBUSY);
    }
    if vm_cr & VM_CR_SVMDIS != 0 {
        pr_err!(
            "CPU{}: SVM is disabled by the firmware (VM_CR.SVMDIS)\n",
            cpu
        );
        return Err(ENODEV);
    }
    // SAFETY: SVME was clear, so no other hypervisor uses this CPU; the
    // host save area is a page of ours that lives until `disable` has run
    // on every CPU (the hotplug registration is dropped before the pages).
    unsafe {
        write_msr(MSR_EFER, efer | EFER_SVME)?;
        write_msr(MSR_VM_HSAVE_PA, hsave)?;
    }
    Ok(())
}

/// Turns SVM off on the current CPU, if it is on: VM_HSAVE_PA back to 0,
/// GIF set (a CPU left with GIF=0 would never take an interrupt again),
/// then EFER.SVME clear. Also called in the emergency-reboot path, so it
/// takes no lock and allocates nothing.
pub(crate) fn disable_on_this_cpu() {
    // SAFETY: Reading EFER has no side effect.
    let Ok(efer) = (unsafe { read_msr(MSR_EFER) }) else {
        return;
    };
    if efer & EFER_SVME == 0 {
        return;
    }
    // SAFETY: No vCPU runs on this CPU (the callers run when the module
    // stops using the CPU, or when the machine goes down); STGI is valid
    // while SVME is set; clearing SVME afterwards is the documented way out.
    unsafe {
        let _ = write_msr(MSR_VM_HSAVE_PA, 0);
        asm!("stgi", options(nostack, nomem));
        let _ = write_msr(MSR_EFER, efer & !EFER_SVME);
    }
}

extern "C" {
    /// The world switch (`svm_vmrun.S`). `gprs` holds the guest's
    /// general-purpose registers by number (RAX = 0 ... R15 = 15; the RAX
    /// and RSP slots are unused, VMRUN switches those from the VMCB).
    /// It VMSAVEs the host's extra state to
    /// `host_vmsave_pa`, load the guest's GPRs, VMLOAD + VMRUN + VMSAVE the
    /// guest's VMCB, store the guest's GPRs, VMLOAD the host's state back.
    fn pvrs_svm_vmrun(vmcb_pa: u64, gprs: *mut [u64; 16], host_vmsave_pa: u64);
}

/// Runs the guest of `vmcb_pa` until the next #VMEXIT.
///
/// The caller has preemption disabled. This clears GIF, sets IF (so that
/// with V_INTR_MASKING a host interrupt ends the guest's slice with an INTR
/// exit instead of waiting for a natural exit), runs the guest, then
/// clears IF, sets GIF again and gives IF back the value it had: the host
/// interrupt that caused the exit is taken right there, after the host's
/// state is back.
///
/// # Safety
///
/// `vmcb_pa` must be the physical address of a valid VMCB (one VMRUN's
/// consistency checks accept, or the exit is VMEXIT_INVALID) whose nested
/// page tables only map memory the guest may use; SVM must be on on this
/// CPU and `host_vmsave_pa` must be this CPU's host VMSAVE area.
pub(crate) unsafe fn run_guest(vmcb_pa: u64, gprs: &mut [u64; 16], host_vmsave_pa: u64) {
    let rflags: u64;
    // SAFETY: Reads RFLAGS; no side effect.
    unsafe { asm!("pushfq", "pop {}", out(reg) rflags, options(nomem, preserves_flags)) };
    // SAFETY: The caller guarantees SVM is on and the addresses are right.
    // CLGI holds off interrupts, NMIs and SMIs from here to STGI, so no
    // host handler runs with the guest's GS base or TR loaded; STI inside
    // that window only arms V_INTR_MASKING's view of the host IF.
    unsafe {
        asm!("cli", "clgi", "sti", options(nostack, nomem));
        pvrs_svm_vmrun(vmcb_pa, gprs, host_vmsave_pa);
        asm!("cli", "stgi", options(nostack, nomem));
        if rflags & (1 << 9) != 0 {
            asm!("sti", options(nostack, nomem));
        }
    }
}

/// The emergency-reboot hook (kexec, panic, `emergency_restart`): the
/// kernel calls it on every CPU, in NMI context, before it resets the
/// machine; a CPU left in SVM mode could not run the next kernel's INIT.
///
/// # Safety
///
/// Only the kernel's emergency-reboot path calls it, when no vCPU will run
/// again on this CPU.
unsafe extern "C" fn emergency_disable() {
    disable_on_this_cpu();
}

/// The emergency-reboot hook, registered while the module has SVM on.
/// The kernel has a single slot, which KVM also uses: it is only free
/// because SVM was off (kvm_amd is not active) when this module loaded.
pub(crate) struct EmergencyHook(());

impl EmergencyHook {
    /// Registers the hook.
    pub(crate) fn register() -> Self {
        // SAFETY: `emergency_disable` is a valid callback for the whole
        // time it is registered (until `drop`, before the module goes).
        unsafe { bindings::cpu_emergency_register_virt_callback(Some(emergency_disable)) };
        Self(())
    }
}

impl Drop for EmergencyHook {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`; the call waits for a running
        // callback to finish (it uses RCU), so the code stays valid.
        unsafe { bindings::cpu_emergency_unregister_virt_callback(Some(emergency_disable)) };
    }
}

/// The host's physical address width (CPUID 8000_0008h EAX[7:0]), which
/// bounds NPT entries and the guest-physical space we offer.
pub(crate) fn host_phys_bits() -> u8 {
    (cpuid(0x8000_0008).eax & 0xff) as u8
}

/// The number of levels of the host's paging, which nested page tables
/// must match: the processor walks them in the host's paging mode (APM
/// 15.25.3), so with 5-level paging (CR4.LA57) they have 5 levels too.
pub(crate) fn host_paging_levels() -> u8 {
    let cr4: u64;
    // SAFETY: Reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags)) };
    if cr4 & (1 << 12) != 0 {
        5
    } else {
        4
    }
}

/// The SVM features of this processor (CPUID 8000_000Ah EDX): NRIPS,
/// DecodeAssists, FlushByAsid and the rest, all absent on QEMU TCG.
pub(crate) fn svm_features() -> crate::svm::SvmFeatures {
    crate::svm::SvmFeatures::from_cpuid_edx(cpuid(0x8000_000a).edx)
}

/// ASIDs the processor offers (CPUID 8000_000Ah EBX): 16 on QEMU TCG.
pub(crate) fn asid_count() -> u32 {
    cpuid(0x8000_000a).ebx
}

/// CPUID leaf `leaf` (subleaf 0) of the current CPU.
fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    cpuid_count(leaf, 0)
}

/// CPUID leaf `leaf`, subleaf `subleaf`, of the current CPU.
pub(crate) fn cpuid_count(leaf: u32, subleaf: u32) -> core::arch::x86_64::CpuidResult {
    // SAFETY: CPUID is always available on x86_64 and has no side effect.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::__cpuid_count(leaf, subleaf)
    }
}
