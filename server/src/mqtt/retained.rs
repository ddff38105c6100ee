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

use std::collections::HashMap;
use std::time::Instant;

/// Bounds on the retained messages held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainedLimits {
    /// Messages held (one per topic).
    pub max_messages: usize,
    /// Bytes held, as the caller counts a message (the broker: its topic
    /// as [`charge`](super::tree::charge) counts a filter, and its payload).
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

#[derive(Debug)]
struct Held<M> {
    message: M,
    size: usize,
    expires_at: Option<Instant>,
}

impl<M> Held<M> {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

#[derive(Debug)]
struct Node<M> {
    children: HashMap<Box<str>, Node<M>>,
    held: Option<Held<M>>,
}

impl<M> Default for Node<M> {
    fn default() -> Node<M> {
        Node {
            children: HashMap::new(),
            held: None,
        }
    }
}

/// The retained messages. See the [module documentation](self).
#[derive(Debug)]
pub struct Retained<M> {
    root: Node<M>,
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

    /// Bytes held, as counted by the callers of [`set`](Self::set).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sets the topic's retained message (`Some`), of `size` bytes, kept
    /// until `expires_at`; or deletes it (`None`: an empty payload).
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
        if topic.split('/').nth(self.limits.max_levels).is_some() {
            return Err(RetainError::TooDeep);
        }
        let old = self.size_of(topic);
        if !self.fits(old, size) {
            self.purge(now);
            let old = self.size_of(topic);
            if !self.fits(old, size) {
                return Err(if old.is_none() && self.count >= self.limits.max_messages {
                    RetainError::TooMany
                } else {
                    RetainError::TooLarge
                });
            }
        }
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        let previous = node.held.replace(Held {
            message,
            size,
            expires_at,
        });
        match previous {
            Some(p) => self.bytes -= p.size,
            None => self.count += 1,
        }
        self.bytes += size;
        Ok(())
    }

    /// Whether a message of `size` bytes fits in place of one of `old`
    /// bytes (`None`: a new topic).
    fn fits(&self, old: Option<usize>, size: usize) -> bool {
        let count = self.count + usize::from(old.is_none());
        let bytes = (self.bytes - old.unwrap_or(0)).checked_add(size);
        count <= self.limits.max_messages && bytes.is_some_and(|b| b <= self.limits.max_bytes)
    }

    fn size_of(&self, topic: &str) -> Option<usize> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.held.as_ref().map(|h| h.size)
    }

    /// Deletes the topic's retained message, if any.
    pub fn delete(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();
        if let Some(held) = take(&mut self.root, &levels) {
            self.count -= 1;
            self.bytes -= held.size;
        }
    }

    /// Drops every message past its expiry.
    pub fn purge(&mut self, now: Instant) {
        let (count, bytes) = purge(&mut self.root, now);
        self.count -= count;
        self.bytes -= bytes;
    }

    /// The live retained messages whose topic `filter` (not a shared one)
    /// matches, with their topic names, in no particular order.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<(String, &M)> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        let mut path = Vec::new();
        find(&self.root, &levels, true, now, &mut path, &mut out);
        out
    }
}

/// Takes the message at `levels` off and prunes the nodes left empty.
fn take<M>(node: &mut Node<M>, levels: &[&str]) -> Option<Held<M>> {
    match levels.split_first() {
        None => node.held.take(),
        Some((level, rest)) => {
            let child = node.children.get_mut(*level)?;
            let held = take(child, rest);
            if child.held.is_none() && child.children.is_empty() {
                node.children.remove(*level);
            }
            held
        }
    }
}

/// Drops the expired messages under `node`: how many, and their bytes.
fn purge<M>(node: &mut Node<M>, now: Instant) -> (usize, usize) {
    let mut dropped = (0, 0);
    if node.held.as_ref().is_some_and(|h| !h.live(now)) {
        if let Some(h) = node.held.take() {
            dropped = (1, h.size);
        }
    }
    node.children.retain(|_, child| {
        let (c, b) = purge(child, now);
        dropped.0 += c;
        dropped.1 += b;
        child.held.is_some() || !child.children.is_empty()
    });
    dropped
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
            for (name, child) in &node.children {
                if first && name.starts_with('$') {
                    continue;
                }
                path.push(name);
                all(child, now, path, out);
                path.pop();
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if first && name.starts_with('$') {
                    continue;
                }
                path.push(name);
                find(child, rest, false, now, path, out);
                path.pop();
            }
        }
        exact => {
            if let Some((name, child)) = node.children.get_key_value(exact) {
                path.push(name);
                find(child, rest, false, now, path, out);
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
    for (name, child) in &node.children {
        path.push(name);
        all(child, now, path, out);
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
        assert_eq!((s.len(), s.bytes()), (1, 5));
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
        s.purge(later);
        assert_eq!((s.len(), s.bytes()), (1, 4));
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
        let mut s = Retained::new(RetainedLimits {
            max_messages: 2,
            max_bytes: 10,
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
        assert_eq!((s.len(), s.bytes()), (2, 10));
        // Expired messages make room.
        let mut s = Retained::new(RetainedLimits {
            max_messages: 1,
            max_bytes: 10,
            ..RetainedLimits::default()
        });
        s.set(now, "a", Some("a"), 1, Some(now + Duration::from_millis(1)))
            .unwrap();
        let later = now + Duration::from_secs(1);
        s.set(later, "b", Some("b"), 1, None).unwrap();
        assert_eq!(topics(&s, "+", later), ["b=b"]);
    }
}
