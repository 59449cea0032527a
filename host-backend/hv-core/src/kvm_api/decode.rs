//! Validated decoding of ioctl arguments, and encoding of the outputs
//! whose shape KVM constrains (counted arrays).
//!
//! Each decoder takes the bytes the module copied from userspace and makes
//! the checks KVM makes on the same struct before acting on it, in KVM's
//! order, returning the typed [`Error`] whose errno KVM would return.
//! Checks that need VM or vCPU state beyond what is passed in (is there an
//! in-kernel irqchip, does an eventfd exist, is the slot free...) stay with
//! the caller; each function says which.  Sections of
//! `Documentation/virt/kvm/api.rst` are cited per ioctl; the checks come
//! from `virt/kvm/kvm_main.c`, `virt/kvm/eventfd.c`, `virt/kvm/irqchip.c`,
//! `arch/x86/kvm/x86.c`, `regs.c`, `cpuid.c` and `irq_comm.c` of 6.12.

use core::iter::Take;
use core::marker::PhantomData;
use core::slice::ChunksExact;

use super::constants::*;
use super::errno::Error;
use super::layout::*;
use super::wire::Wire;

/// Decodes a fixed-size struct; only the length is checked.  For the
/// structs KVM takes without checks: `kvm_fpu`, `kvm_lapic_state`,
/// `kvm_irq_level`, `kvm_dirty_log`, KVM_SET_IDENTITY_MAP_ADDR's `u64`.
pub fn decode<T: Wire>(bytes: &[u8]) -> Result<T, Error> {
    T::from_bytes(bytes).ok_or(Error::ShortBuffer)
}

/// Encodes `value` at the start of `out`, returning the bytes to copy back.
pub fn encode<T: Wire>(value: &T, out: &mut [u8]) -> Result<usize, Error> {
    value.to_bytes(out).ok_or(Error::ShortBuffer)?;
    Ok(T::SIZE)
}

/// The entries of a counted array argument, decoded one at a time (no
/// allocation): the module copies `count * T::SIZE` bytes after the header
/// and iterates.
pub struct Entries<'a, T> {
    chunks: Take<ChunksExact<'a, u8>>,
    entry: PhantomData<T>,
}

impl<T: Wire> Iterator for Entries<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        // Every chunk is exactly `T::SIZE` bytes, so decoding cannot fail.
        self.chunks.next().and_then(T::from_bytes)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

/// The first `count` entries of `bytes` (which starts after the header);
/// [`Error::ShortBuffer`] if it holds fewer.
pub fn entries<T: Wire>(bytes: &[u8], count: u32) -> Result<Entries<'_, T>, Error> {
    let count = usize::try_from(count).map_err(|_| Error::ShortBuffer)?;
    let needed = count.checked_mul(T::SIZE).ok_or(Error::ShortBuffer)?;
    if T::SIZE == 0 || bytes.len() < needed {
        return Err(Error::ShortBuffer);
    }
    Ok(Entries {
        chunks: bytes.chunks_exact(T::SIZE).take(count),
        entry: PhantomData,
    })
}

/// The byte length of `count` entries of `entry_size` bytes after a header
/// of `header_size`: how much the module copies for an array argument.
pub fn array_bytes(header_size: usize, entry_size: usize, count: u32) -> Option<usize> {
    usize::try_from(count)
        .ok()?
        .checked_mul(entry_size)?
        .checked_add(header_size)
}

/// Writes a counted array back: the header built by `header` from the
/// count, then the entries.  Returns the bytes written.
fn encode_array<H: Wire, T: Wire>(header: H, items: &[T], out: &mut [u8]) -> Result<usize, Error> {
    let mut written = encode(&header, out)?;
    for item in items {
        let slot = out.get_mut(written..).ok_or(Error::ShortBuffer)?;
        written = written
            .checked_add(encode(item, slot)?)
            .ok_or(Error::ShortBuffer)?;
    }
    Ok(written)
}

fn count_of<T>(items: &[T]) -> Result<u32, Error> {
    u32::try_from(items.len()).map_err(|_| Error::OutputTooLarge)
}

// ---------------------------------------------------------------------------
// CPUID (api.rst 4.20, 4.46, 4.88, 4.118)

/// Which CPUID ioctl a `kvm_cpuid2` header belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidCall {
    /// KVM_SET_CPUID2: `nent` entries come in.
    Set,
    /// KVM_GET_CPUID2: `nent` is the room for the vCPU's entries.
    GetVcpu,
    /// KVM_GET_SUPPORTED_CPUID, KVM_GET_EMULATED_CPUID,
    /// KVM_GET_SUPPORTED_HV_CPUID: `nent` is the room for the answer.
    GetSupported,
}

/// Checks a `kvm_cpuid2` header as KVM does and returns the entry count
/// to copy in (`Set`) or the room for entries out (the `Get`s).
///
/// - `Set`: more than `KVM_MAX_CPUID_ENTRIES` is E2BIG
///   (`kvm_vcpu_ioctl_set_cpuid2`).
/// - `GetSupported`: 0 is E2BIG; more than `KVM_MAX_CPUID_ENTRIES` is
///   clamped to it, not refused (`kvm_dev_ioctl_get_cpuid`).
/// - `GetVcpu`: any room; too little is found by [`encode_cpuid2`].
pub fn decode_cpuid2_header(call: CpuidCall, bytes: &[u8]) -> Result<u32, Error> {
    let header: kvm_cpuid2 = decode(bytes)?;
    match call {
        CpuidCall::Set if header.nent > KVM_MAX_CPUID_ENTRIES => Err(Error::TooManyCpuidEntries),
        CpuidCall::GetSupported if header.nent == 0 => Err(Error::OutputTooLarge),
        CpuidCall::GetSupported => Ok(header.nent.min(KVM_MAX_CPUID_ENTRIES)),
        CpuidCall::Set | CpuidCall::GetVcpu => Ok(header.nent),
    }
}

