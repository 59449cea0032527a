// SPDX-License-Identifier: GPL-2.0

//! The system file (`/dev/pvrs`) and VM files: the first two levels of the
//! KVM API (`Documentation/virt/kvm/api.rst` 4.1-4.4: KVM_GET_API_VERSION,
//! KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE).

use crate::{
    kvm_api::constants::{
        KVM_CAP_DESTROY_MEMORY_REGION_WORKS, KVM_CAP_EXT_CPUID, KVM_CAP_EXT_EMUL_CPUID,
        KVM_CAP_GET_MSR_FEATURES, KVM_CAP_GET_TSC_KHZ, KVM_CAP_IMMEDIATE_EXIT,
        KVM_CAP_INTERNAL_ERROR_DATA, KVM_CAP_IRQCHIP, KVM_CAP_IRQFD, KVM_CAP_IRQ_INJECT_STATUS,
        KVM_CAP_IRQ_ROUTING, KVM_CAP_MAX_VCPUS, KVM_CAP_MAX_VCPU_ID, KVM_CAP_MP_STATE,
        KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS, KVM_CAP_PIT2, KVM_CAP_PIT_STATE2,
        KVM_CAP_READONLY_MEM, KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_SET_TSS_ADDR,
        KVM_CAP_SIGNAL_MSI, KVM_CAP_TSC_DEADLINE_TIMER, KVM_CAP_USER_MEMORY, KVM_CAP_USER_MEMORY2,
        KVM_CAP_XCRS,
    },
    kvm_api::{self, decode, ioctl::Ioctl, layout},
    supported_cpuid::{self, SupportedCpuidConfig},
    svm_hw,
    user_copy::{read_user_entries, read_user_header, write_user_bytes},
    vm_file::{classify_ioctl, kvm_error, Vm, MAX_MEMSLOTS, MAX_VCPUS},
    Host,
};
use kernel::{
    alloc::KVec,
    anon_inode, bindings, c_str,
    file_ops::FileOps,
    miscdevice::MiscDevice,
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// What KVM_GET_API_VERSION returns; the only version there has ever been.
pub(crate) const KVM_API_VERSION: isize = 12;

/// KVM_CHECK_EXTENSION (api.rst 4.4): what this backend really does,
/// with KVM's meaning of each answer (a limit, or 1 for "supported").
/// Everything else answers 0, so a VMM takes its fallback instead of
/// meeting a missing ioctl later: no irqfd or ioeventfd, no
/// KVM_GET/SET_XSAVE or vCPU events, no dirty logging yet.
pub(crate) fn check_extension(cap: usize) -> isize {
    let Ok(cap) = u32::try_from(cap) else {
        return 0;
    };
    match cap {
        // The memory API: KVM_SET_USER_MEMORY_REGION(2) with delete and
        // move (no guest_memfd).
        KVM_CAP_USER_MEMORY | KVM_CAP_USER_MEMORY2 | KVM_CAP_DESTROY_MEMORY_REGION_WORKS => 1,
        // Read-only slots: a write is an MMIO exit (api.rst 4.35).
        KVM_CAP_READONLY_MEM => 1,
        // Accepted and ignored, as KVM on AMD does (they are VMX's).
        KVM_CAP_SET_TSS_ADDR | KVM_CAP_SET_IDENTITY_MAP_ADDR => 1,
        // kvm_run.immediate_exit is honoured.
        KVM_CAP_IMMEDIATE_EXIT => 1,
        // Emulation failures carry KVM's data words and instruction bytes.
        KVM_CAP_INTERNAL_ERROR_DATA => 1,
        KVM_CAP_NR_VCPUS | KVM_CAP_MAX_VCPUS | KVM_CAP_MAX_VCPU_ID => MAX_VCPUS as isize,
        KVM_CAP_NR_MEMSLOTS => MAX_MEMSLOTS as isize,
        // KVM_GET_SUPPORTED_CPUID, KVM_GET_EMULATED_CPUID (empty: nothing
        // is emulated beyond what is supported), KVM_GET_MSR_FEATURE_INDEX_LIST
        // and KVM_GET_MSRS on /dev/pvrs (the microcode revision),
        // KVM_GET_TSC_KHZ.
        KVM_CAP_EXT_CPUID | KVM_CAP_EXT_EMUL_CPUID | KVM_CAP_GET_MSR_FEATURES => 1,
        KVM_CAP_GET_TSC_KHZ => 1,
        // KVM_GET/SET_MP_STATE (RUNNABLE only until the in-kernel LAPIC)
        // and KVM_GET/SET_XCRS.
        KVM_CAP_MP_STATE | KVM_CAP_XCRS => 1,
        // The in-kernel irqchip: LAPICs, IOAPIC, PIC (KVM_CREATE_IRQCHIP,
        // KVM_IRQ_LINE(_STATUS), KVM_GET/SET_IRQCHIP, KVM_GET/SET_LAPIC),
        // GSI routing with MSIs, the PIT (KVM_CREATE_PIT2, KVM_GET/SET_PIT2)
        // and the LAPIC's TSC-deadline mode, and irqfds (KVM_IRQFD, without
        // resampling).
        KVM_CAP_IRQCHIP | KVM_CAP_IRQ_INJECT_STATUS | KVM_CAP_SIGNAL_MSI => 1,
        KVM_CAP_IRQFD => 1,
        KVM_CAP_PIT2 | KVM_CAP_PIT_STATE2 | KVM_CAP_TSC_DEADLINE_TIMER => 1,
        // The routes the fixed-capacity table holds (KVM: 4096).
        KVM_CAP_IRQ_ROUTING => crate::irqchip::routing::GSI_ROUTING_CAPACITY as isize,
        _ => 0,
    }
}

/// An open `/dev/pvrs`.
pub(crate) struct SystemFile;

#[vtable]
impl FileOps for SystemFile {
    type Ptr = Arc<Host>;

    fn ioctl(host: ArcBorrow<'_, Host>, cmd: u32, arg: usize) -> Result<isize> {
        match classify_ioctl(kvm_api::ioctl::FdKind::System, cmd, arg)? {
            Ioctl::GetApiVersion => Ok(KVM_API_VERSION),
            Ioctl::CheckExtension => Ok(check_extension(arg)),
            // The kvm_run page and the port-I/O data page that follows it
            // (no coalesced-MMIO ring page: that capability answers 0).
            Ioctl::GetVcpuMmapSize => Ok(2 * bindings::PAGE_SIZE as isize),
            Ioctl::CreateVm => {
                // Machine type 0 is the default (and only) x86 VM type here.
                if arg != 0 {
                    return Err(EINVAL);
                }
                let vm = Vm::new(host.into())?;
                vm.watch_vmm_memory()?;
                match anon_inode::new_fd(c_str!("kvm-vm"), &host.vm_fops, vm.clone()) {
                    Ok(fd) => Ok(fd as isize),
                    Err(e) => {
                        // The notifier holds the VM: without a file whose
                        // release would drop it, drop it here.
                        vm.stop_watching_vmm_memory();
                        Err(e)
                    }
                }
            }
            Ioctl::GetSupportedCpuid => get_supported_cpuid(arg),
            Ioctl::GetEmulatedCpuid => get_emulated_cpuid(arg),
            Ioctl::GetMsrIndexList => {
                // The MSRs a VMM saves, then those only emulated (the
                // paravirtual ones), as KVM lists them.
                let mut indices = KVec::new();
                indices.extend_from_slice(crate::msr::MSRS_TO_SAVE, GFP_KERNEL)?;
                indices.extend_from_slice(crate::msr::EMULATED_MSRS, GFP_KERNEL)?;
                get_msr_list(arg, &indices)
            }
            Ioctl::GetMsrFeatureIndexList => get_msr_list(arg, crate::msr::FEATURE_MSRS),
            Ioctl::GetMsrs => get_feature_msrs(arg),
            // Known to the KVM API, not implemented here.
            _ => Err(EINVAL),
        }
    }
}

/// The KVM paravirtual features offered (CPUID 0x4000_0001 EAX): those of
/// hv-core's `pv::IMPLEMENTED_KVM_FEATURES` that this module also backs.
/// Left out: PV TLB flush, which needs steal time's preempted flag, set
/// when the vCPU thread is scheduled out by a preempt notifier this
/// module does not have yet (the flag stays 0, so a guest sees no vCPU
/// preempted).
const KVM_FEATURES: u32 =
    crate::pv::IMPLEMENTED_KVM_FEATURES & !(1 << crate::pvrs_abi::cpuid::KVM_FEATURE_PV_TLB_FLUSH);

/// What this backend implements beyond the hardware, for CPUID.
pub(crate) fn cpuid_config() -> SupportedCpuidConfig {
    SupportedCpuidConfig {
        // The in-kernel LAPIC (KVM_CREATE_IRQCHIP): APIC, x2APIC and the
        // TSC-deadline timer.
        lapic: true,
        kvm_features: KVM_FEATURES,
        host_xcr0: kernel::x86::read_xcr0(),
    }
}

/// The XCR0 bits a guest may set (KVM_SET_XCRS; the supported CPUID's
/// leaf 0xD).
pub(crate) fn guest_xcr0_mask() -> u64 {
    supported_cpuid::guest_xcr0(cpuid_config().host_xcr0)
}

/// Writes a `kvm_cpuid2` answer of `entries` to `arg`, with room for `room`.
pub(crate) fn write_cpuid2(
    arg: usize,
    room: u32,
    entries: &[crate::cpuid::CpuidEntry],
) -> Result<isize> {
    let mut answer = KVec::with_capacity(entries.len(), GFP_KERNEL)?;
    for entry in entries {
        answer.push(layout::kvm_cpuid_entry2::from(entry), GFP_KERNEL)?;
    }
    let entry_size = <layout::kvm_cpuid_entry2 as kvm_api::wire::Wire>::SIZE;
    let len = decode::array_bytes(8, entry_size, entries.len() as u32).ok_or(E2BIG)?;
    let mut bytes = KVec::with_capacity(len, GFP_KERNEL)?;
    bytes.extend_with(len, 0, GFP_KERNEL)?;
    let written = decode::encode_cpuid2(room, &answer, &mut bytes).map_err(kvm_error)?;
    write_user_bytes(arg, bytes.get(..written).ok_or(EINVAL)?)?;
    Ok(0)
}

/// The supported CPUID entries.
fn supported_entries() -> Result<KVec<crate::cpuid::CpuidEntry>> {
    let mut buffer = [crate::cpuid::CpuidEntry::default(); 64];
    let host = |leaf, subleaf| {
        let r = svm_hw::cpuid_count(leaf, subleaf);
        crate::cpuid::CpuidResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    };
    let n =
        supported_cpuid::supported_cpuid(&host, &cpuid_config(), &mut buffer).map_err(|_| E2BIG)?;
    let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
    for entry in buffer.iter().take(n) {
        entries.push(*entry, GFP_KERNEL)?;
    }
    Ok(entries)
}

/// The CR4 bits the supported CPUID leaves no guest (KVM's
/// `cr4_reserved_bits`).
pub(crate) fn host_cr4_reserved() -> Result<u64> {
    let entries = supported_entries()?;
    Ok(crate::vcpu::cr4_reserved_for(&|leaf| {
        entries
            .iter()
            .find(|entry| entry.function == leaf && entry.index == 0)
            .copied()
    }))
}

/// KVM_GET_SUPPORTED_CPUID (api.rst 4.46): E2BIG while `nent` is too
/// small (the header is not written then, as in KVM).
fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let header = read_user_header(arg)?;
    let room = decode::decode_cpuid2_header(decode::CpuidCall::GetSupported, &header)
        .map_err(kvm_error)?;
    write_cpuid2(arg, room, &supported_entries()?)
}

