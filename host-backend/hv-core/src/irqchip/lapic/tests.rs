use std::vec::Vec;

use super::super::testenv::{Effect, RecordingEnv};
use super::*;

const BASE: u64 = APIC_DEFAULT_BASE;

fn features() -> MsrFeatures {
    MsrFeatures {
        long_mode: true,
        nx: true,
        ffxsr: false,
        tsc_aux: true,
        x2apic: true,
        physical_address_bits: 48,
        virtual_address_bits: 48,
    }
}

fn read(lapic: &mut Lapic, env: &mut RecordingEnv, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    lapic
        .read(env, IoSpace::Mmio, BASE + u64::from(offset), &mut data)
        .unwrap();
    u32::from_le_bytes(data)
}

fn write(lapic: &mut Lapic, env: &mut RecordingEnv, offset: u32, value: u32) {
    lapic
        .write(env, IoSpace::Mmio, BASE + u64::from(offset), &value.to_le_bytes())
        .unwrap();
}

/// A software-enabled xAPIC of vCPU `index` (not the BSP).
fn enabled_lapic(index: u32, env: &mut RecordingEnv) -> Lapic {
    let mut lapic = Lapic::new(index, false, true);
    write(&mut lapic, env, APIC_SPIV, 0x1ff);
    lapic
}

fn to_x2apic(lapic: &mut Lapic) {
    let value = lapic.apic_base() | APIC_BASE_X2APIC_ENABLE;
    lapic.set_apic_base(value, &features(), MsrOrigin::Guest).unwrap();
}

fn fixed(vector: u8, level_triggered: bool) -> ApicMessage {
    ApicMessage {
        dest: 0,
        dest_mode: DestMode::Physical,
        delivery: DeliveryMode::Fixed,
        vector,
        level_triggered,
        assert: true,
        shorthand: Shorthand::None,
        source: None,
    }
}

fn messages(env: &mut RecordingEnv) -> Vec<ApicMessage> {
    env.take()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Message(message) => Some(message),
            _ => None,
        })
        .collect()
}

#[test]
fn power_on_values() {
    let mut env = RecordingEnv::default();
    let mut lapic = Lapic::new(3, false, true);
    assert_eq!(lapic.apic_base(), 0xfee0_0800);
    assert_eq!(lapic.mode(), ApicMode::XApic);
    let expected: &[(u32, u32)] = &[
        (APIC_ID, 0x0300_0000),
        (APIC_LVR, 0x0005_0014),
        (APIC_TASKPRI, 0),
        (APIC_ARBPRI, 0),
        (APIC_PROCPRI, 0),
        (APIC_LDR, 0),
        (APIC_DFR, 0xffff_ffff),
        (APIC_SPIV, 0xff),
        (APIC_ESR, 0),
        (APIC_ICR, 0),
        (APIC_ICR2, 0),
        (0x320, 0x1_0000),
        (0x330, 0x1_0000),
        (0x340, 0x1_0000),
        (0x350, 0x1_0000),
        (0x360, 0x1_0000),
        (0x370, 0x1_0000),
        (APIC_TMICT, 0),
        (APIC_TMCCT, 0),
        (APIC_TDCR, 0),
    ];
    for &(offset, value) in expected {
        assert_eq!(read(&mut lapic, &mut env, offset), value, "offset {offset:#x}");
    }
    for word in 0..8 {
        for base in [APIC_ISR, APIC_TMR, APIC_IRR] {
            assert_eq!(read(&mut lapic, &mut env, base + 0x10 * word), 0);
        }
    }
    assert!(!lapic.software_enabled());
    assert!(env.take().is_empty());

    // The BSP: BSP bit, and LINT0 left in ExtINT (KVM's LINT0 quirk).
    let mut bsp = Lapic::new(0, true, true);
    assert_eq!(bsp.apic_base(), 0xfee0_0900);
    assert_eq!(read(&mut bsp, &mut env, 0x350), 0x700);
    assert!(bsp.accepts_pic_interrupts());
    assert!(!lapic.accepts_pic_interrupts());
}

#[test]
fn reset_and_init() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(2, &mut env);
    write(&mut lapic, &mut env, APIC_ID, 0x0700_0000);
    write(&mut lapic, &mut env, APIC_TASKPRI, 0x30);
    write(&mut lapic, &mut env, 0x320, 0x40);
    write(&mut lapic, &mut env, APIC_TMICT, 100);
    lapic.accept(&fixed(0x50, false));
    env.take();
    lapic.init(&mut env);
    assert_eq!(env.take(), [Effect::Timer(TimerId::Lapic(2), None)]);
    assert_eq!(read(&mut lapic, &mut env, APIC_ID), 0x0700_0000, "INIT keeps the id");
    assert_eq!(read(&mut lapic, &mut env, APIC_TASKPRI), 0);
    assert_eq!(read(&mut lapic, &mut env, APIC_SPIV), 0xff);
    assert_eq!(read(&mut lapic, &mut env, 0x320), 0x1_0000);
    assert_eq!(lapic.irr().highest(), None);
    lapic.reset(&mut env, false);
    assert_eq!(read(&mut lapic, &mut env, APIC_ID), 0x0200_0000, "RESET restores it");
    assert!(env.take().is_empty(), "no timer to cancel");

    // INIT in x2APIC mode keeps the mode and the derived LDR.
    to_x2apic(&mut lapic);
    lapic.init(&mut env);
    assert_eq!(lapic.mode(), ApicMode::X2Apic);
    assert_eq!(lapic.read_msr(&env, 0x80d), Ok(0x4));
}

