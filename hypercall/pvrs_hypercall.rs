// SPDX-License-Identifier: GPL-2.0

//! pvrs_hypercall: the KVM paravirtual interface, seen from the guest.
//!
//! At load it finds the KVM CPUID leaves (Documentation/virt/kvm/x86/cpuid.rst),
//! reads the signature, the feature bits and the hints, and logs them in one
//! line that starts with `pvrs:`. On a host that is not KVM it says so and
//! loads anyway, so that the same boot can compare with and without KVM.

use kernel::prelude::*;

/// The guest/host ABI, compiled from the same files as the `pvrs-abi` crate.
#[path = "../abi/src/modules.rs"]
pub mod abi;
pub mod cpuid;
pub mod detect;

use detect::Probe;

module! {
    type: PvrsHypercall,
    name: "pvrs_hypercall",
    author: "pvrs maintainers",
    description: "KVM hypercall interface and PV feature detection, in Rust",
    license: "GPL",
}

struct PvrsHypercall {
    probe: Probe,
}

impl kernel::Module for PvrsHypercall {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let probe = detect::probe(&cpuid::Cpu);
        match &probe {
            Probe::Kvm(kvm) => pr_info!("pvrs: KVM detected: {}\n", kvm),
            Probe::OtherHypervisor(other) => {
                pr_info!("pvrs: no KVM: hypervisor {}\n", other)
            }
            Probe::NoHypervisor => pr_info!("pvrs: no KVM: no hypervisor\n"),
        }
        Ok(PvrsHypercall { probe })
    }
}

impl Drop for PvrsHypercall {
    fn drop(&mut self) {
        let kvm = matches!(self.probe, Probe::Kvm(_));
        pr_info!("pvrs: hypercall interface unloaded (KVM was {})\n", if kvm { "present" } else { "absent" });
    }
}
