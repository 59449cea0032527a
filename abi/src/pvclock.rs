//! kvmclock: the per-vCPU time area and the wall clock area the host keeps
//! in guest memory, and the fixed-point arithmetic both sides use to turn
//! TSC ticks into nanoseconds.
//!
//! Sources: `Documentation/virt/kvm/x86/msr.rst` (`MSR_KVM_SYSTEM_TIME_NEW`,
//! `MSR_KVM_WALL_CLOCK_NEW`), `arch/x86/include/asm/pvclock-abi.h` (layouts
//! and flags), `arch/x86/include/asm/pvclock.h` (guest arithmetic) and
//! `kvm_get_time_scale()` in `arch/x86/kvm/x86.c` (host arithmetic).
//!
//! # Layout versus the C structs
//!
//! Linux declares both structs `__packed` (alignment 1).  Here they are
//! plain `#[repr(C)]`: every field is already at an offset that is a
//! multiple of its size, so size and field offsets are identical (checked
//! at compile time below and against the headers by the tests), but the
//! Rust types require their natural alignment (8 for
//! [`PvclockVcpuTimeInfo`], 4 for [`PvclockWallClock`]).  Guests place the
//! areas aligned, but msr.rst only promises 4-byte alignment of the
//! registered address, so a host must copy an area out of guest memory
//! (e.g. with `zerocopy::FromBytes::read_from_bytes`) rather than
//! reinterpret it in place.
//!
//! # The conversion
//!
//! Nanoseconds = ((TSC delta shifted by `tsc_shift`) * `tsc_to_system_mul`)
//! / 2^32: a 32.32 fixed-point multiplier whose shift keeps the product in
//! range.  The host picks shift and multiplier with [`time_scale`]; the
//! guest applies them with [`scale_delta`].

use core::mem::align_of;

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// [`PvclockVcpuTimeInfo::flags`] bit: readings from different vCPUs
    /// are globally monotonic, so the guest need not enforce it itself
    /// (only meaningful with `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`).
    PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
    /// [`PvclockVcpuTimeInfo::flags`] bit: the host paused the guest, so
    /// watchdogs should not count the gap as a lockup.
    PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;
    /// Former flag that broke the ABI; a host must not set it and a guest
    /// must not act on it.  Kept only so the value is never reused.
    PVCLOCK_COUNTS_FROM_ZERO: u8 = 1 << 2;
}

abi_struct! {
    /// The per-vCPU time area registered with `MSR_KVM_SYSTEM_TIME_NEW`
    /// (Linux `struct pvclock_vcpu_time_info`, 32 bytes).
    ///
    /// The host makes `version` odd before it changes the other fields and even
    /// again afterwards; a reader copies the fields between two reads of the
    /// same even version.
    #[derive(Default)]
    pub struct PvclockVcpuTimeInfo {
        /// The update sequence counter.
        pub version: u32,
        /// Reserved.
        pub pad0: u32,
        /// The vCPU's TSC at the moment `system_time` was sampled.
        pub tsc_timestamp: u64,
        /// Host monotonic time, including sleep, in nanoseconds, at
        /// `tsc_timestamp`.
        pub system_time: u64,
        /// The 32.32 fixed-point nanoseconds-per-(shifted)-tick multiplier.
        pub tsc_to_system_mul: u32,
        /// Binary shift applied to a TSC delta before the multiplication:
        /// left if positive, right if negative.
        pub tsc_shift: i8,
        /// `PVCLOCK_*` flag bits.
        pub flags: u8,
        /// Reserved.
        pub pad: [u8; 2],
    }
}

impl PvclockVcpuTimeInfo {
    /// An all-zero area, usable in `static` initialisers.
    pub const fn zeroed() -> Self {
        Self {
            version: 0,
            pad0: 0,
            tsc_timestamp: 0,
            system_time: 0,
            tsc_to_system_mul: 0,
            tsc_shift: 0,
            flags: 0,
            pad: [0; 2],
        }
    }

    /// The kvmclock time in nanoseconds at TSC value `tsc`, computed from
    /// this (consistent) copy of the area; see [`pvclock_read_cycles`].
    pub const fn nsec_at(&self, tsc: u64) -> u64 {
        pvclock_read_cycles(self, tsc)
    }

    /// Whether the host set [`PVCLOCK_TSC_STABLE_BIT`].
    pub const fn is_tsc_stable(&self) -> bool {
        self.flags & PVCLOCK_TSC_STABLE_BIT != 0
    }

    /// Whether the host set [`PVCLOCK_GUEST_STOPPED`].
    pub const fn is_guest_stopped(&self) -> bool {
        self.flags & PVCLOCK_GUEST_STOPPED != 0
    }
}

