use std::vec::Vec;

use super::super::testenv::{Effect, RecordingEnv};
use super::*;

const BASE: u64 = IOAPIC_DEFAULT_BASE_ADDRESS;

/// An IOAPIC with a recorder, driven through its MMIO window as a guest
/// drives it.
struct Bench {
    ioapic: Ioapic,
    env: RecordingEnv,
}

impl Bench {
    fn new() -> Self {
        Self {
            ioapic: Ioapic::new(),
            env: RecordingEnv::default(),
        }
    }

    fn mmio_write(&mut self, offset: u64, value: u32) -> Result<(), IoError> {
        self.ioapic.write(
            &mut self.env,
            IoSpace::Mmio,
            BASE + offset,
            &value.to_le_bytes(),
        )
    }

    fn mmio_read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.ioapic
            .read(&mut self.env, IoSpace::Mmio, BASE + offset, &mut data)
            .unwrap();
        u32::from_le_bytes(data)
    }

    fn write_register(&mut self, select: u32, value: u32) -> Result<(), IoError> {
        self.mmio_write(IOAPIC_REG_SELECT, select).unwrap();
        self.mmio_write(IOAPIC_REG_WINDOW, value)
    }

    fn read_register(&mut self, select: u32) -> u32 {
        self.mmio_write(IOAPIC_REG_SELECT, select).unwrap();
        self.mmio_read(IOAPIC_REG_WINDOW)
    }

    /// Programs entry `pin` the way an OS does: high half, then low half.
    fn program(&mut self, pin: u32, entry: u64) {
        let select = IOAPIC_REG_REDIRECTION_BASE + 2 * pin;
        self.write_register(select + 1, (entry >> 32) as u32)
            .unwrap();
        self.write_register(select, entry as u32).unwrap();
    }

    fn set_irq(&mut self, pin: u32, level: bool) -> IrqOutcome {
        self.ioapic.set_irq(&mut self.env, pin, level)
    }

    fn eoi(&mut self, vector: u8) -> EoiFollowUp {
        self.ioapic.eoi(&mut self.env, vector)
    }

    fn messages(&mut self) -> Vec<ApicMessage> {
        self.env
            .take()
            .into_iter()
            .map(|effect| match effect {
                Effect::Message(message) => message,
                other => panic!("the IOAPIC only sends messages, not {other:?}"),
            })
            .collect()
    }

    fn entry(&self, pin: usize) -> RedirectionEntry {
        self.ioapic.entry(pin).unwrap()
    }
}

const LEVEL: u64 = RedirectionEntry::LEVEL_TRIGGERED;
const MASKED: u64 = RedirectionEntry::MASKED;

fn fixed(vector: u8, dest: u8) -> ApicMessage {
    ApicMessage {
        dest: u32::from(dest),
        dest_mode: DestMode::Physical,
        delivery: DeliveryMode::Fixed,
        vector,
        level_triggered: false,
        assert: true,
        shorthand: Shorthand::None,
        source: None,
    }
}

fn fixed_level(vector: u8, dest: u8) -> ApicMessage {
    ApicMessage {
        level_triggered: true,
        ..fixed(vector, dest)
    }
}

#[test]
fn reset_state_is_kvms() {
    let mut bench = Bench::new();
    assert_eq!(bench.ioapic.base_address(), 0xfec0_0000);
    assert_eq!(bench.mmio_read(IOAPIC_REG_SELECT), 0);
    assert_eq!(bench.read_register(IOAPIC_REG_VERSION), 0x0017_0011);
    assert_eq!(bench.read_register(IOAPIC_REG_APIC_ID), 0);
    assert_eq!(bench.read_register(IOAPIC_REG_ARB_ID), 0);
    for pin in 0..IOAPIC_NUM_PINS {
        assert_eq!(bench.entry(pin), RedirectionEntry(MASKED));
    }
    assert_eq!(bench.ioapic.irr(), 0);
    assert_eq!(*bench.ioapic.counters(), IoapicCounters::default());

    // reset() masks again but keeps the other bits of the entries.
    bench.program(3, 0x0300_0000_0000_8041);
    bench.write_register(IOAPIC_REG_APIC_ID, 0x0500_0000).unwrap();
    bench.ioapic.reset();
    assert_eq!(bench.entry(3).0, 0x0300_0000_0001_8041);
    assert_eq!(bench.read_register(IOAPIC_REG_APIC_ID), 0);
    assert_eq!(bench.ioapic.irr(), 0);
}

