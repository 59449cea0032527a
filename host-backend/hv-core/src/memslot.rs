//! The memslot table: KVM_SET_USER_MEMORY_REGION semantics over a
//! fixed-capacity table, and GPA -> host-virtual lookup.
//!
//! Semantics: Linux `Documentation/virt/kvm/api.rst` 4.35, and the exact
//! checks and their order of `kvm_vm_ioctl_set_memory_region`,
//! `check_memory_region_flags` and `__kvm_set_memory_region` in
//! `virt/kvm/kvm_main.c` (6.12):
//!
//! 1. slot id (bits 15:0 of `slot`) >= `KVM_USER_MEM_SLOTS`: EINVAL;
//! 2. flags other than LOG_DIRTY_PAGES and (if allowed) READONLY: EINVAL
//!    (GUEST_MEMFD needs private memory, which pvrs does not offer);
//! 3. size, guest physical address or userspace address not 4 KiB
//!    aligned, or the user range not below the user address limit
//!    (`access_ok`): EINVAL;
//! 4. address space (bits 31:16 of `slot`) >= the VM's count: EINVAL;
//! 5. the guest range wraps, or has more than `KVM_MEM_MAX_NR_PAGES`
//!    pages: EINVAL;
//! 6. size 0 deletes; deleting a slot that does not exist: EINVAL;
//! 7. an existing slot may only move (new address) or change flags; a
//!    new size, a new userspace address or toggling READONLY: EINVAL;
//!    an identical request succeeds without a change;
//! 8. a new or moved slot that overlaps another slot of its address
//!    space: EEXIST.
//!
//! Where KVM would allocate, this table has a fixed capacity `N`; a full
//! table reports ENOMEM, as a failed allocation does in KVM.
//!
//! Readers: the kernel publishes copies (RCU/SRCU style) and a reader
//! compares [`MemslotTable::generation`] before and after using one, or
//! caches it with anything derived from a lookup.  Every change that
//! takes effect increments the generation.

/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;
const PAGE_SHIFT: u32 = 12;

// The slot flags and id limits are the KVM API's (pinned there by
// `tests/kvm_uapi_header.rs`).
pub use crate::kvm_api::constants::{
    KVM_INTERNAL_MEM_SLOTS, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
    KVM_MEM_SLOTS_NUM, KVM_USER_MEM_SLOTS,
};

pinned_constants! {
    /// Pinned to linux/kvm_host.h by the header test.
    table MEMSLOT_CONSTANTS;

    /// The largest slot, in pages.
    KVM_MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;
}

/// The ioctl's argument (`struct kvm_userspace_memory_region`'s fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Address space in bits 31:16, slot id in bits 15:0.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// The guest physical address of the slot's first byte (4 KiB aligned).
    pub guest_phys_addr: u64,
    /// Size in bytes (a multiple of 4 KiB); 0 deletes the slot.
    pub memory_size: u64,
    /// The VMM's virtual address backing the slot's first byte (4 KiB aligned).
    pub userspace_addr: u64,
}

/// What the VM allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemslotLimits {
    /// Number of address spaces (2 on x86 with SMM, else 1).
    pub address_spaces: u16,
    /// The highest valid user address (the kernel's `USER_PTR_MAX`).
    pub user_address_max: u64,
    /// KVM_CAP_READONLY_MEM.
    pub readonly_allowed: bool,
    /// The highest guest frame number the MMU can map (KVM's
    /// `kvm_mmu_max_gfn`: below the host's MAXPHYADDR with nested paging).
    pub max_gfn: u64,
}

/// One slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memslot {
    /// The address space (1 is SMM on x86).
    pub address_space: u16,
    /// The slot id within its address space.
    pub id: u16,
    /// The first guest frame number (GPA / 4 KiB).
    pub base_gfn: u64,
    /// Never 0 in the table.
    pub npages: u64,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// The host virtual address of the first frame.
    pub userspace_addr: u64,
}

impl Memslot {
    /// One past the last guest frame.  Cannot overflow: creation checked
    /// that the guest range does not wrap.
    pub fn end_gfn(&self) -> u64 {
        self.base_gfn.saturating_add(self.npages)
    }

