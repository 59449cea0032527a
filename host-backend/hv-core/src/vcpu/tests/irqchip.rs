//! The exit handler and the entry-time injection with an in-kernel
//! irqchip ([`handle_exit_with_irqchip`], [`inject_pending_events`]), on
//! the real `SvmVcpu` and a two-vCPU [`VmIrqchip`].

use super::*;
use crate::irqchip::vm::{VcpuIrqchip, VmIrqchip};
use crate::irqchip::TimerId;
use crate::svm::event::SVM_EVTINJ_TYPE_NMI;

type Chip = VmIrqchip<2>;

/// Writes a register of vCPU `vcpu`'s xAPIC page directly.
fn apic_write(chip: &mut Chip, vcpu: usize, offset: u64, value: u32) {
    let _ = chip.mmio_write(vcpu, 0, MMIO + offset, &value.to_le_bytes());
}

/// A 64-bit vCPU 0 with IF set, and the irqchip of two vCPUs with their
/// LAPICs software-enabled.
struct Vm {
    machine: Machine,
    chip: Box<Chip>,
}

impl Vm {
    fn new() -> Self {
        let mut machine = Machine::long_mode();
        machine.vcpu.set_rflags(0x202);
        let mut chip = Box::new(Chip::default());
        for vcpu in 0..2 {
            chip.add_vcpu(vcpu, true).unwrap();
            apic_write(&mut chip, vcpu, 0xf0, 0x1ff);
        }
        Self { machine, chip }
    }

    fn exit(&mut self, code: u32, info1: u64, info2: u64) -> Step {
        let machine = &mut self.machine;
        let control = &mut machine.vcpu.vmcb.control;
        control.exit_code = code;
        control.exit_code_hi = 0;
        control.exit_info_1 = info1;
        control.exit_info_2 = info2;
        machine.vcpu.complete_exit();
        let mut irqchip = VcpuIrqchip::new(&mut self.chip, 0, 0, 1_000_000);
        handle_exit_with_irqchip(
            &mut *machine.vcpu,
            &mut machine.state,
            &mut machine.ram,
            &TestMap,
            HOST,
            &mut irqchip,
        )
    }

    fn inject(&mut self) -> Step {
        let mut irqchip = VcpuIrqchip::new(&mut self.chip, 0, 0, 1_000_000);
        inject_pending_events(&mut *self.machine.vcpu, &mut self.machine.state, &mut irqchip)
    }

    /// Fixed IPI from vCPU 1 to vCPU 0.
    fn interrupt(&mut self, vector: u8) {
        apic_write(&mut self.chip, 1, 0x310, 0);
        apic_write(&mut self.chip, 1, 0x300, 0x4000 | u32::from(vector));
    }

    fn injected(&self) -> u32 {
        self.machine.vcpu.vmcb.control.event_inj
    }

    /// The guest took the injected event (VMRUN delivered it).
    fn delivered(&mut self) {
        self.machine.vcpu.vmcb.control.event_inj = 0;
    }

    fn window_open(&self) -> bool {
        self.machine.vcpu.vmcb.is_intercepted(INTERCEPT_VINTR)
    }

    fn counters(&self) -> &ExitCounters {
        self.machine.state.counters()
    }

    fn npf(&mut self, gpa: u64, write: bool) -> Step {
        let mut error = NpfExit::USER | NpfExit::FINAL_TRANSLATION;
        if write {
            error |= NpfExit::WRITE;
        }
        self.exit(SVM_EXIT_NPF, error, gpa)
    }

    /// A one-byte IN or OUT.
    fn io(&mut self, port: u16, input: bool, next: u64) -> Step {
        let mut info1 = u64::from(port) << 16 | 1 << 4;
        if input {
            info1 |= SVM_IOIO_TYPE_MASK;
        }
        self.exit(SVM_EXIT_IOIO, info1, next)
    }
}