/// KVM_GET_EMULATED_CPUID only: KVM reads the `room` entries userspace
/// passed and refuses (EINVAL) any whose padding is not zero, keeping
/// `padding` free for future use (`sanity_check_entries` in `cpuid.c`).
pub fn check_emulated_cpuid_padding(entry_bytes: &[u8], room: u32) -> Result<(), Error> {
    for entry in entries::<kvm_cpuid_entry2>(entry_bytes, room)? {
        if entry.padding != [0; 3] {
            return Err(Error::ReservedNotZero);
        }
    }
    Ok(())
}

/// Writes the answer of a CPUID `Get`: the header with `nent` set to the
/// number of entries, then the entries.  More entries than `room` is E2BIG
/// and nothing is written, as in KVM.
pub fn encode_cpuid2(
    room: u32,
    answer: &[kvm_cpuid_entry2],
    out: &mut [u8],
) -> Result<usize, Error> {
    let nent = count_of(answer)?;
    if nent > room {
        return Err(Error::OutputTooLarge);
    }
    let header = kvm_cpuid2 {
        nent,
        ..kvm_cpuid2::ZERO
    };
    encode_array(header, answer, out)
}

// ---------------------------------------------------------------------------
// MSRs (api.rst 4.3, 4.18, 4.19)

/// Checks a `kvm_msrs` header of KVM_GET_MSRS / KVM_SET_MSRS and returns
/// `nmsrs`, the entries to copy in.  `nmsrs` at or above `MAX_IO_MSRS` is
/// E2BIG (`msr_io` in `x86.c`).  KVM returns the number of entries it
/// processed, stopping at the first MSR it refuses; writes the (partly
/// filled) entries back for GET.
pub fn decode_msrs_header(bytes: &[u8]) -> Result<u32, Error> {
    let header: kvm_msrs = decode(bytes)?;
    if header.nmsrs >= MAX_IO_MSRS {
        return Err(Error::TooManyMsrs);
    }
    Ok(header.nmsrs)
}

/// Returns the room (`nmsrs`) of a KVM_GET_MSR_INDEX_LIST /
/// KVM_GET_MSR_FEATURE_INDEX_LIST header.
pub fn decode_msr_list_header(bytes: &[u8]) -> Result<u32, Error> {
    decode::<kvm_msr_list>(bytes).map(|header| header.nmsrs)
}

/// Writes an MSR index list as KVM does: the header with the full count
/// first, *always*, so userspace learns the size it needs; then, if the
/// room suffices, the indices.  Too little room is E2BIG after the header
/// was written: copy [`kvm_msr_list`]'s 4 bytes back in that case too.
pub fn encode_msr_list(room: u32, indices: &[u32], out: &mut [u8]) -> Result<usize, Error> {
    let nmsrs = count_of(indices)?;
    let header = kvm_msr_list { nmsrs, indices: [] };
    if nmsrs > room {
        encode(&header, out)?;
        return Err(Error::OutputTooLarge);
    }
    encode_array(header, indices, out)
}

// ---------------------------------------------------------------------------
// Memory regions (api.rst 4.35, 4.140)

/// Which of the two memory region ioctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryRegionVersion {
    /// KVM_SET_USER_MEMORY_REGION, `kvm_userspace_memory_region`.
    V1,
    /// KVM_SET_USER_MEMORY_REGION2, `kvm_userspace_memory_region2`.
    V2,
}

/// What the VM supports, which decides the flags KVM accepts
/// (`check_memory_region_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegionSupport {
    /// KVM_MEM_READONLY (KVM_CAP_READONLY_MEM); true for x86 VMs without
    /// protected state.
    pub readonly: bool,
    /// KVM_MEM_GUEST_MEMFD (private memory VM types only).
    pub guest_memfd: bool,
}

/// The flags of a memory region, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRegionFlags {
    /// KVM_MEM_LOG_DIRTY_PAGES: track writes for KVM_GET_DIRTY_LOG.
    pub log_dirty_pages: bool,
    /// KVM_MEM_READONLY: guest writes exit as MMIO.
    pub readonly: bool,
    /// KVM_MEM_GUEST_MEMFD: private memory comes from `guest_memfd`.
    pub guest_memfd: bool,
}

/// A memory region request whose flags and slot number KVM would accept.
/// Size, alignment, overlap and address space checks are the memory slot
/// table's (`super::super::memslot`), which KVM does next in
/// `__kvm_set_memory_region`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Bits 16-31 of `slot`: the address space (1 is SMM on x86).
    pub address_space: u16,
    /// Bits 0-15 of `slot`.
    pub slot: u16,
    /// The slot's flags.
    pub flags: MemoryRegionFlags,
    /// Where the slot starts in guest physical memory (bytes).
    pub guest_phys_addr: u64,
    /// The slot's size in bytes; 0 deletes the slot.
    pub memory_size: u64,
    /// The userspace address backing `guest_phys_addr`.
    pub userspace_addr: u64,
    /// Only meaningful with `flags.guest_memfd` (V2).
    pub guest_memfd_offset: u64,
    /// The `guest_memfd` descriptor; only meaningful with `flags.guest_memfd` (V2).
    pub guest_memfd: u32,
}

