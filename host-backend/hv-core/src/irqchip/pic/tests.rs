use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::irqchip::testenv::RecordingEnv;

fn outb(pic: &mut Pic, port: u16, value: u8) {
    let mut env = RecordingEnv::default();
    pic.write(&mut env, IoSpace::Port, port.into(), &[value]).unwrap();
    // The PIC reaches nothing outside itself.
    assert!(env.effects.is_empty());
}

fn inb(pic: &mut Pic, port: u16) -> u8 {
    let mut data = [0xaa];
    pic.read(&mut RecordingEnv::default(), IoSpace::Port, port.into(), &mut data).unwrap();
    data[0]
}

/// ICW1-ICW4 for the chip at `cmd`, with ICW3 as a PC wires the pair.
fn init_chip(pic: &mut Pic, cmd: u16, vector_base: u8, icw4: u8) {
    let icw3 = if cmd == 0x20 { 0x04 } else { 0x02 };
    for (port, value) in [(cmd, 0x11), (cmd + 1, vector_base), (cmd + 1, icw3), (cmd + 1, icw4)] {
        outb(pic, port, value);
    }
}

/// Linux's `init_8259A` (arch/x86/kernel/i8259.c): vectors 30h/38h,
/// 8086 mode, normal EOI, everything masked but the cascade at the end.
fn linux_pic() -> Pic {
    let mut pic = Pic::new();
    outb(&mut pic, 0x21, 0xff);
    outb(&mut pic, 0xa1, 0xff);
    init_chip(&mut pic, 0x20, 0x30, 0x01);
    init_chip(&mut pic, 0xa0, 0x38, 0x01);
    outb(&mut pic, 0x21, 0xfb);
    outb(&mut pic, 0xa1, 0xff);
    pic
}

/// SeaBIOS's `pic_setup`: vectors 08h/70h, then the masks.
fn bios_pic() -> Pic {
    let mut pic = Pic::new();
    init_chip(&mut pic, 0x20, 0x08, 0x01);
    init_chip(&mut pic, 0xa0, 0x70, 0x01);
    outb(&mut pic, 0x21, 0xfb);
    outb(&mut pic, 0xa1, 0xff);
    pic
}

/// Raises and lowers an edge pin.
fn pulse(pic: &mut Pic, irq: u32) {
    pic.set_irq(irq, true).unwrap();
    pic.set_irq(irq, false).unwrap();
}

fn isr(pic: &mut Pic, cmd: u16) -> u8 {
    outb(pic, cmd, 0x0b);
    let value = inb(pic, cmd);
    outb(pic, cmd, 0x0a);
    value
}

#[test]
fn linux_init_sequence_programs_vectors_and_masks() {
    let mut pic = linux_pic();
    assert_eq!(inb(&mut pic, 0x21), 0xfb);
    assert_eq!(inb(&mut pic, 0xa1), 0xff);
    let master = pic.state(PicChip::Master);
    assert_eq!((master.irq_base, master.init_state, master.init4), (0x30, 0, 1));
    assert_eq!(master.auto_eoi, 0);
    assert_eq!(pic.state(PicChip::Slave).irq_base, 0x38);
    assert_eq!(pic.counters(), &PicCounters::default());

    // The timer tick as Linux handles it: unmask, interrupt, specific EOI.
    outb(&mut pic, 0x21, 0xfa);
    assert_eq!(pic.set_irq(0, true), Some(LineStatus::Delivered));
    pic.set_irq(0, false).unwrap();
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 0x30);
    assert!(!pic.output());
    assert_eq!(isr(&mut pic, 0x20), 0x01);
    outb(&mut pic, 0x20, 0x60);
    assert_eq!(isr(&mut pic, 0x20), 0x00);
}

