//! The router and the VM-level wiring, driven through guest accesses as
//! a guest would program the chips.

use super::*;
use crate::irqchip::pit::PIT_BASE_PORT;
use crate::kvm_api::constants::{KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI};
use std::boxed::Box;
use std::vec::Vec;

type Chip = VmIrqchip<4>;
type Fx = Effects<4>;

const APIC: u64 = 0xfee0_0000;
const IOAPIC: u64 = 0xfec0_0000;

const SVR: u64 = 0xf0;
const TPR: u64 = 0x80;
const EOI: u64 = 0xb0;
const LDR: u64 = 0xd0;
const DFR: u64 = 0xe0;
const ICR: u64 = 0x300;
const ICR2: u64 = 0x310;
const LINT0: u64 = 0x350;

// ICR bits.
const LOGICAL: u32 = 1 << 11;
const ASSERT: u32 = 1 << 14;
const LEVEL: u32 = 1 << 15;
const SELF: u32 = 1 << 18;
const ALL: u32 = 2 << 18;
const ALL_BUT_SELF: u32 = 3 << 18;
const LOWEST: u32 = 1 << 8;
const NMI: u32 = 4 << 8;
const INIT: u32 = 5 << 8;
const STARTUP: u32 = 6 << 8;

/// `vcpus` vCPUs with software-enabled LAPICs, default routing.
fn chip(vcpus: usize) -> Box<Chip> {
    let mut chip = Box::new(Chip::default());
    for vcpu in 0..vcpus {
        chip.add_vcpu(vcpu, true).unwrap();
        let _ = apic_write(&mut chip, vcpu, SVR, 0x1ff);
    }
    chip
}

fn apic_write(chip: &mut Chip, vcpu: usize, offset: u64, value: u32) -> Fx {
    chip.mmio_write(vcpu, 0, APIC + offset, &value.to_le_bytes())
        .expect("the xAPIC page is claimed")
}

fn apic_read(chip: &mut Chip, vcpu: usize, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    let _ = chip.mmio_read(vcpu, 0, APIC + offset, &mut data).unwrap();
    u32::from_le_bytes(data)
}

fn ipi(chip: &mut Chip, from: usize, dest: u32, low: u32) -> Fx {
    let _ = apic_write(chip, from, ICR2, dest << 24);
    apic_write(chip, from, ICR, low)
}

fn irr(chip: &Chip, vcpu: usize, vector: u8) -> bool {
    chip.lapic(vcpu).unwrap().irr().contains(vector)
}

fn ioapic_write(chip: &mut Chip, register: u32, value: u32) {
    let _ = chip.mmio_write(0, 0, IOAPIC, &register.to_le_bytes()).unwrap();
    let _ = chip
        .mmio_write(0, 0, IOAPIC + 0x10, &value.to_le_bytes())
        .unwrap();
}

/// Redirection entry `pin`: high half first, so the entry is complete
/// when the low half unmasks it.
fn redirect(chip: &mut Chip, pin: u32, low: u32, high: u32) {
    ioapic_write(chip, 0x11 + 2 * pin, high);
    ioapic_write(chip, 0x10 + 2 * pin, low);
}

fn outb(chip: &mut Chip, port: u16, value: u8) -> Fx {
    chip.pio_write(0, port, &[value]).expect("claimed port")
}

/// Master PIC at vector base 0x08, slave at 0x70, nothing masked.
fn init_pic(chip: &mut Chip) {
    for (port, base, icw3) in [(0x20u16, 0x08u8, 0x04u8), (0xa0, 0x70, 0x02)] {
        let _ = outb(chip, port, 0x11);
        let _ = outb(chip, port + 1, base);
        let _ = outb(chip, port + 1, icw3);
        let _ = outb(chip, port + 1, 0x01);
        let _ = outb(chip, port + 1, 0x00);
    }
}

/// A KVM_SET_GSI_ROUTING argument.
struct Routes(Vec<u8>);

