//! The 8254 programmable interval timer of a PC, as KVM emulates it
//! (`arch/x86/kvm/i8254.c`, Linux 6.12), with the port 61h bits KVM's
//! dummy speaker device gives.
//!
//! Three counters run from a 1.193 MHz clock ([`PIT_FREQUENCY_HZ`], KVM's
//! `KVM_PIT_FREQ`).  Channel 0's output is the timer interrupt (GSI 0),
//! channel 1 is unused on a PC, channel 2's gate is bit 0 of port 61h and
//! its output reads back as bit 5, which is how Linux calibrates the TSC
//! (`pit_calibrate_tsc` and `quick_pit_calibrate` in
//! `arch/x86/kernel/tsc.c`: gate high, mode 0, a count, then poll bit 5 or
//! read the count until it runs out).
//!
//! Ports (8254 datasheet, "Operational description"):
//! - 40h-42h: a channel's count, written and read as its access mode says
//!   (LSB, MSB, or LSB then MSB), or a latched count or status.
//! - 43h: the control word: select a channel's access mode, mode (0-5; 6
//!   and 7 are 2 and 3) and binary/BCD counting; access mode 00 latches
//!   the count instead; channel 11b is the read-back command, which latches
//!   the count and/or status of several channels at once.  Reads of 43h
//!   give 0 (KVM) and are counted.
//! - 61h (with KVM_PIT_SPEAKER_DUMMY): bit 0 channel 2's gate, bit 1 the
//!   speaker enable (kept in [`KVM_PIT_FLAGS_SPEAKER_DATA_ON`]), on read
//!   bit 4 the DRAM refresh toggle (every 2^14 ns, KVM's approximation of
//!   15 us) and bit 5 channel 2's output.
//!
//! Nothing counts: a channel keeps the time its count was loaded
//! (`count_load_time`, nanoseconds of [`DeviceEnv::now_ns`]) and computes
//! its count and output from the time elapsed, as KVM does.  A count of 0
//! means 65536 (10000 in BCD).  Channel 0 additionally keeps a backend
//! timer ([`TimerId::PitChannel0`]): one-shot in modes 0, 1 and 4,
//! periodic in modes 2 and 3 (never shorter than [`MIN_PERIOD_NS`], KVM's
//! `min_timer_period_us` default, because nothing throttles a guest's
//! timer); each [`Pit::timer_fired`] pulses GSI 0 (`set_gsi(0, true)` then
//! `false`, an edge, as KVM's `pit_do_work` injects) and arms the next
//! deadline, computed from the load time so that periods do not drift.
//!
//! Differences from KVM, and why:
//! - Counts are decoded and read back in BCD when the control word asks
//!   for it (datasheet); KVM counts in binary whatever the BCD bit says.
//! - The output of modes 1, 2, 4 and 5 has the datasheet's polarity (mode
//!   1 low while the one-shot runs, modes 2/4/5 high but for one clock at
//!   the end of a count); KVM's is inverted for these modes.  Modes 0 and
//!   3, the ones guests read, agree.
//! - Channel 0's count is computed from its load time, like the other
//!   channels', where KVM derives it from its hrtimer; the two agree
//!   unless KVM clamped the period.
//! - Deadlines round up to the nanosecond, so that the count has run out
//!   when the timer fires (KVM rounds down).
//! - No reinjection of missed ticks (KVM_REINJECT_CONTROL's default): a
//!   late backend timer still pulses once per call; a deadline already in
//!   the past fires at once, so the ticks catch up as with KVM's hrtimer.
//!
//! Gates, as KVM: a rising gate restarts the count in modes 1, 2, 3 and 5;
//! in modes 0 and 4 a low gate does not stop counting (KVM leaves that as
//! "XXX").  The null-count status bit reads 0 (KVM's TODO).
//!
//! State: KVM_GET/SET_PIT2 carry a [`PitState2`] (`struct kvm_pit_state2`
//! of `arch/x86/include/uapi/asm/kvm.h`); setting it reloads each count
//! "now", as KVM's `kvm_vm_ioctl_set_pit2` does, which re-arms channel 0.
//! KVM_CREATE_PIT2's argument is decoded by
//! [`crate::kvm_api::decode::decode_pit_config`] (re-exported here).