#[test]
fn interrupt_with_if_clear_opens_the_window_and_vintr_injects() {
    let mut vm = Vm::new();
    vm.machine.vcpu.set_rflags(0x2);
    vm.interrupt(0x40);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), 0);
    assert!(vm.window_open());
    assert_eq!(vm.counters().interrupt_windows, 1);
    // The guest runs STI...; the VINTR exit closes the window.
    vm.machine.vcpu.set_rflags(0x202);
    assert_eq!(vm.exit(SVM_EXIT_VINTR, 0, 0), Step::Resume);
    assert!(!vm.window_open());
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_INTR | 0x40);
    assert_eq!(vm.counters().interrupts_injected, 1);
    assert!(vm.chip.lapic(0).unwrap().isr().contains(0x40));
    // Nothing more to do at the next entry.
    vm.delivered();
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), 0);
}

#[test]
fn interrupt_shadow_and_queued_events_come_first() {
    let mut vm = Vm::new();
    vm.interrupt(0x41);
    vm.machine.vcpu.vmcb.control.int_state = SVM_INTERRUPT_SHADOW_MASK as u32;
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), 0, "no injection in an STI shadow");
    assert!(vm.window_open());
    vm.machine.vcpu.vmcb.control.int_state = 0;
    // An exception queued by the exit handler goes first.
    vm.machine
        .vcpu
        .inject_event(Event::exception(13, Some(0)))
        .unwrap();
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected() & 0xff, 13);
    assert!(
        vm.chip.lapic(0).unwrap().irr().contains(0x41),
        "still pending"
    );
    vm.delivered();
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), SVM_EVTINJ_VALID | 0x41);
}

#[test]
fn hlt_blocks_without_an_event_and_resumes_with_one() {
    let mut vm = Vm::new();
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Halt);
    assert_eq!(vm.machine.vcpu.rip(), CODE + 1);
    assert_eq!(vm.machine.state.mp_state(), MpState::Halted);
    assert_eq!(vm.counters().halts, 1);
    assert_eq!(vm.inject(), Step::Halt, "still nothing");
    {
        let mut irqchip = VcpuIrqchip::new(&mut vm.chip, 0, 0, 0);
        assert!(!wakeup_pending(
            &*vm.machine.vcpu,
            &vm.machine.state,
            &mut irqchip
        ));
    }
    vm.interrupt(0x42);
    {
        let mut irqchip = VcpuIrqchip::new(&mut vm.chip, 0, 0, 0);
        assert!(wakeup_pending(
            &*vm.machine.vcpu,
            &vm.machine.state,
            &mut irqchip
        ));
    }
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.machine.state.mp_state(), MpState::Runnable);
    assert_eq!(vm.injected(), SVM_EVTINJ_VALID | 0x42);

    // With an interrupt already pending, HLT does not block.
    vm.delivered();
    vm.interrupt(0x50);
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Resume);
    assert_eq!(vm.machine.state.mp_state(), MpState::Runnable);
    // cli; hlt with an interrupt pending: blocks (only an NMI wakes it).
    vm.machine.vcpu.set_rflags(0x2);
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Halt);
}

#[test]
fn nmi_is_injected_then_masked_until_iret_retires() {
    let mut vm = Vm::new();
    let send_nmi = |chip: &mut Chip| {
        apic_write(chip, 1, 0x310, 0);
        apic_write(chip, 1, 0x300, 0x4400);
    };
    send_nmi(&mut vm.chip);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI | 2);
    assert!(vm.machine.vcpu.vmcb.is_intercepted(INTERCEPT_IRET));
    vm.delivered();
    // A second NMI while the handler runs waits.
    send_nmi(&mut vm.chip);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), 0);
    assert!(vm.machine.state.nmi_pending());
    // IRET exit: the IRET has not run yet, so still masked.
    vm.machine.vcpu.set_rip(CODE + 0x100);
    assert_eq!(vm.exit(SVM_EXIT_IRET, 0, 0), Step::Resume);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), 0);
    assert!(vm.window_open(), "an exit once the IRET retired");
    // The IRET retired (RIP moved): the pending NMI goes in.
    vm.machine.vcpu.set_rip(CODE);
    assert_eq!(vm.exit(SVM_EXIT_VINTR, 0, 0), Step::Resume);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI | 2);
    assert_eq!(vm.counters().nmis_injected, 2);
}