/// Decodes a memory region argument and checks, in KVM's order: the V1
/// ioctl takes only LOG_DIRTY_PAGES and READONLY (`kvm_vm_ioctl`), the
/// slot id is below `KVM_USER_MEM_SLOTS`
/// (`kvm_vm_ioctl_set_memory_region`), and the flags are ones the VM
/// supports, GUEST_MEMFD excluding LOG_DIRTY_PAGES and READONLY
/// (`check_memory_region_flags`).
pub fn decode_memory_region(
    version: MemoryRegionVersion,
    bytes: &[u8],
    support: MemoryRegionSupport,
) -> Result<MemoryRegion, Error> {
    let region: kvm_userspace_memory_region2 = match version {
        MemoryRegionVersion::V1 => {
            let v1: kvm_userspace_memory_region = decode(bytes)?;
            if v1.flags & !KVM_SET_USER_MEMORY_REGION_V1_FLAGS != 0 {
                return Err(Error::UnknownFlags);
            }
            kvm_userspace_memory_region2 {
                slot: v1.slot,
                flags: v1.flags,
                guest_phys_addr: v1.guest_phys_addr,
                memory_size: v1.memory_size,
                userspace_addr: v1.userspace_addr,
                ..kvm_userspace_memory_region2::ZERO
            }
        }
        MemoryRegionVersion::V2 => decode(bytes)?,
    };
    let slot = region.slot as u16;
    if u32::from(slot) >= KVM_USER_MEM_SLOTS {
        return Err(Error::MemorySlotOutOfRange);
    }

    let mut valid = KVM_MEM_LOG_DIRTY_PAGES;
    if support.guest_memfd {
        valid |= KVM_MEM_GUEST_MEMFD;
    }
    if region.flags & KVM_MEM_GUEST_MEMFD != 0 {
        valid &= !KVM_MEM_LOG_DIRTY_PAGES;
    }
    if support.readonly && region.flags & KVM_MEM_GUEST_MEMFD == 0 {
        valid |= KVM_MEM_READONLY;
    }
    if region.flags & !valid != 0 {
        return Err(Error::UnknownFlags);
    }

    Ok(MemoryRegion {
        address_space: (region.slot >> 16) as u16,
        slot,
        flags: MemoryRegionFlags {
            log_dirty_pages: region.flags & KVM_MEM_LOG_DIRTY_PAGES != 0,
            readonly: region.flags & KVM_MEM_READONLY != 0,
            guest_memfd: region.flags & KVM_MEM_GUEST_MEMFD != 0,
        },
        guest_phys_addr: region.guest_phys_addr,
        memory_size: region.memory_size,
        userspace_addr: region.userspace_addr,
        guest_memfd_offset: region.guest_memfd_offset,
        guest_memfd: region.guest_memfd,
    })
}

// ---------------------------------------------------------------------------
// irqfd and ioeventfd (api.rst 4.75, 4.59)

/// A KVM_IRQFD request.  The caller still checks, as `kvm_irqfd_assign`
/// does, that an in-kernel irqchip exists (EAGAIN before it is
/// initialised, EINVAL without one, and EINVAL for RESAMPLE with a split
/// irqchip) and that the descriptors are eventfds (EBADF/EINVAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqfdRequest {
    /// Signal `gsi` whenever `fd` is written.
    Assign {
        /// The eventfd.
        fd: u32,
        /// The GSI (route number) it raises.
        gsi: u32,
        /// With KVM_IRQFD_FLAG_RESAMPLE: the eventfd signalled when the
        /// guest acknowledges the level-triggered interrupt.
        resample_fd: Option<u32>,
    },
    /// Removes every irqfd of `fd` on `gsi` (`resamplefd` is ignored).
    Deassign {
        /// The eventfd.
        fd: u32,
        /// The GSI it was assigned to.
        gsi: u32,
    },
}

/// Decodes KVM_IRQFD: flags other than DEASSIGN and RESAMPLE are EINVAL
/// (`kvm_irqfd`); the padding is not checked, as in KVM.
pub fn decode_irqfd(bytes: &[u8]) -> Result<IrqfdRequest, Error> {
    let irqfd: kvm_irqfd = decode(bytes)?;
    if irqfd.flags & !(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE) != 0 {
        return Err(Error::UnknownFlags);
    }
    if irqfd.flags & KVM_IRQFD_FLAG_DEASSIGN != 0 {
        return Ok(IrqfdRequest::Deassign {
            fd: irqfd.fd,
            gsi: irqfd.gsi,
        });
    }
    Ok(IrqfdRequest::Assign {
        fd: irqfd.fd,
        gsi: irqfd.gsi,
        resample_fd: (irqfd.flags & KVM_IRQFD_FLAG_RESAMPLE != 0).then_some(irqfd.resamplefd),
    })
}

/// The bus an ioeventfd listens on (`ioeventfd_bus_from_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoeventfdBus {
    /// Guest physical addresses.  An ioeventfd of length 0 also goes on
    /// KVM's fast MMIO bus, which matches a write without decoding it.
    Mmio,
    /// I/O ports.
    Pio,
    /// s390's virtio-ccw notifications: accepted on x86 like KVM does,
    /// where nothing ever writes to that bus.
    VirtioCcwNotify,
}

/// An ioeventfd as KVM stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioeventfd {
    /// The bus the address is on.
    pub bus: IoeventfdBus,
    /// The port or guest physical address the write must hit.
    pub addr: u64,
    /// The access length, 0 for any.  Unchecked for a deassign (which
    /// matches on it).
    pub length: u32,
    /// With KVM_IOEVENTFD_FLAG_DATAMATCH: only writes of this value.
    pub datamatch: Option<u64>,
    /// The eventfd to signal.
    pub fd: i32,
}

/// A KVM_IOEVENTFD request.  The caller checks that `fd` is an eventfd
/// (EBADF/EINVAL), that no registered ioeventfd collides (EEXIST), and
/// finds the one to remove (ENOENT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoeventfdRequest {
    /// Register this ioeventfd.
    Assign(Ioeventfd),
    /// Remove the ioeventfd equal to this one.
    Deassign(Ioeventfd),
}

/// Decodes KVM_IOEVENTFD.  For an assign, as `kvm_assign_ioeventfd`: the
/// length is 0, 1, 2, 4 or 8, `addr + len` does not wrap, no flag outside
/// `KVM_IOEVENTFD_VALID_FLAG_MASK`, and DATAMATCH needs a length.  KVM
/// checks no alignment of `addr`, so neither does this.  A deassign is
/// taken as is: KVM only looks for an exact match.
pub fn decode_ioeventfd(bytes: &[u8]) -> Result<IoeventfdRequest, Error> {
    let args: kvm_ioeventfd = decode(bytes)?;
    let bus = if args.flags & KVM_IOEVENTFD_FLAG_PIO != 0 {
        IoeventfdBus::Pio
    } else if args.flags & KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY != 0 {
        IoeventfdBus::VirtioCcwNotify
    } else {
        IoeventfdBus::Mmio
    };
    let datamatch_flag = args.flags & KVM_IOEVENTFD_FLAG_DATAMATCH != 0;
    let ioeventfd = Ioeventfd {
        bus,
        addr: args.addr,
        length: args.len,
        datamatch: datamatch_flag.then_some(args.datamatch),
        fd: args.fd,
    };
    if args.flags & KVM_IOEVENTFD_FLAG_DEASSIGN != 0 {
        return Ok(IoeventfdRequest::Deassign(ioeventfd));
    }
    if !matches!(args.len, 0 | 1 | 2 | 4 | 8) {
        return Err(Error::IoeventfdLength);
    }
    if args.addr.checked_add(u64::from(args.len)).is_none() {
        return Err(Error::IoeventfdRangeWraps);
    }
    if args.flags & !KVM_IOEVENTFD_VALID_FLAG_MASK != 0 {
        return Err(Error::UnknownFlags);
    }
    if args.len == 0 && datamatch_flag {
        return Err(Error::IoeventfdDatamatchWithoutLength);
    }
    Ok(IoeventfdRequest::Assign(ioeventfd))
}