impl Routes {
    fn new() -> Self {
        Self(std::vec![0; 8])
    }
    fn entry(mut self, gsi: u32, kind: u32, words: [u32; 4]) -> Self {
        for value in [gsi, kind, 0, 0] {
            self.0.extend_from_slice(&value.to_le_bytes());
        }
        for value in words {
            self.0.extend_from_slice(&value.to_le_bytes());
        }
        self.0.extend_from_slice(&[0; 16]);
        let nr = ((self.0.len() - 8) / 48) as u32;
        self.0[..4].copy_from_slice(&nr.to_le_bytes());
        self
    }
    fn irqchip(self, gsi: u32, chip: u32, pin: u32) -> Self {
        self.entry(gsi, KVM_IRQ_ROUTING_IRQCHIP, [chip, pin, 0, 0])
    }
    fn msi(self, gsi: u32, address_lo: u32, data: u32) -> Self {
        self.entry(gsi, KVM_IRQ_ROUTING_MSI, [address_lo, 0, data, 0])
    }
}

/// QEMU's PC routing: GSI 0 to PIC pin 0 and IOAPIC pin 2, GSI 1-15 to
/// both at their number (but 2), GSI 16-23 to the IOAPIC.
fn qemu_routing() -> Vec<u8> {
    let mut routes = Routes::new()
        .irqchip(0, KVM_IRQCHIP_PIC_MASTER, 0)
        .irqchip(0, KVM_IRQCHIP_IOAPIC, 2);
    for gsi in 1..24 {
        if gsi == 2 {
            continue;
        }
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            routes = routes.irqchip(gsi, chip, gsi % 8);
        }
        routes = routes.irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
    }
    routes.0
}

/// PIT channel 0 in mode 2 with `count`; returns the armed deadline.
fn start_pit(chip: &mut Chip, count: u16) -> u64 {
    chip.create_pit(PitConfig { speaker_dummy: true }, 0).unwrap();
    let _ = outb(chip, PIT_BASE_PORT + 3, 0x34);
    let _ = outb(chip, PIT_BASE_PORT, count as u8);
    let effects = outb(chip, PIT_BASE_PORT, (count >> 8) as u8);
    effects
        .timer(TimerId::PitChannel0)
        .expect("a timer request")
        .expect("armed")
}

#[test]
fn fixed_ipi_to_one_apic_id() {
    let mut chip = chip(3);
    let effects = ipi(&mut chip, 0, 1, ASSERT | 0x40);
    assert!(irr(&chip, 1, 0x40));
    assert!(!irr(&chip, 0, 0x40) && !irr(&chip, 2, 0x40));
    assert_eq!(effects.kick, 0b010);
    assert_eq!(chip.pending_interrupt(1), Some(PendingInterrupt::Lapic(0x40)));
    assert_eq!(chip.acknowledge_interrupt(1), Some(0x40));
    assert_eq!(chip.pending_interrupt(1), None);
    assert!(chip.lapic(1).unwrap().isr().contains(0x40));
    // EOI through the xAPIC page clears ISR.
    let _ = apic_write(&mut chip, 1, EOI, 0);
    assert!(!chip.lapic(1).unwrap().isr().contains(0x40));
}

#[test]
fn shorthands_self_all_and_all_but_self() {
    let mut chip = chip(3);
    let effects = ipi(&mut chip, 1, 0, SELF | ASSERT | 0x41);
    assert_eq!(effects.kick, 0b010);
    assert!(irr(&chip, 1, 0x41) && !irr(&chip, 0, 0x41));
    let effects = ipi(&mut chip, 1, 0, ALL | ASSERT | 0x42);
    assert_eq!(effects.kick, 0b111);
    assert!((0..3).all(|vcpu| irr(&chip, vcpu, 0x42)));
    let effects = ipi(&mut chip, 1, 0, ALL_BUT_SELF | ASSERT | 0x43);
    assert_eq!(effects.kick, 0b101);
    assert!(irr(&chip, 0, 0x43) && !irr(&chip, 1, 0x43) && irr(&chip, 2, 0x43));
    // Physical broadcast 0xff reaches everyone, the sender included.
    let effects = ipi(&mut chip, 2, 0xff, ASSERT | 0x44);
    assert_eq!(effects.kick, 0b111);
    assert_eq!(chip.counters().messages, 4);
}