#[test]
fn register_access_through_the_window() {
    let mut bench = Bench::new();
    // IOREGSEL keeps 8 bits.
    bench.mmio_write(IOAPIC_REG_SELECT, 0x1234).unwrap();
    assert_eq!(bench.mmio_read(IOAPIC_REG_SELECT), 0x34);

    // The id keeps bits 27:24, and the arbitration register shows it.
    bench.write_register(IOAPIC_REG_APIC_ID, 0xffff_ffff).unwrap();
    assert_eq!(bench.read_register(IOAPIC_REG_APIC_ID), 0x0f00_0000);
    assert_eq!(bench.read_register(IOAPIC_REG_ARB_ID), 0x0f00_0000);

    // Entry 23's halves.
    bench.write_register(0x10 + 2 * 23 + 1, 0xab00_0000).unwrap();
    bench.write_register(0x10 + 2 * 23, 0x0001_01ee).unwrap();
    assert_eq!(bench.read_register(0x3f), 0xab00_0000);
    assert_eq!(bench.read_register(0x3e), 0x0001_01ee);
    let entry = bench.entry(23);
    assert_eq!(entry.vector(), 0xee);
    assert_eq!(entry.delivery_mode_bits(), 1);
    assert_eq!(entry.dest_mode(), DestMode::Physical);
    assert_eq!(entry.destination(), 0xab);
    assert!(entry.masked() && !entry.level_triggered() && !entry.polarity_low());

    // Reserved bits keep what was written, as in KVM.
    bench.write_register(0x11, 0x00ff_ffff).unwrap();
    assert_eq!(bench.read_register(0x11), 0x00ff_ffff);
    assert_eq!(bench.ioapic.counters().bad_register_reads, 0);
}

#[test]
fn read_only_registers_and_bad_selects_are_counted() {
    let mut bench = Bench::new();
    assert_eq!(
        bench.write_register(IOAPIC_REG_VERSION, 0),
        Err(IoError::Refused)
    );
    assert_eq!(bench.read_register(IOAPIC_REG_VERSION), 0x0017_0011);
    assert_eq!(
        bench.write_register(IOAPIC_REG_ARB_ID, 0x0f00_0000),
        Err(IoError::Refused)
    );
    assert_eq!(bench.read_register(IOAPIC_REG_ARB_ID), 0);
    assert_eq!(bench.ioapic.counters().read_only_writes, 2);

    // 0x03-0x0f and 0x40-0xff select nothing: reads are all ones.
    for select in [0x03, 0x0f, 0x40, 0xff] {
        assert_eq!(bench.read_register(select), u32::MAX);
        assert_eq!(bench.write_register(select, 0), Err(IoError::Refused));
    }
    assert_eq!(bench.ioapic.counters().bad_register_reads, 4);
    assert_eq!(bench.ioapic.counters().bad_register_writes, 4);

    // Remote IRR and delivery status cannot be written.
    bench.program(0, LEVEL | 0x30 | RedirectionEntry::REMOTE_IRR | RedirectionEntry::DELIVERY_STATUS);
    assert!(!bench.entry(0).remote_irr());
    assert!(!bench.entry(0).delivery_status());
    assert!(bench.messages().is_empty());
}