    fn contains_gfn(&self, gfn: u64) -> bool {
        (self.base_gfn..self.end_gfn()).contains(&gfn)
    }

    fn overlaps(&self, base_gfn: u64, end_gfn: u64) -> bool {
        self.base_gfn < end_gfn && base_gfn < self.end_gfn()
    }
}

/// Why a request is refused, with the errno KVM returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemslotError {
    /// EINVAL, and which check failed.
    Invalid(InvalidRegion),
    /// EEXIST: the range overlaps another slot.
    Overlap {
        /// The id of the slot it overlaps.
        other_slot: u16,
    },
    /// ENOMEM: the fixed-capacity table is full.
    TableFull,
}

/// The EINVAL cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidRegion {
    /// The slot id is not below `KVM_USER_MEM_SLOTS` (check 1).
    SlotId,
    /// Unknown flags, or READONLY without KVM_CAP_READONLY_MEM (check 2).
    Flags,
    /// Size, GPA or user address not 4 KiB aligned (check 3).
    Unaligned,
    /// The user range passes the user address limit (check 3).
    UserRange,
    /// No such address space (check 4).
    AddressSpace,
    /// The guest range wraps around the top of the GPA space (check 5).
    GuestRangeWraps,
    /// More than `KVM_MEM_MAX_NR_PAGES` pages (check 5).
    TooLarge,
    /// Deleting (size 0) a slot that does not exist (check 6).
    DeleteMissing,
    /// Resizing, remapping userspace or toggling READONLY of a slot.
    ForbiddenModification,
    /// The total page count would overflow.
    TotalPages,
    /// A new or moved slot ends above [`MemslotLimits::max_gfn`]
    /// (`kvm_arch_prepare_memory_region`, after the overlap check).
    BeyondMaxGfn,
}

impl MemslotError {
    /// The positive errno value (the ioctl returns its negation).
    pub fn errno(&self) -> i32 {
        match self {
            MemslotError::Invalid(_) => 22,
            MemslotError::Overlap { .. } => 17,
            MemslotError::TableFull => 12,
        }
    }
}

/// What a successful request did; the kernel acts on it (zap the old
/// range from the NPT on delete and move, write-protect or not on a
/// dirty-logging change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemslotChange {
    /// A new slot: map it on demand.
    Created(Memslot),
    /// The slot is gone: zap its range from the NPT.
    Deleted(Memslot),
    /// The slot's guest address changed: zap the old range.
    Moved {
        /// The slot before the move.
        old: Memslot,
        /// The slot after it.
        new: Memslot,
    },
    /// Only the flags changed (dirty logging toggled).
    FlagsChanged {
        /// The slot with its previous flags.
        old: Memslot,
        /// The slot with its new flags.
        new: Memslot,
    },
    /// The request matched the slot exactly.
    Unchanged,
}

/// A successful lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpaTranslation {
    /// The slot that holds the GPA.
    pub slot: Memslot,
    /// The host-virtual (userspace) address of the GPA.
    pub hva: u64,
    /// False for a READONLY slot: writes must exit to userspace as MMIO.
    pub writable: bool,
}

/// The slots of one VM, all address spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemslotTable<const N: usize> {
    slots: [Option<Memslot>; N],
    generation: u64,
}

impl<const N: usize> Default for MemslotTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn is_page_aligned(value: u64) -> bool {
    value % PAGE_SIZE == 0
}

impl<const N: usize> MemslotTable<N> {
    /// An empty table, generation 0.
    pub const fn new() -> Self {
        Self {
            slots: [None; N],
            generation: 0,
        }
    }