#[test]
fn logical_flat_and_cluster_destinations() {
    let mut chip = chip(3);
    for vcpu in 0..3 {
        let _ = apic_write(&mut chip, vcpu, LDR, 1 << (24 + vcpu));
    }
    let effects = ipi(&mut chip, 0, 0b110, LOGICAL | ASSERT | 0x50);
    assert_eq!(effects.kick, 0b110);
    assert!(!irr(&chip, 0, 0x50) && irr(&chip, 1, 0x50) && irr(&chip, 2, 0x50));

    // Cluster model: cluster in bits 7:4, members in 3:0.
    for vcpu in 0..3 {
        let _ = apic_write(&mut chip, vcpu, DFR, 0x0fff_ffff);
    }
    let _ = apic_write(&mut chip, 0, LDR, 0x11 << 24);
    let _ = apic_write(&mut chip, 1, LDR, 0x12 << 24);
    let _ = apic_write(&mut chip, 2, LDR, 0x21 << 24);
    let effects = ipi(&mut chip, 0, 0x13, LOGICAL | ASSERT | 0x51);
    assert_eq!(effects.kick, 0b011);
    let effects = ipi(&mut chip, 0, 0x21, LOGICAL | ASSERT | 0x52);
    assert_eq!(effects.kick, 0b100);
    assert!(irr(&chip, 2, 0x52) && !irr(&chip, 0, 0x52));
}

#[test]
fn lowest_priority_picks_the_lowest_arbitration_priority_then_index() {
    let mut chip = chip(4);
    for vcpu in 0..4 {
        let _ = apic_write(&mut chip, vcpu, LDR, 1 << (24 + vcpu));
    }
    let _ = apic_write(&mut chip, 0, TPR, 0x20);
    let _ = apic_write(&mut chip, 1, TPR, 0x30);
    let _ = apic_write(&mut chip, 2, TPR, 0x10);
    let _ = apic_write(&mut chip, 3, TPR, 0x10);
    let effects = ipi(&mut chip, 0, 0x0f, LOGICAL | LOWEST | ASSERT | 0x60);
    assert_eq!(effects.kick, 0b0100, "TPR 0x10 twice: the lower index");
    assert!(irr(&chip, 2, 0x60));
    assert!(!irr(&chip, 3, 0x60));
    // vCPU 2 now has 0x60 requested: its arbitration priority is 0x60.
    let effects = ipi(&mut chip, 0, 0x0f, LOGICAL | LOWEST | ASSERT | 0x61);
    assert_eq!(effects.kick, 0b1000);
    // A software-disabled APIC is not a candidate.
    let _ = apic_write(&mut chip, 0, SVR, 0xff);
    let effects = ipi(&mut chip, 1, 0x01, LOGICAL | LOWEST | ASSERT | 0x62);
    assert_eq!(effects.kick, 0);
    assert_eq!(chip.counters().messages_undelivered, 1);
}

#[test]
fn nmi_ipi_and_wakeup() {
    let mut chip = chip(2);
    assert!(!chip.has_wakeup_event(1, true, false));
    let effects = ipi(&mut chip, 0, 1, NMI | ASSERT);
    assert_eq!(effects.kick, 0b10);
    assert!(chip.has_wakeup_event(1, false, false), "NMI wakes cli; hlt");
    assert!(!chip.has_wakeup_event(1, false, true), "not a SIPI waiter");
    assert!(chip.take_nmi(1));
    assert!(!chip.take_nmi(1));
    assert_eq!(chip.pending_interrupt(1), None);
}

