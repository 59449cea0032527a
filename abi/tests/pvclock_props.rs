//! Property tests of the pvclock arithmetic against exact 128-bit
//! reference computations and against the error bounds the fixed-point
//! format allows.  All arithmetic here is integer.

use proptest::prelude::*;
use pvrs_abi::pvclock::{scale_delta, time_scale, PvclockVcpuTimeInfo};

/// `pvclock_scale_delta()` written as plainly as possible with 128-bit
/// intermediates, for shifts where C defines it (|shift| < 64).
fn scale_delta_reference(delta: u64, mul_frac: u32, shift: i8) -> u64 {
    let shifted = if shift < 0 {
        delta >> -shift
    } else {
        // C's `delta <<= shift` on a u64 drops the bits shifted out.
        ((u128::from(delta) << shift) & u128::from(u64::MAX)) as u64
    };
    // mulq keeps 128 bits; shrd $32 keeps bits 32..=95 of them.
    ((u128::from(shifted) * u128::from(mul_frac)) >> 32) as u64
}

/// How far apart `got` and `want` are, relative to `want`, as a
/// comparison with `want / 2^log2_denominator` done in integers.
fn within_relative(got: u64, want: u64, log2_denominator: u32) -> bool {
    u128::from(got.abs_diff(want)) << log2_denominator <= u128::from(want)
}

/// Shifts for the exact comparison.
///
/// Linux's `kvm_get_time_scale()` (and [`time_scale`]) produces shifts
/// from -62 to 64 for arbitrary nonzero frequencies, but C defines
/// `pvclock_scale_delta()` only for shifts whose magnitude is below 64 (64
/// needs a ratio of about 2^64 between the frequencies), and every pair of
/// frequencies KVM actually uses (kHz-resolution TSC rates against
/// 10^9 ns/s, in either direction) lands well inside -63..=63.  For other
/// shifts the crate follows the x86-64 shift instructions;
/// `scale_delta_masks_like_x86` covers them.
fn defined_shift() -> impl Strategy<Value = i8> {
    -63i8..=63
}

/// Nonzero frequencies, with the extremes sampled as often as the middle.
fn any_frequency() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..1 << 20, 1u64.., u64::MAX - (1 << 20)..=u64::MAX]
}

