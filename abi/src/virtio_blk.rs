//! virtio-blk: the block device's feature bits, configuration space,
//! request header, request types and status codes.
//!
//! Sources: the virtio 1.2 specification, section 5.2 "Block Device"
//! (5.2.3 feature bits, 5.2.4 device configuration layout, 5.2.6 device
//! operation), and the Linux header `include/uapi/linux/virtio_blk.h`,
//! mirrored completely (legacy parts and the zoned-device structures
//! included).  The transport-independent parts are in [`super::virtio`].
//!
//! # Requests
//!
//! A request is one descriptor chain: a device-readable
//! [`VirtioBlkOuthdr`], then the data buffers (device-readable for
//! [`VIRTIO_BLK_T_OUT`], device-writable for [`VIRTIO_BLK_T_IN`] and
//! [`VIRTIO_BLK_T_GET_ID`]; an array of [`VirtioBlkDiscardWriteZeroes`] for
//! discard, write zeroes and secure erase), then one device-writable status
//! byte, a `VIRTIO_BLK_S_*` value.  Sector numbers and counts are always
//! in units of [`VIRTIO_BLK_SECTOR_SIZE`], whatever the device's
//! [`VirtioBlkConfig::blk_size`].
//!
//! # Byte order
//!
//! Multi-byte fields are little endian on the wire for modern devices
//! (`__le*`, `__virtio*`); they are plain integers here because the guest
//! and the host of pvrs are both x86-64, little endian.
//!
//! # Layout versus the C structs
//!
//! Linux declares [`VirtioBlkConfig`] `__attribute__((packed))`, but every
//! field of it is at an offset that is a multiple of its own alignment and
//! the size (96) is a multiple of 8, so plain `#[repr(C)]` gives the same
//! size and offsets (checked below and against the headers by the tests).
//! The Rust type has alignment 8 rather than 1; the configuration space is
//! read field by field through the transport (e.g. at
//! `VIRTIO_MMIO_CONFIG + offset_of!(VirtioBlkConfig, capacity)`), or copied
//! out as bytes, so this never matters.  The nested
//! [`VirtioBlkGeometry`] and [`VirtioBlkZonedCharacteristics`] are not
//! packed in C either.