#[test]
fn init_then_sipi_brings_up_an_ap() {
    let mut chip = chip(2);
    // The AP's timer runs: INIT must cancel it.
    let _ = apic_write(&mut chip, 1, 0x320, 0x30);
    let _ = apic_write(&mut chip, 1, 0x380, 1000);
    let _ = ipi(&mut chip, 0, 1, INIT | ASSERT | LEVEL);
    let _ = ipi(&mut chip, 0, 1, INIT | LEVEL); // de-assert: nothing
    let effects = ipi(&mut chip, 0, 1, STARTUP | ASSERT | 0x9f);
    assert_eq!(effects.kick, 0b10);
    assert!(chip.has_wakeup_event(1, false, true));
    let (taken, effects) = chip.take_init(1, 10);
    assert!(taken);
    assert_eq!(effects.timer(TimerId::Lapic(1)), Some(None), "timer cancelled");
    assert_eq!(chip.take_sipi(1), Some(0x9f), "the SIPI survives the INIT reset");
    assert_eq!(chip.take_sipi(1), None);
    assert_eq!(apic_read(&mut chip, 1, SVR), 0xff, "INIT reset the LAPIC");
    // A SIPI before the INIT is superseded.
    let _ = ipi(&mut chip, 0, 1, STARTUP | ASSERT | 0x10);
    let _ = ipi(&mut chip, 0, 1, INIT | ASSERT);
    assert_eq!(chip.take_sipi(1), None);
    assert!(chip.take_init(1, 20).0);
}

#[test]
fn pit_tick_reaches_ioapic_pin_2_under_qemu_routing() {
    let mut chip = chip(2);
    chip.set_routing(&qemu_routing()).unwrap();
    redirect(&mut chip, 2, 0x30, 0); // edge, fixed, physical dest 0
    let deadline = start_pit(&mut chip, 1000);
    let effects = chip.timer_fired(deadline, TimerId::PitChannel0);
    assert!(irr(&chip, 0, 0x30));
    assert_eq!(effects.kick & 1, 1);
    let next = effects.timer(TimerId::PitChannel0).unwrap().unwrap();
    assert!(next > deadline, "periodic: re-armed");
    // The PIC saw IRQ 0 too, but its vCPU is 0: still the PIC first.
    assert_eq!(chip.pending_interrupt(0), Some(PendingInterrupt::Pic));
    // A second tick: edge again.
    let _ = chip.acknowledge_interrupt(0);
    let _ = chip.timer_fired(next, TimerId::PitChannel0);
    assert!(chip.counters().gsi_changes >= 4);
}

#[test]
fn pit_tick_reaches_pic_irq0_under_the_default_routing() {
    let mut chip = chip(2);
    init_pic(&mut chip);
    let deadline = start_pit(&mut chip, 100);
    let effects = chip.timer_fired(deadline, TimerId::PitChannel0);
    assert_eq!(effects.kick, 0b01, "the BSP's LINT0 is ExtINT, the AP's masked");
    assert!(chip.pic().output());
    assert_eq!(chip.pending_interrupt(0), Some(PendingInterrupt::Pic));
    assert_eq!(chip.pending_interrupt(1), None);
    assert!(chip.has_wakeup_event(0, true, false));
    assert!(!chip.has_wakeup_event(0, false, false));
    assert_eq!(chip.acknowledge_interrupt(0), Some(0x08));
    assert_eq!(chip.pending_interrupt(0), None);
    assert_eq!(chip.acknowledge_interrupt(0), None);
    // Non-specific EOI to the master.
    let _ = outb(&mut chip, 0x20, 0x20);
    // IOAPIC pin 0 is masked after creation: nothing reached the LAPIC.
    assert_eq!(chip.lapic(0).unwrap().irr().count(), 0);
    // Masking LINT0 hides the PIC from the BSP.
    let _ = chip.timer_fired(deadline + 1_000_000, TimerId::PitChannel0);
    let _ = apic_write(&mut chip, 0, LINT0, 0x1_0700);
    assert_eq!(chip.pending_interrupt(0), None);
}

