//! The MQTT streams the instruction-count benches decode, and the split-only
//! floor they are measured against.
//!
//! The floor reads each fixed header and remaining length, skips the body and
//! hands out one view per packet, checking nothing: what any decoder pays to
//! find packet boundaries and give out views of its input.

use bytes::Bytes;
use sessionwire::mqtt::{
    Ack, Connect, Disconnect, Packet, Properties, Property, Publish, QoS, Str, Subscribe,
    SubscriptionOptions, Subscriptions, Version, Will,
};

/// Bytes per PUBLISH of the fixed-size streams, fixed header included.
pub const PUBLISH_SIZE: usize = 90;

/// The topic of every PUBLISH.
const TOPIC: &str = "devices/sensor-0042/telemetry";

/// A PUBLISH at `qos` of exactly [`PUBLISH_SIZE`] bytes in `version` (no
/// properties in 5.0: an empty property block).
pub fn publish(version: Version, qos: QoS, id: u16) -> Packet {
    let topic = Str::from_static(TOPIC);
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let props_len = usize::from(version == Version::V5);
    let payload = vec![b'x'; PUBLISH_SIZE - 2 - 2 - topic.len() - id_len - props_len];
    let id = if qos == QoS::AtMostOnce { 0 } else { id };
    Packet::Publish(Publish::new(&topic, &payload).with_qos(qos, id))
}

/// A client's session in `version`: CONNECT (will, user name, password and,
/// in 5.0, properties), SUBSCRIBE with four filters, QoS 1 PUBLISH with
/// properties in 5.0, the acknowledgements of both QoS levels, PINGREQ, then
/// DISCONNECT. A client never sends SUBACK, so the stream decodes as a
/// client's; acknowledgements travel both ways and stand in for the ones the
/// client sends back.
pub fn session(version: Version) -> Vec<Packet> {
    let v5 = version == Version::V5;
    let user = |name: &'static str, value: &'static str| {
        Property::UserProperty(Str::from_static(name), Str::from_static(value))
    };
    let block = |list: Vec<Property>| {
        if !v5 {
            return Properties::new();
        }
        let mut b = Properties::builder();
        for p in list {
            b = b.push(p).expect("valid property");
        }
        b.build()
    };
    let will = Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: block(vec![Property::WillDelayInterval(30)]),
        topic: Str::from_static("devices/sensor-0042/status"),
        payload: Bytes::from_static(b"offline"),
    };
    let mut connect = Connect::new(
        version,
        Str::from_static("sensor-0042"),
        Some(will),
        Some(Str::from_static("sensor")),
        Some(Bytes::from_static(b"secret")),
    )
    .expect("small fields");
    connect.keep_alive = 60;
    connect.properties = block(vec![
        Property::SessionExpiryInterval(3600),
        Property::ReceiveMaximum(32),
        Property::TopicAliasMaximum(8),
    ]);
    let filters = [
        "devices/+/telemetry",
        "devices/sensor-0042/commands/#",
        "alerts/#",
        "config/sensor-0042",
    ]
    .map(|f| {
        (
            Str::from_static(f),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )
    });
    let subscribe = Subscribe {
        packet_id: 1,
        properties: block(vec![Property::SubscriptionIdentifier(7)]),
        subscriptions: Subscriptions::new(&filters).expect("four filters"),
    };
    let mut out = vec![Packet::Connect(connect), Packet::Subscribe(subscribe)];
    for id in 2..10u16 {
        let publish = Publish::new(&Str::from_static(TOPIC), &[b'x'; 48])
            .with_qos(QoS::AtLeastOnce, id)
            .with_properties(block(vec![
                Property::PayloadFormatIndicator(0),
                Property::MessageExpiryInterval(120),
                user("unit", "celsius"),
            ]));
        out.push(Packet::Publish(publish));
        out.push(Packet::PubAck(Ack::new(id)));
    }
    out.extend([
        Packet::PubRec(Ack::new(10)),
        Packet::PubRel(Ack::new(10)),
        Packet::PubComp(Ack::new(10)),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::default()),
    ]);
    out
}

/// `packets` encoded one after another in `version`.
pub fn stream(packets: &[Packet], version: Version) -> Vec<u8> {
    let mut raw = Vec::new();
    for p in packets {
        p.encode_to_vec(version, &mut raw).expect("encodes");
    }
    raw
}

/// The size of the whole packet at the start of `input`, from its remaining
/// length (a variable byte integer of up to four bytes, not checked further);
/// `None` if `input` does not hold all of it.
#[inline]
pub fn whole_len(input: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *input.get(i)?;
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 || i > 4 {
            break;
        }
    }
    let total = i + len;
    (total <= input.len()).then_some(total)
}

/// The floor: each packet's size read ([`whole_len`]), its body skipped, one
/// view of the whole packet handed to `each`. Returns the bytes used (whole
/// packets only).
#[inline]
pub fn split(stream: &Bytes, mut each: impl FnMut(Bytes)) -> usize {
    let mut pos = 0;
    while let Some(n) = whole_len(&stream[pos..]) {
        each(stream.slice(pos..pos + n));
        pos += n;
    }
    pos
}
