//! The subscription index: a trie of topic levels.
//!
//! Each node is one level of a topic filter; `+` and `#` are ordinary
//! children keyed by themselves. A topic name is matched by walking its
//! levels: at each node the exact child, the `+` child and the `#` child are
//! followed, so the cost of a match depends on the filters that could match,
//! never on how many clients subscribe elsewhere.
//!
//! Rules kept here:
//! - a filter starting with a wildcard does not match a topic whose first
//!   level starts with `$` (MQTT-4.7.2-1);
//! - `a/#` also matches `a` (the parent level, 4.7.1.2);
//! - a client gets ONE delivery per message for its ordinary subscriptions:
//!   the highest QoS among those that match (MQTT-3.3.4-2), with every
//!   matching subscription identifier (MQTT-3.3.4-3, MQTT-3.3.4-4), and
//!   retain-as-published if any of them asks for it;
//! - a subscription with no-local is not matched by its own client's
//!   publications (MQTT-3.8.3-3);
//! - a shared subscription `$share/GROUP/FILTER` gives each message to one
//!   member of the group, in turn (4.8.2); that copy comes on top of what
//!   the member's ordinary subscriptions give it;
//! - subscribing again to an identical filter replaces the subscription
//!   (MQTT-3.8.4-3).
//!
//! Bounds: filters per client, subscriptions and bytes in total, and a
//! share of both per source address and per user name ([`TreeLimits`],
//! [`Principal`]); over any of them, [`Tree::subscribe_as`] refuses and
//! nothing changes, so that one actor exhausts its own share and not the
//! server's. Filter syntax is the packet codec's business; what reaches the
//! tree was checked.
//!
//! Memory: the tree counts the heap it holds ([`Tree::bytes`]) as it
//! changes, table by table, in the blocks a `malloc` of the glibc kind
//! hands out ([`block`]): each node's maps, each level's name, each list
//! and each client. A subscription is let in only when the most it could
//! add ([`charge`] and the growth of the one full map it would enter) fits
//! under [`TreeLimits::max_bytes`].

use std::cell::Cell;
use std::collections::hash_map::{self, DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::net::IpAddr;
use std::sync::OnceLock;

use compact_str::CompactString;
use sessionwire::mqtt::QoS;
use smallvec::SmallVec;

use super::conns::{Keyed, SlotTable};
use super::heap::{block, compact_heap, table_heap, GROUP_WIDTH};

/// The prefix of a shared subscription's filter.
const SHARE_PREFIX: &str = "$share/";

/// Bounds on what the tree holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// Filters one client may have at once (shared ones included).
    pub max_filters_per_client: usize,
    /// Subscriptions over all clients.
    pub max_subscriptions: usize,
    /// Levels a filter may have: the trie's depth, and so the depth of
    /// every walk through it (a 65,535-byte filter could have 65,536).
    pub max_levels: usize,
    /// Heap the tree may hold, as [`Tree::bytes`] counts it.
    pub max_bytes: usize,
    /// Subscriptions the clients of one source address (IPv6: one /64) may
    /// hold together.
    pub max_subscriptions_per_source: usize,
    /// Subscriptions the clients of one user name may hold together.
    pub max_subscriptions_per_user: usize,
    /// The [`charge`] of the subscriptions of one source address.
    pub max_bytes_per_source: usize,
    /// The [`charge`] of the subscriptions of one user name.
    pub max_bytes_per_user: usize,
}

impl TreeLimits {
    /// These limits with each source address and each user name allowed
    /// `per_source` and `per_user` subscriptions, and the same part of
    /// [`max_bytes`](Self::max_bytes) each (0: the whole).
    pub fn with_shares(self, per_source: usize, per_user: usize) -> TreeLimits {
        let part = |n: usize| {
            if n == 0 || n >= self.max_subscriptions || self.max_subscriptions == 0 {
                return (self.max_subscriptions, self.max_bytes);
            }
            // max_bytes * n / max_subscriptions, in u128 so it cannot
            // overflow.
            let bytes = (self.max_bytes as u128 * n as u128) / self.max_subscriptions as u128;
            (n, usize::try_from(bytes).unwrap_or(usize::MAX))
        };
        let (max_subscriptions_per_source, max_bytes_per_source) = part(per_source);
        let (max_subscriptions_per_user, max_bytes_per_user) = part(per_user);
        TreeLimits {
            max_subscriptions_per_source,
            max_subscriptions_per_user,
            max_bytes_per_source,
            max_bytes_per_user,
            ..self
        }
    }
}

/// Who a client's subscriptions are charged to, beside its client id: the
/// address it connected from and its user name, when known. Each client is
/// charged to the principal of its first subscription until it has none
/// left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Principal<'a> {
    /// The source address (counted per IPv4 address, per IPv6 /64).
    pub source: Option<IpAddr>,
    /// The user name of the client's CONNECT.
    pub user: Option<&'a str>,
}

/// The most one subscription to `filter` adds to the tree's heap, whatever
/// it shares with others: a new node per level (a map of four places, the
/// level's name), the leaf's list, the filter kept in its client's list,
/// and a share of that list's growth. [`Tree::bytes`] counts what it really
/// adds; this is the bound checked beforehand, and what a principal's
/// share is charged.
pub fn charge(filter: &str) -> usize {
    let (group, path) = match split_share(filter) {
        Ok(split) => split,
        Err(_) => (None, filter),
    };
    let levels: usize = path
        .split('/')
        .map(|level| NEW_NODE.saturating_add(block(level.len())))
        .fold(0, usize::saturating_add);
    let leaf = match group {
        None => block(4 * size_of::<Entry>()),
        Some(g) => NEW_GROUPS
            .saturating_add(block(g.len()))
            .saturating_add(block(4 * size_of::<Entry>())),
    };
    levels
        .saturating_add(leaf)
        .saturating_add(compact_heap(filter.len()))
        .saturating_add(2 * size_of::<(CompactString, usize)>())
}

/// A new node's map of children with one entry: four places.
const NEW_NODE: usize = 4 * size_of::<(Box<str>, Node)>() + 4 + GROUP_WIDTH;

/// A node's new map of groups with one entry: four places.
const NEW_GROUPS: usize = 4 * size_of::<(Box<str>, Group)>() + 4 + GROUP_WIDTH;

/// The heap of a map of the tree's.
fn map_heap<K: Eq + std::hash::Hash, V>(map: &Map<K, V>) -> usize {
    block(map.allocation_size())
}

/// What a full map would add by growing to twice its places.
fn map_growth<K: Eq + std::hash::Hash, V>(map: &Map<K, V>) -> usize {
    if map.len() < map.capacity() {
        return 0;
    }
    // Past the tombstones: the places it has now, twice.
    let grown = if map.capacity() == 0 {
        3
    } else {
        map.capacity().max(map.len()).saturating_mul(2).max(7)
    };
    table_heap::<(K, V)>(grown).saturating_sub(map_heap(map))
}

/// The heap of a list of `T`s with room for `capacity`.
fn vec_heap<T>(capacity: usize) -> usize {
    block(capacity.saturating_mul(size_of::<T>()))
}

/// The heap a node holds itself (its children's names are counted with
/// the children).
fn node_heap(node: &Node) -> usize {
    map_heap(&node.children)
        .saturating_add(map_heap(&node.groups))
        .saturating_add(vec_heap::<Entry>(node.subscribers.capacity()))
}

/// The part of the subscriptions (and of their bytes) one source address
/// or one user name may hold by default: a quarter. Filling the tree takes
/// at least four addresses and four users, and one address (a NAT, a
/// gateway) still holds 250 times what one client may.
pub const DEFAULT_SHARE: usize = 4;

/// Levels a filter or a retained topic may have by default.
pub const DEFAULT_MAX_LEVELS: usize = 128;

