// SPDX-License-Identifier: GPL-2.0

//! Copying ioctl arguments between userspace and the KVM API's structs:
//! fixed-size structs through hv-core's checked decoders and encoders, and
//! the arrays after a `kvm_cpuid2` / `kvm_msrs` / `kvm_msr_list` header,
//! whose entry counts hv-core checks before anything is copied.

use crate::kvm_api::{self, decode};
use crate::vm_file::kvm_error;
use kernel::{
    alloc::{flags, KVec},
    prelude::*,
    uaccess::UserSlice,
};

/// The largest fixed-size argument copied through the helpers below
/// (`struct kvm_lapic_state`, 1024 bytes).
const MAX_ARGUMENT: usize = 1024;

/// The `N` bytes of a fixed-size argument at user address `arg`, for the
/// decoders that take bytes.
pub(crate) fn read_user_bytes<const N: usize>(arg: usize) -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    UserSlice::new(arg, N).reader().read_slice(&mut bytes)?;
    Ok(bytes)
}

/// Reads a `T` from user address `arg`.
pub(crate) fn read_user<T: kvm_api::wire::Wire>(arg: usize) -> Result<T> {
    let mut bytes = [0u8; MAX_ARGUMENT];
    let bytes = bytes.get_mut(..T::SIZE).ok_or(EINVAL)?;
    UserSlice::new(arg, T::SIZE).reader().read_slice(bytes)?;
    decode::decode(bytes).map_err(kvm_error)
}

/// Writes `value` to user address `arg`.
pub(crate) fn write_user<T: kvm_api::wire::Wire>(arg: usize, value: &T) -> Result {
    let mut bytes = [0u8; MAX_ARGUMENT];
    let bytes = bytes.get_mut(..T::SIZE).ok_or(EINVAL)?;
    decode::encode(value, bytes).map_err(kvm_error)?;
    UserSlice::new(arg, T::SIZE).writer().write_slice(bytes)
}

/// The 8-byte header (`nent`/`nmsrs` and padding) of `kvm_cpuid2` and
/// `kvm_msrs`, whose checked decoders give the entry count.
pub(crate) fn read_user_header(arg: usize) -> Result<[u8; 8]> {
    let mut header = [0u8; 8];
    UserSlice::new(arg, header.len())
        .reader()
        .read_slice(&mut header)?;
    Ok(header)
}

/// Reads `count` entries of `entry_size` bytes after a `header_size`-byte
/// header at user address `arg` into a new buffer (sizes come from
/// hv-core's checked decoders, so the product cannot overflow a page
/// count KVM would accept).
pub(crate) fn read_user_entries(
    arg: usize,
    header_size: usize,
    entry_size: usize,
    count: u32,
) -> Result<KVec<u8>> {
    let len = (count as usize).checked_mul(entry_size).ok_or(E2BIG)?;
    let mut bytes = KVec::with_capacity(len, flags::GFP_KERNEL)?;
    bytes.extend_with(len, 0, flags::GFP_KERNEL)?;
    let start = arg.checked_add(header_size).ok_or(EFAULT)?;
    UserSlice::new(start, len).reader().read_slice(&mut bytes)?;
    Ok(bytes)
}

/// Writes `bytes` to user address `arg` (an answer hv-core encoded).
pub(crate) fn write_user_bytes(arg: usize, bytes: &[u8]) -> Result {
    UserSlice::new(arg, bytes.len()).writer().write_slice(bytes)
}