#[test]
fn register_writes_keep_kvms_bits() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    let cases: &[(u32, u32, u32)] = &[
        (APIC_ID, 0xffff_ffff, 0xff00_0000),
        (APIC_TASKPRI, 0xffff_ffff, 0xff),
        (APIC_LDR, 0xffff_ffff, 0xff00_0000),
        (APIC_DFR, 0, 0x0fff_ffff),
        (APIC_DFR, 0xffff_ffff, 0xffff_ffff),
        (APIC_ICR2, 0xffff_ffff, 0xff00_0000),
        (0x330, 0xffff_ffff, 0x0001_17ff),
        (0x340, 0xffff_ffff, 0x0001_17ff),
        (0x350, 0xffff_ffff, 0x0001_f7ff),
        (0x360, 0xffff_ffff, 0x0001_f7ff),
        (0x370, 0xffff_ffff, 0x0001_10ff),
        (0x320, 0xffff_ffff, 0x0007_10ff),
        (APIC_TDCR, 0xffff_ffff, 0xb),
        (APIC_TMICT, 0x1234_5678, 0x1234_5678),
        (APIC_SPIV, 0xffff_ffff, 0x3ff),
    ];
    for &(offset, written, expected) in cases {
        write(&mut lapic, &mut env, offset, written);
        assert_eq!(read(&mut lapic, &mut env, offset), expected, "offset {offset:#x}");
    }
    assert_eq!(lapic.counters().mmio_refused, 0);
    assert!(env.take().is_empty(), "timer mode 3 (reserved) arms nothing");

    // Read-only registers ignore writes; reserved ones read 0; all counted.
    for offset in [APIC_LVR, APIC_PROCPRI, APIC_ISR, APIC_TMR + 0x10, APIC_IRR, APIC_TMCCT, 0x40] {
        let before = read(&mut lapic, &mut env, offset);
        write(&mut lapic, &mut env, offset, 0xdead_beef);
        assert_eq!(read(&mut lapic, &mut env, offset), before, "offset {offset:#x}");
    }
    assert_eq!(lapic.counters().mmio_refused, 9, "7 writes and two reads of 0x40");
    for offset in [0x0, 0x10, 0x40, APIC_EOI, 0xc0, 0x2f0, 0x3a0, APIC_SELF_IPI, 0xff0] {
        assert_eq!(read(&mut lapic, &mut env, offset), 0, "offset {offset:#x}");
    }
    // Without TSC-deadline support the timer mode is one bit.
    let mut no_tsc_deadline = Lapic::new(1, false, false);
    write(&mut no_tsc_deadline, &mut env, APIC_SPIV, 0x100);
    write(&mut no_tsc_deadline, &mut env, 0x320, 0x0006_0030);
    assert_eq!(read(&mut no_tsc_deadline, &mut env, 0x320), 0x0002_0030);
}

#[test]
fn mmio_widths() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    write(&mut lapic, &mut env, 0x350, 0x0000_a7b6);
    let mut byte = [0u8; 1];
    lapic.read(&mut env, IoSpace::Mmio, BASE + 0x351, &mut byte).unwrap();
    assert_eq!(byte, [0xa7]);
    let mut half = [0u8; 2];
    lapic.read(&mut env, IoSpace::Mmio, BASE + 0x352, &mut half).unwrap();
    assert_eq!(half, [0, 0]);
    let mut word = [0u8; 4];
    let bad = lapic.read(&mut env, IoSpace::Mmio, BASE + 0x354, &mut word);
    assert_eq!(bad, Err(IoError::BadWidth));
    let mut wide = [0u8; 8];
    let bad = lapic.read(&mut env, IoSpace::Mmio, BASE + 0x350, &mut wide);
    assert_eq!(bad, Err(IoError::BadWidth));
    let bad = lapic.write(&mut env, IoSpace::Mmio, BASE + 0x350, &[0, 0]);
    assert_eq!(bad, Err(IoError::BadWidth));
    let bad = lapic.write(&mut env, IoSpace::Mmio, BASE + 0x354, &[0; 4]);
    assert_eq!(bad, Err(IoError::BadWidth));
    assert_eq!(lapic.counters().mmio_bad_width, 4);
    assert_eq!(read(&mut lapic, &mut env, 0x350), 0xa7b6);

    assert!(lapic.claims(IoSpace::Mmio, BASE + 0xffc, 4));
    assert!(!lapic.claims(IoSpace::Mmio, BASE + 0x1000, 4));
    assert!(!lapic.claims(IoSpace::Mmio, BASE - 4, 4));
    assert!(!lapic.claims(IoSpace::Port, BASE, 4));
    let unclaimed = lapic.write(&mut env, IoSpace::Mmio, BASE + 0x1000, &[0; 4]);
    assert_eq!(unclaimed, Err(IoError::Unclaimed));
}

