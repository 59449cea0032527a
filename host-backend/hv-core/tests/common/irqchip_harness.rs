//! The bodies of the `pic` and `pit` fuzz targets (host-backend/fuzz),
//! shared with `tests/irqchip_corpus.rs`, which replays their corpora on
//! stable.
//!
//! Input: a sequence of operations, each an opcode byte and its operand
//! bytes (see [`run_pic`] and [`run_pit`]); the input ends where an operand
//! runs out.  Nothing may panic, and:
//! - the PIC has no effect on the environment, and when its output is low
//!   the INTA cycle gives the master's spurious vector;
//! - the PIT only arms `TimerId::PitChannel0` and pulses GSI 0 (high, then
//!   low), the timer the environment holds is always the one the PIT
//!   reports, and a periodic deadline never moves back when it fires;
//! - the state of either survives its byte image, and setting a state the
//!   device reported gives that state back (for the PIT: up to the load
//!   times, which KVM_SET_PIT2 resets; for the PIC: up to the master's
//!   cascade request, which setting a state recomputes).

#![allow(dead_code)]

use hv_core::irqchip::pic::{Pic, PicChip, PicState};
use hv_core::irqchip::pit::{Pit, PitConfig, PitState2};
use hv_core::irqchip::{ApicMessage, DeviceEnv, IoDevice, IoSpace, TimerId};
use hv_core::kvm_api::wire::Wire;

/// The operand bytes of an input, consumed in order.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.data.len() < len {
            return None;
        }
        let (taken, rest) = self.data.split_at(len);
        self.data = rest;
        Some(taken)
    }
}

/// The backend as the devices see it: a clock, channel 0's timer and GSI
/// 0's level.  Any other effect is a bug.
#[derive(Default)]
struct FuzzEnv {
    now: u64,
    timer: Option<u64>,
    gsi0_high: bool,
    effects: u64,
}

impl DeviceEnv for FuzzEnv {
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn set_timer(&mut self, timer: TimerId, deadline_ns: Option<u64>) {
        assert_eq!(timer, TimerId::PitChannel0);
        self.timer = deadline_ns;
        self.effects += 1;
    }
    fn send_apic_message(&mut self, message: ApicMessage) {
        panic!("no APIC messages expected: {message:?}");
    }
    fn set_gsi(&mut self, gsi: u32, level: bool) {
        assert_eq!(gsi, 0);
        assert_ne!(level, self.gsi0_high, "GSI 0 must pulse high then low");
        self.gsi0_high = level;
        self.effects += 1;
    }
    fn eoi_broadcast(&mut self, vector: u8) {
        panic!("no EOI broadcast expected: {vector:#x}");
    }
}

const PIC_PORTS: [u64; 6] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1];

/// Opcodes (byte % 6): 0 write(port, value), 1 read(port), 2 access of
/// width 0-8 (read then write), 3 set_irq(pin 0-17, level), 4 INTA, 5
/// set_state(chip, 16-byte image).
pub fn run_pic(data: &[u8]) {
    let mut input = Input { data };
    let mut pic = Pic::new();
    let mut env = FuzzEnv::default();
    while let Some(opcode) = input.byte() {
        let Some(operand) = input.byte() else { break };
        let port = PIC_PORTS[usize::from(operand) % PIC_PORTS.len()];
        match opcode % 6 {
            0 => {
                let Some(value) = input.byte() else { break };
                pic.write(&mut env, IoSpace::Port, port, &[value]).unwrap();
            }
            1 => pic.read(&mut env, IoSpace::Port, port, &mut [0]).unwrap(),
            2 => {
                let mut bytes = [0u8; 8];
                let width = usize::from(operand >> 4) % 9;
                let _ = pic.read(&mut env, IoSpace::Port, port, &mut bytes[..width]);
                let _ = pic.write(&mut env, IoSpace::Port, port, &bytes[..width]);
            }
            3 => {
                let status = pic.set_irq(u32::from(operand) % 18, operand & 0x80 != 0);
                assert_eq!(status.is_some(), operand % 18 < 16);
            }
            4 => {
                let output = pic.output();
                let base = pic.state(PicChip::Master).irq_base;
                let vector = pic.acknowledge();
                if !output {
                    assert_eq!(vector, base.wrapping_add(7));
                }
            }
            _ => {
                let Some(image) = input.take(PicState::SIZE) else {
                    break;
                };
                let chip = if operand & 1 == 0 {
                    PicChip::Master
                } else {
                    PicChip::Slave
                };
                pic.set_state(chip, &PicState::from_bytes(image).unwrap());
            }
        }
        for chip in [PicChip::Master, PicChip::Slave] {
            let state = pic.state(chip);
            let mut image = [0u8; 16];
            state.to_bytes(&mut image).unwrap();
            assert_eq!(PicState::from_bytes(&image), Some(state));
            let mut copy = pic.clone();
            copy.set_state(chip, &state);
            let mut again = copy.state(chip);
            if chip == PicChip::Master {
                // A master poll that returned the cascade pin leaves the
                // slave's request to the slave poll that follows (as KVM);
                // setting the state re-raises it on the cascade pin.
                again.irr = again.irr & !0x04 | state.irr & 0x04;
            }
            assert_eq!(again, state);
        }
        assert_eq!(env.effects, 0, "the PIC acts on nothing outside itself");
    }
}

