//! virtio-net: the network device's feature bits, configuration space, the
//! header in front of every packet, and the control virtqueue's commands
//! and structures.
//!
//! Sources: the virtio 1.2 specification, section 5.1 "Network Device"
//! (5.1.3 feature bits, 5.1.4 device configuration layout, 5.1.6 device
//! operation, 5.1.6.5 control virtqueue), and the Linux header
//! `include/uapi/linux/virtio_net.h`.  Every `#define` of the header is
//! here; every struct too, except the three variable-length RSS and hash
//! configuration messages listed below.  The transport-independent parts
//! are in [`super::virtio`].
//!
//! # The packet header
//!
//! Every packet on a receive or transmit queue starts with a header.  Its
//! length depends on the negotiated features ([`net_hdr_len`]): a modern
//! (`VIRTIO_F_VERSION_1`) device always uses [`VirtioNetHdrV1`] (12
//! bytes), or [`VirtioNetHdrV1Hash`] with [`VIRTIO_NET_F_HASH_REPORT`];
//! legacy devices use [`VirtioNetHdr`] (10 bytes) or, with
//! [`VIRTIO_NET_F_MRG_RXBUF`], [`VirtioNetHdrMrgRxbuf`], which is bit for
//! bit the same as [`VirtioNetHdrV1`].
//!
//! C declares the checksum fields of `struct virtio_net_hdr_v1` inside an
//! anonymous union with two other views (`csum.start`/`csum.offset`, and
//! `rsc.segments`/`rsc.dup_acks` for received coalesced segments).  Unions
//! cannot be read without `unsafe`, so [`VirtioNetHdrV1`] has the flat
//! `csum_start` / `csum_offset` fields and reads the RSC view through
//! [`VirtioNetHdrV1::rsc_segments`] / [`VirtioNetHdrV1::rsc_dup_acks`]; the
//! tests check that all views share the offsets.
//!
//! # The control virtqueue
//!
//! A command is one descriptor chain: a [`VirtioNetCtrlHdr`] (class and
//! command, the `VIRTIO_NET_CTRL_*` constants), the command's data, and
//! one device-writable [`VIRTIO_NET_OK`] / [`VIRTIO_NET_ERR`] byte.
//!
//! # Not mirrored
//!
//! `struct virtio_net_rss_config`, `struct virtio_net_rss_config_trailer`
//! and `struct virtio_net_hash_config` end in a variable-length byte array
//! that, in C, starts inside the struct's tail padding (and
//! `virtio_net_rss_config` even has fields after its variable-length
//! indirection table).  Their `sizeof` is not the size of any message, and
//! a Rust struct with that padding could not be converted to bytes; such a
//! message is built byte by byte, after [`VirtioNetRssConfigHdr`] for the
//! RSS one.
//!
//! # Byte order
//!
//! Multi-byte fields are little endian on the wire for modern devices
//! (`__le*`, `__virtio*`); they are plain integers here because the guest
//! and the host of pvrs are both x86-64, little endian.
//!
//! # Layout versus the C structs
//!
//! Linux declares [`VirtioNetConfig`], [`VirtioNetCtrlHdr`] and
//! [`VirtioNetCtrlMac`] `__attribute__((packed))`, but every field of them
//! is naturally aligned and none has tail padding, so plain `#[repr(C)]`
//! gives the same size and offsets (checked here and against the headers
//! by the tests); only the Rust alignment differs (4 instead of 1 for the
//! first and the last).  Configuration space is read field by field
//! through the transport and control messages are copied out of guest
//! memory, so this never matters.

use core::mem::{align_of, size_of};