use core::mem::align_of;

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// Feature bit: [`VirtioBlkConfig::size_max`] is the largest segment.
    VIRTIO_BLK_F_SIZE_MAX: u32 = 1;
    /// Feature bit: [`VirtioBlkConfig::seg_max`] is the most segments per
    /// request.
    VIRTIO_BLK_F_SEG_MAX: u32 = 2;
    /// Feature bit: [`VirtioBlkConfig::geometry`] is valid (legacy).
    VIRTIO_BLK_F_GEOMETRY: u32 = 4;
    /// Feature bit: the device is read-only.
    VIRTIO_BLK_F_RO: u32 = 5;
    /// Feature bit: [`VirtioBlkConfig::blk_size`] is valid.
    VIRTIO_BLK_F_BLK_SIZE: u32 = 6;
    /// Feature bit: the topology fields of [`VirtioBlkConfig`]
    /// (`physical_block_exp` to `opt_io_size`) are valid.
    VIRTIO_BLK_F_TOPOLOGY: u32 = 10;
    /// Feature bit: the device has [`VirtioBlkConfig::num_queues`] request
    /// queues.
    VIRTIO_BLK_F_MQ: u32 = 12;
    /// Feature bit: [`VIRTIO_BLK_T_DISCARD`] is supported.
    VIRTIO_BLK_F_DISCARD: u32 = 13;
    /// Feature bit: [`VIRTIO_BLK_T_WRITE_ZEROES`] is supported.
    VIRTIO_BLK_F_WRITE_ZEROES: u32 = 14;
    /// Feature bit: [`VIRTIO_BLK_T_SECURE_ERASE`] is supported.
    VIRTIO_BLK_F_SECURE_ERASE: u32 = 16;
    /// Feature bit: the device is zoned ([`VirtioBlkConfig::zoned`]).
    VIRTIO_BLK_F_ZONED: u32 = 17;
    /// Legacy feature bit: the device supports request barriers.
    VIRTIO_BLK_F_BARRIER: u32 = 0;
    /// Legacy feature bit: the device supports SCSI command passthrough.
    VIRTIO_BLK_F_SCSI: u32 = 7;
    /// Feature bit: [`VIRTIO_BLK_T_FLUSH`] is supported, i.e. the device
    /// may cache writes (among Linux's legacy bits, but a regular feature
    /// in the spec).
    VIRTIO_BLK_F_FLUSH: u32 = 9;
    /// Feature bit: the driver can switch the cache mode through
    /// [`VirtioBlkConfig::wce`] (among Linux's legacy bits, but a regular
    /// feature in the spec).
    VIRTIO_BLK_F_CONFIG_WCE: u32 = 11;
    /// Deprecated userspace name of [`VIRTIO_BLK_F_FLUSH`] (defined only
    /// outside the kernel).
    VIRTIO_BLK_F_WCE: u32 = VIRTIO_BLK_F_FLUSH;

    /// The length of the device ID string [`VIRTIO_BLK_T_GET_ID`] returns
    /// (NUL-padded, not necessarily NUL-terminated).
    VIRTIO_BLK_ID_BYTES: usize = 20;

    /// Request type: read.
    VIRTIO_BLK_T_IN: u32 = 0;
    /// Request type: write.
    VIRTIO_BLK_T_OUT: u32 = 1;
    /// Legacy request type: SCSI command (followed by a
    /// [`VirtioScsiInhdr`]).
    VIRTIO_BLK_T_SCSI_CMD: u32 = 2;
    /// Request type: flush the write cache.
    VIRTIO_BLK_T_FLUSH: u32 = 4;
    /// Request type: read the [`VIRTIO_BLK_ID_BYTES`]-byte device ID.
    VIRTIO_BLK_T_GET_ID: u32 = 8;
    /// Request type: discard sector ranges.
    VIRTIO_BLK_T_DISCARD: u32 = 11;
    /// Request type: write zeroes to sector ranges.
    VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;
    /// Request type: securely erase sector ranges.
    VIRTIO_BLK_T_SECURE_ERASE: u32 = 14;
    /// Zoned request type: append to a zone.
    VIRTIO_BLK_T_ZONE_APPEND: u32 = 15;
    /// Zoned request type: report zones ([`VirtioBlkZoneReport`]).
    VIRTIO_BLK_T_ZONE_REPORT: u32 = 16;
    /// Zoned request type: open a zone.
    VIRTIO_BLK_T_ZONE_OPEN: u32 = 18;
    /// Zoned request type: close a zone.
    VIRTIO_BLK_T_ZONE_CLOSE: u32 = 20;
    /// Zoned request type: finish a zone.
    VIRTIO_BLK_T_ZONE_FINISH: u32 = 22;
    /// Zoned request type: reset a zone.
    VIRTIO_BLK_T_ZONE_RESET: u32 = 24;
    /// Zoned request type: reset all zones.
    VIRTIO_BLK_T_ZONE_RESET_ALL: u32 = 26;
    /// Legacy request type flag: a barrier before this request.
    VIRTIO_BLK_T_BARRIER: u32 = 0x8000_0000;

    /// [`VirtioBlkZonedCharacteristics::model`]: not zoned.
    VIRTIO_BLK_Z_NONE: u8 = 0;
    /// [`VirtioBlkZonedCharacteristics::model`]: host-managed zoned device.
    VIRTIO_BLK_Z_HM: u8 = 1;
    /// [`VirtioBlkZonedCharacteristics::model`]: host-aware zoned device.
    VIRTIO_BLK_Z_HA: u8 = 2;

    /// [`VirtioBlkZoneDescriptor::z_type`]: conventional zone.
    VIRTIO_BLK_ZT_CONV: u8 = 1;
    /// [`VirtioBlkZoneDescriptor::z_type`]: sequential write required.
    VIRTIO_BLK_ZT_SWR: u8 = 2;
    /// [`VirtioBlkZoneDescriptor::z_type`]: sequential write preferred.
    VIRTIO_BLK_ZT_SWP: u8 = 3;

    /// [`VirtioBlkZoneDescriptor::z_state`]: not a write pointer zone
    /// (conventional zones only).
    VIRTIO_BLK_ZS_NOT_WP: u8 = 0;
    /// [`VirtioBlkZoneDescriptor::z_state`]: empty.
    VIRTIO_BLK_ZS_EMPTY: u8 = 1;
    /// [`VirtioBlkZoneDescriptor::z_state`]: implicitly open.
    VIRTIO_BLK_ZS_IOPEN: u8 = 2;
    /// [`VirtioBlkZoneDescriptor::z_state`]: explicitly open.
    VIRTIO_BLK_ZS_EOPEN: u8 = 3;
    /// [`VirtioBlkZoneDescriptor::z_state`]: closed.
    VIRTIO_BLK_ZS_CLOSED: u8 = 4;
    /// [`VirtioBlkZoneDescriptor::z_state`]: read-only.
    VIRTIO_BLK_ZS_RDONLY: u8 = 13;
    /// [`VirtioBlkZoneDescriptor::z_state`]: full.
    VIRTIO_BLK_ZS_FULL: u8 = 14;
    /// [`VirtioBlkZoneDescriptor::z_state`]: offline.
    VIRTIO_BLK_ZS_OFFLINE: u8 = 15;

    /// [`VirtioBlkDiscardWriteZeroes::flags`] bit: the device may
    /// deallocate the range (write zeroes only).
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: u32 = 0x0000_0001;

    /// Request status: success.
    VIRTIO_BLK_S_OK: u8 = 0;
    /// Request status: device or driver error.
    VIRTIO_BLK_S_IOERR: u8 = 1;
    /// Request status: the request type is not supported.
    VIRTIO_BLK_S_UNSUPP: u8 = 2;
    /// Zoned request status: the command is invalid for the zone.
    VIRTIO_BLK_S_ZONE_INVALID_CMD: u8 = 3;
    /// Zoned request status: the write is not at the zone's write pointer.
    VIRTIO_BLK_S_ZONE_UNALIGNED_WP: u8 = 4;
    /// Zoned request status: too many open zones.
    VIRTIO_BLK_S_ZONE_OPEN_RESOURCE: u8 = 5;
    /// Zoned request status: too many active zones.
    VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE: u8 = 6;
}

