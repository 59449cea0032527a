//! Replays the corpora of the `pic`, `pit` and `irqchip_vm` fuzz targets
//! (host-backend/fuzz/corpus/{pic,pit,irqchip_vm}/) through the same harness on the
//! stable toolchain, and runs the harness on random inputs.

#[path = "common/irqchip_harness.rs"]
mod irqchip_harness;
#[path = "common/irqchip_vm_harness.rs"]
mod irqchip_vm_harness;

use std::path::Path;

use proptest::prelude::*;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
}

#[test]
fn pic_corpus() {
    replay("pic", irqchip_harness::run_pic);
}

#[test]
fn pit_corpus() {
    replay("pit", irqchip_harness::run_pit);
}

#[test]
fn irqchip_vm_corpus() {
    replay("irqchip_vm", irqchip_vm_harness::run);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn pic_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        irqchip_harness::run_pic(&data);
    }

    #[test]
    fn pit_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        irqchip_harness::run_pit(&data);
    }

    #[test]
    fn irqchip_vm_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..800)) {
        irqchip_vm_harness::run(&data);
    }
}
