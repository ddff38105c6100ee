//! Retained messages: at most one per topic name, kept in a trie of topic
//! levels so that a new subscription's filter finds them by walking its
//! levels rather than by scanning every topic.
//!
//! Rules kept here:
//! - a retained PUBLISH replaces the topic's retained message
//!   (MQTT-3.3.1-5); one with an empty payload deletes it and is not
//!   stored itself (MQTT-3.3.1-6, MQTT-3.3.1-7) -- the caller says which
//!   by passing `None`;
//! - a filter starting with a wildcard does not find `$` topics
//!   (MQTT-4.7.2-1);
//! - a message past its expiry is neither sent nor kept (3.3.2.3.3);
//! - whether a subscription gets them at all (retain handling 0/1/2,
//!   MQTT-3.3.1-9 to 11; never for a shared subscription) is
//!   [`sends_retained`].
//!
//! Bounds: messages held and their bytes ([`RetainedLimits`]). A new topic
//! over either bound is refused (after dropping expired messages), and what
//! is held stays; a replacement is allowed when it fits once the old message
//! is gone.
//!
//! Cost: nothing here walks the store. Setting, replacing, refusing or
//! deleting a message walks its topic's levels (a binary search among each
//! level's children); messages that can expire sit in an index ordered by
//! expiry, so dropping expired messages takes only those, cheapest first,
//! and finding that none has expired is one look at the index.
//!
//! Bytes: [`Retained::bytes`] is what the store really holds on the heap:
//! the size the caller gives for each message's own heap (its payload), the
//! message itself, and the store's structure (each level's node in its
//! parent's children, level names longer than a [`CompactString`] keeps
//! inline, the expiry index and its copy of the topic), each allocation
//! counted as the allocator rounds it ([`block`]).
//! `server/tests/retained_alloc.rs` checks the figure against a counting
//! allocator.

use std::collections::BTreeMap;
use std::mem::size_of;
use std::time::Instant;

use compact_str::CompactString;

use super::heap::{block, compact_heap};

/// Bounds on the retained messages held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainedLimits {
    /// Messages held (one per topic).
    pub max_messages: usize,
    /// Bytes held: the caller's size of each message plus the store's own
    /// structure, as [`Retained::bytes`] counts them.
    pub max_bytes: usize,
    /// Levels a retained topic may have: the trie's depth, and so the
    /// depth of every walk through it.
    pub max_levels: usize,
}

impl Default for RetainedLimits {
    /// 10,000 messages, 64 MiB,
    /// [`DEFAULT_MAX_LEVELS`](super::tree::DEFAULT_MAX_LEVELS) levels.
    fn default() -> RetainedLimits {
        RetainedLimits {
            max_messages: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_levels: super::tree::DEFAULT_MAX_LEVELS,
        }
    }
}

/// Why a retained message was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetainError {
    /// [`RetainedLimits::max_messages`] are held already.
    TooMany,
    /// The message would take the store past [`RetainedLimits::max_bytes`].
    TooLarge,
    /// The topic has more than [`RetainedLimits::max_levels`] levels.
    TooDeep,
}

/// Whether a subscription gets the retained messages its filter matches:
/// retain handling 0 always, 1 only for a subscription that did not exist
/// yet, 2 never; a shared subscription never (4.8.2).
pub fn sends_retained(retain_handling: u8, existed: bool, shared: bool) -> bool {
    !shared
        && match retain_handling {
            0 => true,
            1 => !existed,
            _ => false,
        }
}

/// What one entry of the expiry index costs: a B-tree leaf of 11 entries
/// (24-byte key, 16-byte value: 464 bytes with its header) holds 6 to 11,
/// and about 7 when entries arrive in expiry order, as they mostly do;
/// inner nodes add a little. Checked by `server/tests/retained_alloc.rs`.
const INDEX_ENTRY_COST: usize = 72;

/// A message's place in the expiry index: when, and a number telling two
/// messages of one instant apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    at: Instant,
    seq: u64,
}

