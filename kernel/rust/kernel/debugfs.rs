// SPDX-License-Identifier: GPL-2.0

//! Debugfs directories holding small text files.
//!
//! C header: [`include/linux/debugfs.h`](srctree/include/linux/debugfs.h)
//!
//! This covers what debug and selftest interfaces usually need: a directory
//! at the debugfs root and files in it whose contents are short text, each
//! backed by a [`TextAttribute`]. Reading a file renders the attribute's
//! text; writing a file hands the written text to the attribute.
//!
//! Lifetime rules: the files' `file_operations` table is a single static of
//! the kernel crate (never module memory) and defines no `release`, so an
//! open file may outlive the module. Debugfs's file proxy makes removal wait
//! for read and write calls in progress and fails later ones with `-EIO`;
//! the attributes are therefore freed right after the directory is removed.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    bindings,
    error::{code::*, from_err_ptr, Result},
    str::CStr,
    sync::Arc,
    uaccess::UserSlice,
};
use core::{ffi::c_void, fmt, ptr};

/// The most text a debugfs text file shows or accepts in one write.
pub const TEXT_MAX: usize = 4096;

/// The contents of a file being rendered: text of at most [`TEXT_MAX`] bytes.
pub struct TextBuffer {
    bytes: KVec<u8>,
}

impl TextBuffer {
    fn new() -> Result<Self> {
        Ok(Self {
            bytes: KVec::with_capacity(TEXT_MAX, GFP_KERNEL)?,
        })
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Write for TextBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.bytes.len() + s.len() > TEXT_MAX {
            return Err(fmt::Error);
        }
        // Cannot allocate: the capacity was reserved up front.
        self.bytes
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| fmt::Error)
    }
}

/// The behaviour of one text file.
pub trait TextAttribute: Send + Sync {
    /// Renders the file's text into `out`.
    fn show(&self, out: &mut TextBuffer) -> Result;

    /// Handles `input`, the text written to the file in one write call.
    ///
    /// The default refuses writes.
    fn store(&self, input: &str) -> Result {
        let _ = input;
        Err(EPERM)
    }
}

/// What a file's `i_private` points to.
struct FileEntry {
    attr: Arc<dyn TextAttribute>,
}

/// A directory at the debugfs root, with the text files created in it.
///
/// Dropping it removes the directory and its files, then frees their
/// attributes.
pub struct Dir {
    dentry: *mut bindings::dentry,
    entries: KVec<KBox<FileEntry>>,
}

// SAFETY: A `Dir` only holds a dentry pointer, which the debugfs functions
// accept from any thread, and entries whose attributes are `Send + Sync`.
unsafe impl Send for Dir {}
// SAFETY: `&Dir` allows no operation at all.
unsafe impl Sync for Dir {}

impl Dir {
    /// Creates the directory `name` at the debugfs root.
    pub fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is a valid NUL-terminated string; a NULL parent
        // means the debugfs root.
        let dentry = unsafe { bindings::debugfs_create_dir(name.as_char_ptr(), ptr::null_mut()) };
        // Debugfs returns an `ERR_PTR` on failure (e.g. `-EEXIST`, or
        // `-ENODEV` when debugfs is disabled).
        let dentry = from_err_ptr(dentry)?;
        Ok(Self {
            dentry,
            entries: KVec::new(),
        })
    }

    /// Creates the text file `name` with permission bits `mode`, backed by
    /// `attr`.
    pub fn add_text_file(
        &mut self,
        name: &CStr,
        mode: u16,
        attr: Arc<dyn TextAttribute>,
    ) -> Result {
        self.entries.reserve(1, GFP_KERNEL)?;
        let entry = KBox::new(FileEntry { attr }, GFP_KERNEL)?;
        let data = (&*entry as *const FileEntry).cast_mut().cast::<c_void>();
        // SAFETY: `name` is a valid string, `self.dentry` a live directory,
        // and `TEXT_FOPS` a static. `data` stays valid until the directory
        // is removed in `drop`, which waits for the file operations that
        // use it.
        let file = unsafe {
            bindings::debugfs_create_file(name.as_char_ptr(), mode, self.dentry, data, &TEXT_FOPS.0)
        };
        from_err_ptr(file)?;
        // Cannot fail: space was reserved above.
        self.entries.push(entry, GFP_KERNEL)?;
        Ok(())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `self.dentry` is the directory created in `new`; removing
        // it removes the files in it and waits until no file operation runs.
        unsafe { bindings::debugfs_remove(self.dentry) };
        // Now `self.entries` may go: nothing can reach them any more.
    }
}