#[test]
fn apic_base_transitions() {
    let mut env = RecordingEnv::default();
    let mut lapic = Lapic::new(0x23, false, true);
    let features = features();
    let guest = MsrOrigin::Guest;
    let xapic = APIC_DEFAULT_BASE | MSR_IA32_APICBASE_ENABLE;
    let x2apic = xapic | APIC_BASE_X2APIC_ENABLE;
    let disabled = APIC_DEFAULT_BASE;

    assert!(lapic.set_apic_base(x2apic, &features, guest).is_ok());
    assert_eq!(lapic.mode(), ApicMode::X2Apic);
    // The page is a hole in x2APIC mode (KVM_X86_QUIRK_LAPIC_MMIO_HOLE):
    // all-ones reads, dropped writes.
    let mut word = [0u8; 4];
    assert_eq!(lapic.read(&mut env, IoSpace::Mmio, BASE + 0x20, &mut word), Ok(()));
    assert_eq!(word, [0xff; 4], "hole in x2APIC mode");
    assert_eq!(lapic.write(&mut env, IoSpace::Mmio, BASE + 0x80, &[0x10, 0, 0, 0]), Ok(()));
    assert_eq!(lapic.read_msr(&env, 0x808), Ok(0), "the write went nowhere");
    assert_eq!(lapic.counters.mmio_hole, 2);
    assert_eq!(lapic.read_msr(&env, 0x802), Ok(0x23));
    assert_eq!(lapic.read_msr(&env, 0x80d), Ok(0x0002_0008), "cluster 2, bit 3");
    assert!(lapic.set_apic_base(xapic, &features, guest).is_err(), "x2APIC to xAPIC");
    assert!(lapic.set_apic_base(disabled, &features, guest).is_ok());
    assert_eq!(lapic.mode(), ApicMode::Disabled);
    assert_eq!(lapic.read(&mut env, IoSpace::Mmio, BASE + 0x20, &mut word), Ok(()));
    assert_eq!(word, [0xff; 4], "hole while disabled");
    assert!(lapic.set_apic_base(x2apic, &features, guest).is_err(), "disabled to x2APIC");
    let x2apic_without_enable = disabled | APIC_BASE_X2APIC_ENABLE;
    assert!(lapic.set_apic_base(x2apic_without_enable, &features, guest).is_err());
    assert!(lapic.set_apic_base(xapic | 0x1, &features, guest).is_err(), "reserved bit");
    assert!(lapic.set_apic_base(xapic | 1 << 50, &features, guest).is_err(), "above MAXPHYADDR");
    let moved = 0xfed0_0000 | MSR_IA32_APICBASE_ENABLE;
    assert!(lapic.set_apic_base(moved, &features, guest).is_ok());
    assert_eq!(lapic.mode(), ApicMode::XApic);
    assert!(lapic.claims(IoSpace::Mmio, 0xfed0_0020, 4));
    assert_eq!(lapic.counters().apic_base_refused, 5);
    let mut data = [0u8; 4];
    lapic.read(&mut env, IoSpace::Mmio, 0xfed0_0020, &mut data).unwrap();
    assert_eq!(u32::from_le_bytes(data), 0x2300_0000, "xAPIC id is the vCPU index again");
    lapic.read(&mut env, IoSpace::Mmio, 0xfed0_00d0, &mut data).unwrap();
    assert_eq!(u32::from_le_bytes(data), 0, "the x2APIC LDR is gone");

    // The VMM may go straight from x2APIC to xAPIC; without x2APIC in
    // CPUID the bit is reserved.
    to_x2apic(&mut lapic);
    assert!(lapic.set_apic_base(xapic, &features, MsrOrigin::Host).is_ok());
    let no_x2apic = MsrFeatures {
        x2apic: false,
        ..features
    };
    assert!(lapic.set_apic_base(x2apic, &no_x2apic, guest).is_err());
}

#[test]
fn x2apic_msrs() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(5, &mut env);
    assert_eq!(lapic.read_msr(&env, 0x802), Err(MsrError::Unknown(0x802)), "xAPIC mode");
    assert!(lapic.write_msr(&mut env, 0x808, 0x10).is_err());
    to_x2apic(&mut lapic);

    assert_eq!(lapic.read_msr(&env, 0x802), Ok(5));
    assert_eq!(lapic.read_msr(&env, 0x803), Ok(0x0005_0014));
    assert_eq!(lapic.read_msr(&env, 0x80d), Ok(0x20));
    assert_eq!(lapic.read_msr(&env, 0x80f), Ok(0x1ff));
    for unreadable in [0x809, 0x80b, 0x80e, 0x831, 0x83f, 0x801, 0x8ff, 0x7ff, 0x900] {
        assert!(lapic.read_msr(&env, unreadable).is_err(), "msr {unreadable:#x}");
    }
    for (msr, value) in [
        (0x802, 0),      // ID is read-only
        (0x80d, 0),      // LDR is read-only
        (0x80e, 0),      // no DFR
        (0x831, 0),      // no ICR2
        (0x803, 0),      // version
        (0x80a, 0),      // PPR
        (0x839, 0),      // current count
        (0x828, 1),      // ESR takes only 0
        (0x808, 1 << 32), // bits 63:32 of a 32-bit register
        (0x83f, 0x100),  // SELF_IPI: vector only
        (0x830, 1 << 13), // ICR reserved bit
        (0x830, 1 << 20),
    ] {
        assert!(lapic.write_msr(&mut env, msr, value).is_err(), "msr {msr:#x} = {value:#x}");
    }
    assert_eq!(lapic.counters().msr_refused, 2 + 9 + 12);
    assert!(lapic.write_msr(&mut env, 0x828, 0).is_ok());
    assert!(lapic.write_msr(&mut env, 0x808, 0x2f).is_ok());
    assert_eq!(lapic.cr8(), 2);
    assert_eq!(lapic.read_msr(&env, 0x80a), Ok(0x2f));

    // SELF_IPI is a fixed edge interrupt to this APIC.
    lapic.write_msr(&mut env, 0x83f, 0x45).unwrap();
    assert_eq!(lapic.highest_deliverable_vector(), Some(0x45));
    assert!(!lapic.tmr().contains(0x45));

    // The 64-bit ICR: destination in 63:32, busy bit dropped.
    let icr = 0x0000_1234_0000_0000 | 0x1000 | 0x0800 | 0x4000 | 0x31;
    lapic.write_msr(&mut env, 0x830, icr).unwrap();
    assert_eq!(lapic.read_msr(&env, 0x830), Ok(icr & !0x1000));
    assert_eq!(
        messages(&mut env),
        [ApicMessage {
            dest: 0x1234,
            dest_mode: DestMode::Logical,
            delivery: DeliveryMode::Fixed,
            vector: 0x31,
            level_triggered: false,
            assert: true,
            shorthand: Shorthand::None,
            source: Some(5),
        }]
    );
    // EOI through the MSR.
    lapic.acknowledge(0x45);
    lapic.write_msr(&mut env, 0x80b, 0).unwrap();
    assert_eq!(lapic.isr().count(), 0);
}