#[derive(Debug)]
struct Held<M> {
    message: M,
    /// The caller's size of the message's own heap.
    size: usize,
    expiry: Option<Expiry>,
}

impl<M> Held<M> {
    fn live(&self, now: Instant) -> bool {
        self.expiry.is_none_or(|e| e.at > now)
    }

    /// Everything this message costs the store: its box, the caller's
    /// size, and its index entry with the topic copy it keeps.
    fn cost(&self, topic_len: usize) -> usize {
        held_cost::<M>(self.size, self.expiry.is_some(), topic_len)
    }
}

fn held_cost<M>(size: usize, expires: bool, topic_len: usize) -> usize {
    let index = if expires {
        INDEX_ENTRY_COST.saturating_add(block(topic_len))
    } else {
        0
    };
    block(size_of::<Held<M>>())
        .saturating_add(size)
        .saturating_add(index)
}

/// One level of the trie. Its children are sorted by name, found by binary
/// search; most nodes of deep topics have one, so a vector (one allocation,
/// no hashing state) is leaner than a map.
#[derive(Debug)]
struct Node<M> {
    children: Vec<Child<M>>,
    held: Option<Box<Held<M>>>,
}

impl<M> Default for Node<M> {
    fn default() -> Node<M> {
        Node {
            children: Vec::new(),
            held: None,
        }
    }
}

impl<M> Node<M> {
    fn child(&self, name: &str) -> Result<usize, usize> {
        self.children
            .binary_search_by(|c| c.name.as_str().cmp(name))
    }
}

#[derive(Debug)]
struct Child<M> {
    name: CompactString,
    node: Node<M>,
}

/// The heap of a children vector of `capacity`.
fn children_cost<M>(capacity: usize) -> usize {
    block(capacity.saturating_mul(size_of::<Child<M>>()))
}

/// The heap of a level name as it is stored.
fn name_cost(name: &CompactString) -> usize {
    if name.is_heap_allocated() {
        block(name.capacity())
    } else {
        0
    }
}

/// The heap a level name will take, before it is stored.
fn new_name_cost(name: &str) -> usize {
    compact_heap(name.len())
}

/// The capacity a children vector grows to when full: doubled (one to
/// start), so that growth is amortised and known in advance.
fn grown(capacity: usize) -> usize {
    capacity.saturating_add(capacity.max(1))
}

