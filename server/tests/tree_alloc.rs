//! The subscription tree's count of its heap ([`Tree::bytes`]) against what
//! it really allocates, measured here with a counting global allocator:
//! within 10% for shallow and deep filters, shared prefixes or none, as
//! they come and as they go. The bound `TreeLimits::max_bytes` is only as
//! good as that count (issue 18: at the old "256 MiB" bound RSS was
//! 756 MB).
//!
//! This file is its own test binary because it installs the allocator.
//! Allocations are counted per thread and only while a measured closure
//! runs, each as the block a glibc `malloc` takes for it (the size with an
//! 8-byte header, rounded up to 16, at least 32), which is how the tree
//! counts too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use sessionwire::mqtt::QoS;
use sessionwire_server::mqtt::heap::block;
use sessionwire_server::mqtt::tree::{Principal, Subscription, Tree, TreeLimits};

/// The system allocator, counting the net heap of the thread that armed it.
struct Counting;

thread_local! {
    // Const-initialised and without `Drop`, so reading them never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static NET: Cell<isize> = const { Cell::new(0) };
}

/// Adds `size` bytes' block to the count (`sign` -1 when freed).
fn note(size: usize, sign: isize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let b = isize::try_from(block(size)).unwrap_or(isize::MAX);
            let _ = NET.try_with(|net| net.set(net.get() + sign * b));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; counting touches only
// thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(layout.size(), -1);
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(layout.size(), -1);
        note(new_size, 1);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The net heap `f` allocates on this thread.
fn measured<T>(f: impl FnOnce() -> T) -> (T, isize) {
    NET.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, NET.with(Cell::get))
}

fn roomy() -> TreeLimits {
    TreeLimits {
        max_subscriptions: 10_000_000,
        max_bytes: usize::MAX,
        ..TreeLimits::default()
    }
    .with_shares(0, 0)
}

/// Subscribes `filter(client, i)` for `clients` clients of `per` filters
/// each into an empty tree; checks the count against the allocations
/// within 10%, then removes every client and checks the count again.
fn check(name: &str, clients: usize, per: usize, filter: impl Fn(usize, usize) -> String) {
    let mut tree = None;
    let ((), grew) = measured(|| {
        let mut t = Tree::new(roomy());
        for c in 0..clients {
            for i in 0..per {
                let sub = Subscription::at(QoS::AtLeastOnce);
                // Every third client with a principal (a user name past
                // the inline room), charged with it.
                let user = format!("user-name-past-twenty-four-bytes-{}", c % 7);
                let principal = Principal {
                    source: Some(IpAddr::from([127, 1, (c / 256) as u8, c as u8])),
                    user: Some(&user),
                };
                let principal = if c % 3 == 0 {
                    principal
                } else {
                    Principal::default()
                };
                t.subscribe_as(&format!("client-{c}"), principal, &filter(c, i), sub)
                    .unwrap();
            }
        }
        tree = Some(t);
    });
    let mut tree = tree.unwrap();
    let counted = tree.bytes() as f64;
    let real = grew as f64;
    let off = (counted - real).abs() / real;
    println!(
        "{name}: {clients} x {per}: counted {counted}, allocated {real}, {:.1}% off",
        off * 100.0
    );
    assert!(off < 0.10, "{name}: counted {counted}, allocated {real}");
    // As they go: every subscription of half the clients, then the rest.
    let ((), shrank) = measured(|| {
        for c in 0..clients / 2 {
            for i in 0..per {
                assert!(tree.unsubscribe(&format!("client-{c}"), &filter(c, i)));
            }
        }
        for c in clients / 2..clients {
            tree.remove_client(&format!("client-{c}"));
        }
    });
    let left = tree.bytes() as f64;
    let held = real + shrank as f64;
    println!("{name}: after removal counted {left}, held {held}");
    assert!(tree.is_empty());
    assert!(
        (left - held).abs() <= 0.10 * held,
        "{name}: after removal counted {left}, held {held}"
    );
}

#[test]
fn tree_bytes_track_allocations_for_shallow_filters() {
    check("shallow", 600, 100, |c, i| format!("s/{c}/{i}"));
}

#[test]
fn tree_bytes_track_allocations_for_one_level_filters() {
    check("one level", 2_000, 20, |c, i| format!("{c}-{i}"));
}

#[test]
fn tree_bytes_track_allocations_for_deep_filters() {
    check("deep", 50, 20, |c, i| {
        let levels: Vec<String> = (0..100).map(|l| format!("l{l}-{c}-{i}")).collect();
        levels.join("/")
    });
}

#[test]
fn tree_bytes_track_allocations_for_shared_prefixes_and_groups() {
    check("shared", 300, 50, |c, i| {
        if i % 5 == 0 {
            format!("$share/g{}/a/b/c/{i}", c % 3)
        } else {
            format!("a/b/c/{i}/{}", "x/".repeat(10) + "y")
        }
    });
}