use super::virtio::{has_feature, VIRTIO_F_VERSION_1};

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// Feature bit: the device handles packets with a partial checksum
    /// (checksum offload on transmit).
    VIRTIO_NET_F_CSUM: u32 = 0;
    /// Feature bit: the driver handles packets with a partial checksum
    /// (checksum offload on receive).
    VIRTIO_NET_F_GUEST_CSUM: u32 = 1;
    /// Feature bit: offloads can be reconfigured with
    /// [`VIRTIO_NET_CTRL_GUEST_OFFLOADS`].
    VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: u32 = 2;
    /// Feature bit: [`VirtioNetConfig::mtu`] is valid.
    VIRTIO_NET_F_MTU: u32 = 3;
    /// Feature bit: [`VirtioNetConfig::mac`] is valid.
    VIRTIO_NET_F_MAC: u32 = 5;
    /// Feature bit: the driver can receive TCP segmentation offload (TSO)
    /// over IPv4.
    VIRTIO_NET_F_GUEST_TSO4: u32 = 7;
    /// Feature bit: the driver can receive TSO over IPv6.
    VIRTIO_NET_F_GUEST_TSO6: u32 = 8;
    /// Feature bit: the driver can receive TSO with ECN.
    VIRTIO_NET_F_GUEST_ECN: u32 = 9;
    /// Feature bit: the driver can receive UDP fragmentation offload.
    VIRTIO_NET_F_GUEST_UFO: u32 = 10;
    /// Feature bit: the device can take TSO over IPv4.
    VIRTIO_NET_F_HOST_TSO4: u32 = 11;
    /// Feature bit: the device can take TSO over IPv6.
    VIRTIO_NET_F_HOST_TSO6: u32 = 12;
    /// Feature bit: the device can take TSO with ECN.
    VIRTIO_NET_F_HOST_ECN: u32 = 13;
    /// Feature bit: the device can take UDP fragmentation offload.
    VIRTIO_NET_F_HOST_UFO: u32 = 14;
    /// Feature bit: the driver can merge receive buffers
    /// ([`VirtioNetHdrV1::num_buffers`]).
    VIRTIO_NET_F_MRG_RXBUF: u32 = 15;
    /// Feature bit: [`VirtioNetConfig::status`] is valid.
    VIRTIO_NET_F_STATUS: u32 = 16;
    /// Feature bit: there is a control virtqueue.
    VIRTIO_NET_F_CTRL_VQ: u32 = 17;
    /// Feature bit: the control virtqueue supports [`VIRTIO_NET_CTRL_RX`]
    /// commands 0 and 1.
    VIRTIO_NET_F_CTRL_RX: u32 = 18;
    /// Feature bit: the control virtqueue supports VLAN filtering.
    VIRTIO_NET_F_CTRL_VLAN: u32 = 19;
    /// Feature bit: the control virtqueue supports [`VIRTIO_NET_CTRL_RX`]
    /// commands 2 to 5.
    VIRTIO_NET_F_CTRL_RX_EXTRA: u32 = 20;
    /// Feature bit: the driver can send gratuitous packets on request
    /// ([`VIRTIO_NET_S_ANNOUNCE`]).
    VIRTIO_NET_F_GUEST_ANNOUNCE: u32 = 21;
    /// Feature bit: several transmit/receive queue pairs with automatic
    /// receive steering.
    VIRTIO_NET_F_MQ: u32 = 22;
    /// Feature bit: the MAC address can be set through the control
    /// virtqueue.
    VIRTIO_NET_F_CTRL_MAC_ADDR: u32 = 23;
    /// Feature bit: the device provides device-level statistics
    /// ([`VIRTIO_NET_CTRL_STATS`]).
    VIRTIO_NET_F_DEVICE_STATS: u32 = 50;
    /// Feature bit: per-virtqueue notification coalescing.
    VIRTIO_NET_F_VQ_NOTF_COAL: u32 = 52;
    /// Feature bit: notification coalescing ([`VIRTIO_NET_CTRL_NOTF_COAL`]).
    VIRTIO_NET_F_NOTF_COAL: u32 = 53;
    /// Feature bit: the driver can receive UDP segmentation offload (USO)
    /// over IPv4.
    VIRTIO_NET_F_GUEST_USO4: u32 = 54;
    /// Feature bit: the driver can receive USO over IPv6.
    VIRTIO_NET_F_GUEST_USO6: u32 = 55;
    /// Feature bit: the device can take USO.
    VIRTIO_NET_F_HOST_USO: u32 = 56;
    /// Feature bit: the device reports packet hashes
    /// ([`VirtioNetHdrV1Hash`]).
    VIRTIO_NET_F_HASH_REPORT: u32 = 57;
    /// Feature bit: the driver sets [`VirtioNetHdrV1::hdr_len`] exactly.
    VIRTIO_NET_F_GUEST_HDRLEN: u32 = 59;
    /// Feature bit: receive-side scaling ([`VIRTIO_NET_CTRL_MQ_RSS_CONFIG`]).
    VIRTIO_NET_F_RSS: u32 = 60;
    /// Feature bit: extended receive segment coalescing information
    /// ([`VIRTIO_NET_HDR_F_RSC_INFO`]).
    VIRTIO_NET_F_RSC_EXT: u32 = 61;
    /// Feature bit: the device is a standby for a primary device with the
    /// same MAC address.
    VIRTIO_NET_F_STANDBY: u32 = 62;
    /// Feature bit: [`VirtioNetConfig::speed`] and
    /// [`VirtioNetConfig::duplex`] are valid.
    VIRTIO_NET_F_SPEED_DUPLEX: u32 = 63;
    /// Legacy feature bit: the device handles packets with any GSO type.
    VIRTIO_NET_F_GSO: u32 = 6;

    /// [`VirtioNetConfig::status`] bit: the link is up.
    VIRTIO_NET_S_LINK_UP: u16 = 1;
    /// [`VirtioNetConfig::status`] bit: the driver should announce itself
    /// (then acknowledge with [`VIRTIO_NET_CTRL_ANNOUNCE_ACK`]).
    VIRTIO_NET_S_ANNOUNCE: u16 = 2;

    /// RSS hash type bit: IPv4 addresses.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_RSS_HASH_TYPE_IPv4: u32 = 1 << 0;
    /// RSS hash type bit: IPv4 addresses and TCP ports.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_RSS_HASH_TYPE_TCPv4: u32 = 1 << 1;
    /// RSS hash type bit: IPv4 addresses and UDP ports.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_RSS_HASH_TYPE_UDPv4: u32 = 1 << 2;
    /// RSS hash type bit: IPv6 addresses.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_RSS_HASH_TYPE_IPv6: u32 = 1 << 3;
    /// RSS hash type bit: IPv6 addresses and TCP ports.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_RSS_HASH_TYPE_TCPv6: u32 = 1 << 4;
    /// RSS hash type bit: IPv6 addresses and UDP ports.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_RSS_HASH_TYPE_UDPv6: u32 = 1 << 5;
    /// RSS hash type bit: IPv6 addresses including extension headers.
    VIRTIO_NET_RSS_HASH_TYPE_IP_EX: u32 = 1 << 6;
    /// RSS hash type bit: as `IP_EX`, plus TCP ports.
    VIRTIO_NET_RSS_HASH_TYPE_TCP_EX: u32 = 1 << 7;
    /// RSS hash type bit: as `IP_EX`, plus UDP ports.
    VIRTIO_NET_RSS_HASH_TYPE_UDP_EX: u32 = 1 << 8;

    /// [`VirtioNetHdrV1::flags`] bit: the packet needs a checksum at
    /// `csum_start + csum_offset`.
    VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
    /// [`VirtioNetHdrV1::flags`] bit (receive): the checksum is valid.
    VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
    /// [`VirtioNetHdrV1::flags`] bit (receive): the checksum fields hold
    /// coalescing information ([`VirtioNetHdrV1::rsc_segments`]).
    VIRTIO_NET_HDR_F_RSC_INFO: u8 = 4;
    /// [`VirtioNetHdrV1::gso_type`]: not a GSO packet.
    VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
    /// [`VirtioNetHdrV1::gso_type`]: IPv4 TCP segmentation.
    VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
    /// [`VirtioNetHdrV1::gso_type`]: IPv4 UDP fragmentation.
    VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
    /// [`VirtioNetHdrV1::gso_type`]: IPv6 TCP segmentation.
    VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
    /// [`VirtioNetHdrV1::gso_type`]: IPv4 or IPv6 UDP segmentation.
    VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
    /// [`VirtioNetHdrV1::gso_type`] bit: the TCP packets carry ECN.
    VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

    /// [`VirtioNetHdrV1Hash::hash_report`]: no hash.
    VIRTIO_NET_HASH_REPORT_NONE: u16 = 0;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv4 hash.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_IPv4: u16 = 1;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv4 TCP hash.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_TCPv4: u16 = 2;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv4 UDP hash.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_UDPv4: u16 = 3;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv6 hash.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_IPv6: u16 = 4;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv6 TCP hash.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_TCPv6: u16 = 5;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv6 UDP hash.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_UDPv6: u16 = 6;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv6 hash with extension
    /// headers.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_IPv6_EX: u16 = 7;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv6 TCP hash with extension
    /// headers.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_TCPv6_EX: u16 = 8;
    /// [`VirtioNetHdrV1Hash::hash_report`]: IPv6 UDP hash with extension
    /// headers.
    #[allow(non_upper_case_globals)]
    VIRTIO_NET_HASH_REPORT_UDPv6_EX: u16 = 9;

    /// Control command acknowledgement: success.
    VIRTIO_NET_OK: u8 = 0;
    /// Control command acknowledgement: failure.
    VIRTIO_NET_ERR: u8 = 1;

    /// Control class: receive filtering mode; the data is one byte, 0 to
    /// disable and 1 to enable.
    VIRTIO_NET_CTRL_RX: u8 = 0;
    /// [`VIRTIO_NET_CTRL_RX`] command: promiscuous mode.
    VIRTIO_NET_CTRL_RX_PROMISC: u8 = 0;
    /// [`VIRTIO_NET_CTRL_RX`] command: receive all multicast.
    VIRTIO_NET_CTRL_RX_ALLMULTI: u8 = 1;
    /// [`VIRTIO_NET_CTRL_RX`] command: receive all unicast.
    VIRTIO_NET_CTRL_RX_ALLUNI: u8 = 2;
    /// [`VIRTIO_NET_CTRL_RX`] command: receive no multicast.
    VIRTIO_NET_CTRL_RX_NOMULTI: u8 = 3;
    /// [`VIRTIO_NET_CTRL_RX`] command: receive no unicast.
    VIRTIO_NET_CTRL_RX_NOUNI: u8 = 4;
    /// [`VIRTIO_NET_CTRL_RX`] command: receive no broadcast.
    VIRTIO_NET_CTRL_RX_NOBCAST: u8 = 5;
    /// Control class: MAC address filtering.
    VIRTIO_NET_CTRL_MAC: u8 = 1;
    /// [`VIRTIO_NET_CTRL_MAC`] command: set the filter tables (two
    /// [`VirtioNetCtrlMac`] lists, unicast then multicast).
    VIRTIO_NET_CTRL_MAC_TABLE_SET: u8 = 0;
    /// [`VIRTIO_NET_CTRL_MAC`] command: set the MAC address (6 bytes).
    VIRTIO_NET_CTRL_MAC_ADDR_SET: u8 = 1;
    /// Control class: VLAN filtering; the data is a 2-byte VLAN ID.
    VIRTIO_NET_CTRL_VLAN: u8 = 2;
    /// [`VIRTIO_NET_CTRL_VLAN`] command: accept a VLAN.
    VIRTIO_NET_CTRL_VLAN_ADD: u8 = 0;
    /// [`VIRTIO_NET_CTRL_VLAN`] command: filter a VLAN out.
    VIRTIO_NET_CTRL_VLAN_DEL: u8 = 1;
    /// Control class: link announcement.
    VIRTIO_NET_CTRL_ANNOUNCE: u8 = 3;
    /// [`VIRTIO_NET_CTRL_ANNOUNCE`] command: the driver has announced
    /// itself; the device clears [`VIRTIO_NET_S_ANNOUNCE`].
    VIRTIO_NET_CTRL_ANNOUNCE_ACK: u8 = 0;
    /// Control class: multiqueue and receive steering.
    VIRTIO_NET_CTRL_MQ: u8 = 4;
    /// [`VIRTIO_NET_CTRL_MQ`] command: set the number of queue pairs in use
    /// ([`VirtioNetCtrlMq`]).
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
    /// The fewest queue pairs [`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`] accepts.
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN: u16 = 1;
    /// The most queue pairs [`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`] accepts.
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX: u16 = 0x8000;
    /// [`VIRTIO_NET_CTRL_MQ`] command: configure receive-side scaling.
    VIRTIO_NET_CTRL_MQ_RSS_CONFIG: u8 = 1;
    /// [`VIRTIO_NET_CTRL_MQ`] command: configure hash reporting.
    VIRTIO_NET_CTRL_MQ_HASH_CONFIG: u8 = 2;
    /// Control class: guest offloads; the data is a 64-bit mask of
    /// `VIRTIO_NET_F_GUEST_*` feature bits.
    VIRTIO_NET_CTRL_GUEST_OFFLOADS: u8 = 5;
    /// [`VIRTIO_NET_CTRL_GUEST_OFFLOADS`] command: set the offloads.
    VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET: u8 = 0;
    /// Control class: notification coalescing.
    VIRTIO_NET_CTRL_NOTF_COAL: u8 = 6;
    /// [`VIRTIO_NET_CTRL_NOTF_COAL`] command: set transmit coalescing
    /// ([`VirtioNetCtrlCoalTx`]).
    VIRTIO_NET_CTRL_NOTF_COAL_TX_SET: u8 = 0;
    /// [`VIRTIO_NET_CTRL_NOTF_COAL`] command: set receive coalescing
    /// ([`VirtioNetCtrlCoalRx`]).
    VIRTIO_NET_CTRL_NOTF_COAL_RX_SET: u8 = 1;
    /// [`VIRTIO_NET_CTRL_NOTF_COAL`] command: set one virtqueue's
    /// coalescing ([`VirtioNetCtrlCoalVq`]).
    VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET: u8 = 2;
    /// [`VIRTIO_NET_CTRL_NOTF_COAL`] command: get one virtqueue's
    /// coalescing.
    VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET: u8 = 3;
    /// Control class: device statistics.
    VIRTIO_NET_CTRL_STATS: u8 = 8;
    /// [`VIRTIO_NET_CTRL_STATS`] command: query the supported statistics
    /// ([`VirtioNetStatsCapabilities`]).
    VIRTIO_NET_CTRL_STATS_QUERY: u8 = 0;
    /// [`VIRTIO_NET_CTRL_STATS`] command: get statistics
    /// ([`VirtioNetCtrlQueueStats`] in, replies out).
    VIRTIO_NET_CTRL_STATS_GET: u8 = 1;

    /// Statistics type mask: control virtqueue.
    VIRTIO_NET_STATS_TYPE_CVQ: u64 = 1 << 32;
    /// Statistics type mask: basic receive counters.
    VIRTIO_NET_STATS_TYPE_RX_BASIC: u64 = 1 << 0;
    /// Statistics type mask: receive checksum counters.
    VIRTIO_NET_STATS_TYPE_RX_CSUM: u64 = 1 << 1;
    /// Statistics type mask: receive GSO counters.
    VIRTIO_NET_STATS_TYPE_RX_GSO: u64 = 1 << 2;
    /// Statistics type mask: receive rate-limit counters.
    VIRTIO_NET_STATS_TYPE_RX_SPEED: u64 = 1 << 3;
    /// Statistics type mask: basic transmit counters.
    VIRTIO_NET_STATS_TYPE_TX_BASIC: u64 = 1 << 16;
    /// Statistics type mask: transmit checksum counters.
    VIRTIO_NET_STATS_TYPE_TX_CSUM: u64 = 1 << 17;
    /// Statistics type mask: transmit GSO counters.
    VIRTIO_NET_STATS_TYPE_TX_GSO: u64 = 1 << 18;
    /// Statistics type mask: transmit rate-limit counters.
    VIRTIO_NET_STATS_TYPE_TX_SPEED: u64 = 1 << 19;

    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsCvq`].
    VIRTIO_NET_STATS_TYPE_REPLY_CVQ: u8 = 32;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsRxBasic`].
    VIRTIO_NET_STATS_TYPE_REPLY_RX_BASIC: u8 = 0;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsRxCsum`].
    VIRTIO_NET_STATS_TYPE_REPLY_RX_CSUM: u8 = 1;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsRxGso`].
    VIRTIO_NET_STATS_TYPE_REPLY_RX_GSO: u8 = 2;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsRxSpeed`].
    VIRTIO_NET_STATS_TYPE_REPLY_RX_SPEED: u8 = 3;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsTxBasic`].
    VIRTIO_NET_STATS_TYPE_REPLY_TX_BASIC: u8 = 16;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsTxCsum`].
    VIRTIO_NET_STATS_TYPE_REPLY_TX_CSUM: u8 = 17;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsTxGso`].
    VIRTIO_NET_STATS_TYPE_REPLY_TX_GSO: u8 = 18;
    /// [`VirtioNetStatsReplyHdr::type_`] of [`VirtioNetStatsTxSpeed`].
    VIRTIO_NET_STATS_TYPE_REPLY_TX_SPEED: u8 = 19;
}