#[test]
fn bios_init_sequence_and_slave_interrupt_with_non_specific_eois() {
    let mut pic = bios_pic();
    assert_eq!(pic.state(PicChip::Master).irq_base, 0x08);
    // The RTC on IRQ 8.
    outb(&mut pic, 0xa1, 0xfe);
    pulse(&mut pic, 8);
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 0x70);
    assert_eq!(isr(&mut pic, 0x20), 0x04);
    assert_eq!(isr(&mut pic, 0xa0), 0x01);
    outb(&mut pic, 0xa0, 0x20);
    outb(&mut pic, 0x20, 0x20);
    assert_eq!((isr(&mut pic, 0x20), isr(&mut pic, 0xa0)), (0, 0));
    assert!(!pic.output());
}

#[test]
fn icw1_without_icw4_ends_after_icw3_and_resets_mask() {
    let mut pic = Pic::new();
    outb(&mut pic, 0x21, 0x55);
    outb(&mut pic, 0x20, 0x10);
    assert_eq!(pic.state(PicChip::Master).imr, 0);
    outb(&mut pic, 0x21, 0x48);
    outb(&mut pic, 0x21, 0x04);
    // Initialized: this is OCW1.
    outb(&mut pic, 0x21, 0x12);
    let state = pic.state(PicChip::Master);
    assert_eq!((state.irq_base, state.imr, state.init_state), (0x48, 0x12, 0));
}

#[test]
fn unsupported_init_modes_are_counted() {
    let mut pic = Pic::new();
    // Single, level-triggered, ICW4 in 8080 mode.
    outb(&mut pic, 0x20, 0x1b);
    outb(&mut pic, 0x21, 0x20);
    outb(&mut pic, 0x21, 0x00);
    assert_eq!(pic.counters().unsupported_modes, 1);
    outb(&mut pic, 0x21, 0x00);
    assert_eq!(pic.counters().unsupported_modes, 2);
}

#[test]
fn masked_request_waits_in_irr_until_unmasked() {
    let mut pic = linux_pic();
    assert_eq!(pic.set_irq(1, true), Some(LineStatus::Masked));
    assert!(!pic.output());
    assert_eq!(inb(&mut pic, 0x20), 0x02);
    outb(&mut pic, 0x21, 0xf9);
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 0x31);
    // Still high: no new edge, so nothing more.
    assert_eq!(pic.set_irq(1, true), Some(LineStatus::Delivered));
    outb(&mut pic, 0x20, 0x61);
    assert!(!pic.output());
}

#[test]
fn a_second_edge_before_acknowledge_is_coalesced() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    pulse(&mut pic, 4);
    assert_eq!(pic.set_irq(4, true), Some(LineStatus::Coalesced));
}

#[test]
fn fixed_priorities_nest_higher_pins_only() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    pulse(&mut pic, 5);
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), 0x33);
    // 5 is lower than 3 in service.
    assert!(!pic.output());
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), 0x31);
    assert_eq!(isr(&mut pic, 0x20), 0x0a);
    // Non-specific EOI ends the highest in service: 1, then 3.
    outb(&mut pic, 0x20, 0x20);
    assert_eq!(isr(&mut pic, 0x20), 0x08);
    outb(&mut pic, 0x20, 0x20);
    assert_eq!(pic.acknowledge(), 0x35);
}

#[test]
fn set_priority_and_rotation_move_the_lowest_pin() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    // Pin 4 lowest: 5 now outranks 3.
    outb(&mut pic, 0x20, 0xc4);
    pulse(&mut pic, 3);
    pulse(&mut pic, 5);
    assert_eq!(pic.acknowledge(), 0x35);
    // Rotate on non-specific EOI: 5 becomes lowest, 6 highest.
    outb(&mut pic, 0x20, 0xa0);
    assert_eq!(pic.state(PicChip::Master).priority_add, 6);
    assert_eq!(pic.acknowledge(), 0x33);
    // Rotate on specific EOI of 3.
    outb(&mut pic, 0x20, 0xe3);
    assert_eq!(pic.state(PicChip::Master).priority_add, 4);
    assert_eq!(isr(&mut pic, 0x20), 0);
}

