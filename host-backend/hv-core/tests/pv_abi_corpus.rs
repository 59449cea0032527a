//! Replays the corpus of the `pv_abi` fuzz target
//! (host-backend/fuzz/corpus/pv_abi/) through the same harness on the
//! stable toolchain, and runs the harness on random inputs.

#[path = "common/pv_abi_harness.rs"]
mod pv_abi_harness;

use std::path::Path;

use proptest::prelude::*;

#[test]
fn pv_abi_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pv_abi");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        pv_abi_harness::run(&std::fs::read(entry.unwrap().path()).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn pv_abi_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        pv_abi_harness::run(&data);
    }
}
