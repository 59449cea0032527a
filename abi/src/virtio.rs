//! The transport-independent part of virtio: device status bits, reserved
//! feature bits, device IDs, the virtqueue layouts, and the virtio-mmio
//! register block.
//!
//! Sources: the virtio 1.2 specification (OASIS, *Virtual I/O Device
//! (VIRTIO) Version 1.2*), sections 2.1 "Device Status Field", 2.2 "Feature
//! Bits", 2.7 "Split Virtqueues", 2.8 "Packed Virtqueues", 4.2 "Virtio Over
//! MMIO", 5 "Device Types" (the device IDs) and 6 "Reserved Feature Bits";
//! and the Linux headers `include/uapi/linux/virtio_config.h`,
//! `include/uapi/linux/virtio_ids.h`, `include/uapi/linux/virtio_ring.h` and
//! `include/uapi/linux/virtio_mmio.h`.  The device-specific parts are in
//! [`super::virtio_blk`], [`super::virtio_net`] and
//! [`super::virtio_balloon`].
//!
//! # Byte order
//!
//! Every multi-byte field that a modern (`VIRTIO_F_VERSION_1`) device and
//! its driver exchange is little endian (`__le16`, and `__virtio16` and its
//! siblings, which are little endian for modern devices).  The structs
//! here nevertheless have plain integer fields: the guest and the host of
//! pvrs are both x86-64, so native byte order *is* the wire order.  Code
//! ported to a big-endian machine would have to convert every field
//! (`u16::from_le` and so on).
//!
//! # Feature bits
//!
//! As in Linux, every `*_F_*` feature constant is a *bit number* in the
//! 64-bit feature set, not a mask: test a set with [`has_feature`] or
//! build a mask with [`feature_mask`].  The virtio-mmio registers carry the
//! set in two 32-bit words ([`feature_word`], [`with_feature_word`]).
//!
//! # Split virtqueues
//!
//! A split virtqueue of `queue_size` entries has three parts, which a
//! modern driver may place anywhere (each aligned to its
//! `VRING_*_ALIGN_SIZE`): the descriptor table (`queue_size` [`VringDesc`]),
//! the available ring ([`VringAvail`], then `queue_size` `u16` heads, then
//! the `used_event` index) and the used ring ([`VringUsed`], then
//! `queue_size` [`VringUsedElem`], then the `avail_event` index).  The two
//! ring structs mirror only the fixed headers of the C structs, with a
//! zero-length `ring` array where C has a flexible array member; the
//! functions [`desc_table_size`], [`avail_ring_size`], [`used_ring_size`],
//! [`used_event_offset`] and [`avail_event_offset`] give the rest.  Legacy
//! transports (virtio-mmio version 1) put the three parts in one block laid
//! out by [`vring_used_offset`] and [`vring_size`].

