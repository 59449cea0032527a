//! The GSI routing table: which interrupt controller inputs or MSIs a
//! global system interrupt drives (KVM_SET_GSI_ROUTING), KVM's default
//! routing of KVM_CREATE_IRQCHIP, MSI decoding, and KVM_IRQ_LINE's
//! argument.
//!
//! Semantics: Linux `Documentation/virt/kvm/api.rst` 4.25 (KVM_IRQ_LINE)
//! and 4.52 (KVM_SET_GSI_ROUTING), and of Linux 6.12 the ioctl in
//! `virt/kvm/kvm_main.c`, `kvm_set_irq_routing` and `setup_routing_entry`
//! in `virt/kvm/irqchip.c`, and x86's `kvm_set_routing_entry`,
//! `kvm_set_msi_irq` and `default_routing` in `arch/x86/kvm/irq_comm.c`.
//! KVM_SET_GSI_ROUTING's argument is checked in KVM's order:
//!
//! 1. the header (`kvm_irq_routing`): more than `KVM_MAX_IRQ_ROUTES`
//!    entries or non-zero flags is EINVAL;
//! 2. the `nr` entries of 48 bytes (`kvm_irq_routing_entry`: gsi, type,
//!    flags, pad and a 32-byte union) must all be there: EFAULT otherwise,
//!    as the failed copy from userspace;
//! 3. any entry's GSI at or above `KVM_MAX_IRQ_ROUTES`: EINVAL, before
//!    anything else about the entries;
//! 4. then entry by entry: a route more than this table's capacity is
//!    ENOMEM (where KVM allocates each route, and a failed allocation is
//!    ENOMEM); flags other than KVM_MSI_VALID_DEVID on an MSI route, or any
//!    on another, EINVAL; a GSI already routed to the same irqchip, or a
//!    GSI with an MSI route and any other route, EINVAL; a type other than
//!    IRQCHIP and MSI (Hyper-V, Xen and s390 routes are not offered),
//!    an unknown irqchip, a pin beyond 7 on a PIC or 23 on the IOAPIC,
//!    an irqchip route with a split irqchip, or an MSI whose `address_hi`
//!    has bits 7:0 set under KVM's x2APIC API: EINVAL.
//!
//! All of step 4's refusals but ENOMEM are EINVAL, so where KVM checks two
//! of them in another order the errno is the same; only the [`Error`]
//! variant, which names the check, may differ.  A refused request leaves
//! the table as it was (KVM swaps in a new table only on success).
//!
//! The capacity is a const parameter, [`GSI_ROUTING_CAPACITY`] (1024)
//! routes by default: 24 default routes plus the MSI vectors of many
//! devices, while KVM's own bound is 4096.  A table of 1024 routes takes
//! about 28 KiB; a kernel allocates it on the heap.

use super::ioapic::delivery_mode_from_bits;
use super::{ApicMessage, DeliveryMode, DestMode, Shorthand};
use crate::kvm_api::constants::{
    KVM_IOAPIC_NUM_PINS, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_IRQ_ROUTES, PIC_NUM_PINS,
};
use crate::kvm_api::decode::{
    decode, decode_gsi_route, decode_gsi_routing_header, entries, GsiRoute, Irqchip,
};
use crate::kvm_api::errno::Error;
use crate::kvm_api::layout::{kvm_irq_level, kvm_irq_routing, kvm_irq_routing_entry};
use crate::kvm_api::wire::Wire;

/// The routes a [`GsiRoutingTable`] holds unless told otherwise.
pub const GSI_ROUTING_CAPACITY: usize = 1024;

/// The GSIs KVM_CREATE_IRQCHIP routes: one per IOAPIC pin.
pub const DEFAULT_ROUTED_GSIS: u32 = KVM_IOAPIC_NUM_PINS;

/// The pins of one 8259 PIC.
pub const PIC_PINS_PER_CHIP: u32 = PIC_NUM_PINS / 2;

/// An MSI route's message, raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiRoute {
    /// Bits 31:0 of the MSI address.
    pub address_lo: u32,
    /// Bits 63:32 of the MSI address (destination id bits 31:8 with KVM's
    /// x2APIC API).
    pub address_hi: u32,
    /// The MSI data word.
    pub data: u32,
    /// The requester id, if KVM_MSI_VALID_DEVID was set (x86 ignores it).
    pub devid: Option<u32>,
}

impl MsiRoute {
    /// The interrupt message this MSI sends (see [`msi_message`]).
    pub fn message(&self, x2apic_ids: bool) -> Option<ApicMessage> {
        msi_message(self.address_lo, self.address_hi, self.data, x2apic_ids)
    }
}