/// The unit of every sector number and count in virtio-blk (capacity,
/// [`VirtioBlkOuthdr::sector`], discard ranges): 512 bytes, regardless of
/// the device's logical block size.  Not a macro of the uapi header (the
/// spec and Linux's `SECTOR_SIZE` define it).
pub const VIRTIO_BLK_SECTOR_SIZE: u64 = 1 << VIRTIO_BLK_SECTOR_SHIFT;
/// log2 of [`VIRTIO_BLK_SECTOR_SIZE`] (Linux `SECTOR_SHIFT`).
pub const VIRTIO_BLK_SECTOR_SHIFT: u32 = 9;

abi_struct! {
    /// The legacy disk geometry in [`VirtioBlkConfig::geometry`] (Linux
    /// `struct virtio_blk_geometry`, 4 bytes).
    #[derive(Default)]
    pub struct VirtioBlkGeometry {
        /// Number of cylinders.
        pub cylinders: u16,
        /// Number of heads.
        pub heads: u8,
        /// Sectors per track.
        pub sectors: u8,
    }
}

assert_layout!(VirtioBlkGeometry, size 4, { cylinders: 0, heads: 2, sectors: 3 });

abi_struct! {
    /// The zoned-device part of [`VirtioBlkConfig`] (Linux
    /// `struct virtio_blk_zoned_characteristics`, 24 bytes), valid with
    /// [`VIRTIO_BLK_F_ZONED`].
    #[derive(Default)]
    pub struct VirtioBlkZonedCharacteristics {
        /// Zone size in sectors.
        pub zone_sectors: u32,
        /// The most zones that can be open at once.
        pub max_open_zones: u32,
        /// The most zones that can be active at once.
        pub max_active_zones: u32,
        /// The largest zone append, in sectors.
        pub max_append_sectors: u32,
        /// Write granularity in bytes.
        pub write_granularity: u32,
        /// One of the `VIRTIO_BLK_Z_*` models.
        pub model: u8,
        /// Reserved.
        pub unused2: [u8; 3],
    }
}

