use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::irqchip::testenv::{Effect, RecordingEnv};

/// A PIT with the speaker port, created at `now` ns.
fn pit_at(now: u64) -> (Pit, RecordingEnv) {
    let env = RecordingEnv {
        now_ns: now,
        ..RecordingEnv::default()
    };
    (Pit::new(PitConfig { speaker_dummy: true }, now), env)
}

fn outb(pit: &mut Pit, env: &mut RecordingEnv, port: u16, value: u8) {
    pit.write(env, IoSpace::Port, port.into(), &[value]).unwrap();
}

fn inb(pit: &mut Pit, env: &mut RecordingEnv, port: u16) -> u8 {
    let mut data = [0xaa];
    pit.read(env, IoSpace::Port, port.into(), &mut data).unwrap();
    data[0]
}

/// Reads a count LSB then MSB.
fn inw(pit: &mut Pit, env: &mut RecordingEnv, port: u16) -> u16 {
    let low = inb(pit, env, port);
    u16::from_le_bytes([low, inb(pit, env, port)])
}

/// Programs `channel` with access LSB-then-MSB, `mode` (binary) and a count.
fn program(pit: &mut Pit, env: &mut RecordingEnv, channel: u8, mode: u8, count: u16) {
    outb(pit, env, 0x43, channel << 6 | 0x30 | mode << 1);
    let [low, high] = count.to_le_bytes();
    outb(pit, env, 0x40 + u16::from(channel), low);
    outb(pit, env, 0x40 + u16::from(channel), high);
}

/// The time `ticks` PIT clocks after `start`.
fn after(start: u64, ticks: u64) -> u64 {
    start + ticks_to_ns(ticks)
}

/// Channel 2's OUT as port 61h bit 5 shows it.
fn out2(pit: &mut Pit, env: &mut RecordingEnv) -> bool {
    inb(pit, env, 0x61) & 0x20 != 0
}

const T0: u64 = 5_000_000_000;

#[test]
fn tick_conversions_round_and_never_overflow() {
    assert_eq!(ns_to_ticks(1_000_000_000), PIT_FREQUENCY_HZ);
    assert_eq!(ticks_to_ns(PIT_FREQUENCY_HZ), 1_000_000_000);
    // Rounded up: the count has run out at the deadline.
    for ticks in [1, 2, 1193, 65536, 1 << 40] {
        assert!(ns_to_ticks(ticks_to_ns(ticks)) >= ticks);
        assert_eq!(ns_to_ticks(ticks_to_ns(ticks) - 1), ticks - 1);
    }
    assert!(ns_to_ticks(u64::MAX) > 0);
    assert_eq!(ticks_to_ns(u64::MAX), u64::MAX);
    assert_eq!((to_bcd(1234), from_bcd(0x1234)), (0x1234, 1234));
    assert_eq!(from_bcd(0xffff), 15 * 1111);
}

#[test]
fn reset_state_is_kvms() {
    let (mut pit, mut env) = pit_at(T0);
    let state = pit.state();
    for (index, channel) in state.channels.iter().enumerate() {
        assert_eq!((channel.count, channel.mode), (0x1_0000, 0xff));
        assert_eq!(channel.gate, u8::from(index != 2));
        assert_eq!(channel.count_load_time, T0 as i64);
    }
    assert_eq!(pit.channel0_deadline(), None);
    assert_eq!(inb(&mut pit, &mut env, 0x61) & 0x23, 0);
    assert!(env.take().is_empty());
}

/// Programs channel 2 (gate high) with `mode` and `count` at T0 and checks
/// (ticks after T0, count read, OUT) at each point.
fn check_timeline(mode: u8, count: u16, points: &[(u64, u16, bool)]) {
    let (mut pit, mut env) = pit_at(T0);
    outb(&mut pit, &mut env, 0x61, 0x01);
    program(&mut pit, &mut env, 2, mode, count);
    for &(ticks, expected_count, expected_out) in points {
        env.now_ns = after(T0, ticks);
        let context = (mode, ticks);
        assert_eq!(inw(&mut pit, &mut env, 0x42), expected_count, "{context:?}");
        assert_eq!(out2(&mut pit, &mut env), expected_out, "{context:?}");
    }
}