use super::{DeviceEnv, IoDevice, IoError, IoSpace, TimerId};
pub use crate::kvm_api::decode::{decode_pit_config, PitConfig};
use crate::kvm_api::wire::{Reader, Wire, Writer};

/// The counters' clock (KVM's `KVM_PIT_FREQ`; the crystal is 14.31818 MHz
/// / 12, which Linux rounds up to 1193182 as `PIT_TICK_RATE`).
pub const PIT_FREQUENCY_HZ: u64 = 1_193_181;
/// The shortest period channel 0's periodic timer is armed with: KVM's
/// `min_timer_period_us` (a module parameter, 200 by default).
pub const MIN_PERIOD_NS: u64 = 200_000;
/// The PIT's first port (channel 0); the control word is at +3.
pub const PIT_BASE_PORT: u16 = 0x40;
/// The speaker / system control port B.
pub const SPEAKER_PORT: u16 = 0x61;
/// The GSI channel 0 drives.
pub const PIT_GSI: u32 = 0;

/// `kvm_pit_state2::flags`: the HPET has taken over the timer interrupt
/// (channel 0 arms no timer).
pub const KVM_PIT_FLAGS_HPET_LEGACY: u32 = 1 << 0;
/// `kvm_pit_state2::flags`: port 61h bit 1 (speaker data) is set.
pub const KVM_PIT_FLAGS_SPEAKER_DATA_ON: u32 = 1 << 1;

const NS_PER_SEC: u64 = 1_000_000_000;
/// The ports of the PIT proper: 40h-43h.
const PIT_PORTS: u64 = 4;
/// How wide an access KVM's speaker device decodes (61h-64h, but only
/// accesses starting at 61h are its).
const SPEAKER_LEN: usize = 4;
const CONTROL_PORT_OFFSET: u64 = 3;

// Access modes (`rw_mode`, `read_state`, `write_state`, `count_latched`):
// 1 (LSB only) and any unknown value access the LSB, as in KVM.
const RW_MSB: u8 = 2;
/// LSB then MSB; the first byte is next.
const RW_WORD0: u8 = 3;
/// LSB then MSB; the second byte is next.
const RW_WORD1: u8 = 4;

// Control word (port 43h) fields.
const CONTROL_READ_BACK: u8 = 3;
const READ_BACK_NO_COUNT: u8 = 1 << 5;
const READ_BACK_NO_STATUS: u8 = 1 << 4;
/// KVM's "no mode programmed" (reset), under which channel 0 has no timer.
const MODE_NONE: u8 = 0xff;

// Port 61h bits.
const SPEAKER_GATE2: u8 = 1 << 0;
const SPEAKER_DATA: u8 = 1 << 1;
const SPEAKER_REFRESH: u8 = 1 << 4;
const SPEAKER_OUT2: u8 = 1 << 5;
/// The refresh bit toggles every 2^14 ns (KVM).
const REFRESH_SHIFT: u32 = 14;

/// Ticks of the PIT clock in `ns` nanoseconds, rounded down.  No
/// overflow for any `ns`, and no 128-bit division (which the kernel's
/// Rust does not link).
pub fn ns_to_ticks(ns: u64) -> u64 {
    (ns / NS_PER_SEC) * PIT_FREQUENCY_HZ + (ns % NS_PER_SEC) * PIT_FREQUENCY_HZ / NS_PER_SEC
}

/// Nanoseconds `ticks` PIT clocks take, rounded up, saturating.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let whole = (ticks / PIT_FREQUENCY_HZ).saturating_mul(NS_PER_SEC);
    let part = ((ticks % PIT_FREQUENCY_HZ) * NS_PER_SEC).div_ceil(PIT_FREQUENCY_HZ);
    whole.saturating_add(part)
}

/// The four BCD digits of `value` (taken modulo 10000).
fn to_bcd(value: u32) -> u16 {
    let mut value = value % 10_000;
    let mut bcd = 0u16;
    for shift in [0, 4, 8, 12] {
        bcd |= ((value % 10) as u16) << shift;
        value /= 10;
    }
    bcd
}

/// The value of four BCD digits; a digit above 9 counts as its binary
/// value (the 8254 leaves it undefined).
fn from_bcd(bcd: u16) -> u32 {
    [1, 10, 100, 1000]
        .into_iter()
        .enumerate()
        .map(|(digit, weight)| u32::from((bcd >> (4 * digit)) & 0xf) * weight)
        .sum()
}