impl Default for TreeLimits {
    /// 1,000 filters per client, a million subscriptions,
    /// [`DEFAULT_MAX_LEVELS`] levels, 256 MiB; a quarter of the
    /// subscriptions and of the bytes per source address and per user name
    /// ([`DEFAULT_SHARE`]).
    fn default() -> TreeLimits {
        let max_subscriptions = 1_000_000;
        TreeLimits {
            max_filters_per_client: 1_000,
            max_subscriptions,
            max_levels: DEFAULT_MAX_LEVELS,
            max_bytes: 256 * 1024 * 1024,
            max_subscriptions_per_source: 0,
            max_subscriptions_per_user: 0,
            max_bytes_per_source: 0,
            max_bytes_per_user: 0,
        }
        .with_shares(
            max_subscriptions / DEFAULT_SHARE,
            max_subscriptions / DEFAULT_SHARE,
        )
    }
}

/// What one source address or one user name holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    subscriptions: usize,
    /// The [`charge`] of those subscriptions.
    bytes: usize,
}

/// The principal a client's subscriptions are charged to, kept with the
/// client (boxed: most of a client's 64 bytes are its id and filters).
#[derive(Debug)]
struct Owner {
    source: Option<IpAddr>,
    user: Option<CompactString>,
}

/// One subscription's options as the tree keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The granted QoS: the most the client gets on this subscription.
    pub qos: QoS,
    /// 5.0: the client's own publications do not match.
    pub no_local: bool,
    /// 5.0: the retain flag is forwarded as published.
    pub retain_as_published: bool,
    /// 5.0: the subscription identifier.
    pub id: Option<u32>,
}

impl Subscription {
    /// A subscription at this QoS, every option off, no identifier.
    pub const fn at(qos: QoS) -> Subscription {
        Subscription {
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }
}

/// A [`Subscription`] as the tree keeps it: 8 bytes rather than 12 (an
/// `Option<u32>` takes 8 on its own), so that a trie entry with its
/// client's slot takes 12 bytes, not 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    /// The identifier, when [`HAS_ID`] is set.
    id: u32,
    qos: QoS,
    /// [`NO_LOCAL`], [`RETAIN_AS_PUBLISHED`], [`HAS_ID`].
    flags: u8,
}

const NO_LOCAL: u8 = 1;
const RETAIN_AS_PUBLISHED: u8 = 2;
const HAS_ID: u8 = 4;

impl From<Subscription> for Stored {
    fn from(sub: Subscription) -> Stored {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        Stored {
            id: sub.id.unwrap_or(0),
            qos: sub.qos,
            flags: flag(sub.no_local, NO_LOCAL)
                | flag(sub.retain_as_published, RETAIN_AS_PUBLISHED)
                | flag(sub.id.is_some(), HAS_ID),
        }
    }
}

impl Stored {
    fn get(self) -> Subscription {
        Subscription {
            qos: self.qos,
            no_local: self.flags & NO_LOCAL != 0,
            retain_as_published: self.flags & RETAIN_AS_PUBLISHED != 0,
            id: (self.flags & HAS_ID != 0).then_some(self.id),
        }
    }
}

/// Why a subscription was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The client has [`TreeLimits::max_filters_per_client`] already.
    ClientFull,
    /// The tree holds [`TreeLimits::max_subscriptions`] already, or the
    /// subscription would take it past [`TreeLimits::max_bytes`].
    TreeFull,
    /// The clients of the source address hold
    /// [`TreeLimits::max_subscriptions_per_source`] or
    /// [`TreeLimits::max_bytes_per_source`] already.
    SourceFull,
    /// The clients of the user name hold
    /// [`TreeLimits::max_subscriptions_per_user`] or
    /// [`TreeLimits::max_bytes_per_user`] already.
    UserFull,
    /// `$share/` without a group name or a filter after it.
    BadShare,
    /// The filter has more than [`TreeLimits::max_levels`] levels.
    TooDeep,
}

/// One delivery a message gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match<'t> {
    /// Who gets it (the tree's copy of the client id).
    pub client_id: &'t str,
    /// The highest QoS of the matching subscriptions (the caller caps it at
    /// the message's).
    pub qos: QoS,
    /// Whether any matching subscription keeps the retain flag as published.
    pub retain_as_published: bool,
    /// The identifiers of the matching subscriptions that have one.
    pub subscription_ids: Vec<u32>,
    /// The delivery is a shared subscription's (one member of its group).
    pub shared: bool,
}

/// The hasher of every map in the tree: one random key for the whole
/// process, so that no map carries a key of its own (a `RandomState` is 16
/// bytes, and the tree has three maps a node) while a client still cannot
/// aim collisions at a key it does not know.
#[derive(Clone, Copy, Debug, Default)]
struct SharedKey;

impl BuildHasher for SharedKey {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        KEY.get_or_init(RandomState::new).build_hasher()
    }
}

/// A map of the tree's, hashed with the [`SharedKey`].
///
/// hashbrown's rather than std's (the same table) for its
/// `allocation_size`: a table's places, counted from its capacity, are
/// missed once removals leave tombstones.
type Map<K, V> = hashbrown::HashMap<K, V, SharedKey>;

/// One client's filters, as subscribed, each with where its subscription
/// sits: for an ordinary filter, its index in the node's
/// [`Node::subscribers`] (set right again whenever the entry moves); for a
/// shared one, nothing (0: its group is searched for the client). The
/// options live in the trie only. Most clients have one filter, kept inline
/// in the client's entry; more spill to the heap. Searched linearly (at
/// most [`TreeLimits::max_filters_per_client`]), and only on SUBSCRIBE and
/// UNSUBSCRIBE, never when a message is routed.
type Filters = SmallVec<[(CompactString, usize); 1]>;

/// A client's number in the tree: the slot of its [`Client`] in
/// [`Clients`]. The trie's entries hold it instead of the client id (4
/// bytes, not a pointer to a shared copy of the id); a number is given
/// again only once the client that had it has no subscription left.
type Slot = u32;

/// One subscription in the trie: the client's slot and the options, 12
/// bytes.
type Entry = (Slot, Stored);

/// A client with at least one subscription: its id (the tree's one copy)
/// and its filters. Ids and filters are `CompactString`s: up to 24 bytes
/// in the 24-byte value itself (an MQTT server must take ids of up to 23),
/// longer ones on the heap, so that a client with a short id and one short
/// filter makes no allocation of its own beyond its 64-byte slot.
#[derive(Debug)]
struct Client {
    id: CompactString,
    filters: Filters,
    /// Who its subscriptions are charged to, beside itself.
    owner: Option<Box<Owner>>,
}

impl Keyed for Client {
    type Key = str;

    fn key(&self) -> &str {
        &self.id
    }

    fn hash(client_id: &str) -> u64 {
        SharedKey.hash_one(client_id)
    }
}

/// The clients with subscriptions, each in a slot named by its [`Slot`]
/// and found by its id (the id stored once, in the slot; a slot is 48
/// bytes), as the codec's registry keeps its sessions.
type Clients = SlotTable<Client>;

/// The members of one shared subscription (a group name on one filter).
#[derive(Debug, Default)]
struct Group {
    members: Vec<Entry>,
    /// The member the next message goes to (modulo the count); a cell so
    /// that matching needs no exclusive access to the tree.
    next: Cell<usize>,
}

#[derive(Debug, Default)]
struct Node {
    children: Map<Box<str>, Node>,
    /// Ordinary subscriptions whose filter ends here, one per client, in no
    /// order: a list rather than a table (12 bytes an entry, no control
    /// bytes, no load factor), since each client's [`Filters`] entry knows
    /// its index; a removal swaps the last entry into the hole and fixes
    /// that entry's index.
    subscribers: Vec<Entry>,
    /// Shared subscriptions whose filter ends here, by group name.
    groups: Map<Box<str>, Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// A filter split into its share group (if any) and the filter proper.
fn split_share(filter: &str) -> Result<(Option<&str>, &str), SubscribeError> {
    match filter.strip_prefix(SHARE_PREFIX) {
        None => Ok((None, filter)),
        Some(rest) => match rest.split_once('/') {
            Some((group, filter)) if !group.is_empty() && !filter.is_empty() => {
                Ok((Some(group), filter))
            }
            _ => Err(SubscribeError::BadShare),
        },
    }
}

/// The subscription index. See the [module documentation](self).
#[derive(Debug, Default)]
pub struct Tree {
    root: Node,
    /// Each client's filters, as subscribed (shared ones with their prefix).
    clients: Clients,
    total: usize,
    /// The heap held, counted as it changes (see the
    /// [module documentation](self)).
    bytes: usize,
    /// What each source address holds (only those holding something).
    sources: Map<IpAddr, Usage>,
    /// What each user name holds (only those holding something).
    users: Map<CompactString, Usage>,
    limits: TreeLimits,
}

impl Tree {
    /// An empty tree with these bounds.
    pub fn new(limits: TreeLimits) -> Tree {
        Tree {
            limits,
            ..Tree::default()
        }
    }