#[test]
fn mode_0_counts_down_then_raises_out_and_wraps() {
    let points = [(0, 1000, false), (400, 600, false), (999, 1, false), (1000, 0, true)];
    check_timeline(0, 1000, &points);
    check_timeline(0, 1000, &[(1001, 0xffff, true), (1000 + 65536, 0, true)]);
}

#[test]
fn mode_1_out_is_low_during_the_one_shot() {
    check_timeline(1, 50, &[(0, 50, false), (20, 30, false), (50, 0, true), (60, 0xfff6, true)]);
}

#[test]
fn mode_2_reloads_and_pulses_low_once_per_period() {
    let points = [(30, 70, true), (98, 2, true), (99, 1, false), (100, 100, true)];
    check_timeline(2, 100, &points);
    check_timeline(2, 100, &[(1234, 66, true)]);
}

#[test]
fn mode_3_is_a_square_wave_counting_by_two() {
    let points = [(10, 80, true), (49, 2, true), (50, 100, false), (99, 2, false), (100, 100, true)];
    check_timeline(3, 100, &points);
}

#[test]
fn modes_4_and_5_strobe_low_at_terminal_count() {
    for mode in [4, 5] {
        check_timeline(mode, 10, &[(0, 10, true), (10, 0, false), (11, 0xffff, true)]);
    }
}

#[test]
fn modes_6_and_7_are_2_and_3() {
    let (mut pit, mut env) = pit_at(T0);
    outb(&mut pit, &mut env, 0x43, 0xbc);
    assert_eq!(pit.state().channels[2].mode, 2);
    outb(&mut pit, &mut env, 0x43, 0xbe);
    assert_eq!(pit.state().channels[2].mode, 3);
}

/// A rising gate restarts modes 1 and 3 (and 2 and 5), not 0.
#[test]
fn rising_gate_retriggers_counting_modes() {
    for (mode, restarts) in [(0, false), (1, true), (3, true)] {
        let (mut pit, mut env) = pit_at(T0);
        program(&mut pit, &mut env, 2, mode, 100);
        env.now_ns = after(T0, 60);
        outb(&mut pit, &mut env, 0x61, 0x01);
        let expected = if !restarts {
            40
        } else {
            100
        };
        assert_eq!(inw(&mut pit, &mut env, 0x42), expected, "mode {mode}");
        // Already high: no edge, no restart.
        env.now_ns = after(T0, 70);
        outb(&mut pit, &mut env, 0x61, 0x01);
        assert_ne!(inw(&mut pit, &mut env, 0x42), 100, "mode {mode}");
    }
}

#[test]
fn counter_latch_freezes_the_count_until_read() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 2, 0, 5000);
    env.now_ns = after(T0, 100);
    outb(&mut pit, &mut env, 0x43, 0x80);
    env.now_ns = after(T0, 300);
    // A second latch before the first is read is ignored.
    outb(&mut pit, &mut env, 0x43, 0x80);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 4900);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 4700);
}

#[test]
fn read_back_latches_status_and_count_of_selected_channels() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 1, 2, 300);
    program(&mut pit, &mut env, 2, 0, 10);
    env.now_ns = after(T0, 20);
    // Status and count of channels 1 and 2.
    outb(&mut pit, &mut env, 0x43, 0xcc);
    env.now_ns = after(T0, 40);
    // Channel 1: OUT high, LSB/MSB, mode 2.
    assert_eq!(inb(&mut pit, &mut env, 0x41), 0xb4);
    assert_eq!(inw(&mut pit, &mut env, 0x41), 280);
    // Channel 2: OUT high (bit 7), LSB/MSB, mode 0.
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0xb0);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 0xfff6);
    // Status only.
    outb(&mut pit, &mut env, 0x43, 0xe8);
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0xb0);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 0xffe2);
}

