// SPDX-License-Identifier: GPL-2.0

//! Virtual memory areas, as seen by a driver's `mmap`.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/mm_types.h`](srctree/include/linux/mm_types.h)

use crate::{
    bindings,
    error::{to_result, Result},
    page::Page,
    types::Opaque,
};

/// A VMA being set up by `f_ops->mmap`: not yet visible to other threads,
/// with the mmap lock held for writing, so its flags may still change.
///
/// # Invariants
///
/// `self` wraps a `vm_area_struct` in that state, for the duration of the
/// `mmap` call.
#[repr(transparent)]
pub struct VmaNew {
    vma: Opaque<bindings::vm_area_struct>,
}

impl VmaNew {
    /// # Safety
    ///
    /// `vma` must be a VMA passed to `f_ops->mmap`, valid and in the state
    /// described by the type for the lifetime `'a`.
    pub unsafe fn from_raw<'a>(vma: *mut bindings::vm_area_struct) -> &'a Self {
        // SAFETY: `VmaNew` is a transparent wrapper of the C struct; the
        // caller guarantees validity for `'a`.
        unsafe { &*vma.cast::<Self>() }
    }

    fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.vma.get()
    }

    /// The first user address of the area.
    pub fn start(&self) -> usize {
        // SAFETY: By the type invariant the VMA is valid; `vm_start` is
        // fixed during `mmap`.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// The first user address past the area.
    pub fn end(&self) -> usize {
        // SAFETY: As for `start`.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// The offset into the file, in pages, that the area maps from.
    pub fn pgoff(&self) -> usize {
        // SAFETY: As for `start`.
        unsafe { (*self.as_ptr()).vm_pgoff }
    }

    /// Makes the area a mixed map (`VM_MIXEDMAP`), into which individual
    /// kernel pages can be inserted.
    pub fn set_mixedmap(&self) -> &VmaMixedMap {
        // SAFETY: By the type invariant the flags may be changed now.
        unsafe { bindings::vm_flags_set(self.as_ptr(), bindings::VM_MIXEDMAP as _) };
        // SAFETY: `VmaMixedMap` is a transparent wrapper of the same struct,
        // and the area now has `VM_MIXEDMAP`.
        unsafe { &*(self as *const Self).cast::<VmaMixedMap>() }
    }
}

/// A VMA with `VM_MIXEDMAP` set.
///
/// # Invariants
///
/// The wrapped VMA is valid and has `VM_MIXEDMAP`.
#[repr(transparent)]
pub struct VmaMixedMap {
    vma: Opaque<bindings::vm_area_struct>,
}

impl VmaMixedMap {
    /// Maps `page` at user address `address` of the area. The mapping takes
    /// its own reference on the page, so the page stays alive as long as
    /// it is mapped, whatever its owner does.
    pub fn vm_insert_page(&self, address: usize, page: &Page) -> Result {
        // SAFETY: The VMA is valid with `VM_MIXEDMAP` (type invariant); the
        // page is a valid kernel page; the function checks the address.
        to_result(unsafe { bindings::vm_insert_page(self.vma.get(), address as _, page.as_ptr()) })
    }
}