#[test]
fn priorities_and_delivery_order() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    write(&mut lapic, &mut env, APIC_TASKPRI, 0x21);
    assert_eq!(read(&mut lapic, &mut env, APIC_PROCPRI), 0x21);
    lapic.accept(&fixed(0x2f, false));
    assert_eq!(lapic.highest_deliverable_vector(), None, "class 2 is not above TPR");
    assert_eq!(lapic.arbitration_priority(), 0x21);
    lapic.accept(&fixed(0x35, false));
    assert_eq!(lapic.arbitration_priority(), 0x30, "IRR's class");
    assert_eq!(lapic.highest_deliverable_vector(), Some(0x35));
    assert!(lapic.acknowledge(0x35));
    assert!(!lapic.acknowledge(0x35), "no longer requested");
    assert_eq!(read(&mut lapic, &mut env, APIC_PROCPRI), 0x30, "ISR's class");
    lapic.accept(&fixed(0x3a, false));
    assert_eq!(lapic.highest_deliverable_vector(), None, "same class as in service");
    lapic.accept(&fixed(0x41, false));
    assert_eq!(lapic.highest_deliverable_vector(), Some(0x41));
    lapic.acknowledge(0x41);
    assert_eq!(lapic.processor_priority(), 0x40);
    assert_eq!(read(&mut lapic, &mut env, APIC_ISR + 0x10), 1 << 21);
    assert_eq!(read(&mut lapic, &mut env, APIC_ISR + 0x20), 1 << 1);

    // EOIs retire the newest (highest) first, then 0x3a becomes eligible.
    write(&mut lapic, &mut env, APIC_EOI, 0);
    assert_eq!(lapic.highest_deliverable_vector(), None);
    write(&mut lapic, &mut env, APIC_EOI, 0);
    assert_eq!(lapic.processor_priority(), 0x21);
    assert_eq!(lapic.highest_deliverable_vector(), Some(0x3a));
    assert!(env.take().is_empty(), "edge-triggered EOIs are not broadcast");

    // CR8 is TPR[7:4].
    lapic.set_cr8(0x5);
    assert_eq!(read(&mut lapic, &mut env, APIC_TASKPRI), 0x50);
    assert_eq!(lapic.cr8(), 5);
    assert_eq!(lapic.highest_deliverable_vector(), None);

    // A software-disabled APIC delivers nothing and accepts no vector.
    lapic.set_cr8(0);
    write(&mut lapic, &mut env, APIC_SPIV, 0xff);
    assert_eq!(lapic.highest_deliverable_vector(), None);
    assert!(!lapic.accept(&fixed(0x60, false)));
    assert_eq!(lapic.counters().interrupts_dropped, 1);
}

#[test]
fn eoi_of_level_triggered_vector_is_broadcast() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    assert!(lapic.accept(&fixed(0x40, true)));
    assert!(lapic.tmr().contains(0x40));
    lapic.acknowledge(0x40);
    write(&mut lapic, &mut env, APIC_EOI, 0);
    assert_eq!(env.take(), [Effect::Eoi(0x40)]);
    write(&mut lapic, &mut env, APIC_EOI, 0);
    assert!(env.take().is_empty(), "EOI with nothing in service does nothing");
    // A later edge-triggered delivery of the vector clears its TMR bit.
    lapic.accept(&fixed(0x40, false));
    assert!(!lapic.tmr().contains(0x40));
    // A level de-assert message is not an interrupt.
    let mut deassert = fixed(0x41, true);
    deassert.assert = false;
    assert!(!lapic.accept(&deassert));
    // SVR bit 12 (suppress EOI broadcast) cannot be set.
    write(&mut lapic, &mut env, APIC_SPIV, 0x11ff);
    assert_eq!(read(&mut lapic, &mut env, APIC_SPIV), 0x1ff);
    assert_eq!(read(&mut lapic, &mut env, APIC_LVR) & 1 << 24, 0);
}

