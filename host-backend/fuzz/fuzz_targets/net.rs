//! Fuzzes virtio-net receive and transmit buffers (virtio 1.2 §5.1.6); see pvrs_vmm::fuzzing::net.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvrs_vmm::fuzzing::net(data));