/// One counter (KVM's `struct kvm_kpit_channel_state`).  The fields KVM
/// treats as small state machines are kept as its raw numbers so that a
/// state round-trips; every use tolerates any value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Channel {
    /// The initial count, 1-65536 (binary, also in BCD mode).
    count: u32,
    /// The count latched by a latch or read-back command, as read (BCD
    /// encoded in BCD mode).
    latched_count: u16,
    /// Which bytes of `latched_count` are still to be read (`RW_*`), or 0.
    count_latched: u8,
    status_latched: bool,
    /// The latched status byte.
    status: u8,
    /// The next byte a count read gives (`RW_*`).
    read_state: u8,
    /// The next byte a count write sets (`RW_*`).
    write_state: u8,
    /// The LSB of a two-byte count write in progress.
    write_latch: u8,
    /// The access mode of the control word (`RW_LSB`..`RW_WORD0`).
    rw_mode: u8,
    /// 0-5, or `MODE_NONE`.
    mode: u8,
    bcd: bool,
    gate: bool,
    /// When the count was loaded, in [`DeviceEnv::now_ns`] nanoseconds.
    count_load_time: i64,
}

impl Channel {
    /// PIT clocks since the count was loaded (0 if "loaded" in the
    /// future).
    fn elapsed_ticks(&self, now: i64) -> u64 {
        let elapsed = now.saturating_sub(self.count_load_time).max(0);
        ns_to_ticks(elapsed as u64)
    }

    /// The count that wraps around in modes 0, 1, 4 and 5.
    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            0x1_0000
        }
    }

    /// The current count, 0..=count (KVM's `pit_get_count`).
    fn current_count(&self, now: i64) -> u32 {
        let ticks = self.elapsed_ticks(now);
        let count = u64::from(self.count.max(1));
        let value = match self.mode {
            0 | 1 | 4 | 5 => {
                let modulus = self.modulus();
                (count % modulus + modulus - ticks % modulus) % modulus
            }
            // Decrements by two, reloading each half period (exact for
            // even counts; the 8254's odd-count asymmetry is not modelled).
            3 => count - (ticks.wrapping_mul(2) % count),
            _ => count - ticks % count,
        };
        value as u32
    }

    /// The current count as the guest reads it (16 bits, BCD encoded in
    /// BCD mode).
    fn read_count(&self, now: i64) -> u16 {
        let count = self.current_count(now);
        if self.bcd {
            to_bcd(count)
        } else {
            count as u16
        }
    }

    /// The OUT pin (datasheet polarity, see the module documentation).
    fn output(&self, now: i64) -> bool {
        let ticks = self.elapsed_ticks(now);
        let count = u64::from(self.count.max(1));
        match self.mode {
            // Low until terminal count (0), or during the one-shot (1).
            1 => ticks >= count,
            // High but for the clock before each reload.
            2 => ticks % count != count - 1,
            // High for the first half of each period.
            3 => ticks % count < count.div_ceil(2),
            // High but for the clock at terminal count.
            4 | 5 => ticks != count,
            _ => ticks >= count,
        }
    }

    /// The status byte of a read-back (null count always 0).
    fn status_byte(&self, now: i64) -> u8 {
        u8::from(self.output(now)) << 7
            | (self.rw_mode & 3) << 4
            | (self.mode & 7) << 1
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, now: i64) {
        if self.count_latched == 0 {
            self.latched_count = self.read_count(now);
            self.count_latched = self.rw_mode;
        }
    }

    fn latch_status(&mut self, now: i64) {
        if !self.status_latched {
            self.status = self.status_byte(now);
            self.status_latched = true;
        }
    }

    /// A read of the channel's port.
    fn read(&mut self, now: i64) -> u8 {
        if self.status_latched {
            self.status_latched = false;
            return self.status;
        }
        let [low, high] = self.latched_count.to_le_bytes();
        match self.count_latched {
            0 => {}
            RW_MSB => {
                self.count_latched = 0;
                return high;
            }
            RW_WORD0 => {
                self.count_latched = RW_MSB;
                return low;
            }
            _ => {
                self.count_latched = 0;
                return low;
            }
        }
        let [low, high] = self.read_count(now).to_le_bytes();
        match self.read_state {
            RW_MSB => high,
            RW_WORD0 => {
                self.read_state = RW_WORD1;
                low
            }
            RW_WORD1 => {
                self.read_state = RW_WORD0;
                high
            }
            _ => low,
        }
    }

    /// A write of the channel's port: the count as it is loaded, once
    /// complete (0 is the largest count), still BCD-encoded in BCD mode.
    fn write(&mut self, value: u8) -> Option<u16> {
        match self.write_state {
            RW_MSB => Some(u16::from(value) << 8),
            RW_WORD0 => {
                self.write_latch = value;
                self.write_state = RW_WORD1;
                None
            }
            RW_WORD1 => {
                self.write_state = RW_WORD0;
                Some(u16::from_le_bytes([self.write_latch, value]))
            }
            _ => Some(u16::from(value)),
        }
    }

    /// A control word selecting this channel (not a latch command).
    fn program(&mut self, control: u8) {
        let access = (control >> 4) & 3;
        self.rw_mode = access;
        self.read_state = access;
        self.write_state = access;
        let mode = (control >> 1) & 7;
        // Modes 6 and 7 are aliases of 2 and 3.
        self.mode = if mode > 5 { mode - 4 } else { mode };
        self.bcd = control & 1 != 0;
    }

    /// KVM's `pit_set_gate`.
    fn set_gate(&mut self, gate: bool, now: i64) {
        if matches!(self.mode, 1 | 2 | 3 | 5) && gate && !self.gate {
            self.count_load_time = now;
        }
        self.gate = gate;
    }

    fn state(&self) -> PitChannelState {
        PitChannelState {
            count: self.count,
            latched_count: self.latched_count,
            count_latched: self.count_latched,
            status_latched: self.status_latched.into(),
            status: self.status,
            read_state: self.read_state,
            write_state: self.write_state,
            write_latch: self.write_latch,
            rw_mode: self.rw_mode,
            mode: self.mode,
            bcd: self.bcd.into(),
            gate: self.gate.into(),
            count_load_time: self.count_load_time,
        }
    }

    fn from_state(state: &PitChannelState) -> Self {
        Self {
            count: state.count,
            latched_count: state.latched_count,
            count_latched: state.count_latched,
            status_latched: state.status_latched != 0,
            status: state.status,
            read_state: state.read_state,
            write_state: state.write_state,
            write_latch: state.write_latch,
            rw_mode: state.rw_mode,
            mode: state.mode,
            bcd: state.bcd != 0,
            gate: state.gate != 0,
            count_load_time: state.count_load_time,
        }
    }
}