/// Where a GSI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// An input of an in-kernel interrupt controller.
    Irqchip {
        /// The controller.
        irqchip: Irqchip,
        /// Its input: 0-7 on either PIC, 0-23 on the IOAPIC.
        pin: u32,
    },
    /// A message-signalled interrupt; sent when the GSI is raised, nothing
    /// when it is lowered (`kvm_set_msi`).
    Msi(MsiRoute),
}

impl RouteTarget {
    /// The interrupt number of the cascaded PIC pair, 0-15 (slave pins
    /// are 8-15, as KVM numbers them), for a PIC route.
    pub const fn pic_irq(&self) -> Option<u32> {
        match *self {
            RouteTarget::Irqchip {
                irqchip: Irqchip::PicMaster,
                pin,
            } => Some(pin),
            RouteTarget::Irqchip {
                irqchip: Irqchip::PicSlave,
                pin,
            } => Some(pin + PIC_PINS_PER_CHIP),
            _ => None,
        }
    }

    /// The IOAPIC pin, for an IOAPIC route.
    pub const fn ioapic_pin(&self) -> Option<u32> {
        match *self {
            RouteTarget::Irqchip {
                irqchip: Irqchip::Ioapic,
                pin,
            } => Some(pin),
            _ => None,
        }
    }

    /// The order of routes of one GSI in the table: PIC master, slave,
    /// IOAPIC, MSI.
    const fn rank(&self) -> u8 {
        match self {
            RouteTarget::Irqchip { irqchip, .. } => chip_index(*irqchip) as u8,
            RouteTarget::Msi(_) => 3,
        }
    }
}

/// One route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The GSI it serves.
    pub gsi: u32,
    /// Where it goes.
    pub target: RouteTarget,
}

impl Route {
    const UNUSED: Route = Route {
        gsi: 0,
        target: RouteTarget::Irqchip {
            irqchip: Irqchip::Ioapic,
            pin: 0,
        },
    };

    fn from_checked(route: GsiRoute) -> Self {
        match route {
            GsiRoute::Irqchip { gsi, irqchip, pin } => Route {
                gsi,
                target: RouteTarget::Irqchip { irqchip, pin },
            },
            GsiRoute::Msi {
                gsi,
                address_lo,
                address_hi,
                data,
                devid,
            } => Route {
                gsi,
                target: RouteTarget::Msi(MsiRoute {
                    address_lo,
                    address_hi,
                    data,
                    devid,
                }),
            },
        }
    }

    /// Whether `self` and a later route `other` of the same GSI may
    /// coexist: only irqchip routes to different irqchips may
    /// (`setup_routing_entry`).
    fn allows(&self, other: &Route) -> bool {
        match (self.target, other.target) {
            (
                RouteTarget::Irqchip { irqchip: a, .. },
                RouteTarget::Irqchip { irqchip: b, .. },
            ) => a != b,
            _ => false,
        }
    }
}

/// What of the VM's configuration the routes depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingOptions {
    /// KVM_CAP_SPLIT_IRQCHIP: there are no in-kernel PIC and IOAPIC, so
    /// irqchip routes are refused.
    pub split_irqchip: bool,
    /// KVM_CAP_X2APIC_API with KVM_X2APIC_API_USE_32BIT_IDS: MSI
    /// addresses carry destination id bits 31:8 in `address_hi` bits
    /// 31:8, and bits 7:0 of `address_hi` must be zero.
    pub x2apic_ids: bool,
}

/// KVM_IRQ_LINE's argument, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqLine {
    /// The GSI.  Any value: a GSI without routes is simply not delivered.
    pub gsi: u32,
    /// Any non-zero `level` raises the line.
    pub level: bool,
}

/// Decodes KVM_IRQ_LINE / KVM_IRQ_LINE_STATUS's `struct kvm_irq_level`.
/// KVM checks nothing in it; the caller answers ENXIO without an in-kernel
/// irqchip, and for KVM_IRQ_LINE_STATUS writes the status back with
/// [`kvm_irq_level::set_status`].
pub fn decode_irq_line(bytes: &[u8]) -> Result<IrqLine, Error> {
    let line: kvm_irq_level = decode(bytes)?;
    Ok(IrqLine {
        gsi: line.irq,
        level: line.level != 0,
    })
}

/// KVM's check of an MSI address under its x2APIC API
/// (`kvm_msi_route_invalid`): with 32-bit ids, bits 7:0 of `address_hi`
/// must be zero (EINVAL).  For MSI routes and KVM_SIGNAL_MSI.
pub const fn check_msi_address_hi(address_hi: u32, x2apic_ids: bool) -> Result<(), Error> {
    if x2apic_ids && address_hi & 0xff != 0 {
        Err(Error::InvalidValue)
    } else {
        Ok(())
    }
}