#[test]
fn xapic_icr_messages() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(4, &mut env);
    write(&mut lapic, &mut env, APIC_ICR2, 0x0300_0000);
    // INIT, level assert, physical.
    write(&mut lapic, &mut env, APIC_ICR, 0x0000_c500);
    // SIPI vector 0x9a, and an NMI to all but self (busy bit written).
    write(&mut lapic, &mut env, APIC_ICR, 0x0000_069a);
    write(&mut lapic, &mut env, APIC_ICR, 0x000c_1400);
    assert_eq!(read(&mut lapic, &mut env, APIC_ICR), 0x000c_0400, "delivery status reads 0");
    // Lowest priority, logical, to self.
    write(&mut lapic, &mut env, APIC_ICR, 0x0004_0931);
    let template = ApicMessage {
        dest: 3,
        dest_mode: DestMode::Physical,
        delivery: DeliveryMode::Init,
        vector: 0,
        level_triggered: true,
        assert: true,
        shorthand: Shorthand::None,
        source: Some(4),
    };
    assert_eq!(
        messages(&mut env),
        [
            template,
            ApicMessage {
                delivery: DeliveryMode::StartUp,
                vector: 0x9a,
                level_triggered: false,
                assert: false,
                ..template
            },
            ApicMessage {
                delivery: DeliveryMode::Nmi,
                level_triggered: false,
                assert: false,
                shorthand: Shorthand::AllExcludingSelf,
                ..template
            },
            ApicMessage {
                dest_mode: DestMode::Logical,
                delivery: DeliveryMode::LowestPriority,
                vector: 0x31,
                level_triggered: false,
                assert: false,
                shorthand: Shorthand::ToSelf,
                ..template
            },
        ]
    );
    // Delivery mode 3 is reserved; a fixed vector below 16 is an error.
    write(&mut lapic, &mut env, APIC_ICR, 0x0000_0330);
    write(&mut lapic, &mut env, APIC_ICR, 0x0000_000e);
    assert!(env.take().is_empty());
    assert_eq!(lapic.counters().unsupported_delivery, 1);
    write(&mut lapic, &mut env, APIC_ESR, 0);
    assert_eq!(read(&mut lapic, &mut env, APIC_ESR), 0x20);
}

#[test]
fn destination_matching() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0x12, &mut env);
    let physical = |dest| ApicMessage {
        dest,
        ..fixed(0x30, false)
    };
    let logical = |dest| ApicMessage {
        dest,
        dest_mode: DestMode::Logical,
        ..fixed(0x30, false)
    };
    assert!(lapic.matches_destination(&physical(0x12)));
    assert!(!lapic.matches_destination(&physical(0x13)));
    assert!(lapic.matches_destination(&physical(0xff)));
    assert!(!lapic.matches_destination(&physical(0x112)), "KVM does not alias x2APIC ids");

    // Flat: LDR bit set in the destination mask.
    write(&mut lapic, &mut env, APIC_LDR, 0x0400_0000);
    assert!(lapic.matches_destination(&logical(0x06)));
    assert!(!lapic.matches_destination(&logical(0x03)));
    assert!(lapic.matches_destination(&logical(0xff)));
    // Cluster: high nibble the cluster, low nibble a member mask.
    write(&mut lapic, &mut env, APIC_DFR, 0x0fff_ffff);
    write(&mut lapic, &mut env, APIC_LDR, 0x2100_0000);
    assert!(lapic.matches_destination(&logical(0x23)));
    assert!(!lapic.matches_destination(&logical(0x13)));
    assert!(!lapic.matches_destination(&logical(0x22)));

    // Shorthands compare the source with the APIC id.
    let shorthand = |shorthand, source| ApicMessage {
        shorthand,
        source: Some(source),
        ..physical(0x55)
    };
    assert!(lapic.matches_destination(&shorthand(Shorthand::ToSelf, 0x12)));
    assert!(!lapic.matches_destination(&shorthand(Shorthand::ToSelf, 0x11)));
    assert!(lapic.matches_destination(&shorthand(Shorthand::AllIncludingSelf, 0x12)));
    assert!(lapic.matches_destination(&shorthand(Shorthand::AllExcludingSelf, 0x11)));
    assert!(!lapic.matches_destination(&shorthand(Shorthand::AllExcludingSelf, 0x12)));

    // x2APIC: 32-bit ids, cluster logical mode from the derived LDR.
    to_x2apic(&mut lapic);
    assert!(lapic.matches_destination(&physical(0x12)));
    assert!(lapic.matches_destination(&physical(0xffff_ffff)));
    assert!(lapic.matches_destination(&physical(0xff)), "IOAPIC/MSI 0xff broadcasts");
    let ipi_to_ff = ApicMessage {
        source: Some(0),
        ..physical(0xff)
    };
    assert!(!lapic.matches_destination(&ipi_to_ff), "an IPI to 0xff is to id 0xff");
    // id 0x12: cluster 1, member bit 2.
    assert!(lapic.matches_destination(&logical(0x0001_0004)));
    assert!(lapic.matches_destination(&logical(0x0001_0006)));
    assert!(!lapic.matches_destination(&logical(0x0001_0001)));
    assert!(!lapic.matches_destination(&logical(0x0000_0004)));
    assert!(lapic.matches_destination(&logical(0xffff_ffff)));

    // A hardware-disabled APIC matches nothing.
    lapic
        .set_apic_base(APIC_DEFAULT_BASE, &features(), MsrOrigin::Guest)
        .unwrap();
    assert!(!lapic.matches_destination(&physical(0xff)));
    assert!(!lapic.matches_destination(&shorthand(Shorthand::AllIncludingSelf, 0)));

    // A big vCPU index in xAPIC mode is reachable by its x2APIC id.
    let big = enabled_lapic(0x140, &mut env);
    assert!(big.matches_destination(&physical(0x140)));
    assert!(big.matches_destination(&physical(0x40)), "xAPIC id is the low byte");
}