#[test]
fn specific_eoi_ends_only_the_named_pin_and_nop_does_nothing() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), 0x36);
    pulse(&mut pic, 2);
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), 0x31);
    outb(&mut pic, 0x20, 0x66);
    assert_eq!(isr(&mut pic, 0x20), 0x02);
    outb(&mut pic, 0x20, 0x40);
    assert_eq!(isr(&mut pic, 0x20), 0x02);
}

/// Slave pin 12 in service, then a higher slave pin 9 and a lower 14:
/// the master passes 9 through its in-service cascade pin only in
/// special fully nested mode.
fn nest_slave_pins(special_fully_nested: bool) {
    let mut pic = linux_pic();
    init_chip(&mut pic, 0x20, 0x30, if special_fully_nested { 0x11 } else { 0x01 });
    outb(&mut pic, 0x21, 0x00);
    outb(&mut pic, 0xa1, 0x00);
    pulse(&mut pic, 12);
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 0x3c);
    pulse(&mut pic, 9);
    assert_eq!(pic.output(), special_fully_nested);
    if special_fully_nested {
        assert_eq!(pic.acknowledge(), 0x39);
        // A lower slave pin still waits for the slave's ISR.
        pulse(&mut pic, 14);
        assert!(!pic.output());
        outb(&mut pic, 0xa0, 0x20);
        outb(&mut pic, 0xa0, 0x20);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x3e);
    } else {
        outb(&mut pic, 0xa0, 0x20);
        outb(&mut pic, 0x20, 0x20);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x39);
    }
}

#[test]
fn cascade_delivers_slave_vectors_through_master_pin_2() {
    nest_slave_pins(false);
}

#[test]
fn special_fully_nested_mode_lets_higher_slave_pins_nest() {
    nest_slave_pins(true);
}

#[test]
fn elcr_makes_pins_level_triggered_within_kvms_mask() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x4d0, 0xff);
    outb(&mut pic, 0x4d1, 0xff);
    assert_eq!(inb(&mut pic, 0x4d0), 0xf8);
    assert_eq!(inb(&mut pic, 0x4d1), 0xde);
    outb(&mut pic, 0xa1, 0x00);
    // Level IRQ 10: requested as long as the line is high.
    pic.set_irq(10, true).unwrap();
    assert_eq!(pic.acknowledge(), 0x3a);
    outb(&mut pic, 0xa0, 0x20);
    outb(&mut pic, 0x20, 0x20);
    assert!(pic.output(), "still high after EOI: interrupts again");
    assert_eq!(pic.acknowledge(), 0x3a);
    pic.set_irq(10, false).unwrap();
    outb(&mut pic, 0xa0, 0x20);
    outb(&mut pic, 0x20, 0x20);
    assert!(!pic.output());
    // IRQ 8 stays edge: one interrupt for a line held high.
    pic.set_irq(8, true).unwrap();
    assert_eq!(pic.acknowledge(), 0x38);
    outb(&mut pic, 0xa0, 0x20);
    outb(&mut pic, 0x20, 0x20);
    assert!(!pic.output());
}

#[test]
fn poll_mode_acknowledges_without_inta() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    outb(&mut pic, 0x20, 0x0c);
    assert_eq!(inb(&mut pic, 0x20), 0x07);
    pulse(&mut pic, 5);
    outb(&mut pic, 0x20, 0x0c);
    assert_eq!(inb(&mut pic, 0x21), 0x85);
    assert_eq!(isr(&mut pic, 0x20), 0);
    assert!(!pic.output());
    // Polling the slave also retires the cascade request.
    outb(&mut pic, 0xa1, 0x00);
    pulse(&mut pic, 11);
    assert_eq!(inb(&mut pic, 0x20), 0x04);
    outb(&mut pic, 0xa0, 0x0c);
    assert_eq!(inb(&mut pic, 0xa0), 0x83);
    assert_eq!(inb(&mut pic, 0x20), 0);
    assert!(!pic.output());
    // Poll is a one-shot: the next read is the IRR again.
    assert_eq!(inb(&mut pic, 0xa0), 0);
}

