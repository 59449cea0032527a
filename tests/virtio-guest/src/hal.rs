//! The platform glue the virtio-drivers crate asks for (`Hal`): DMA memory
//! and address translation.
//!
//! The guest runs identity-mapped (see `boot`), so a physical address is
//! its virtual address, and the VMM can reach all guest RAM, so buffers are
//! shared as they are (no bounce buffers). DMA pages come from a static
//! pool, handed out once and never reused: the guest probes a few devices
//! and ends.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

const POOL_PAGES: usize = 256;

#[repr(C, align(4096))]
struct Pool([u8; POOL_PAGES * PAGE_SIZE]);

/// In .bss, so zeroed as `dma_alloc` promises (guest memory starts zeroed).
static mut POOL: Pool = Pool([0; POOL_PAGES * PAGE_SIZE]);
static NEXT_PAGE: AtomicUsize = AtomicUsize::new(0);

/// The `Hal` of this guest.
pub struct IdentityHal;

// SAFETY: `dma_alloc` hands out each pool page at most once, page-aligned
// and zeroed; translations are the identity, which is what the page tables
// of `boot` set up.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = NEXT_PAGE.fetch_add(pages, Ordering::Relaxed);
        assert!(
            first + pages <= POOL_PAGES,
            "DMA pool exhausted ({POOL_PAGES} pages)"
        );
        // SAFETY: the pages [first, first + pages) are inside the pool and
        // were never handed out before; only their address is taken here.
        let ptr = unsafe { (&raw mut POOL.0).cast::<u8>().add(first * PAGE_SIZE) };
        (ptr as PhysAddr, NonNull::new(ptr).expect("pool address"))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