    /// Incremented by every change that took effect.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The slots in use, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Memslot> {
        self.slots.iter().flatten()
    }

    fn index_of(&self, address_space: u16, id: u16) -> Option<usize> {
        self.slots.iter().position(|slot| {
            slot.is_some_and(|slot| slot.address_space == address_space && slot.id == id)
        })
    }

    /// Slot `id` of `address_space`.
    pub fn get(&self, address_space: u16, id: u16) -> Option<&Memslot> {
        self.index_of(address_space, id)
            .and_then(|index| self.slots[index].as_ref())
    }

    /// KVM_SET_USER_MEMORY_REGION (module docs for the rules).
    pub fn set_user_memory_region(
        &mut self,
        region: &MemoryRegion,
        limits: &MemslotLimits,
    ) -> Result<MemslotChange, MemslotError> {
        let invalid = |reason| Err(MemslotError::Invalid(reason));
        let id = region.slot as u16;
        let address_space = (region.slot >> 16) as u16;
        if u32::from(id) >= KVM_USER_MEM_SLOTS {
            return invalid(InvalidRegion::SlotId);
        }
        let mut valid_flags = KVM_MEM_LOG_DIRTY_PAGES;
        if limits.readonly_allowed {
            valid_flags |= KVM_MEM_READONLY;
        }
        if region.flags & !valid_flags != 0 {
            return invalid(InvalidRegion::Flags);
        }
        if !is_page_aligned(region.memory_size)
            || !is_page_aligned(region.guest_phys_addr)
            || !is_page_aligned(region.userspace_addr)
        {
            return invalid(InvalidRegion::Unaligned);
        }
        match region.userspace_addr.checked_add(region.memory_size) {
            Some(end) if end <= limits.user_address_max => {}
            _ => return invalid(InvalidRegion::UserRange),
        }
        if address_space >= limits.address_spaces {
            return invalid(InvalidRegion::AddressSpace);
        }
        if region
            .guest_phys_addr
            .checked_add(region.memory_size)
            .is_none()
        {
            return invalid(InvalidRegion::GuestRangeWraps);
        }
        let npages = region.memory_size >> PAGE_SHIFT;
        if npages > KVM_MEM_MAX_NR_PAGES {
            return invalid(InvalidRegion::TooLarge);
        }

        let old_index = self.index_of(address_space, id);
        let old = old_index.and_then(|index| self.slots[index]);
        if npages == 0 {
            let (Some(index), Some(old)) = (old_index, old) else {
                return invalid(InvalidRegion::DeleteMissing);
            };
            self.slots[index] = None;
            self.generation = self.generation.wrapping_add(1);
            return Ok(MemslotChange::Deleted(old));
        }

        let new = Memslot {
            address_space,
            id,
            base_gfn: region.guest_phys_addr >> PAGE_SHIFT,
            npages,
            flags: region.flags,
            userspace_addr: region.userspace_addr,
        };
        let change = match old {
            None => {
                // KVM keeps the total in an unsigned long; with at most
                // 2^31 pages a slot this cannot overflow a u64 for any
                // realistic N, but it is checked, not assumed.
                let total = self
                    .iter()
                    .try_fold(npages, |total, slot| total.checked_add(slot.npages));
                if total.is_none() {
                    return invalid(InvalidRegion::TotalPages);
                }
                MemslotChange::Created(new)
            }
            Some(old) => {
                if new.userspace_addr != old.userspace_addr
                    || new.npages != old.npages
                    || (new.flags ^ old.flags) & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD) != 0
                {
                    return invalid(InvalidRegion::ForbiddenModification);
                }
                if new.base_gfn != old.base_gfn {
                    MemslotChange::Moved { old, new }
                } else if new.flags != old.flags {
                    MemslotChange::FlagsChanged { old, new }
                } else {
                    return Ok(MemslotChange::Unchanged);
                }
            }
        };

        if matches!(
            change,
            MemslotChange::Created(_) | MemslotChange::Moved { .. }
        ) {
            if let Some(other) = self.iter().find(|slot| {
                slot.address_space == address_space
                    && slot.id != id
                    && slot.overlaps(new.base_gfn, new.end_gfn())
            }) {
                return Err(MemslotError::Overlap {
                    other_slot: other.id,
                });
            }
            if new.end_gfn() - 1 > limits.max_gfn {
                return Err(MemslotError::Invalid(InvalidRegion::BeyondMaxGfn));
            }
        }
        let index = match old_index {
            Some(index) => index,
            None => self
                .slots
                .iter()
                .position(Option::is_none)
                .ok_or(MemslotError::TableFull)?,
        };
        self.slots[index] = Some(new);
        self.generation = self.generation.wrapping_add(1);
        Ok(change)
    }

    /// The slot of `address_space` holding `gpa`, and the GPA's host
    /// virtual address.
    pub fn translate(&self, address_space: u16, gpa: u64) -> Option<GpaTranslation> {
        let gfn = gpa >> PAGE_SHIFT;
        let slot = *self
            .iter()
            .find(|slot| slot.address_space == address_space && slot.contains_gfn(gfn))?;
        // In range by construction (userspace_addr + size was checked),
        // but checked anyway rather than trusted.
        let offset = gpa.checked_sub(slot.base_gfn << PAGE_SHIFT)?;
        let hva = slot.userspace_addr.checked_add(offset)?;
        Some(GpaTranslation {
            slot,
            hva,
            writable: slot.flags & KVM_MEM_READONLY == 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MemslotLimits = MemslotLimits {
        address_spaces: 2,
        user_address_max: 0x7fff_ffff_efff,
        readonly_allowed: true,
        max_gfn: u64::MAX,
    };

    #[test]
    fn a_slot_beyond_the_mmus_reach_is_refused_after_the_overlap_check() {
        let mut table = MemslotTable::<4>::new();
        let limits = MemslotLimits { max_gfn: (1 << (40 - 12)) - 1, ..LIMITS };
        let top = 1u64 << 40;
        assert_eq!(
            table.set_user_memory_region(&region(0, top - 8192, 8192, 0x10_0000), &limits),
            Ok(MemslotChange::Created(table.iter().next().copied().unwrap()))
        );
        assert_eq!(
            table.set_user_memory_region(&region(1, top - 4096, 8192, 0x20_0000), &limits),
            Err(MemslotError::Overlap { other_slot: 0 })
        );
        assert_eq!(
            table.set_user_memory_region(&region(2, top, 4096, 0x30_0000), &limits),
            invalid(InvalidRegion::BeyondMaxGfn)
        );
    }

    fn region(slot: u32, gpa: u64, size: u64, uaddr: u64) -> MemoryRegion {
        MemoryRegion {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: uaddr,
        }
    }

    fn invalid(reason: InvalidRegion) -> Result<MemslotChange, MemslotError> {
        Err(MemslotError::Invalid(reason))
    }

    #[test]
    fn create_lookup_delete() {
        let mut table = MemslotTable::<8>::new();
        let change = table
            .set_user_memory_region(&region(0, 0, 0x10_0000, 0x7f00_0000_0000), &LIMITS)
            .unwrap();
        assert!(matches!(change, MemslotChange::Created(slot) if slot.npages == 256));
        assert_eq!(table.generation(), 1);
        let translation = table.translate(0, 0x1234).unwrap();
        assert_eq!(translation.hva, 0x7f00_0000_1234);
        assert!(translation.writable);
        assert_eq!(table.translate(0, 0x10_0000), None);
        assert_eq!(table.translate(1, 0x1234), None);
        let deleted = table
            .set_user_memory_region(&region(0, 0, 0, 0x7f00_0000_0000), &LIMITS)
            .unwrap();
        assert!(matches!(deleted, MemslotChange::Deleted(_)));
        assert_eq!(table.translate(0, 0x1234), None);
        assert_eq!(table.generation(), 2);
    }

    #[test]
    fn slot_ids_and_address_spaces() {
        let mut table = MemslotTable::<8>::new();
        assert_eq!(
            table.set_user_memory_region(&region(KVM_USER_MEM_SLOTS, 0, 4096, 0), &LIMITS),
            invalid(InvalidRegion::SlotId)
        );
        assert!(table
            .set_user_memory_region(&region(KVM_USER_MEM_SLOTS - 1, 0, 4096, 0), &LIMITS)
            .is_ok());
        // Address space 1 (SMM) may overlap address space 0.
        assert!(table
            .set_user_memory_region(&region(1 << 16, 0, 4096, 0), &LIMITS)
            .is_ok());
        assert_eq!(
            table.set_user_memory_region(&region(2 << 16, 0, 4096, 0), &LIMITS),
            invalid(InvalidRegion::AddressSpace)
        );
        assert_eq!(table.get(1, 0).unwrap().address_space, 1);
    }

    #[test]
    fn flags() {
        let mut table = MemslotTable::<8>::new();
        let mut request = region(0, 0, 4096, 0);
        request.flags = KVM_MEM_GUEST_MEMFD;
        assert_eq!(
            table.set_user_memory_region(&request, &LIMITS),
            invalid(InvalidRegion::Flags)
        );
        request.flags = KVM_MEM_READONLY;
        let no_readonly = MemslotLimits {
            readonly_allowed: false,
            ..LIMITS
        };
        assert_eq!(
            table.set_user_memory_region(&request, &no_readonly),
            invalid(InvalidRegion::Flags)
        );
        request.flags = 1 << 7;
        assert_eq!(
            table.set_user_memory_region(&request, &LIMITS),
            invalid(InvalidRegion::Flags)
        );
        request.flags = KVM_MEM_READONLY;
        table.set_user_memory_region(&request, &LIMITS).unwrap();
        assert!(!table.translate(0, 0).unwrap().writable);
    }

    #[test]
    fn alignment_and_ranges() {
        let mut table = MemslotTable::<8>::new();
        for request in [
            region(0, 0, 4095, 0),
            region(0, 0x800, 4096, 0),
            region(0, 0, 4096, 0x10),
        ] {
            assert_eq!(
                table.set_user_memory_region(&request, &LIMITS),
                invalid(InvalidRegion::Unaligned)
            );
        }
        assert_eq!(
            table.set_user_memory_region(&region(0, 0, 8192, 0x7fff_ffff_e000), &LIMITS),
            invalid(InvalidRegion::UserRange)
        );
        assert_eq!(
            table.set_user_memory_region(&region(0, 0, 4096, u64::MAX - 4095), &LIMITS),
            invalid(InvalidRegion::UserRange)
        );
        let wide = MemslotLimits {
            user_address_max: u64::MAX,
            ..LIMITS
        };
        assert_eq!(
            table.set_user_memory_region(&region(0, u64::MAX - 4095, 8192, 0), &wide),
            invalid(InvalidRegion::GuestRangeWraps)
        );
        assert_eq!(
            table.set_user_memory_region(&region(0, 0, (KVM_MEM_MAX_NR_PAGES + 1) << 12, 0), &wide),
            invalid(InvalidRegion::TooLarge)
        );
    }

    #[test]
    fn delete_missing_is_einval() {
        let mut table = MemslotTable::<8>::new();
        let error = table
            .set_user_memory_region(&region(3, 0, 0, 0), &LIMITS)
            .unwrap_err();
        assert_eq!(error, MemslotError::Invalid(InvalidRegion::DeleteMissing));
        assert_eq!(error.errno(), 22);
        assert_eq!(table.generation(), 0);
    }

    #[test]
    fn overlap_is_eexist() {
        let mut table = MemslotTable::<8>::new();
        table
            .set_user_memory_region(&region(0, 0x10_0000, 0x10_0000, 0x1000_0000), &LIMITS)
            .unwrap();
        let error = table
            .set_user_memory_region(&region(1, 0x1f_f000, 0x2000, 0x2000_0000), &LIMITS)
            .unwrap_err();
        assert_eq!(error, MemslotError::Overlap { other_slot: 0 });
        assert_eq!(error.errno(), 17);
        // Adjacent is fine.
        table
            .set_user_memory_region(&region(1, 0x20_0000, 0x1000, 0x2000_0000), &LIMITS)
            .unwrap();
        table
            .set_user_memory_region(&region(2, 0xf_f000, 0x1000, 0x3000_0000), &LIMITS)
            .unwrap();
    }

    #[test]
    fn move_flags_and_forbidden_changes() {
        let mut table = MemslotTable::<8>::new();
        let base = region(0, 0x10_0000, 0x4000, 0x1000_0000);
        table.set_user_memory_region(&base, &LIMITS).unwrap();
        assert_eq!(
            table.set_user_memory_region(&base, &LIMITS),
            Ok(MemslotChange::Unchanged)
        );
        assert_eq!(table.generation(), 1);

        let mut moved = base;
        moved.guest_phys_addr = 0x20_0000;
        assert!(matches!(
            table.set_user_memory_region(&moved, &LIMITS),
            Ok(MemslotChange::Moved { old, new }) if old.base_gfn == 0x100 && new.base_gfn == 0x200
        ));
        assert_eq!(table.translate(0, 0x10_0000), None);
        assert_eq!(table.translate(0, 0x20_1000).unwrap().hva, 0x1000_1000);

        let mut logged = moved;
        logged.flags = KVM_MEM_LOG_DIRTY_PAGES;
        assert!(matches!(
            table.set_user_memory_region(&logged, &LIMITS),
            Ok(MemslotChange::FlagsChanged { .. })
        ));

        let mut resized = logged;
        resized.memory_size = 0x8000;
        let mut remapped = logged;
        remapped.userspace_addr = 0x2000_0000;
        let mut readonly = logged;
        readonly.flags |= KVM_MEM_READONLY;
        for request in [resized, remapped, readonly] {
            assert_eq!(
                table.set_user_memory_region(&request, &LIMITS),
                invalid(InvalidRegion::ForbiddenModification)
            );
        }
        assert_eq!(table.generation(), 3);
    }

    #[test]
    fn moving_onto_another_slot_is_eexist_and_onto_itself_is_fine() {
        let mut table = MemslotTable::<8>::new();
        table
            .set_user_memory_region(&region(0, 0, 0x4000, 0x1000_0000), &LIMITS)
            .unwrap();
        table
            .set_user_memory_region(&region(1, 0x10_0000, 0x4000, 0x2000_0000), &LIMITS)
            .unwrap();
        assert_eq!(
            table.set_user_memory_region(&region(1, 0x2000, 0x4000, 0x2000_0000), &LIMITS),
            Err(MemslotError::Overlap { other_slot: 0 })
        );
        // Overlapping its own old range is allowed.
        assert!(table
            .set_user_memory_region(&region(1, 0x10_2000, 0x4000, 0x2000_0000), &LIMITS)
            .is_ok());
    }

    #[test]
    fn full_table_is_enomem() {
        let mut table = MemslotTable::<2>::new();
        for slot in 0..2 {
            table
                .set_user_memory_region(&region(slot, u64::from(slot) << 20, 4096, 0), &LIMITS)
                .unwrap();
        }
        let error = table
            .set_user_memory_region(&region(5, 0x100_0000, 4096, 0), &LIMITS)
            .unwrap_err();
        assert_eq!(error, MemslotError::TableFull);
        assert_eq!(error.errno(), 12);
        // Deleting frees a place.
        table
            .set_user_memory_region(&region(0, 0, 0, 0), &LIMITS)
            .unwrap();
        table
            .set_user_memory_region(&region(5, 0x100_0000, 4096, 0), &LIMITS)
            .unwrap();
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever userspace sends, the table never panics, never
            /// holds overlapping slots, and every lookup lands in its slot.
            #[test]
            fn random_requests_keep_the_table_consistent(
                requests in proptest::collection::vec(
                    (0u32..6, 0u64..64, 0u64..16, 0u64..4, any::<bool>()),
                    1..40,
                )
            ) {
                let mut table = MemslotTable::<4>::new();
                for (slot, page, pages, user_page, log) in requests {
                    let request = MemoryRegion {
                        slot,
                        flags: if log { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
                        guest_phys_addr: page << 12,
                        memory_size: pages << 12,
                        userspace_addr: (user_page << 30) + (1 << 30),
                    };
                    let before = table.generation();
                    let result = table.set_user_memory_region(&request, &LIMITS);
                    if result.is_err() || result == Ok(MemslotChange::Unchanged) {
                        prop_assert_eq!(table.generation(), before);
                    } else {
                        prop_assert_eq!(table.generation(), before + 1);
                    }
                    let slots: std::vec::Vec<Memslot> = table.iter().copied().collect();
                    for (i, a) in slots.iter().enumerate() {
                        for b in &slots[i + 1..] {
                            prop_assert!(
                                !(a.address_space == b.address_space
                                    && a.overlaps(b.base_gfn, b.end_gfn())),
                                "{:?} overlaps {:?}", a, b
                            );
                        }
                    }
                    for page in 0..80u64 {
                        if let Some(found) = table.translate(0, page << 12) {
                            prop_assert!(found.slot.contains_gfn(page));
                        }
                    }
                }
            }
        }
    }
}