// Counts the trie nodes a test's operation touches (the work a refused
// message costs is checked in these units).
#[cfg(test)]
thread_local! {
    static VISITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[inline]
fn visit() {
    #[cfg(test)]
    VISITS.with(|v| v.set(v.get() + 1));
}

/// What setting a topic would change: the cost of the message it holds now
/// (`None`: a new topic) and what its missing levels would add.
struct Probe {
    old: Option<usize>,
    grow: usize,
}

/// The retained messages. See the [module documentation](self).
#[derive(Debug)]
pub struct Retained<M> {
    root: Node<M>,
    /// Messages that can expire, soonest first, with their topics.
    expiries: BTreeMap<Expiry, Box<str>>,
    next_seq: u64,
    count: usize,
    bytes: usize,
    limits: RetainedLimits,
}

impl<M> Default for Retained<M> {
    fn default() -> Retained<M> {
        Retained::new(RetainedLimits::default())
    }
}

impl<M> Retained<M> {
    /// An empty store with these bounds.
    pub fn new(limits: RetainedLimits) -> Retained<M> {
        Retained {
            root: Node::default(),
            expiries: BTreeMap::new(),
            next_seq: 0,
            count: 0,
            bytes: 0,
            limits,
        }
    }

    /// Messages held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held: the sizes given to [`set`](Self::set) and the store's
    /// own heap (see the [module documentation](self)).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the next held message expires, if any does: the time to call
    /// [`purge`](Self::purge) to free it.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first_key_value().map(|(e, _)| e.at)
    }

    /// Sets the topic's retained message (`Some`), kept until `expires_at`;
    /// or deletes it (`None`: an empty payload). `size` is what the message
    /// holds on the heap beyond itself (its payload, its topic string); the
    /// store adds the message's own size and its structure.
    ///
    /// Costs the topic's levels, and the expired messages it drops when
    /// the store is full: never a walk of the store.
    pub fn set(
        &mut self,
        now: Instant,
        topic: &str,
        message: Option<M>,
        size: usize,
        expires_at: Option<Instant>,
    ) -> Result<(), RetainError> {
        let Some(message) = message else {
            self.delete(topic);
            return Ok(());
        };
        if self.too_deep(topic) {
            return Err(RetainError::TooDeep);
        }
        let cost = held_cost::<M>(size, expires_at.is_some(), topic.len());
        let mut probe = self.probe(topic);
        if !self.fits(&probe, cost) {
            if self.next_expiry().is_some_and(|at| at <= now) {
                self.purge(now);
                probe = self.probe(topic);
            }
            if !self.fits(&probe, cost) {
                return Err(
                    if probe.old.is_none() && self.count >= self.limits.max_messages {
                        RetainError::TooMany
                    } else {
                        RetainError::TooLarge
                    },
                );
            }
        }
        let expiry = expires_at.map(|at| {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            Expiry { at, seq }
        });
        let held = Held {
            message,
            size,
            expiry,
        };
        let Retained {
            root,
            bytes,
            expiries,
            count,
            ..
        } = self;
        let mut node = root;
        for level in topic.split('/') {
            visit();
            let at = match node.child(level) {
                Ok(at) => at,
                Err(at) => {
                    let before = node.children.capacity();
                    if node.children.len() == before {
                        node.children.reserve_exact(grown(before) - before);
                    }
                    let name = CompactString::new(level);
                    *bytes = bytes
                        .saturating_add(children_cost::<M>(node.children.capacity()))
                        .saturating_sub(children_cost::<M>(before))
                        .saturating_add(name_cost(&name));
                    node.children.insert(
                        at,
                        Child {
                            name,
                            node: Node::default(),
                        },
                    );
                    at
                }
            };
            node = &mut node.children[at].node;
        }
        *bytes = bytes.saturating_add(held.cost(topic.len()));
        if let Some(e) = held.expiry {
            expiries.insert(e, Box::from(topic));
        }
        match &mut node.held {
            Some(old) => {
                let old = std::mem::replace(&mut **old, held);
                *bytes = bytes.saturating_sub(old.cost(topic.len()));
                if let Some(e) = old.expiry {
                    expiries.remove(&e);
                }
            }
            None => {
                node.held = Some(Box::new(held));
                *count += 1;
            }
        }
        Ok(())
    }

    /// Whether `topic` has more levels than the store keeps.
    fn too_deep(&self, topic: &str) -> bool {
        topic.split('/').nth(self.limits.max_levels).is_some()
    }

    /// What setting `topic` would replace, and what its missing levels
    /// would add: the first missing level's place in its parent (a doubled
    /// vector when full), then each missing level's name and, but for the
    /// last, its one child.
    fn probe(&self, topic: &str) -> Probe {
        let mut node = &self.root;
        let mut levels = topic.split('/');
        for level in levels.by_ref() {
            visit();
            match node.child(level) {
                Ok(at) => node = &node.children[at].node,
                Err(_) => {
                    let capacity = node.children.capacity();
                    let mut grow = if node.children.len() == capacity {
                        children_cost::<M>(grown(capacity)) - children_cost::<M>(capacity)
                    } else {
                        0
                    };
                    grow = grow.saturating_add(new_name_cost(level));
                    for level in levels {
                        grow = grow
                            .saturating_add(children_cost::<M>(1))
                            .saturating_add(new_name_cost(level));
                    }
                    return Probe { old: None, grow };
                }
            }
        }
        Probe {
            old: node.held.as_ref().map(|h| h.cost(topic.len())),
            grow: 0,
        }
    }

    /// Whether a message costing `cost` fits as `probe` says it would go in.
    fn fits(&self, probe: &Probe, cost: usize) -> bool {
        let count = self.count + usize::from(probe.old.is_none());
        let bytes = (self.bytes.saturating_sub(probe.old.unwrap_or(0)))
            .checked_add(cost)
            .and_then(|b| b.checked_add(probe.grow));
        count <= self.limits.max_messages && bytes.is_some_and(|b| b <= self.limits.max_bytes)
    }

    /// Deletes the topic's retained message, if any.
    pub fn delete(&mut self, topic: &str) {
        if self.too_deep(topic) {
            return;
        }
        let mut levels = topic.split('/');
        if let Some(held) = take(&mut self.root, &mut levels, &mut self.bytes) {
            self.count -= 1;
            self.bytes = self.bytes.saturating_sub(held.cost(topic.len()));
            if let Some(e) = held.expiry {
                self.expiries.remove(&e);
            }
        }
    }

    /// Drops every message past its expiry: only those, soonest first.
    pub fn purge(&mut self, now: Instant) {
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().at > now {
                break;
            }
            let (expiry, topic) = entry.remove_entry();
            let mut levels = topic.split('/');
            if let Some(held) = take(&mut self.root, &mut levels, &mut self.bytes) {
                // The entry left the index with its message, so this is
                // the message it named.
                debug_assert_eq!(held.expiry, Some(expiry));
                self.count -= 1;
                self.bytes = self.bytes.saturating_sub(held.cost(topic.len()));
            }
        }
    }

    /// The live retained messages whose topic `filter` (not a shared one)
    /// matches, with their topic names, in no particular order.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<(String, &M)> {
        // One more level than a topic may have: `a/#` matches `a`.
        if filter
            .split('/')
            .nth(self.limits.max_levels.saturating_add(1))
            .is_some()
        {
            return Vec::new();
        }
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        let mut path = Vec::new();
        find(&self.root, &levels, true, now, &mut path, &mut out);
        out
    }
}