/// The interrupt message of an MSI (SDM vol. 3 11.11; KVM's
/// `kvm_set_msi_irq`).
///
/// - Address: destination id bits 19:12 (with `x2apic_ids`, bits 31:8 of
///   the id come from `address_hi` bits 31:8); bit 3 redirection hint;
///   bit 2 logical destination mode.  Bits 31:20 (0xfee) are not checked
///   and the extended destination id bits 11:5 are ignored, as in KVM.
/// - Data: vector bits 7:0, delivery mode bits 10:8, trigger mode bit 15.
///   The level bit 14 is ignored: KVM always asserts.
///
/// With the redirection hint, KVM delivers to the one lowest-priority
/// destination; for a fixed delivery that is [`DeliveryMode::LowestPriority`]
/// here (for other delivery modes the hint cannot be expressed in an
/// [`ApicMessage`] and is dropped).  `None` for the reserved delivery
/// mode 3 (see [`delivery_mode_from_bits`]); the caller counts it.
pub fn msi_message(
    address_lo: u32,
    address_hi: u32,
    data: u32,
    x2apic_ids: bool,
) -> Option<ApicMessage> {
    let mut dest = (address_lo >> 12) & 0xff;
    if x2apic_ids {
        dest |= address_hi & 0xffff_ff00;
    }
    let redirection_hint = address_lo & (1 << 3) != 0;
    let mut delivery = delivery_mode_from_bits(data >> 8)?;
    if redirection_hint && delivery == DeliveryMode::Fixed {
        delivery = DeliveryMode::LowestPriority;
    }
    Some(ApicMessage {
        dest,
        dest_mode: if address_lo & (1 << 2) != 0 {
            DestMode::Logical
        } else {
            DestMode::Physical
        },
        delivery,
        vector: data as u8,
        level_triggered: data & (1 << 15) != 0,
        assert: true,
        shorthand: Shorthand::None,
        source: None,
    })
}

/// Checks route `entry` (the `index`th of the request) beyond
/// [`decode_gsi_route`]: the VM options and the routes before it,
/// `earlier` being the request's entry bytes before it.
fn check_entry(
    entry: &kvm_irq_routing_entry,
    earlier: &[u8],
    index: u32,
    options: RoutingOptions,
) -> Result<Route, Error> {
    let route = Route::from_checked(decode_gsi_route(entry)?);
    // Earlier routes already passed these checks, so they decode.
    for previous in entries::<kvm_irq_routing_entry>(earlier, index)? {
        if previous.gsi != route.gsi {
            continue;
        }
        let previous = Route::from_checked(decode_gsi_route(&previous)?);
        if !previous.allows(&route) {
            return Err(Error::RouteConflict);
        }
    }
    match route.target {
        RouteTarget::Irqchip { .. } if options.split_irqchip => Err(Error::InvalidValue),
        RouteTarget::Msi(msi) => {
            check_msi_address_hi(msi.address_hi, options.x2apic_ids)?;
            Ok(route)
        }
        RouteTarget::Irqchip { .. } => Ok(route),
    }
}

/// The chip index of `irqchip` (`KVM_IRQCHIP_*`).
const fn chip_index(irqchip: Irqchip) -> usize {
    (match irqchip {
        Irqchip::PicMaster => KVM_IRQCHIP_PIC_MASTER,
        Irqchip::PicSlave => KVM_IRQCHIP_PIC_SLAVE,
        Irqchip::Ioapic => KVM_IRQCHIP_IOAPIC,
    }) as usize
}

/// The routing table of a VM: up to `N` routes, sorted by GSI.
#[derive(Clone, Debug)]
pub struct GsiRoutingTable<const N: usize = GSI_ROUTING_CAPACITY> {
    routes: [Route; N],
    len: usize,
    /// Per irqchip and pin, the GSI of the last route to it in the request
    /// (KVM's `chip[][]`, for EOI acknowledgement notifiers).
    pin_gsi: [[Option<u32>; KVM_IOAPIC_NUM_PINS as usize]; 3],
}

impl<const N: usize> Default for GsiRoutingTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> GsiRoutingTable<N> {
    /// An empty table, as a VM has before KVM_CREATE_IRQCHIP (KVM's
    /// `kvm_init_irq_routing`) or with a split irqchip.
    pub const fn new() -> Self {
        Self {
            routes: [Route::UNUSED; N],
            len: 0,
            pin_gsi: [[None; KVM_IOAPIC_NUM_PINS as usize]; 3],
        }
    }