#[test]
fn level_triggered_line_is_redelivered_after_eoi_while_up() {
    let mut chip = chip(1);
    // GSI 17: IOAPIC only under the default routing.
    redirect(&mut chip, 17, 0x55 | (1 << 15), 0);
    let (status, effects) = chip.set_gsi(0, 17, true);
    assert!(status > 0);
    assert_eq!(effects.kick, 1);
    assert!(chip.lapic(0).unwrap().tmr().contains(0x55));
    assert_eq!(chip.acknowledge_interrupt(0), Some(0x55));
    // Still up: the EOI broadcast re-delivers.
    let effects = apic_write(&mut chip, 0, EOI, 0);
    assert_eq!(effects.kick, 1);
    assert!(irr(&chip, 0, 0x55));
    assert_eq!(chip.counters().eoi_broadcasts, 1);
    assert_eq!(chip.acknowledge_interrupt(0), Some(0x55));
    let (status, _) = chip.set_gsi(0, 17, false);
    assert_eq!(status, 1);
    let _ = apic_write(&mut chip, 0, EOI, 0);
    assert!(!irr(&chip, 0, 0x55));
    assert_eq!(chip.ioapic().entry(17).unwrap().0 & (1 << 14), 0, "remote IRR clear");
    // Raising it again while masked: ignored (-1).
    redirect(&mut chip, 17, 0x55 | (1 << 15) | (1 << 16), 0);
    assert_eq!(chip.set_gsi(0, 17, true).0, -1);
    // GSI 5 goes to the PIC too (IRQ 5, unmasked, vector base 0 until
    // initialized), which the BSP takes first.
    redirect(&mut chip, 5, 0x56, 0);
    assert_eq!(chip.set_gsi(0, 5, true).0, 2, "PIC and IOAPIC both took it");
    assert_eq!(chip.pending_interrupt(0), Some(PendingInterrupt::Pic));
    assert_eq!(chip.acknowledge_interrupt(0), Some(5));
    assert_eq!(chip.acknowledge_interrupt(0), Some(0x56));
}

#[test]
fn msi_and_msi_routes() {
    let mut chip = chip(2);
    let (status, effects) = chip.signal_msi(0, 0xfee0_1000, 0, 0x41);
    assert_eq!((status, effects.kick), (1, 0b10));
    assert!(irr(&chip, 1, 0x41));
    // No such APIC id: nothing matched.
    assert_eq!(chip.signal_msi(0, 0xfee0_9000, 0, 0x42).0, -1);
    // Reserved delivery mode 3.
    assert_eq!(chip.signal_msi(0, 0xfee0_0000, 0, 0x300 | 0x43).0, -1);
    assert_eq!(chip.counters().bad_msis, 1);
    // An MSI route: raised sends, lowered does nothing.
    chip.set_routing(&Routes::new().msi(40, 0xfee0_0000, 0x44).0)
        .unwrap();
    assert_eq!(chip.set_gsi(0, 40, true).0, 1);
    assert!(irr(&chip, 0, 0x44));
    assert_eq!(chip.set_gsi(0, 40, false).0, -1);
    assert_eq!(chip.set_gsi(0, 41, true).0, -1, "no route");
}

#[test]
fn extint_message_acknowledges_the_pic() {
    let mut chip = chip(2);
    init_pic(&mut chip);
    let _ = chip.set_gsi(0, 1, true);
    // vCPU 1 does not accept PIC interrupts, but an ExtINT IPI makes it
    // acknowledge the PIC.
    assert_eq!(chip.pending_interrupt(1), None);
    let _ = ipi(&mut chip, 0, 1, (7 << 8) | ASSERT);
    assert_eq!(chip.pending_interrupt(1), Some(PendingInterrupt::Pic));
    assert_eq!(chip.acknowledge_interrupt(1), Some(0x09));
    assert_eq!(chip.counters().pic_acknowledges, 1);
}