#[test]
fn spurious_vectors_when_nothing_or_only_the_cascade_is_pending() {
    let mut pic = bios_pic();
    assert_eq!(pic.acknowledge(), 0x0f);
    // A slave request that is masked again before the INTA cycle.
    outb(&mut pic, 0xa1, 0x00);
    pulse(&mut pic, 13);
    outb(&mut pic, 0xa1, 0xff);
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 0x77);
    assert_eq!(isr(&mut pic, 0xa0), 0);
}

#[test]
fn auto_eoi_and_rotate_on_auto_eoi() {
    let mut pic = Pic::new();
    init_chip(&mut pic, 0x20, 0x20, 0x03);
    pulse(&mut pic, 4);
    assert_eq!(pic.acknowledge(), 0x24);
    assert_eq!(isr(&mut pic, 0x20), 0);
    assert_eq!(pic.state(PicChip::Master).priority_add, 0);
    outb(&mut pic, 0x20, 0x80);
    pulse(&mut pic, 4);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), 0x24);
    assert_eq!(pic.state(PicChip::Master).priority_add, 5);
    assert_eq!(pic.acknowledge(), 0x26);
    // Auto-EOI survives an ICW1 that announces ICW4, not one that does not.
    outb(&mut pic, 0x20, 0x11);
    assert_eq!(pic.state(PicChip::Master).auto_eoi, 1);
    outb(&mut pic, 0x20, 0x10);
    assert_eq!(pic.state(PicChip::Master).auto_eoi, 0);
}

#[test]
fn special_mask_mode_lets_lower_pins_past_a_masked_in_service_pin() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), 0x33);
    outb(&mut pic, 0x21, 0x08);
    pulse(&mut pic, 5);
    assert!(!pic.output());
    outb(&mut pic, 0x20, 0x68);
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 0x35);
    outb(&mut pic, 0x20, 0x48);
    assert_eq!(pic.state(PicChip::Master).special_mask, 0);
}

#[test]
fn non_byte_accesses_and_unclaimed_addresses() {
    let mut pic = linux_pic();
    let mut env = RecordingEnv::default();
    let mut wide = [0xff; 2];
    pic.read(&mut env, IoSpace::Port, 0x20, &mut wide).unwrap();
    assert_eq!(wide, [0, 0]);
    pic.write(&mut env, IoSpace::Port, 0x20, &[0x11, 0]).unwrap();
    assert_eq!(pic.counters().non_byte_accesses, 2);
    assert_eq!(pic.state(PicChip::Master).init_state, 0);
    assert!(!pic.claims(IoSpace::Port, 0x21, 2));
    assert!(!pic.claims(IoSpace::Port, 0x22, 1));
    assert!(!pic.claims(IoSpace::Mmio, 0x20, 1));
    assert!(!pic.claims(IoSpace::Port, 0x4d0, 0));
    assert!(pic.claims(IoSpace::Port, 0x4d1, 1));
    assert_eq!(
        pic.write(&mut env, IoSpace::Port, 0x40, &[0]),
        Err(IoError::Unclaimed)
    );
    assert_eq!(pic.set_irq(16, true), None);
    assert_eq!(pic.counters().bad_pins, 1);
}

#[test]
fn state_round_trips_through_the_byte_image() {
    let mut pic = linux_pic();
    outb(&mut pic, 0x21, 0x00);
    outb(&mut pic, 0xa1, 0x00);
    outb(&mut pic, 0x4d1, 0x04);
    pic.set_irq(10, true).unwrap();
    pulse(&mut pic, 3);
    pulse(&mut pic, 7);
    // The cascade pin outranks 3 and 7.
    assert_eq!(pic.acknowledge(), 0x3a);
    outb(&mut pic, 0x20, 0x0b);
    outb(&mut pic, 0x20, 0xc1);

    let mut copy = Pic::new();
    for chip in [PicChip::Master, PicChip::Slave] {
        let mut image = [0u8; 16];
        pic.state(chip).to_bytes(&mut image).unwrap();
        copy.set_state(chip, &PicState::from_bytes(&image).unwrap());
    }
    assert_eq!(copy.state(PicChip::Master), pic.state(PicChip::Master));
    assert_eq!(copy.state(PicChip::Slave), pic.state(PicChip::Slave));
    assert_eq!(copy.output(), pic.output());
    assert_eq!(copy.acknowledge(), pic.acknowledge());
}