assert_layout!(VirtioBlkZonedCharacteristics, size 24, {
    zone_sectors: 0, max_open_zones: 4, max_active_zones: 8, max_append_sectors: 12,
    write_granularity: 16, model: 20, unused2: 21,
});

abi_struct! {
    /// The device configuration space of a block device (Linux
    /// `struct virtio_blk_config`, 96 bytes; spec 5.2.4).  Each field is
    /// only meaningful if the feature bit named in its description was
    /// negotiated; `capacity` always is.
    #[derive(Default)]
    pub struct VirtioBlkConfig {
        /// Size of the device in [`VIRTIO_BLK_SECTOR_SIZE`] sectors.
        pub capacity: u64,
        /// Largest segment in bytes ([`VIRTIO_BLK_F_SIZE_MAX`]).
        pub size_max: u32,
        /// Most segments per request ([`VIRTIO_BLK_F_SEG_MAX`]).
        pub seg_max: u32,
        /// Legacy geometry ([`VIRTIO_BLK_F_GEOMETRY`]).
        pub geometry: VirtioBlkGeometry,
        /// Logical block size in bytes ([`VIRTIO_BLK_F_BLK_SIZE`]).
        pub blk_size: u32,
        /// log2 of logical blocks per physical block
        /// ([`VIRTIO_BLK_F_TOPOLOGY`]).
        pub physical_block_exp: u8,
        /// Offset of the first aligned logical block
        /// ([`VIRTIO_BLK_F_TOPOLOGY`]).
        pub alignment_offset: u8,
        /// Suggested minimum I/O size in logical blocks
        /// ([`VIRTIO_BLK_F_TOPOLOGY`]).
        pub min_io_size: u16,
        /// Optimal sustained I/O size in logical blocks
        /// ([`VIRTIO_BLK_F_TOPOLOGY`]).
        pub opt_io_size: u32,
        /// Write cache mode, 0 write-through, 1 write-back
        /// ([`VIRTIO_BLK_F_CONFIG_WCE`]).
        pub wce: u8,
        /// Reserved.
        pub unused: u8,
        /// Number of request queues ([`VIRTIO_BLK_F_MQ`]).
        pub num_queues: u16,
        /// Most sectors in one discard segment ([`VIRTIO_BLK_F_DISCARD`]).
        pub max_discard_sectors: u32,
        /// Most segments in one discard request ([`VIRTIO_BLK_F_DISCARD`]).
        pub max_discard_seg: u32,
        /// Alignment of discard ranges in sectors ([`VIRTIO_BLK_F_DISCARD`]).
        pub discard_sector_alignment: u32,
        /// Most sectors in one write zeroes segment
        /// ([`VIRTIO_BLK_F_WRITE_ZEROES`]).
        pub max_write_zeroes_sectors: u32,
        /// Most segments in one write zeroes request
        /// ([`VIRTIO_BLK_F_WRITE_ZEROES`]).
        pub max_write_zeroes_seg: u32,
        /// 1 if write zeroes may deallocate sectors
        /// ([`VIRTIO_BLK_F_WRITE_ZEROES`]).
        pub write_zeroes_may_unmap: u8,
        /// Reserved.
        pub unused1: [u8; 3],
        /// Most sectors in one secure erase segment
        /// ([`VIRTIO_BLK_F_SECURE_ERASE`]).
        pub max_secure_erase_sectors: u32,
        /// Most segments in one secure erase request
        /// ([`VIRTIO_BLK_F_SECURE_ERASE`]).
        pub max_secure_erase_seg: u32,
        /// Alignment of secure erase ranges in sectors
        /// ([`VIRTIO_BLK_F_SECURE_ERASE`]).
        pub secure_erase_sector_alignment: u32,
        /// Zoned device characteristics ([`VIRTIO_BLK_F_ZONED`]).
        pub zoned: VirtioBlkZonedCharacteristics,
    }
}