// ---------------------------------------------------------------------------
// KVM_ENABLE_CAP (api.rst 4.37, 6, 7)

/// The file KVM_ENABLE_CAP arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapTarget {
    /// A VM fd (KVM_CAP_ENABLE_CAP_VM).
    Vm,
    /// A vCPU fd (KVM_CAP_ENABLE_CAP).
    Vcpu,
}

/// A capability to enable, with its argument checked where KVM's check
/// needs no VM state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableCap {
    /// VM, KVM_CAP_SPLIT_IRQCHIP (api.rst 7.5): local APICs in the kernel,
    /// PIC and IOAPIC in userspace.  The caller refuses it (EEXIST) once an
    /// irqchip exists or a vCPU was created.
    SplitIrqchip {
        /// GSIs `0..reserved_ioapic_pins` are kept for the userspace IOAPIC.
        reserved_ioapic_pins: u32,
    },
    /// VM, KVM_CAP_X2APIC_API (api.rst 7.7).
    X2apicApi {
        /// KVM_X2APIC_API_USE_32BIT_IDS.
        use_32bit_ids: bool,
        /// KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK.
        disable_broadcast_quirk: bool,
    },
    /// VM, KVM_CAP_X86_DISABLE_EXITS (api.rst 7.13): which instructions
    /// stop causing exits.
    DisableExits {
        /// MWAIT and MONITOR.
        mwait: bool,
        /// HLT.
        hlt: bool,
        /// PAUSE.
        pause: bool,
        /// C-state entry.
        cstate: bool,
    },
    /// VM, KVM_CAP_HALT_POLL (api.rst 7.20).
    HaltPoll {
        /// The longest a halted vCPU polls before sleeping, in ns.
        max_halt_poll_ns: u32,
    },
    /// vCPU, KVM_CAP_ENFORCE_PV_FEATURE_CPUID (api.rst 8.28).
    EnforcePvFeatureCpuid {
        /// Offer only the PV features in the vCPU's CPUID.
        enforce: bool,
    },
    /// Any other capability, for the caller to accept or refuse (KVM's
    /// default for an unknown one is EINVAL on both files).
    Other {
        /// The `KVM_CAP_*` number.
        cap: u32,
        /// `kvm_enable_cap::args`, unchecked.
        args: [u64; 4],
    },
}

/// Decodes KVM_ENABLE_CAP.  Nonzero `flags` is EINVAL: every x86 path of
/// `kvm_vm_ioctl_enable_cap`, the generic VM capabilities and
/// `kvm_vcpu_ioctl_enable_cap` check it (only the dirty ring
/// capabilities, which `/dev/pvrs` does not offer, skip the check).
pub fn decode_enable_cap(target: CapTarget, bytes: &[u8]) -> Result<EnableCap, Error> {
    let enable: kvm_enable_cap = decode(bytes)?;
    if enable.flags != 0 {
        return Err(Error::UnknownFlags);
    }
    let argument = enable.args[0];
    let capability = match (target, enable.cap) {
        (CapTarget::Vm, KVM_CAP_SPLIT_IRQCHIP) => EnableCap::SplitIrqchip {
            reserved_ioapic_pins: u32::try_from(argument)
                .ok()
                .filter(|&pins| pins <= MAX_NR_RESERVED_IOAPIC_PINS)
                .ok_or(Error::InvalidCapability)?,
        },
        (CapTarget::Vm, KVM_CAP_X2APIC_API) => {
            if argument & !KVM_X2APIC_API_VALID_FLAGS != 0 {
                return Err(Error::InvalidCapability);
            }
            EnableCap::X2apicApi {
                use_32bit_ids: argument & KVM_X2APIC_API_USE_32BIT_IDS != 0,
                disable_broadcast_quirk: argument & KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK != 0,
            }
        }
        (CapTarget::Vm, KVM_CAP_X86_DISABLE_EXITS) => {
            if argument & !KVM_X86_DISABLE_VALID_EXITS != 0 {
                return Err(Error::InvalidCapability);
            }
            EnableCap::DisableExits {
                mwait: argument & KVM_X86_DISABLE_EXITS_MWAIT != 0,
                hlt: argument & KVM_X86_DISABLE_EXITS_HLT != 0,
                pause: argument & KVM_X86_DISABLE_EXITS_PAUSE != 0,
                cstate: argument & KVM_X86_DISABLE_EXITS_CSTATE != 0,
            }
        }
        (CapTarget::Vm, KVM_CAP_HALT_POLL) => EnableCap::HaltPoll {
            max_halt_poll_ns: u32::try_from(argument).map_err(|_| Error::InvalidCapability)?,
        },
        (CapTarget::Vcpu, KVM_CAP_ENFORCE_PV_FEATURE_CPUID) => EnableCap::EnforcePvFeatureCpuid {
            enforce: argument != 0,
        },
        (_, cap) => EnableCap::Other {
            cap,
            args: enable.args,
        },
    };
    Ok(capability)
}

// ---------------------------------------------------------------------------
// Registers (api.rst 4.12, 4.14, 4.34, 4.45)