/// Takes the message at the remaining `levels` off, prunes the nodes left
/// empty and takes their heap off `bytes`. The depth is the topic's, which
/// the caller bounded.
fn take<'t, M>(
    node: &mut Node<M>,
    levels: &mut impl Iterator<Item = &'t str>,
    bytes: &mut usize,
) -> Option<Box<Held<M>>> {
    visit();
    let Some(level) = levels.next() else {
        return node.held.take();
    };
    let at = node.child(level).ok()?;
    let child = &mut node.children[at].node;
    let held = take(child, levels, bytes);
    if child.held.is_none() && child.children.is_empty() {
        let before = node.children.capacity();
        let gone = node.children.remove(at);
        let len = node.children.len();
        if len == 0 {
            node.children = Vec::new();
        } else if len.saturating_mul(4) <= before {
            node.children.shrink_to(before / 2);
        }
        *bytes = bytes
            .saturating_sub(children_cost::<M>(before))
            .saturating_add(children_cost::<M>(node.children.capacity()))
            .saturating_sub(name_cost(&gone.name))
            .saturating_sub(children_cost::<M>(gone.node.children.capacity()));
    }
    held
}

/// Walks the filter's `levels` from `node` (whose topic so far is `path`);
/// `first`: the next level is the topic's first, where wildcards skip `$`.
fn find<'m, M>(
    node: &'m Node<M>,
    levels: &[&str],
    first: bool,
    now: Instant,
    path: &mut Vec<&'m str>,
    out: &mut Vec<(String, &'m M)>,
) {
    let Some((level, rest)) = levels.split_first() else {
        push(node, now, path, out);
        return;
    };
    match *level {
        "#" => {
            // `a/#` matches `a` too (but `#` alone matches no empty topic).
            if !first {
                push(node, now, path, out);
            }
            for child in &node.children {
                if first && child.name.starts_with('$') {
                    continue;
                }
                path.push(&child.name);
                all(&child.node, now, path, out);
                path.pop();
            }
        }
        "+" => {
            for child in &node.children {
                if first && child.name.starts_with('$') {
                    continue;
                }
                path.push(&child.name);
                find(&child.node, rest, false, now, path, out);
                path.pop();
            }
        }
        exact => {
            if let Ok(at) = node.child(exact) {
                let child = &node.children[at];
                path.push(&child.name);
                find(&child.node, rest, false, now, path, out);
                path.pop();
            }
        }
    }
}

