//! A [`DeviceEnv`] for unit tests: a settable clock and a record of
//! everything the device under test caused.

use std::vec::Vec;

use super::{ApicMessage, DeviceEnv, TimerId};

/// One effect a device had on its environment, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `set_timer(timer, deadline)`.
    Timer(TimerId, Option<u64>),
    /// `send_apic_message(message)`.
    Message(ApicMessage),
    /// `set_gsi(gsi, level)`.
    Gsi(u32, bool),
    /// `eoi_broadcast(vector)`.
    Eoi(u8),
}

/// The recording environment.
#[derive(Debug, Default)]
pub struct RecordingEnv {
    /// What `now_ns` answers.
    pub now_ns: u64,
    /// Effects since the last [`RecordingEnv::take`].
    pub effects: Vec<Effect>,
}

impl RecordingEnv {
    /// Returns and clears the recorded effects.
    pub fn take(&mut self) -> Vec<Effect> {
        core::mem::take(&mut self.effects)
    }
}

impl DeviceEnv for RecordingEnv {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }
    fn set_timer(&mut self, timer: TimerId, deadline_ns: Option<u64>) {
        self.effects.push(Effect::Timer(timer, deadline_ns));
    }
    fn send_apic_message(&mut self, message: ApicMessage) {
        self.effects.push(Effect::Message(message));
    }
    fn set_gsi(&mut self, gsi: u32, level: bool) {
        self.effects.push(Effect::Gsi(gsi, level));
    }
    fn eoi_broadcast(&mut self, vector: u8) {
        self.effects.push(Effect::Eoi(vector));
    }
}