    /// Subscriptions held, over all clients.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the tree holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The heap the tree holds, as it counts it: within a few percent of
    /// what it allocated (`server/tests/tree_alloc.rs` measures it).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The heap of the tables beside the trie: the clients' slots and the
    /// principals' counts.
    fn side_heap(&self) -> usize {
        self.clients
            .heap()
            .saturating_add(map_heap(&self.sources))
            .saturating_add(map_heap(&self.users))
    }

    /// The heap of the nodes on `path` that exist, with their names, and
    /// of the group `group` at its end if it exists.
    fn path_heap(&self, group: Option<&str>, path: &str) -> usize {
        let mut node = &self.root;
        let mut sum = node_heap(node);
        for level in path.split('/') {
            match node.children.get(level) {
                Some(child) => {
                    node = child;
                    sum = sum
                        .saturating_add(block(level.len()))
                        .saturating_add(node_heap(child));
                }
                None => return sum,
            }
        }
        if let Some(g) = group.and_then(|g| node.groups.get_key_value(g)) {
            sum = sum
                .saturating_add(block(g.0.len()))
                .saturating_add(vec_heap::<Entry>(g.1.members.capacity()));
        }
        sum
    }

    /// The most subscribing to `filter` can add beyond its [`charge`]: the
    /// growth of the one existing map a new level enters, and of the
    /// client table.
    fn growth(&self, group: Option<&str>, path: &str) -> usize {
        let mut node = &self.root;
        let mut grows = 0;
        for level in path.split('/') {
            match node.children.get(level) {
                Some(child) => node = child,
                None => {
                    grows = map_growth(&node.children);
                    break;
                }
            }
        }
        if grows == 0 {
            if let Some(g) = group {
                if !node.groups.contains_key(g) {
                    grows = map_growth(&node.groups);
                }
            }
        }
        grows
            .saturating_add(self.clients.growth())
            .saturating_add(map_growth(&self.sources))
            .saturating_add(map_growth(&self.users))
    }

    /// The heap of one client of its own: its id and its filters beyond
    /// what its slot holds (the filters themselves are counted as they
    /// come and go).
    fn client_heap(client: &Client) -> usize {
        let filters = if client.filters.spilled() {
            vec_heap::<(CompactString, usize)>(client.filters.capacity())
        } else {
            0
        };
        let owner = client.owner.as_ref().map_or(0, |o| {
            block(size_of::<Owner>())
                .saturating_add(compact_heap(o.user.as_ref().map_or(0, |u| u.len())))
        });
        compact_heap(client.id.len())
            .saturating_add(filters)
            .saturating_add(owner)
    }

    /// The heap of the client in slot `at`, if any.
    fn slot_heap(&self, at: Option<Slot>) -> usize {
        at.and_then(|at| self.clients.get(at))
            .map_or(0, Tree::client_heap)
    }

    /// Adds `after - before` to the count.
    fn account(&mut self, before: usize, after: usize) {
        self.bytes = self.bytes.saturating_add(after).saturating_sub(before);
    }

    /// Charges (`add`) or frees one subscription to `filter` against the
    /// owner's source address and user name.
    fn charge_owner(&mut self, owner: Option<&Owner>, filter: &str, add: bool) {
        let Some(owner) = owner else { return };
        let cost = charge(filter);
        let apply = |u: &mut Usage| {
            if add {
                u.subscriptions = u.subscriptions.saturating_add(1);
                u.bytes = u.bytes.saturating_add(cost);
            } else {
                u.subscriptions = u.subscriptions.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(cost);
            }
            u.subscriptions == 0
        };
        if let Some(source) = owner.source {
            let key = crate::passwords::source_key(source);
            if apply(self.sources.entry(key).or_default()) {
                self.sources.remove(&key);
            }
        }
        if let Some(user) = &owner.user {
            let gone = match self.users.get_mut(user.as_str()) {
                Some(u) => apply(u),
                None => {
                    let mut u = Usage::default();
                    apply(&mut u);
                    self.users.insert(user.clone(), u);
                    false
                }
            };
            if gone {
                self.users.remove(user.as_str());
            }
        }
    }

    /// Whether the owner's source address and user name have room for one
    /// more subscription to `filter`.
    fn owner_room(
        &self,
        source: Option<IpAddr>,
        user: Option<&str>,
        filter: &str,
    ) -> Result<(), SubscribeError> {
        let cost = charge(filter);
        let full = |u: Option<&Usage>, subs: usize, bytes: usize| {
            u.is_some_and(|u| u.subscriptions >= subs || u.bytes.saturating_add(cost) > bytes)
        };
        let limits = &self.limits;
        if let Some(source) = source {
            let u = self.sources.get(&crate::passwords::source_key(source));
            if full(
                u,
                limits.max_subscriptions_per_source,
                limits.max_bytes_per_source,
            ) || cost > limits.max_bytes_per_source
            {
                return Err(SubscribeError::SourceFull);
            }
        }
        if let Some(user) = user {
            if full(
                self.users.get(user),
                limits.max_subscriptions_per_user,
                limits.max_bytes_per_user,
            ) || cost > limits.max_bytes_per_user
            {
                return Err(SubscribeError::UserFull);
            }
        }
        Ok(())
    }

