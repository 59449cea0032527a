//! The guest page-table walker: linear address → guest-physical address,
//! as the guest's own MMU would translate it.
//!
//! Without DecodeAssists the hypervisor gets neither the bytes of the
//! instruction that caused an MMIO nested page fault nor its operands, so it
//! fetches the instruction at CS.base + RIP and the memory operands of
//! string instructions itself, through the guest's page tables.  Those
//! reads must behave as the guest's MMU would: the same paging mode, the
//! same reserved-bit and permission checks, the same #PF error code.
//!
//! References: Intel SDM vol. 3A chapter 4 ("Paging"): §4.3 32-bit
//! paging, §4.4 PAE paging, §4.5 4-level and 5-level paging, §4.6 access
//! rights (SMEP, SMAP, WP, protection keys), §4.7 page-fault error codes,
//! §4.8 accessed and dirty flags; AMD APM vol. 2 chapter 5 ("Page
//! Translation and Protection").
//!
//! # One walker for every mode
//!
//! The five modes differ in data, not in algorithm: how many levels, how
//! wide an entry is, how many linear-address bits index each table, which
//! levels may map a large page, where the top table comes from and which
//! bits are reserved.  `PagingMode::layout` describes a mode and
//! [`translate`] is one loop over that description.  PAE's top level is the
//! special case the architecture makes it: its four PDPTEs were loaded into
//! registers when CR3 was written, so the walker takes them from
//! [`PagingRegisters::pdptes`] instead of reading memory again.
//!
//! # Accessed and dirty flags
//!
//! [`translate`] only reads.  It returns, in [`Translation::accessed_dirty`],
//! every paging-structure entry whose A flag (or, for the leaf of a write,
//! D flag) the MMU would set, with the value the walker saw.  The caller
//! applies them with [`PageTableWrite::set_entry_bits`].  Reasons:
//! - the guest may change a PTE on another vCPU between our read and our
//!   update, and hardware sets these flags with a locked read-modify-write.
//!   Only the caller, which maps the page, can do a compare-and-exchange
//!   against the value we saw (and walk again if it lost the race);
//! - a translation that the caller does not use in the end (the decoder
//!   refuses the instruction, a later operand faults) must not leave flags
//!   behind that the guest never caused;
//! - tests and the fuzzer check translations without a writable memory.
//!
//! Flags are reported only for a translation that succeeds.  Hardware may
//! also set A flags on the upper levels of a walk that faults (SDM §4.8
//! allows both), so a guest cannot rely on either.
//!
//! # Not handled
//! - Protection keys for supervisor pages (CR4.PKS, Intel only): ignored.
//!   User-page protection keys (CR4.PKE with PKRU) are checked, and a
//!   violation sets the PK bit (5) of the error code.
//! - Shadow-stack accesses (CET, error-code bit 6) and SGX (bit 15).
//! - A20 masking in real mode: the guest-physical address is the linear
//!   address.
//! - Vendor differences in reserved bits: the checks follow the SDM.  AMD
//!   also treats bit 8 of a PML4E/PML5E as must-be-zero; a guest that sets
//!   it gets a translation here and a #PF on AMD hardware.

/// Why a guest-physical read (or write) could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// No memory slot covers the address: the guest put a paging structure
    /// (or an operand) outside its RAM.  The kernel cannot satisfy the
    /// access and has to report it to the VMM (KVM reports an emulation
    /// failure to userspace in this case).
    Unmapped,
    /// The address is guest RAM but the host could not reach it (a failed
    /// pin or copy).  A host-side problem, not the guest's.
    Unavailable,
}

/// Read access to guest-physical memory, for paging structures.
///
/// The walker reads naturally aligned entries only (a table is 4 KiB
/// aligned and entries are 4 or 8 bytes), so an implementation never sees
/// a read that crosses a page.
pub trait GuestMemory {
    /// Reads the little-endian 32-bit value at `gpa`.
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError>;
    /// Reads the little-endian 64-bit value at `gpa`.
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError>;

    /// Fills `buffer` from `gpa` on (used to fetch instruction bytes; the
    /// callers never cross a page).  The default reads the aligned
    /// 32-bit words that cover the range; an implementation with direct
    /// access to the page can copy instead.
    fn read_bytes(&mut self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        let mut address = gpa;
        for byte in buffer.iter_mut() {
            let word = self.read_u32(address & !3)?;
            *byte = (word >> (8 * (address & 3))) as u8;
            address = address.wrapping_add(1);
        }
        Ok(())
    }
}