    /// The routes KVM_CREATE_IRQCHIP installs (`default_routing`): GSI
    /// 0-15 to IOAPIC pin n and to PIC input n (master pin n for 0-7,
    /// slave pin n - 8 for 8-15); GSI 16-23 to IOAPIC pin n only.  A table
    /// of fewer than 40 routes keeps as many as fit.
    pub fn set_default(&mut self) {
        let routes = (0..DEFAULT_ROUTED_GSIS).flat_map(|gsi| {
            let ioapic = Some(Route {
                gsi,
                target: RouteTarget::Irqchip {
                    irqchip: Irqchip::Ioapic,
                    pin: gsi,
                },
            });
            let pic = (gsi < PIC_NUM_PINS).then_some(Route {
                gsi,
                target: RouteTarget::Irqchip {
                    irqchip: if gsi < PIC_PINS_PER_CHIP {
                        Irqchip::PicMaster
                    } else {
                        Irqchip::PicSlave
                    },
                    pin: gsi % PIC_PINS_PER_CHIP,
                },
            });
            ioapic.into_iter().chain(pic)
        });
        self.replace(routes);
    }

    /// KVM_SET_GSI_ROUTING: replaces the table with the routes of
    /// `argument` (the `kvm_irq_routing` header and its entries), checked
    /// as the module documentation lists.  The caller refuses (EINVAL) a
    /// VM without an in-kernel or split irqchip first.  On error nothing
    /// changes.
    pub fn set_from_bytes(&mut self, argument: &[u8], options: RoutingOptions) -> Result<(), Error> {
        let nr = decode_gsi_routing_header(argument)?;
        let entry_bytes = argument
            .get(kvm_irq_routing::SIZE..)
            .ok_or(Error::ShortBuffer)?;
        let request = || entries::<kvm_irq_routing_entry>(entry_bytes, nr);
        if request()?.any(|entry| entry.gsi >= KVM_MAX_IRQ_ROUTES) {
            return Err(Error::TooManyRoutes);
        }
        // Check every entry before changing anything.
        for (index, entry) in (0u32..).zip(request()?) {
            if index as usize >= N {
                return Err(Error::TableFull);
            }
            let earlier = entry_bytes
                .get(..index as usize * kvm_irq_routing_entry::SIZE)
                .ok_or(Error::ShortBuffer)?;
            check_entry(&entry, earlier, index, options)?;
        }
        // Checked above, so every entry converts.
        self.replace(
            request()?
                .filter_map(|entry| decode_gsi_route(&entry).ok())
                .map(Route::from_checked),
        );
        Ok(())
    }

    /// Fills the table with `routes` (at most `N` are kept), sorted by GSI
    /// and, within a GSI, PIC master, slave, IOAPIC, MSI.
    fn replace(&mut self, routes: impl Iterator<Item = Route>) {
        self.len = 0;
        self.pin_gsi = [[None; KVM_IOAPIC_NUM_PINS as usize]; 3];
        for route in routes {
            let Some(slot) = self.routes.get_mut(self.len) else {
                break;
            };
            *slot = route;
            self.len += 1;
            if let RouteTarget::Irqchip { irqchip, pin } = route.target {
                if let Some(gsi) = self.pin_gsi[chip_index(irqchip)].get_mut(pin as usize) {
                    *gsi = Some(route.gsi);
                }
            }
        }
        self.routes[..self.len].sort_unstable_by_key(|route| (route.gsi, route.target.rank()));
    }

    /// Every route, sorted by GSI.
    pub fn routes(&self) -> &[Route] {
        &self.routes[..self.len]
    }

    /// The number of routes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no route.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The routes of `gsi` (at most one per irqchip, or one MSI): what
    /// KVM_IRQ_LINE, an irqfd or a device's [`super::DeviceEnv::set_gsi`]
    /// drives (KVM's `kvm_irq_map_gsi`).  Empty for a GSI without routes.
    pub fn targets(&self, gsi: u32) -> &[Route] {
        let routes = self.routes();
        let start = routes.partition_point(|route| route.gsi < gsi);
        let end = start + routes[start..].partition_point(|route| route.gsi == gsi);
        &routes[start..end]
    }

    /// The GSI routed to input `pin` of `irqchip` (PIC pins 0-7 per chip),
    /// for acknowledgement notifiers (irqfd resampling, PIT reinjection):
    /// if several GSIs are, the last one of the request, as in KVM.
    pub fn gsi_of_pin(&self, irqchip: Irqchip, pin: u32) -> Option<u32> {
        *self.pin_gsi[chip_index(irqchip)].get(usize::try_from(pin).ok()?)?
    }
}

#[cfg(test)]
mod tests;