#[test]
fn odd_offsets_and_widths() {
    let mut bench = Bench::new();
    let mut env = RecordingEnv::default();
    let ioapic = &mut bench.ioapic;
    assert!(ioapic.claims(IoSpace::Mmio, BASE, 4));
    assert!(ioapic.claims(IoSpace::Mmio, BASE + 0xfc, 4));
    assert!(!ioapic.claims(IoSpace::Mmio, BASE + 0xfe, 4));
    assert!(!ioapic.claims(IoSpace::Mmio, BASE - 1, 1));
    assert!(!ioapic.claims(IoSpace::Mmio, BASE + 0x100, 1));
    assert!(!ioapic.claims(IoSpace::Port, BASE, 4));
    assert!(!ioapic.claims(IoSpace::Mmio, u64::MAX, 8));
    assert!(!ioapic.claims(IoSpace::Mmio, BASE, 0));

    // 1-byte read of the version register: its low byte.
    ioapic
        .write(&mut env, IoSpace::Mmio, BASE, &[1])
        .unwrap();
    let mut byte = [0u8; 1];
    ioapic
        .read(&mut env, IoSpace::Mmio, BASE + 0x10, &mut byte)
        .unwrap();
    assert_eq!(byte, [0x11]);
    // 8-byte read: zero-extended.
    let mut quad = [0xffu8; 8];
    ioapic
        .read(&mut env, IoSpace::Mmio, BASE + 0x10, &mut quad)
        .unwrap();
    assert_eq!(u64::from_le_bytes(quad), 0x0017_0011);
    // 8-byte write: the low 32 bits.
    ioapic
        .write(&mut env, IoSpace::Mmio, BASE, &0xdead_0000_0000_0012u64.to_le_bytes())
        .unwrap();
    let mut word = [0u8; 4];
    ioapic
        .read(&mut env, IoSpace::Mmio, BASE, &mut word)
        .unwrap();
    assert_eq!(u32::from_le_bytes(word), 0x12);
    assert_eq!(ioapic.counters().odd_width_accesses, 4);

    // 3 bytes: refused.
    assert_eq!(
        ioapic.read(&mut env, IoSpace::Mmio, BASE, &mut [0u8; 3]),
        Err(IoError::BadWidth)
    );
    assert_eq!(ioapic.counters().bad_width_accesses, 1);

    // Offsets other than 0x00 and 0x10 read 0 and ignore writes.
    ioapic
        .read(&mut env, IoSpace::Mmio, BASE + 0x20, &mut word)
        .unwrap();
    assert_eq!(word, [0; 4]);
    assert_eq!(
        ioapic.write(&mut env, IoSpace::Mmio, BASE + 0x14, &[0; 4]),
        Err(IoError::Refused)
    );
    assert_eq!(ioapic.counters().unknown_offset_accesses, 2);
    assert_eq!(
        ioapic.read(&mut env, IoSpace::Mmio, BASE + 0x100, &mut word),
        Err(IoError::Unclaimed)
    );
    assert!(env.take().is_empty());
}

#[test]
fn edge_triggered_delivers_on_rising_edges() {
    let mut bench = Bench::new();
    bench.program(4, 0x0200_0000_0000_0031);
    assert_eq!(bench.set_irq(4, true), IrqOutcome::Delivered);
    assert_eq!(bench.messages(), [fixed(0x31, 2)]);
    // Still up: coalesced, nothing sent.
    assert_eq!(bench.set_irq(4, true), IrqOutcome::Coalesced);
    assert_eq!(bench.set_irq(4, false), IrqOutcome::Lowered);
    assert_eq!(bench.set_irq(4, false), IrqOutcome::Lowered);
    assert!(bench.messages().is_empty());
    assert_eq!(bench.set_irq(4, true), IrqOutcome::Delivered);
    assert_eq!(bench.messages(), [fixed(0x31, 2)]);
    assert!(!bench.entry(4).remote_irr());
    assert_eq!(IrqOutcome::Coalesced.kvm_status(), 0);
    assert_eq!(IrqOutcome::Delivered.kvm_status(), 1);
    assert_eq!(IrqOutcome::Ignored.kvm_status(), -1);
}

#[test]
fn edge_raised_while_masked_is_not_delivered_on_unmask() {
    let mut bench = Bench::new();
    bench.program(1, MASKED | 0x41);
    assert_eq!(bench.set_irq(1, true), IrqOutcome::Ignored);
    bench.program(1, 0x41);
    assert!(bench.messages().is_empty());
    // The line is still up: no new edge.
    assert_eq!(bench.set_irq(1, true), IrqOutcome::Coalesced);
    bench.set_irq(1, false);
    assert_eq!(bench.set_irq(1, true), IrqOutcome::Delivered);
}