#[test]
fn byte_image_follows_the_header_order() {
    assert_eq!(PicState::SIZE, core::mem::size_of::<kvm_bindings::kvm_pic_state>());
    let image: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
    let state = PicState::from_bytes(&image).unwrap();
    assert_eq!((state.last_irr, state.isr, state.init_state), (1, 4, 10));
    assert_eq!((state.special_fully_nested_mode, state.elcr_mask), (13, 16));
    assert_eq!(PicState::from_bytes(&image[..15]), None);
    let mut out = [0u8; 16];
    state.to_bytes(&mut out).unwrap();
    assert_eq!(out, image);
}

#[test]
fn set_state_normalizes_what_could_misbehave() {
    let mut pic = Pic::new();
    let state = PicState {
        priority_add: 0xff,
        init_state: 9,
        poll: 7,
        irr: 0x80,
        ..PicState::default()
    };
    pic.set_state(PicChip::Master, &state);
    let back = pic.state(PicChip::Master);
    assert_eq!((back.priority_add, back.init_state, back.poll), (7, 0, 1));
    // Pin 7 has the highest priority now.
    assert!(pic.output());
    assert_eq!(pic.acknowledge(), 7);
}

#[derive(Clone, Debug)]
enum Op {
    Write(u16, u8),
    Read(u16),
    Wide(u16, u8),
    Irq(u32, bool),
    Ack,
    State(bool, [u8; 16]),
}

const PORTS: [u16; 6] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1];

fn op() -> impl Strategy<Value = Op> {
    let port = prop::sample::select(PORTS.to_vec());
    prop_oneof![
        8 => (port.clone(), any::<u8>()).prop_map(|(p, v)| Op::Write(p, v)),
        4 => port.clone().prop_map(Op::Read),
        1 => (port, 0u8..10).prop_map(|(p, len)| Op::Wide(p, len)),
        6 => (0u32..18, any::<bool>()).prop_map(|(irq, level)| Op::Irq(irq, level)),
        3 => Just(Op::Ack),
        1 => (any::<bool>(), any::<[u8; 16]>()).prop_map(|(slave, image)| Op::State(slave, image)),
    ]
}

proptest! {
    /// Any sequence of guest and VM actions: no panic, and the output
    /// always says whether the INTA cycle has a real vector to give.
    #[test]
    fn random_sequences_never_panic(ops in prop::collection::vec(op(), 0..200)) {
        let mut pic = Pic::new();
        let mut env = RecordingEnv::default();
        for op in ops {
            match op {
                Op::Write(port, value) => {
                    pic.write(&mut env, IoSpace::Port, port.into(), &[value]).unwrap();
                }
                Op::Read(port) => {
                    pic.read(&mut env, IoSpace::Port, port.into(), &mut [0]).unwrap();
                }
                Op::Wide(port, len) => {
                    let mut data: Vec<u8> = std::vec![0; usize::from(len)];
                    let _ = pic.read(&mut env, IoSpace::Port, port.into(), &mut data);
                    let _ = pic.write(&mut env, IoSpace::Port, port.into(), &data);
                }
                Op::Irq(irq, level) => {
                    let _ = pic.set_irq(irq, level);
                }
                Op::Ack => {
                    let output = pic.output();
                    let base = pic.state(PicChip::Master).irq_base;
                    let vector = pic.acknowledge();
                    if !output {
                        prop_assert_eq!(vector, base.wrapping_add(7));
                    }
                }
                Op::State(slave, image) => {
                    let chip = if slave { PicChip::Slave } else { PicChip::Master };
                    pic.set_state(chip, &PicState::from_bytes(&image).unwrap());
                }
            }
            prop_assert!(env.effects.is_empty());
        }
    }
}