/// The length of the header in front of every packet, given the negotiated
/// feature bits, as Linux's `virtnet_probe()` picks it:
/// [`VirtioNetHdrV1Hash`] with [`VIRTIO_NET_F_HASH_REPORT`], otherwise
/// [`VirtioNetHdrMrgRxbuf`] (same layout as [`VirtioNetHdrV1`]) for modern
/// devices or with [`VIRTIO_NET_F_MRG_RXBUF`], otherwise the legacy
/// [`VirtioNetHdr`].
pub const fn net_hdr_len(features: u64) -> usize {
    if has_feature(features, VIRTIO_NET_F_HASH_REPORT) {
        size_of::<VirtioNetHdrV1Hash>()
    } else if has_feature(features, VIRTIO_NET_F_MRG_RXBUF)
        || has_feature(features, VIRTIO_F_VERSION_1)
    {
        size_of::<VirtioNetHdrMrgRxbuf>()
    } else {
        size_of::<VirtioNetHdr>()
    }
}

abi_struct! {
    /// The device configuration space of a network device (Linux
    /// `struct virtio_net_config`, 24 bytes; spec 5.1.4).  Each field is
    /// only meaningful if the feature bit named in its description was
    /// negotiated.
    #[derive(Default)]
    pub struct VirtioNetConfig {
        /// The MAC address ([`VIRTIO_NET_F_MAC`]).
        pub mac: [u8; 6],
        /// `VIRTIO_NET_S_*` bits ([`VIRTIO_NET_F_STATUS`]).
        pub status: u16,
        /// The most transmit/receive queue pairs, 1 to 0x8000
        /// ([`VIRTIO_NET_F_MQ`] or [`VIRTIO_NET_F_RSS`]).
        pub max_virtqueue_pairs: u16,
        /// The advised MTU ([`VIRTIO_NET_F_MTU`]).
        pub mtu: u16,
        /// Link speed in Mbit/s; values above `i32::MAX` mean unknown
        /// ([`VIRTIO_NET_F_SPEED_DUPLEX`]).
        pub speed: u32,
        /// 0 half duplex, 1 full duplex, anything else unknown
        /// ([`VIRTIO_NET_F_SPEED_DUPLEX`]).
        pub duplex: u8,
        /// The largest RSS key in bytes ([`VIRTIO_NET_F_RSS`] or
        /// [`VIRTIO_NET_F_HASH_REPORT`]).
        pub rss_max_key_size: u8,
        /// The most RSS indirection table entries ([`VIRTIO_NET_F_RSS`]).
        pub rss_max_indirection_table_length: u16,
        /// `VIRTIO_NET_RSS_HASH_TYPE_*` bits the device supports
        /// ([`VIRTIO_NET_F_RSS`] or [`VIRTIO_NET_F_HASH_REPORT`]).
        pub supported_hash_types: u32,
    }
}