#[test]
fn lsb_msb_and_word_access_sequencing() {
    let (mut pit, mut env) = pit_at(T0);
    // LSB only: one write loads, reads give the low byte.
    outb(&mut pit, &mut env, 0x43, 0x94);
    outb(&mut pit, &mut env, 0x42, 0x34);
    assert_eq!(pit.state().channels[2].count, 0x34);
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0x34);
    // MSB only.
    outb(&mut pit, &mut env, 0x43, 0xa4);
    outb(&mut pit, &mut env, 0x42, 0x12);
    assert_eq!(pit.state().channels[2].count, 0x1200);
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0x12);
    // Both: reads and writes each keep their own byte toggle.
    outb(&mut pit, &mut env, 0x43, 0xb4);
    outb(&mut pit, &mut env, 0x42, 0x78);
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0x00);
    outb(&mut pit, &mut env, 0x42, 0x56);
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0x56);
    assert_eq!(inb(&mut pit, &mut env, 0x42), 0x78);
    assert_eq!(pit.state().channels[2].count, 0x5678);
    // A zero count is 65536.
    program(&mut pit, &mut env, 2, 2, 0);
    assert_eq!(pit.state().channels[2].count, 0x1_0000);
}

#[test]
fn bcd_counts_load_and_read_in_decimal() {
    let (mut pit, mut env) = pit_at(T0);
    outb(&mut pit, &mut env, 0x43, 0xb1);
    outb(&mut pit, &mut env, 0x42, 0x00);
    outb(&mut pit, &mut env, 0x42, 0x10);
    assert_eq!(pit.state().channels[2].count, 1000);
    env.now_ns = after(T0, 1);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 0x0999);
    // Wraps to 9999 after terminal count.
    env.now_ns = after(T0, 1001);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 0x9999);
    // A zero count is 10000.
    outb(&mut pit, &mut env, 0x43, 0xb1);
    outb(&mut pit, &mut env, 0x42, 0x00);
    outb(&mut pit, &mut env, 0x42, 0x00);
    assert_eq!(pit.state().channels[2].count, 10_000);
    assert_eq!(inw(&mut pit, &mut env, 0x42), 0x0000);
    outb(&mut pit, &mut env, 0x43, 0xe8);
    assert_eq!(inb(&mut pit, &mut env, 0x42) & 1, 1);
}

/// Linux's `pit_calibrate_tsc` (arch/x86/kernel/tsc.c) with a 50 ms
/// latch, each loop iteration taking 1 us of guest time.
#[test]
fn linux_pit_calibrate_tsc_sequence_ends_after_the_latch() {
    let (mut pit, mut env) = pit_at(T0);
    let latch: u16 = 59659;
    let value = inb(&mut pit, &mut env, 0x61);
    outb(&mut pit, &mut env, 0x61, (value & !0x02) | 0x01);
    outb(&mut pit, &mut env, 0x43, 0xb0);
    outb(&mut pit, &mut env, 0x42, latch as u8);
    outb(&mut pit, &mut env, 0x42, (latch >> 8) as u8);
    let start = env.now_ns;
    let mut loops = 0u64;
    while inb(&mut pit, &mut env, 0x61) & 0x20 == 0 {
        env.now_ns += 1_000;
        loops += 1;
        assert!(loops < 100_000, "bit 5 never set");
    }
    let elapsed = env.now_ns - start;
    assert!(elapsed >= ticks_to_ns(latch.into()));
    assert!(elapsed < ticks_to_ns(latch.into()) + 1_000);
    // The loop saw the gate high and the speaker off.
    assert_eq!(inb(&mut pit, &mut env, 0x61) & 0x03, 0x01);
    assert!(env.take().is_empty(), "channel 2 arms no timer");
}

/// Linux's `quick_pit_calibrate`: mode 0 from 0xffff, reading LSB then
/// MSB and waiting for the MSB to step down.
#[test]
fn linux_quick_pit_calibrate_sees_the_msb_step_every_256_ticks() {
    let (mut pit, mut env) = pit_at(T0);
    outb(&mut pit, &mut env, 0x61, 0x01);
    outb(&mut pit, &mut env, 0x43, 0xb0);
    outb(&mut pit, &mut env, 0x42, 0xff);
    outb(&mut pit, &mut env, 0x42, 0xff);
    let start = env.now_ns;
    let mut steps = Vec::new();
    let mut expected_msb = 0xffu8;
    while steps.len() < 5 {
        let _lsb = inb(&mut pit, &mut env, 0x42);
        let msb = inb(&mut pit, &mut env, 0x42);
        if msb != expected_msb {
            assert_eq!(msb, expected_msb - 1);
            steps.push(ns_to_ticks(env.now_ns - start));
            expected_msb = msb;
        }
        env.now_ns += 500;
    }
    for pair in steps.windows(2) {
        assert!((255..=257).contains(&(pair[1] - pair[0])), "{steps:?}");
    }
}