/// Channel 0's armed timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel0Timer {
    /// When the count was loaded.
    load_ns: u64,
    /// The count, in PIT clocks.
    ticks: u64,
    /// Modes 2 and 3.
    periodic: bool,
    /// The period was raised to [`MIN_PERIOD_NS`]: deadlines follow that
    /// period instead of the count.
    clamped: bool,
    /// Deadlines that have fired.
    fired: u64,
    /// The deadline armed now.
    deadline: u64,
}

impl Channel0Timer {
    /// The `n`th deadline (from 1).
    fn nth_deadline(&self, n: u64) -> u64 {
        let first = self.load_ns.saturating_add(ticks_to_ns(self.ticks));
        if self.clamped {
            first.saturating_add(n.saturating_sub(1).saturating_mul(MIN_PERIOD_NS))
        } else {
            // From the load time, not the previous deadline: rounding
            // cannot accumulate.
            self.load_ns.saturating_add(ticks_to_ns(self.ticks.saturating_mul(n)))
        }
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// What the PIT ignored or adjusted, for a debugfs file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitCounters {
    /// Reads of the control port 43h (write-only; they give 0).
    pub control_port_reads: u64,
    /// Periodic timers armed with a period raised to [`MIN_PERIOD_NS`].
    pub clamped_periods: u64,
    /// [`Pit::timer_fired`] calls with no timer armed or before its
    /// deadline (the deadline is armed again).
    pub stale_timer_calls: u64,
    /// GSI 0 pulses.
    pub interrupts: u64,
}

/// The three channels and the speaker port (KVM's `struct kvm_pit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    channels: [Channel; 3],
    /// `KVM_PIT_FLAGS_*`.
    flags: u32,
    /// Port 61h is decoded (KVM_PIT_SPEAKER_DUMMY).
    speaker_dummy: bool,
    timer: Option<Channel0Timer>,
    counters: PitCounters,
}