const _: () = assert!(align_of::<VirtioNetConfig>() == 4);
assert_layout!(VirtioNetConfig, size 24, {
    mac: 0, status: 6, max_virtqueue_pairs: 8, mtu: 10, speed: 12, duplex: 16,
    rss_max_key_size: 17, rss_max_indirection_table_length: 18, supported_hash_types: 20,
});

impl VirtioNetConfig {
    /// Whether [`VIRTIO_NET_S_LINK_UP`] is set in `status`.
    pub const fn is_link_up(&self) -> bool {
        self.status & VIRTIO_NET_S_LINK_UP != 0
    }
}

abi_struct! {
    /// The header in front of every packet of a modern device (Linux
    /// `struct virtio_net_hdr_v1`, 12 bytes; spec 5.1.6
    /// `struct virtio_net_hdr`).  See the module documentation for the C
    /// union behind `csum_start` and `csum_offset`.
    #[derive(Default)]
    pub struct VirtioNetHdrV1 {
        /// `VIRTIO_NET_HDR_F_*` bits.
        pub flags: u8,
        /// One of the `VIRTIO_NET_HDR_GSO_*` types, possibly with
        /// [`VIRTIO_NET_HDR_GSO_ECN`].
        pub gso_type: u8,
        /// Length of the Ethernet, IP and TCP/UDP headers.
        pub hdr_len: u16,
        /// Payload bytes per segment for GSO packets.
        pub gso_size: u16,
        /// Where checksumming starts ([`VIRTIO_NET_HDR_F_NEEDS_CSUM`]); C
        /// also calls it `csum.start`, and `rsc.segments` with
        /// [`VIRTIO_NET_HDR_F_RSC_INFO`].
        pub csum_start: u16,
        /// Where, after `csum_start`, the checksum goes; C also calls it
        /// `csum.offset`, and `rsc.dup_acks` with
        /// [`VIRTIO_NET_HDR_F_RSC_INFO`].
        pub csum_offset: u16,
        /// Number of merged receive buffers this packet spans (receive
        /// with [`VIRTIO_NET_F_MRG_RXBUF`], else 1 or 0).
        pub num_buffers: u16,
    }
}