/// Setting accessed and dirty flags in guest paging structures.
pub trait PageTableWrite: GuestMemory {
    /// Atomically sets `update.set_bits` in the entry at `update.entry_gpa`
    /// if the entry still holds `update.old_value` (a compare-and-exchange
    /// of `update.width` bytes).  Returns `Ok(false)` if the entry changed
    /// since the walk: the caller should then retry from the start (as
    /// hardware would restart the walk) or let the guest re-execute.
    fn set_entry_bits(&mut self, update: &AccessedDirtyUpdate) -> Result<bool, MemoryError>;
}

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 64-bit paging-structure entries.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging in long mode.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP: no supervisor instruction fetch from user pages.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: no supervisor data access to user pages (unless RFLAGS.AC).
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE: protection keys for user pages.
pub const CR4_PKE: u64 = 1 << 22;
/// EFER.LMA: long mode active (the EFER bits live with the MSR numbers in
/// [`crate::msr`], which pins them to Linux's msr-index.h).
pub use crate::msr::EFER_LMA;
/// EFER.NXE: the XD bit (63) of 64-bit entries is honoured.
pub use crate::msr::EFER_NX as EFER_NXE;
/// RFLAGS.AC: with SMAP, lets explicit supervisor accesses reach user pages.
pub const RFLAGS_AC: u64 = 1 << 18;

/// #PF error code bit 0: the page was present (the fault is a protection
/// or reserved-bit violation).
pub const PF_PRESENT: u32 = 1 << 0;
/// #PF error code bit 1: the access was a write.
pub const PF_WRITE: u32 = 1 << 1;
/// #PF error code bit 2: the access was a user-mode access.
pub const PF_USER: u32 = 1 << 2;
/// #PF error code bit 3: a reserved bit was set in a paging-structure entry.
pub const PF_RESERVED: u32 = 1 << 3;
/// #PF error code bit 4: the access was an instruction fetch (reported only
/// when SMEP or NX can make fetches fault, SDM §4.7).
pub const PF_FETCH: u32 = 1 << 4;
/// #PF error code bit 5: a protection-key violation.
pub const PF_PROTECTION_KEY: u32 = 1 << 5;

const ENTRY_PRESENT: u64 = 1 << 0;
const ENTRY_WRITABLE: u64 = 1 << 1;
const ENTRY_USER: u64 = 1 << 2;
const ENTRY_ACCESSED: u64 = 1 << 5;
const ENTRY_DIRTY: u64 = 1 << 6;
const ENTRY_LARGE: u64 = 1 << 7;
const ENTRY_NO_EXECUTE: u64 = 1 << 63;
const PROTECTION_KEY_SHIFT: u32 = 59;

/// The guest registers that select and drive the paging mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagingRegisters {
    /// CR0: PE and PG select the mode, WP the supervisor-write rule.
    pub cr0: u64,
    /// CR3: the top table's guest-physical address (and PCD/PWT, ignored).
    pub cr3: u64,
    /// CR4: PAE, PSE, LA57, SMEP, SMAP, PKE.
    pub cr4: u64,
    /// EFER: LMA selects long mode, NXE enables the XD bit.
    pub efer: u64,
    /// The four PDPTEs as loaded when the guest last wrote CR3 in PAE mode
    /// (the "PDPTE registers", SDM §4.4.1).  Used only by PAE paging.
    pub pdptes: [u64; 4],
    /// The guest's PKRU, checked for user pages when CR4.PKE=1 in long mode.
    pub pkru: u32,
}

/// What the guest's CPUID promises about paging; these change which bits
/// are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingFeatures {
    /// MAXPHYADDR (CPUID 0x80000008 EAX\[7:0\]); values outside 32..=52 are
    /// clamped into that range.
    pub max_phys_addr_bits: u8,
    /// PSE-36 (CPUID 1 EDX\[17\]): 4 MiB pages of 32-bit paging can map
    /// physical addresses above 4 GiB (up to 40 bits).
    pub pse36: bool,
    /// 1 GiB pages (CPUID 0x80000001 EDX\[26\]).
    pub gb_pages: bool,
}

impl PagingFeatures {
    fn phys_bits(&self) -> u32 {
        u32::from(self.max_phys_addr_bits.clamp(32, 52))
    }

