use std::vec::Vec;

use super::*;
use crate::kvm_api::errno::Errno;
use crate::kvm_api::constants::{
    KVM_IRQ_ROUTING_HV_SINT, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
    KVM_IRQ_ROUTING_S390_ADAPTER, KVM_IRQ_ROUTING_XEN_EVTCHN, KVM_MSI_VALID_DEVID,
};

/// A KVM_SET_GSI_ROUTING argument under construction.
#[derive(Default)]
struct Request {
    entries: Vec<kvm_irq_routing_entry>,
    flags: u32,
}

impl Request {
    fn raw(mut self, gsi: u32, type_: u32, flags: u32, union: [u32; 4]) -> Self {
        let mut u = [0u32; 8];
        u[..4].copy_from_slice(&union);
        self.entries.push(kvm_irq_routing_entry {
            gsi,
            type_,
            flags,
            pad: 0,
            u,
        });
        self
    }

    fn chip(self, gsi: u32, chip: u32, pin: u32) -> Self {
        self.raw(gsi, KVM_IRQ_ROUTING_IRQCHIP, 0, [chip, pin, 0, 0])
    }

    fn msi(self, gsi: u32, address_lo: u32, address_hi: u32, data: u32) -> Self {
        self.raw(gsi, KVM_IRQ_ROUTING_MSI, 0, [address_lo, address_hi, data, 0])
    }

    /// The argument bytes, claiming `nr` entries.
    fn bytes_with_nr(&self, nr: u32) -> Vec<u8> {
        let mut bytes = std::vec![0u8; 8 + 48 * self.entries.len()];
        kvm_irq_routing {
            nr,
            flags: self.flags,
            entries: [],
        }
        .to_bytes(&mut bytes)
        .unwrap();
        for (index, entry) in self.entries.iter().enumerate() {
            entry.to_bytes(&mut bytes[8 + 48 * index..]).unwrap();
        }
        bytes
    }

    fn bytes(&self) -> Vec<u8> {
        self.bytes_with_nr(self.entries.len() as u32)
    }
}

const NO_OPTIONS: RoutingOptions = RoutingOptions {
    split_irqchip: false,
    x2apic_ids: false,
};

fn ioapic(pin: u32) -> RouteTarget {
    RouteTarget::Irqchip {
        irqchip: Irqchip::Ioapic,
        pin,
    }
}

fn table_of(request: &Request) -> Result<GsiRoutingTable, Error> {
    let mut table = GsiRoutingTable::new();
    table.set_from_bytes(&request.bytes(), NO_OPTIONS)?;
    Ok(table)
}

#[test]
fn struct_sizes_are_the_headers() {
    // Also pinned by tests/kvm_uapi_header.rs; the parser's arithmetic
    // depends on them.
    assert_eq!(kvm_irq_routing::SIZE, 8);
    assert_eq!(kvm_irq_routing_entry::SIZE, 48);
    assert_eq!(kvm_irq_level::SIZE, 8);
}

#[test]
fn default_routing_is_kvms() {
    let mut table = GsiRoutingTable::<GSI_ROUTING_CAPACITY>::default();
    assert!(table.is_empty());
    assert!(table.targets(0).is_empty());
    table.set_default();
    assert_eq!(table.len(), 16 * 2 + 8);
    for gsi in 0..24 {
        let targets: Vec<RouteTarget> = table.targets(gsi).iter().map(|r| r.target).collect();
        let expected: Vec<RouteTarget> = match gsi {
            0..=7 => std::vec![
                RouteTarget::Irqchip {
                    irqchip: Irqchip::PicMaster,
                    pin: gsi
                },
                ioapic(gsi)
            ],
            8..=15 => std::vec![
                RouteTarget::Irqchip {
                    irqchip: Irqchip::PicSlave,
                    pin: gsi - 8
                },
                ioapic(gsi)
            ],
            _ => std::vec![ioapic(gsi)],
        };
        assert_eq!(targets, expected, "gsi {gsi}");
        assert!(table.targets(gsi).iter().all(|route| route.gsi == gsi));
        if gsi < 16 {
            assert_eq!(targets[0].pic_irq(), Some(gsi));
            assert_eq!(targets[1].ioapic_pin(), Some(gsi));
        }
        assert_eq!(table.gsi_of_pin(Irqchip::Ioapic, gsi), Some(gsi));
    }
    assert!(table.targets(24).is_empty());
    assert!(table.targets(u32::MAX).is_empty());
    assert_eq!(table.gsi_of_pin(Irqchip::PicSlave, 0), Some(8));
    assert_eq!(table.gsi_of_pin(Irqchip::PicSlave, 8), None);

    // The same routes through the parser, in KVM's order.
    let mut request = Request::default();
    for gsi in 0..24 {
        request = request.chip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
        if gsi < 16 {
            request = request.chip(gsi, gsi / 8, gsi % 8);
        }
    }
    assert_eq!(table_of(&request).unwrap().routes(), table.routes());

    // A table too small keeps what fits.
    let mut small = GsiRoutingTable::<3>::new();
    small.set_default();
    assert_eq!(small.len(), 3);
}