use core::mem::{align_of, size_of};

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    // ---- virtio_config.h: device status (spec 2.1) ----

    /// Device status bit: the guest has noticed the device.
    VIRTIO_CONFIG_S_ACKNOWLEDGE: u8 = 1;
    /// Device status bit: the guest has a driver for the device.
    VIRTIO_CONFIG_S_DRIVER: u8 = 2;
    /// Device status bit: the driver is set up and the device is live.
    VIRTIO_CONFIG_S_DRIVER_OK: u8 = 4;
    /// Device status bit: the driver has acknowledged the features it
    /// understands, and feature negotiation is complete (set by the driver,
    /// then read back to see whether the device accepted the subset).
    VIRTIO_CONFIG_S_FEATURES_OK: u8 = 8;
    /// Device status bit: the device hit an error it cannot recover from;
    /// the driver must reset it.
    VIRTIO_CONFIG_S_NEEDS_RESET: u8 = 0x40;
    /// Device status bit: the guest has given up on the device.
    VIRTIO_CONFIG_S_FAILED: u8 = 0x80;

    // ---- virtio_config.h: reserved feature bits (spec 2.2 and 6) ----

    /// The first of the feature bits that Linux leaves to the transport
    /// and ring code rather than to device drivers (see
    /// [`is_transport_feature`]).  The spec (2.2) gives bits 0-23 and
    /// 50-127 to the device types, reserves 24-41 for the queue and feature
    /// negotiation mechanisms (24 and 27 are legacy ones) and 42-49 for
    /// future extensions.
    VIRTIO_TRANSPORT_F_START: u32 = 28;
    /// The end (exclusive, as Linux loops over the range) of the transport
    /// feature bits.
    VIRTIO_TRANSPORT_F_END: u32 = 42;
    /// Legacy feature: the device notifies the driver when a virtqueue runs
    /// empty even if notifications are suppressed.
    VIRTIO_F_NOTIFY_ON_EMPTY: u32 = 24;
    /// Legacy feature: the device accepts any split of a request over
    /// descriptors (always true of modern devices).
    VIRTIO_F_ANY_LAYOUT: u32 = 27;
    /// The device complies with virtio 1.0 or later (a "modern" device,
    /// little endian throughout); without it the device is legacy.
    VIRTIO_F_VERSION_1: u32 = 32;
    /// The device accesses memory through the platform's IOMMU and DMA
    /// translation; without it (reverse polarity, for legacy guests) it
    /// uses guest physical addresses directly.
    VIRTIO_F_ACCESS_PLATFORM: u32 = 33;
    /// Legacy userspace name of [`VIRTIO_F_ACCESS_PLATFORM`] (defined only
    /// outside the kernel).
    VIRTIO_F_IOMMU_PLATFORM: u32 = VIRTIO_F_ACCESS_PLATFORM;
    /// The device supports the packed virtqueue layout (spec 2.8).
    VIRTIO_F_RING_PACKED: u32 = 34;
    /// The device uses buffers in the order they were made available.
    VIRTIO_F_IN_ORDER: u32 = 35;
    /// Driver and device memory accesses are ordered as the platform
    /// describes (real hardware), not as for a software device on the
    /// same CPU.
    VIRTIO_F_ORDER_PLATFORM: u32 = 36;
    /// The device supports single root I/O virtualization (PCI).
    VIRTIO_F_SR_IOV: u32 = 37;
    /// The driver passes extra data (ring position) in its available buffer
    /// notifications.
    VIRTIO_F_NOTIFICATION_DATA: u32 = 38;
    /// The driver uses the value the device provides as the virtqueue
    /// identifier in available buffer notifications.
    VIRTIO_F_NOTIF_CONFIG_DATA: u32 = 39;
    /// The driver can reset and re-enable individual virtqueues.
    VIRTIO_F_RING_RESET: u32 = 40;
    /// The device supports administration virtqueues.
    VIRTIO_F_ADMIN_VQ: u32 = 41;

    // ---- virtio_ids.h: device IDs (spec 5) ----

    /// Device ID: network card (spec 5.1, [`super::virtio_net`]).
    VIRTIO_ID_NET: u32 = 1;
    /// Device ID: block device (spec 5.2, [`super::virtio_blk`]).
    VIRTIO_ID_BLOCK: u32 = 2;
    /// Device ID: console (spec 5.3).
    VIRTIO_ID_CONSOLE: u32 = 3;
    /// Device ID: entropy source (spec 5.4).
    VIRTIO_ID_RNG: u32 = 4;
    /// Device ID: traditional memory balloon (spec 5.5,
    /// [`super::virtio_balloon`]).
    VIRTIO_ID_BALLOON: u32 = 5;
    /// Device ID: ioMemory.
    VIRTIO_ID_IOMEM: u32 = 6;
    /// Device ID: remote processor messaging (rpmsg).
    VIRTIO_ID_RPMSG: u32 = 7;
    /// Device ID: SCSI host.
    VIRTIO_ID_SCSI: u32 = 8;
    /// Device ID: 9P transport.
    VIRTIO_ID_9P: u32 = 9;
    /// Device ID: mac80211 WLAN.
    VIRTIO_ID_MAC80211_WLAN: u32 = 10;
    /// Device ID: remoteproc serial link.
    VIRTIO_ID_RPROC_SERIAL: u32 = 11;
    /// Device ID: CAIF.
    VIRTIO_ID_CAIF: u32 = 12;
    /// Device ID: memory balloon (the newer, unused design; not the
    /// traditional balloon).
    VIRTIO_ID_MEMORY_BALLOON: u32 = 13;
    /// Device ID: GPU.
    VIRTIO_ID_GPU: u32 = 16;
    /// Device ID: clock/timer.
    VIRTIO_ID_CLOCK: u32 = 17;
    /// Device ID: input device.
    VIRTIO_ID_INPUT: u32 = 18;
    /// Device ID: vsock transport.
    VIRTIO_ID_VSOCK: u32 = 19;
    /// Device ID: crypto device.
    VIRTIO_ID_CRYPTO: u32 = 20;
    /// Device ID: signal distribution device.
    VIRTIO_ID_SIGNAL_DIST: u32 = 21;
    /// Device ID: pstore device.
    VIRTIO_ID_PSTORE: u32 = 22;
    /// Device ID: IOMMU.
    VIRTIO_ID_IOMMU: u32 = 23;
    /// Device ID: memory device (virtio-mem).
    VIRTIO_ID_MEM: u32 = 24;
    /// Device ID: sound device.
    VIRTIO_ID_SOUND: u32 = 25;
    /// Device ID: file system (virtiofs).
    VIRTIO_ID_FS: u32 = 26;
    /// Device ID: persistent memory.
    VIRTIO_ID_PMEM: u32 = 27;
    /// Device ID: replay protected memory block.
    VIRTIO_ID_RPMB: u32 = 28;
    /// Device ID: mac80211 hardware simulator.
    VIRTIO_ID_MAC80211_HWSIM: u32 = 29;
    /// Device ID: video encoder.
    VIRTIO_ID_VIDEO_ENCODER: u32 = 30;
    /// Device ID: video decoder.
    VIRTIO_ID_VIDEO_DECODER: u32 = 31;
    /// Device ID: SCMI (Arm System Control and Management Interface).
    VIRTIO_ID_SCMI: u32 = 32;
    /// Device ID: Nitro secure module.
    VIRTIO_ID_NITRO_SEC_MOD: u32 = 33;
    /// Device ID: I2C adapter.
    VIRTIO_ID_I2C_ADAPTER: u32 = 34;
    /// Device ID: watchdog.
    VIRTIO_ID_WATCHDOG: u32 = 35;
    /// Device ID: CAN bus.
    VIRTIO_ID_CAN: u32 = 36;
    /// Device ID: dmabuf.
    VIRTIO_ID_DMABUF: u32 = 37;
    /// Device ID: parameter server.
    VIRTIO_ID_PARAM_SERV: u32 = 38;
    /// Device ID: audio policy.
    VIRTIO_ID_AUDIO_POLICY: u32 = 39;
    /// Device ID: Bluetooth.
    VIRTIO_ID_BT: u32 = 40;
    /// Device ID: GPIO controller.
    VIRTIO_ID_GPIO: u32 = 41;

    /// PCI device ID of a transitional (legacy-capable) network card.
    VIRTIO_TRANS_ID_NET: u16 = 0x1000;
    /// PCI device ID of a transitional block device.
    VIRTIO_TRANS_ID_BLOCK: u16 = 0x1001;
    /// PCI device ID of a transitional memory balloon.
    VIRTIO_TRANS_ID_BALLOON: u16 = 0x1002;
    /// PCI device ID of a transitional console.
    VIRTIO_TRANS_ID_CONSOLE: u16 = 0x1003;
    /// PCI device ID of a transitional SCSI host.
    VIRTIO_TRANS_ID_SCSI: u16 = 0x1004;
    /// PCI device ID of a transitional entropy source.
    VIRTIO_TRANS_ID_RNG: u16 = 0x1005;
    /// PCI device ID of a transitional 9P transport.
    VIRTIO_TRANS_ID_9P: u16 = 0x1009;

    // ---- virtio_ring.h (spec 2.7 and 2.8) ----

    /// [`VringDesc::flags`] bit: the buffer continues in the descriptor
    /// whose index is in [`VringDesc::next`].
    VRING_DESC_F_NEXT: u16 = 1;
    /// [`VringDesc::flags`] bit: the buffer is device-writable (otherwise
    /// device-readable).
    VRING_DESC_F_WRITE: u16 = 2;
    /// [`VringDesc::flags`] bit: the buffer holds a table of indirect
    /// descriptors (needs [`VIRTIO_RING_F_INDIRECT_DESC`]).
    VRING_DESC_F_INDIRECT: u16 = 4;
    /// Packed ring: the *bit number* (not mask) of the "available" flag in
    /// [`VringPackedDesc::flags`].
    VRING_PACKED_DESC_F_AVAIL: u32 = 7;
    /// Packed ring: the *bit number* (not mask) of the "used" flag in
    /// [`VringPackedDesc::flags`].
    VRING_PACKED_DESC_F_USED: u32 = 15;
    /// [`VringUsed::flags`] bit: the device asks not to be notified when
    /// buffers are made available (an unreliable hint).
    VRING_USED_F_NO_NOTIFY: u16 = 1;
    /// [`VringAvail::flags`] bit: the driver asks not to be interrupted when
    /// buffers are used (an unreliable hint).
    VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
    /// Packed ring event suppression ([`VringPackedDescEvent::flags`]):
    /// notifications enabled.
    VRING_PACKED_EVENT_FLAG_ENABLE: u16 = 0x0;
    /// Packed ring event suppression: notifications disabled.
    VRING_PACKED_EVENT_FLAG_DISABLE: u16 = 0x1;
    /// Packed ring event suppression: notify only for the descriptor given
    /// in [`VringPackedDescEvent::off_wrap`] (needs
    /// [`VIRTIO_RING_F_EVENT_IDX`]).
    VRING_PACKED_EVENT_FLAG_DESC: u16 = 0x2;
    /// The *bit number* of the wrap counter in
    /// [`VringPackedDescEvent::off_wrap`]; the bits below it are the
    /// descriptor offset.
    VRING_PACKED_EVENT_F_WRAP_CTR: u32 = 15;
    /// Feature bit: the ring supports indirect descriptors (spec name
    /// `VIRTIO_F_INDIRECT_DESC`).
    VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
    /// Feature bit: the `used_event` / `avail_event` indexes replace the
    /// `NO_INTERRUPT` / `NO_NOTIFY` flags (spec name `VIRTIO_F_EVENT_IDX`);
    /// see [`vring_need_event`].
    VIRTIO_RING_F_EVENT_IDX: u32 = 29;
    /// Required alignment, in bytes, of the available ring.
    VRING_AVAIL_ALIGN_SIZE: usize = 2;
    /// Required alignment, in bytes, of the used ring.
    VRING_USED_ALIGN_SIZE: usize = 4;
    /// Required alignment, in bytes, of the descriptor table.
    VRING_DESC_ALIGN_SIZE: usize = 16;

    // ---- virtio_mmio.h: register offsets (spec 4.2.2) ----

    /// Read-only register: [`MMIO_MAGIC`].
    VIRTIO_MMIO_MAGIC_VALUE: u32 = 0x000;
    /// Read-only register: the transport version, [`MMIO_VERSION_MODERN`] or
    /// [`MMIO_VERSION_LEGACY`].
    VIRTIO_MMIO_VERSION: u32 = 0x004;
    /// Read-only register: the `VIRTIO_ID_*` device ID; 0 means no device
    /// (the driver must ignore the slot).
    VIRTIO_MMIO_DEVICE_ID: u32 = 0x008;
    /// Read-only register: the subsystem vendor ID.
    VIRTIO_MMIO_VENDOR_ID: u32 = 0x00c;
    /// Read-only register: the 32 device feature bits selected by
    /// [`VIRTIO_MMIO_DEVICE_FEATURES_SEL`] (see [`feature_word`]).
    VIRTIO_MMIO_DEVICE_FEATURES: u32 = 0x010;
    /// Write-only register: which 32-bit word of the device features
    /// [`VIRTIO_MMIO_DEVICE_FEATURES`] shows.
    VIRTIO_MMIO_DEVICE_FEATURES_SEL: u32 = 0x014;
    /// Write-only register: the 32 driver feature bits selected by
    /// [`VIRTIO_MMIO_DRIVER_FEATURES_SEL`] (see [`with_feature_word`]).
    VIRTIO_MMIO_DRIVER_FEATURES: u32 = 0x020;
    /// Write-only register: which 32-bit word of the driver features
    /// [`VIRTIO_MMIO_DRIVER_FEATURES`] sets.
    VIRTIO_MMIO_DRIVER_FEATURES_SEL: u32 = 0x024;
    /// Legacy write-only register: the guest page size, the unit of
    /// [`VIRTIO_MMIO_QUEUE_PFN`].
    VIRTIO_MMIO_GUEST_PAGE_SIZE: u32 = 0x028;
    /// Write-only register: the virtqueue the `QUEUE_*` registers refer to.
    VIRTIO_MMIO_QUEUE_SEL: u32 = 0x030;
    /// Read-only register: the largest size the selected queue supports; 0
    /// if the queue does not exist.
    VIRTIO_MMIO_QUEUE_NUM_MAX: u32 = 0x034;
    /// Write-only register: the size the driver chose for the selected
    /// queue.
    VIRTIO_MMIO_QUEUE_NUM: u32 = 0x038;
    /// Legacy write-only register: the alignment of the used ring in the
    /// contiguous legacy layout (see [`vring_used_offset`]).
    VIRTIO_MMIO_QUEUE_ALIGN: u32 = 0x03c;
    /// Legacy read-write register: the guest page number of the selected
    /// queue's contiguous ring; 0 means not in use.
    VIRTIO_MMIO_QUEUE_PFN: u32 = 0x040;
    /// Read-write register: the selected queue is ready (1) or not (0).
    VIRTIO_MMIO_QUEUE_READY: u32 = 0x044;
    /// Write-only register: available buffer notification; the value is
    /// the queue index (or more with [`VIRTIO_F_NOTIFICATION_DATA`]).
    VIRTIO_MMIO_QUEUE_NOTIFY: u32 = 0x050;
    /// Read-only register: the pending `VIRTIO_MMIO_INT_*` bits.
    VIRTIO_MMIO_INTERRUPT_STATUS: u32 = 0x060;
    /// Write-only register: `VIRTIO_MMIO_INT_*` bits the driver has handled.
    VIRTIO_MMIO_INTERRUPT_ACK: u32 = 0x064;
    /// Read-write register: the `VIRTIO_CONFIG_S_*` device status; writing 0
    /// resets the device.
    VIRTIO_MMIO_STATUS: u32 = 0x070;
    /// Write-only register: low 32 bits of the selected queue's descriptor
    /// table address.
    VIRTIO_MMIO_QUEUE_DESC_LOW: u32 = 0x080;
    /// Write-only register: high 32 bits of the descriptor table address.
    VIRTIO_MMIO_QUEUE_DESC_HIGH: u32 = 0x084;
    /// Write-only register: low 32 bits of the selected queue's available
    /// ring address.
    VIRTIO_MMIO_QUEUE_AVAIL_LOW: u32 = 0x090;
    /// Write-only register: high 32 bits of the available ring address.
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH: u32 = 0x094;
    /// Write-only register: low 32 bits of the selected queue's used ring
    /// address.
    VIRTIO_MMIO_QUEUE_USED_LOW: u32 = 0x0a0;
    /// Write-only register: high 32 bits of the used ring address.
    VIRTIO_MMIO_QUEUE_USED_HIGH: u32 = 0x0a4;
    /// Write-only register: the shared memory region the `SHM_*` registers
    /// refer to.
    VIRTIO_MMIO_SHM_SEL: u32 = 0x0ac;
    /// Read-only register: low 32 bits of the selected shared memory
    /// region's length (all ones if the region does not exist).
    VIRTIO_MMIO_SHM_LEN_LOW: u32 = 0x0b0;
    /// Read-only register: high 32 bits of the region's length.
    VIRTIO_MMIO_SHM_LEN_HIGH: u32 = 0x0b4;
    /// Read-only register: low 32 bits of the region's guest physical base.
    VIRTIO_MMIO_SHM_BASE_LOW: u32 = 0x0b8;
    /// Read-only register: high 32 bits of the region's base.
    VIRTIO_MMIO_SHM_BASE_HIGH: u32 = 0x0bc;
    /// Read-only register: changes whenever the device changes its
    /// configuration space, so that a driver can detect torn reads.
    VIRTIO_MMIO_CONFIG_GENERATION: u32 = 0x0fc;
    /// The start of the device-specific configuration space (e.g.
    /// [`super::virtio_blk::VirtioBlkConfig`]).
    VIRTIO_MMIO_CONFIG: u32 = 0x100;
    /// [`VIRTIO_MMIO_INTERRUPT_STATUS`] bit: the device used a buffer in at
    /// least one virtqueue.
    VIRTIO_MMIO_INT_VRING: u32 = 1 << 0;
    /// [`VIRTIO_MMIO_INTERRUPT_STATUS`] bit: the device configuration
    /// changed.
    VIRTIO_MMIO_INT_CONFIG: u32 = 1 << 1;
}