    /// The bits of a 64-bit entry (or of CR3) that can hold a physical
    /// address: 51:12 cut down to MAXPHYADDR.
    fn frame_mask(&self) -> u64 {
        low_bits(self.phys_bits()) & !0xfff
    }

    /// Bits 51:MAXPHYADDR, reserved in every 64-bit entry.
    fn above_phys_mask(&self) -> u64 {
        low_bits(52) & !low_bits(self.phys_bits())
    }
}

/// A mask of the `bits` lowest bits (`bits` ≤ 64).
const fn low_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Bits `high..=low` set (requires `low <= high < 64`).
const fn bit_range(high: u32, low: u32) -> u64 {
    low_bits(high + 1) & !low_bits(low)
}

/// Who makes an access, which decides the user/supervisor checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// An explicit access at CPL 3.
    User,
    /// An explicit access at CPL 0–2.  `alignment_check` is RFLAGS.AC,
    /// which with CR4.SMAP=1 lets the access reach user pages.
    Supervisor {
        /// RFLAGS.AC at the time of the access.
        alignment_check: bool,
    },
    /// An implicit supervisor access (descriptor tables, the TSS), made at
    /// any CPL: SMAP applies regardless of RFLAGS.AC (SDM §4.6).
    ImplicitSupervisor,
}

/// What the access does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write (checks R/W and CR0.WP; sets D on the leaf).
    Write,
    /// An instruction fetch (checks NX and SMEP).
    Fetch,
}

/// One access to translate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// User or supervisor, explicit or implicit.
    pub privilege: Privilege,
}

impl Access {
    /// The access an instruction makes explicitly at `cpl` with `rflags`.
    pub fn explicit(kind: AccessKind, cpl: u8, rflags: u64) -> Self {
        let privilege = if cpl == 3 {
            Privilege::User
        } else {
            Privilege::Supervisor {
                alignment_check: rflags & RFLAGS_AC != 0,
            }
        };
        Self { kind, privilege }
    }
}

/// The size of the page (or, without paging, the 4 KiB granule) that maps
/// a linear address: the translation holds for every byte of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// A 4 KiB page (a level-1 entry), or the granule without paging.
    Size4K,
    /// A 2 MiB page (PS=1 in a PAE or long-mode PDE).
    Size2M,
    /// A 4 MiB page (PS=1 in a 32-bit PDE, with CR4.PSE).
    Size4M,
    /// A 1 GiB page (PS=1 in a PDPTE, with 1 GiB page support).
    Size1G,
}

impl PageSize {
    /// The page's size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size4M => 1 << 22,
            PageSize::Size1G => 1 << 30,
        }
    }

    fn from_offset_bits(bits: u32) -> Option<Self> {
        match bits {
            12 => Some(PageSize::Size4K),
            21 => Some(PageSize::Size2M),
            22 => Some(PageSize::Size4M),
            30 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// The width of a paging-structure entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryWidth {
    /// 4-byte entries (32-bit paging).
    Bits32,
    /// 8-byte entries (PAE, 4- and 5-level paging).
    Bits64,
}

/// One paging-structure entry whose accessed/dirty flags the access sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessedDirtyUpdate {
    /// Guest-physical address of the entry (naturally aligned).
    pub entry_gpa: u64,
    /// The entry's size, and so the compare-and-exchange's.
    pub width: EntryWidth,
    /// The entry as the walker read it.
    pub old_value: u64,
    /// Bit 5 (A) and/or bit 6 (D).  Both lie in the low 32 bits, so for
    /// either width a 32-bit locked OR at `entry_gpa` is also correct.
    pub set_bits: u64,
}

/// The A/D updates of one translation: at most one per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessedDirtyUpdates {
    entries: [AccessedDirtyUpdate; MAX_LEVELS],
    count: usize,
}

const MAX_LEVELS: usize = 5;

const NO_UPDATE: AccessedDirtyUpdate = AccessedDirtyUpdate {
    entry_gpa: 0,
    width: EntryWidth::Bits64,
    old_value: 0,
    set_bits: 0,
};

impl AccessedDirtyUpdates {
    /// No updates.
    pub const fn new() -> Self {
        Self {
            entries: [NO_UPDATE; MAX_LEVELS],
            count: 0,
        }
    }