assert_layout!(VirtioNetHdrV1, size 12, {
    flags: 0, gso_type: 1, hdr_len: 2, gso_size: 4, csum_start: 6, csum_offset: 8,
    num_buffers: 10,
});

impl VirtioNetHdrV1 {
    /// Whether [`VIRTIO_NET_HDR_F_NEEDS_CSUM`] is set.
    pub const fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }

    /// The GSO type without the [`VIRTIO_NET_HDR_GSO_ECN`] bit.
    pub const fn gso_protocol(&self) -> u8 {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN
    }

    /// Whether [`VIRTIO_NET_HDR_GSO_ECN`] is set.
    pub const fn has_ecn(&self) -> bool {
        self.gso_type & VIRTIO_NET_HDR_GSO_ECN != 0
    }

    /// The C union view `rsc.segments`: the number of coalesced segments,
    /// when [`VIRTIO_NET_HDR_F_RSC_INFO`] is set.
    pub const fn rsc_segments(&self) -> u16 {
        self.csum_start
    }

    /// The C union view `rsc.dup_acks`: the number of duplicated
    /// acknowledgements, when [`VIRTIO_NET_HDR_F_RSC_INFO`] is set.
    pub const fn rsc_dup_acks(&self) -> u16 {
        self.csum_offset
    }
}

