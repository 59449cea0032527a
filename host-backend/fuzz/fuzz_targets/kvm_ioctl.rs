//! Fuzzes hv-core's KVM API parsers the way /dev/pvrs uses them: an ioctl
//! command on a file kind through `classify` and the matching decoders,
//! and the kvm_run writers and readers; the input format and the checked
//! properties are in hv-core/tests/common/kvm_ioctl_harness.rs (shared
//! with the stable corpus replay, hv-core/tests/kvm_ioctl_corpus.rs).
#![no_main]

#[path = "../../hv-core/tests/common/kvm_ioctl_harness.rs"]
mod kvm_ioctl_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvm_ioctl_harness::run(data));