/// The value of the [`VIRTIO_MMIO_MAGIC_VALUE`] register: the bytes "virt",
/// little endian (spec 4.2.2; `drivers/virtio/virtio_mmio.c` compares with
/// `'v' | 'i' << 8 | 'r' << 16 | 't' << 24`).  Not a Linux macro.
pub const MMIO_MAGIC: u32 = u32::from_le_bytes(*b"virt");
/// [`VIRTIO_MMIO_VERSION`] of a legacy virtio-mmio device (with
/// `GUEST_PAGE_SIZE`, `QUEUE_ALIGN` and `QUEUE_PFN`).  Not a Linux macro.
pub const MMIO_VERSION_LEGACY: u32 = 1;
/// [`VIRTIO_MMIO_VERSION`] of a virtio 1.x virtio-mmio device (spec 4.2.2).
/// Not a Linux macro.
pub const MMIO_VERSION_MODERN: u32 = 2;

/// The mask of feature bit number `bit` in a 64-bit feature set; zero for
/// bit numbers beyond 63.
pub const fn feature_mask(bit: u32) -> u64 {
    match 1u64.checked_shl(bit) {
        Some(mask) => mask,
        None => 0,
    }
}

/// Whether feature bit number `bit` is set in `features`.
pub const fn has_feature(features: u64, bit: u32) -> bool {
    features & feature_mask(bit) != 0
}

