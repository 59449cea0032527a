//! Fuzzes hv-core's KVM_SET_GSI_ROUTING parser (irqchip::routing) on
//! arbitrary bytes: the first byte picks the VM options and the table's
//! capacity, the rest is the `kvm_irq_routing` argument.  Nothing may
//! panic; a refused request leaves the table as it was; an accepted one
//! holds exactly `nr` routes, sorted by GSI, each found by `targets`, with
//! no irqchip routes under a split irqchip.  The MSI decoder and
//! KVM_IRQ_LINE's decoder run on the same bytes.
#![no_main]

use hv_core::irqchip::routing::*;

fn check<const N: usize>(argument: &[u8], options: RoutingOptions) {
    let mut table = GsiRoutingTable::<N>::new();
    table.set_default();
    let before = table.routes().to_vec();
    let nr = argument
        .get(..4)
        .map(|nr| u32::from_le_bytes(nr.try_into().unwrap()));
    match table.set_from_bytes(argument, options) {
        Err(_) => assert_eq!(table.routes(), &before[..]),
        Ok(()) => {
            assert_eq!(Some(table.len() as u32), nr);
            let routes = table.routes();
            for pair in routes.windows(2) {
                assert!(pair[0].gsi <= pair[1].gsi);
                if pair[0].gsi == pair[1].gsi {
                    // Only irqchip routes to different chips share a GSI.
                    match (pair[0].target, pair[1].target) {
                        (
                            RouteTarget::Irqchip { irqchip: a, .. },
                            RouteTarget::Irqchip { irqchip: b, .. },
                        ) => assert_ne!(a, b),
                        _ => panic!("an MSI GSI with another route"),
                    }
                }
            }
            for route in routes {
                assert!(table.targets(route.gsi).contains(route));
                let irqchip =
                    route.target.pic_irq().is_some() || route.target.ioapic_pin().is_some();
                assert!(!(options.split_irqchip && irqchip));
                if let RouteTarget::Msi(msi) = route.target {
                    assert!(check_msi_address_hi(msi.address_hi, options.x2apic_ids).is_ok());
                    let _ = msi.message(options.x2apic_ids);
                }
                assert!(table.targets(route.gsi).len() <= 3);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, argument)) = data.split_first() else {
        return;
    };
    let options = RoutingOptions {
        split_irqchip: selector & 1 != 0,
        x2apic_ids: selector & 2 != 0,
    };
    if selector & 4 == 0 {
        check::<GSI_ROUTING_CAPACITY>(argument, options);
    } else {
        check::<4>(argument, options);
    }
    let _ = decode_irq_line(argument);
    for chunk in argument.chunks_exact(12) {
        let word = |i: usize| u32::from_le_bytes(chunk[i..i + 4].try_into().unwrap());
        if let Some(message) = msi_message(word(0), word(4), word(8), options.x2apic_ids) {
            assert_eq!(message.vector, word(8) as u8);
        }
    }
});