impl From<VirtioNetHdrMrgRxbuf> for VirtioNetHdrV1 {
    /// The same bytes, flattened (the header documents the two as bitwise
    /// equivalent).
    fn from(legacy: VirtioNetHdrMrgRxbuf) -> Self {
        let VirtioNetHdr {
            flags,
            gso_type,
            hdr_len,
            gso_size,
            csum_start,
            csum_offset,
        } = legacy.hdr;
        Self {
            flags,
            gso_type,
            hdr_len,
            gso_size,
            csum_start,
            csum_offset,
            num_buffers: legacy.num_buffers,
        }
    }
}

abi_struct! {
    /// [`VirtioNetHdrV1`] followed by the packet's hash, with
    /// [`VIRTIO_NET_F_HASH_REPORT`] (Linux
    /// `struct virtio_net_hdr_v1_hash`, 20 bytes).
    #[derive(Default)]
    pub struct VirtioNetHdrV1Hash {
        /// The ordinary header.
        pub hdr: VirtioNetHdrV1,
        /// The hash the device computed.
        pub hash_value: u32,
        /// One of the `VIRTIO_NET_HASH_REPORT_*` values.
        pub hash_report: u16,
        /// Reserved.
        pub padding: u16,
    }
}

assert_layout!(VirtioNetHdrV1Hash, size 20, { hdr: 0, hash_value: 12, hash_report: 16, padding: 18 });

abi_struct! {
    /// The legacy packet header without merged receive buffers (Linux
    /// `struct virtio_net_hdr`, 10 bytes).
    #[derive(Default)]
    pub struct VirtioNetHdr {
        /// `VIRTIO_NET_HDR_F_*` bits.
        pub flags: u8,
        /// One of the `VIRTIO_NET_HDR_GSO_*` types.
        pub gso_type: u8,
        /// Length of the Ethernet, IP and TCP/UDP headers.
        pub hdr_len: u16,
        /// Payload bytes per segment for GSO packets.
        pub gso_size: u16,
        /// Where checksumming starts.
        pub csum_start: u16,
        /// Where, after `csum_start`, the checksum goes.
        pub csum_offset: u16,
    }
}

assert_layout!(VirtioNetHdr, size 10, {
    flags: 0, gso_type: 1, hdr_len: 2, gso_size: 4, csum_start: 6, csum_offset: 8,
});

abi_struct! {
    /// The legacy packet header with [`VIRTIO_NET_F_MRG_RXBUF`] (Linux
    /// `struct virtio_net_hdr_mrg_rxbuf`, 12 bytes); bit for bit the same
    /// as [`VirtioNetHdrV1`].
    #[derive(Default)]
    pub struct VirtioNetHdrMrgRxbuf {
        /// The legacy header.
        pub hdr: VirtioNetHdr,
        /// Number of merged receive buffers this packet spans.
        pub num_buffers: u16,
    }
}

assert_layout!(VirtioNetHdrMrgRxbuf, size 12, { hdr: 0, num_buffers: 10 });

abi_struct! {
    /// The header of every control virtqueue command (Linux
    /// `struct virtio_net_ctrl_hdr`, 2 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlHdr {
        /// One of the `VIRTIO_NET_CTRL_*` classes.
        pub class: u8,
        /// A command of that class.
        pub cmd: u8,
    }
}

assert_layout!(VirtioNetCtrlHdr, size 2, { class: 0, cmd: 1 });

abi_struct! {
    /// The count in front of a MAC filter table of
    /// [`VIRTIO_NET_CTRL_MAC_TABLE_SET`] (Linux `struct virtio_net_ctrl_mac`,
    /// 4 bytes), followed by `entries` 6-byte addresses.
    #[derive(Default)]
    pub struct VirtioNetCtrlMac {
        /// Number of addresses that follow.
        pub entries: u32,
        /// The start of the addresses (a flexible array member in C).
        pub macs: [[u8; 6]; 0],
    }
}

assert_layout!(VirtioNetCtrlMac, size 4, { entries: 0, macs: 4 });

abi_struct! {
    /// The data of [`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`] (Linux
    /// `struct virtio_net_ctrl_mq`, 2 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlMq {
        /// Queue pairs to use, [`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN`] to
        /// [`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX`].
        pub virtqueue_pairs: u16,
    }
}

assert_layout!(VirtioNetCtrlMq, size 2, { virtqueue_pairs: 0 });

abi_struct! {
    /// The fixed start of the [`VIRTIO_NET_CTRL_MQ_RSS_CONFIG`] data (Linux
    /// `struct virtio_net_rss_config_hdr`, 8 bytes), followed by
    /// `indirection_table_mask + 1` queue indexes and then the trailer
    /// (`max_tx_vq: u16`, `hash_key_length: u8`, the key bytes).
    #[derive(Default)]
    pub struct VirtioNetRssConfigHdr {
        /// `VIRTIO_NET_RSS_HASH_TYPE_*` bits to hash on.
        pub hash_types: u32,
        /// Indirection table length minus one (a power of two minus one).
        pub indirection_table_mask: u16,
        /// Receive queue for packets that match no hash type.
        pub unclassified_queue: u16,
        /// The start of the indirection table (a flexible array member in
        /// C).
        pub indirection_table: [u16; 0],
    }
}

assert_layout!(VirtioNetRssConfigHdr, size 8, {
    hash_types: 0, indirection_table_mask: 4, unclassified_queue: 6, indirection_table: 8,
});