#[test]
fn port_61_speaker_bit_and_refresh_toggle() {
    let (mut pit, mut env) = pit_at(0);
    assert_eq!(inb(&mut pit, &mut env, 0x61) & 0x10, 0);
    env.now_ns = 1 << 14;
    assert_eq!(inb(&mut pit, &mut env, 0x61) & 0x10, 0x10);
    outb(&mut pit, &mut env, 0x61, 0x03);
    assert_eq!(pit.state().flags, KVM_PIT_FLAGS_SPEAKER_DATA_ON);
    assert_eq!(inb(&mut pit, &mut env, 0x61) & 0x03, 0x03);
    outb(&mut pit, &mut env, 0x61, 0x00);
    assert_eq!(pit.state().flags, 0);
    // Without KVM_PIT_SPEAKER_DUMMY port 61h is not the PIT's.
    let pit = Pit::new(PitConfig { speaker_dummy: false }, 0);
    assert!(!pit.claims(IoSpace::Port, 0x61, 1));
}

/// Linux's periodic PIT clockevent at HZ=1000: mode 2, LATCH 1193.
#[test]
fn channel_0_periodic_timer_pulses_gsi_0_without_drift() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 0, 2, 1193);
    let first = after(T0, 1193);
    assert_eq!(env.take(), [Effect::Timer(TimerId::PitChannel0, Some(first))]);
    env.now_ns = first;
    pit.timer_fired(&mut env);
    assert_eq!(
        env.take(),
        [
            Effect::Gsi(0, true),
            Effect::Gsi(0, false),
            Effect::Timer(TimerId::PitChannel0, Some(after(T0, 2 * 1193))),
        ]
    );
    for _ in 1..1000 {
        env.now_ns = pit.channel0_deadline().unwrap() + 3_000;
        pit.timer_fired(&mut env);
    }
    assert_eq!(pit.channel0_deadline(), Some(after(T0, 1001 * 1193)));
    assert_eq!(pit.counters().interrupts, 1000);
    // The counter agrees with the interrupts' phase.
    env.now_ns = after(T0, 1000 * 1193);
    assert_eq!(inw(&mut pit, &mut env, 0x40), 1193);
}

/// Linux's one-shot PIT clockevent: mode 4 (0x38), then the delta.
#[test]
fn channel_0_one_shot_fires_once() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 0, 4, 500);
    assert_eq!(env.take(), [Effect::Timer(TimerId::PitChannel0, Some(after(T0, 500)))]);
    // Early: armed again, no interrupt.
    env.now_ns = after(T0, 100);
    pit.timer_fired(&mut env);
    assert_eq!(env.take(), [Effect::Timer(TimerId::PitChannel0, Some(after(T0, 500)))]);
    env.now_ns = after(T0, 500);
    pit.timer_fired(&mut env);
    assert_eq!(env.take(), [Effect::Gsi(0, true), Effect::Gsi(0, false)]);
    assert_eq!(pit.channel0_deadline(), None);
    pit.timer_fired(&mut env);
    assert!(env.take().is_empty());
    assert_eq!(pit.counters().stale_timer_calls, 2);
}

#[test]
fn short_periods_are_clamped_to_kvms_minimum() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 0, 3, 2);
    let first = after(T0, 2);
    assert_eq!(pit.channel0_deadline(), Some(first));
    env.now_ns = first;
    pit.timer_fired(&mut env);
    assert_eq!(pit.channel0_deadline(), Some(first + MIN_PERIOD_NS));
    assert_eq!(pit.counters().clamped_periods, 1);
    // One-shots are not clamped.
    program(&mut pit, &mut env, 0, 0, 2);
    assert_eq!(pit.channel0_deadline(), Some(after(env.now_ns, 2)));
}