#[test]
fn parser_accepts_mixed_routes() {
    let request = Request::default()
        .msi(40, 0xfee0_1000, 0, 0x4031)
        .chip(5, KVM_IRQCHIP_IOAPIC, 23)
        .chip(5, KVM_IRQCHIP_PIC_SLAVE, 7)
        .raw(
            4095,
            KVM_IRQ_ROUTING_MSI,
            KVM_MSI_VALID_DEVID,
            [0xfee0_0000, 0, 0x22, 0x0100],
        );
    let table = table_of(&request).unwrap();
    assert_eq!(table.len(), 4);
    let gsis: Vec<u32> = table.routes().iter().map(|route| route.gsi).collect();
    assert_eq!(gsis, [5, 5, 40, 4095]);
    assert_eq!(table.targets(5)[0].target.pic_irq(), Some(15));
    assert_eq!(table.targets(5)[1].target, ioapic(23));
    assert_eq!(
        table.targets(40)[0].target,
        RouteTarget::Msi(MsiRoute {
            address_lo: 0xfee0_1000,
            address_hi: 0,
            data: 0x4031,
            devid: None
        })
    );
    let RouteTarget::Msi(msi) = table.targets(4095)[0].target else {
        panic!("not an MSI route");
    };
    assert_eq!(msi.devid, Some(0x100));
    assert_eq!(msi.message(false).unwrap().vector, 0x22);
    assert_eq!(table.gsi_of_pin(Irqchip::Ioapic, 23), Some(5));

    // Zero routes empty the table; extra bytes after the entries are ignored.
    let mut table = table;
    let mut bytes = Request::default().bytes();
    bytes.extend_from_slice(&[0xff; 100]);
    table.set_from_bytes(&bytes, NO_OPTIONS).unwrap();
    assert!(table.is_empty());
    assert_eq!(table.gsi_of_pin(Irqchip::Ioapic, 23), None);
}