abi_struct! {
    /// The data of [`VIRTIO_NET_CTRL_NOTF_COAL_TX_SET`] (Linux
    /// `struct virtio_net_ctrl_coal_tx`, 8 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlCoalTx {
        /// Most packets to send before a transmit notification.
        pub tx_max_packets: u32,
        /// Most microseconds to delay a transmit notification.
        pub tx_usecs: u32,
    }
}

assert_layout!(VirtioNetCtrlCoalTx, size 8, { tx_max_packets: 0, tx_usecs: 4 });

abi_struct! {
    /// The data of [`VIRTIO_NET_CTRL_NOTF_COAL_RX_SET`] (Linux
    /// `struct virtio_net_ctrl_coal_rx`, 8 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlCoalRx {
        /// Most packets to receive before a receive notification.
        pub rx_max_packets: u32,
        /// Most microseconds to delay a receive notification.
        pub rx_usecs: u32,
    }
}

assert_layout!(VirtioNetCtrlCoalRx, size 8, { rx_max_packets: 0, rx_usecs: 4 });

abi_struct! {
    /// Coalescing parameters of one virtqueue (Linux
    /// `struct virtio_net_ctrl_coal`, 8 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlCoal {
        /// Most packets before a notification.
        pub max_packets: u32,
        /// Most microseconds to delay a notification.
        pub max_usecs: u32,
    }
}

assert_layout!(VirtioNetCtrlCoal, size 8, { max_packets: 0, max_usecs: 4 });

abi_struct! {
    /// The data of [`VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET`] and the reply of
    /// [`VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET`] (Linux
    /// `struct virtio_net_ctrl_coal_vq`, 12 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlCoalVq {
        /// The virtqueue index.
        pub vqn: u16,
        /// Reserved.
        pub reserved: u16,
        /// Its parameters.
        pub coal: VirtioNetCtrlCoal,
    }
}

assert_layout!(VirtioNetCtrlCoalVq, size 12, { vqn: 0, reserved: 2, coal: 4 });

abi_struct! {
    /// The reply of [`VIRTIO_NET_CTRL_STATS_QUERY`] (Linux
    /// `struct virtio_net_stats_capabilities`, 8 bytes).
    #[derive(Default)]
    pub struct VirtioNetStatsCapabilities {
        /// `VIRTIO_NET_STATS_TYPE_*` masks the device supports.
        pub supported_stats_types: [u64; 1],
    }
}

assert_layout!(VirtioNetStatsCapabilities, size 8, { supported_stats_types: 0 });

abi_struct! {
    /// One entry of [`VirtioNetCtrlQueueStats`] (an anonymous struct in
    /// C, 16 bytes).
    #[derive(Default)]
    pub struct VirtioNetCtrlQueueStatsEntry {
        /// The virtqueue index.
        pub vq_index: u16,
        /// Reserved.
        pub reserved: [u16; 3],
        /// `VIRTIO_NET_STATS_TYPE_*` masks wanted for that queue.
        pub types_bitmap: [u64; 1],
    }
}

assert_layout!(VirtioNetCtrlQueueStatsEntry, size 16, { vq_index: 0, reserved: 2, types_bitmap: 8 });

abi_struct! {
    /// The data of [`VIRTIO_NET_CTRL_STATS_GET`] (Linux
    /// `struct virtio_net_ctrl_queue_stats`, 16 bytes; a driver may send
    /// more than the one entry C declares).
    #[derive(Default)]
    pub struct VirtioNetCtrlQueueStats {
        /// The queues and statistics wanted.
        pub stats: [VirtioNetCtrlQueueStatsEntry; 1],
    }
}

assert_layout!(VirtioNetCtrlQueueStats, size 16, { stats: 0 });

abi_struct! {
    /// The header of each statistics reply (Linux
    /// `struct virtio_net_stats_reply_hdr`, 8 bytes).
    #[derive(Default)]
    pub struct VirtioNetStatsReplyHdr {
        /// One of the `VIRTIO_NET_STATS_TYPE_REPLY_*` types (C `type`, a
        /// Rust keyword).
        pub type_: u8,
        /// Reserved.
        pub reserved: u8,
        /// The virtqueue the statistics are for.
        pub vq_index: u16,
        /// Reserved.
        pub reserved1: u16,
        /// Size of the reply in bytes, this header included.
        pub size: u16,
    }
}

assert_layout!(VirtioNetStatsReplyHdr, size 8, {
    type_: 0, reserved: 1, vq_index: 2, reserved1: 4, size: 6,
});