#[test]
fn level_triggered_sets_remote_irr_and_eoi_redelivers() {
    let mut bench = Bench::new();
    bench.program(9, 0x0100_0000_0000_0000 | LEVEL | 0x59);
    assert_eq!(bench.set_irq(9, true), IrqOutcome::Delivered);
    assert_eq!(bench.messages(), [fixed_level(0x59, 1)]);
    assert!(bench.entry(9).remote_irr());
    assert_eq!(bench.read_register(0x10 + 18) & (1 << 14), 1 << 14);

    // Waiting for the EOI: raising again sends nothing.
    assert_eq!(bench.set_irq(9, true), IrqOutcome::Ignored);
    assert!(bench.messages().is_empty());

    // EOI of another vector changes nothing.
    assert_eq!(bench.eoi(0x60), EoiFollowUp::None);
    assert!(bench.entry(9).remote_irr());

    // EOI while the line is still up: delivered again.
    assert_eq!(bench.eoi(0x59), EoiFollowUp::None);
    assert_eq!(bench.messages(), [fixed_level(0x59, 1)]);
    assert!(bench.entry(9).remote_irr());

    // The device lowers the line; the EOI just clears remote IRR.
    bench.set_irq(9, false);
    assert_eq!(bench.eoi(0x59), EoiFollowUp::None);
    assert!(bench.messages().is_empty());
    assert!(!bench.entry(9).remote_irr());
}

#[test]
fn switching_to_edge_clears_remote_irr() {
    let mut bench = Bench::new();
    bench.program(2, LEVEL | 0x22);
    bench.set_irq(2, true);
    bench.messages();
    assert!(bench.entry(2).remote_irr());
    bench.program(2, 0x22);
    assert!(!bench.entry(2).remote_irr());
    assert!(bench.messages().is_empty());
}

#[test]
fn trigger_change_to_level_with_line_up_delivers() {
    let mut bench = Bench::new();
    bench.program(5, 0x25);
    bench.set_irq(5, true);
    assert_eq!(bench.messages(), [fixed(0x25, 0)]);
    bench.program(5, LEVEL | 0x25);
    assert_eq!(bench.messages(), [fixed_level(0x25, 0)]);
    assert!(bench.entry(5).remote_irr());
}

#[test]
fn masking_holds_level_interrupts_until_unmask() {
    let mut bench = Bench::new();
    bench.program(7, MASKED | LEVEL | RedirectionEntry::DEST_MODE_LOGICAL | 0x77);
    assert_eq!(bench.set_irq(7, true), IrqOutcome::Ignored);
    assert!(bench.messages().is_empty());
    assert!(!bench.entry(7).remote_irr());
    // Writing the high half (destination) alone delivers nothing.
    bench.write_register(0x10 + 14 + 1, 0x0300_0000).unwrap();
    assert!(bench.messages().is_empty());
    // Unmasking while the line is up delivers.
    bench.write_register(0x10 + 14, (LEVEL | RedirectionEntry::DEST_MODE_LOGICAL | 0x77) as u32)
        .unwrap();
    let message = ApicMessage {
        dest_mode: DestMode::Logical,
        ..fixed_level(0x77, 3)
    };
    assert_eq!(bench.messages(), [message]);
    // Masked while waiting for the EOI: the EOI does not deliver, the
    // unmask does.
    bench.program(7, 0x0300_0000_0000_0000 | MASKED | LEVEL | RedirectionEntry::DEST_MODE_LOGICAL | 0x77);
    assert!(bench.entry(7).remote_irr());
    assert_eq!(bench.eoi(0x77), EoiFollowUp::None);
    assert!(bench.messages().is_empty());
    bench.program(7, 0x0300_0000_0000_0000 | LEVEL | RedirectionEntry::DEST_MODE_LOGICAL | 0x77);
    assert_eq!(bench.messages(), [message]);
    // An unmask with the line down delivers nothing.
    bench.set_irq(7, false);
    assert_eq!(bench.eoi(0x77), EoiFollowUp::None);
    bench.program(7, MASKED | LEVEL | 0x77);
    bench.program(7, LEVEL | 0x77);
    assert!(bench.messages().is_empty());
}

#[test]
fn delivery_modes_and_reserved_mode() {
    let mut bench = Bench::new();
    let modes = [
        (0, Some(DeliveryMode::Fixed)),
        (1, Some(DeliveryMode::LowestPriority)),
        (2, Some(DeliveryMode::Smi)),
        (3, None),
        (4, Some(DeliveryMode::Nmi)),
        (5, Some(DeliveryMode::Init)),
        (6, Some(DeliveryMode::StartUp)),
        (7, Some(DeliveryMode::ExtInt)),
    ];
    for (pin, (bits, mode)) in modes.into_iter().enumerate() {
        assert_eq!(delivery_mode_from_bits(bits), mode);
        bench.program(pin as u32, u64::from(bits) << 8 | 0x90);
        let outcome = bench.set_irq(pin as u32, true);
        let sent = bench.messages();
        match mode {
            Some(mode) => {
                assert_eq!(outcome, IrqOutcome::Delivered);
                assert_eq!(sent.len(), 1);
                assert_eq!(sent[0].delivery, mode);
            }
            None => {
                assert_eq!(outcome, IrqOutcome::Ignored);
                assert!(sent.is_empty());
            }
        }
    }
    assert_eq!(bench.ioapic.counters().reserved_delivery_mode, 1);
}