/// `now_ns` as a `count_load_time`.
fn signed_ns(now_ns: u64) -> i64 {
    i64::try_from(now_ns).unwrap_or(i64::MAX)
}

impl Pit {
    /// The PIT as KVM_CREATE_PIT2 makes it at `now_ns` (KVM's
    /// `kvm_pit_reset`): no mode programmed, counts 65536, gates high but
    /// channel 2's, no timer armed.
    pub fn new(config: PitConfig, now_ns: u64) -> Self {
        let mut channels = [Channel::default(); 3];
        for (index, channel) in channels.iter_mut().enumerate() {
            channel.mode = MODE_NONE;
            channel.gate = index != 2;
            channel.count = 0x1_0000;
            channel.count_load_time = signed_ns(now_ns);
        }
        Self {
            channels,
            flags: 0,
            speaker_dummy: config.speaker_dummy,
            timer: None,
            counters: PitCounters::default(),
        }
    }

    /// What the PIT ignored or adjusted.
    pub fn counters(&self) -> &PitCounters {
        &self.counters
    }

    /// Channel 0's deadline armed now, if any (as last passed to
    /// [`DeviceEnv::set_timer`]).
    pub fn channel0_deadline(&self) -> Option<u64> {
        self.timer.map(|timer| timer.deadline)
    }

    /// Loads `count` (binary; 0 is 65536) into `index` at the current
    /// time, and re-arms channel 0's timer (KVM's `pit_load_count`).
    fn load_count(&mut self, env: &mut dyn DeviceEnv, index: usize, count: u32) {
        let now_ns = env.now_ns();
        let channel = &mut self.channels[index];
        channel.count = if count == 0 { 0x1_0000 } else { count };
        channel.count_load_time = signed_ns(now_ns);
        if index == 0 {
            self.arm_channel0(env, now_ns);
        }
    }

    /// Arms or cancels channel 0's timer for its mode and count (KVM's
    /// `create_pit_timer` / `destroy_pit_timer`).
    fn arm_channel0(&mut self, env: &mut dyn DeviceEnv, now_ns: u64) {
        let channel = &self.channels[0];
        let periodic = match channel.mode {
            0 | 1 | 4 => false,
            2 | 3 => true,
            _ => {
                self.cancel_channel0(env);
                return;
            }
        };
        if self.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0 {
            self.cancel_channel0(env);
            return;
        }
        let ticks = u64::from(channel.count);
        let clamped = periodic && ticks_to_ns(ticks) < MIN_PERIOD_NS;
        if clamped {
            bump(&mut self.counters.clamped_periods);
        }
        let mut timer = Channel0Timer {
            load_ns: now_ns,
            ticks,
            periodic,
            clamped,
            fired: 0,
            deadline: 0,
        };
        timer.deadline = timer.nth_deadline(1);
        self.timer = Some(timer);
        env.set_timer(TimerId::PitChannel0, Some(timer.deadline));
    }

    fn cancel_channel0(&mut self, env: &mut dyn DeviceEnv) {
        if self.timer.take().is_some() {
            env.set_timer(TimerId::PitChannel0, None);
        }
    }

    /// The backend's callback for [`TimerId::PitChannel0`]: pulses GSI 0
    /// and, in the periodic modes, arms the next deadline.  A call with
    /// nothing armed is ignored and one before the deadline re-arms it
    /// (both counted).
    pub fn timer_fired(&mut self, env: &mut dyn DeviceEnv) {
        let Some(timer) = self.timer.as_mut() else {
            bump(&mut self.counters.stale_timer_calls);
            return;
        };
        if env.now_ns() < timer.deadline {
            bump(&mut self.counters.stale_timer_calls);
            env.set_timer(TimerId::PitChannel0, Some(timer.deadline));
            return;
        }
        env.set_gsi(PIT_GSI, true);
        env.set_gsi(PIT_GSI, false);
        bump(&mut self.counters.interrupts);
        if timer.periodic {
            timer.fired = timer.fired.saturating_add(1);
            timer.deadline = timer.nth_deadline(timer.fired.saturating_add(1));
            env.set_timer(TimerId::PitChannel0, Some(timer.deadline));
        } else {
            self.timer = None;
        }
    }