#[test]
fn mode_without_timer_or_hpet_legacy_cancels_channel_0() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 0, 2, 1000);
    env.take();
    program(&mut pit, &mut env, 0, 5, 1000);
    assert_eq!(env.take(), [Effect::Timer(TimerId::PitChannel0, None)]);
    program(&mut pit, &mut env, 0, 2, 1000);
    env.take();
    let mut state = pit.state();
    state.flags = KVM_PIT_FLAGS_HPET_LEGACY;
    pit.set_state(&mut env, &state);
    assert_eq!(env.take(), [Effect::Timer(TimerId::PitChannel0, None)]);
    assert_eq!(pit.channel0_deadline(), None);
}

#[test]
fn state_round_trips_and_set_state_rearms_from_now() {
    let (mut pit, mut env) = pit_at(T0);
    program(&mut pit, &mut env, 0, 2, 11932);
    program(&mut pit, &mut env, 2, 0, 4000);
    outb(&mut pit, &mut env, 0x61, 0x03);
    outb(&mut pit, &mut env, 0x43, 0xb0);
    outb(&mut pit, &mut env, 0x42, 0x11);
    outb(&mut pit, &mut env, 0x43, 0xe8);
    let state = pit.state();
    let mut image = [0xffu8; 112];
    state.to_bytes(&mut image).unwrap();
    assert_eq!(PitState2::from_bytes(&image), Some(state));

    let later = T0 + 7_000_000;
    let (mut copy, mut copy_env) = pit_at(later);
    copy.set_state(&mut copy_env, &PitState2::from_bytes(&image).unwrap());
    assert_eq!(
        copy_env.take(),
        [Effect::Timer(TimerId::PitChannel0, Some(after(later, 11932)))]
    );
    let mut restored = copy.state();
    for channel in &mut restored.channels {
        assert_eq!(channel.count_load_time, later as i64);
        channel.count_load_time = T0 as i64;
    }
    assert_eq!(restored, state);
    // The latched status, the pending MSB write and the flags came along.
    assert_eq!(inb(&mut copy, &mut copy_env, 0x42), 0x30);
    assert_eq!(inb(&mut copy, &mut copy_env, 0x61) & 0x03, 0x03);
    outb(&mut copy, &mut copy_env, 0x42, 0x22);
    assert_eq!(copy.state().channels[2].count, 0x2211);
}

#[test]
fn byte_images_follow_the_header_layout() {
    use kvm_bindings::{kvm_pit_channel_state, kvm_pit_state2};
    assert_eq!(PitChannelState::SIZE, core::mem::size_of::<kvm_pit_channel_state>());
    assert_eq!(PitState2::SIZE, core::mem::size_of::<kvm_pit_state2>());
    assert_eq!(PitState2::SIZE, core::mem::size_of::<PitState2>());
    let image: [u8; 24] = core::array::from_fn(|i| i as u8 + 1);
    let channel = PitChannelState::from_bytes(&image).unwrap();
    assert_eq!(channel.count, 0x0403_0201);
    assert_eq!(channel.latched_count, 0x0605);
    assert_eq!((channel.count_latched, channel.status, channel.gate), (7, 9, 16));
    assert_eq!(channel.count_load_time, 0x1817_1615_1413_1211);
    let mut state = PitState2::ZERO;
    state.channels[2] = channel;
    state.flags = 0xa5;
    state.reserved[8] = 0x77;
    let mut out = [0u8; 112];
    state.to_bytes(&mut out).unwrap();
    assert_eq!(&out[48..72], &image);
    assert_eq!((out[72], out[108]), (0xa5, 0x77));
    assert_eq!(PitState2::from_bytes(&out[..111]), None);
}

#[test]
fn create_pit2_argument_decodes_the_speaker_flag() {
    let mut config = [0u8; 64];
    config[0] = 1;
    assert_eq!(decode_pit_config(&config), Ok(PitConfig { speaker_dummy: true }));
    assert!(decode_pit_config(&config[..63]).is_err());
}