#[test]
fn line_is_the_or_of_its_sources() {
    let mut bench = Bench::new();
    bench.program(3, LEVEL | 0x33);
    let env = &mut bench.env;
    let ioapic = &mut bench.ioapic;
    assert!(ioapic.set_irq_from_source(env, 3, 5, true).delivered());
    assert_eq!(ioapic.set_irq(env, 3, true), IrqOutcome::Ignored);
    // Source 0 lowering leaves source 5 holding the line.
    ioapic.set_irq(env, 3, false);
    assert_eq!(ioapic.irr(), 1 << 3);
    ioapic.set_irq_from_source(env, 3, 5, false);
    assert_eq!(ioapic.irr(), 0);
    // Freed sources are dropped without re-evaluating the line.
    ioapic.set_irq_from_source(env, 3, 7, true);
    ioapic.clear_source(7);
    assert_eq!(ioapic.irr(), 1 << 3);
    assert_eq!(ioapic.set_irq(env, 3, false), IrqOutcome::Lowered);
    assert_eq!(ioapic.irr(), 0);
    // Out of range: counted, ignored.
    assert_eq!(ioapic.set_irq(env, 24, true), IrqOutcome::Ignored);
    assert_eq!(ioapic.set_irq_from_source(env, 0, 64, true), IrqOutcome::Ignored);
    assert_eq!(ioapic.set_irq(env, u32::MAX, true), IrqOutcome::Ignored);
    assert_eq!(ioapic.counters().bad_lines, 3);
}

#[test]
fn eoi_storm_defers_redelivery() {
    let mut bench = Bench::new();
    bench.program(11, LEVEL | 0x5b);
    bench.set_irq(11, true);
    let mut sent = bench.messages().len();
    for _ in 1..IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT {
        assert_eq!(bench.eoi(0x5b), EoiFollowUp::None);
        sent += bench.messages().len();
    }
    assert_eq!(sent, IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT as usize);
    // The 10000th successive EOI with the line up defers.
    assert_eq!(bench.eoi(0x5b), EoiFollowUp::InjectLater);
    assert!(bench.messages().is_empty());
    assert!(!bench.entry(11).remote_irr());
    assert_eq!(bench.ioapic.counters().eoi_storms, 1);
    bench.ioapic.deferred_eoi_inject(&mut bench.env);
    assert_eq!(bench.messages(), [fixed_level(0x5b, 0)]);
    // Nothing pending: the deferred work does nothing.
    bench.ioapic.deferred_eoi_inject(&mut bench.env);
    assert!(bench.messages().is_empty());
    // The count restarted.
    assert_eq!(bench.eoi(0x5b), EoiFollowUp::None);
    assert_eq!(bench.messages().len(), 1);
}

#[test]
fn eoi_clears_every_entry_of_the_vector() {
    let mut bench = Bench::new();
    bench.program(0, LEVEL | 0x40);
    bench.program(1, LEVEL | 0x40);
    bench.set_irq(0, true);
    bench.set_irq(1, true);
    bench.set_irq(0, false);
    assert_eq!(bench.messages().len(), 2);
    assert_eq!(bench.eoi(0x40), EoiFollowUp::None);
    assert!(!bench.entry(0).remote_irr());
    // Pin 1 still up: re-delivered.
    assert!(bench.entry(1).remote_irr());
    assert_eq!(bench.messages().len(), 1);
}

