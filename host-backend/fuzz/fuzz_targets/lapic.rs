//! Fuzzes hv-core's local APIC with sequences of register, MSR, timer
//! and message steps; the input format and the invariants are in
//! hv-core/tests/common/lapic_driver.rs (shared with the proptest and the
//! corpus replay of hv-core/tests/lapic.rs).
#![no_main]

#[path = "../../hv-core/tests/common/lapic_driver.rs"]
mod lapic_driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| lapic_driver::run(data));
