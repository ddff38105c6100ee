//! MQTT 3.1.1 and 5.0: every control packet, both directions, zero-copy and
//! strict.
//!
//! - [`Packet::decode`] decodes one whole packet held in a [`Bytes`](bytes::Bytes); every
//!   topic, payload, client identifier and property of the result is a view
//!   of that buffer, and decoding allocates nothing.
//! - [`PacketRef::decode`] runs the same checks on a `&[u8]` and borrows
//!   from it instead: no views, no reference counting.
//! - [`packets`] (and [`packet_refs`], borrowed) walks a buffer holding a
//!   byte stream, packet by packet.
//! - [`Decoder`] takes a stream in chunks of any size and buffers at most one
//!   packet, whose declared size is checked against
//!   [`Limits::max_message_size`](crate::Limits::max_message_size) (the whole
//!   packet, fixed header included) before a byte of its body is kept.
//! - [`Packet::encode`] writes a packet with its exact length reserved up front.
//!
//! Every fault is a [`Violation`] whose kind gives both the MQTT 5.0 reason
//! code ([`ViolationKind::reason_code`](crate::ViolationKind::reason_code))
//! and the close reason; see `docs/mqtt.md` for the rules checked.
//!
//! ```
//! use bytes::Bytes;
//! use sessionwire::mqtt::{Decoder, Packet, QoS, Version};
//! use sessionwire::{CloseReason, Limits};
//!
//! // A server's decoder: the CONNECT tells it the version.
//! let mut decoder = Decoder::server(&Limits::default());
//! let mut stream: &[u8] = &[
//!     0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
//!     0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i',
//! ];
//! let Some(Packet::Connect(connect)) = decoder.feed(&mut stream).unwrap() else { panic!() };
//! assert_eq!((connect.version, connect.client_id().as_str()), (Version::V311, "c"));
//! let Some(Packet::Publish(publish)) = decoder.feed(&mut stream).unwrap() else { panic!() };
//! assert_eq!((publish.topic(), publish.qos, publish.packet_id), ("a/b", QoS::AtLeastOnce, 7));
//! assert_eq!(publish.payload(), b"hi");
//! assert!(stream.is_empty());
//!
//! // QoS 3 breaks MQTT-3.3.1-4: a malformed packet, reason code 0x81.
//! let mut bad: &[u8] = &[0x36, 0x00];
//! let v = decoder.feed(&mut bad).unwrap_err();
//! assert_eq!(v.kind().reason_code(), Some(0x81));
//! assert_eq!(v.close_reason(), CloseReason::InvalidInboundMessage);
//! assert_eq!(v.offset(), 26);
//!
//! // Encoding gives the bytes back.
//! let mut out = bytes::BytesMut::new();
//! Packet::Publish(publish).encode(Version::V311, &mut out).unwrap();
//! assert_eq!(&out[..], &[0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i']);
//! ```

mod borrowed;
mod connect;
mod control;
pub mod fault;
mod framing;
mod packet;
mod property;
mod publish;
pub mod session;
mod stream;
mod subscribe;
#[cfg(feature = "tokio-codec")]
pub mod tokio;
mod types;
mod wire;

pub use borrowed::PacketRef;
pub use connect::{ConnAck, Connect, Will};
pub use control::{Auth, Disconnect};
pub use fault::MqttFault;
pub use packet::Packet;
pub use property::{
    Properties, PropertiesBuilder, PropertiesRef, Property, PropertyId, PropertyIter,
};
pub use publish::{Ack, AckRef, Publish, PublishRef};
pub use stream::{packet_refs, packets, Decoder, PacketRefs, Packets};
pub use subscribe::{
    SubAck, Subscribe, SubscriptionOptions, Subscriptions, TopicFilters, UnsubAck, Unsubscribe,
};
pub use types::{EncodeError, PacketType, QoS, Sender, Version};
pub use wire::{Str, StrError, MAX_REMAINING_LENGTH};

/// The example of `docs/mqtt.md`, run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/mqtt.md")]
pub struct MqttGuide;

use crate::violation::Violation;

/// The MQTT 3.1.1 CONNACK return code that refuses a CONNECT for this
/// violation, if the violation is a refusal rather than a malformed packet
/// (3.1.1 has no reason codes for the rest: the connection is just closed).
pub fn v311_connack_code(v: &Violation) -> Option<u8> {
    match v.kind() {
        crate::ViolationKind::Mqtt(MqttFault::UnsupportedProtocolLevel(_)) => Some(0x01),
        crate::ViolationKind::Mqtt(MqttFault::ClientIdRejected) => Some(0x02),
        crate::ViolationKind::Mqtt(MqttFault::ServerBusy) => Some(0x03),
        crate::ViolationKind::Mqtt(
            MqttFault::BadUserNameOrPassword | MqttFault::BadAuthenticationMethod,
        ) => Some(0x04),
        crate::ViolationKind::Mqtt(MqttFault::NotAuthorized) => Some(0x05),
        _ => None,
    }
}