    /// A control word (port 43h).
    fn write_control(&mut self, control: u8, now: i64) {
        let select = control >> 6;
        if select == CONTROL_READ_BACK {
            for (index, channel) in self.channels.iter_mut().enumerate() {
                if control & (2 << index) == 0 {
                    continue;
                }
                if control & READ_BACK_NO_COUNT == 0 {
                    channel.latch_count(now);
                }
                if control & READ_BACK_NO_STATUS == 0 {
                    channel.latch_status(now);
                }
            }
            return;
        }
        let channel = &mut self.channels[usize::from(select)];
        if (control >> 4) & 3 == 0 {
            channel.latch_count(now);
        } else {
            channel.program(control);
        }
    }

    fn speaker_read(&self, now: i64) -> u8 {
        let channel2 = &self.channels[2];
        let mut value = 0;
        if self.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0 {
            value |= SPEAKER_DATA;
        }
        if channel2.gate {
            value |= SPEAKER_GATE2;
        }
        if channel2.output(now) {
            value |= SPEAKER_OUT2;
        }
        if (now >> REFRESH_SHIFT) & 1 != 0 {
            value |= SPEAKER_REFRESH;
        }
        value
    }

    fn speaker_write(&mut self, value: u8, now: i64) {
        if value & SPEAKER_DATA != 0 {
            self.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        } else {
            self.flags &= !KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        }
        self.channels[2].set_gate(value & SPEAKER_GATE2 != 0, now);
    }

    /// KVM_GET_PIT2.
    pub fn state(&self) -> PitState2 {
        PitState2 {
            channels: [0, 1, 2].map(|index| self.channels[index].state()),
            flags: self.flags,
            reserved: [0; 9],
        }
    }

    /// KVM_SET_PIT2: takes the channels and flags as given, then reloads
    /// each count at the current time (which re-arms or cancels channel
    /// 0's timer), as KVM does; `count_load_time` is thus replaced.
    pub fn set_state(&mut self, env: &mut dyn DeviceEnv, state: &PitState2) {
        self.flags = state.flags;
        for (index, channel_state) in state.channels.iter().enumerate() {
            self.channels[index] = Channel::from_state(channel_state);
            self.load_count(env, index, channel_state.count);
        }
    }
}

impl IoDevice for Pit {
    /// Claims accesses inside 40h-43h, and with KVM_PIT_SPEAKER_DUMMY those
    /// starting at 61h (up to 4 bytes, KVM's registration).
    fn claims(&self, space: IoSpace, addr: u64, len: usize) -> bool {
        let base = u64::from(PIT_BASE_PORT);
        let in_pit = addr >= base && addr.saturating_add(len as u64) <= base + PIT_PORTS;
        let in_speaker =
            self.speaker_dummy && addr == u64::from(SPEAKER_PORT) && len <= SPEAKER_LEN;
        space == IoSpace::Port && len != 0 && (in_pit || in_speaker)
    }

    /// A read; an access wider than a byte gives the byte in its low 8
    /// bits and zeros above, as KVM.
    fn read(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &mut [u8],
    ) -> Result<(), IoError> {
        if !self.claims(space, addr, data.len()) {
            return Err(IoError::Unclaimed);
        }
        let now = signed_ns(env.now_ns());
        let value = if addr == u64::from(SPEAKER_PORT) {
            self.speaker_read(now)
        } else {
            match addr - u64::from(PIT_BASE_PORT) {
                CONTROL_PORT_OFFSET => {
                    bump(&mut self.counters.control_port_reads);
                    0
                }
                index => self.channels[index as usize].read(now),
            }
        };
        data.fill(0);
        data[0] = value;
        Ok(())
    }

    /// A write; only the low byte of a wider access counts, as KVM.
    fn write(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        if !self.claims(space, addr, data.len()) {
            return Err(IoError::Unclaimed);
        }
        let value = data[0];
        let now = signed_ns(env.now_ns());
        if addr == u64::from(SPEAKER_PORT) {
            self.speaker_write(value, now);
            return Ok(());
        }
        match addr - u64::from(PIT_BASE_PORT) {
            CONTROL_PORT_OFFSET => self.write_control(value, now),
            index => {
                let index = index as usize;
                let channel = &mut self.channels[index];
                if let Some(written) = channel.write(value) {
                    let count = if channel.bcd {
                        from_bcd(written)
                    } else {
                        u32::from(written)
                    };
                    // 0 is the largest count: 10000 in BCD (load_count
                    // makes a binary 0 65536).
                    let count = if count == 0 && channel.bcd { 10_000 } else { count };
                    self.load_count(env, index, count);
                }
            }
        }
        Ok(())
    }
}