const _: () = assert!(align_of::<PvclockVcpuTimeInfo>() == 8);
assert_layout!(PvclockVcpuTimeInfo, size 32, { version: 0, pad0: 4, tsc_timestamp: 8, system_time: 16, tsc_to_system_mul: 24, tsc_shift: 28, flags: 29, pad: 30 });

abi_struct! {
    /// The wall clock area filled in on each write of `MSR_KVM_WALL_CLOCK_NEW`
    /// (Linux `struct pvclock_wall_clock`, 12 bytes): the wall-clock time at
    /// which kvmclock read zero.  Current time is this plus a kvmclock reading.
    #[derive(Default)]
    pub struct PvclockWallClock {
        /// The update sequence counter, as in [`PvclockVcpuTimeInfo`].
        pub version: u32,
        /// Seconds since the Unix epoch.
        pub sec: u32,
        /// Nanoseconds within that second.
        pub nsec: u32,
    }
}

impl PvclockWallClock {
    /// An all-zero area, usable in `static` initialisers.
    pub const fn zeroed() -> Self {
        Self {
            version: 0,
            sec: 0,
            nsec: 0,
        }
    }
}

const _: () = assert!(align_of::<PvclockWallClock>() == 4);
assert_layout!(PvclockWallClock, size 12, { version: 0, sec: 4, nsec: 8 });

/// Whether a `version` value read from a pvclock or steal-time area means
/// the host is in the middle of an update (odd), so the copy must be
/// retried.
pub const fn is_update_in_progress(version: u32) -> bool {
    version & 1 != 0
}

/// Converts a TSC delta to nanoseconds: shift `delta` by `shift` (left if
/// non-negative, right if negative), multiply by `mul_frac` and keep bits
/// 32 to 95 of the 96-bit product.
///
/// This is Linux `pvclock_scale_delta()`.  For shifts of 64 or more in
/// either direction, which C leaves undefined and no sane host sends, it
/// uses the count modulo 64 as the x86-64 shift instructions the kernel
/// compiles to do, so a guest and this function still agree (and neither
/// panics).
pub const fn scale_delta(delta: u64, mul_frac: u32, shift: i8) -> u64 {
    let shifted = if shift < 0 {
        delta.wrapping_shr(shift.unsigned_abs() as u32)
    } else {
        delta.wrapping_shl(shift as u32)
    };
    mul_u64_u32_shr32(shifted, mul_frac)
}

/// Bits 32 to 95 of `value * multiplier`, from two 32x32-bit products so
/// that no 128-bit arithmetic is needed.
const fn mul_u64_u32_shr32(value: u64, multiplier: u32) -> u64 {
    let multiplier = multiplier as u64;
    let high_part = (value >> 32) * multiplier;
    let low_part = ((value & 0xffff_ffff) * multiplier) >> 32;
    // high_part <= (2^32 - 1)^2 = 2^64 - 2^33 + 1 and low_part < 2^32, so
    // the sum cannot overflow; wrapping_add merely avoids a needless check.
    high_part.wrapping_add(low_part)
}

/// The kvmclock time in nanoseconds at TSC value `tsc` (Linux
/// `__pvclock_read_cycles()`).
///
/// Like the C, it uses wrapping arithmetic: a `tsc` before
/// `tsc_timestamp` yields a huge delta rather than a panic, exactly as a
/// Linux guest would compute it.
pub const fn pvclock_read_cycles(src: &PvclockVcpuTimeInfo, tsc: u64) -> u64 {
    let delta = tsc.wrapping_sub(src.tsc_timestamp);
    let offset = scale_delta(delta, src.tsc_to_system_mul, src.tsc_shift);
    src.system_time.wrapping_add(offset)
}