#[test]
fn lapic_timer_requests_and_expiry() {
    let mut chip = chip(2);
    let _ = apic_write(&mut chip, 1, 0x3e0, 0xb); // divide by 1
    let _ = apic_write(&mut chip, 1, 0x320, 0x70); // one-shot, vector 0x70
    let effects = apic_write(&mut chip, 1, 0x380, 5000);
    assert_eq!(effects.timer(TimerId::Lapic(1)), Some(Some(5000)));
    assert_eq!(effects.timer(TimerId::Lapic(0)), None);
    assert_eq!(
        effects.timers().collect::<Vec<_>>(),
        [(TimerId::Lapic(1), Some(5000))]
    );
    let effects = chip.timer_fired(5000, TimerId::Lapic(1));
    assert_eq!(effects.kick, 0b10);
    assert!(irr(&chip, 1, 0x70));
    // Latest request per timer wins.
    let mut merged = Fx::NONE;
    let mut later = Fx::NONE;
    merged.set_timer(TimerId::PitChannel0, Some(1));
    later.set_timer(TimerId::PitChannel0, None);
    merged.merge(&later);
    assert_eq!(merged.timer(TimerId::PitChannel0), Some(None));
    assert!(!merged.is_empty());
    assert!(Fx::default().is_empty());
}

#[test]
fn x2apic_msrs_and_tsc_deadline() {
    let mut chip = chip(2);
    let features = MsrFeatures {
        long_mode: true,
        nx: true,
        ffxsr: false,
        tsc_aux: false,
        x2apic: true,
        physical_address_bits: 48,
        virtual_address_bits: 48,
    };
    let base = chip.apic_base(1).unwrap();
    chip.set_apic_base(1, base | (1 << 10), &features, MsrOrigin::Guest)
        .unwrap();
    assert_eq!(chip.msr_read(1, 0, 0x802), Some(Ok(1)), "x2APIC id");
    assert_eq!(chip.msr_read(1, 0, 0x10), None, "not an irqchip MSR");
    assert!(matches!(chip.msr_read(0, 0, 0x802), Some(Err(_))), "xAPIC mode");
    // Self IPI through the x2APIC ICR.
    let (result, effects) = chip.msr_write(1, 0, 0x830, (1 << 18) | 0x66, 0, 0).unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(effects.kick, 0b10);
    assert!(irr(&chip, 1, 0x66));
    // TSC-deadline mode, then a deadline 1000 cycles ahead at 1 GHz.
    let _ = chip.msr_write(1, 0, 0x832, (2 << 17) | 0x67, 0, 0).unwrap();
    let (result, effects) = chip
        .msr_write(1, 100, MSR_IA32_TSC_DEADLINE, 3000, 2000, 1_000_000)
        .unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(effects.timer(TimerId::Lapic(1)), Some(Some(1100)));
    assert_eq!(chip.msr_read(1, 0, MSR_IA32_TSC_DEADLINE), Some(Ok(3000)));
    // The xAPIC page is a hole in x2APIC mode: claimed, all-ones.
    let mut word = [0; 4];
    assert!(chip.mmio_read(1, 0, APIC + 0x20, &mut word).is_some());
    assert_eq!(word, [0xff; 4]);
    // Without TSC-deadline in the CPUID, the LVT timer keeps one mode bit.
    chip.set_tsc_deadline_supported(1, false);
    let (result, _) = chip.msr_write(1, 100, 0x832, 0x0006_00ef, 2000, 1_000_000).unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(chip.msr_read(1, 0, 0x832), Some(Ok(0x0002_00ef)));
}

#[test]
fn queue_overflow_is_counted_not_looped() {
    let mut chip = chip(1);
    let mut env = VmEnv::<4>::new(0);
    let message = ApicMessage {
        dest: 0,
        dest_mode: crate::irqchip::DestMode::Physical,
        delivery: DeliveryMode::Fixed,
        vector: 0x80,
        level_triggered: false,
        assert: true,
        shorthand: crate::irqchip::Shorthand::None,
        source: None,
    };
    for _ in 0..QUEUE_CAPACITY + 6 {
        env.send_apic_message(message);
    }
    let effects = chip.finish(env);
    assert_eq!(chip.counters().dropped_events, 6);
    assert_eq!(chip.counters().messages, QUEUE_CAPACITY as u64);
    assert_eq!(effects.kick, 1);
    // An EOI storm of a level line that never goes down ends in the
    // storm guard's deferral, one operation per EOI.
    redirect(&mut chip, 19, 0x90 | (1 << 15), 0);
    let _ = chip.set_gsi(0, 19, true);
    let mut deferred = None;
    for _ in 0..20_000 {
        assert_eq!(chip.acknowledge_interrupt(0), Some(0x90));
        let effects = apic_write(&mut chip, 0, EOI, 0);
        if let Some(deadline) = effects.timer(TimerId::IoapicEoiInject) {
            deferred = deadline;
            break;
        }
    }
    let deadline = deferred.expect("the storm guard deferred");
    assert!(!irr(&chip, 0, 0x90));
    let effects = chip.timer_fired(deadline, TimerId::IoapicEoiInject);
    assert_eq!(effects.kick, 1);
    assert!(irr(&chip, 0, 0x90));
}