#[test]
fn non_vector_events() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(1, &mut env);
    let message = |delivery, vector| ApicMessage {
        delivery,
        vector,
        ..fixed(0, false)
    };
    assert!(lapic.accept(&message(DeliveryMode::Nmi, 0)));
    assert!(lapic.take_nmi());
    assert!(!lapic.take_nmi());
    assert!(lapic.accept(&message(DeliveryMode::StartUp, 0x10)));
    assert!(lapic.accept(&message(DeliveryMode::Init, 0)));
    assert!(lapic.take_init());
    assert_eq!(lapic.take_sipi(), None, "INIT drops an earlier SIPI");
    assert!(lapic.accept(&message(DeliveryMode::StartUp, 0x9a)));
    assert_eq!(lapic.take_sipi(), Some(0x9a));
    let deassert = ApicMessage {
        level_triggered: true,
        assert: false,
        ..message(DeliveryMode::Init, 0)
    };
    assert!(!lapic.accept(&deassert));
    assert!(!lapic.take_init());
    assert!(lapic.accept(&message(DeliveryMode::ExtInt, 0)));
    assert!(lapic.take_extint());
    assert!(!lapic.take_extint());
    assert!(!lapic.accept(&message(DeliveryMode::Smi, 0)));
    assert_eq!(lapic.counters().unsupported_delivery, 1);
    // NMIs and INITs reach a software-disabled APIC.
    write(&mut lapic, &mut env, APIC_SPIV, 0);
    assert!(lapic.accept(&message(DeliveryMode::Nmi, 0)));
    assert!(lapic.accept(&message(DeliveryMode::Init, 0)));
}

#[test]
fn received_illegal_vector_is_an_error() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    write(&mut lapic, &mut env, 0x370, 0xfe);
    assert!(!lapic.accept(&fixed(0x05, false)));
    assert!(!lapic.irr().contains(0x05));
    assert_eq!(lapic.highest_deliverable_vector(), Some(0xfe), "error interrupt");
    assert_eq!(read(&mut lapic, &mut env, APIC_ESR), 0, "not latched yet");
    write(&mut lapic, &mut env, APIC_ESR, 0);
    assert_eq!(read(&mut lapic, &mut env, APIC_ESR), 0x40);
    write(&mut lapic, &mut env, APIC_ESR, 0);
    assert_eq!(read(&mut lapic, &mut env, APIC_ESR), 0, "cleared by the next write");
    // An error LVT with an illegal vector records once and stops.
    write(&mut lapic, &mut env, 0x370, 0x03);
    lapic.accept(&fixed(0x04, false));
    write(&mut lapic, &mut env, APIC_ESR, 0);
    assert_eq!(read(&mut lapic, &mut env, APIC_ESR), 0x40);
}

#[test]
fn software_disable_masks_lvts() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    for offset in (0x320..=0x370).step_by(0x10) {
        write(&mut lapic, &mut env, offset, 0x40);
    }
    write(&mut lapic, &mut env, APIC_SPIV, 0xff);
    for offset in (0x320..=0x370).step_by(0x10) {
        assert_eq!(read(&mut lapic, &mut env, offset), 0x1_0040, "offset {offset:#x}");
        write(&mut lapic, &mut env, offset, 0x41);
        assert_eq!(read(&mut lapic, &mut env, offset), 0x1_0041, "stays masked");
    }
    write(&mut lapic, &mut env, APIC_SPIV, 0x1ff);
    assert_eq!(read(&mut lapic, &mut env, 0x320), 0x1_0041, "re-enabling unmasks nothing");
}

#[test]
fn lint_pins() {
    let mut env = RecordingEnv::default();
    let mut lapic = enabled_lapic(0, &mut env);
    // LINT1 as NMI: rising edges only.
    write(&mut lapic, &mut env, 0x360, 0x400);
    lapic.set_lint(LintPin::Lint1, true);
    assert!(lapic.take_nmi());
    lapic.set_lint(LintPin::Lint1, true);
    assert!(!lapic.take_nmi());
    // LINT0 as ExtINT: pending while the line is high.
    write(&mut lapic, &mut env, 0x350, 0x700);
    lapic.set_lint(LintPin::Lint0, true);
    assert!(lapic.take_extint());
    assert!(lapic.take_extint(), "still asserted");
    lapic.set_lint(LintPin::Lint0, false);
    assert!(!lapic.take_extint());
    // Fixed, level-triggered LINT0.
    write(&mut lapic, &mut env, 0x350, 0x8050);
    lapic.set_lint(LintPin::Lint0, true);
    assert_eq!(lapic.highest_deliverable_vector(), Some(0x50));
    assert!(lapic.tmr().contains(0x50));
    // Masked: nothing.
    lapic.set_lint(LintPin::Lint0, false);
    write(&mut lapic, &mut env, 0x350, 0x1_0060);
    lapic.set_lint(LintPin::Lint0, true);
    assert!(!lapic.irr().contains(0x60));
    assert!(!lapic.take_extint());
    // Hardware-disabled: LINT0 is INTR, LINT1 is NMI.
    lapic
        .set_apic_base(APIC_DEFAULT_BASE, &features(), MsrOrigin::Guest)
        .unwrap();
    assert!(lapic.take_extint());
    assert!(lapic.accepts_pic_interrupts());
    lapic.set_lint(LintPin::Lint1, false);
    lapic.set_lint(LintPin::Lint1, true);
    assert!(lapic.take_nmi());
}