    /// The client's subscriptions, by filter as subscribed, in no
    /// particular order.
    pub fn subscriptions_of<'a>(
        &'a self,
        client_id: &str,
    ) -> Option<impl Iterator<Item = (&'a str, Subscription)> + 'a> {
        let at = self.clients.find(client_id)?;
        let client = self.clients.get(at)?;
        Some(client.filters.iter().filter_map(move |(filter, i)| {
            let sub = self.stored(at, filter, *i)?;
            Some((filter.as_str(), sub.get()))
        }))
    }

    /// The options of the subscription of the client in slot `client` to
    /// `filter` (as subscribed), kept at index `at` of its node if it is
    /// ordinary.
    fn stored(&self, client: Slot, filter: &str, at: usize) -> Option<Stored> {
        let (group, path) = split_share(filter).ok()?;
        let node = path
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))?;
        let entry = match group {
            None => node.subscribers.get(at).filter(|(c, _)| *c == client),
            Some(g) => node
                .groups
                .get(g)?
                .members
                .iter()
                .find(|(c, _)| *c == client),
        };
        entry.map(|(_, sub)| *sub)
    }

    /// Stores (or replaces, MQTT-3.8.4-3) the client's subscription to
    /// `filter`, charged to no principal but the client; `Ok(true)` when it
    /// replaced one (retain handling 1 needs to know).
    pub fn subscribe(
        &mut self,
        client_id: &str,
        filter: &str,
        sub: Subscription,
    ) -> Result<bool, SubscribeError> {
        self.subscribe_as(client_id, Principal::default(), filter, sub)
    }

    /// [`subscribe`](Self::subscribe), charged to `principal` as well when
    /// the client has no subscription yet (or to the principal it was
    /// first charged to).
    pub fn subscribe_as(
        &mut self,
        client_id: &str,
        principal: Principal<'_>,
        filter: &str,
        sub: Subscription,
    ) -> Result<bool, SubscribeError> {
        let (group, path) = split_share(filter)?;
        if path.split('/').nth(self.limits.max_levels).is_some() {
            return Err(SubscribeError::TooDeep);
        }
        let client = self.clients.find(client_id);
        let filters = client
            .and_then(|at| self.clients.get(at))
            .map(|c| &c.filters);
        let held = filters
            .and_then(|f| f.iter().find(|(k, _)| k == filter))
            .map(|(_, at)| *at);
        let existed = held.is_some();
        if !existed {
            let count = filters.map_or(0, SmallVec::len);
            if count >= self.limits.max_filters_per_client {
                return Err(SubscribeError::ClientFull);
            }
            let most = charge(filter).saturating_add(self.growth(group, path));
            let bytes = self.bytes.checked_add(most);
            if self.total >= self.limits.max_subscriptions
                || bytes.is_none_or(|b| b > self.limits.max_bytes)
            {
                return Err(SubscribeError::TreeFull);
            }
            // The principal it is charged to: the one it was first
            // charged to, if it holds subscriptions already.
            let owner = client
                .and_then(|at| self.clients.get(at))
                .and_then(|c| c.owner.as_deref());
            let (source, user) = match (client, owner) {
                (Some(_), Some(o)) => (o.source, o.user.as_deref()),
                (Some(_), None) => (None, None),
                (None, _) => (principal.source, principal.user),
            };
            self.owner_room(source, user, filter)?;
        }
        let before = self
            .path_heap(group, path)
            .saturating_add(self.side_heap())
            .saturating_add(self.slot_heap(client));
        let client = match client {
            Some(at) => at,
            // `Err` once the slot numbers are all taken (more than
            // `u32::MAX` clients, far past any `max_subscriptions`).
            None => {
                let owner = (principal.source.is_some() || principal.user.is_some()).then(|| {
                    Box::new(Owner {
                        source: principal.source,
                        user: principal.user.map(CompactString::new),
                    })
                });
                self.clients
                    .insert(Client {
                        id: CompactString::new(client_id),
                        filters: Filters::new(),
                        owner,
                    })
                    .map_err(|_| SubscribeError::TreeFull)?
            }
        };
        let sub = Stored::from(sub);
        let mut node = &mut self.root;
        for level in path.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        let mut at = 0;
        match group {
            None => match held {
                Some(held) => {
                    if let Some(entry) = node.subscribers.get_mut(held) {
                        debug_assert!(entry.0 == client);
                        entry.1 = sub;
                    }
                    at = held;
                }
                None => {
                    at = node.subscribers.len();
                    node.subscribers.push((client, sub));
                }
            },
            Some(g) => {
                let group = node.groups.entry(Box::from(g)).or_default();
                match group.members.iter_mut().find(|(c, _)| *c == client) {
                    Some(member) => member.1 = sub,
                    None => group.members.push((client, sub)),
                }
            }
        }
        if !existed {
            let mut owner = None;
            if let Some(c) = self.clients.get_mut(client) {
                c.filters.push((CompactString::new(filter), at));
                owner = c.owner.take();
            }
            self.total += 1;
            self.charge_owner(owner.as_deref(), filter, true);
            if let Some(c) = self.clients.get_mut(client) {
                c.owner = owner;
            }
            self.bytes = self.bytes.saturating_add(compact_heap(filter.len()));
        }
        let after = self
            .path_heap(group, path)
            .saturating_add(self.side_heap())
            .saturating_add(self.slot_heap(Some(client)));
        self.account(before, after);
        Ok(existed)
    }

    /// Removes the client's subscription to `filter` (as subscribed);
    /// whether it had one.
    pub fn unsubscribe(&mut self, client_id: &str, filter: &str) -> bool {
        let Some(client) = self.clients.find(client_id) else {
            return false;
        };
        let Some(filters) = self.clients.get_mut(client).map(|c| &mut c.filters) else {
            return false;
        };
        let Some(i) = filters.iter().position(|(k, _)| k == filter) else {
            return false;
        };
        let before = self
            .side_heap()
            .saturating_add(self.slot_heap(Some(client)));
        let Some(c) = self.clients.get_mut(client) else {
            return false;
        };
        let filters = &mut c.filters;
        let (_, at) = filters.swap_remove(i);
        let owner = if filters.is_empty() {
            self.clients.remove(client).and_then(|c| c.owner)
        } else {
            if filters.len().saturating_mul(4) < filters.capacity() {
                // A client that had many and now has few gives the room back.
                filters.shrink_to_fit();
            }
            c.owner.take()
        };
        self.total -= 1;
        self.charge_owner(owner.as_deref(), filter, false);
        let kept = self.clients.get_mut(client);
        match kept {
            Some(c) => c.owner = owner,
            None => drop(owner),
        }
        let after = self
            .side_heap()
            .saturating_add(self.slot_heap(self.clients.get(client).map(|_| client)));
        self.account(before, after);
        self.bytes = self.bytes.saturating_sub(compact_heap(filter.len()));
        self.take_off(client, filter, at);
        true
    }

    /// Takes the subscription of the client in slot `client` to `filter`
    /// (as subscribed, at index `at` if ordinary) off the trie, and sets
    /// right the index of the entry that moved into its place.
    fn take_off(&mut self, client: Slot, filter: &str, at: usize) {
        let Ok((group, path)) = split_share(filter) else {
            return;
        };
        let before = self.path_heap(group, path);
        let levels: Vec<&str> = path.split('/').collect();
        let mut moved = None;
        let place = Place { client, group, at };
        remove(&mut self.root, &levels, &place, &mut moved);
        let after = self.path_heap(group, path);
        self.account(before, after);
        // The moved entry is another client's subscription to this same
        // (ordinary) filter.
        if let Some(other) = moved {
            let entry = self
                .clients
                .get_mut(other)
                .and_then(|c| c.filters.iter_mut().find(|(k, _)| k == filter));
            if let Some(entry) = entry {
                entry.1 = at;
            }
        }
    }

    /// Removes every subscription of the client (its session ended);
    /// how many it had.
    pub fn remove_client(&mut self, client_id: &str) -> usize {
        let Some(client) = self.clients.find(client_id) else {
            return 0;
        };
        // Its slot is given again only after this call: the entries taken
        // off below are still its own.
        let before = self
            .side_heap()
            .saturating_add(self.slot_heap(Some(client)));
        let Some(Client { filters, owner, .. }) = self.clients.remove(client) else {
            return 0;
        };
        for (filter, at) in &filters {
            self.charge_owner(owner.as_deref(), filter, false);
            self.bytes = self.bytes.saturating_sub(compact_heap(filter.len()));
            self.take_off(client, filter, *at);
        }
        drop(owner);
        let after = self.side_heap();
        self.account(before, after);
        self.total -= filters.len();
        filters.len()
    }

    /// The deliveries a message published by `publisher` on `topic` gets:
    /// one per client for its ordinary subscriptions, one per shared
    /// subscription group (which moves the group on to its next member).
    /// In no particular order.
    pub fn matches(&self, topic: &str, publisher: &str) -> Vec<Match<'_>> {
        self.matches_preferring(topic, publisher, |_| true)
    }

    /// [`matches`](Self::matches), where a shared group's turn skips the
    /// members `available` says no to (a session without connection), unless
    /// none is available: then the next member gets it all the same.
    pub fn matches_preferring(
        &self,
        topic: &str,
        publisher: &str,
        available: impl Fn(&str) -> bool,
    ) -> Vec<Match<'_>> {
        let levels: Vec<&str> = topic.split('/').collect();
        let clients = &self.clients;
        let mut walk = Walk {
            ends: Vec::new(),
            shared: Vec::new(),
            clients,
            available: &available,
        };
        let dollar = levels.first().is_some_and(|l| l.starts_with('$'));
        walk.node(&self.root, &levels, dollar);
        let publisher = clients.find(publisher);
        let keep = |(client, sub): &&Entry| !(sub.get().no_local && Some(*client) == publisher);
        let mut out: Vec<Match<'_>> = match walk.ends.as_slice() {
            // One filter node matched (the usual case): no client can
            // appear twice.
            [only] => only
                .iter()
                .filter(keep)
                .filter_map(|&(client, sub)| Match::of(clients, client, sub, false))
                .collect(),
            ends => {
                let total = ends.iter().map(|m| m.len()).sum();
                let mut merged: HashMap<Slot, Match<'_>> = HashMap::with_capacity(total);
                for &(client, sub) in ends.iter().flat_map(|m| m.iter()).filter(keep) {
                    match merged.entry(client) {
                        hash_map::Entry::Occupied(mut e) => {
                            let m = e.get_mut();
                            let sub = sub.get();
                            m.qos = m.qos.max(sub.qos);
                            m.retain_as_published |= sub.retain_as_published;
                            m.subscription_ids.extend(sub.id);
                        }
                        hash_map::Entry::Vacant(e) => {
                            if let Some(m) = Match::of(clients, client, sub, false) {
                                e.insert(m);
                            }
                        }
                    }
                }
                merged.into_values().collect()
            }
        };
        out.extend(walk.shared);
        out
    }
}

