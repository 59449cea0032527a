// SPDX-License-Identifier: GPL-2.0

//! File operations from a Rust trait, for the files a driver creates: the
//! files opened on a misc device ([`crate::miscdevice`]) and anonymous-inode
//! files handed to user space as new descriptors ([`crate::anon_inode`]),
//! such as a hypervisor's VM and vCPU files.
//!
//! Each file carries a `T::Ptr` (an `Arc`, a `KBox`, ...) as its private
//! data from creation to `release`; `ioctl` and `mmap` borrow it.
//!
//! The `struct file_operations` is built at run time in a [`FileOpsTable`]
//! whose owner is the calling module: the VFS then takes a module reference
//! for every open file (`fops_get`), so the module, and the table it owns,
//! cannot go away while a file still points at them. (A `const` table
//! cannot name `THIS_MODULE`, which is only known at link time.)
//!
//! C headers: [`include/linux/fs.h`](srctree/include/linux/fs.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings, build_error,
    error::{Result, VTABLE_DEFAULT_ERROR},
    ffi::{c_int, c_long, c_uint, c_ulong},
    mm::virt::VmaNew,
    prelude::*,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};
use core::marker::PhantomData;

/// The operations of a file whose private data is a `Self::Ptr`.
#[vtable]
pub trait FileOps: Sized {
    /// What each file holds.
    type Ptr: ForeignOwnable + Send + Sync;

    /// The last reference to the file is gone; `data` is dropped afterwards.
    fn release(data: Self::Ptr) {
        drop(data);
    }

    /// `ioctl(2)` on the file. `arg` is the raw argument: a user pointer
    /// for most commands, a plain number for some.
    fn ioctl(
        _data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `mmap(2)` of the file: map pages into `vma`.
    fn mmap(_data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, _vma: &VmaNew) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The signature of `file_operations::open`.
pub type OpenFn = unsafe extern "C" fn(*mut bindings::inode, *mut bindings::file) -> c_int;

/// A `struct file_operations` for files of type `T`, owned by a module.
///
/// # Invariants
///
/// `fops` is a fully initialized table whose functions expect files whose
/// private data came from `T::Ptr::into_foreign`.
pub struct FileOpsTable<T: FileOps> {
    fops: KBox<Opaque<bindings::file_operations>>,
    _t: PhantomData<T>,
}

// SAFETY: The table is immutable after `new`; the VFS only reads it.
unsafe impl<T: FileOps> Send for FileOpsTable<T> {}
// SAFETY: As above.
unsafe impl<T: FileOps> Sync for FileOpsTable<T> {}

impl<T: FileOps> FileOpsTable<T> {
    /// Builds the table; files made with it pin `module` while they live.
    /// `open` is only for devices whose files are opened through a path
    /// (misc devices): anonymous files are created already open.
    pub fn new(module: &'static ThisModule, open: Option<OpenFn>) -> Result<Self> {
        let fops = KBox::new(Opaque::<bindings::file_operations>::uninit(), GFP_KERNEL)?;
        let table = fops.get();
        // SAFETY: `table` points to an allocation of the right size and
        // alignment that nobody else sees yet; all-zeroes is a valid
        // `file_operations` (every operation absent).
        unsafe {
            table.write(core::mem::zeroed());
            (*table).owner = module.as_ptr();
            (*table).open = open;
            (*table).release = Some(release::<T>);
            (*table).llseek = Some(bindings::noop_llseek);
            if T::HAS_IOCTL {
                (*table).unlocked_ioctl = Some(ioctl::<T>);
                #[cfg(CONFIG_COMPAT)]
                {
                    (*table).compat_ioctl = Some(bindings::compat_ptr_ioctl);
                }
            }
            if T::HAS_MMAP {
                (*table).mmap = Some(mmap::<T>);
            }
        }
        Ok(Self {
            fops,
            _t: PhantomData,
        })
    }

    /// The table, for the C functions that create files.
    pub fn as_raw(&self) -> *const bindings::file_operations {
        self.fops.get()
    }
}

/// Stores `data` as the private data of `file`.
///
/// # Safety
///
/// `file` must be a file being opened, not yet visible to user space, whose
/// operations are a [`FileOpsTable<T>`]; its `release` takes `data` back.
pub unsafe fn set_private<T: FileOps>(file: *mut bindings::file, data: T::Ptr) {
    // SAFETY: The caller guarantees that `file` is valid and not shared yet.
    unsafe { (*file).private_data = data.into_foreign().cast_mut() };
}

/// # Safety
///
/// Called by the VFS for a file of a [`FileOpsTable<T>`] when its last
/// reference is dropped.
unsafe extern "C" fn release<T: FileOps>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The file is valid for the duration of the call.
    let private = unsafe { (*file).private_data };
    // SAFETY: The private data came from `into_foreign` when the file was
    // created, and no borrow of it is left: the VFS calls `release` once,
    // after every other operation has returned.
    let data = unsafe { T::Ptr::from_foreign(private) };
    T::release(data);
    0
}

/// # Safety
///
/// Called by the VFS for a file of a [`FileOpsTable<T>`].
unsafe extern "C" fn ioctl<T: FileOps>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: The file is valid for the duration of the call.
    let private = unsafe { (*file).private_data };
    // SAFETY: The private data came from `into_foreign` and `release` has
    // not run: the VFS holds a reference to the file during the call.
    let data = unsafe { T::Ptr::borrow(private) };
    match T::ioctl(data, cmd, arg) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Called by the VFS for a file of a [`FileOpsTable<T>`], with the mmap
/// lock held for writing and a `vma` that is being set up.
unsafe extern "C" fn mmap<T: FileOps>(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: The file is valid for the duration of the call.
    let private = unsafe { (*file).private_data };
    // SAFETY: As in `ioctl`.
    let data = unsafe { T::Ptr::borrow(private) };
    // SAFETY: The VFS calls `mmap` with a new VMA that is not yet visible,
    // under the mmap write lock, which is what `VmaNew` stands for.
    let vma = unsafe { VmaNew::from_raw(vma) };
    match T::mmap(data, vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}
