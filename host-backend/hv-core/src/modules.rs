// The module tree of hv-core, shared by the host crate (`lib.rs`) and the
// kernel module (`#[path]`-included).  Keep it free of crate-level
// attributes.
pub mod paging;
#[macro_use]
mod pinned;
pub mod asid;
pub mod msr;
pub mod svm;
pub mod vendor;
pub mod kvm_api;
pub mod memslot;
pub mod npt;
pub mod cpuid;
pub mod x86;
pub mod regs;
pub mod vcpu;
pub mod irqchip;
pub mod supported_cpuid;
pub mod pv;