#[test]
fn init_and_sipi_start_an_ap_in_real_mode() {
    let mut vm = Vm::new();
    // This Vm's vCPU is index 0; drive an AP by hand with index 1.
    let mut ap = Machine::long_mode();
    ap.state.set_mp_state(MpState::Uninitialized).unwrap();
    let inject_ap = |chip: &mut Chip, ap: &mut Machine| {
        let mut irqchip = VcpuIrqchip::new(chip, 1, 0, 0);
        inject_pending_events(&mut *ap.vcpu, &mut ap.state, &mut irqchip)
    };
    assert_eq!(inject_ap(&mut vm.chip, &mut ap), Step::Halt);
    // The BSP: INIT (assert), then SIPI with vector 0x9f.
    apic_write(&mut vm.chip, 0, 0x310, 1 << 24);
    apic_write(&mut vm.chip, 0, 0x300, 0xc500);
    apic_write(&mut vm.chip, 0, 0x300, 0x469f);
    assert_eq!(inject_ap(&mut vm.chip, &mut ap), Step::Resume);
    assert_eq!(ap.state.mp_state(), MpState::Runnable);
    let cs = ap.vcpu.segment(SegmentRegister::Cs);
    assert_eq!((cs.selector, cs.base, cs.limit), (0x9f00, 0x9_f000, 0xffff));
    assert_eq!(ap.vcpu.rip(), 0);
    assert_eq!(ap.vcpu.cr0() & CR0_PE, 0);
    assert_eq!(ap.vcpu.efer(), 0);
    assert_eq!(ap.vcpu.rflags(), 2);
    assert_eq!(ap.vcpu.gpr(Gpr::Rdx), 0x600);
    assert_eq!(ap.state.counters().inits, 1);
    assert_eq!(ap.state.counters().sipis, 1);
    // A second SIPI to a running AP is dropped.
    apic_write(&mut vm.chip, 0, 0x300, 0x4610);
    assert_eq!(inject_ap(&mut vm.chip, &mut ap), Step::Resume);
    assert_eq!(ap.state.counters().sipis_dropped, 1);
    assert_eq!(ap.vcpu.rip(), 0);
    // INIT to the BSP resets it but it runs on.
    apic_write(&mut vm.chip, 1, 0x310, 0);
    apic_write(&mut vm.chip, 1, 0x300, 0x4500);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.machine.vcpu.rip(), 0xfff0);
    assert_eq!(vm.machine.state.mp_state(), MpState::Runnable);
}

#[test]
fn x2apic_and_tsc_deadline_msrs_reach_the_lapic() {
    let mut vm = Vm::new();
    let cpuid = [CpuidEntry {
        function: 1,
        ecx: 1 << 21,
        ..CpuidEntry::default()
    }];
    vm.machine.state.set_cpuid(&cpuid).unwrap();
    let wrmsr = |vm: &mut Vm, msr: u32, value: u64| {
        vm.machine.code(&[0x0f, 0x30]);
        vm.machine.vcpu.set_gpr(Gpr::Rcx, u64::from(msr));
        vm.machine.vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
        vm.machine.vcpu.set_gpr(Gpr::Rdx, value >> 32);
        vm.exit(SVM_EXIT_MSR, 1, 0)
    };
    // Without x2APIC mode the MSRs fault.
    assert_eq!(wrmsr(&mut vm, 0x808, 0x20), Step::Resume);
    assert_eq!(vm.machine.injected(), GP_INJECTION);
    vm.delivered();
    // IA32_APIC_BASE: EN | EXTD.
    let base = vm.chip.apic_base(0).unwrap();
    assert_eq!(wrmsr(&mut vm, 0x1b, base | (1 << 10)), Step::Resume);
    assert_eq!(vm.injected(), 0);
    assert_eq!(vm.machine.state.msrs.apic_base, base | (1 << 10), "mirrored");
    assert_eq!(
        vm.chip.lapic(0).unwrap().mode(),
        crate::irqchip::lapic::ApicMode::X2Apic
    );
    // TPR through MSR 0x808.
    assert_eq!(wrmsr(&mut vm, 0x808, 0x20), Step::Resume);
    assert_eq!(vm.chip.cr8(0), Some(2));
    // A self IPI through the x2APIC ICR.
    assert_eq!(wrmsr(&mut vm, 0x830, (1 << 18) | 0x61), Step::Resume);
    assert!(vm.chip.lapic(0).unwrap().irr().contains(0x61));
    // RDMSR of the x2APIC id.
    vm.machine.code(&[0x0f, 0x32]);
    vm.machine.vcpu.set_gpr(Gpr::Rcx, 0x802);
    vm.machine.vcpu.set_gpr(Gpr::Rax, u64::MAX);
    assert_eq!(vm.exit(SVM_EXIT_MSR, 0, 0), Step::Resume);
    assert_eq!(vm.machine.vcpu.gpr(Gpr::Rax), 0);
    // TSC deadline: LVT timer in mode 2, a deadline 1000 cycles ahead of
    // the guest TSC (the host's 5000, no offset) at 1 GHz.
    assert_eq!(wrmsr(&mut vm, 0x832, (2 << 17) | 0x62), Step::Resume);
    assert_eq!(wrmsr(&mut vm, 0x6e0, 6000), Step::Resume);
    assert_eq!(
        vm.chip.lapic(0).unwrap().tsc_deadline(),
        6000,
        "armed, not fired"
    );
    let _ = vm.chip.timer_fired(1000, TimerId::Lapic(0));
    assert!(vm.chip.lapic(0).unwrap().irr().contains(0x62));
    assert!(vm.counters().irqchip_msr >= 6);
}