impl<'t> Match<'t> {
    /// The delivery of the subscription `sub` of the client in slot
    /// `client`.
    fn of(clients: &'t Clients, client: Slot, sub: Stored, shared: bool) -> Option<Match<'t>> {
        let sub = sub.get();
        Some(Match {
            client_id: clients.get(client)?.id.as_str(),
            qos: sub.qos,
            retain_as_published: sub.retain_as_published,
            subscription_ids: sub.id.into_iter().collect(),
            shared,
        })
    }
}

/// Where a subscription sits at the end of its filter's levels.
struct Place<'a> {
    client: Slot,
    /// The share group, for a shared subscription.
    group: Option<&'a str>,
    /// The index in [`Node::subscribers`], for an ordinary one.
    at: usize,
}

/// Takes the subscription at `place` off the node at `levels` and prunes
/// the nodes it leaves empty; whether `node` is empty afterwards. `moved`
/// gets the client whose ordinary entry moved into the freed index.
fn remove(node: &mut Node, levels: &[&str], place: &Place<'_>, moved: &mut Option<Slot>) -> bool {
    let Place { client, group, at } = *place;
    match levels.split_first() {
        None => match group {
            None => {
                let subscribers = &mut node.subscribers;
                if subscribers.get(at).is_some_and(|(c, _)| *c == client) {
                    subscribers.swap_remove(at);
                    *moved = subscribers.get(at).map(|(c, _)| *c);
                    if subscribers.len().saturating_mul(4) < subscribers.capacity() {
                        // Many left: the room goes back.
                        subscribers.shrink_to_fit();
                    }
                }
            }
            Some(g) => {
                if let hashbrown::hash_map::Entry::Occupied(mut e) = node.groups.entry(Box::from(g))
                {
                    let members = &mut e.get_mut().members;
                    members.retain(|(c, _)| *c != client);
                    if members.is_empty() {
                        e.remove();
                    }
                }
            }
        },
        Some((level, rest)) => {
            if let Some(child) = node.children.get_mut(*level) {
                if remove(child, rest, place, moved) {
                    node.children.remove(*level);
                }
            }
        }
    }
    node.is_empty()
}

/// One match in progress: the ordinary subscribers of every filter node
/// that matches, and the shared groups' picks.
struct Walk<'t, 'a> {
    ends: Vec<&'t [Entry]>,
    shared: Vec<Match<'t>>,
    clients: &'t Clients,
    available: &'a dyn Fn(&str) -> bool,
}

impl<'t> Walk<'t, '_> {
    /// Matches what is left of the topic (`levels`) from `node`; `dollar`:
    /// this is the first level of a `$` topic, which wildcards skip.
    fn node(&mut self, node: &'t Node, levels: &[&str], dollar: bool) {
        let Some((level, rest)) = levels.split_first() else {
            self.collect(node);
            // `a/#` matches `a`.
            if let Some(hash) = node.children.get("#") {
                self.collect(hash);
            }
            return;
        };
        // A topic name holds no wildcard (the codec refuses one); were it
        // to, its `+` or `#` level would match only as a wildcard, once.
        if !matches!(*level, "+" | "#") {
            if let Some(child) = node.children.get(*level) {
                self.node(child, rest, false);
            }
        }
        if dollar {
            return;
        }
        if let Some(child) = node.children.get("+") {
            self.node(child, rest, false);
        }
        if let Some(child) = node.children.get("#") {
            self.collect(child);
        }
    }

    /// Every subscription ending at `node` matches; each shared group
    /// gives its next member.
    fn collect(&mut self, node: &'t Node) {
        if !node.subscribers.is_empty() {
            self.ends.push(&node.subscribers);
        }
        let clients = self.clients;
        for group in node.groups.values() {
            let count = group.members.len();
            if count == 0 {
                continue;
            }
            let start = group.next.get() % count;
            let available = |i: usize| {
                let client = group
                    .members
                    .get(i)
                    .and_then(|(c, _)| clients.get(*c))
                    .map(|c| c.id.as_str());
                client.is_some_and(|id| (self.available)(id))
            };
            let pick = (0..count)
                .map(|i| (start + i) % count)
                .find(|&i| available(i))
                .unwrap_or(start);
            group.next.set((pick + 1) % count);
            let (client, sub) = group.members[pick];
            self.shared.extend(Match::of(clients, client, sub, true));
        }
    }
}