#[test]
fn unknown_vcpus_and_ports_are_refused_quietly() {
    let mut chip = chip(1);
    assert!(chip.mmio_write(3, 0, APIC, &[0; 4]).is_none());
    assert!(chip.pio_write(0, 0x40, &[0]).is_none(), "no PIT yet");
    assert!(chip.pio_write(0, 0x3f8, &[0]).is_none());
    assert_eq!(chip.add_vcpu(0, true), Err(Error::AlreadyExists));
    assert_eq!(chip.add_vcpu(9, true), Err(Error::InvalidValue));
    assert!(chip.msr_read(2, 0, 0x802).is_none());
    let _ = chip.timer_fired(0, TimerId::Lapic(77));
    assert!(chip.counters().bad_vcpu >= 2);
    assert_eq!(chip.get_pit2(), Err(Error::NoDevice));
    assert!(chip.get_lapic(2, 0).is_err());
    assert_eq!(chip.get_irqchip(3).unwrap_err(), Error::InvalidValue);
    // A refused read of a claimed register reads all ones.
    let mut data = [0u8; 8];
    assert!(chip.mmio_read(0, 0, APIC + 0x20, &mut data).is_some());
    assert_eq!(data, [0xff; 8]);
}

#[test]
fn kvm_state_round_trips() {
    let mut chip = chip(2);
    init_pic(&mut chip);
    let _ = outb(&mut chip, 0x21, 0xfa);
    let _ = chip.set_gsi(0, 1, true);
    redirect(&mut chip, 7, 0x77 | (1 << 15), 1 << 24);
    let _ = chip.set_gsi(0, 7, true);
    let _ = apic_write(&mut chip, 1, TPR, 0x40);
    let _ = start_pit(&mut chip, 5000);

    let mut copy = Box::new(Chip::default());
    copy.add_vcpu(0, true).unwrap();
    copy.add_vcpu(1, true).unwrap();
    copy.create_pit(PitConfig { speaker_dummy: true }, 0).unwrap();
    for chip_id in 0..3 {
        let state = chip.get_irqchip(chip_id).unwrap();
        let bytes = state.to_vec();
        let decoded = kvm_irqchip::from_bytes(&bytes).unwrap();
        let _ = copy.set_irqchip(0, &decoded).unwrap();
        assert_eq!(copy.get_irqchip(chip_id).unwrap(), state, "chip {chip_id}");
    }
    for vcpu in 0..2 {
        let regs = chip.get_lapic(vcpu, 0).unwrap();
        let _ = copy.set_lapic(vcpu, 0, &regs).unwrap();
        assert_eq!(copy.get_lapic(vcpu, 0).unwrap(), regs);
    }
    let pit = chip.get_pit2().unwrap();
    let effects = copy.set_pit2(0, &pit).unwrap();
    assert!(effects.timer(TimerId::PitChannel0).is_some());
    assert_eq!(copy.get_pit2().unwrap(), pit);
    assert_eq!(copy.pic().output(), chip.pic().output());
    assert_eq!(copy.create_pit(PitConfig { speaker_dummy: true }, 0), Err(Error::AlreadyExists));
}

trait ToVec {
    fn to_vec(&self) -> Vec<u8>;
}

impl ToVec for kvm_irqchip {
    fn to_vec(&self) -> Vec<u8> {
        let mut bytes = std::vec![0; kvm_irqchip::SIZE];
        self.to_bytes(&mut bytes).unwrap();
        bytes
    }
}