/// KVM_GET_EMULATED_CPUID (api.rst 4.88): nothing is emulated beyond
/// the supported list; KVM's padding check on the caller's entries
/// still applies.
fn get_emulated_cpuid(arg: usize) -> Result<isize> {
    let header = read_user_header(arg)?;
    let room = decode::decode_cpuid2_header(decode::CpuidCall::GetSupported, &header)
        .map_err(kvm_error)?;
    let entry_size = <layout::kvm_cpuid_entry2 as kvm_api::wire::Wire>::SIZE;
    let given = read_user_entries(arg, header.len(), entry_size, room)?;
    decode::check_emulated_cpuid_padding(&given, room).map_err(kvm_error)?;
    write_cpuid2(arg, room, &[])
}

/// KVM_GET_MSRS on the system file (api.rst 4.18, KVM_CAP_GET_MSR_FEATURES):
/// the host's values of the feature MSRs, processed in order up to the
/// first one that is not a feature MSR, as KVM does.
fn get_feature_msrs(arg: usize) -> Result<isize> {
    let header = read_user_header(arg)?;
    let n = decode::decode_msrs_header(&header).map_err(kvm_error)?;
    let entry_size = <layout::kvm_msr_entry as kvm_api::wire::Wire>::SIZE;
    let mut bytes = read_user_entries(arg, header.len(), entry_size, n)?;
    let mut done = 0usize;
    for slot in bytes.chunks_exact_mut(entry_size) {
        let mut entry: layout::kvm_msr_entry = decode::decode(slot).map_err(kvm_error)?;
        if !crate::msr::FEATURE_MSRS.contains(&entry.index) {
            break;
        }
        // SAFETY: Only the feature MSRs are read, and reading them has no
        // side effect (IA32_UCODE_REV); a fault is an error, not a crash.
        let Ok(value) = (unsafe { kernel::x86::read_msr(entry.index) }) else {
            break;
        };
        entry.data = value;
        decode::encode(&entry, slot).map_err(kvm_error)?;
        done += 1;
    }
    write_user_bytes(arg.checked_add(header.len()).ok_or(EFAULT)?, &bytes)?;
    Ok(done as isize)
}