/// Every live message at or under `node`.
fn all<'m, M>(
    node: &'m Node<M>,
    now: Instant,
    path: &mut Vec<&'m str>,
    out: &mut Vec<(String, &'m M)>,
) {
    push(node, now, path, out);
    for child in &node.children {
        path.push(&child.name);
        all(&child.node, now, path, out);
        path.pop();
    }
}

fn push<'m, M>(node: &'m Node<M>, now: Instant, path: &[&str], out: &mut Vec<(String, &'m M)>) {
    if let Some(h) = node.held.as_ref().filter(|h| h.live(now)) {
        out.push((path.join("/"), &h.message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn topics(store: &Retained<&'static str>, filter: &str, now: Instant) -> Vec<String> {
        let mut t: Vec<String> = store
            .matching(filter, now)
            .into_iter()
            .map(|(topic, m)| format!("{topic}={m}"))
            .collect();
        t.sort();
        t
    }

    /// Recounts from scratch what the store says it holds (messages,
    /// bytes, the callers' sizes among them), and checks that the expiry
    /// index names exactly the messages that can expire.
    fn audit<M>(s: &Retained<M>) -> (usize, usize, usize) {
        fn walk<M>(
            node: &Node<M>,
            path: &mut Vec<String>,
            totals: &mut (usize, usize, usize),
            expiring: &mut Vec<(Expiry, String)>,
        ) {
            totals.1 += children_cost::<M>(node.children.capacity());
            if let Some(h) = &node.held {
                let topic = path.join("/");
                totals.0 += 1;
                totals.1 += h.cost(topic.len());
                totals.2 += h.size;
                if let Some(e) = h.expiry {
                    expiring.push((e, topic));
                }
            }
            for child in &node.children {
                assert!(
                    child.node.held.is_some() || !child.node.children.is_empty(),
                    "pruned"
                );
                totals.1 += name_cost(&child.name);
                path.push(child.name.to_string());
                walk(&child.node, path, totals, expiring);
                path.pop();
            }
            assert!(
                node.children.windows(2).all(|w| w[0].name < w[1].name),
                "sorted"
            );
        }
        let mut totals = (0, 0, 0);
        let mut expiring = Vec::new();
        walk(&s.root, &mut Vec::new(), &mut totals, &mut expiring);
        expiring.sort();
        let index: Vec<(Expiry, String)> = s
            .expiries
            .iter()
            .map(|(e, t)| (*e, t.to_string()))
            .collect();
        assert_eq!(index, expiring, "expiry index");
        assert_eq!((s.len(), s.bytes()), (totals.0, totals.1), "books");
        totals
    }

    /// The callers' sizes held, after an [`audit`].
    fn sizes<M>(s: &Retained<M>) -> usize {
        audit(s).2
    }

    fn store(entries: &[(&str, &'static str)]) -> (Retained<&'static str>, Instant) {
        let now = Instant::now();
        let mut s = Retained::default();
        for (topic, m) in entries {
            s.set(now, topic, Some(*m), m.len(), None).unwrap();
        }
        (s, now)
    }

    #[test]
    fn mqtt_3_3_1_5_a_retained_publish_replaces_the_topics_message() {
        let (mut s, now) = store(&[("a/b", "one")]);
        s.set(now, "a/b", Some("three"), 5, None).unwrap();
        assert_eq!(topics(&s, "a/b", now), ["a/b=three"]);
        assert_eq!((s.len(), sizes(&s)), (1, 5));
    }

    #[test]
    fn mqtt_3_3_1_6_and_7_an_empty_retained_payload_deletes_and_is_not_kept() {
        let (mut s, now) = store(&[("a/b", "one"), ("a/c", "two")]);
        s.set(now, "a/b", None, 0, None).unwrap();
        assert_eq!(topics(&s, "a/#", now), ["a/c=two"]);
        s.set(now, "nothing/here", None, 0, None).unwrap();
        s.set(now, "a/c", None, 0, None).unwrap();
        assert_eq!((s.len(), s.bytes()), (0, 0));
        assert!(s.root.children.is_empty(), "pruned");
        assert_eq!(s.root.children.capacity(), 0, "freed");
    }

    #[test]
    fn mqtt_4_7_1_new_subscription_finds_retained_by_its_filter() {
        let (s, now) = store(&[
            ("sport", "0"),
            ("sport/tennis", "1"),
            ("sport/tennis/p1", "2"),
            ("sport/golf", "3"),
            ("/x", "4"),
            ("news", "5"),
        ]);
        assert_eq!(topics(&s, "sport/tennis", now), ["sport/tennis=1"]);
        assert_eq!(
            topics(&s, "sport/#", now),
            [
                "sport/golf=3",
                "sport/tennis/p1=2",
                "sport/tennis=1",
                "sport=0"
            ]
        );
        assert_eq!(
            topics(&s, "sport/+", now),
            ["sport/golf=3", "sport/tennis=1"]
        );
        assert_eq!(
            topics(&s, "+/+", now),
            ["/x=4", "sport/golf=3", "sport/tennis=1"]
        );
        assert_eq!(topics(&s, "+", now), ["news=5", "sport=0"]);
        assert_eq!(topics(&s, "#", now).len(), 6);
        assert!(topics(&s, "sport/tennis/p1/x", now).is_empty());
    }

    #[test]
    fn mqtt_4_7_2_1_leading_wildcards_do_not_find_dollar_topics() {
        let (s, now) = store(&[("$SYS/uptime", "1"), ("a/$b", "2")]);
        assert_eq!(topics(&s, "#", now), ["a/$b=2"]);
        assert_eq!(topics(&s, "+/uptime", now), Vec::<String>::new());
        assert_eq!(topics(&s, "$SYS/#", now), ["$SYS/uptime=1"]);
        assert_eq!(topics(&s, "$SYS/+", now), ["$SYS/uptime=1"]);
        assert_eq!(topics(&s, "a/+", now), ["a/$b=2"]);
    }

    #[test]
    fn mqtt_3_3_2_3_3_expired_retained_messages_are_not_sent_and_are_dropped() {
        let now = Instant::now();
        let mut s = Retained::default();
        s.set(
            now,
            "a",
            Some("soon"),
            4,
            Some(now + Duration::from_secs(1)),
        )
        .unwrap();
        s.set(now, "b", Some("kept"), 4, None).unwrap();
        assert_eq!(topics(&s, "+", now), ["a=soon", "b=kept"]);
        let later = now + Duration::from_secs(2);
        assert_eq!(topics(&s, "+", later), ["b=kept"]);
        assert_eq!(s.next_expiry(), Some(now + Duration::from_secs(1)));
        s.purge(later);
        assert_eq!((s.len(), sizes(&s)), (1, 4));
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn mqtt_3_3_1_9_to_11_retain_handling_and_shared_subscriptions() {
        assert!(sends_retained(0, false, false));
        assert!(sends_retained(0, true, false), "0: every time");
        assert!(sends_retained(1, false, false));
        assert!(!sends_retained(1, true, false), "1: only if new");
        assert!(!sends_retained(2, false, false), "2: never");
        assert!(!sends_retained(0, false, true), "never for a shared one");
    }

    #[test]
    fn retained_topic_depth_is_bounded_so_walks_through_the_trie_are() {
        let now = Instant::now();
        let mut s = Retained::default();
        let huge = "/".repeat(65_535);
        assert_eq!(
            s.set(now, &huge, Some("x"), 1, None),
            Err(RetainError::TooDeep)
        );
        // Deleting or looking it up walks no deeper than the trie.
        s.set(now, &huge, None, 0, None).unwrap();
        assert!(s.matching(&huge, now).is_empty());
        assert!(s.matching(&format!("{huge}#"), now).is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn retained_store_bounded_in_count_and_bytes() {
        let now = Instant::now();
        // What holding `a` and `b` costs the store itself.
        let (base, _) = store(&[("a", ""), ("b", "")]);
        let mut s = Retained::new(RetainedLimits {
            max_messages: 2,
            max_bytes: base.bytes() + 10,
            ..RetainedLimits::default()
        });
        s.set(now, "a", Some("a"), 4, None).unwrap();
        s.set(now, "b", Some("b"), 4, None).unwrap();
        assert_eq!(
            s.set(now, "c", Some("c"), 1, None),
            Err(RetainError::TooMany)
        );
        // A replacement fits once the old one is gone; a bigger one not.
        s.set(now, "a", Some("A"), 6, None).unwrap();
        assert_eq!(
            s.set(now, "a", Some("X"), 7, None),
            Err(RetainError::TooLarge)
        );
        assert_eq!(
            s.set(now, "a", Some("X"), usize::MAX, None),
            Err(RetainError::TooLarge)
        );
        assert_eq!(topics(&s, "+", now), ["a=A", "b=b"]);
        assert_eq!((s.len(), sizes(&s)), (2, 10));
        assert_eq!(s.bytes(), base.bytes() + 10);
        // Expired messages make room.
        let mut s = Retained::new(RetainedLimits {
            max_messages: 1,
            max_bytes: 1024,
            ..RetainedLimits::default()
        });
        s.set(now, "a", Some("a"), 1, Some(now + Duration::from_millis(1)))
            .unwrap();
        let later = now + Duration::from_secs(1);
        s.set(later, "b", Some("b"), 1, None).unwrap();
        assert_eq!(topics(&s, "+", later), ["b=b"]);
    }

    /// Trie nodes touched by `f`.
    fn visits(f: impl FnOnce()) -> usize {
        VISITS.with(|v| v.set(0));
        f();
        VISITS.with(|v| v.get())
    }

    /// A 128-level topic, distinct by its first and last levels.
    fn deep(i: usize) -> String {
        let mut t = format!("d{i}");
        for level in 1..127 {
            t.push_str(&format!("/{level}"));
        }
        t + &format!("/{i}")
    }

    /// Fills a store of `max_bytes` with 128-level topics until one is
    /// refused (every other one can expire, an hour on); how many it holds.
    fn fill_deep(max_bytes: usize, now: Instant) -> Retained<usize> {
        let mut s = Retained::new(RetainedLimits {
            max_bytes,
            ..RetainedLimits::default()
        });
        for i in 0.. {
            let expires = (i % 2 == 0).then(|| now + Duration::from_secs(3600 + i as u64));
            if s.set(now, &deep(i), Some(i), 100, expires).is_err() {
                break;
            }
        }
        s
    }

    #[test]
    fn retained_refusal_when_full_touches_the_topics_levels_not_the_store() {
        let now = Instant::now();
        let mut work = Vec::new();
        for max_bytes in [256 * 1024, 4 * 1024 * 1024] {
            let mut s = fill_deep(max_bytes, now);
            let held = s.len();
            // A new deep topic, and a deep one sharing all but its last
            // level with every held one.
            let fresh = deep(usize::MAX);
            let twin = "d0/".to_string() + &deep(usize::MAX)[format!("d{}/", usize::MAX).len()..];
            let a = visits(|| {
                assert_eq!(
                    s.set(now, &fresh, Some(0), 100, None),
                    Err(RetainError::TooLarge)
                )
            });
            // Its one missing level would fit: its payload fills the room.
            let room = max_bytes - s.bytes();
            let b = visits(|| {
                assert_eq!(
                    s.set(now, &twin, Some(0), room, None),
                    Err(RetainError::TooLarge)
                )
            });
            // A replacement too large to fit, with every level present.
            let c = visits(|| {
                assert_eq!(
                    s.set(now, &deep(0), Some(0), max_bytes, None),
                    Err(RetainError::TooLarge)
                )
            });
            assert_eq!(s.len(), held, "nothing dropped");
            audit(&s);
            work.push((held, a, b, c));
        }
        let (small, large) = (work[0], work[1]);
        assert!(
            large.0 >= 10 * small.0,
            "the second store holds more: {work:?}"
        );
        // At most one probe of the topic's levels (and the root).
        for (_, a, b, c) in [small, large] {
            assert!(a <= 1 && b <= 128 && c <= 129, "{work:?}");
        }
        assert_eq!((small.1, small.2, small.3), (large.1, large.2, large.3));
        eprintln!("nodes touched per refused set (held, new, twin, replacement): {work:?}");
    }

    #[test]
    fn mqtt_3_3_2_3_3_purge_takes_only_the_expired_messages() {
        let now = Instant::now();
        let mut s = fill_deep(1024 * 1024, now);
        let held = s.len();
        // Nothing expired: one look at the index.
        assert_eq!(visits(|| s.purge(now)), 0);
        // The first two expiring ones (0 and 2) are due.
        let later = now + Duration::from_secs(3600 + 2);
        let work = visits(|| s.purge(later));
        assert_eq!(s.len(), held - 2);
        assert_eq!(work, 2 * 129, "two topics' levels and their roots");
        assert!(topics_of(&s, "d0/#", later).is_empty());
        assert_eq!(topics_of(&s, "d1/#", later).len(), 1);
        audit(&s);
        // A full store makes room by dropping what has expired.
        let much_later = now + Duration::from_secs(7200);
        let room = 1024 * 1024 - s.bytes();
        s.set(much_later, &deep(usize::MAX), Some(0), room, None)
            .unwrap();
        assert_eq!(s.len(), held.div_ceil(2) - held % 2 + 1);
        assert_eq!(s.next_expiry(), None);
        audit(&s);
    }

    fn topics_of(s: &Retained<usize>, filter: &str, now: Instant) -> Vec<String> {
        s.matching(filter, now)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn retained_store_books_its_heap_through_any_mix_of_operations() {
        // A deterministic mix of sets, replacements, deletions and expiries
        // over few names, long and short, wide and deep; the books are
        // recounted after each step, and every message is finally deleted.
        let now = Instant::now();
        let names = ["a", "b", "", "$s", "a-level-name-longer-than-24-bytes", "z"];
        let mut s = Retained::new(RetainedLimits {
            max_messages: 40,
            max_bytes: 64 * 1024,
            max_levels: 5,
        });
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..3000u64 {
            let depth = 1 + next(6);
            let topic: Vec<&str> = (0..depth).map(|_| names[next(names.len())]).collect();
            let topic = topic.join("/");
            let t = now + Duration::from_millis(step);
            match next(10) {
                0..=5 => {
                    let expires =
                        (next(2) == 0).then(|| t + Duration::from_millis(next(50) as u64));
                    let r = s.set(t, &topic, Some(step as usize), next(2000), expires);
                    if depth > 5 {
                        assert_eq!(r, Err(RetainError::TooDeep));
                    }
                    if r.is_ok() {
                        seen.insert(topic);
                    }
                }
                6..=7 => s.delete(&topic),
                _ => s.purge(t),
            }
            audit(&s);
            assert!(s.len() <= 40 && s.bytes() <= 64 * 1024);
        }
        for topic in &seen {
            s.delete(topic);
        }
        assert_eq!((s.len(), s.bytes(), s.expiries.len()), (0, 0, 0));
    }
}