/// Programs the LVT timer with `lvt` and the divide register with `tdcr`.
fn timer_lapic(env: &mut RecordingEnv, lvt: u32, tdcr: u32) -> Lapic {
    let mut lapic = enabled_lapic(7, env);
    write(&mut lapic, env, APIC_TDCR, tdcr);
    write(&mut lapic, env, 0x320, lvt);
    env.take();
    lapic
}

const TIMER: TimerId = TimerId::Lapic(7);

#[test]
fn one_shot_timer() {
    let mut env = RecordingEnv {
        now_ns: 1_000,
        ..Default::default()
    };
    let mut lapic = timer_lapic(&mut env, 0x40, 0x0); // divide by 2
    write(&mut lapic, &mut env, APIC_TMICT, 1000);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(3_000))]);
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), 1000);
    env.now_ns = 1_500;
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), 750);
    env.now_ns = 2_999;
    lapic.timer_fired(&mut env);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(3_000))], "early: re-armed");
    assert_eq!(lapic.irr().highest(), None);
    env.now_ns = 3_100;
    lapic.timer_fired(&mut env);
    assert!(env.take().is_empty(), "one-shot: not re-armed");
    assert_eq!(lapic.highest_deliverable_vector(), Some(0x40));
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), 0);
    lapic.timer_fired(&mut env);
    assert_eq!(lapic.counters().spurious_timer_callbacks, 1);

    // Rewriting the count restarts; writing 0 stops.
    write(&mut lapic, &mut env, APIC_TMICT, 10);
    write(&mut lapic, &mut env, APIC_TMICT, 0);
    assert_eq!(
        env.take(),
        [Effect::Timer(TIMER, Some(3_120)), Effect::Timer(TIMER, None)]
    );
    // The divide register changes how long the rest of the count takes,
    // but a spent one-shot stays spent.
    write(&mut lapic, &mut env, APIC_TDCR, 0xb);
    assert!(env.take().is_empty());
}

#[test]
fn divide_configuration() {
    let mut env = RecordingEnv::default();
    let mut lapic = timer_lapic(&mut env, 0x40, 0xb); // divide by 1
    let divides = [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xa, 128)];
    for (tdcr, divide) in divides.into_iter().chain([(0xb, 1)]) {
        write(&mut lapic, &mut env, APIC_TDCR, tdcr);
        write(&mut lapic, &mut env, APIC_TMICT, 100);
        assert_eq!(env.take().last(), Some(&Effect::Timer(TIMER, Some(100 * divide))));
    }
    // Halfway through a count, going from 1 to 4 makes the rest 4x longer.
    env.now_ns = 50;
    write(&mut lapic, &mut env, APIC_TDCR, 0x1);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(250))]);
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), 50);
    // The largest count at the largest divide does not overflow.
    write(&mut lapic, &mut env, APIC_TDCR, 0xa);
    write(&mut lapic, &mut env, APIC_TMICT, u32::MAX);
    let longest = 50 + 128 * u64::from(u32::MAX);
    assert_eq!(env.take().last(), Some(&Effect::Timer(TIMER, Some(longest))));
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), u32::MAX);
}

#[test]
fn periodic_timer() {
    let mut env = RecordingEnv::default();
    let mut lapic = timer_lapic(&mut env, 0x2_0040, 0xb);
    write(&mut lapic, &mut env, APIC_TMICT, 1_000_000);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(1_000_000))]);
    // Fired late: the next deadline is one period after the last one.
    env.now_ns = 1_000_300;
    lapic.timer_fired(&mut env);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(2_000_000))]);
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), 999_700);
    lapic.acknowledge(0x40);
    // Fired very late: no catching up, the next one is now.
    env.now_ns = 9_000_000;
    lapic.timer_fired(&mut env);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(9_000_000))]);
    assert!(lapic.irr().contains(0x40));
    // Masked: still counting, no interrupt.
    write(&mut lapic, &mut env, 0x320, 0x3_0040);
    lapic.acknowledge(0x40);
    lapic.timer_fired(&mut env);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(10_000_000))]);
    assert!(!lapic.irr().contains(0x40));
    // A period shorter than KVM's minimum is stretched to 200 us.
    write(&mut lapic, &mut env, APIC_TMICT, 10);
    assert_eq!(env.take(), [Effect::Timer(TIMER, None), Effect::Timer(TIMER, Some(9_200_000))]);
}