#[test]
fn xapic_mmio_eoi_is_handled_in_the_kernel() {
    let mut vm = Vm::new();
    vm.interrupt(0x43);
    assert_eq!(vm.inject(), Step::Resume);
    assert!(vm.chip.lapic(0).unwrap().isr().contains(0x43));
    vm.delivered();
    vm.machine.code(&[0x89, 0x08]); // mov [rax], ecx
    vm.machine.vcpu.set_gpr(Gpr::Rax, MMIO + 0xb0);
    vm.machine.vcpu.set_gpr(Gpr::Rcx, 0);
    assert_eq!(vm.npf(MMIO + 0xb0, true), Step::Resume);
    assert_eq!(vm.machine.vcpu.rip(), CODE + 2);
    assert!(!vm.chip.lapic(0).unwrap().isr().contains(0x43));
    assert_eq!(vm.counters().irqchip_mmio, 1);
    assert_eq!(vm.counters().mmio_writes, 0, "not to userspace");
    // A read of the version register.
    vm.machine.vcpu.set_rip(CODE);
    vm.machine.code(&[0x8b, 0x08]); // mov ecx, [rax]
    vm.machine.vcpu.set_gpr(Gpr::Rax, MMIO + 0x30);
    assert_eq!(vm.npf(MMIO + 0x30, false), Step::Resume);
    assert_eq!(vm.machine.vcpu.gpr(Gpr::Rcx), 0x0005_0014);
    // Outside the xAPIC page: userspace's as before.
    vm.machine.vcpu.set_rip(CODE);
    vm.machine.code(&[0x89, 0x08]);
    vm.machine.vcpu.set_gpr(Gpr::Rax, MMIO + 0x1000);
    assert!(matches!(
        vm.npf(MMIO + 0x1000, true),
        Step::ToUser(UserExit::Mmio { .. })
    ));
}

#[test]
fn pic_ports_are_handled_in_the_kernel() {
    let mut vm = Vm::new();
    // out 0x21, al (IMR) then in al, 0x21.
    vm.machine.code(&[0xe6, 0x21]);
    vm.machine.vcpu.set_gpr(Gpr::Rax, 0xfb);
    assert_eq!(vm.io(0x21, false, CODE + 2), Step::Resume);
    assert_eq!(vm.machine.vcpu.rip(), CODE + 2);
    vm.machine.vcpu.set_rip(CODE);
    vm.machine.code(&[0xe4, 0x21]);
    vm.machine.vcpu.set_gpr(Gpr::Rax, 0x1234_5600);
    assert_eq!(vm.io(0x21, true, CODE + 2), Step::Resume);
    assert_eq!(vm.machine.vcpu.gpr(Gpr::Rax), 0x1234_56fb);
    assert_eq!(vm.counters().irqchip_pio, 2);
    assert_eq!(vm.counters().port(PortClass::Pic), 2);
    // The PIT is userspace's until KVM_CREATE_PIT2.
    vm.machine.vcpu.set_rip(CODE);
    vm.machine.code(&[0xe6, 0x40]);
    assert!(matches!(
        vm.io(0x40, false, CODE + 2),
        Step::ToUser(UserExit::Io { .. })
    ));
}

