//! Secrets on pages of their own: left out of core dumps (`MADV_DONTDUMP`), locked in RAM
//! (`mlock`: never written to swap), and wiped when dropped.
//!
//! The daemon is not dumpable (`PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0, `harden.rs`), but the
//! kernel still dumps a non-dumpable process when root set `fs.suid_dumpable = 2` with a
//! `core_pattern` pipe (systemd-coredump, apport keep such dumps on disk), and `gcore` or any
//! debugger root attaches writes the whole memory out. Pages marked `MADV_DONTDUMP` are left out
//! of all of those. The master keys (`SecretKey32`), their AES key schedules and every record
//! key handed out (`KeyMaterial`) live in a `SecretPage`.
//!
//! A `SecretPage<T>` is aligned to and sized in whole 4 KiB pages, so its pages hold nothing
//! else: marking them cannot affect another object, and the marks are undone before the
//! memory goes back to the allocator. It never moves once marked: it only exists behind a
//! `Box` or an `Arc`.
//!
//! This is the one module of the crate with `unsafe` code: the `madvise`, `mlock` and
//! `munlock` calls (nix has them only as `unsafe fn`), and the volatile wipe; each says why it
//! is sound where it stands.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::mem::{size_of, ManuallyDrop};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::mman::{madvise, mlock, munlock, MmapAdvise};

/// The page size the alignment below assumes (every Linux target kmsfs builds for uses 4 KiB
/// pages by default; a kernel with larger pages makes the marks fail, which is logged once).
const PAGE: usize = 4096;

#[repr(C, align(4096))]
pub struct SecretPage<T> {
    value: ManuallyDrop<T>,
}

/// How many pages are marked now, and whether a mark ever failed: for `.status`.
static MARKED_PAGES: AtomicUsize = AtomicUsize::new(0);
static MARK_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether secret pages are kept out of core dumps (every mark so far succeeded), and how many
/// pages are marked now.
pub fn dump_exclusion() -> (bool, usize) {
    (
        !MARK_FAILED.load(Ordering::Relaxed),
        MARKED_PAGES.load(Ordering::Relaxed),
    )
}

impl<T> SecretPage<T> {
    pub fn boxed(value: T) -> Box<SecretPage<T>> {
        let page = Box::new(SecretPage {
            value: ManuallyDrop::new(value),
        });
        page.mark();
        page
    }

    pub fn shared(value: T) -> Arc<SecretPage<T>> {
        let page = Arc::new(SecretPage {
            value: ManuallyDrop::new(value),
        });
        page.mark();
        page
    }

    fn range(&self) -> (NonNull<c_void>, usize) {
        (NonNull::from(self).cast(), size_of::<Self>())
    }

    fn mark(&self) {
        let (addr, len) = self.range();
        debug_assert_eq!(addr.as_ptr() as usize % PAGE, 0);
        debug_assert_eq!(len % PAGE, 0);
        // SAFETY: [addr, addr + len) is exactly this value: it is page-aligned and a whole
        // number of pages long (repr(align(4096))), so no other object lives on these pages.
        // MADV_DONTDUMP and mlock change only whether the pages are dumped and swapped, never
        // their contents or their mapping, so no reference anywhere is invalidated.
        let dont_dump = unsafe { madvise(addr, len, MmapAdvise::MADV_DONTDUMP) };
        // SAFETY: as above; locking changes nothing the program can observe.
        let locked = unsafe { mlock(addr, len) };
        match dont_dump {
            Ok(()) => {
                MARKED_PAGES.fetch_add(len / PAGE, Ordering::Relaxed);
            }
            Err(e) => {
                if !MARK_FAILED.swap(true, Ordering::Relaxed) {
                    log::warn!("cannot keep secret pages out of core dumps (madvise: {e})");
                }
            }
        }
        // A failed mlock (RLIMIT_MEMLOCK) is not worth a warning: the daemon locks all of its
        // memory when it may (`harden::lock_memory`), and says so in `.status`.
        let _ = locked;
    }
}