#[test]
fn other_widths_the_control_port_and_unclaimed_accesses() {
    let (mut pit, mut env) = pit_at(T0);
    let mut data = [0xaa; 4];
    pit.read(&mut env, IoSpace::Port, 0x43, &mut data[..1]).unwrap();
    assert_eq!(data[0], 0);
    assert_eq!(pit.counters().control_port_reads, 1);
    // A word write to 42h counts its low byte only.
    outb(&mut pit, &mut env, 0x43, 0x94);
    pit.write(&mut env, IoSpace::Port, 0x42, &[0x21, 0x43]).unwrap();
    assert_eq!(pit.state().channels[2].count, 0x21);
    pit.read(&mut env, IoSpace::Port, 0x42, &mut data[..2]).unwrap();
    assert_eq!(data[..2], [0x21, 0]);
    pit.read(&mut env, IoSpace::Port, 0x61, &mut data).unwrap();
    assert_eq!(data[1..], [0, 0, 0]);
    assert!(!pit.claims(IoSpace::Port, 0x43, 2));
    assert!(pit.claims(IoSpace::Port, 0x40, 4));
    assert!(!pit.claims(IoSpace::Port, 0x62, 1));
    assert!(!pit.claims(IoSpace::Port, 0x61, 5));
    assert!(!pit.claims(IoSpace::Mmio, 0x40, 1));
    assert_eq!(pit.read(&mut env, IoSpace::Port, 0x44, &mut data[..1]), Err(IoError::Unclaimed));
}

#[test]
fn hostile_state_and_clock_values_do_not_overflow() {
    let (mut pit, mut env) = pit_at(u64::MAX);
    let mut state = PitState2::ZERO;
    for (index, channel) in state.channels.iter_mut().enumerate() {
        channel.count = u32::MAX;
        channel.mode = [2, 3, 0xff][index];
        channel.count_latched = 0xee;
        channel.read_state = 0xee;
        channel.write_state = 0xee;
        channel.rw_mode = 0xff;
    }
    pit.set_state(&mut env, &state);
    assert_eq!(pit.channel0_deadline(), Some(u64::MAX));
    pit.timer_fired(&mut env);
    for port in [0x40, 0x41, 0x42, 0x61] {
        inb(&mut pit, &mut env, port);
    }
    outb(&mut pit, &mut env, 0x43, 0xfe);
    env.now_ns = 0;
    for port in [0x40, 0x41, 0x42, 0x61] {
        inb(&mut pit, &mut env, port);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u16, Vec<u8>),
    Read(u16, u8),
    Advance(u64),
    Fire,
    State(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let port = prop::sample::select(std::vec![0x40u16, 0x41, 0x42, 0x43, 0x61, 0x62]);
    prop_oneof![
        8 => (port.clone(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(p, data)| Op::Write(p, data)),
        6 => (port, 1u8..5).prop_map(|(p, len)| Op::Read(p, len)),
        4 => prop_oneof![0u64..100_000, any::<u64>()].prop_map(Op::Advance),
        3 => Just(Op::Fire),
        1 => prop::collection::vec(any::<u8>(), 112).prop_map(Op::State),
    ]
}

proptest! {
    /// Any guest port sequence, clock jumps (also backwards) and timer
    /// calls: no panic, and an armed periodic deadline never moves back.
    #[test]
    fn random_sequences_never_panic(
        start in any::<u64>(),
        speaker in any::<bool>(),
        ops in prop::collection::vec(op(), 0..150),
    ) {
        let mut env = RecordingEnv { now_ns: start, ..RecordingEnv::default() };
        let mut pit = Pit::new(PitConfig { speaker_dummy: speaker }, start);
        for op in ops {
            match op {
                Op::Write(port, data) => {
                    let _ = pit.write(&mut env, IoSpace::Port, port.into(), &data);
                }
                Op::Read(port, len) => {
                    let mut data = std::vec![0u8; usize::from(len)];
                    let _ = pit.read(&mut env, IoSpace::Port, port.into(), &mut data);
                }
                Op::Advance(ns) => env.now_ns = env.now_ns.wrapping_add(ns),
                Op::Fire => {
                    let before = pit.channel0_deadline();
                    pit.timer_fired(&mut env);
                    if let (Some(before), Some(after)) = (before, pit.channel0_deadline()) {
                        prop_assert!(after >= before);
                    }
                }
                Op::State(image) => {
                    pit.set_state(&mut env, &PitState2::from_bytes(&image).unwrap());
                }
            }
            for effect in env.take() {
                match effect {
                    Effect::Gsi(gsi, _) => prop_assert_eq!(gsi, 0),
                    Effect::Timer(timer, _) => prop_assert_eq!(timer, TimerId::PitChannel0),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }
}