/// Chooses `(tsc_shift, tsc_to_system_mul)` so that [`scale_delta`] turns
/// ticks of a `base_hz` clock into ticks of a `scaled_hz` clock, as Linux
/// `kvm_get_time_scale()` does (KVM calls it with the TSC frequency as
/// `base_hz` and 10^9 as `scaled_hz` to fill [`PvclockVcpuTimeInfo`]).
///
/// First the base frequency is halved (shift decremented) until it fits 32
/// bits and is at most twice the scaled frequency; then the base is
/// doubled, or the scaled frequency halved, (shift incremented) until the
/// scaled frequency fits 32 bits and is below the base.  The multiplier is
/// then the ratio scaled/base as a 0.32 fraction; the ratio lies in
/// [1/2, 1) up to rounding, so the multiplier keeps 31 or 32 significant
/// bits.
///
/// The shift is always in -62..=64; it is 64 only for absurd ratios such
/// as `time_scale(u64::MAX, 1)`, which [`scale_delta`] then treats like
/// the kernel does (as a shift by 0).
///
/// Like the C, `2 * scaled_hz` wraps for `scaled_hz >= 2^63`.  For inputs
/// on which Linux would loop forever — `base_hz == 0`, `scaled_hz == 0`
/// and `scaled_hz == 2^63` — this returns `(0, 0)`, a clock that stands
/// still.
pub const fn time_scale(scaled_hz: u64, base_hz: u64) -> (i8, u32) {
    if base_hz == 0 || scaled_hz.wrapping_mul(2) == 0 {
        return (0, 0);
    }
    // Bounds: the first loop halves the base at most 63 times (it stays
    // >= 1 because 2 * scaled is not zero), and a base of 1 makes the second
    // loop run at least once, so the shift ends >= -62.  The second loop
    // halves `scaled` at most 32 times to fit 32 bits, doubles the base at
    // most 31 times, and once the base has bit 31 set one more halving of
    // `scaled` ends it: the shift ends <= 64.  Both fit an i8.
    let mut shift: i8 = 0;
    let mut base = base_hz;
    let mut scaled = scaled_hz;
    while base > scaled.wrapping_mul(2) || base > u32::MAX as u64 {
        base >>= 1;
        shift -= 1;
    }
    let mut base32 = base as u32;
    while base32 as u64 <= scaled || scaled > u32::MAX as u64 {
        if scaled > u32::MAX as u64 || base32 & (1 << 31) != 0 {
            scaled >>= 1;
        } else {
            base32 <<= 1;
        }
        shift += 1;
    }
    // Here scaled < base32 < 2^32, so the 0.32 quotient fits in 32 bits.
    let multiplier = (scaled << 32) / base32 as u64;
    (shift, multiplier as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_delta_by_one_half() {
        // mul_frac = 2^31 is 0.5.
        assert_eq!(scale_delta(1000, 1 << 31, 0), 500);
        assert_eq!(scale_delta(1000, 1 << 31, 1), 1000);
        assert_eq!(scale_delta(1000, 1 << 31, -1), 250);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, 0), 0xffff_fffe_ffff_ffff);
    }

    #[test]
    fn scale_delta_masks_oversized_shifts_like_x86() {
        assert_eq!(
            scale_delta(1 << 40, 1 << 31, 64),
            scale_delta(1 << 40, 1 << 31, 0)
        );
        assert_eq!(
            scale_delta(1 << 40, 1 << 31, -128),
            scale_delta(1 << 40, 1 << 31, 0)
        );
        assert_eq!(
            scale_delta(1 << 40, 1 << 31, 127),
            scale_delta(1 << 40, 1 << 31, 63)
        );
    }

    #[test]
    fn time_scale_for_a_2ghz_tsc() {
        // 1 GHz from 2 GHz: exactly one half, no shift needed beyond the
        // normalisation of the base to at most twice the target.
        assert_eq!(time_scale(1_000_000_000, 2_000_000_000), (0, 1 << 31));
        let (shift, mul) = time_scale(1_000_000_000, 3_000_000_000);
        assert_eq!(scale_delta(3_000_000_000, mul, shift), 999_999_999);
    }

    #[test]
    fn time_scale_refuses_inputs_linux_loops_on() {
        assert_eq!(time_scale(1_000_000_000, 0), (0, 0));
        assert_eq!(time_scale(0, 1_000_000_000), (0, 0));
        assert_eq!(time_scale(1 << 63, 1_000_000_000), (0, 0));
    }

    #[test]
    fn time_scale_shift_extremes() {
        assert_eq!(time_scale(u64::MAX, 1).0, 64);
        assert_eq!(time_scale(1, u64::MAX).0, -62);
    }

    #[test]
    fn nsec_at_adds_scaled_delta_to_system_time() {
        let info = PvclockVcpuTimeInfo {
            tsc_timestamp: 10_000,
            system_time: 5_000_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            ..PvclockVcpuTimeInfo::zeroed()
        };
        assert_eq!(info.nsec_at(10_000), 5_000_000);
        assert_eq!(info.nsec_at(12_000), 5_002_000);
        // A TSC before the timestamp wraps, as in C.
        assert_eq!(
            info.nsec_at(9_999),
            5_000_000u64.wrapping_add(scale_delta(u64::MAX, 1 << 31, 1))
        );
    }

    #[test]
    fn flags_and_version_helpers() {
        let info = PvclockVcpuTimeInfo {
            flags: PVCLOCK_TSC_STABLE_BIT,
            ..PvclockVcpuTimeInfo::default()
        };
        assert!(info.is_tsc_stable());
        assert!(!info.is_guest_stopped());
        assert!(is_update_in_progress(3));
        assert!(!is_update_in_progress(4));
        assert_eq!(PvclockWallClock::zeroed(), PvclockWallClock::default());
    }
}