/// Overwrites the 32 KiB of stack below the caller's frame with zeros. Expanding a master key
/// into its AES schedule, hashing it into its id, and sealing or opening with its schedule
/// (the cipher's frames spill round keys, the first of which are the key itself) leave copies
/// of key bytes in stack memory their frames no longer use; a dump would hold them, and
/// `MADV_DONTDUMP` cannot cover a stack. Called right after, at the same depth, this wipes
/// where those frames were (`tests/secret_pages.rs` finds the HMK in a dump without it). It
/// costs a 32 KiB memset, about 2 µs, per seal or open.
#[inline(never)]
pub fn scrub_stack() {
    // Made by one memset (fast, even in a debug build, unlike a loop of volatile stores);
    // `black_box` makes the compiler treat the zeros as read, so the memset stays.
    let below = [0u8; 32 * 1024];
    std::hint::black_box(&below);
}

/// Keeps the pages that hold `bytes` out of core dumps from now on, for secrets in memory that
/// is not ours to place or wipe (the FUSE request buffer a `.create` write arrived in). Other
/// bytes on those pages are left out of dumps too, which costs a debugger some context and
/// nothing else.
pub fn exclude_from_dumps(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let start = bytes.as_ptr() as usize & !(PAGE - 1);
    let end = (bytes.as_ptr() as usize + bytes.len()).div_ceil(PAGE) * PAGE;
    let Some(addr) = NonNull::new(start as *mut c_void) else {
        return;
    };
    // SAFETY: the pages hold `bytes`, which is borrowed, so they are mapped; MADV_DONTDUMP
    // changes only whether they are dumped, never their contents or their mapping.
    if let Err(e) = unsafe { madvise(addr, end - start, MmapAdvise::MADV_DONTDUMP) } {
        if !MARK_FAILED.swap(true, Ordering::Relaxed) {
            log::warn!("cannot keep a request buffer out of core dumps (madvise: {e})");
        }
    }
}

impl<T> Deref for SecretPage<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for SecretPage<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for SecretPage<T> {
    fn drop(&mut self) {
        // SAFETY: the value is dropped exactly once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.value) };
        let (addr, len) = self.range();
        let bytes = addr.cast::<u8>().as_ptr();
        for i in 0..len {
            // SAFETY: every byte of [addr, addr + len) belongs to this value (see `mark`) and
            // is writable through `&mut self`; volatile, so the wipe is not optimised away as
            // a write to memory about to be freed.
            unsafe { std::ptr::write_volatile(bytes.add(i), 0) };
        }
        // SAFETY: as in `mark`: undoing the marks changes neither contents nor mapping; the
        // pages go back to the allocator as it gave them.
        let undone = unsafe { madvise(addr, len, MmapAdvise::MADV_DODUMP) };
        // SAFETY: as above.
        let _ = unsafe { munlock(addr, len) };
        if undone.is_ok() {
            MARKED_PAGES.fetch_sub(len / PAGE, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VmFlags of the mapping of /proc/self/smaps that holds `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn a_secret_page_is_out_of_core_dumps_and_locked_until_dropped() {
        let page = SecretPage::boxed([0x5au8; 32]);
        let addr = &**page as *const [u8; 32] as usize;
        assert_eq!(addr % PAGE, 0);
        assert_eq!(size_of::<SecretPage<[u8; 32]>>(), PAGE);
        let flags = vm_flags(addr);
        assert!(flags.split(' ').any(|f| f == "dd"), "not marked: {flags}");
        assert_eq!(**page, [0x5a; 32]);
        let (ok, pages) = dump_exclusion();
        assert!(ok && pages >= 1);
        let shared = SecretPage::shared(7u64);
        let addr2 = &**shared as *const u64 as usize;
        assert!(vm_flags(addr2).split(' ').any(|f| f == "dd"));
        drop(shared);
        drop(page);
    }
}