const PIT_PORTS: [u64; 6] = [0x40, 0x41, 0x42, 0x43, 0x61, 0x62];

/// Byte 0 bit 0: KVM_PIT_SPEAKER_DUMMY.  Opcodes (byte % 7): 0 write
/// (port, width 1-4, bytes), 1 read(port, width), 2 advance the clock by
/// a 16-bit count of microseconds, 3 set the clock to a raw 64-bit value,
/// 4 the backend timer fires now, 5 the clock jumps to the deadline and
/// it fires, 6 set_state(112-byte image).
pub fn run_pit(data: &[u8]) {
    let mut input = Input { data };
    let Some(config) = input.byte() else { return };
    let mut env = FuzzEnv {
        now: 1 << 40,
        ..FuzzEnv::default()
    };
    let mut pit = Pit::new(
        PitConfig {
            speaker_dummy: config & 1 != 0,
        },
        env.now,
    );
    while let Some(opcode) = input.byte() {
        let Some(operand) = input.byte() else { break };
        let port = PIT_PORTS[usize::from(operand) % PIT_PORTS.len()];
        let width = usize::from(operand >> 4) % 4 + 1;
        match opcode % 7 {
            0 => {
                let Some(bytes) = input.take(width) else {
                    break;
                };
                let _ = pit.write(&mut env, IoSpace::Port, port, bytes);
            }
            1 => {
                let _ = pit.read(&mut env, IoSpace::Port, port, &mut [0u8; 4][..width]);
            }
            2 => {
                let Some(high) = input.byte() else { break };
                let micros = u64::from(u16::from_le_bytes([operand, high]));
                env.now = env.now.wrapping_add(micros * 1_000);
            }
            3 => {
                let Some(bytes) = input.take(7) else { break };
                let mut raw = [operand; 8];
                raw[1..].copy_from_slice(bytes);
                env.now = u64::from_le_bytes(raw);
            }
            opcode @ (4 | 5) => {
                let before = pit.channel0_deadline();
                if let (5, Some(deadline)) = (opcode, before) {
                    env.now = deadline;
                }
                // The backend's timer is spent once it calls back.
                env.timer = None;
                pit.timer_fired(&mut env);
                if let (Some(before), Some(after)) = (before, pit.channel0_deadline()) {
                    assert!(after >= before, "deadline moved back");
                }
            }
            _ => {
                let Some(image) = input.take(PitState2::SIZE) else {
                    break;
                };
                pit.set_state(&mut env, &PitState2::from_bytes(image).unwrap());
            }
        }
        assert_eq!(env.timer, pit.channel0_deadline());
        assert!(!env.gsi0_high);
        let state = pit.state();
        let mut image = [0u8; 112];
        state.to_bytes(&mut image).unwrap();
        assert_eq!(PitState2::from_bytes(&image), Some(state));
        let mut copy = pit.clone();
        let mut scratch = FuzzEnv {
            now: env.now,
            ..FuzzEnv::default()
        };
        copy.set_state(&mut scratch, &state);
        let mut again = copy.state();
        for (channel, original) in again.channels.iter_mut().zip(&state.channels) {
            channel.count_load_time = original.count_load_time;
        }
        assert_eq!(again, state);
    }
}
