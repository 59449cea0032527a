// SPDX-License-Identifier: GPL-2.0

//! Anonymous-inode files: an open file with a driver's own operations,
//! handed to user space as a new file descriptor, with no path in any file
//! system. KVM's VM and vCPU descriptors are such files (`kvm-vm`,
//! `kvm-vcpu:N`); so are eventfd, signalfd and userfaultfd.
//!
//! Upstream Rust-for-Linux has no such abstraction yet; this one shares the
//! operations plumbing of [`crate::file_ops`] with [`crate::miscdevice`].
//!
//! C headers: [`include/linux/anon_inodes.h`](srctree/include/linux/anon_inodes.h)

use crate::{
    bindings,
    error::{Error, Result},
    file_ops::{FileOps, FileOpsTable},
    str::CStr,
    types::ForeignOwnable,
};

/// Creates an anonymous file named `name` (shown as `anon_inode:<name>` in
/// `/proc/<pid>/fd`) with the operations of `table` and `data` as its
/// private data, and installs it as a new close-on-exec, read-write file
/// descriptor of the calling process, which is returned.
///
/// From the moment this returns, user space may use or close the
/// descriptor; `data` is dropped by `T::release` once the file is gone. On
/// error `data` is dropped here.
pub fn new_fd<T: FileOps>(name: &CStr, table: &FileOpsTable<T>, data: T::Ptr) -> Result<u32> {
    let private = data.into_foreign();
    // SAFETY: `name` is a valid string (copied into the file's dentry);
    // the table is valid and, since the file takes a reference on the
    // table's owner module, outlives the file; the private data came from
    // `into_foreign`, as the table's functions expect.
    let fd = unsafe {
        bindings::anon_inode_getfd(
            name.as_char_ptr(),
            table.as_raw(),
            private.cast_mut(),
            (bindings::O_RDWR | bindings::O_CLOEXEC) as i32,
        )
    };
    if fd < 0 {
        // SAFETY: No file was created, so nothing else holds `private`.
        drop(unsafe { T::Ptr::from_foreign(private) });
        return Err(Error::from_errno(fd));
    }
    // `fd` is non-negative here.
    Ok(fd as u32)
}