proptest! {
    #[test]
    fn scale_delta_is_exact(delta in any::<u64>(), mul_frac in any::<u32>(), shift in defined_shift()) {
        prop_assert_eq!(
            scale_delta(delta, mul_frac, shift),
            scale_delta_reference(delta, mul_frac, shift)
        );
    }

    /// Small deltas are the common case (nanoseconds since the last host
    /// update); sample them densely too.
    #[test]
    fn scale_delta_is_exact_for_small_deltas(
        delta in 0u64..1 << 40,
        mul_frac in any::<u32>(),
        shift in -8i8..=8,
    ) {
        prop_assert_eq!(
            scale_delta(delta, mul_frac, shift),
            scale_delta_reference(delta, mul_frac, shift)
        );
    }

    /// For shifts of 64 and more, C is undefined; the x86-64 `shl`/`shr`
    /// the kernel compiles to use the count modulo 64.
    #[test]
    fn scale_delta_masks_like_x86(delta in any::<u64>(), mul_frac in any::<u32>(), shift in any::<i8>()) {
        let count = u32::from(shift.unsigned_abs()) % 64;
        let shifted = if shift < 0 { delta >> count } else { delta << count };
        prop_assert_eq!(
            scale_delta(delta, mul_frac, shift),
            scale_delta_reference(shifted, mul_frac, 0)
        );
    }

    /// For every input Linux terminates on, the shift stays in the range
    /// documented on `time_scale` and the multiplier keeps 31 or 32
    /// significant bits (the ratio it encodes is at least 1/2 up to one
    /// unit of rounding).
    #[test]
    fn time_scale_output_ranges(scaled_hz in any_frequency(), base_hz in any_frequency()) {
        prop_assume!(scaled_hz != 1 << 63);
        let (shift, mul) = time_scale(scaled_hz, base_hz);
        prop_assert!((-62..=64).contains(&shift), "shift {}", shift);
        prop_assert!(mul >= (1 << 31) - 1, "mul {:#x}", mul);
    }

    /// One second of base ticks scales to the scaled frequency.
    ///
    /// Bound for both frequencies in [2^20, 2^40]: the result passes
    /// through five truncations — the halved base (at least 2^20, or exact),
    /// the right-shifted delta (likewise), the halved scaled frequency (at
    /// least 2^30 whenever it is halved), the multiplier (at least 2^31 - 1)
    /// and the final product (about scaled_hz >= 2^20).  Each loses less
    /// than one unit of its value, so the total relative error is below
    /// 3 * 2^-20 + 2 * 2^-30 < 2^-18.
    #[test]
    fn time_scale_round_trip_general(scaled_hz in 1u64 << 20..=1 << 40, base_hz in 1u64 << 20..=1 << 40) {
        let (shift, mul) = time_scale(scaled_hz, base_hz);
        let got = scale_delta(base_hz, mul, shift);
        prop_assert!(within_relative(got, scaled_hz, 18), "{} Hz -> {} Hz gave {}", base_hz, scaled_hz, got);
    }

    /// The case kvmclock is built on: a TSC between 1 MHz and 10 GHz, in
    /// whole kHz as KVM tracks it, converted to nanoseconds.
    ///
    /// Here the scaled frequency is never halved and the halved base keeps
    /// at least 10^9 (about 2^29.9), so the truncations cost below
    /// 10^-9 (base) + 10^-9 (delta) + 2^-31 (multiplier) + 10^-9 (result),
    /// under 3.5 * 10^-9: at most 3 ns per second, checked as 4.
    #[test]
    fn time_scale_round_trip_kvmclock(tsc_khz in 1_000u64..=10_000_000) {
        const NSEC_PER_SEC: u64 = 1_000_000_000;
        let tsc_hz = tsc_khz * 1000;
        let (shift, mul) = time_scale(NSEC_PER_SEC, tsc_hz);
        let one_second = scale_delta(tsc_hz, mul, shift);
        prop_assert!(one_second.abs_diff(NSEC_PER_SEC) <= 4, "{} kHz: {} ns", tsc_khz, one_second);
    }

    /// Reading a later TSC never gives an earlier time, as long as neither
    /// the shifted delta nor the final sum overflows 64 bits (which would
    /// take centuries at real frequencies).
    #[test]
    fn nsec_at_is_monotonic_in_tsc(
        tsc_timestamp in any::<u64>(),
        system_time in any::<u64>(),
        tsc_to_system_mul in any::<u32>(),
        tsc_shift in defined_shift(),
        later in any::<u64>(),
        earlier_fraction in any::<u64>(),
    ) {
        let later = later >> tsc_shift.max(0);
        let earlier = if later == 0 { 0 } else { earlier_fraction % (later + 1) };
        let headroom = u64::MAX - scale_delta(later, tsc_to_system_mul, tsc_shift);
        let info = PvclockVcpuTimeInfo {
            tsc_timestamp,
            system_time: system_time.min(headroom),
            tsc_to_system_mul,
            tsc_shift,
            ..PvclockVcpuTimeInfo::zeroed()
        };
        let at_earlier = info.nsec_at(tsc_timestamp.wrapping_add(earlier));
        let at_later = info.nsec_at(tsc_timestamp.wrapping_add(later));
        prop_assert!(at_earlier <= at_later, "{} > {}", at_earlier, at_later);
        prop_assert!(info.nsec_at(tsc_timestamp) == info.system_time);
    }

    /// With parameters the host computes for a real TSC, time advances by
    /// the elapsed ticks' worth of nanoseconds from the host's sample.
    #[test]
    fn nsec_at_tracks_elapsed_time(
        tsc_khz in 1_000u64..=10_000_000,
        tsc_timestamp in any::<u64>(),
        system_time in 0u64..1 << 62,
        elapsed_ms in 0u64..=10_000,
    ) {
        let tsc_hz = tsc_khz * 1000;
        let (tsc_shift, tsc_to_system_mul) = time_scale(1_000_000_000, tsc_hz);
        let info = PvclockVcpuTimeInfo {
            tsc_timestamp,
            system_time,
            tsc_to_system_mul,
            tsc_shift,
            ..PvclockVcpuTimeInfo::zeroed()
        };
        let ticks = tsc_khz * elapsed_ms;
        let elapsed_ns = info.nsec_at(tsc_timestamp.wrapping_add(ticks)) - system_time;
        // The base and the multiplier are off by less than 10^-9 and 2^-31
        // of their values (together under 4 * 10^-9 relative); the
        // right-shifted delta and the final product each lose less than
        // one nanosecond (a shifted tick lasts at most 1 ns because the
        // base is halved only down to 10^9 Hz).
        let want = elapsed_ms * 1_000_000;
        prop_assert!(elapsed_ns.abs_diff(want) <= want / 250_000_000 + 2, "{} vs {}", elapsed_ns, want);
    }
}