#[test]
fn parser_refuses_bad_headers_and_short_buffers() {
    let mut table = GsiRoutingTable::<GSI_ROUTING_CAPACITY>::new();
    table.set_default();
    let before = table.routes().to_vec();
    let one = Request::default().chip(1, KVM_IRQCHIP_IOAPIC, 1);

    // nr too large: EINVAL even though the entries are missing.
    let err = table.set_from_bytes(&one.bytes_with_nr(4097), NO_OPTIONS);
    assert_eq!(err, Err(Error::TooManyRoutes));
    assert_eq!(err.unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(
        table.set_from_bytes(&one.bytes_with_nr(u32::MAX), NO_OPTIONS),
        Err(Error::TooManyRoutes)
    );
    // nr larger than the entries given: EFAULT.
    let err = table.set_from_bytes(&one.bytes_with_nr(2), NO_OPTIONS);
    assert_eq!(err, Err(Error::ShortBuffer));
    assert_eq!(err.unwrap_err().errno(), Errno::EFAULT);
    let bytes = one.bytes();
    assert_eq!(
        table.set_from_bytes(&bytes[..bytes.len() - 1], NO_OPTIONS),
        Err(Error::ShortBuffer)
    );
    for len in 0..8 {
        assert_eq!(
            table.set_from_bytes(&bytes[..len], NO_OPTIONS),
            Err(Error::ShortBuffer)
        );
    }
    // Header flags.
    let flagged = Request { flags: 1, ..Request::default() };
    assert_eq!(
        table.set_from_bytes(&flagged.bytes(), NO_OPTIONS),
        Err(Error::UnknownFlags)
    );
    assert_eq!(table.routes(), &before[..]);
}

#[test]
fn parser_refuses_bad_entries() {
    let valid = || Request::default().chip(1, KVM_IRQCHIP_IOAPIC, 1);
    let cases: Vec<(Request, Error)> = std::vec![
        // GSI out of range, wherever it is: checked before the entries.
        (
            valid().raw(99, 77, 0, [0; 4]).chip(4096, KVM_IRQCHIP_IOAPIC, 0),
            Error::TooManyRoutes
        ),
        // Unknown or unsupported types.
        (valid().raw(2, 0, 0, [0; 4]), Error::InvalidValue),
        (valid().raw(2, KVM_IRQ_ROUTING_S390_ADAPTER, 0, [0; 4]), Error::InvalidValue),
        (valid().raw(2, KVM_IRQ_ROUTING_HV_SINT, 0, [0; 4]), Error::InvalidValue),
        (valid().raw(2, KVM_IRQ_ROUTING_XEN_EVTCHN, 0, [0; 4]), Error::InvalidValue),
        (valid().raw(2, u32::MAX, 0, [0; 4]), Error::InvalidValue),
        // Pins and chips.
        (valid().chip(2, KVM_IRQCHIP_PIC_MASTER, 8), Error::InvalidValue),
        (valid().chip(2, KVM_IRQCHIP_PIC_SLAVE, 8), Error::InvalidValue),
        (valid().chip(2, KVM_IRQCHIP_IOAPIC, 24), Error::InvalidValue),
        (valid().chip(2, 3, 0), Error::InvalidValue),
        // Flags.
        (valid().raw(2, KVM_IRQ_ROUTING_IRQCHIP, KVM_MSI_VALID_DEVID, [2, 0, 0, 0]), Error::UnknownFlags),
        (valid().raw(2, KVM_IRQ_ROUTING_MSI, 2, [0; 4]), Error::UnknownFlags),
        // One route per irqchip per GSI; an MSI GSI has only that route.
        (valid().chip(1, KVM_IRQCHIP_IOAPIC, 2), Error::RouteConflict),
        (valid().msi(1, 0xfee0_0000, 0, 0x30), Error::RouteConflict),
        (
            Request::default().msi(1, 0xfee0_0000, 0, 0x30).chip(1, KVM_IRQCHIP_IOAPIC, 1),
            Error::RouteConflict
        ),
        (
            Request::default().msi(7, 0xfee0_0000, 0, 0x30).msi(7, 0xfee0_0000, 0, 0x31),
            Error::RouteConflict
        ),
    ];
    for (request, error) in cases {
        let mut table = GsiRoutingTable::<GSI_ROUTING_CAPACITY>::new();
        table.set_default();
        assert_eq!(
            table.set_from_bytes(&request.bytes(), NO_OPTIONS),
            Err(error),
            "{:x?}",
            request.entries
        );
        assert_eq!(error.errno(), Errno::EINVAL);
        // Nothing changed.
        assert_eq!(table.len(), 40);
    }
    // Two GSIs on one pin, or one GSI on the PIC and the IOAPIC, are fine.
    let request = valid()
        .chip(2, KVM_IRQCHIP_IOAPIC, 1)
        .chip(2, KVM_IRQCHIP_PIC_MASTER, 1)
        .chip(2, KVM_IRQCHIP_PIC_SLAVE, 1);
    let table = table_of(&request).unwrap();
    assert_eq!(table.targets(2).len(), 3);
    assert_eq!(table.gsi_of_pin(Irqchip::Ioapic, 1), Some(2));
}

#[test]
fn options_refuse_irqchip_routes_and_x2apic_address_bits() {
    let mut table = GsiRoutingTable::<GSI_ROUTING_CAPACITY>::new();
    let split = RoutingOptions {
        split_irqchip: true,
        x2apic_ids: false,
    };
    let chip = Request::default().chip(0, KVM_IRQCHIP_IOAPIC, 0);
    assert_eq!(
        table.set_from_bytes(&chip.bytes(), split),
        Err(Error::InvalidValue)
    );
    let msi = Request::default().msi(0, 0xfee0_0000, 0x100, 0x30);
    table.set_from_bytes(&msi.bytes(), split).unwrap();
    assert_eq!(table.len(), 1);

    let x2apic = RoutingOptions {
        split_irqchip: false,
        x2apic_ids: true,
    };
    let bad = Request::default().msi(0, 0xfee0_0000, 0x1ff, 0x30);
    assert_eq!(
        table.set_from_bytes(&bad.bytes(), x2apic),
        Err(Error::InvalidValue)
    );
    table.set_from_bytes(&bad.bytes(), NO_OPTIONS).unwrap();
    assert_eq!(check_msi_address_hi(0xff, true), Err(Error::InvalidValue));
    assert_eq!(check_msi_address_hi(0xff, false), Ok(()));
    assert_eq!(check_msi_address_hi(0x100, true), Ok(()));
}

#[test]
fn capacity_overflow_is_enomem_after_earlier_errors() {
    let mut request = Request::default();
    for gsi in 0..5 {
        request = request.chip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
    }
    let mut table = GsiRoutingTable::<4>::new();
    let err = table.set_from_bytes(&request.bytes(), NO_OPTIONS);
    assert_eq!(err, Err(Error::TableFull));
    assert_eq!(err.unwrap_err().errno(), Errno::ENOMEM);
    assert!(table.is_empty());
    // An error within the first four routes wins, as KVM fails there
    // before allocating the fifth.
    let request = request.chip(0, KVM_IRQCHIP_IOAPIC, 9);
    let mut bad_first = Request::default().chip(0, KVM_IRQCHIP_IOAPIC, 24);
    bad_first.entries.extend(request.entries.iter().copied());
    assert_eq!(
        table.set_from_bytes(&bad_first.bytes(), NO_OPTIONS),
        Err(Error::InvalidValue)
    );
    // A GSI out of range anywhere wins over the capacity.
    let far = request.chip(4096, KVM_IRQCHIP_IOAPIC, 0);
    assert_eq!(
        table.set_from_bytes(&far.bytes(), NO_OPTIONS),
        Err(Error::TooManyRoutes)
    );
    // Exactly full is fine.
    let mut exact = Request::default();
    for gsi in 0..4 {
        exact = exact.chip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
    }
    table.set_from_bytes(&exact.bytes(), NO_OPTIONS).unwrap();
    assert_eq!(table.len(), 4);
}

#[test]
fn largest_request_fits_the_default_capacity() {
    let mut request = Request::default();
    for gsi in 0..GSI_ROUTING_CAPACITY as u32 {
        request = request.msi(gsi * 4, 0xfee0_0000 | (gsi & 0xff) << 12, 0, 0x20 + gsi % 200);
    }
    let table = table_of(&request).unwrap();
    assert_eq!(table.len(), GSI_ROUTING_CAPACITY);
    assert_eq!(table.targets(4 * 1023)[0].gsi, 4092);
    assert!(table.targets(4 * 1023 + 1).is_empty());
    let request = request.msi(4095, 0xfee0_0000, 0, 0x20);
    assert_eq!(table_of(&request).unwrap_err(), Error::TableFull);
}

#[test]
fn msi_decoding() {
    // Physical, fixed, edge, dest 3, vector 0x41.
    let message = msi_message(0xfee0_3000, 0, 0x0041, false).unwrap();
    assert_eq!(
        message,
        ApicMessage {
            dest: 3,
            dest_mode: DestMode::Physical,
            delivery: DeliveryMode::Fixed,
            vector: 0x41,
            level_triggered: false,
            assert: true,
            shorthand: Shorthand::None,
            source: None,
        }
    );
    // Logical (bit 2), level (bit 15), NMI (mode 4), level bit 14 clear:
    // KVM asserts anyway.
    let message = msi_message(0xfee0_f004, 0, 0x8400 | 0x02, false).unwrap();
    assert_eq!(message.dest, 0x0f);
    assert_eq!(message.dest_mode, DestMode::Logical);
    assert_eq!(message.delivery, DeliveryMode::Nmi);
    assert!(message.level_triggered && message.assert);
    // The redirection hint makes a fixed delivery lowest-priority.
    let message = msi_message(0xfee0_100c, 0, 0x0030, false).unwrap();
    assert_eq!(message.delivery, DeliveryMode::LowestPriority);
    assert_eq!(
        msi_message(0xfee0_100c, 0, 0x0530, false).unwrap().delivery,
        DeliveryMode::Init
    );
    // Every delivery mode but the reserved 3.
    for mode in 0..8u32 {
        let message = msi_message(0xfee0_0000, 0, mode << 8, false);
        assert_eq!(message.map(|m| m.delivery), delivery_mode_from_bits(mode));
        assert_eq!(message.is_none(), mode == 3);
    }
    // Destination id bits 31:8 in address_hi, only with the x2APIC API.
    assert_eq!(
        msi_message(0xfee1_2000, 0x1234_5600, 0x30, true).unwrap().dest,
        0x1234_5612
    );
    assert_eq!(
        msi_message(0xfee1_2000, 0x1234_5600, 0x30, false).unwrap().dest,
        0x12
    );
    // The extended destination id bits 11:5 and the 0xfee prefix are
    // not looked at.
    assert_eq!(
        msi_message(0x0001_2fe0, 0, 0x30, false).unwrap().dest,
        0x12
    );
}

#[test]
fn irq_line_decoding() {
    let mut bytes = [0u8; 8];
    kvm_irq_level { irq: 33, level: 1 }.to_bytes(&mut bytes).unwrap();
    assert_eq!(
        decode_irq_line(&bytes),
        Ok(IrqLine {
            gsi: 33,
            level: true
        })
    );
    kvm_irq_level {
        irq: u32::MAX,
        level: 0x100,
    }
    .to_bytes(&mut bytes)
    .unwrap();
    assert_eq!(
        decode_irq_line(&bytes),
        Ok(IrqLine {
            gsi: u32::MAX,
            level: true
        })
    );
    kvm_irq_level { irq: 4, level: 0 }.to_bytes(&mut bytes).unwrap();
    assert!(!decode_irq_line(&bytes).unwrap().level);
    assert_eq!(decode_irq_line(&bytes[..7]), Err(Error::ShortBuffer));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = kvm_irq_routing_entry> {
        // Mostly plausible values, so that both acceptance and each
        // refusal are reached.
        (
            prop_oneof![0u32..30, any::<u32>()],
            prop_oneof![Just(1u32), Just(2u32), 0u32..6],
            prop_oneof![4 => Just(0u32), 1 => 0u32..3],
            prop_oneof![0u32..3, any::<u32>()],
            prop_oneof![0u32..26, any::<u32>()],
            any::<[u32; 2]>(),
        )
            .prop_map(|(gsi, type_, flags, first, second, rest)| kvm_irq_routing_entry {
                gsi,
                type_,
                flags,
                pad: 0,
                u: [first, second, rest[0], rest[1], 0, 0, 0, 0],
            })
    }

    proptest! {
        /// Whatever the request, the parser does not panic, a refused
        /// request changes nothing, and an accepted one holds exactly its
        /// routes, sorted, with at most one route per irqchip per GSI and
        /// MSI GSIs alone.
        #[test]
        fn requests_keep_the_table_consistent(
            entries in proptest::collection::vec(entry(), 0..12),
            nr_delta in -1i64..2,
            split in any::<bool>(),
        ) {
            let request = Request { entries, flags: 0 };
            let nr = (request.entries.len() as i64 + nr_delta).max(0) as u32;
            let options = RoutingOptions { split_irqchip: split, x2apic_ids: false };
            let mut table = GsiRoutingTable::<8>::new();
            table.set_default();
            let before = table.routes().to_vec();
            match table.set_from_bytes(&request.bytes_with_nr(nr), options) {
                Err(_) => prop_assert_eq!(table.routes(), &before[..]),
                Ok(()) => {
                    prop_assert_eq!(table.len(), nr as usize);
                    let routes = table.routes();
                    for pair in routes.windows(2) {
                        prop_assert!(pair[0].gsi <= pair[1].gsi);
                        if pair[0].gsi == pair[1].gsi {
                            prop_assert!(pair[0].allows(&pair[1]));
                            prop_assert!(pair[0].target.rank() < pair[1].target.rank());
                        }
                    }
                    for route in routes {
                        prop_assert!(route.gsi < KVM_MAX_IRQ_ROUTES);
                        prop_assert!(table.targets(route.gsi).contains(route));
                        let irqchip_route = route.target.pic_irq().is_some()
                            || route.target.ioapic_pin().is_some();
                        prop_assert!(!(split && irqchip_route));
                    }
                }
            }
        }

        /// MSI decoding never panics and keeps the fields it promises.
        #[test]
        fn msi_fields(address_lo in any::<u32>(), address_hi in any::<u32>(), data in any::<u32>(), x2apic in any::<bool>()) {
            match msi_message(address_lo, address_hi, data, x2apic) {
                None => prop_assert_eq!((data >> 8) & 7, 3),
                Some(message) => {
                    prop_assert_eq!(message.vector, data as u8);
                    prop_assert_eq!(message.dest & 0xff, (address_lo >> 12) & 0xff);
                    prop_assert_eq!(message.level_triggered, data & 0x8000 != 0);
                    if !x2apic {
                        prop_assert!(message.dest <= 0xff);
                    }
                }
            }
        }
    }
}
