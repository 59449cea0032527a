//! Replays the corpus of the `kvm_ioctl` fuzz target
//! (host-backend/fuzz/corpus/kvm_ioctl/) through the same harness on the
//! stable toolchain, so every input the fuzzer kept stays a regression
//! test, and adds a proptest run of the harness on random inputs.

#[path = "common/kvm_ioctl_harness.rs"]
mod kvm_ioctl_harness;

use std::path::Path;

use proptest::prelude::*;

#[test]
fn kvm_ioctl_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/kvm_ioctl");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        kvm_ioctl_harness::run(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn kvm_ioctl_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        kvm_ioctl_harness::run(&data);
    }
}