/// RFLAGS bit 1, always set: KVM ORs it into what KVM_SET_REGS passes.
pub const X86_EFLAGS_FIXED: u64 = 1 << 1;

/// Decodes KVM_SET_REGS.  KVM takes any values; it only forces the fixed
/// RFLAGS bit, which the returned registers have set.
pub fn decode_regs(bytes: &[u8]) -> Result<kvm_regs, Error> {
    let mut regs: kvm_regs = decode(bytes)?;
    regs.rflags |= X86_EFLAGS_FIXED;
    Ok(regs)
}

// The control register and EFER bits `kvm_is_valid_sregs` looks at (from
// `arch/x86/include/uapi/asm/processor-flags.h` and
// `arch/x86/include/asm/msr-index.h`; the header test checks them).
// The bits themselves live in `paging` and `msr`; these names are the C ones.
pub use crate::msr::{EFER_LMA, EFER_LME};
pub use crate::paging::{CR0_PE as X86_CR0_PE, CR0_PG as X86_CR0_PG, CR4_PAE as X86_CR4_PAE};
/// CR0 bit 29 (NW): not write-through; invalid without CD.
pub const X86_CR0_NW: u64 = 1 << 29;
/// CR0 bit 30 (CD): cache disable.
pub const X86_CR0_CD: u64 = 1 << 30;

/// What `kvm_is_valid_sregs` needs to know about the vCPU; the caller
/// derives it from the host and the vCPU's CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SregsLimits {
    /// The guest's MAXPHYADDR: CR3 may not set bits at or above it.
    pub max_phys_addr_bits: u8,
    /// CR4 bits the host or the guest's CPUID make reserved
    /// (`cr4_reserved_bits | cr4_guest_rsvd_bits`).
    pub cr4_reserved: u64,
    /// EFER bits that are reserved or that the guest's CPUID does not
    /// allow (`efer_reserved_bits` and the `__kvm_valid_efer` checks).
    pub efer_reserved: u64,
}

/// Why `kvm_is_valid_sregs` refuses a KVM_SET_SREGS (all EINVAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SregsError {
    /// EFER.LME and CR0.PG (long mode) without CR4.PAE.
    LongModeWithoutPae,
    /// EFER.LME and CR0.PG without EFER.LMA.
    LongModeWithoutLma,
    /// In long mode, CR3 sets bits beyond MAXPHYADDR.
    Cr3BeyondMaxPhysAddr,
    /// EFER.LMA outside long mode.
    LmaOutsideLongMode,
    /// CS.L outside long mode.
    LongCodeSegmentOutsideLongMode,
    /// CR4 sets reserved bits.
    Cr4Reserved,
    /// CR0 sets bits 63-32.
    Cr0HighBits,
    /// CR0.NW without CR0.CD.
    Cr0NwWithoutCd,
    /// CR0.PG without CR0.PE.
    Cr0PgWithoutPe,
    /// EFER sets reserved or unsupported bits.
    EferReserved,
}

/// `kvm_is_valid_sregs` (`arch/x86/kvm/regs.c`), in its order.  SVM's own
/// CR0/CR4 hooks accept everything, so nothing vendor-specific is left;
/// CR3 is checked without LAM's exemptions (an Intel feature).  The APIC
/// base, which KVM checks next in `kvm_apic_set_base`, is the caller's.
pub fn check_sregs(sregs: &kvm_sregs, limits: &SregsLimits) -> Result<(), SregsError> {
    if sregs.efer & EFER_LME != 0 && sregs.cr0 & X86_CR0_PG != 0 {
        if sregs.cr4 & X86_CR4_PAE == 0 {
            return Err(SregsError::LongModeWithoutPae);
        }
        if sregs.efer & EFER_LMA == 0 {
            return Err(SregsError::LongModeWithoutLma);
        }
        let beyond = sregs
            .cr3
            .checked_shr(u32::from(limits.max_phys_addr_bits))
            .unwrap_or(0);
        if beyond != 0 {
            return Err(SregsError::Cr3BeyondMaxPhysAddr);
        }
    } else {
        if sregs.efer & EFER_LMA != 0 {
            return Err(SregsError::LmaOutsideLongMode);
        }
        if sregs.cs.l != 0 {
            return Err(SregsError::LongCodeSegmentOutsideLongMode);
        }
    }
    if sregs.cr4 & limits.cr4_reserved != 0 {
        return Err(SregsError::Cr4Reserved);
    }
    if sregs.cr0 >> 32 != 0 {
        return Err(SregsError::Cr0HighBits);
    }
    if sregs.cr0 & X86_CR0_NW != 0 && sregs.cr0 & X86_CR0_CD == 0 {
        return Err(SregsError::Cr0NwWithoutCd);
    }
    if sregs.cr0 & X86_CR0_PG != 0 && sregs.cr0 & X86_CR0_PE == 0 {
        return Err(SregsError::Cr0PgWithoutPe);
    }
    if sregs.efer & limits.efer_reserved != 0 {
        return Err(SregsError::EferReserved);
    }
    Ok(())
}

/// Decodes and checks KVM_SET_SREGS ([`check_sregs`]).
pub fn decode_sregs(bytes: &[u8], limits: &SregsLimits) -> Result<kvm_sregs, Error> {
    let sregs: kvm_sregs = decode(bytes)?;
    check_sregs(&sregs, limits).map_err(Error::InvalidSregs)?;
    Ok(sregs)
}

/// Decodes KVM_SET_DEBUGREGS: `flags` must be 0 and DR6/DR7 bits 63-32
/// clear (`kvm_vcpu_ioctl_x86_set_debugregs`, `kvm_dr6_valid`,
/// `kvm_dr7_valid`).
pub fn decode_debugregs(bytes: &[u8]) -> Result<kvm_debugregs, Error> {
    let debugregs: kvm_debugregs = decode(bytes)?;
    if debugregs.flags != 0 {
        return Err(Error::UnknownFlags);
    }
    if debugregs.dr6 >> 32 != 0 || debugregs.dr7 >> 32 != 0 {
        return Err(Error::InvalidValue);
    }
    Ok(debugregs)
}