    /// The updates, top level first.
    pub fn as_slice(&self) -> &[AccessedDirtyUpdate] {
        self.entries.get(..self.count).unwrap_or(&[])
    }

    fn push(&mut self, update: AccessedDirtyUpdate) {
        if let Some(slot) = self.entries.get_mut(self.count) {
            *slot = update;
            self.count += 1;
        }
    }

    /// Applies every update through `memory`.  Returns `Ok(false)` as soon
    /// as one entry changed under us (the rest are not applied).
    pub fn apply<M: PageTableWrite + ?Sized>(&self, memory: &mut M) -> Result<bool, MemoryError> {
        for update in self.as_slice() {
            if !memory.set_entry_bits(update)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Default for AccessedDirtyUpdates {
    fn default() -> Self {
        Self::new()
    }
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address the linear address maps to.
    pub gpa: u64,
    /// The size of the page that maps it: the translation holds up to that page's end.
    pub page_size: PageSize,
    /// The entries whose A/D flags this access sets; see the module docs.
    pub accessed_dirty: AccessedDirtyUpdates,
}

impl Translation {
    /// How many bytes from the translated address on stay in the same page.
    pub fn bytes_to_page_end(&self) -> u64 {
        let size = self.page_size.bytes();
        size - (self.gpa & (size - 1))
    }
}

/// The #PF the guest's MMU would raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting linear address, for CR2.
    pub linear_address: u64,
    /// The error code to push (PF_* bits).
    pub error_code: u32,
}

/// Why a translation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// The guest faults: inject this #PF.
    PageFault(PageFault),
    /// In long mode, the address is not canonical: the guest gets #GP(0)
    /// (#SS(0) for a stack access), not a #PF.
    NonCanonical {
        /// The address that failed the canonical check.
        linear_address: u64,
    },
    /// Reading a paging-structure entry failed; see [`MemoryError`].
    Memory {
        /// The guest-physical address of the entry (or PDPTE) read.
        gpa: u64,
        /// Why the read failed.
        error: MemoryError,
    },
    /// The registers describe no valid paging mode (EFER.LMA=1 with
    /// CR4.PAE=0, or CR0.PG=1 with CR0.PE=0): VMRUN refuses such state,
    /// so this is a hypervisor bug, not a guest fault.
    InvalidPagingState,
}

/// The paging mode, from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57
/// (SDM §4.1.1, table 4-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG=0 (real mode or unpaged protected mode): linear = physical.
    Disabled,
    /// 32-bit paging (CR4.PAE=0).
    Legacy32,
    /// PAE paging (CR4.PAE=1, EFER.LMA=0).
    Pae,
    /// 4-level paging (EFER.LMA=1, CR4.LA57=0).
    FourLevel,
    /// 5-level paging (EFER.LMA=1, CR4.LA57=1).
    FiveLevel,
}

/// The shape of a paging mode, which is all the walker loop needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// The number of the top level; the 4 KiB leaf is level 1.
    levels: u32,
    width: EntryWidth,
    /// Linear-address bits consumed by each level.
    index_bits: u32,
    /// PAE: the top level comes from the PDPTE registers.
    top_level_in_registers: bool,
    /// Long mode: the width of a canonical address (48 or 57).
    canonical_bits: Option<u32>,
}

impl PagingMode {
    /// Selects the mode the guest's registers are in.
    pub fn from_registers(regs: &PagingRegisters) -> Result<Self, WalkError> {
        if regs.cr0 & CR0_PG == 0 {
            return Ok(PagingMode::Disabled);
        }
        if regs.cr0 & CR0_PE == 0 {
            return Err(WalkError::InvalidPagingState);
        }
        let pae = regs.cr4 & CR4_PAE != 0;
        if regs.efer & EFER_LMA != 0 {
            if !pae {
                return Err(WalkError::InvalidPagingState);
            }
            return Ok(if regs.cr4 & CR4_LA57 != 0 {
                PagingMode::FiveLevel
            } else {
                PagingMode::FourLevel
            });
        }
        Ok(if pae {
            PagingMode::Pae
        } else {
            PagingMode::Legacy32
        })
    }

