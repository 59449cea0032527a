// SPDX-License-Identifier: GPL-2.0

//! pvrs_virtio_net: a virtio network driver in Rust (virtio 1.2, 5.1).
//!
//! - One queue pair per vCPU (`VIRTIO_NET_F_MQ`, up to 8), each with a NAPI
//!   context: receive buffers of 4 KiB, a
//!   packet spread over several with `VIRTIO_NET_F_MRG_RXBUF` (copied into
//!   one skb); transmit of the skb's linear part and fragments after the
//!   virtio-net header, freed when the device has sent them.
//! - Offloads: `CSUM`/`GUEST_CSUM`, `HOST_TSO4/6` (+ECN), `GUEST_TSO4/6`
//!   (+ECN, needs mergeable buffers), from and to the header by the
//!   kernel's own `virtio_net_hdr_{from,to}_skb`.
//! - `MAC`, `MTU` (the device's maximum), `STATUS` (carrier follows the
//!   link bit on configuration interrupts).
//! - `CTRL_VQ`: `CTRL_RX` promiscuous and all-multicast, `CTRL_MAC_ADDR`.
//! - Device input is checked: short buffers, buffer counts beyond 18, a
//!   packet announcing more buffers than were used, inconsistent offload
//!   headers: dropped and counted (rx_errors), logged up to 20 times.
//!   Used lengths beyond a buffer are clamped and counted by the queue.
//! - `CTRL_MAC` TABLE_SET: the stack's unicast and multicast lists (40 each).
//! - Not done: VLAN filtering, RSS, XDP.

#![recursion_limit = "256"]

use kernel::{c_str, prelude::*, virtio};

#[path = "../abi/src/modules.rs"]
/// The guest/host ABI, compiled from the same files as the `pvrs-abi` crate.
pub mod abi;
pub mod driver;

module! {
    type: PvrsVirtioNetModule,
    name: "pvrs_virtio_net",
    author: "pvrs maintainers",
    description: "virtio network driver, in Rust",
    license: "GPL",
}

struct PvrsVirtioNetModule {
    _registration: virtio::Registration<driver::VirtioNet>,
}

impl kernel::Module for PvrsVirtioNetModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registration = virtio::Registration::register(module)?;
        pr_info!(
            "pvrs: virtio_net: driver {:?} registered\n",
            c_str!("pvrs_virtio_net")
        );
        Ok(Self {
            _registration: registration,
        })
    }
}