/// Whether `bit` is one of the feature bits reserved for the transport and
/// the virtqueue mechanisms ([`VIRTIO_TRANSPORT_F_START`] up to, but not
/// including, [`VIRTIO_TRANSPORT_F_END`], as `vring_transport_features()`
/// in Linux iterates them) rather than a device-specific one.
pub const fn is_transport_feature(bit: u32) -> bool {
    bit >= VIRTIO_TRANSPORT_F_START && bit < VIRTIO_TRANSPORT_F_END
}

/// The 32-bit word `select` of a feature set, as the virtio-mmio
/// `DEVICE_FEATURES` register shows it after `select` was written to
/// `DEVICE_FEATURES_SEL`: word 0 is bits 0-31, word 1 bits 32-63, and
/// every other word is zero.
pub const fn feature_word(features: u64, select: u32) -> u32 {
    match select {
        0 => features as u32,
        1 => (features >> 32) as u32,
        _ => 0,
    }
}

/// `features` with its 32-bit word `select` replaced by `word`, as a device
/// assembles what the driver writes to `DRIVER_FEATURES` after `select` was
/// written to `DRIVER_FEATURES_SEL`; words beyond 1 do not exist, so
/// `features` is returned unchanged for them.
pub const fn with_feature_word(features: u64, select: u32, word: u32) -> u64 {
    match select {
        0 => (features & !0xffff_ffff) | word as u64,
        1 => (features & 0xffff_ffff) | ((word as u64) << 32),
        _ => features,
    }
}