    fn layout(self) -> Option<Layout> {
        let long = |levels, canonical| Layout {
            levels,
            width: EntryWidth::Bits64,
            index_bits: 9,
            top_level_in_registers: false,
            canonical_bits: Some(canonical),
        };
        match self {
            PagingMode::Disabled => None,
            PagingMode::Legacy32 => Some(Layout {
                levels: 2,
                width: EntryWidth::Bits32,
                index_bits: 10,
                top_level_in_registers: false,
                canonical_bits: None,
            }),
            PagingMode::Pae => Some(Layout {
                levels: 3,
                width: EntryWidth::Bits64,
                index_bits: 9,
                top_level_in_registers: true,
                canonical_bits: None,
            }),
            PagingMode::FourLevel => Some(long(4, 48)),
            PagingMode::FiveLevel => Some(long(5, 57)),
        }
    }
}

/// Everything one translation depends on, with the values derived once.
struct Walk<'a> {
    regs: &'a PagingRegisters,
    features: &'a PagingFeatures,
    mode: PagingMode,
    layout: Layout,
    access: Access,
    linear: u64,
}

/// The rights accumulated over the levels of a walk (SDM §4.6: a page is
/// writable/user only if every level says so, and not executable if any
/// level says so).
struct Rights {
    writable: bool,
    user: bool,
    no_execute: bool,
}