/// KVM_GET_MSR_INDEX_LIST / KVM_GET_MSR_FEATURE_INDEX_LIST (api.rst 4.3):
/// the count is written back even when it is too large for the room
/// (E2BIG), so that userspace learns the size it needs.
fn get_msr_list(arg: usize, indices: &[u32]) -> Result<isize> {
    let mut header = [0u8; 4];
    kernel::uaccess::UserSlice::new(arg, header.len())
        .reader()
        .read_slice(&mut header)?;
    let room = decode::decode_msr_list_header(&header).map_err(kvm_error)?;
    let mut bytes = KVec::with_capacity(4 + 4 * indices.len(), GFP_KERNEL)?;
    bytes.extend_with(4 + 4 * indices.len(), 0, GFP_KERNEL)?;
    match decode::encode_msr_list(room, indices, &mut bytes) {
        Ok(written) => write_user_bytes(arg, bytes.get(..written).ok_or(EINVAL)?).map(|()| 0),
        Err(e) => {
            write_user_bytes(arg, bytes.get(..4).ok_or(EINVAL)?)?;
            Err(kvm_error(e))
        }
    }
}

impl MiscDevice for SystemFile {
    type RegistrationData = Arc<Host>;

    fn open(host: &Arc<Host>) -> Result<Arc<Host>> {
        Ok(host.clone())
    }
}
