// SPDX-License-Identifier: GPL-2.0

//! pvrs_balloon: a virtio memory balloon driver in Rust (virtio 1.2, 5.5).
//!
//! The device asks for a number of pages (`num_pages` in its configuration
//! space); the driver moves toward it in batches of up to 256 page frame
//! numbers: inflating takes pages from the kernel and hands their numbers to
//! the host on the inflate queue, deflating tells the host on the deflate
//! queue and gives the pages back to the kernel. After each batch the
//! driver writes the balloon's size to `actual`.
//!
//! - Without `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`, ballooned pages are taken off
//!   the kernel's managed pages (`MemTotal` drops); with it, they stay
//!   counted (`MemAvailable` drops) and an OOM notifier deflates up to 256
//!   pages each time the kernel would otherwise kill a task.
//! - With `VIRTIO_BALLOON_F_STATS_VQ`, the driver keeps one statistics buffer
//!   with the device; each time the device returns it, the driver refills it
//!   with fresh numbers and hands it back.
//! - `VIRTIO_BALLOON_F_MUST_TELL_HOST`: deflated pages are always reported
//!   to the host before the kernel reuses them, offered or not.
//! - Free page hinting and reporting are not offered (see `balloon/README.md`).

use kernel::{c_str, prelude::*, virtio};

#[path = "../abi/src/modules.rs"]
/// The guest/host ABI, compiled from the same files as the `pvrs-abi` crate.
pub mod abi;
pub mod driver;

module! {
    type: PvrsBalloonModule,
    name: "pvrs_balloon",
    author: "pvrs maintainers",
    description: "virtio memory balloon driver, in Rust",
    license: "GPL",
}

struct PvrsBalloonModule {
    _registration: virtio::Registration<driver::VirtioBalloon>,
}

impl kernel::Module for PvrsBalloonModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registration = virtio::Registration::register(module)?;
        pr_info!(
            "pvrs: balloon: driver {:?} registered\n",
            c_str!("pvrs_balloon")
        );
        Ok(Self {
            _registration: registration,
        })
    }
}