impl Walk<'_> {
    fn is_pae_or_long(&self) -> bool {
        self.layout.width == EntryWidth::Bits64
    }

    fn nx_enabled(&self) -> bool {
        self.is_pae_or_long() && self.regs.efer & EFER_NXE != 0
    }

    /// The error-code bits that describe the access itself.
    fn access_error_bits(&self) -> u32 {
        let mut code = 0;
        if self.access.kind == AccessKind::Write {
            code |= PF_WRITE;
        }
        if self.access.privilege == Privilege::User {
            code |= PF_USER;
        }
        // SDM §4.7: I/D is reported only if fetches can fault because of
        // paging, i.e. with SMEP or with NX in PAE/long mode.
        if self.access.kind == AccessKind::Fetch
            && (self.regs.cr4 & CR4_SMEP != 0 || self.nx_enabled())
        {
            code |= PF_FETCH;
        }
        code
    }

    fn fault(&self, extra: u32) -> WalkError {
        WalkError::PageFault(PageFault {
            linear_address: self.linear,
            error_code: self.access_error_bits() | extra,
        })
    }

    /// Whether `level` can map a page (with PS=1) in this mode.
    fn large_page_allowed(&self, level: u32) -> bool {
        match self.mode {
            PagingMode::Legacy32 => level == 2 && self.regs.cr4 & CR4_PSE != 0,
            PagingMode::Pae => level == 2,
            PagingMode::FourLevel | PagingMode::FiveLevel => {
                level == 2 || (level == 3 && self.features.gb_pages)
            }
            PagingMode::Disabled => false,
        }
    }

    /// The bits of an entry at `level` that must be zero.  `leaf` says
    /// whether the entry maps a page (PS=1 above level 1).
    fn reserved_bits(&self, level: u32, leaf: bool) -> u64 {
        if self.layout.width == EntryWidth::Bits32 {
            // 32-bit paging reserves bits only in a 4 MiB PDE: 21:13
            // without PSE-36; with it, bits 20:13 hold physical-address
            // bits 39:32 and those beyond MAXPHYADDR (capped at 40) stay
            // reserved (SDM table 4-4).
            if !(leaf && level == 2) {
                return 0;
            }
            let high_phys_bits = if self.features.pse36 {
                self.features.phys_bits().min(40) - 32
            } else {
                0
            };
            return bit_range(21, 13 + high_phys_bits);
        }
        if self.layout.top_level_in_registers && level == self.layout.levels {
            // A PAE PDPTE: bits 2:1, 8:5 and 63:MAXPHYADDR (SDM table 4-8;
            // the XD bit does not exist there).
            return bit_range(63, self.features.phys_bits()) | bit_range(2, 1) | bit_range(8, 5);
        }
        let mut reserved = self.features.above_phys_mask();
        if !self.nx_enabled() {
            reserved |= ENTRY_NO_EXECUTE;
        }
        if leaf && level > 1 {
            // The frame of a large page is aligned to its size; bit 12
            // is PAT, the bits between it and the frame are reserved.
            reserved |= bit_range(self.offset_bits(level) - 1, 13);
        }
        if !self.large_page_allowed(level) && level > 1 {
            // PS in a PML5E/PML4E, or in a PDPTE without 1 GiB pages.
            reserved |= ENTRY_LARGE;
        }
        reserved
    }

    /// The number of page-offset bits of a page mapped at `level`.
    fn offset_bits(&self, level: u32) -> u32 {
        12 + self.layout.index_bits * (level - 1)
    }

    fn entry_index(&self, level: u32) -> u64 {
        (self.linear >> self.offset_bits(level)) & low_bits(self.layout.index_bits)
    }

    /// The physical address a leaf entry at `level` maps its page to.
    fn leaf_frame(&self, entry: u64, level: u32) -> u64 {
        let page_mask = !low_bits(self.offset_bits(level));
        if self.layout.width == EntryWidth::Bits32 {
            let mut frame = entry & 0xffff_f000 & page_mask;
            if level == 2 && self.features.pse36 {
                // PSE-36: PDE bits 20:13 are physical bits 39:32; the
                // reserved-bit check already cut them to MAXPHYADDR.
                frame |= ((entry >> 13) & 0xff) << 32;
            }
            frame
        } else {
            entry & self.features.frame_mask() & page_mask
        }
    }

    /// The table an entry at a non-leaf level points to.
    fn next_table(&self, entry: u64) -> u64 {
        match self.layout.width {
            EntryWidth::Bits32 => entry & 0xffff_f000,
            EntryWidth::Bits64 => entry & self.features.frame_mask(),
        }
    }

    fn top_table(&self) -> u64 {
        match self.layout.width {
            EntryWidth::Bits32 => self.regs.cr3 & 0xffff_f000,
            EntryWidth::Bits64 => self.regs.cr3 & self.features.frame_mask(),
        }
    }

    fn read_entry<M: GuestMemory + ?Sized>(
        &self,
        memory: &mut M,
        gpa: u64,
    ) -> Result<u64, WalkError> {
        let value = match self.layout.width {
            EntryWidth::Bits32 => memory.read_u32(gpa).map(u64::from),
            EntryWidth::Bits64 => memory.read_u64(gpa),
        };
        value.map_err(|error| WalkError::Memory { gpa, error })
    }

    /// The access-rights check of SDM §4.6 once the walk has reached a
    /// leaf.  Returns the extra error-code bits of a violation.
    fn check_rights(&self, rights: &Rights, leaf_entry: u64) -> Result<(), u32> {
        let cr4 = self.regs.cr4;
        let wp = self.regs.cr0 & CR0_WP != 0;
        let user_access = self.access.privilege == Privilege::User;
        // SMAP lets a supervisor data access reach a user page only when
        // it is explicit and RFLAGS.AC=1.
        let smap_blocks = cr4 & CR4_SMAP != 0
            && !matches!(
                self.access.privilege,
                Privilege::Supervisor {
                    alignment_check: true
                }
            );
        let allowed = match self.access.kind {
            AccessKind::Fetch => {
                !(self.nx_enabled() && rights.no_execute)
                    && if user_access {
                        rights.user
                    } else {
                        !(rights.user && cr4 & CR4_SMEP != 0)
                    }
            }
            AccessKind::Read => {
                if user_access {
                    rights.user
                } else {
                    !(rights.user && smap_blocks)
                }
            }
            AccessKind::Write => {
                if user_access {
                    rights.user && rights.writable
                } else {
                    !(rights.user && smap_blocks) && (rights.writable || !wp)
                }
            }
        };
        if !allowed {
            return Err(PF_PRESENT);
        }
        // Protection keys (SDM §4.6.2): data accesses to user pages in
        // long mode, with CR4.PKE.  Write-disable binds supervisor
        // writes only with CR0.WP=1.
        let long_mode = self.layout.canonical_bits.is_some();
        if long_mode && cr4 & CR4_PKE != 0 && rights.user && self.access.kind != AccessKind::Fetch {
            let key = ((leaf_entry >> PROTECTION_KEY_SHIFT) & 0xf) as u32;
            let access_disabled = self.regs.pkru >> (2 * key) & 1 != 0;
            let write_disabled = self.regs.pkru >> (2 * key + 1) & 1 != 0;
            let write_blocked =
                self.access.kind == AccessKind::Write && write_disabled && (user_access || wp);
            if access_disabled || write_blocked {
                return Err(PF_PRESENT | PF_PROTECTION_KEY);
            }
        }
        Ok(())
    }

    fn run<M: GuestMemory + ?Sized>(&self, memory: &mut M) -> Result<Translation, WalkError> {
        let layout = self.layout;
        let mut rights = Rights {
            writable: true,
            user: true,
            no_execute: false,
        };
        let mut updates = AccessedDirtyUpdates::new();
        let mut table = self.top_table();
        let mut level = layout.levels;
        loop {
            let index = self.entry_index(level);
            let from_registers = layout.top_level_in_registers && level == layout.levels;
            let (entry, entry_gpa) = if from_registers {
                let pdpte = self.regs.pdptes.get(index as usize & 3).copied();
                (pdpte.unwrap_or(0), None)
            } else {
                let bytes = match layout.width {
                    EntryWidth::Bits32 => 4,
                    EntryWidth::Bits64 => 8,
                };
                let gpa = table.wrapping_add(index * bytes);
                (self.read_entry(memory, gpa)?, Some(gpa))
            };
            if entry & ENTRY_PRESENT == 0 {
                return Err(self.fault(0));
            }
            let leaf = level == 1 || (self.large_page_allowed(level) && entry & ENTRY_LARGE != 0);
            if entry & self.reserved_bits(level, leaf) != 0 {
                return Err(self.fault(PF_PRESENT | PF_RESERVED));
            }
            // PDPTEs carry no rights (SDM §4.4.2: they count as R/W=1,
            // U/S=1, XD=0).
            if !from_registers {
                rights.writable &= entry & ENTRY_WRITABLE != 0;
                rights.user &= entry & ENTRY_USER != 0;
                rights.no_execute |= entry & ENTRY_NO_EXECUTE != 0;
            }
            if leaf {
                self.check_rights(&rights, entry)
                    .map_err(|extra| self.fault(extra))?;
                let offset_bits = self.offset_bits(level);
                let page_size =
                    PageSize::from_offset_bits(offset_bits).ok_or(WalkError::InvalidPagingState)?;
                if let Some(entry_gpa) = entry_gpa {
                    let mut set_bits = 0;
                    if entry & ENTRY_ACCESSED == 0 {
                        set_bits |= ENTRY_ACCESSED;
                    }
                    if self.access.kind == AccessKind::Write && entry & ENTRY_DIRTY == 0 {
                        set_bits |= ENTRY_DIRTY;
                    }
                    if set_bits != 0 {
                        updates.push(AccessedDirtyUpdate {
                            entry_gpa,
                            width: layout.width,
                            old_value: entry,
                            set_bits,
                        });
                    }
                }
                let gpa = self.leaf_frame(entry, level) | (self.linear & low_bits(offset_bits));
                return Ok(Translation {
                    gpa,
                    page_size,
                    accessed_dirty: updates,
                });
            }
            if let Some(entry_gpa) = entry_gpa {
                if entry & ENTRY_ACCESSED == 0 {
                    updates.push(AccessedDirtyUpdate {
                        entry_gpa,
                        width: layout.width,
                        old_value: entry,
                        set_bits: ENTRY_ACCESSED,
                    });
                }
            }
            table = self.next_table(entry);
            level -= 1;
        }
    }
}

