//! Fuzzes hv-core's vCPU exit handler; the input format and the checks
//! are in hv-core/tests/common/vcpu_exit_driver.rs (shared with the
//! proptest and the corpus replay of hv-core/tests/vcpu_exit.rs).
#![no_main]

#[path = "../../hv-core/tests/common/vcpu_exit_driver.rs"]
mod vcpu_exit_driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| vcpu_exit_driver::run(data));