#[test]
fn kvm_state_round_trip() {
    let mut bench = Bench::new();
    bench.write_register(IOAPIC_REG_APIC_ID, 0x0200_0000).unwrap();
    bench.program(0, 0x20); // edge, delivered: hidden from irr
    bench.program(1, MASKED | 0x21); // edge, masked: kept in irr
    bench.program(2, LEVEL | 0x22); // level, delivered: remote IRR
    bench.set_irq(0, true);
    bench.set_irq(1, true);
    bench.set_irq(2, true);
    bench.mmio_write(IOAPIC_REG_SELECT, 0x13).unwrap();
    bench.messages();

    let image = bench.ioapic.to_kvm_state();
    assert_eq!(image.len(), 216);
    let state = kvm_ioapic_state::from_bytes(&image).unwrap();
    assert_eq!(state.base_address, BASE);
    assert_eq!(state.ioregsel, 0x13);
    assert_eq!(state.id, 2);
    assert_eq!(state.irr, 0b110);
    assert_eq!(state.redirtbl[2], LEVEL | RedirectionEntry::REMOTE_IRR | 0x22);
    assert_eq!(state.redirtbl[23], MASKED);
    // Byte offsets of the C struct.
    assert_eq!(image[8], 0x13);
    assert_eq!(image[12], 2);
    assert_eq!(image[16], 0b110);
    assert_eq!(&image[24 + 16..24 + 24], &state.redirtbl[2].to_le_bytes());

    let mut restored = Bench::new();
    restored
        .ioapic
        .set_from_kvm_state(&mut restored.env, &image)
        .unwrap();
    // Pin 1 is masked and pin 2 waits for its EOI: nothing is sent.
    assert!(restored.messages().is_empty());
    assert_eq!(restored.ioapic.to_kvm_state(), image);
    assert_eq!(restored.mmio_read(IOAPIC_REG_SELECT), 0x13);
    // The restored remote IRR is served by the EOI as usual.
    restored.set_irq(2, true);
    assert_eq!(restored.eoi(0x22), EoiFollowUp::None);
    assert_eq!(restored.messages(), [fixed_level(0x22, 0)]);

    // A short image changes nothing.
    let before = restored.ioapic.to_kvm_state();
    assert_eq!(
        restored
            .ioapic
            .set_from_kvm_state(&mut restored.env, &image[..215]),
        Err(Error::ShortBuffer)
    );
    assert_eq!(restored.ioapic.to_kvm_state(), before);
}

#[test]
fn restoring_irr_delivers_what_the_entries_let_through() {
    let mut source = Bench::new();
    source.program(6, LEVEL | 0x66);
    source.program(8, 0x68);
    let mut image = source.ioapic.to_kvm_state();
    image[16] = 0x40; // irr: pin 6
    image[17] = 0x01; // irr: pin 8
    let mut bench = Bench::new();
    bench.ioapic.set_from_kvm_state(&mut bench.env, &image).unwrap();
    assert_eq!(bench.messages(), [fixed_level(0x66, 0), fixed(0x68, 0)]);
    assert!(bench.entry(6).remote_irr());
    // A moved base moves the window.
    image[..8].copy_from_slice(&0xfed0_0000u64.to_le_bytes());
    bench.ioapic.set_from_kvm_state(&mut bench.env, &image).unwrap();
    assert!(bench.ioapic.claims(IoSpace::Mmio, 0xfed0_0010, 4));
    assert!(!bench.ioapic.claims(IoSpace::Mmio, BASE, 4));
}

