//! Process memory: the zeroizing global allocator and the malloc settings the daemon runs with.
//!
//! - [`ZeroizingAllocator`] wraps the system allocator and overwrites every block with zeros
//!   before it is freed (a reallocation moves the bytes to a new block and zeroes the old one).
//!   So a heap buffer that ever held a key — the vault's plaintext, a `SecretString`, a provider
//!   request's header map or body, a request frame — leaves no copy once it is dropped, without
//!   every owner having to remember `zeroize`. Memory still in use is not touched: buffers that
//!   live on (pooled connections, caches) are the owners' business (see docs/vault.md).
//! - [`tune`] fixes glibc's mmap threshold at 128 KiB, which also turns off its dynamic
//!   adjustment: without it, one freed 16 MiB frame raises the threshold so that later large
//!   buffers come from the heap, where freed memory is kept instead of returned to the system
//!   (RSS stayed high long after a burst of big frames).
//!
//! Invariant: the allocator never changes what callers see (same alignment, sizes, null on
//! failure); it only adds the zeroing.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, zeroing each block before it is freed.
pub struct ZeroizingAllocator;

// SAFETY: every method forwards to `System` with the caller's own pointer and layout; the only
// addition is writing zeros over a block the caller owns and is about to free.
unsafe impl GlobalAlloc for ZeroizingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes owned by the caller (the
        // `dealloc` contract), so writing that many bytes is in bounds. `black_box` makes the
        // zeros observable, so the stores are not removed as dead before `free`.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            std::hint::black_box(ptr);
            System.dealloc(ptr, layout);
        }
    }

    // `realloc` is the trait's default: allocate, copy, `dealloc` (which zeroes) the old block.
    // `System.realloc` could move the bytes and free the old block without zeroing it.
}

/// Process-wide malloc settings (see the module docs); call once, first thing in `main`.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; it is called before any thread
        // exists, with valid parameter numbers and values.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024) == 1
        };
        if !ok {
            eprintln!("warning: mallopt refused the mmap/trim thresholds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_reallocates_and_frees_like_the_system_allocator() {
        let a = ZeroizingAllocator;
        for (size, align) in [(1, 1), (24, 8), (4096, 64), (1 << 20, 16)] {
            let layout = Layout::from_size_align(size, align).expect("layout");
            // SAFETY: a non-zero-size layout; every pointer is used within its size and freed once.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!(std::slice::from_raw_parts(p, size).iter().all(|b| *b == 0));
                std::ptr::write_bytes(p, 0xa5, size);
                let q = a.realloc(p, layout, size * 2);
                assert!(!q.is_null() && (q as usize).is_multiple_of(align));
                assert!(std::slice::from_raw_parts(q, size).iter().all(|b| *b == 0xa5), "contents kept");
                a.dealloc(q, Layout::from_size_align(size * 2, align).expect("layout"));
            }
        }
    }
}