/// Whether `linear` is canonical for an address width of `bits`.
fn is_canonical(linear: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((linear << shift) as i64) >> shift) as u64 == linear
}

/// Translates `linear` for `access` as the guest's MMU would.
///
/// In the 32-bit modes only the low 32 bits of `linear` count (linear
/// addresses wrap at 4 GiB there).  In long mode a non-canonical address is
/// refused with [`WalkError::NonCanonical`].
pub fn translate<M: GuestMemory + ?Sized>(
    memory: &mut M,
    regs: &PagingRegisters,
    features: &PagingFeatures,
    linear: u64,
    access: Access,
) -> Result<Translation, WalkError> {
    let mode = PagingMode::from_registers(regs)?;
    let Some(layout) = mode.layout() else {
        return Ok(Translation {
            gpa: linear & 0xffff_ffff,
            page_size: PageSize::Size4K,
            accessed_dirty: AccessedDirtyUpdates::new(),
        });
    };
    let linear = match layout.canonical_bits {
        Some(bits) => {
            if !is_canonical(linear, bits) {
                return Err(WalkError::NonCanonical {
                    linear_address: linear,
                });
            }
            linear
        }
        None => linear & 0xffff_ffff,
    };
    Walk {
        regs,
        features,
        mode,
        layout,
        access,
        linear,
    }
    .run(memory)
}