abi_struct! {
    /// One entry of a split virtqueue's descriptor table (Linux
    /// `struct vring_desc`, 16 bytes; spec 2.7.5 `struct virtq_desc`).
    #[derive(Default)]
    pub struct VringDesc {
        /// Guest physical address of the buffer.
        pub addr: u64,
        /// Length of the buffer in bytes.
        pub len: u32,
        /// `VRING_DESC_F_*` bits.
        pub flags: u16,
        /// Index of the next descriptor of the chain if
        /// [`VRING_DESC_F_NEXT`] is set.
        pub next: u16,
    }
}

impl VringDesc {
    /// Whether the chain continues at [`VringDesc::next`].
    pub const fn has_next(&self) -> bool {
        self.flags & VRING_DESC_F_NEXT != 0
    }

    /// Whether the device may write the buffer (and must not read it).
    pub const fn is_write_only(&self) -> bool {
        self.flags & VRING_DESC_F_WRITE != 0
    }

    /// Whether the buffer is a table of indirect descriptors.
    pub const fn is_indirect(&self) -> bool {
        self.flags & VRING_DESC_F_INDIRECT != 0
    }
}

assert_layout!(VringDesc, size 16, { addr: 0, len: 8, flags: 12, next: 14 });

abi_struct! {
    /// The fixed header of a split virtqueue's available ring, written by
    /// the driver (Linux `struct vring_avail`; spec 2.7.6
    /// `struct virtq_avail`).
    ///
    /// In memory the header is followed by `queue_size` descriptor head
    /// indexes (`u16`) and then, with [`VIRTIO_RING_F_EVENT_IDX`], the
    /// `used_event` index (at [`used_event_offset`]).
    #[derive(Default)]
    pub struct VringAvail {
        /// [`VRING_AVAIL_F_NO_INTERRUPT`] or 0.
        pub flags: u16,
        /// Where the driver will put the next head, modulo the queue size;
        /// it only increases (wrapping at 2^16).
        pub idx: u16,
        /// The start of the ring of heads (a flexible array member in C).
        pub ring: [u16; 0],
    }
}

