// SPDX-License-Identifier: GPL-2.0

// The pvrs hypercall API, as a module tree that other pvrs Rust kernel code
// compiles in with
//
//     #[path = "../abi/src/modules.rs"]
//     pub mod abi;
//     #[path = "../hypercall/api.rs"]
//     pub mod hypercall;
//
// (`abi` must be a module of the crate root, as here in pvrs_hypercall.)
// Rust kernel modules in 6.12 cannot call into each other, so the API is
// shared as source; its state (the chosen instruction and the features) is
// per module, set up once by `kvm::Kvm::detect()`.

pub mod cpuid;
pub mod detect;
pub mod kvm;