/// Declares one statistics reply: a [`VirtioNetStatsReplyHdr`] followed by
/// `u64` counters.
macro_rules! stats_reply {
    (
        $(#[$attr:meta])*
        $name:ident, size $size:literal {
            $($(#[$field_attr:meta])* $field:ident: $offset:literal,)+
        }
    ) => {
        abi_struct! {
            $(#[$attr])*
            #[derive(Default)]
            pub struct $name {
                /// The reply header.
                pub hdr: VirtioNetStatsReplyHdr,
                $($(#[$field_attr])* pub $field: u64,)+
            }
        }

        assert_layout!($name, size $size, { hdr: 0, $($field: $offset),+ });
    };
}

stats_reply! {
    /// Control virtqueue statistics (Linux `struct virtio_net_stats_cvq`).
    VirtioNetStatsCvq, size 24 {
        /// Commands received.
        command_num: 8,
        /// Commands that succeeded.
        ok_num: 16,
    }
}

stats_reply! {
    /// Basic receive statistics (Linux `struct virtio_net_stats_rx_basic`).
    VirtioNetStatsRxBasic, size 56 {
        /// Notifications sent to the driver.
        rx_notifications: 8,
        /// Packets received.
        rx_packets: 16,
        /// Bytes received.
        rx_bytes: 24,
        /// Interrupts raised.
        rx_interrupts: 32,
        /// Packets dropped.
        rx_drops: 40,
        /// Packets dropped for lack of buffers.
        rx_drop_overruns: 48,
    }
}

stats_reply! {
    /// Basic transmit statistics (Linux `struct virtio_net_stats_tx_basic`).
    VirtioNetStatsTxBasic, size 56 {
        /// Notifications received from the driver.
        tx_notifications: 8,
        /// Packets sent.
        tx_packets: 16,
        /// Bytes sent.
        tx_bytes: 24,
        /// Interrupts raised.
        tx_interrupts: 32,
        /// Packets dropped.
        tx_drops: 40,
        /// Malformed packets dropped.
        tx_drop_malformed: 48,
    }
}

stats_reply! {
    /// Receive checksum statistics (Linux `struct virtio_net_stats_rx_csum`).
    VirtioNetStatsRxCsum, size 40 {
        /// Packets with a valid checksum.
        rx_csum_valid: 8,
        /// Packets delivered with [`VIRTIO_NET_HDR_F_NEEDS_CSUM`].
        rx_needs_csum: 16,
        /// Packets without checksum validation.
        rx_csum_none: 24,
        /// Packets with a bad checksum.
        rx_csum_bad: 32,
    }
}

stats_reply! {
    /// Transmit checksum statistics (Linux `struct virtio_net_stats_tx_csum`).
    VirtioNetStatsTxCsum, size 24 {
        /// Packets that needed no checksum.
        tx_csum_none: 8,
        /// Packets whose checksum the device computed.
        tx_needs_csum: 16,
    }
}

stats_reply! {
    /// Receive GSO statistics (Linux `struct virtio_net_stats_rx_gso`).
    VirtioNetStatsRxGso, size 40 {
        /// GSO packets received.
        rx_gso_packets: 8,
        /// GSO bytes received.
        rx_gso_bytes: 16,
        /// Packets coalesced into GSO packets.
        rx_gso_packets_coalesced: 24,
        /// Bytes coalesced into GSO packets.
        rx_gso_bytes_coalesced: 32,
    }
}

stats_reply! {
    /// Transmit GSO statistics (Linux `struct virtio_net_stats_tx_gso`).
    VirtioNetStatsTxGso, size 56 {
        /// GSO packets sent.
        tx_gso_packets: 8,
        /// GSO bytes sent.
        tx_gso_bytes: 16,
        /// Segments produced from GSO packets.
        tx_gso_segments: 24,
        /// Bytes of those segments.
        tx_gso_segments_bytes: 32,
        /// GSO packets that needed no segmentation.
        tx_gso_packets_noseg: 40,
        /// Bytes of those packets.
        tx_gso_bytes_noseg: 48,
    }
}

stats_reply! {
    /// Receive rate-limit statistics (Linux
    /// `struct virtio_net_stats_rx_speed`).
    VirtioNetStatsRxSpeed, size 24 {
        /// Packets dropped for exceeding the packet allowance.
        rx_ratelimit_packets: 8,
        /// Packets dropped for exceeding the byte allowance.
        rx_ratelimit_bytes: 16,
    }
}

stats_reply! {
    /// Transmit rate-limit statistics (Linux
    /// `struct virtio_net_stats_tx_speed`).
    VirtioNetStatsTxSpeed, size 24 {
        /// Packets dropped for exceeding the packet allowance.
        tx_ratelimit_packets: 8,
        /// Packets dropped for exceeding the byte allowance.
        tx_ratelimit_bytes: 16,
    }
}

#[cfg(test)]
mod tests {
    use super::super::virtio::feature_mask;
    use super::*;

    #[test]
    fn header_length_follows_virtnet_probe() {
        assert_eq!(net_hdr_len(0), 10);
        assert_eq!(net_hdr_len(feature_mask(VIRTIO_NET_F_MRG_RXBUF)), 12);
        assert_eq!(net_hdr_len(feature_mask(VIRTIO_F_VERSION_1)), 12);
        assert_eq!(
            net_hdr_len(feature_mask(VIRTIO_F_VERSION_1) | feature_mask(VIRTIO_NET_F_HASH_REPORT)),
            20
        );
        assert_eq!(net_hdr_len(feature_mask(VIRTIO_NET_F_CSUM)), 10);
    }

    #[test]
    fn legacy_mergeable_header_flattens_to_v1() {
        let legacy = VirtioNetHdrMrgRxbuf {
            hdr: VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
                hdr_len: 54,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            },
            num_buffers: 3,
        };
        let v1 = VirtioNetHdrV1::from(legacy);
        assert_eq!(
            v1,
            VirtioNetHdrV1 {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: 0x81,
                hdr_len: 54,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
                num_buffers: 3,
            }
        );
        assert!(v1.needs_csum());
        assert!(v1.has_ecn());
        assert_eq!(v1.gso_protocol(), VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((v1.rsc_segments(), v1.rsc_dup_acks()), (34, 16));
    }

    #[test]
    fn link_status_is_read_from_status() {
        let config = VirtioNetConfig {
            status: VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE,
            ..VirtioNetConfig::default()
        };
        assert!(config.is_link_up());
        assert!(!VirtioNetConfig::default().is_link_up());
    }
}