#[test]
fn restored_out_of_range_select_is_harmless() {
    let mut image = Ioapic::new().to_kvm_state();
    image[8..12].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let mut bench = Bench::new();
    bench.ioapic.set_from_kvm_state(&mut bench.env, &image).unwrap();
    assert_eq!(bench.mmio_read(IOAPIC_REG_SELECT), 0xffff_fff0);
    assert_eq!(bench.mmio_read(IOAPIC_REG_WINDOW), u32::MAX);
    assert_eq!(bench.mmio_write(IOAPIC_REG_WINDOW, 0), Err(IoError::Refused));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Select(u32),
        Window(u32),
        Access { offset: u64, len: usize, value: u64, write: bool },
        Line { pin: u32, source: u32, level: bool },
        Eoi(u8),
        Deferred,
        Restore(std::vec::Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Vectors and selects from small sets so that entries, lines and
        // EOIs meet often.
        let vector = prop_oneof![Just(0x30u8), Just(0x31u8), any::<u8>()];
        prop_oneof![
            3 => (0u32..0x42).prop_map(Op::Select),
            4 => any::<u32>().prop_map(|v| Op::Window(v & 0xff01_ffff | 0x30)),
            1 => (0u64..0x110, 0usize..9, any::<u64>(), any::<bool>())
                .prop_map(|(offset, len, value, write)| Op::Access { offset, len, value, write }),
            4 => (0u32..26, 0u32..3, any::<bool>())
                .prop_map(|(pin, source, level)| Op::Line { pin, source, level }),
            3 => vector.prop_map(Op::Eoi),
            1 => Just(Op::Deferred),
            1 => proptest::collection::vec(any::<u8>(), 200..220).prop_map(Op::Restore),
        ]
    }

    proptest! {
        /// Whatever the guest and the devices do, nothing panics, the
        /// version register is constant, remote IRR is only ever set on
        /// level-triggered entries, every message is one an unmasked entry
        /// describes, and no unmasked level-triggered interrupt is left
        /// pending without remote IRR (i.e. lost).
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let mut ioapic = Ioapic::new();
            let mut env = RecordingEnv::default();
            let mut restored = false;
            for op in ops {
                let mut follow_up = EoiFollowUp::None;
                match op {
                    Op::Select(select) => {
                        let _ = ioapic.write(&mut env, IoSpace::Mmio, BASE, &select.to_le_bytes());
                    }
                    Op::Window(value) => {
                        let _ = ioapic.write(&mut env, IoSpace::Mmio, BASE + 0x10, &value.to_le_bytes());
                    }
                    Op::Access { offset, len, value, write } => {
                        let mut data = [0u8; 8];
                        let data = &mut data[..len];
                        super::super::super::u64_to_bytes(value, data);
                        let addr = ioapic.base_address().wrapping_add(offset);
                        if write {
                            let _ = ioapic.write(&mut env, IoSpace::Mmio, addr, data);
                        } else {
                            let _ = ioapic.read(&mut env, IoSpace::Mmio, addr, data);
                        }
                    }
                    Op::Line { pin, source, level } => {
                        let outcome = ioapic.set_irq_from_source(&mut env, pin, source, level);
                        if outcome == IrqOutcome::Lowered {
                            prop_assert!(!level && pin < 24);
                        }
                    }
                    Op::Eoi(vector) => follow_up = ioapic.eoi(&mut env, vector),
                    Op::Deferred => ioapic.deferred_eoi_inject(&mut env),
                    Op::Restore(image) => {
                        let result = ioapic.set_from_kvm_state(&mut env, &image);
                        prop_assert_eq!(result.is_ok(), image.len() >= KVM_IOAPIC_STATE_SIZE);
                        restored |= result.is_ok();
                    }
                }
                let messages = env.take();
                prop_assert!(messages.len() <= IOAPIC_NUM_PINS);
                for effect in messages {
                    let Effect::Message(message) = effect else {
                        return Err(TestCaseError::fail("not a message"));
                    };
                    let described = (0..IOAPIC_NUM_PINS)
                        .filter_map(|pin| ioapic.entry(pin))
                        .any(|entry| !entry.masked() && entry.message() == Some(message));
                    prop_assert!(described, "{:?} matches no unmasked entry", message);
                }
                for pin in 0..IOAPIC_NUM_PINS {
                    let entry = ioapic.entry(pin).unwrap();
                    if !restored {
                        prop_assert!(!entry.remote_irr() || entry.level_triggered());
                    }
                    let pending = ioapic.irr() & (1 << pin) != 0;
                    if entry.level_triggered()
                        && pending
                        && !entry.masked()
                        && entry.message().is_some()
                        && follow_up == EoiFollowUp::None
                    {
                        prop_assert!(entry.remote_irr(), "pin {} lost its interrupt", pin);
                    }
                }
                // The version register reads the same whatever happened.
                let base = ioapic.base_address();
                let mut select = [0u8; 4];
                ioapic.read(&mut env, IoSpace::Mmio, base, &mut select).unwrap();
                if u32::from_le_bytes(select) == IOAPIC_REG_VERSION
            && base.checked_add(IOAPIC_MEM_LENGTH).is_some()
        {
                    let mut version = [0u8; 4];
                    ioapic.read(&mut env, IoSpace::Mmio, base.wrapping_add(0x10), &mut version).unwrap();
                    prop_assert_eq!(u32::from_le_bytes(version), IOAPIC_VERSION_REGISTER);
                }
                env.take();
            }
        }
    }
}
