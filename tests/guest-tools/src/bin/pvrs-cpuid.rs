//! Prints the hypervisor CPUID leaves as user space reads them, in the same
//! `key=value` form that the pvrs_hypercall module logs, so that a guest
//! script can compare the two.
//!
//! Output, one line: `signature=KVMKVMKVM base=0x40000000 max_leaf=0x40000001
//! features=0x01007afb hints=0x00000000 names=clocksource,...`, or
//! `no-hypervisor`, or `signature=<other> ...` for a hypervisor that is not KVM.

use pvrs_abi::cpuid::Features;
use pvrs_guest_tools::cpuid::read_hypervisor_leaves;

fn main() {
    match read_hypervisor_leaves() {
        None => println!("no-hypervisor"),
        Some(h) => {
            let names: Vec<&str> = Features(h.features).names().collect();
            println!(
                "signature={} base={:#010x} max_leaf={:#010x} features={:#010x} hints={:#010x} names={}",
                h.signature_text(),
                h.base,
                h.max_leaf,
                h.features,
                h.hints,
                if names.is_empty() { "-".to_string() } else { names.join(",") }
            );
        }
    }
}