assert_layout!(VringAvail, size 4, { flags: 0, idx: 2, ring: 4 });

abi_struct! {
    /// One entry of a split virtqueue's used ring (Linux
    /// `struct vring_used_elem`, 8 bytes; spec 2.7.8
    /// `struct virtq_used_elem`).
    #[derive(Default)]
    pub struct VringUsedElem {
        /// The index of the head of the used descriptor chain (`u32` for
        /// padding reasons).
        pub id: u32,
        /// How many bytes the device wrote into the chain's buffers.
        pub len: u32,
    }
}

assert_layout!(VringUsedElem, size 8, { id: 0, len: 4 });

abi_struct! {
    /// The fixed header of a split virtqueue's used ring, written by the
    /// device (Linux `struct vring_used`; spec 2.7.8 `struct virtq_used`).
    ///
    /// In memory the header is followed by `queue_size` [`VringUsedElem`]
    /// and then, with [`VIRTIO_RING_F_EVENT_IDX`], the `avail_event` index
    /// (at [`avail_event_offset`]).  Its alignment is 4, like the C type's
    /// (whose flexible array has that alignment).
    #[derive(Default)]
    pub struct VringUsed {
        /// [`VRING_USED_F_NO_NOTIFY`] or 0.
        pub flags: u16,
        /// Where the device will put the next used element, modulo the
        /// queue size; it only increases (wrapping at 2^16).
        pub idx: u16,
        /// The start of the ring of used elements (a flexible array member
        /// in C).
        pub ring: [VringUsedElem; 0],
    }
}

assert_layout!(VringUsed, size 4, { flags: 0, idx: 2, ring: 4 });

abi_struct! {
    /// The driver or device event suppression area of a packed virtqueue
    /// (Linux `struct vring_packed_desc_event`; spec 2.8
    /// `struct pvirtq_event_suppress`).
    #[derive(Default)]
    pub struct VringPackedDescEvent {
        /// Descriptor ring offset (bits 0-14) and wrap counter (bit
        /// [`VRING_PACKED_EVENT_F_WRAP_CTR`]) of the descriptor to notify
        /// for, with [`VRING_PACKED_EVENT_FLAG_DESC`].
        pub off_wrap: u16,
        /// One of the `VRING_PACKED_EVENT_FLAG_*` values.
        pub flags: u16,
    }
}