#[test]
fn cr8_and_the_lapic_tpr_stay_in_sync() {
    let mut vm = Vm::new();
    // The guest wrote CR8 = 3 without an exit (V_TPR).
    vm.machine.vcpu.set_cr8(3);
    vm.machine.code(&[0x0f, 0xa2]); // cpuid
    assert_eq!(vm.exit(SVM_EXIT_CPUID, 0, 0), Step::Resume);
    assert_eq!(vm.chip.cr8(0), Some(3));
    // 0x35 is below TPR's class: nothing to inject, no window.
    vm.interrupt(0x35);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.injected(), 0);
    assert!(!vm.window_open());
    // The guest lowers TPR through the xAPIC page: synced to V_TPR.
    apic_write(&mut vm.chip, 0, 0x80, 0x15);
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.machine.vcpu.cr8(), 1);
    assert_eq!(vm.injected(), SVM_EVTINJ_VALID | 0x35);
    // The next exit rewrites TPR from V_TPR, as KVM on SVM does: bits 3:0
    // are gone.
    vm.delivered();
    vm.machine.vcpu.set_rip(CODE);
    assert_eq!(vm.exit(SVM_EXIT_CPUID, 0, 0), Step::Resume);
    assert_eq!(vm.chip.lapic(0).unwrap().to_kvm_state(0)[0x80], 0x10);
}

#[test]
fn a_pv_kick_ends_the_halt_once() {
    use crate::pvrs_abi::hypercall::KVM_HC_KICK_CPU;
    let mut vm = Vm::new();
    vm.machine.vcpu.set_rflags(0x2); // cli; hlt: only the kick wakes it
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Halt);
    // vCPU 1 kicks APIC id 0 with a VMMCALL.
    let (result, effects) = {
        let mut state = crate::pv::PvState::new();
        let mut view = VcpuIrqchip::new(&mut vm.chip, 1, 0, 0);
        let call = crate::pv::decode_hypercall(u64::from(KVM_HC_KICK_CPU), 0, 0, 0, 0, 0, true);
        let reference = crate::pv::ClockReference::default();
        let result = crate::pv::handle_hypercall(&mut state, &mut vm.machine.ram, &call, &reference, Some(&mut view));
        (result, view.effects)
    };
    assert_eq!(result, 0);
    assert!(effects.kicks(0));
    assert_eq!(vm.inject(), Step::Resume);
    assert_eq!(vm.machine.state.mp_state(), MpState::Runnable);
    // Used up: the next HLT waits again.
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Halt);

    // A kick before the HLT makes the HLT return at once, once.
    vm.inject();
    let _ = vm.chip.pv_kick(0, 0);
    assert_eq!(vm.inject(), Step::Resume);
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Halt, "the earlier wakeup used it");
    let _ = vm.chip.pv_kick(0, 0);
    vm.inject();
    vm.machine.code(&[0xf4]);
    let _ = vm.chip.pv_kick(0, 0);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Resume);
    vm.machine.code(&[0xf4]);
    assert_eq!(vm.exit(SVM_EXIT_HLT, 0, 0), Step::Halt);
}

#[test]
fn pv_send_ipi_hypercall_reaches_the_other_vcpu() {
    use crate::pvrs_abi::hypercall::KVM_HC_SEND_IPI;
    let mut vm = Vm::new();
    vm.machine.code(&[0x0f, 0x01, 0xd9]); // vmmcall
    let vcpu = &mut vm.machine.vcpu;
    vcpu.set_gpr(Gpr::Rax, u64::from(KVM_HC_SEND_IPI));
    vcpu.set_gpr(Gpr::Rbx, 0b11); // APIC ids 0 and 1
    vcpu.set_gpr(Gpr::Rcx, 0);
    vcpu.set_gpr(Gpr::Rdx, 0);
    vcpu.set_gpr(Gpr::Rsi, 0x61);
    assert_eq!(vm.exit(SVM_EXIT_VMMCALL, 0, 0), Step::Resume);
    assert_eq!(vm.machine.vcpu.gpr(Gpr::Rax), 2, "KVM returns the count");
    assert_eq!(vm.machine.vcpu.rip(), CODE + 3);
    assert!(vm.chip.pending_interrupt(1).is_some());
    assert_eq!(vm.machine.state.pv.counters.send_ipis, 1);
}
