//! The binary's global allocator: glibc's `malloc`, with over-aligned blocks carved out of
//! ordinary ones.
//!
//! Rust's system allocator hands any alignment above 16 bytes to `posix_memalign`. tokio
//! aligns every task to 128 bytes, and hyper spawns a task per HTTP/2 stream, so each
//! request took glibc's memalign path: no per-thread cache, a larger chunk searched for in
//! the bins and split, the remainder freed back — `_int_malloc`, `unlink_chunk` and
//! `malloc_consolidate` in the proxy's profiles. Asking `malloc` for `size + align` bytes
//! and returning the aligned address inside keeps such blocks on the fast paths (blocks up
//! to 1 KiB come from the per-thread cache) for at most `align` bytes more per block.

use std::alloc::{GlobalAlloc, Layout, System};

/// Alignment `malloc` already guarantees on the 64-bit targets Tollgate runs on.
const MALLOC_ALIGN: usize = 16;
/// Alignments above this (pages and larger) stay with the system allocator: over-allocating
/// by them would waste more than it saves.
const MAX_CARVED_ALIGN: usize = 4096;

/// glibc `malloc` for everything; alignments of 32 to 4096 bytes carved from a larger block.
pub struct CarvingAllocator;

fn carved(layout: Layout) -> bool {
    layout.align() > MALLOC_ALIGN && layout.align() <= MAX_CARVED_ALIGN
}

/// The block actually requested from the system for a carved `layout`.
fn outer(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_add(layout.align())?;
    Layout::from_size_align(size, MALLOC_ALIGN).ok()
}

// SAFETY: every method forwards to `System` for layouts it does not carve. A carved block is
// `outer(layout)` bytes from `System`; the address returned is the first multiple of `align`
// strictly above the block's start (at least 16 bytes above, as the start is 16-aligned and
// `align >= 32`), so `size` bytes from it stay inside the block, and the block's start is
// stored in the word just below it, inside the block too, where `dealloc` reads it back.
unsafe impl GlobalAlloc for CarvingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !carved(layout) {
            // SAFETY: the caller's contract for `layout` is `System`'s.
            return unsafe { System.alloc(layout) };
        }
        let Some(outer) = outer(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `outer` has a non-zero size.
        let start = unsafe { System.alloc(outer) };
        if start.is_null() {
            return start;
        }
        let offset = layout.align() - (start as usize & (layout.align() - 1));
        // SAFETY: `offset` is in `16..=align`, inside the block (see above).
        unsafe {
            let aligned = start.add(offset);
            aligned.cast::<*mut u8>().sub(1).write(start);
            aligned
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !carved(layout) {
            // SAFETY: as `alloc`. `calloc` gets fresh pages zeroed by the kernel without
            // touching them, which the default (allocate, then zero) would not.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: `alloc`'s block holds `layout.size()` bytes from the returned address.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                std::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !carved(layout) {
            // SAFETY: allocated by `System` with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: `alloc` stored the block's start just below `ptr`, and `outer` succeeded
        // for this layout then.
        unsafe {
            let start = ptr.cast::<*mut u8>().sub(1).read();
            if let Some(outer) = outer(layout) {
                System.dealloc(start, outer);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !carved(layout) {
            // SAFETY: allocated by `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Rare (tokio never resizes a task): a new carved block, the bytes, the old block.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: the new block holds `min(old, new)` bytes; the old one is ours to free.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carved_blocks_are_aligned_writable_and_freed() {
        let a = CarvingAllocator;
        for align in [1, 8, 16, 32, 64, 128, 256, 4096, 8192] {
            for size in [1, 7, 16, 100, 1024, 1280, 5000] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: non-zero size; the block is written within `size` and freed once.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "align {align} size {size}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0);
                    assert!(std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|b| *b == 0xa5));
                    a.dealloc(
                        grown,
                        Layout::from_size_align(size * 3, align).expect("valid"),
                    );
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        let a = CarvingAllocator;
        for align in [8, 128] {
            let layout = Layout::from_size_align(3000, align).expect("valid layout");
            // SAFETY: non-zero size; read within `size`, freed once.
            unsafe {
                let p = a.alloc(layout);
                std::ptr::write_bytes(p, 0xff, 3000);
                a.dealloc(p, layout);
                let z = a.alloc_zeroed(layout);
                assert!(!z.is_null());
                assert_eq!(z as usize % align, 0);
                assert!(std::slice::from_raw_parts(z, 3000).iter().all(|b| *b == 0));
                a.dealloc(z, layout);
            }
        }
    }

    #[test]
    fn impossible_sizes_fail_instead_of_wrapping() {
        let layout = Layout::from_size_align(isize::MAX as usize & !127, 128).expect("valid");
        // SAFETY: a failed allocation returns null and is not freed.
        let p = unsafe { CarvingAllocator.alloc(layout) };
        assert!(p.is_null());
    }
}