// The XCR0 state components whose combinations `__kvm_set_xcr` checks
// (Intel SDM vol. 1, 13.3): x87, SSE, AVX, MPX (two), AVX-512 (three),
// AMX (two).
/// XCR0 bit 0: the x87 state, which must always be enabled.
pub const XFEATURE_MASK_FP: u64 = 1 << 0;
/// XCR0 bit 1: the SSE state (XMM registers, MXCSR).
pub const XFEATURE_MASK_SSE: u64 = 1 << 1;
/// XCR0 bit 2: the upper halves of the YMM registers (AVX).
pub const XFEATURE_MASK_YMM: u64 = 1 << 2;
/// XCR0 bit 3: MPX bound registers BND0-3.
pub const XFEATURE_MASK_BNDREGS: u64 = 1 << 3;
/// XCR0 bit 4: MPX BNDCFGU and BNDSTATUS.
pub const XFEATURE_MASK_BNDCSR: u64 = 1 << 4;
/// XCR0 bits 5-7: AVX-512 opmask, upper ZMM0-15 halves and ZMM16-31.
pub const XFEATURE_MASK_AVX512: u64 = (1 << 5) | (1 << 6) | (1 << 7);
/// XCR0 bits 17-18: AMX tile configuration and tile data.
pub const XFEATURE_MASK_XTILE: u64 = (1 << 17) | (1 << 18);

/// Whether `xcr0` is a value KVM lets the guest have (`__kvm_set_xcr`):
/// x87 always on, AVX needs SSE, nothing outside `supported` (x87 is
/// always allowed), MPX, AVX-512 and AMX all or nothing, AVX-512 needs AVX.
pub fn is_valid_xcr0(xcr0: u64, supported: u64) -> bool {
    let all_or_none = |mask: u64| xcr0 & mask == 0 || xcr0 & mask == mask;
    xcr0 & XFEATURE_MASK_FP != 0
        && !(xcr0 & XFEATURE_MASK_YMM != 0 && xcr0 & XFEATURE_MASK_SSE == 0)
        && xcr0 & !(supported | XFEATURE_MASK_FP) == 0
        && all_or_none(XFEATURE_MASK_BNDREGS | XFEATURE_MASK_BNDCSR)
        && all_or_none(XFEATURE_MASK_AVX512)
        && !(xcr0 & XFEATURE_MASK_AVX512 != 0 && xcr0 & XFEATURE_MASK_YMM == 0)
        && all_or_none(XFEATURE_MASK_XTILE)
}

/// Decodes KVM_SET_XCRS (`kvm_vcpu_ioctl_x86_set_xcrs`): at most
/// `KVM_MAX_XCRS` entries and no flags; the first entry for XCR0 (the only
/// XCR KVM knows) is the value to set, checked with [`is_valid_xcr0`]
/// against `supported_xcr0`.  `None`: no XCR0 entry, nothing to do.  The
/// caller refuses the ioctl (EINVAL) on a host without XSAVE.
pub fn decode_xcrs(bytes: &[u8], supported_xcr0: u64) -> Result<Option<u64>, Error> {
    let xcrs: kvm_xcrs = decode(bytes)?;
    if xcrs.nr_xcrs > KVM_MAX_XCRS {
        return Err(Error::InvalidValue);
    }
    if xcrs.flags != 0 {
        return Err(Error::UnknownFlags);
    }
    let xcr0 = xcrs
        .xcrs
        .iter()
        .take(xcrs.nr_xcrs as usize)
        .find(|xcr| xcr.xcr == 0)
        .map(|xcr| xcr.value);
    match xcr0 {
        Some(value) if !is_valid_xcr0(value, supported_xcr0) => Err(Error::InvalidValue),
        _ => Ok(xcr0),
    }
}

// ---------------------------------------------------------------------------
// Events and interrupts (api.rst 4.16, 4.32, 4.39)

/// Decodes KVM_INTERRUPT: the vector, below `KVM_NR_INTERRUPTS`
/// (`kvm_vcpu_ioctl_interrupt`).  Without an in-kernel irqchip KVM queues
/// it; with one, the caller answers ENXIO (in-kernel PIC) or EEXIST (one
/// already pending).
pub fn decode_interrupt(bytes: &[u8]) -> Result<u8, Error> {
    let interrupt: kvm_interrupt = decode(bytes)?;
    u8::try_from(interrupt.irq).map_err(|_| Error::InterruptVectorOutOfRange)
}

/// The vCPU states KVM_SET_MP_STATE accepts on x86.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpState {
    /// KVM_MP_STATE_RUNNABLE.
    Runnable,
    /// KVM_MP_STATE_UNINITIALIZED: an AP waiting for INIT.
    Uninitialized,
    /// KVM_MP_STATE_INIT_RECEIVED: an AP waiting for SIPI.
    InitReceived,
    /// KVM_MP_STATE_HALTED: waiting for an interrupt after HLT.
    Halted,
    /// KVM_MP_STATE_SIPI_RECEIVED.
    SipiReceived,
    /// KVM_MP_STATE_AP_RESET_HOLD (SEV-ES).
    ApResetHold,
}

impl MpState {
    /// The `KVM_MP_STATE_*` value of `kvm_mp_state::mp_state`.
    pub const fn to_raw(self) -> u32 {
        match self {
            MpState::Runnable => KVM_MP_STATE_RUNNABLE,
            MpState::Uninitialized => KVM_MP_STATE_UNINITIALIZED,
            MpState::InitReceived => KVM_MP_STATE_INIT_RECEIVED,
            MpState::Halted => KVM_MP_STATE_HALTED,
            MpState::SipiReceived => KVM_MP_STATE_SIPI_RECEIVED,
            MpState::ApResetHold => KVM_MP_STATE_AP_RESET_HOLD,
        }
    }
}