/// `file_operations` shared by all text files.
struct TextFops(bindings::file_operations);

// SAFETY: The table is never written after initialization.
unsafe impl Sync for TextFops {}

static TEXT_FOPS: TextFops = TextFops(bindings::file_operations {
    open: Some(bindings::simple_open),
    read: Some(text_read),
    write: Some(text_write),
    llseek: Some(bindings::default_llseek),
    // SAFETY: All-zero is a valid `file_operations`: no owner and no other
    // operation.
    ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
});

/// The attribute of an open file.
///
/// # Safety
///
/// `file` must be a debugfs text file opened through [`TEXT_FOPS`] whose
/// directory has not been removed (the debugfs proxy guarantees this while
/// a read or write call runs).
unsafe fn file_attribute<'a>(file: *mut bindings::file) -> &'a dyn TextAttribute {
    // SAFETY: `simple_open` set `private_data` to the `FileEntry` given to
    // `debugfs_create_file`, alive until the directory is removed.
    let entry = unsafe { &*((*file).private_data as *const FileEntry) };
    &*entry.attr
}

/// `read` of a text file: renders the text and copies the part at `*ppos`.
///
/// # Safety
///
/// Called by the VFS (through the debugfs proxy) with a valid file, a user
/// buffer of `count` bytes and a valid position pointer.
unsafe extern "C" fn text_read(
    file: *mut bindings::file,
    buf: *mut u8,
    count: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: See the function's safety section.
    let attr = unsafe { file_attribute(file) };
    // SAFETY: `ppos` is valid for the duration of the call.
    let pos = unsafe { *ppos };
    let mut text = match TextBuffer::new() {
        Ok(text) => text,
        Err(e) => return e.to_errno() as isize,
    };
    if let Err(e) = attr.show(&mut text) {
        return e.to_errno() as isize;
    }
    let bytes = text.as_bytes();
    let start = match usize::try_from(pos) {
        Ok(start) if start < bytes.len() => start,
        Ok(_) => return 0,
        Err(_) => return EINVAL.to_errno() as isize,
    };
    let len = count.min(bytes.len() - start);
    let mut writer = UserSlice::new(buf as usize, len).writer();
    if let Err(e) = writer.write_slice(&bytes[start..start + len]) {
        return e.to_errno() as isize;
    }
    // SAFETY: `ppos` is valid for the duration of the call.
    unsafe { *ppos = pos + len as bindings::loff_t };
    len as isize
}

/// `write` of a text file: hands the whole written text to the attribute.
///
/// # Safety
///
/// Called by the VFS (through the debugfs proxy) with a valid file, a user
/// buffer of `count` bytes and a valid position pointer.
unsafe extern "C" fn text_write(
    file: *mut bindings::file,
    buf: *const u8,
    count: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: See the function's safety section.
    let attr = unsafe { file_attribute(file) };
    // SAFETY: `ppos` is valid for the duration of the call.
    if unsafe { *ppos } != 0 {
        // One command per write, from the start of the file.
        return EINVAL.to_errno() as isize;
    }
    if count > TEXT_MAX {
        return E2BIG.to_errno() as isize;
    }
    let mut input = KVec::new();
    if let Err(e) = UserSlice::new(buf as usize, count).read_all(&mut input, GFP_KERNEL) {
        return e.to_errno() as isize;
    }
    let Ok(text) = core::str::from_utf8(&input) else {
        return EINVAL.to_errno() as isize;
    };
    match attr.store(text) {
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}