#[test]
fn tsc_deadline_timer() {
    let mut env = RecordingEnv {
        now_ns: 5_000,
        ..Default::default()
    };
    let mut lapic = timer_lapic(&mut env, 0x4_0040, 0);
    // 3 GHz: 3000 ticks per us.
    lapic.write_tsc_deadline(&mut env, 1_000 + 3_000_000, 1_000, 3_000_000);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(1_005_000))]);
    assert_eq!(lapic.tsc_deadline(), 3_001_000);
    assert_eq!(read(&mut lapic, &mut env, APIC_TMCCT), 0);
    write(&mut lapic, &mut env, APIC_TMICT, 100);
    assert!(env.take().is_empty(), "TMICT is ignored in TSC-deadline mode");
    assert_eq!(read(&mut lapic, &mut env, APIC_TMICT), 0);
    assert!(!lapic.timer_overdue(1_004_999));
    assert!(lapic.timer_overdue(1_005_000), "due, not delivered");
    env.now_ns = 1_005_000;
    lapic.timer_fired(&mut env);
    assert!(env.take().is_empty());
    assert!(lapic.irr().contains(0x40));
    assert!(!lapic.timer_overdue(2_000_000), "delivered");
    assert_eq!(lapic.tsc_deadline(), 0, "cleared when it fires");
    lapic.acknowledge(0x40);
    write(&mut lapic, &mut env, APIC_EOI, 0);

    // A deadline already passed fires at once; 0 disarms.
    lapic.write_tsc_deadline(&mut env, 500, 1_000, 3_000_000);
    assert!(lapic.irr().contains(0x40));
    lapic.write_tsc_deadline(&mut env, 9_000_000, 1_000, 3_000_000);
    lapic.write_tsc_deadline(&mut env, 0, 1_000, 3_000_000);
    assert_eq!(env.take()[1..], [Effect::Timer(TIMER, None)]);
    // Huge deadlines and slow clocks saturate instead of overflowing.
    lapic.write_tsc_deadline(&mut env, u64::MAX, 0, 1);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(u64::MAX))]);

    // Switching to one-shot disarms and clears the deadline.
    write(&mut lapic, &mut env, 0x320, 0x40);
    assert_eq!(env.take(), [Effect::Timer(TIMER, None)]);
    assert_eq!(lapic.tsc_deadline(), 0);
    lapic.write_tsc_deadline(&mut env, 9_000_000, 1_000, 3_000_000);
    assert!(env.take().is_empty(), "ignored outside TSC-deadline mode");
    // And a running count is stopped by switching to TSC-deadline mode.
    write(&mut lapic, &mut env, APIC_TMICT, 100);
    write(&mut lapic, &mut env, 0x320, 0x4_0040);
    assert_eq!(env.take()[1..], [Effect::Timer(TIMER, None)]);
    assert_eq!(read(&mut lapic, &mut env, APIC_TMICT), 0);
}

#[test]
fn kvm_state_round_trip() {
    let mut env = RecordingEnv {
        now_ns: 1_000,
        ..Default::default()
    };
    let mut lapic = timer_lapic(&mut env, 0x2_0040, 0x1);
    write(&mut lapic, &mut env, APIC_ID, 0x0900_0000);
    write(&mut lapic, &mut env, APIC_TASKPRI, 0x10);
    write(&mut lapic, &mut env, APIC_LDR, 0x0800_0000);
    write(&mut lapic, &mut env, APIC_DFR, 0x0fff_ffff);
    write(&mut lapic, &mut env, APIC_ICR2, 0x0100_0000);
    write(&mut lapic, &mut env, 0x350, 0x700);
    write(&mut lapic, &mut env, 0x370, 0xfe);
    lapic.accept(&fixed(0x61, true));
    lapic.accept(&fixed(0x52, false));
    lapic.acknowledge(0x61);
    write(&mut lapic, &mut env, APIC_TMICT, 1_000_000);
    env.now_ns = 2_001_000;
    let state = lapic.to_kvm_state(env.now_ns);
    assert_eq!(register_at(&state, APIC_ID), 0x0900_0000);
    assert_eq!(register_at(&state, APIC_TMCCT), 500_000, "half of 4 ms left");
    assert_eq!(register_at(&state, APIC_PROCPRI), 0x60);
    assert_eq!(register_at(&state, APIC_ISR + 0x30), 1 << 1);
    assert_eq!(register_at(&state, APIC_TMR + 0x30), 1 << 1);
    assert_eq!(register_at(&state, APIC_IRR + 0x20), 1 << 18);
    env.take();

    let mut restored = Lapic::new(7, false, true);
    restored.set_from_kvm_state(&mut env, &state);
    assert_eq!(env.take(), [Effect::Timer(TIMER, Some(4_001_000))]);
    assert_eq!(restored.to_kvm_state(env.now_ns), state);
    assert_eq!(restored.highest_deliverable_vector(), None, "0x52 is below ISR's 0x61");

    // x2APIC: the ID goes out as id << 24, ICR2 holds the high half, and
    // the image's ID and LDR are ignored when set.
    to_x2apic(&mut lapic);
    lapic.write_msr(&mut env, 0x830, 0x0000_0007_0000_0030).unwrap();
    let state = lapic.to_kvm_state(env.now_ns);
    assert_eq!(register_at(&state, APIC_ID), 0x0700_0000);
    assert_eq!(register_at(&state, APIC_ICR2), 7);
    let mut restored = Lapic::new(7, false, true);
    to_x2apic(&mut restored);
    let mut altered = state;
    put_register(&mut altered, APIC_LDR, 0x1234);
    restored.set_from_kvm_state(&mut env, &altered);
    assert_eq!(restored.to_kvm_state(env.now_ns), state);
    assert_eq!(restored.read_msr(&env, 0x830), Ok(0x0000_0007_0000_0030));

    // A spent one-shot timer is not restarted.
    let mut one_shot = timer_lapic(&mut env, 0x40, 0xb);
    write(&mut one_shot, &mut env, APIC_TMICT, 10);
    env.now_ns += 20;
    one_shot.timer_fired(&mut env);
    let state = one_shot.to_kvm_state(env.now_ns);
    env.take();
    let mut restored = Lapic::new(7, false, true);
    restored.set_from_kvm_state(&mut env, &state);
    assert!(env.take().is_empty());
    assert_eq!(restored.to_kvm_state(env.now_ns), state);
}