/// Decodes KVM_SET_MP_STATE (`kvm_arch_vcpu_ioctl_set_mpstate`): RUNNABLE
/// always; the others only with an in-kernel local APIC; anything else is
/// EINVAL.  The caller still refuses INIT_RECEIVED / SIPI_RECEIVED while
/// INIT is blocked or an SMI is pending.
pub fn decode_mp_state(bytes: &[u8], lapic_in_kernel: bool) -> Result<MpState, Error> {
    let state: kvm_mp_state = decode(bytes)?;
    let decoded = match state.mp_state {
        KVM_MP_STATE_RUNNABLE => return Ok(MpState::Runnable),
        KVM_MP_STATE_UNINITIALIZED => MpState::Uninitialized,
        KVM_MP_STATE_HALTED => MpState::Halted,
        KVM_MP_STATE_AP_RESET_HOLD => MpState::ApResetHold,
        KVM_MP_STATE_INIT_RECEIVED => MpState::InitReceived,
        KVM_MP_STATE_SIPI_RECEIVED => MpState::SipiReceived,
        _ => return Err(Error::InvalidValue),
    };
    if !lapic_in_kernel {
        return Err(Error::InvalidValue);
    }
    Ok(decoded)
}

/// All `KVM_VCPUEVENT_VALID_*` flags.
const VCPU_EVENTS_VALID_FLAGS: u32 = KVM_VCPUEVENT_VALID_NMI_PENDING
    | KVM_VCPUEVENT_VALID_SIPI_VECTOR
    | KVM_VCPUEVENT_VALID_SHADOW
    | KVM_VCPUEVENT_VALID_SMM
    | KVM_VCPUEVENT_VALID_PAYLOAD
    | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;

/// The NMI vector, which may not be queued as an exception.
const NMI_VECTOR: u8 = 2;

/// Decodes KVM_SET_VCPU_EVENTS and normalises it as
/// `kvm_vcpu_ioctl_x86_set_vcpu_events` does: unknown flags are EINVAL;
/// VALID_PAYLOAD needs KVM_CAP_EXCEPTION_PAYLOAD enabled (EINVAL) and then
/// a pending exception is not also injected, else without it nothing is
/// pending and there is no payload; an injected or pending exception must
/// be a vector up to 31 and not NMI.  The caller refuses SMM state while
/// the vCPU is in INIT_RECEIVED.
pub fn decode_vcpu_events(
    bytes: &[u8],
    exception_payload_enabled: bool,
) -> Result<kvm_vcpu_events, Error> {
    let mut events: kvm_vcpu_events = decode(bytes)?;
    if events.flags & !VCPU_EVENTS_VALID_FLAGS != 0 {
        return Err(Error::UnknownFlags);
    }
    if events.flags & KVM_VCPUEVENT_VALID_PAYLOAD != 0 {
        if !exception_payload_enabled {
            return Err(Error::UnknownFlags);
        }
        if events.exception.pending != 0 {
            events.exception.injected = 0;
        } else {
            events.exception_has_payload = 0;
        }
    } else {
        events.exception.pending = 0;
        events.exception_has_payload = 0;
    }
    let queued = events.exception.injected != 0 || events.exception.pending != 0;
    if queued && (events.exception.nr > 31 || events.exception.nr == NMI_VECTOR) {
        return Err(Error::InvalidValue);
    }
    Ok(events)
}

// ---------------------------------------------------------------------------
// VM-wide devices and time (api.rst 4.30, 4.36, 4.52, 4.55, 4.71, 4.116)

/// Decodes KVM_SET_CLOCK: flags outside `KVM_CLOCK_VALID_FLAGS` are
/// EINVAL (`kvm_vm_ioctl_set_clock`); with KVM_CLOCK_REALTIME, `realtime`
/// is the host time the clock value belongs to.
pub fn decode_clock_data(bytes: &[u8]) -> Result<kvm_clock_data, Error> {
    let clock: kvm_clock_data = decode(bytes)?;
    if clock.flags & !KVM_CLOCK_VALID_FLAGS != 0 {
        return Err(Error::UnknownFlags);
    }
    Ok(clock)
}

/// KVM_CREATE_PIT2's one option.  KVM ignores the other flag bits and the
/// padding; the caller answers EEXIST for a second PIT and ENOENT without
/// an in-kernel PIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PitConfig {
    /// KVM_PIT_SPEAKER_DUMMY: emulate port 0x61 as a dummy speaker.
    pub speaker_dummy: bool,
}

/// Decodes KVM_CREATE_PIT2.
pub fn decode_pit_config(bytes: &[u8]) -> Result<PitConfig, Error> {
    let config: kvm_pit_config = decode(bytes)?;
    Ok(PitConfig {
        speaker_dummy: config.flags & KVM_PIT_SPEAKER_DUMMY != 0,
    })
}

/// The page size the TSS address check uses.
const PAGE_SIZE_U64: u64 = PAGE_SIZE as u64;

/// Checks KVM_SET_TSS_ADDR's `arg`: the three pages must end below 4 GiB
/// (`kvm_vm_ioctl_set_tss_addr` refuses above `(unsigned int)(-3 *
/// PAGE_SIZE)`).  SVM does nothing with it.
pub fn decode_tss_addr(arg: u64) -> Result<u32, Error> {
    let last_start = u64::from(u32::MAX) + 1 - 3 * PAGE_SIZE_U64;
    if arg > last_start {
        return Err(Error::InvalidValue);
    }
    u32::try_from(arg).map_err(|_| Error::InvalidValue)
}

/// KVM_SET_TSC_KHZ's `arg`, truncated to 32 bits as KVM does; 0 means the
/// host's frequency.  The upper bound depends on the host (EINVAL above
/// the maximum guest frequency with TSC scaling).
pub const fn decode_tsc_khz(arg: u64) -> u32 {
    arg as u32
}

/// Decodes KVM_SIGNAL_MSI: flags other than KVM_MSI_VALID_DEVID are
/// EINVAL (`kvm_send_userspace_msi`); the caller answers EINVAL without an
/// in-kernel irqchip.
pub fn decode_msi(bytes: &[u8]) -> Result<kvm_msi, Error> {
    let msi: kvm_msi = decode(bytes)?;
    if msi.flags & !KVM_MSI_VALID_DEVID != 0 {
        return Err(Error::UnknownFlags);
    }
    Ok(msi)
}