/// `struct kvm_pit_channel_state` (`arch/x86/include/uapi/asm/kvm.h`): 24
/// bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitChannelState {
    /// The initial count (1-65536; 0 is taken as 65536).
    pub count: u32,
    /// A latched count, as the guest will read it.
    pub latched_count: u16,
    /// The bytes of `latched_count` still to be read (1 LSB, 2 MSB, 3 both),
    /// or 0.
    pub count_latched: u8,
    /// 1: `status` is latched.
    pub status_latched: u8,
    /// The latched read-back status byte.
    pub status: u8,
    /// The next count byte read (1 LSB, 2 MSB, 3/4 first/second of both).
    pub read_state: u8,
    /// The next count byte written (as `read_state`).
    pub write_state: u8,
    /// The first byte of a two-byte count write.
    pub write_latch: u8,
    /// The control word's access mode (1 LSB, 2 MSB, 3 both).
    pub rw_mode: u8,
    /// The counter mode 0-5, or 0xff before the first control word.
    pub mode: u8,
    /// 1: BCD counting.
    pub bcd: u8,
    /// The gate input.
    pub gate: u8,
    /// When the count was loaded (host monotonic nanoseconds).
    pub count_load_time: i64,
}

/// The byte image of the C struct (`Wire::from_bytes` / `to_bytes`).
impl Wire for PitChannelState {
    const SIZE: usize = 24;
    const ZERO: Self = Self {
        count: 0,
        latched_count: 0,
        count_latched: 0,
        status_latched: 0,
        status: 0,
        read_state: 0,
        write_state: 0,
        write_latch: 0,
        rw_mode: 0,
        mode: 0,
        bcd: 0,
        gate: 0,
        count_load_time: 0,
    };

    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        let count = u32::read(reader)?;
        let latched_count = u16::read(reader)?;
        let [count_latched, status_latched, status, read_state, write_state, write_latch, rw_mode, mode, bcd, gate] =
            reader.take::<10>()?;
        Some(Self {
            count,
            latched_count,
            count_latched,
            status_latched,
            status,
            read_state,
            write_state,
            write_latch,
            rw_mode,
            mode,
            bcd,
            gate,
            count_load_time: i64::read(reader)?,
        })
    }

    fn write(&self, writer: &mut Writer<'_>) -> Option<()> {
        self.count.write(writer)?;
        self.latched_count.write(writer)?;
        writer.put([
            self.count_latched,
            self.status_latched,
            self.status,
            self.read_state,
            self.write_state,
            self.write_latch,
            self.rw_mode,
            self.mode,
            self.bcd,
            self.gate,
        ])?;
        self.count_load_time.write(writer)
    }
}

/// `struct kvm_pit_state2`, KVM_GET_PIT2/KVM_SET_PIT2's argument: 112
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitState2 {
    /// Channels 0-2.
    pub channels: [PitChannelState; 3],
    /// `KVM_PIT_FLAGS_HPET_LEGACY`, `KVM_PIT_FLAGS_SPEAKER_DATA_ON`.
    pub flags: u32,
    /// Zero on KVM_GET_PIT2, ignored on KVM_SET_PIT2.
    pub reserved: [u32; 9],
}

/// The byte image of the C struct (`Wire::from_bytes` / `to_bytes`).
impl Wire for PitState2 {
    const SIZE: usize = 112;
    const ZERO: Self = Self {
        channels: [PitChannelState::ZERO; 3],
        flags: 0,
        reserved: [0; 9],
    };

    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            channels: Wire::read(reader)?,
            flags: u32::read(reader)?,
            reserved: Wire::read(reader)?,
        })
    }

    fn write(&self, writer: &mut Writer<'_>) -> Option<()> {
        self.channels.write(writer)?;
        self.flags.write(writer)?;
        self.reserved.write(writer)
    }
}

#[cfg(test)]
mod tests;
