//! The retained store's byte count is what it really holds: filled to its
//! byte bound with deep, shallow and long-named topics, some expiring, the
//! heap it holds (as a counting allocator sees it) is within 10% of
//! `Retained::bytes()`, and stays so as messages are deleted and expire.
//!
//! This file is its own test binary because it installs a counting global
//! allocator. Counts are kept per thread and only while a measured closure
//! runs, so the test harness's own allocations are never counted. Each
//! allocation is counted twice: as requested (`Layout::size`) and as glibc's
//! malloc really takes it (`malloc_usable_size` plus its 8-byte header),
//! which is what the store charges (`heap::block`).

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sessionwire_server::mqtt::heap::block;
use sessionwire_server::mqtt::retained::{Retained, RetainedLimits};

/// The system allocator, counting the live heap of the thread that armed it.
struct Counting;

thread_local! {
    // Const-initialised and without `Drop`, so reading them never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Bytes requested, net of those freed.
    static REQUESTED: Cell<isize> = const { Cell::new(0) };
    /// Bytes of malloc chunks taken, net of those freed.
    static CHUNKS: Cell<isize> = const { Cell::new(0) };
}

/// The chunk glibc's malloc took for `ptr`: its usable size and its header.
fn chunk(ptr: *mut u8) -> isize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: `ptr` is a live pointer that glibc's malloc returned (System
    // is malloc on this target).
    let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
    isize::try_from(usable)
        .unwrap_or(isize::MAX)
        .saturating_add(8)
}

fn note(requested: isize, chunks: isize) {
    // `try_with`: while a thread is torn down its thread-locals may be gone.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = REQUESTED.try_with(|r| r.set(r.get().saturating_add(requested)));
            let _ = CHUNKS.try_with(|c| c.set(c.get().saturating_add(chunks)));
        }
    });
}

fn size(layout: &Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; counting touches only
// thread-local `Cell`s and `malloc_usable_size`, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        note(size(&layout), chunk(ptr));
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        note(size(&layout), chunk(ptr));
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = chunk(ptr);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let grown = isize::try_from(new_size).unwrap_or(isize::MAX) - size(&layout);
            note(grown, chunk(new) - old);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-size(&layout), -chunk(ptr));
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the heap it left allocated on this
/// thread: (requested, chunks).
fn held<T>(f: impl FnOnce() -> T) -> (T, isize, isize) {
    REQUESTED.with(|r| r.set(0));
    CHUNKS.with(|c| c.set(0));
    ARMED.with(|armed| armed.set(true));
    let out = f();
    ARMED.with(|armed| armed.set(false));
    (out, REQUESTED.with(Cell::get), CHUNKS.with(Cell::get))
}

/// A retained message as the broker keeps one: its topic and a shared
/// payload (`sessionwire::mqtt::session::Message` holds both, and more).
struct Message {
    _topic: String,
    _payload: Bytes,
}

/// The size the caller charges for a message's own heap: its topic string
/// and its payload, as the allocator rounds them.
fn message_size(topic: &str, payload: usize) -> usize {
    block(topic.len()) + block(payload)
}

/// The `i`th topic of the mix: a 128-level one of short levels, a shallow
/// one, or one of long (heap-allocated) level names.
fn topic(i: usize) -> String {
    match i % 3 {
        0 => {
            let mut t = format!("deep{i}");
            for level in 1..128 {
                t.push_str(&format!("/{}", level % 10));
            }
            t
        }
        1 => format!("sensors/building-{}/floor-{}/temp", i % 7, i),
        _ => format!(
            "fleet-of-vehicles-in-the-north/vehicle-identification-{i:08}/position-and-heading"
        ),
    }
}

fn within(real: isize, counted: usize, percent: isize) -> bool {
    let counted = isize::try_from(counted).unwrap_or(isize::MAX);
    (real - counted).abs() * 100 <= counted * percent
}

#[test]
fn retained_bytes_track_the_heap_really_held_within_10_percent() {
    const BOUND: usize = 16 * 1024 * 1024;
    let now = Instant::now();
    let mut refused = 0;
    // Indices of the kept topics (reserved outside the measured closure).
    let mut kept: Vec<usize> = Vec::with_capacity(100_000);
    let (mut store, requested, chunks) = held(|| {
        let mut store: Retained<Message> = Retained::new(RetainedLimits {
            max_messages: usize::MAX,
            max_bytes: BOUND,
            ..RetainedLimits::default()
        });
        let mut i = 0;
        // Until 100 in a row are refused: the store is at its bound.
        while refused < 100 {
            let t = topic(i);
            let payload = [10, 200, 1500, 40][i % 4];
            let expires = (i % 5 == 0).then(|| now + Duration::from_secs(60 + i as u64));
            let message = Message {
                _topic: t.clone(),
                _payload: Bytes::from(vec![0x5a; payload]),
            };
            match store.set(now, &t, Some(message), message_size(&t, payload), expires) {
                Ok(()) => {
                    refused = 0;
                    kept.push(i);
                }
                Err(_) => refused += 1,
            }
            i += 1;
        }
        store
    });
    let bytes = store.bytes();
    eprintln!(
        "full: {} messages, bytes() {bytes}, bound {BOUND}, heap requested {requested}, \
         malloc chunks {chunks} ({:+.1}%)",
        store.len(),
        (chunks as f64 - bytes as f64) * 100.0 / bytes as f64,
    );
    assert!(bytes > BOUND / 100 * 95, "filled to its bound: {bytes}");
    assert!(within(chunks, bytes, 10), "{chunks} vs {bytes}");

    // Half deleted, and the expiring ones dropped: what is freed is what
    // the count gives back.
    let before = bytes;
    let ((), requested, chunks) = held(|| {
        for i in kept.iter().step_by(2) {
            store.delete(&topic(*i));
        }
        store.purge(now + Duration::from_secs(3600 * 24));
    });
    let freed = before - store.bytes();
    eprintln!(
        "after deletions: {} messages, bytes() {}, freed {freed}, heap requested {requested}, \
         malloc chunks {chunks} ({:+.1}%)",
        store.len(),
        store.bytes(),
        (-chunks as f64 - freed as f64) * 100.0 / freed as f64,
    );
    assert!(within(-chunks, freed, 10), "{chunks} vs {freed}");

    // Everything deleted: nothing counted, nothing held.
    let ((), _, chunks) = held(|| {
        for i in &kept {
            store.delete(&topic(*i));
        }
    });
    assert_eq!((store.len(), store.bytes()), (0, 0));
    assert!(
        within(-chunks, before - freed, 10),
        "{chunks} vs {}",
        before - freed
    );
}