/// Decodes KVM_(UN)REGISTER_COALESCED_MMIO: `pio` must be 0 or 1
/// (`kvm_vm_ioctl_register_coalesced_mmio`).
pub fn decode_coalesced_mmio_zone(bytes: &[u8]) -> Result<kvm_coalesced_mmio_zone, Error> {
    let zone: kvm_coalesced_mmio_zone = decode(bytes)?;
    if zone.pio > 1 {
        return Err(Error::InvalidValue);
    }
    Ok(zone)
}

/// The size of the kernel's `sigset_t` on x86-64 (64 signals), the only
/// `len` KVM_SET_SIGNAL_MASK takes.
pub const KERNEL_SIGSET_SIZE: u32 = 8;

/// Decodes a non-NULL KVM_SET_SIGNAL_MASK argument (the header and the
/// set): `len` must be the kernel's `sigset_t` size, else EINVAL.  Returns
/// the signal set, bit `n - 1` for signal `n`.
pub fn decode_signal_mask(bytes: &[u8]) -> Result<u64, Error> {
    let header: kvm_signal_mask = decode(bytes)?;
    if header.len != KERNEL_SIGSET_SIZE {
        return Err(Error::SignalMaskLength);
    }
    decode(
        bytes
            .get(kvm_signal_mask::SIZE..)
            .ok_or(Error::ShortBuffer)?,
    )
}

/// An in-kernel interrupt controller a GSI can be routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irqchip {
    /// KVM_IRQCHIP_PIC_MASTER (pins 0-7).
    PicMaster,
    /// KVM_IRQCHIP_PIC_SLAVE (pins 8-15).
    PicSlave,
    /// KVM_IRQCHIP_IOAPIC.
    Ioapic,
}

/// One validated GSI route of KVM_SET_GSI_ROUTING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsiRoute {
    /// KVM_IRQ_ROUTING_IRQCHIP: the GSI drives a pin of an in-kernel irqchip.
    Irqchip {
        /// The route's GSI.
        gsi: u32,
        /// The controller.
        irqchip: Irqchip,
        /// Its input pin.
        pin: u32,
    },
    /// KVM_IRQ_ROUTING_MSI: the GSI sends a message-signalled interrupt.
    Msi {
        /// The route's GSI.
        gsi: u32,
        /// Bits 31:0 of the MSI address.
        address_lo: u32,
        /// Bits 63:32 of the MSI address (with x2APIC: destination id bits).
        address_hi: u32,
        /// The MSI data word (vector, delivery mode).
        data: u32,
        /// With KVM_MSI_VALID_DEVID (meaningless on x86, but accepted).
        devid: Option<u32>,
    },
}

/// Checks a `kvm_irq_routing` header: at most `KVM_MAX_IRQ_ROUTES`
/// entries, no flags (`kvm_vm_ioctl`); returns `nr`.  The caller answers
/// EINVAL when the VM cannot take routes (no in-kernel irqchip).
pub fn decode_gsi_routing_header(bytes: &[u8]) -> Result<u32, Error> {
    let header: kvm_irq_routing = decode(bytes)?;
    if header.nr > KVM_MAX_IRQ_ROUTES {
        return Err(Error::TooManyRoutes);
    }
    if header.flags != 0 {
        return Err(Error::UnknownFlags);
    }
    Ok(header.nr)
}

/// Checks one route as `kvm_set_irq_routing`, `setup_routing_entry` and
/// x86's `kvm_set_routing_entry` do: GSI below `KVM_MAX_IRQ_ROUTES`; MSI
/// routes may only have the VALID_DEVID flag, others none; irqchip pins
/// below 8 per PIC and `KVM_IOAPIC_NUM_PINS` on the IOAPIC.  Hyper-V,
/// Xen and s390 routes are refused (EINVAL, as KVM without those
/// features).  Left to the caller: irqchip routes with a split irqchip,
/// one GSI routed twice to the same chip or to a non-irqchip route twice,
/// and MSI addresses invalid in x2APIC format.
pub fn decode_gsi_route(entry: &kvm_irq_routing_entry) -> Result<GsiRoute, Error> {
    if entry.gsi >= KVM_MAX_IRQ_ROUTES {
        return Err(Error::TooManyRoutes);
    }
    let allowed_flags = if entry.type_ == KVM_IRQ_ROUTING_MSI {
        KVM_MSI_VALID_DEVID
    } else {
        0
    };
    if entry.flags & !allowed_flags != 0 {
        return Err(Error::UnknownFlags);
    }
    let [first, second, third, fourth, ..] = entry.u;
    match entry.type_ {
        KVM_IRQ_ROUTING_IRQCHIP => {
            let (irqchip, pins) = match first {
                KVM_IRQCHIP_PIC_MASTER => (Irqchip::PicMaster, PIC_NUM_PINS / 2),
                KVM_IRQCHIP_PIC_SLAVE => (Irqchip::PicSlave, PIC_NUM_PINS / 2),
                KVM_IRQCHIP_IOAPIC => (Irqchip::Ioapic, KVM_IOAPIC_NUM_PINS),
                _ => return Err(Error::InvalidValue),
            };
            if second >= pins {
                return Err(Error::InvalidValue);
            }
            Ok(GsiRoute::Irqchip {
                gsi: entry.gsi,
                irqchip,
                pin: second,
            })
        }
        KVM_IRQ_ROUTING_MSI => Ok(GsiRoute::Msi {
            gsi: entry.gsi,
            address_lo: first,
            address_hi: second,
            data: third,
            devid: (entry.flags & KVM_MSI_VALID_DEVID != 0).then_some(fourth),
        }),
        _ => Err(Error::InvalidValue),
    }
}

/// Decodes and checks all `nr` routes after the header (KVM checks every
/// GSI before any type; both are EINVAL, so checking entry by entry gives
/// the same answer).
pub fn for_each_gsi_route(
    entry_bytes: &[u8],
    nr: u32,
    mut visit: impl FnMut(GsiRoute),
) -> Result<(), Error> {
    for entry in entries::<kvm_irq_routing_entry>(entry_bytes, nr)? {
        visit(decode_gsi_route(&entry)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
