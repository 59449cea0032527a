//! Fuzzes virtio-balloon page lists and statistics (virtio 1.2 §5.5.6); see pvrs_vmm::fuzzing::balloon.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvrs_vmm::fuzzing::balloon(data));