assert_layout!(VringPackedDescEvent, size 4, { off_wrap: 0, flags: 2 });

abi_struct! {
    /// One descriptor of a packed virtqueue (Linux
    /// `struct vring_packed_desc`, 16 bytes; spec 2.8
    /// `struct pvirtq_desc`).
    #[derive(Default)]
    pub struct VringPackedDesc {
        /// Guest physical address of the buffer.
        pub addr: u64,
        /// Length of the buffer in bytes.
        pub len: u32,
        /// The buffer ID, returned by the device when it uses the buffer.
        pub id: u16,
        /// `VRING_DESC_F_*` bits plus the bits numbered
        /// [`VRING_PACKED_DESC_F_AVAIL`] and [`VRING_PACKED_DESC_F_USED`].
        pub flags: u16,
    }
}

assert_layout!(VringPackedDesc, size 16, { addr: 0, len: 8, id: 12, flags: 14 });

const _: () = assert!(align_of::<VringDesc>() <= VRING_DESC_ALIGN_SIZE);
const _: () = assert!(align_of::<VringAvail>() == VRING_AVAIL_ALIGN_SIZE);
const _: () = assert!(align_of::<VringUsed>() == VRING_USED_ALIGN_SIZE);

/// Whether `queue_size` is a valid size for a split virtqueue: a nonzero
/// power of two (spec 2.7; the `u16` type already caps it at 32768).
pub const fn is_valid_split_queue_size(queue_size: u16) -> bool {
    queue_size.is_power_of_two()
}

/// The size in bytes of the descriptor table of a queue of `queue_size`
/// entries (spec 2.7: 16 × queue size).
pub const fn desc_table_size(queue_size: u16) -> usize {
    queue_size as usize * size_of::<VringDesc>()
}

/// The size in bytes of the available ring of a queue of `queue_size`
/// entries, `used_event` included (spec 2.7: 6 + 2 × queue size).
pub const fn avail_ring_size(queue_size: u16) -> usize {
    used_event_offset(queue_size) + size_of::<u16>()
}

/// The size in bytes of the used ring of a queue of `queue_size` entries,
/// `avail_event` included (spec 2.7: 6 + 8 × queue size).
pub const fn used_ring_size(queue_size: u16) -> usize {
    avail_event_offset(queue_size) + size_of::<u16>()
}

/// The offset of the `used_event` index within the available ring: right
/// after the `queue_size` heads (Linux macro `vring_used_event`).
pub const fn used_event_offset(queue_size: u16) -> usize {
    size_of::<VringAvail>() + queue_size as usize * size_of::<u16>()
}

/// The offset of the `avail_event` index within the used ring: right after
/// the `queue_size` used elements (Linux macro `vring_avail_event`).
pub const fn avail_event_offset(queue_size: u16) -> usize {
    size_of::<VringUsed>() + queue_size as usize * size_of::<VringUsedElem>()
}

/// In the contiguous legacy layout of a queue of `num` entries (Linux
/// `vring_init()`; spec 2.7.2), the offset of the used ring: descriptor
/// table, then available ring, then padding up to a multiple of `align`
/// (the legacy `QUEUE_ALIGN`, usually 4096).  The descriptor table is at
/// offset 0 and the available ring at [`desc_table_size`]`(num)`.
///
/// `None` if `align` is not a power of two (Linux assumes it is) or the
/// offset overflows.
pub const fn vring_used_offset(num: u16, align: usize) -> Option<usize> {
    if !align.is_power_of_two() {
        return None;
    }
    match (desc_table_size(num) + avail_ring_size(num)).checked_add(align - 1) {
        Some(end) => Some(end & !(align - 1)),
        None => None,
    }
}

/// The total size of the contiguous legacy layout of a queue of `num`
/// entries with used-ring alignment `align` (Linux `vring_size()`); `None`
/// as for [`vring_used_offset`].
pub const fn vring_size(num: u16, align: usize) -> Option<usize> {
    match vring_used_offset(num, align) {
        Some(used) => used.checked_add(used_ring_size(num)),
        None => None,
    }
}