/// Whether `filter` (not shared) matches `topic`: level by level, the
/// reference the trie is checked against.
#[cfg(test)]
fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn sub(qos: QoS) -> Subscription {
        Subscription::at(qos)
    }

    fn with_id(qos: QoS, id: u32) -> Subscription {
        Subscription {
            id: Some(id),
            ..sub(qos)
        }
    }

    /// The matches, sorted by client id, as (client, qos, ids).
    fn hits(tree: &mut Tree, topic: &str, publisher: &str) -> Vec<(String, u8, Vec<u32>)> {
        let mut out: Vec<(String, u8, Vec<u32>)> = tree
            .matches(topic, publisher)
            .into_iter()
            .map(|mut m| {
                m.subscription_ids.sort_unstable();
                (m.client_id.to_string(), m.qos as u8, m.subscription_ids)
            })
            .collect();
        out.sort();
        out
    }

    fn clients(tree: &mut Tree, topic: &str) -> Vec<String> {
        clients_from(tree, topic, "publisher")
    }

    #[test]
    fn mqtt_4_7_1_wildcards_plus_one_level_hash_the_rest_and_the_parent() {
        let mut tree = Tree::default();
        tree.subscribe("plus", "sport/+/player1", sub(QoS::AtMostOnce))
            .unwrap();
        tree.subscribe("hash", "sport/#", sub(QoS::AtMostOnce))
            .unwrap();
        tree.subscribe("exact", "sport/tennis", sub(QoS::AtMostOnce))
            .unwrap();
        tree.subscribe("all", "#", sub(QoS::AtMostOnce)).unwrap();
        tree.subscribe("empty", "+/+", sub(QoS::AtMostOnce))
            .unwrap();
        assert_eq!(
            clients(&mut tree, "sport/tennis/player1"),
            ["all", "hash", "plus"]
        );
        // `sport/#` matches `sport` itself; `+/+` matches `/finance`.
        assert_eq!(clients(&mut tree, "sport"), ["all", "hash"]);
        assert_eq!(
            clients(&mut tree, "sport/tennis"),
            ["all", "empty", "exact", "hash"]
        );
        assert_eq!(clients(&mut tree, "/finance"), ["all", "empty"]);
        assert_eq!(
            clients(&mut tree, "sport/tennis/player1/x"),
            ["all", "hash"]
        );
        assert!(clients(&mut tree, "Sport").contains(&"all".to_owned()));
        assert_eq!(clients(&mut tree, "Sport"), ["all"], "case matters");
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_not_matched_by_a_leading_wildcard() {
        let mut tree = Tree::default();
        tree.subscribe("hash", "#", sub(QoS::AtMostOnce)).unwrap();
        tree.subscribe("plus", "+/monitor/Clients", sub(QoS::AtMostOnce))
            .unwrap();
        tree.subscribe("sys", "$SYS/#", sub(QoS::AtMostOnce))
            .unwrap();
        tree.subscribe("sysplus", "$SYS/monitor/+", sub(QoS::AtMostOnce))
            .unwrap();
        assert_eq!(
            clients(&mut tree, "$SYS/monitor/Clients"),
            ["sys", "sysplus"]
        );
        // A `$` further down is an ordinary character.
        assert_eq!(clients(&mut tree, "a/monitor/Clients"), ["hash", "plus"]);
        assert_eq!(clients(&mut tree, "a/$x"), ["hash"]);
    }

    #[test]
    fn mqtt_3_3_4_2_overlapping_subscriptions_one_delivery_at_the_highest_qos_with_every_id() {
        let mut tree = Tree::default();
        tree.subscribe("c", "a/+", with_id(QoS::AtMostOnce, 1))
            .unwrap();
        tree.subscribe("c", "a/#", with_id(QoS::ExactlyOnce, 2))
            .unwrap();
        tree.subscribe("c", "a/b", sub(QoS::AtLeastOnce)).unwrap();
        assert_eq!(
            hits(&mut tree, "a/b", "p"),
            [("c".to_owned(), 2, vec![1, 2])]
        );
        assert_eq!(
            hits(&mut tree, "a/b/c", "p"),
            [("c".to_owned(), 2, vec![2])]
        );
    }

    #[test]
    fn mqtt_3_8_4_3_an_identical_filter_replaces_the_subscription() {
        let mut tree = Tree::default();
        assert_eq!(
            tree.subscribe("c", "a", with_id(QoS::ExactlyOnce, 7)),
            Ok(false)
        );
        assert_eq!(tree.subscribe("c", "a", sub(QoS::AtMostOnce)), Ok(true));
        assert_eq!(tree.len(), 1);
        assert_eq!(hits(&mut tree, "a", "p"), [("c".to_owned(), 0, vec![])]);
    }

    #[test]
    fn mqtt_3_8_3_3_no_local_skips_the_publishing_client_only() {
        let mut tree = Tree::default();
        let no_local = Subscription {
            no_local: true,
            ..sub(QoS::AtLeastOnce)
        };
        tree.subscribe("me", "t", no_local).unwrap();
        tree.subscribe("other", "t", no_local).unwrap();
        assert_eq!(clients_from(&mut tree, "t", "me"), ["other"]);
        assert_eq!(clients_from(&mut tree, "t", "x"), ["me", "other"]);
        // Another subscription of `me` without no-local still matches.
        tree.subscribe("me", "#", sub(QoS::AtMostOnce)).unwrap();
        assert_eq!(hits(&mut tree, "t", "me")[0], ("me".to_owned(), 0, vec![]));
    }

    fn clients_from(tree: &mut Tree, topic: &str, publisher: &str) -> Vec<String> {
        hits(tree, topic, publisher)
            .into_iter()
            .map(|h| h.0)
            .collect()
    }

    #[test]
    fn mqtt_3_3_1_12_retain_as_published_if_any_matching_subscription_asks() {
        let mut tree = Tree::default();
        let rap = Subscription {
            retain_as_published: true,
            ..sub(QoS::AtMostOnce)
        };
        tree.subscribe("c", "a/+", rap).unwrap();
        tree.subscribe("c", "a/b", sub(QoS::AtMostOnce)).unwrap();
        tree.subscribe("d", "a/b", sub(QoS::AtMostOnce)).unwrap();
        let mut m = tree.matches("a/b", "p");
        m.sort_by(|a, b| a.client_id.cmp(b.client_id));
        assert!(m[0].retain_as_published);
        assert!(!m[1].retain_as_published);
    }

    #[test]
    fn mqtt_4_8_2_shared_subscription_one_member_per_message_in_turn() {
        let mut tree = Tree::default();
        for c in ["a", "b", "c"] {
            tree.subscribe(c, "$share/g/job/+", sub(QoS::AtLeastOnce))
                .unwrap();
        }
        // Another group on the same filter gets its own copy.
        tree.subscribe("z", "$share/h/job/+", sub(QoS::AtMostOnce))
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..6 {
            let m = tree.matches("job/1", "p");
            assert_eq!(m.len(), 2);
            assert!(m.iter().all(|m| m.shared));
            got.extend(
                m.into_iter()
                    .map(|m| m.client_id.to_string())
                    .filter(|c| c != "z"),
            );
        }
        let mut counts = HashMap::new();
        for c in &got {
            *counts.entry(c.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{got:?}");
        assert!(counts.values().all(|&n| n == 2), "{got:?}");
        // The shared filter does not match by its literal text.
        assert!(tree.matches("$share/g/job/1", "p").is_empty());
    }

    #[test]
    fn mqtt_4_8_2_shared_copy_comes_on_top_of_an_ordinary_subscription() {
        let mut tree = Tree::default();
        tree.subscribe("a", "$share/g/t", sub(QoS::AtLeastOnce))
            .unwrap();
        tree.subscribe("a", "t", sub(QoS::AtMostOnce)).unwrap();
        let m = tree.matches("t", "p");
        assert_eq!(m.len(), 2);
        assert_eq!(m.iter().filter(|m| m.shared).count(), 1);
    }

    #[test]
    fn mqtt_4_8_2_shared_turn_skips_members_without_connection() {
        let mut tree = Tree::default();
        for c in ["a", "b", "c"] {
            tree.subscribe(c, "$share/g/t", sub(QoS::AtLeastOnce))
                .unwrap();
        }
        let online = |c: &str| c != "b";
        let picks: Vec<String> = (0..4)
            .map(|_| {
                tree.matches_preferring("t", "p", online)[0]
                    .client_id
                    .to_string()
            })
            .collect();
        assert_eq!(picks, ["a", "c", "a", "c"]);
        // Nobody connected: the turn goes on regardless.
        let picks: Vec<String> = (0..3)
            .map(|_| {
                tree.matches_preferring("t", "p", |_| false)[0]
                    .client_id
                    .to_string()
            })
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "{picks:?}");
    }

    #[test]
    fn shared_group_member_leaves_and_the_rest_keep_getting_messages() {
        let mut tree = Tree::default();
        tree.subscribe("a", "$share/g/t", sub(QoS::AtMostOnce))
            .unwrap();
        tree.subscribe("b", "$share/g/t", sub(QoS::AtMostOnce))
            .unwrap();
        assert!(tree.unsubscribe("a", "$share/g/t"));
        for _ in 0..3 {
            assert_eq!(clients(&mut tree, "t"), ["b"]);
        }
        assert_eq!(tree.remove_client("b"), 1);
        assert!(tree.matches("t", "p").is_empty());
        assert!(tree.root.is_empty(), "pruned: {:?}", tree.root);
        assert_eq!(
            tree.subscribe("a", "$share//t", sub(QoS::AtMostOnce)),
            Err(SubscribeError::BadShare)
        );
        assert_eq!(
            tree.subscribe("a", "$share/g", sub(QoS::AtMostOnce)),
            Err(SubscribeError::BadShare)
        );
    }

    #[test]
    fn unsubscribe_removes_one_filter_and_prunes_empty_levels() {
        let mut tree = Tree::default();
        tree.subscribe("c", "a/b/c", sub(QoS::AtMostOnce)).unwrap();
        tree.subscribe("c", "a/#", sub(QoS::AtMostOnce)).unwrap();
        tree.subscribe("d", "a/b/c", sub(QoS::AtMostOnce)).unwrap();
        assert!(tree.unsubscribe("c", "a/b/c"));
        assert!(!tree.unsubscribe("c", "a/b/c"), "gone already");
        assert!(!tree.unsubscribe("nobody", "a/b/c"));
        assert_eq!(clients(&mut tree, "a/b/c"), ["c", "d"]);
        assert_eq!(tree.remove_client("c"), 1);
        assert_eq!(tree.remove_client("d"), 1);
        assert_eq!(tree.len(), 0);
        assert!(tree.root.is_empty(), "pruned: {:?}", tree.root);
        assert!(tree.subscriptions_of("c").is_none());
    }

    #[test]
    fn filter_depth_is_bounded_so_walks_through_the_trie_are() {
        let mut tree = Tree::default();
        let deep = "a/".repeat(DEFAULT_MAX_LEVELS - 1) + "a";
        tree.subscribe("c", &deep, sub(QoS::AtMostOnce)).unwrap();
        let deeper = format!("{deep}/a");
        assert_eq!(
            tree.subscribe("c", &deeper, sub(QoS::AtMostOnce)),
            Err(SubscribeError::TooDeep)
        );
        assert_eq!(
            tree.subscribe("c", &format!("$share/g/{deeper}"), sub(QoS::AtMostOnce)),
            Err(SubscribeError::TooDeep)
        );
        // The longest topic a PUBLISH may carry walks no deeper than the
        // trie.
        let huge = "/".repeat(65_535);
        assert!(tree.matches(&huge, "p").is_empty());
        assert_eq!(clients(&mut tree, &deep), ["c"]);
        assert_eq!(tree.remove_client("c"), 1);
    }

    #[test]
    fn subscriptions_bounded_per_client_and_in_total() {
        let mut tree = Tree::new(TreeLimits {
            max_filters_per_client: 2,
            max_subscriptions: 3,
            ..TreeLimits::default()
        });
        tree.subscribe("a", "1", sub(QoS::AtMostOnce)).unwrap();
        tree.subscribe("a", "2", sub(QoS::AtMostOnce)).unwrap();
        assert_eq!(
            tree.subscribe("a", "3", sub(QoS::AtMostOnce)),
            Err(SubscribeError::ClientFull)
        );
        // Replacing an existing one is not a new one.
        assert_eq!(tree.subscribe("a", "2", sub(QoS::AtLeastOnce)), Ok(true));
        tree.subscribe("b", "1", sub(QoS::AtMostOnce)).unwrap();
        assert_eq!(
            tree.subscribe("c", "1", sub(QoS::AtMostOnce)),
            Err(SubscribeError::TreeFull)
        );
        assert_eq!(tree.len(), 3);
        assert_eq!(clients(&mut tree, "3"), Vec::<String>::new());
        // And in memory: clients come until the next could pass the
        // bound, which the heap never does; one going makes room again.
        let long = "x/".repeat(60) + "x";
        let max = 64 * 1024;
        let mut tree = Tree::new(
            TreeLimits {
                max_bytes: max,
                ..TreeLimits::default()
            }
            .with_shares(0, 0),
        );
        let mut taken = 0;
        while tree
            .subscribe(
                &format!("c{taken}"),
                &format!("{taken}/{long}"),
                sub(QoS::AtMostOnce),
            )
            .is_ok()
        {
            taken += 1;
            assert!(tree.bytes() <= max, "{} past {max}", tree.bytes());
        }
        assert!(taken >= 1, "one fits");
        assert_eq!(
            tree.subscribe("late", &format!("late/{long}"), sub(QoS::AtMostOnce)),
            Err(SubscribeError::TreeFull)
        );
        assert!(tree.unsubscribe("c0", &format!("0/{long}")));
        tree.subscribe("late", &format!("late/{long}"), sub(QoS::AtMostOnce))
            .unwrap();
        assert!(tree.bytes() <= max);
        assert_eq!(tree.bytes, recount(&tree));
    }

    /// The tree's heap counted afresh, node by node.
    fn recount(tree: &Tree) -> usize {
        fn under(node: &Node) -> usize {
            let groups: usize = node
                .groups
                .iter()
                .map(|(g, group)| block(g.len()) + vec_heap::<Entry>(group.members.capacity()))
                .sum();
            let children: usize = node
                .children
                .iter()
                .map(|(level, child)| block(level.len()) + under(child))
                .sum();
            node_heap(node) + groups + children
        }
        let clients: usize = tree
            .clients
            .iter()
            .map(|(_, c)| {
                let filters: usize = c.filters.iter().map(|(f, _)| compact_heap(f.len())).sum();
                Tree::client_heap(c) + filters
            })
            .sum();
        under(&tree.root) + tree.side_heap() + clients
    }

    #[test]
    fn quota_per_source_address_refuses_one_address_and_serves_another() {
        // The attack of issue 18: many sessions from one address, each
        // with many filters, fill the server-wide charge; now they fill
        // their address's share, and another address is still served.
        let limits = TreeLimits {
            max_subscriptions: 100,
            ..TreeLimits::default()
        }
        .with_shares(25, 0);
        let mut tree = Tree::new(limits);
        let attacker = Principal {
            source: Some(IpAddr::from([127, 1, 0, 1])),
            user: None,
        };
        let mut refused = None;
        for i in 0..100 {
            let client = format!("a{}", i / 10);
            match tree.subscribe_as(&client, attacker, &format!("t/{i}"), sub(QoS::AtMostOnce)) {
                Ok(_) => {}
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        assert_eq!(refused, Some((25, SubscribeError::SourceFull)));
        // The same /64 or the same IPv4 address, whatever the client id.
        let again = tree.subscribe_as("fresh", attacker, "t/x", sub(QoS::AtMostOnce));
        assert_eq!(again, Err(SubscribeError::SourceFull));
        let other = Principal {
            source: Some(IpAddr::from([127, 1, 0, 2])),
            user: None,
        };
        tree.subscribe_as("b", other, "t/x", sub(QoS::AtMostOnce))
            .unwrap();
        // Its sessions ending give the share back.
        assert_eq!(tree.remove_client("a0"), 10);
        tree.subscribe_as("fresh", attacker, "t/x", sub(QoS::AtMostOnce))
            .unwrap();
        assert_eq!(tree.bytes, recount(&tree));
    }

    #[test]
    fn quota_per_user_name_holds_across_addresses() {
        let limits = TreeLimits {
            max_subscriptions: 100,
            ..TreeLimits::default()
        }
        .with_shares(0, 10);
        let mut tree = Tree::new(limits);
        for i in 0..10u8 {
            let p = Principal {
                source: Some(IpAddr::from([10, 0, 0, i])),
                user: Some("mallory"),
            };
            tree.subscribe_as(&format!("m{i}"), p, "t", sub(QoS::AtMostOnce))
                .unwrap();
        }
        let p = Principal {
            source: Some(IpAddr::from([10, 0, 1, 0])),
            user: Some("mallory"),
        };
        assert_eq!(
            tree.subscribe_as("m10", p, "t", sub(QoS::AtMostOnce)),
            Err(SubscribeError::UserFull)
        );
        let alice = Principal {
            user: Some("alice"),
            ..p
        };
        tree.subscribe_as("al", alice, "t", sub(QoS::AtMostOnce))
            .unwrap();
        // A client keeps the principal it was first charged to.
        assert_eq!(
            tree.subscribe_as("m0", alice, "u", sub(QoS::AtMostOnce)),
            Err(SubscribeError::UserFull)
        );
        assert!(tree.unsubscribe("m0", "t"));
        tree.subscribe_as("m10", p, "t", sub(QoS::AtMostOnce))
            .unwrap();
    }

    #[test]
    fn quota_per_source_counts_bytes_too() {
        // Deep filters exhaust an address's share of the bytes before its
        // share of the count.
        let deep = "l/".repeat(100) + "l";
        let limits = TreeLimits {
            max_subscriptions: 1_000,
            max_bytes: 100 * charge(&deep),
            ..TreeLimits::default()
        }
        .with_shares(250, 0);
        assert_eq!(limits.max_bytes_per_source, 25 * charge(&deep));
        let mut tree = Tree::new(limits);
        let p = Principal {
            source: Some(IpAddr::from([127, 0, 0, 9])),
            user: None,
        };
        let mut n = 0;
        while tree
            .subscribe_as(
                &format!("c{n}"),
                p,
                &format!("{n}/{deep}"),
                sub(QoS::AtMostOnce),
            )
            .is_ok()
        {
            n += 1;
        }
        assert!((20..=25).contains(&n), "{n}");
    }

    #[test]
    fn long_ids_and_filters_kept_beyond_the_inline_room() {
        let mut tree = Tree::default();
        let id = "a-client-id-well-past-twenty-four-bytes";
        let filter = "sensors/a-level-well-past-twenty-four-bytes/+";
        tree.subscribe(id, filter, sub(QoS::AtLeastOnce)).unwrap();
        tree.subscribe("short", filter, sub(QoS::AtMostOnce))
            .unwrap();
        let topic = "sensors/a-level-well-past-twenty-four-bytes/t";
        assert_eq!(clients(&mut tree, topic), [id, "short"]);
        assert!(check_clients(&tree).is_ok());
        assert!(tree.unsubscribe(id, filter));
        assert_eq!(clients(&mut tree, topic), ["short"]);
        assert_eq!(tree.remove_client("short"), 1);
        assert!(tree.root.is_empty());
    }

    #[test]
    fn a_subscription_is_kept_whole_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Stored>(), 8);
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        // Its id, its filters and the box of its principal.
        assert_eq!(std::mem::size_of::<Client>(), 72);
        assert_eq!(std::mem::size_of::<(CompactString, usize)>(), 32);
        assert_eq!(std::mem::size_of::<Filters>(), 40);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for id in [None, Some(0), Some(1), Some(268_435_455), Some(u32::MAX)] {
                for (no_local, retain_as_published) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let s = Subscription {
                        qos,
                        no_local,
                        retain_as_published,
                        id,
                    };
                    assert_eq!(Stored::from(s).get(), s);
                }
            }
        }
    }

    /// Entries in the trie under `node`: ordinary ones and group members.
    fn entries(node: &Node) -> usize {
        let groups: usize = node.groups.values().map(|g| g.members.len()).sum();
        let below: usize = node.children.values().map(entries).sum();
        node.subscribers.len() + groups + below
    }

    /// What the client table promises: every client in a slot has a
    /// filter and is found by its id; each of its filters names an entry
    /// of the trie holding its slot; the trie holds no other entry.
    fn check_clients(tree: &Tree) -> Result<(), String> {
        let clients = &tree.clients;
        if clients.indexed() != clients.len() {
            return Err(format!(
                "{} indexed, {} held",
                clients.indexed(),
                clients.len()
            ));
        }
        let mut filters = 0;
        for (at, client) in clients.iter() {
            if clients.find(&client.id) != Some(at) {
                return Err(format!("{} not found in its slot {at}", client.id));
            }
            if client.filters.is_empty() {
                return Err(format!("{} kept with no filter", client.id));
            }
            for (filter, i) in &client.filters {
                if tree.stored(at, filter, *i).is_none() {
                    return Err(format!("{}: {filter} at {i} is not its entry", client.id));
                }
            }
            filters += client.filters.len();
        }
        if filters != tree.total || entries(&tree.root) != tree.total {
            let trie = entries(&tree.root);
            return Err(format!(
                "{filters} filters, {trie} entries, {} counted",
                tree.total
            ));
        }
        Ok(())
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(String::new()),
            Just("$s".to_owned()),
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("a filter has a level", |(mut levels, hash)| {
                if hash {
                    levels.push("#".to_owned());
                }
                (!levels.is_empty()).then(|| levels.join("/"))
            })
    }

    /// What a client does to the tree in the model check below.
    #[derive(Clone, Debug)]
    enum Step {
        Subscribe(u8, String, u8),
        Unsubscribe(u8, String),
        Leave(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..4, filter(), 0u8..3).prop_map(|(c, f, q)| Step::Subscribe(c, f, q)),
            2 => (0u8..4, filter()).prop_map(|(c, f)| Step::Unsubscribe(c, f)),
            1 => (0u8..4).prop_map(Step::Leave),
        ]
    }

    proptest! {
        /// Subscribing, unsubscribing and leaving in any order: the entries
        /// that move in a node's list keep their client's index right, a
        /// client's slot holds it until its last filter goes and is given
        /// again after, so the trie gives what a plain list of
        /// subscriptions gives.
        #[test]
        fn trie_keeps_agreeing_as_subscribers_come_and_go(
            steps in prop::collection::vec(step(), 0..40),
            topics in prop::collection::vec(topic(), 1..4),
        ) {
            let mut tree = Tree::default();
            let mut model: BTreeMap<(String, String), (u8, u32)> = BTreeMap::new();
            for (i, s) in steps.iter().enumerate() {
                let id = u32::try_from(i).unwrap() + 1;
                match s {
                    Step::Subscribe(c, f, q) => {
                        let client = format!("c{c}");
                        let qos = QoS::from_u8(*q).unwrap();
                        let replaced = tree.subscribe(&client, f, with_id(qos, id)).unwrap();
                        let old = model.insert((client, f.clone()), (*q, id));
                        prop_assert_eq!(replaced, old.is_some());
                    }
                    Step::Unsubscribe(c, f) => {
                        let client = format!("c{c}");
                        let held = model.remove(&(client.clone(), f.clone())).is_some();
                        prop_assert_eq!(tree.unsubscribe(&client, f), held);
                    }
                    Step::Leave(c) => {
                        let client = format!("c{c}");
                        let before = model.len();
                        model.retain(|(k, _), _| *k != client);
                        prop_assert_eq!(tree.remove_client(&client), before - model.len());
                    }
                }
                prop_assert_eq!(tree.len(), model.len());
                prop_assert_eq!(tree.bytes, recount(&tree));
                let check = check_clients(&tree);
                prop_assert!(check.is_ok(), "after {:?}: {:?}", s, check);
                // The clients in slots are the model's clients.
                let mut held: Vec<&str> = tree.clients.iter().map(|(_, c)| c.id.as_str()).collect();
                held.sort_unstable();
                let mut want: Vec<&str> = model.keys().map(|(c, _)| c.as_str()).collect();
                want.dedup();
                prop_assert_eq!(held, want);
            }
            for c in 0..4 {
                let client = format!("c{c}");
                let mut held: Vec<(String, u8, u32)> = tree
                    .subscriptions_of(&client)
                    .into_iter()
                    .flatten()
                    .map(|(f, s)| (f.to_owned(), s.qos as u8, s.id.unwrap()))
                    .collect();
                held.sort();
                let want: Vec<(String, u8, u32)> = model
                    .iter()
                    .filter(|((k, _), _)| *k == client)
                    .map(|((_, f), (q, id))| (f.clone(), *q, *id))
                    .collect();
                prop_assert_eq!(held, want);
            }
            for t in &topics {
                let mut expected: BTreeMap<String, (u8, Vec<u32>)> = BTreeMap::new();
                for ((client, f), (q, id)) in &model {
                    if filter_matches(f, t) {
                        let e = expected.entry(client.clone()).or_insert((0, Vec::new()));
                        e.0 = e.0.max(*q);
                        e.1.push(*id);
                    }
                }
                let expected: Vec<(String, u8, Vec<u32>)> = expected
                    .into_iter()
                    .map(|(c, (q, mut ids))| {
                        ids.sort_unstable();
                        (c, q, ids)
                    })
                    .collect();
                prop_assert_eq!(hits(&mut tree, t, "p"), expected, "topic {}", t);
            }
            for c in 0..4 {
                tree.remove_client(&format!("c{c}"));
            }
            prop_assert!(tree.root.is_empty());
            prop_assert_eq!(tree.bytes, recount(&tree));
        }

        #[test]
        fn trie_agrees_with_the_level_by_level_matcher(
            filters in prop::collection::vec((filter(), 0u8..3), 0..12),
            topics in prop::collection::vec(topic(), 1..6),
        ) {
            let mut tree = Tree::default();
            for (i, (f, q)) in filters.iter().enumerate() {
                let client = format!("c{}", i % 4);
                let qos = QoS::from_u8(*q).unwrap();
                let id = u32::try_from(i).unwrap() + 1;
                tree.subscribe(&client, f, with_id(qos, id)).unwrap();
            }
            for t in &topics {
                // Naive: every client's current subscriptions, one by one.
                let mut expected: Vec<(String, u8, Vec<u32>)> = Vec::new();
                for c in 0..4 {
                    let client = format!("c{c}");
                    let Some(subs) = tree.subscriptions_of(&client) else { continue };
                    let mut best: Option<(u8, Vec<u32>)> = None;
                    for (f, s) in subs {
                        if filter_matches(f, t) {
                            let e = best.get_or_insert((0, Vec::new()));
                            e.0 = e.0.max(s.qos as u8);
                            e.1.extend(s.id);
                        }
                    }
                    if let Some((q, mut ids)) = best {
                        ids.sort_unstable();
                        expected.push((client, q, ids));
                    }
                }
                expected.sort();
                prop_assert_eq!(hits(&mut tree, t, "p"), expected, "topic {}", t);
            }
        }
    }
}
