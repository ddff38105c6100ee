//! Packet identifiers in flight, both ways: the server's QoS 1 and 2
//! messages waiting for their acknowledgements, and the client's QoS 2
//! messages waiting for their PUBREL.

use std::collections::{BTreeMap, BTreeSet};

use super::queue::Queued;
use crate::mqtt::PacketType;

/// Where a message the server sent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// QoS 1, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2, waiting for PUBREC.
    Qos2Sent,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// One message the server sent and the client has not finished
/// acknowledging.
#[derive(Clone, Debug)]
pub(super) struct Outbound {
    /// Send order, so that a resumed session resends in order.
    seq: u64,
    pub(super) stage: Stage,
    /// The message sent (sent again with DUP while `stage` is not
    /// `Released`).
    pub(super) item: Queued,
}

/// What a resumed session sends again.
#[derive(Clone, Debug)]
pub(super) enum Resend {
    /// The PUBLISH with this identifier, with DUP.
    Publish(u16, Queued),
    /// A PUBREL.
    PubRel(u16),
}

/// What an acknowledgement from the client did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Acked {
    /// The message is done: its identifier is free again.
    Done,
    /// PUBREC taken: send PUBREL.
    SendPubRel,
}

/// The packet identifiers of one session, both directions. The outbound
/// map never holds more than the in-flight window (the caller checks
/// [`Inflight::outbound_len`] before sending), the inbound set never more
/// than the receive maximum.
#[derive(Debug, Default)]
pub(super) struct Inflight {
    out: BTreeMap<u16, Outbound>,
    next_seq: u64,
    inbound: BTreeSet<u16>,
}

impl Inflight {
    /// Messages the server has in flight.
    pub(super) fn outbound_len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing is in flight either way.
    pub(super) fn is_empty(&self) -> bool {
        self.out.is_empty() && self.inbound.is_empty()
    }

    /// A free packet identifier: the next after `last`, the one given last
    /// (kept by the session, which outlives this table), skipping those in
    /// flight; `None` only when all 65,535 are taken.
    pub(super) fn allocate(&self, last: &mut u16) -> Option<u16> {
        for _ in 0..=u16::MAX {
            *last = last.checked_add(1).unwrap_or(1);
            if !self.out.contains_key(last) {
                return Some(*last);
            }
        }
        None
    }

    /// Files a message just sent as `id` (QoS 1 or 2, identifier from
    /// `allocate`).
    pub(super) fn insert(&mut self, id: u16, item: Queued, stage: Stage) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.out.insert(id, Outbound { seq, stage, item });
    }

    /// Takes an acknowledgement (`packet` is PUBACK, PUBREC or PUBCOMP);
    /// `refused` is a 5.0 PUBREC with a reason code of 0x80 or above, which
    /// ends the exchange. `None`: the identifier is not in flight at that
    /// step.
    pub(super) fn ack(&mut self, packet: PacketType, id: u16, refused: bool) -> Option<Acked> {
        let stage = self.out.get(&id)?.stage;
        match (packet, stage) {
            (PacketType::PubAck, Stage::Qos1Sent) | (PacketType::PubComp, Stage::Released) => {
                self.out.remove(&id);
                Some(Acked::Done)
            }
            (PacketType::PubRec, Stage::Qos2Sent) if refused => {
                self.out.remove(&id);
                Some(Acked::Done)
            }
            (PacketType::PubRec, Stage::Qos2Sent | Stage::Released) => {
                if let Some(o) = self.out.get_mut(&id) {
                    o.stage = Stage::Released;
                }
                Some(Acked::SendPubRel)
            }
            _ => None,
        }
    }

    /// What a resumed session sends again, in the order first sent.
    pub(super) fn resend(&self) -> Vec<Resend> {
        let mut out: Vec<_> = self
            .out
            .iter()
            .map(|(&id, o)| {
                let what = match o.stage {
                    Stage::Released => Resend::PubRel(id),
                    Stage::Qos1Sent | Stage::Qos2Sent => Resend::Publish(id, o.item.clone()),
                };
                (o.seq, what)
            })
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, what)| what).collect()
    }

    /// The client's QoS 2 identifiers waiting for PUBREL.
    pub(super) fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Whether the client's QoS 2 identifier `id` waits for its PUBREL.
    pub(super) fn inbound_contains(&self, id: u16) -> bool {
        self.inbound.contains(&id)
    }

    /// Files the client's QoS 2 identifier `id` (PUBREC sent).
    pub(super) fn inbound_insert(&mut self, id: u16) {
        self.inbound.insert(id);
    }

    /// Takes a PUBREL: whether `id` was waiting.
    pub(super) fn inbound_release(&mut self, id: u16) -> bool {
        self.inbound.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::session::event::{Delivery, Message};
    use crate::mqtt::{Properties, QoS, Str};
    use bytes::Bytes;

    fn item() -> Queued {
        Queued {
            _charge: None,
            message: std::sync::Arc::new(super::super::queue::Shared::new(
                Message {
                    topic: Str::from_static("t"),
                    payload: Bytes::from_static(b"x"),
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    properties: Properties::new(),
                    expires_at: None,
                },
                None,
            )),
            delivery: Delivery {
                qos: QoS::ExactlyOnce,
                retain: false,
                subscription_ids: Vec::new(),
            },
        }
    }

    #[test]
    fn mqtt_2_2_1_3_identifiers_in_flight_are_not_given_again() {
        let mut f = Inflight::default();
        let mut last = 0;
        let a = f.allocate(&mut last).unwrap();
        f.insert(a, item(), Stage::Qos1Sent);
        let b = f.allocate(&mut last).unwrap();
        assert_ne!(a, b);
        // Wrapping around skips what is still in flight.
        last = u16::MAX;
        assert_eq!(f.allocate(&mut last), Some(b));
        f.insert(b, item(), Stage::Qos1Sent);
        assert_eq!(f.allocate(&mut last), Some(b + 1));
    }

    #[test]
    fn mqtt_4_3_3_qos2_steps_in_order() {
        let mut f = Inflight::default();
        f.insert(7, item(), Stage::Qos2Sent);
        assert_eq!(f.ack(PacketType::PubComp, 7, false), None);
        assert_eq!(f.ack(PacketType::PubAck, 7, false), None);
        assert_eq!(f.ack(PacketType::PubRec, 7, false), Some(Acked::SendPubRel));
        assert!(matches!(&f.resend()[..], [Resend::PubRel(7)]));
        assert_eq!(f.ack(PacketType::PubComp, 7, false), Some(Acked::Done));
        assert_eq!(f.ack(PacketType::PubComp, 7, false), None);
        assert_eq!(f.outbound_len(), 0);
    }

    #[test]
    fn mqtt_4_3_3_refused_pubrec_ends_the_exchange() {
        let mut f = Inflight::default();
        f.insert(3, item(), Stage::Qos2Sent);
        assert_eq!(f.ack(PacketType::PubRec, 3, true), Some(Acked::Done));
        assert_eq!(f.outbound_len(), 0);
    }

    #[test]
    fn mqtt_4_4_0_1_resend_in_send_order() {
        let mut f = Inflight::default();
        f.insert(9, item(), Stage::Qos1Sent);
        f.insert(2, item(), Stage::Qos1Sent);
        let ids: Vec<u16> = f
            .resend()
            .iter()
            .map(|r| match r {
                Resend::Publish(id, _) | Resend::PubRel(id) => *id,
            })
            .collect();
        assert_eq!(ids, [9, 2]);
    }
}