/// Whether moving a ring index from `old` to `new_idx` passes the event
/// index `event_idx` the other side published, so that a notification (or
/// interrupt) is due (Linux `vring_need_event()`, spec 2.7.7 and 2.7.10,
/// with [`VIRTIO_RING_F_EVENT_IDX`]).  All arithmetic wraps at 2^16.
pub const fn vring_need_event(event_idx: u16, new_idx: u16, old: u16) -> bool {
    new_idx.wrapping_sub(event_idx).wrapping_sub(1) < new_idx.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_words_split_and_join_the_set() {
        let features = feature_mask(VIRTIO_F_VERSION_1) | feature_mask(VIRTIO_RING_F_EVENT_IDX);
        assert_eq!(feature_word(features, 0), 1 << 29);
        assert_eq!(feature_word(features, 1), 1);
        assert_eq!(feature_word(features, 2), 0);
        assert_eq!(feature_word(u64::MAX, u32::MAX), 0);

        let joined = with_feature_word(with_feature_word(0, 1, 1), 0, 1 << 29);
        assert_eq!(joined, features);
        assert_eq!(with_feature_word(u64::MAX, 0, 0), 0xffff_ffff_0000_0000);
        assert_eq!(with_feature_word(u64::MAX, 1, 0), 0xffff_ffff);
        assert_eq!(with_feature_word(features, 2, u32::MAX), features);
        assert!(has_feature(features, VIRTIO_F_VERSION_1));
        assert!(!has_feature(features, VIRTIO_F_ACCESS_PLATFORM));
        assert!(!has_feature(u64::MAX, 64));
        assert_eq!(feature_mask(64), 0);
    }

    #[test]
    fn transport_feature_range_excludes_its_end() {
        assert!(!is_transport_feature(VIRTIO_F_NOTIFY_ON_EMPTY));
        assert!(!is_transport_feature(VIRTIO_F_ANY_LAYOUT));
        assert!(is_transport_feature(VIRTIO_RING_F_INDIRECT_DESC));
        assert!(is_transport_feature(VIRTIO_F_VERSION_1));
        assert!(is_transport_feature(VIRTIO_F_ADMIN_VQ));
        assert!(!is_transport_feature(VIRTIO_TRANSPORT_F_END));
    }

    #[test]
    fn mmio_magic_spells_virt() {
        assert_eq!(MMIO_MAGIC, 0x7472_6976);
        assert_eq!(&MMIO_MAGIC.to_le_bytes(), b"virt");
    }

    #[test]
    fn descriptor_flag_accessors() {
        let desc = VringDesc {
            flags: VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            ..VringDesc::default()
        };
        assert!(desc.has_next() && desc.is_write_only() && !desc.is_indirect());
        let desc = VringDesc {
            flags: VRING_DESC_F_INDIRECT,
            ..desc
        };
        assert!(!desc.has_next() && !desc.is_write_only() && desc.is_indirect());
    }

    #[test]
    fn split_ring_part_sizes_follow_the_spec_formulas() {
        for queue_size in [1u16, 2, 256, 1024, 32768] {
            let n = usize::from(queue_size);
            assert!(is_valid_split_queue_size(queue_size));
            assert_eq!(desc_table_size(queue_size), 16 * n);
            assert_eq!(avail_ring_size(queue_size), 6 + 2 * n);
            assert_eq!(used_ring_size(queue_size), 6 + 8 * n);
            assert_eq!(used_event_offset(queue_size), 4 + 2 * n);
            assert_eq!(avail_event_offset(queue_size), 4 + 8 * n);
        }
        assert!(!is_valid_split_queue_size(0));
        assert!(!is_valid_split_queue_size(3));
        assert!(!is_valid_split_queue_size(u16::MAX));
    }

    #[test]
    fn legacy_layout_pads_the_used_ring_to_the_alignment() {
        // 256 entries: 4096 bytes of descriptors, 518 of available ring.
        assert_eq!(vring_used_offset(256, 4096), Some(8192));
        assert_eq!(vring_size(256, 4096), Some(8192 + 6 + 8 * 256));
        assert_eq!(vring_used_offset(256, 2), Some(4096 + 518));
        assert_eq!(vring_used_offset(256, 0), None);
        assert_eq!(vring_size(256, 3), None);
        // The largest power of two still works on a 64-bit target.
        let huge = usize::MAX / 2 + 1;
        assert_eq!(vring_used_offset(1, huge), Some(huge));
        assert_eq!(vring_size(1, huge), Some(huge + 14));
    }

    #[test]
    fn need_event_fires_exactly_when_the_event_index_is_passed() {
        // Moving from 10 to 12 passes entries 10 and 11.
        assert!(vring_need_event(10, 12, 10));
        assert!(vring_need_event(11, 12, 10));
        assert!(!vring_need_event(12, 12, 10));
        assert!(!vring_need_event(9, 12, 10));
        // No movement, no event.
        assert!(!vring_need_event(10, 10, 10));
        // Across the 2^16 wrap.
        assert!(vring_need_event(u16::MAX, 1, u16::MAX - 1));
        assert!(vring_need_event(0, 1, u16::MAX));
        assert!(!vring_need_event(1, 1, u16::MAX));
    }
}