const _: () = assert!(align_of::<VirtioBlkConfig>() == 8);
assert_layout!(VirtioBlkConfig, size 96, {
    capacity: 0, size_max: 8, seg_max: 12, geometry: 16, blk_size: 20,
    physical_block_exp: 24, alignment_offset: 25, min_io_size: 26, opt_io_size: 28,
    wce: 32, unused: 33, num_queues: 34,
    max_discard_sectors: 36, max_discard_seg: 40, discard_sector_alignment: 44,
    max_write_zeroes_sectors: 48, max_write_zeroes_seg: 52, write_zeroes_may_unmap: 56,
    unused1: 57, max_secure_erase_sectors: 60, max_secure_erase_seg: 64,
    secure_erase_sector_alignment: 68, zoned: 72,
});

impl VirtioBlkConfig {
    /// The device size in bytes (`None` if it does not fit in a `u64`).
    pub const fn capacity_bytes(&self) -> Option<u64> {
        self.capacity.checked_mul(VIRTIO_BLK_SECTOR_SIZE)
    }
}

abi_struct! {
    /// The header that starts every request (Linux
    /// `struct virtio_blk_outhdr`, 16 bytes; the spec's `struct
    /// virtio_blk_req` up to `sector`).
    #[derive(Default)]
    pub struct VirtioBlkOuthdr {
        /// One of the `VIRTIO_BLK_T_*` request types (C `type`, a Rust
        /// keyword).
        pub type_: u32,
        /// I/O priority (ignored by most devices; reserved in the spec).
        pub ioprio: u32,
        /// The first sector, in [`VIRTIO_BLK_SECTOR_SIZE`] units, for reads
        /// and writes; zero for other requests.
        pub sector: u64,
    }
}

assert_layout!(VirtioBlkOuthdr, size 16, { type_: 0, ioprio: 4, sector: 8 });

impl VirtioBlkOuthdr {
    /// The byte offset on the device of [`VirtioBlkOuthdr::sector`] (`None`
    /// if it does not fit in a `u64`).
    pub const fn byte_offset(&self) -> Option<u64> {
        self.sector.checked_mul(VIRTIO_BLK_SECTOR_SIZE)
    }
}

abi_struct! {
    /// One zone of a [`VIRTIO_BLK_T_ZONE_REPORT`] reply (Linux
    /// `struct virtio_blk_zone_descriptor`, 64 bytes).
    pub struct VirtioBlkZoneDescriptor {
        /// Zone capacity in sectors.
        pub z_cap: u64,
        /// First sector of the zone.
        pub z_start: u64,
        /// Write pointer position in sectors.
        pub z_wp: u64,
        /// One of the `VIRTIO_BLK_ZT_*` zone types.
        pub z_type: u8,
        /// One of the `VIRTIO_BLK_ZS_*` zone states.
        pub z_state: u8,
        /// Reserved.
        pub reserved: [u8; 38],
    }
}

impl VirtioBlkZoneDescriptor {
    /// An all-zero descriptor (`Default` is not derivable for the reserved
    /// array).
    pub const fn zeroed() -> Self {
        Self {
            z_cap: 0,
            z_start: 0,
            z_wp: 0,
            z_type: 0,
            z_state: 0,
            reserved: [0; 38],
        }
    }
}

