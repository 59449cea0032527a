// SPDX-License-Identifier: GPL-2.0

//! pvrs_hypercall: the KVM paravirtual interface, seen from the guest.
//!
//! At load it finds the KVM CPUID leaves (Documentation/virt/kvm/x86/cpuid.rst),
//! reads the signature, the feature bits and the hints, and logs them in one
//! line that starts with `pvrs:`. On KVM it chooses the hypercall
//! instruction (VMCALL or VMMCALL) and offers the selftest interface
//! `/sys/kernel/debug/pvrs/hypercall` (see `selftest.rs`). On a host that is
//! not KVM it says so and loads anyway, so that the same boot can compare
//! with and without KVM.

use kernel::{c_str, debugfs, prelude::*};

/// The guest/host ABI, compiled from the same files as the `pvrs-abi` crate.
#[path = "../abi/src/modules.rs"]
pub mod abi;
/// The hypercall API, shared as source with other pvrs modules.
#[path = "api.rs"]
pub mod hypercall;
pub mod selftest;

use hypercall::{
    cpuid::Cpu,
    detect::{self, Probe},
    kvm::Kvm,
};

module! {
    type: PvrsHypercall,
    name: "pvrs_hypercall",
    author: "pvrs maintainers",
    description: "KVM hypercall interface and PV feature detection, in Rust",
    license: "GPL",
}

struct PvrsHypercall {
    kvm: Option<Kvm>,
    _debugfs: Option<debugfs::Dir>,
}

impl kernel::Module for PvrsHypercall {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let probe = detect::probe(&Cpu);
        let kvm = match &probe {
            Probe::Kvm(iface) => {
                pr_info!("pvrs: KVM detected: {}\n", iface);
                Some(Kvm::new(iface, detect::vendor(&Cpu)))
            }
            Probe::OtherHypervisor(other) => {
                pr_info!("pvrs: no KVM: hypervisor {}\n", other);
                None
            }
            Probe::NoHypervisor => {
                pr_info!("pvrs: no KVM: no hypervisor\n");
                None
            }
        };
        if let Some(kvm) = &kvm {
            pr_info!("pvrs: hypercalls use {}\n", kvm.instruction().name());
        }
        // The selftest interface is a debugging aid: without debugfs the
        // module still works.
        let dir = match selftest::Selftest::new(kvm).and_then(|state| {
            let mut dir = debugfs::Dir::new(c_str!("pvrs"))?;
            dir.add_text_file(c_str!("hypercall"), 0o600, state)?;
            Ok(dir)
        }) {
            Ok(dir) => Some(dir),
            Err(e) => {
                pr_warn!("pvrs: no selftest interface in debugfs ({:?})\n", e);
                None
            }
        };
        Ok(PvrsHypercall { kvm, _debugfs: dir })
    }
}

impl Drop for PvrsHypercall {
    fn drop(&mut self) {
        pr_info!(
            "pvrs: hypercall interface unloaded (KVM was {})\n",
            if self.kvm.is_some() {
                "present"
            } else {
                "absent"
            }
        );
    }
}