assert_layout!(VirtioBlkZoneDescriptor, size 64, {
    z_cap: 0, z_start: 8, z_wp: 16, z_type: 24, z_state: 25, reserved: 26,
});

abi_struct! {
    /// The header of a [`VIRTIO_BLK_T_ZONE_REPORT`] reply (Linux
    /// `struct virtio_blk_zone_report`, 64 bytes), followed by `nr_zones`
    /// [`VirtioBlkZoneDescriptor`].
    pub struct VirtioBlkZoneReport {
        /// Number of zone descriptors that follow.
        pub nr_zones: u64,
        /// Reserved.
        pub reserved: [u8; 56],
        /// The start of the descriptors (a flexible array member in C).
        pub zones: [VirtioBlkZoneDescriptor; 0],
    }
}

impl VirtioBlkZoneReport {
    /// An all-zero header.
    pub const fn zeroed() -> Self {
        Self {
            nr_zones: 0,
            reserved: [0; 56],
            zones: [],
        }
    }
}

assert_layout!(VirtioBlkZoneReport, size 64, { nr_zones: 0, reserved: 8, zones: 64 });

abi_struct! {
    /// One range of a discard, write zeroes or secure erase request (Linux
    /// `struct virtio_blk_discard_write_zeroes`, 16 bytes).
    #[derive(Default)]
    pub struct VirtioBlkDiscardWriteZeroes {
        /// First sector of the range.
        pub sector: u64,
        /// Number of sectors in the range.
        pub num_sectors: u32,
        /// [`VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`] or 0.
        pub flags: u32,
    }
}

assert_layout!(VirtioBlkDiscardWriteZeroes, size 16, { sector: 0, num_sectors: 8, flags: 12 });

impl VirtioBlkDiscardWriteZeroes {
    /// Whether the driver allows the device to deallocate the range.
    pub const fn may_unmap(&self) -> bool {
        self.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0
    }
}

abi_struct! {
    /// The legacy SCSI passthrough reply that precedes the status byte of a
    /// [`VIRTIO_BLK_T_SCSI_CMD`] request (Linux `struct virtio_scsi_inhdr`,
    /// 16 bytes).
    #[derive(Default)]
    pub struct VirtioScsiInhdr {
        /// SCSI error code.
        pub errors: u32,
        /// Number of data bytes transferred.
        pub data_len: u32,
        /// Number of sense bytes.
        pub sense_len: u32,
        /// Residual count.
        pub residual: u32,
    }
}

assert_layout!(VirtioScsiInhdr, size 16, { errors: 0, data_len: 4, sense_len: 8, residual: 12 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sector_arithmetic_uses_512_byte_sectors() {
        assert_eq!(VIRTIO_BLK_SECTOR_SIZE, 512);
        let config = VirtioBlkConfig {
            capacity: 2048,
            ..VirtioBlkConfig::default()
        };
        assert_eq!(config.capacity_bytes(), Some(1 << 20));
        let huge = VirtioBlkConfig {
            capacity: u64::MAX / 256,
            ..config
        };
        assert_eq!(huge.capacity_bytes(), None);
        let header = VirtioBlkOuthdr {
            type_: VIRTIO_BLK_T_IN,
            ioprio: 0,
            sector: 3,
        };
        assert_eq!(header.byte_offset(), Some(1536));
    }

    #[test]
    fn unmap_flag_is_read_from_flags() {
        let range = VirtioBlkDiscardWriteZeroes {
            sector: 8,
            num_sectors: 16,
            flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
        };
        assert!(range.may_unmap());
        assert!(!VirtioBlkDiscardWriteZeroes::default().may_unmap());
    }

    #[test]
    fn zeroed_zone_structs_are_zero() {
        assert_eq!(VirtioBlkZoneDescriptor::zeroed().reserved, [0; 38]);
        assert_eq!(VirtioBlkZoneReport::zeroed().nr_zones, 0);
    }
}
