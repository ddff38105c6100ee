//! The bodies of the MQTT fuzz targets (`mqtt_v311`, `mqtt_v5`,
//! `mqtt_stream`, `mqtt_roundtrip`).
//!
//! Properties every MQTT target checks:
//! - a packet the decoder accepts encodes to `encoded_len` bytes, and those
//!   bytes decode to an equal packet that encodes to the same bytes again
//!   (decode, encode, decode: equal); views of an accepted packet point into
//!   the input;
//! - a violation has a reason code and closes with `INVALID_INBOUND_MESSAGE`,
//!   `MESSAGE_TOO_LARGE` or (a refused CONNECT) `ABORTED`, at an offset inside
//!   the input (at its end when the input ran out or a field is missing);
//! - the decoders agree: [`Packet::decode`], [`mqtt::packets`] and the
//!   streaming [`Decoder`] fed in one piece, in chunks and byte by byte.

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::close::CloseReason;
use crate::limits::Limits;
use crate::mqtt::{
    self, Ack, Auth, ConnAck, Connect, Decoder, Disconnect, MqttFault, Packet, PacketType,
    Properties, Property, Publish, QoS, Sender, Str, SubAck, Subscribe, SubscriptionOptions,
    Subscriptions, TopicFilters, UnsubAck, Unsubscribe, Version, Will,
};
use crate::verdict::{split_mqtt_stream, Outcome, Verdict};
use crate::violation::{Field, Violation, ViolationKind};

use super::mqtt_serve as serve;

/// Target `mqtt_v311`: `data` is one packet a client sends on an MQTT 3.1.1
/// connection whose CONNECT was already accepted. See [`one_packet`].
pub fn mqtt_v311(data: &[u8]) -> Outcome {
    one_packet(data, Version::V311)
}

/// Target `mqtt_v5`: `data` is one packet a client sends on an MQTT 5.0
/// connection whose CONNECT was already accepted. See [`one_packet`].
pub fn mqtt_v5(data: &[u8]) -> Outcome {
    one_packet(data, Version::V5)
}

/// One packet sent by a client on a connection of `version`, decoded by
/// [`Packet::decode`]: the verdict accepts it as one packet or closes at the
/// violation's offset ([`Outcome::of_mqtt_packet`]).
///
/// Beyond the common properties: the stream decoders of a known version
/// (which keep order free, so a CONNECT here is decoded as a packet) agree
/// with it, and a maximum one byte below the packet's size refuses it at
/// offset 0 before its body.
pub fn one_packet(data: &[u8], version: Version) -> Outcome {
    let wire = Bytes::copy_from_slice(data);
    let decoded = Packet::decode(&wire, version, Sender::Client);
    borrowed_agrees(data, version, Sender::Client, &decoded);
    let limits = super::limits();
    match &decoded {
        Ok(p) => {
            check_packet(p, version, Sender::Client, &wire);
            assert_eq!(
                p.encoded_len(version).ok(),
                Some(reencode(p, version).len())
            );
        }
        Err(v) => {
            check_violation(v, data.len());
            serve::refuse(v, version);
        }
    }
    if let Ok(p) = &decoded {
        serve::serve(p, version, limits.max_message_size());
    }
    first_byte(data, &decoded);
    // The same bytes as a test client reads them, sent by a server: only
    // the packets a server sends are accepted.
    let as_server = Packet::decode(&wire, version, Sender::Server);
    borrowed_agrees(data, version, Sender::Server, &as_server);
    match as_server {
        Ok(p) => {
            assert!(p.packet_type().sent_by(Sender::Server), "{p:?}");
            check_packet(&p, version, Sender::Server, &wire);
        }
        Err(v) => check_violation(&v, data.len()),
    }

    // The stream decoders see the same packet first; past it Packet::decode
    // reports trailing bytes where they go on to the next packet.
    let trailing = matches!(&decoded, Err(v) if v.kind() == ViolationKind::TrailingBytes);
    if !trailing && !data.is_empty() && data.len() <= limits.max_message_size() {
        let (streamed, rest) = walk(&wire, Some(version), Sender::Client, &limits);
        // Packet::decode has no size limit: where the declared size is over
        // the maximum, the stream decoders refuse it and it finds the input
        // too short.
        let too_large = rest.filter(|w| matches!(w.kind(), ViolationKind::MessageTooLarge { .. }));
        match (&decoded, streamed.first(), rest) {
            (Ok(p), Some(s), None) => assert_eq!(p, s, "packets() agrees"),
            (Err(v), None, Some(_)) if too_large.is_some() => {
                assert!(
                    is_truncated(v),
                    "{v}: a packet over the maximum is short here"
                )
            }
            (Err(v), None, Some(w)) => assert_eq!(*v, w, "packets() agrees"),
            (d, s, r) => panic!("Packet::decode {d:?}, packets() {s:?} then {r:?}"),
        }
        let (fed, fault, _) = fed(data, &[1], Some(version), Sender::Client, &limits);
        match &decoded {
            Ok(p) => assert_eq!((&fed[..], fault), (std::slice::from_ref(p), None)),
            Err(_) if too_large.is_some() => assert_eq!((fed.len(), fault), (0, too_large)),
            Err(v) if is_truncated(v) => assert_eq!((fed.len(), fault), (0, None)),
            Err(v) => assert_eq!((fed.len(), fault), (0, Some(*v)), "fed byte by byte"),
        }
    }
    if let Ok(p) = &decoded {
        if data.len() > 1 {
            let below = Limits::builder()
                .max_message_size(data.len() - 1)
                .build()
                .expect("at least 1");
            let mut d = Decoder::new(version, Sender::Client, &below);
            let mut input = data;
            let v = d.feed(&mut input).expect_err("a packet over the maximum");
            assert_eq!(
                (v.kind().reason_code(), v.offset()),
                (Some(0x95), 0),
                "{p:?}"
            );
            assert!(d.buffered() < 6, "only the fixed header is kept");
        }
    }
    Outcome::of_mqtt_packet(&decoded)
}

/// [`PacketRef::decode`](mqtt::PacketRef::decode) of the same bytes gives
/// the same packet or the same violation.
fn borrowed_agrees(data: &[u8], version: Version, from: Sender, owned: &Result<Packet, Violation>) {
    match (mqtt::PacketRef::decode(data, version, from), owned) {
        (Ok(b), Ok(o)) => assert!(b == *o, "borrowed {b:?}, owned {o:?}"),
        (Err(b), Err(o)) => assert_eq!(b, *o, "borrowed and owned violations"),
        (b, o) => panic!("borrowed {b:?}, owned {o:?}"),
    }
}

/// The type and QoS a packet's first byte names agree with the decoder:
/// type 0 is refused as reserved, a PUBLISH QoS of 3 as QoS 3, and an
/// accepted packet has the type and QoS its first byte gives.
fn first_byte(data: &[u8], decoded: &Result<Packet, Violation>) {
    let Some(&first) = data.first() else {
        return;
    };
    let ty = PacketType::from_u8(first >> 4);
    let qos = QoS::from_u8((first >> 1) & 3);
    let fault = |v: &Violation| match v.kind() {
        ViolationKind::Mqtt(f) => Some(f),
        _ => None,
    };
    match decoded {
        Ok(p) => {
            assert_eq!(ty, Some(p.packet_type()));
            if let Packet::Publish(m) = p {
                assert_eq!(qos, Some(m.qos));
            }
        }
        Err(v) if ty.is_none() => {
            assert_eq!(fault(v), Some(MqttFault::ReservedPacketType(0)), "{v}")
        }
        Err(v) if ty == Some(PacketType::Publish) && qos.is_none() => {
            assert_eq!(fault(v), Some(MqttFault::Qos3), "{v}")
        }
        Err(_) => {}
    }
}

/// Target `mqtt_stream`: a client's byte stream, with chunk sizes and a
/// version in front (layout: [`split_mqtt_stream`]).
///
/// The stream is decoded whole by [`mqtt::packets`] (the verdict:
/// [`Outcome::of_mqtt_stream`]), then by a [`Decoder`] fed the chunks, fed
/// byte by byte, and through a caller-owned buffer ([`Decoder::decode`]): all
/// give the same packets and the same violation, except that a stream ending
/// inside a packet is a truncation for the one-shot walk and "need more" for
/// a decoder.
pub fn mqtt_stream(data: &[u8]) -> Outcome {
    let (version, sizes, stream) = split_mqtt_stream(data);
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();
    let limits = super::limits();
    let wire = Bytes::copy_from_slice(stream);
    let (whole, fault) = walk(&wire, version, Sender::Client, &limits);
    let mut at = 0;
    let mut known = version;
    for p in &whole {
        let v = known.unwrap_or(Version::V311);
        let v = match p {
            Packet::Connect(c) => c.version,
            _ => v,
        };
        let n = p.encoded_len(v).expect("a decoded packet encodes");
        check_packet(p, v, Sender::Client, &wire);
        serve::serve(p, v, limits.max_message_size());
        if let Packet::Connect(c) = p {
            known.get_or_insert(c.version);
        }
        at += n.min(stream.len());
    }
    if let Some(v) = fault {
        check_violation(&v, stream.len());
        serve::refuse(&v, known.unwrap_or(Version::V311));
        assert!(v.offset() >= at.min(v.offset()), "{v} before the packets");
    }

    let one_shot = Outcome::of_mqtt_stream(&wire, version, &limits);
    assert_eq!(one_shot.verdict.messages, whole.len());
    assert_eq!(one_shot.violation, fault);

    let expect = |got: (Vec<Packet>, Option<Violation>, usize), how: &str| {
        let (packets, v, pending) = got;
        assert_eq!(packets, whole, "{how}: the packets");
        match fault {
            Some(f) if is_truncated(&f) => {
                assert_eq!(v, None, "{how}: a decoder waits for more");
                assert!(pending > 0 || stream.is_empty(), "{how}: keeps the start");
            }
            _ => assert_eq!(v, fault, "{how}: the violation"),
        }
    };
    let chunks: &[usize] = if sizes.iter().all(|&s| s == 0) {
        &[usize::MAX]
    } else {
        &sizes
    };
    expect(
        fed(stream, chunks, version, Sender::Client, &limits),
        "chunked",
    );
    expect(
        fed(stream, &[1], version, Sender::Client, &limits),
        "byte by byte",
    );
    expect(
        owned(stream, chunks, version, &limits),
        "caller-owned buffer",
    );
    one_shot
}

/// Whether a violation only says the input ended inside a packet (rather
/// than a field running past the end of its packet).
fn is_truncated(v: &Violation) -> bool {
    v.kind() == ViolationKind::Truncated(Field::Named("packet"))
}

/// The packets of `wire` by [`mqtt::packets`], and the violation that ended
/// the walk; [`mqtt::packet_refs`] walks it to the same packets and the
/// same violation.
fn walk(
    wire: &Bytes,
    version: Option<Version>,
    from: Sender,
    limits: &Limits,
) -> (Vec<Packet>, Option<Violation>) {
    let (out, fault) = walk_owned(wire, version, from, limits);
    let mut refs = mqtt::packet_refs(wire, version, from, limits);
    for p in &out {
        match refs.next() {
            Some(Ok(b)) => assert!(b == *p, "borrowed {b:?}, owned {p:?}"),
            other => panic!("borrowed walk gave {other:?} for {p:?}"),
        }
    }
    assert_eq!(refs.next(), fault.map(Err), "borrowed walk ends the same");
    if fault.is_none() {
        assert_eq!(refs.offset(), wire.len(), "borrowed walk reads it all");
    }
    (out, fault)
}

/// [`walk`] by [`mqtt::packets`] alone, checking its version and offsets.
fn walk_owned(
    wire: &Bytes,
    version: Option<Version>,
    from: Sender,
    limits: &Limits,
) -> (Vec<Packet>, Option<Violation>) {
    let mut out = Vec::new();
    let mut walk = mqtt::packets(wire, version, from, limits);
    let (mut at, mut known) = (0, version);
    while let Some(step) = walk.next() {
        match step {
            Ok(p) => {
                // The version is the one given, or the first CONNECT's.
                if let Packet::Connect(c) = &p {
                    known.get_or_insert(c.version);
                }
                assert_eq!(walk.version(), known, "{p:?}");
                // Past the packet: at least its fixed header further on.
                let next = walk.offset();
                assert!(next >= at + 2 && next <= wire.len(), "{next} after {p:?}");
                at = next;
                out.push(p);
            }
            Err(v) => return (out, Some(v)),
        }
    }
    (out, None)
}

fn decoder(version: Option<Version>, from: Sender, limits: &Limits) -> Decoder {
    match version {
        Some(v) => Decoder::new(v, from, limits),
        None => Decoder::server(limits),
    }
}

/// `stream` cut in chunks of `sizes`, cycled; a size below 1 counts as 1.
fn chunks<'a>(stream: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    sizes.iter().cycle().map_while(move |&s| {
        if rest.is_empty() {
            return None;
        }
        let (chunk, after) = rest.split_at(s.clamp(1, rest.len()));
        rest = after;
        Some(chunk)
    })
}

/// Feeds `stream` to a [`Decoder`] in chunks of `sizes` (cycled; each at
/// least one byte): the packets, the violation, and the bytes kept of an
/// unfinished packet.
fn fed(
    stream: &[u8],
    sizes: &[usize],
    version: Option<Version>,
    from: Sender,
    limits: &Limits,
) -> (Vec<Packet>, Option<Violation>, usize) {
    let mut d = decoder(version, from, limits);
    let mut out = Vec::new();
    for chunk in chunks(stream, sizes) {
        let mut input = chunk;
        loop {
            match d.feed(&mut input) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        assert_eq!(d.version(), Some(version.unwrap_or(c.version)));
                    }
                    out.push(p);
                }
                Ok(None) => break,
                Err(v) => {
                    let again = d.feed(&mut &b"\x30\x00"[..]);
                    assert_eq!(again, Err(v), "after a violation, the violation");
                    assert_eq!(d.violation(), Some(v));
                    return (out, Some(v), d.buffered());
                }
            }
        }
        assert!(input.is_empty(), "feed takes every byte it is given");
    }
    (out, None, d.buffered())
}

/// Like [`fed`], through [`Decoder::decode`] on a buffer the caller owns.
fn owned(
    stream: &[u8],
    sizes: &[usize],
    version: Option<Version>,
    limits: &Limits,
) -> (Vec<Packet>, Option<Violation>, usize) {
    let mut d = decoder(version, Sender::Client, limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks(stream, sizes) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(v) => {
                    assert_eq!(
                        d.decode(&mut buf),
                        Err(v),
                        "after a violation, the violation"
                    );
                    return (out, Some(v), buf.len());
                }
            }
        }
    }
    (out, None, buf.len())
}

/// Encodes a packet that must encode.
fn reencode(p: &Packet, version: Version) -> Bytes {
    p.to_bytes(version)
        .unwrap_or_else(|e| panic!("{p:?} does not encode: {e}"))
}

/// Properties of a packet sent by `from` that the decoder accepted from (a
/// part of) `wire`: decode, encode, decode gives the same packet and the
/// same bytes, and its views point into `wire`.
fn check_packet(p: &Packet, version: Version, from: Sender, wire: &Bytes) {
    let once = reencode(p, version);
    assert_eq!(p.encoded_len(version).ok(), Some(once.len()), "encoded_len");
    let back = Packet::decode(&once, version, from)
        .unwrap_or_else(|v| panic!("{p:?} re-encoded as {once:?} is refused: {v}"));
    assert_eq!(&back, p, "decode, encode, decode");
    assert_eq!(reencode(&back, version), once, "encoding is stable");
    serve::read_back(p);
    let range = wire.as_ptr_range();
    for view in views(p) {
        if !view.is_empty() {
            let inside = range.start <= view.as_ptr() && view.as_ptr_range().end <= range.end;
            assert!(inside, "decoded views share the input buffer");
        }
    }
}

/// The byte views a decoded packet holds.
fn views(p: &Packet) -> Vec<Bytes> {
    match p {
        Packet::Connect(c) => {
            let mut v = vec![
                c.properties.as_bytes().clone(),
                c.client_id().as_bytes().clone(),
            ];
            if let Some(w) = c.will() {
                v.extend([
                    w.topic.as_bytes().clone(),
                    w.payload,
                    w.properties.as_bytes().clone(),
                ]);
            }
            v.extend(c.user_name().map(|u| u.as_bytes().clone()));
            v.extend(c.password());
            v
        }
        Packet::ConnAck(c) => vec![c.properties.as_bytes().clone()],
        Packet::Publish(p) => vec![
            p.topic_view().as_bytes().clone(),
            p.payload_view(),
            p.properties.as_bytes().clone(),
        ],
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            vec![a.properties.as_bytes().clone()]
        }
        Packet::Subscribe(s) => vec![
            s.properties.as_bytes().clone(),
            s.subscriptions.as_bytes().clone(),
        ],
        Packet::SubAck(s) => vec![s.properties.as_bytes().clone(), s.codes.clone()],
        Packet::Unsubscribe(u) => vec![
            u.properties.as_bytes().clone(),
            u.filters.as_bytes().clone(),
        ],
        Packet::UnsubAck(u) => vec![u.properties.as_bytes().clone(), u.codes.clone()],
        Packet::PingReq | Packet::PingResp => vec![],
        Packet::Disconnect(d) => vec![d.properties.as_bytes().clone()],
        Packet::Auth(a) => vec![a.properties.as_bytes().clone()],
    }
}

/// Properties of a violation found in `len` bytes of MQTT: a reason code, a
/// description, a close reason a bad packet may have, and an offset inside the input (at
/// its end for a packet cut short or a field found missing at the end).
fn check_violation(v: &Violation, len: usize) {
    assert!(v.kind().reason_code().is_some(), "{v}: no reason code");
    serve::describe(v);
    assert!(!v.kind().to_string().is_empty(), "{v:?}: no description");
    assert!(
        matches!(
            v.close_reason(),
            CloseReason::InvalidInboundMessage
                | CloseReason::MessageTooLarge
                | CloseReason::Aborted
        ),
        "{v}: unexpected close reason"
    );
    // A field found missing at the end of its packet is reported there.
    assert!(v.offset() <= len, "{v}: offset past the end of {len} bytes");
    if v.offset() == len {
        assert!(len > 0 || is_truncated(v), "{v}: in an empty input");
    }
}

/// Target `mqtt_roundtrip`: a valid packet built by `arbitrary` from `data`
/// ([`arbitrary_packet`]) must encode to `encoded_len` bytes, decode to an
/// equal packet and encode to the same bytes again. Building never fails, so
/// the outcome is always one accepted packet.
pub fn mqtt_roundtrip(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let version = if bool::arbitrary(&mut u).unwrap_or(false) {
        Version::V5
    } else {
        Version::V311
    };
    let (packet, from) = arbitrary_packet(&mut u, version);
    let wire = reencode(&packet, version);
    assert_eq!(packet.encoded_len(version).ok(), Some(wire.len()));
    let back = Packet::decode(&wire, version, from)
        .unwrap_or_else(|v| panic!("built {packet:?} as {wire:?}, refused: {v}"));
    assert_eq!(back, packet, "decodes to the packet it was built as");
    check_packet(&back, version, from, &wire);
    serve::refused_by_builders(&mut u);
    Outcome {
        verdict: Verdict::accept(1),
        violation: None,
    }
}

/// A valid packet of `version` and who sends it, built from `u` (running out
/// of bytes gives zeros, so this never fails).
pub fn arbitrary_packet(u: &mut Unstructured<'_>, version: Version) -> (Packet, Sender) {
    let v5 = version == Version::V5;
    let kind = u.int_in_range(0..=14u8).unwrap_or(0);
    let id = |u: &mut Unstructured<'_>| u.int_in_range(1..=u16::MAX).unwrap_or(1);
    let client = Sender::Client;
    let server = Sender::Server;
    match kind {
        0 => (Packet::Connect(connect(u, version)), client),
        1 => {
            let code = if v5 {
                pick(u, CONNACK_CODES)
            } else {
                u.int_in_range(0..=5u8).unwrap_or(0)
            };
            let session_present = code == 0 && bool::arbitrary(u).unwrap_or(false);
            let properties = props(u, v5, CONNACK_PROPS);
            let c = ConnAck {
                session_present,
                code,
                properties,
            };
            (Packet::ConnAck(c), server)
        }
        2 => {
            let qos = QoS::from_u8(u.int_in_range(0..=2u8).unwrap_or(0)).unwrap_or(QoS::AtMostOnce);
            let topic = string(u, TOPIC, 1);
            let payload = bytes(u);
            let mut p = Publish::new(&topic, &payload)
                .with_retain(bool::arbitrary(u).unwrap_or(false))
                .with_properties(props(u, v5, PUBLISH_PROPS));
            if qos != QoS::AtMostOnce {
                p = p
                    .with_qos(qos, id(u))
                    .with_dup(bool::arbitrary(u).unwrap_or(false));
            }
            // A payload announced as UTF-8 must be UTF-8.
            if p.properties.get(mqtt::PropertyId::PayloadFormatIndicator)
                == Some(Property::PayloadFormatIndicator(1))
                && std::str::from_utf8(p.payload()).is_err()
            {
                p = Publish::new(&topic, b"utf-8")
                    .with_qos(p.qos, p.packet_id)
                    .with_dup(p.dup)
                    .with_retain(p.retain)
                    .with_properties(p.properties.clone());
            }
            (Packet::Publish(p), client)
        }
        3..=6 => {
            let codes = if kind < 5 { PUBACK_CODES } else { PUBREL_CODES };
            let a = Ack {
                packet_id: id(u),
                code: if v5 { pick(u, codes) } else { 0 },
                properties: props(u, v5, ACK_PROPS),
            };
            let p = match kind {
                3 => Packet::PubAck(a),
                4 => Packet::PubRec(a),
                5 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            };
            (
                p,
                if bool::arbitrary(u).unwrap_or(false) {
                    server
                } else {
                    client
                },
            )
        }
        7 => {
            let n = u.int_in_range(1..=4usize).unwrap_or(1);
            let subs: Vec<(Str, SubscriptionOptions)> = (0..n)
                .map(|_| {
                    let qos = QoS::from_u8(u.int_in_range(0..=2u8).unwrap_or(0))
                        .unwrap_or(QoS::AtMostOnce);
                    let mut o = SubscriptionOptions::qos(qos);
                    let f = filter(u, v5);
                    if v5 {
                        o.no_local = !f.as_str().starts_with("$share/")
                            && bool::arbitrary(u).unwrap_or(false);
                        o.retain_as_published = bool::arbitrary(u).unwrap_or(false);
                        o.retain_handling = u.int_in_range(0..=2u8).unwrap_or(0);
                    }
                    (f, o)
                })
                .collect();
            let s = Subscribe {
                packet_id: id(u),
                properties: props(u, v5, SUBSCRIBE_PROPS),
                subscriptions: Subscriptions::new(&subs).expect("at least one"),
            };
            (Packet::Subscribe(s), client)
        }
        8 => {
            let n = u.int_in_range(1..=4usize).unwrap_or(1);
            let all = if v5 { SUBACK_V5 } else { SUBACK_V311 };
            let codes: Vec<u8> = (0..n).map(|_| pick(u, all)).collect();
            let s = SubAck {
                packet_id: id(u),
                properties: props(u, v5, ACK_PROPS),
                codes: Bytes::from(codes),
            };
            (Packet::SubAck(s), server)
        }
        9 => {
            let n = u.int_in_range(1..=4usize).unwrap_or(1);
            let filters: Vec<Str> = (0..n).map(|_| filter(u, v5)).collect();
            let un = Unsubscribe {
                packet_id: id(u),
                properties: props(u, v5, &[]),
                filters: TopicFilters::new(&filters).expect("at least one"),
            };
            (Packet::Unsubscribe(un), client)
        }
        10 => {
            let codes: Vec<u8> = if v5 {
                let n = u.int_in_range(1..=4usize).unwrap_or(1);
                (0..n).map(|_| pick(u, UNSUBACK_V5)).collect()
            } else {
                Vec::new()
            };
            let un = UnsubAck {
                packet_id: id(u),
                properties: props(u, v5, ACK_PROPS),
                codes: Bytes::from(codes),
            };
            (Packet::UnsubAck(un), server)
        }
        11 => (Packet::PingReq, client),
        12 => (Packet::PingResp, server),
        13 if v5 => {
            let from_server = bool::arbitrary(u).unwrap_or(false);
            let (codes, allowed) = if from_server {
                (
                    DISCONNECT_SERVER,
                    &[PropKind::ReasonString, PropKind::ServerReference][..],
                )
            } else {
                (
                    DISCONNECT_CLIENT,
                    &[PropKind::ReasonString, PropKind::SessionExpiry][..],
                )
            };
            let d = Disconnect {
                code: pick(u, codes),
                properties: props(u, v5, allowed),
            };
            (
                Packet::Disconnect(d),
                if from_server { server } else { client },
            )
        }
        13 => (Packet::Disconnect(Disconnect::default()), client),
        _ if v5 => {
            let code = pick(u, &[0x00, 0x18, 0x19]);
            let mut b = Properties::builder();
            if code != 0 || bool::arbitrary(u).unwrap_or(false) {
                b = push(b, Property::AuthenticationMethod(string(u, WORD, 1)));
                if bool::arbitrary(u).unwrap_or(false) {
                    b = push(b, Property::AuthenticationData(Bytes::from(bytes(u))));
                }
                b = extend(b, u, &[PropKind::ReasonString]);
            }
            let a = Auth {
                code,
                properties: b.build(),
            };
            (
                Packet::Auth(a),
                if bool::arbitrary(u).unwrap_or(false) {
                    server
                } else {
                    client
                },
            )
        }
        _ => (Packet::PingReq, client),
    }
}

/// A valid CONNECT of `version`.
fn connect(u: &mut Unstructured<'_>, version: Version) -> Connect {
    let v5 = version == Version::V5;
    let client_id = string(u, WORD, 0);
    let will = if bool::arbitrary(u).unwrap_or(false) {
        let mut payload = bytes(u);
        let properties = props(u, v5, WILL_PROPS);
        if properties.get(mqtt::PropertyId::PayloadFormatIndicator)
            == Some(Property::PayloadFormatIndicator(1))
            && std::str::from_utf8(&payload).is_err()
        {
            payload = b"utf-8".to_vec();
        }
        Some(Will {
            qos: QoS::from_u8(u.int_in_range(0..=2u8).unwrap_or(0)).unwrap_or(QoS::AtMostOnce),
            retain: bool::arbitrary(u).unwrap_or(false),
            properties,
            topic: string(u, TOPIC, 1),
            payload: Bytes::from(payload),
        })
    } else {
        None
    };
    let user_name = bool::arbitrary(u)
        .unwrap_or(false)
        .then(|| string(u, WORD, 0));
    // 3.1.1 has no password without a user name.
    let password = (bool::arbitrary(u).unwrap_or(false) && (v5 || user_name.is_some()))
        .then(|| Bytes::from(bytes(u)));
    let mut c =
        Connect::new(version, client_id.clone(), will, user_name, password).expect("short fields");
    c.keep_alive = u16::arbitrary(u).unwrap_or(0);
    // An empty client id needs a clean session in 3.1.1.
    c.clean_start = client_id.as_str().is_empty() || bool::arbitrary(u).unwrap_or(true);
    if v5 {
        let mut b = extend(Properties::builder(), u, CONNECT_PROPS);
        if bool::arbitrary(u).unwrap_or(false) {
            b = push(b, Property::AuthenticationMethod(string(u, WORD, 1)));
            if bool::arbitrary(u).unwrap_or(false) {
                b = push(b, Property::AuthenticationData(Bytes::from(bytes(u))));
            }
        }
        c.properties = b.build();
    }
    c
}

/// The properties a built packet may carry, each at most once (user
/// properties aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PropKind {
    PayloadFormat,
    MessageExpiry,
    ContentType,
    ResponseTopic,
    CorrelationData,
    SubscriptionId,
    SessionExpiry,
    AssignedClientId,
    ServerKeepAlive,
    RequestProblem,
    WillDelay,
    RequestResponse,
    ResponseInformation,
    ServerReference,
    ReasonString,
    ReceiveMaximum,
    TopicAliasMaximum,
    TopicAlias,
    MaximumQos,
    RetainAvailable,
    MaximumPacketSize,
    WildcardAvailable,
    SubscriptionIdAvailable,
    SharedAvailable,
}

const CONNECT_PROPS: &[PropKind] = &[
    PropKind::SessionExpiry,
    PropKind::ReceiveMaximum,
    PropKind::MaximumPacketSize,
    PropKind::TopicAliasMaximum,
    PropKind::RequestResponse,
    PropKind::RequestProblem,
];
const CONNACK_PROPS: &[PropKind] = &[
    PropKind::SessionExpiry,
    PropKind::ReceiveMaximum,
    PropKind::MaximumQos,
    PropKind::RetainAvailable,
    PropKind::MaximumPacketSize,
    PropKind::AssignedClientId,
    PropKind::TopicAliasMaximum,
    PropKind::ReasonString,
    PropKind::WildcardAvailable,
    PropKind::SubscriptionIdAvailable,
    PropKind::SharedAvailable,
    PropKind::ServerKeepAlive,
    PropKind::ResponseInformation,
    PropKind::ServerReference,
];
const WILL_PROPS: &[PropKind] = &[
    PropKind::WillDelay,
    PropKind::PayloadFormat,
    PropKind::MessageExpiry,
    PropKind::ContentType,
    PropKind::ResponseTopic,
    PropKind::CorrelationData,
];
const PUBLISH_PROPS: &[PropKind] = &[
    PropKind::PayloadFormat,
    PropKind::MessageExpiry,
    PropKind::TopicAlias,
    PropKind::ResponseTopic,
    PropKind::CorrelationData,
    PropKind::ContentType,
];
const ACK_PROPS: &[PropKind] = &[PropKind::ReasonString];
const SUBSCRIBE_PROPS: &[PropKind] = &[PropKind::SubscriptionId];

const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CLIENT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
];
const DISCONNECT_SERVER: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// Characters of a topic name (no wildcards, no U+0000), with a multi-byte
/// one and a control character.
const TOPIC: &[&str] = &["a", "b", "/", "$", "é", "\t", "€", "x", "1", "😀"];
/// Characters of an identifier or a property string.
const WORD: &[&str] = &["a", "b", "c", "-", "_", "é", " ", "#", "+", "/"];

fn pick(u: &mut Unstructured<'_>, from: &[u8]) -> u8 {
    u.choose(from).copied().unwrap_or(from[0])
}

/// A string of at least `min` characters from `alphabet`.
fn string(u: &mut Unstructured<'_>, alphabet: &[&str], min: usize) -> Str {
    let n = u.int_in_range(min..=min + 12).unwrap_or(min);
    let s: String = (0..n)
        .map(|_| *u.choose(alphabet).unwrap_or(&alphabet[0]))
        .collect();
    Str::from_utf8(Bytes::from(s)).expect("no U+0000, short")
}

fn bytes(u: &mut Unstructured<'_>) -> Vec<u8> {
    let n = u.int_in_range(0..=64usize).unwrap_or(0);
    u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
}

/// A valid topic filter: levels of words and wildcards, `#` last; in 5.0
/// sometimes a shared subscription.
fn filter(u: &mut Unstructured<'_>, v5: bool) -> Str {
    let n = u.int_in_range(1..=4usize).unwrap_or(1);
    let mut levels: Vec<String> = (0..n)
        .map(|_| match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 => "+".to_owned(),
            1 => String::new(),
            _ => string(u, &["a", "b", "é", "$"], 1).as_str().to_owned(),
        })
        .collect();
    if bool::arbitrary(u).unwrap_or(false) {
        levels.push("#".to_owned());
    }
    let mut f = levels.join("/");
    if f.is_empty() {
        f.push('a');
    }
    if v5 && u8::arbitrary(u).unwrap_or(0) % 8 == 1 {
        f = format!("$share/{}/{f}", string(u, &["g", "h"], 1).as_str());
    }
    Str::from_utf8(Bytes::from(f)).expect("no U+0000, short")
}

fn push(b: mqtt::PropertiesBuilder, p: Property) -> mqtt::PropertiesBuilder {
    b.push(p).expect("a short property")
}

/// Properties of 5.0 (none in 3.1.1): some of `allowed`, each once, and user
/// properties.
fn props(u: &mut Unstructured<'_>, v5: bool, allowed: &[PropKind]) -> Properties {
    if !v5 {
        return Properties::default();
    }
    extend(Properties::builder(), u, allowed).build()
}

fn extend(
    mut b: mqtt::PropertiesBuilder,
    u: &mut Unstructured<'_>,
    allowed: &[PropKind],
) -> mqtt::PropertiesBuilder {
    for &k in allowed {
        if u8::arbitrary(u).unwrap_or(0) % 3 != 0 {
            continue;
        }
        let n32 = |u: &mut Unstructured<'_>| u32::arbitrary(u).unwrap_or(0);
        let bit = |u: &mut Unstructured<'_>| u.int_in_range(0..=1u8).unwrap_or(0);
        let p = match k {
            PropKind::PayloadFormat => Property::PayloadFormatIndicator(bit(u)),
            PropKind::MessageExpiry => Property::MessageExpiryInterval(n32(u)),
            PropKind::ContentType => Property::ContentType(string(u, WORD, 0)),
            PropKind::ResponseTopic => Property::ResponseTopic(string(u, TOPIC, 1)),
            PropKind::CorrelationData => Property::CorrelationData(Bytes::from(bytes(u))),
            PropKind::SubscriptionId => {
                Property::SubscriptionIdentifier(u.int_in_range(1..=268_435_455).unwrap_or(1))
            }
            PropKind::SessionExpiry => Property::SessionExpiryInterval(n32(u)),
            PropKind::AssignedClientId => Property::AssignedClientIdentifier(string(u, WORD, 0)),
            PropKind::ServerKeepAlive => Property::ServerKeepAlive(u16::arbitrary(u).unwrap_or(0)),
            PropKind::RequestProblem => Property::RequestProblemInformation(bit(u)),
            PropKind::WillDelay => Property::WillDelayInterval(n32(u)),
            PropKind::RequestResponse => Property::RequestResponseInformation(bit(u)),
            PropKind::ResponseInformation => Property::ResponseInformation(string(u, WORD, 0)),
            PropKind::ServerReference => Property::ServerReference(string(u, WORD, 0)),
            PropKind::ReasonString => Property::ReasonString(string(u, WORD, 0)),
            PropKind::ReceiveMaximum => {
                Property::ReceiveMaximum(u.int_in_range(1..=u16::MAX).unwrap_or(1))
            }
            PropKind::TopicAliasMaximum => {
                Property::TopicAliasMaximum(u16::arbitrary(u).unwrap_or(0))
            }
            PropKind::TopicAlias => Property::TopicAlias(u.int_in_range(1..=u16::MAX).unwrap_or(1)),
            PropKind::MaximumQos => Property::MaximumQos(bit(u)),
            PropKind::RetainAvailable => Property::RetainAvailable(bit(u)),
            PropKind::MaximumPacketSize => {
                Property::MaximumPacketSize(u.int_in_range(1..=u32::MAX).unwrap_or(1))
            }
            PropKind::WildcardAvailable => Property::WildcardSubscriptionAvailable(bit(u)),
            PropKind::SubscriptionIdAvailable => Property::SubscriptionIdentifierAvailable(bit(u)),
            PropKind::SharedAvailable => Property::SharedSubscriptionAvailable(bit(u)),
        };
        b = push(b, p);
    }
    // At most three (an exhausted `Unstructured` answers `ratio` with true).
    for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
        b = push(
            b,
            Property::UserProperty(string(u, WORD, 0), string(u, WORD, 0)),
        );
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT_V311: &[u8] = &[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
    ];

    #[test]
    fn mqtt_3_3_1_4_one_packet_targets_accept_a_publish_and_refuse_qos_3() {
        let publish = [0x32, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07];
        for out in [
            mqtt_v311(&publish),
            mqtt_v5(&[0x30, 0x04, 0x00, 0x01, b'a', 0x00]),
        ] {
            assert_eq!((out.verdict, out.violation), (Verdict::accept(1), None));
        }
        let out = mqtt_v5(&[0x36, 0x00]);
        assert_eq!(out.verdict.offset, Some(0));
        assert_eq!(
            out.violation.and_then(|v| v.kind().reason_code()),
            Some(0x81)
        );
        // Byte by byte and chunked, the stream target agrees with one piece.
        let mut stream = vec![0x01, 2];
        stream.extend_from_slice(CONNECT_V311);
        stream.extend_from_slice(&publish);
        stream.extend_from_slice(&[0x36, 0x00]);
        let out = mqtt_stream(&stream);
        assert_eq!(out.verdict.messages, 2);
        assert_eq!(out.verdict.offset, Some(CONNECT_V311.len() + publish.len()));
    }

    #[test]
    fn mqtt_stream_target_waits_on_a_truncated_packet() {
        let mut stream = vec![0x01, 3];
        stream.extend_from_slice(&CONNECT_V311[..9]);
        let out = mqtt_stream(&stream);
        assert_eq!(out.verdict.messages, 0);
        assert!(matches!(
            out.violation.map(|v| v.kind()),
            Some(ViolationKind::Truncated(_))
        ));
    }

    #[test]
    fn mqtt_roundtrip_target_builds_every_packet_type_of_both_versions() {
        let mut seen = std::collections::BTreeSet::new();
        let mut state = 0x2545_f491_u32;
        for _ in 0..3000 {
            let data: Vec<u8> = (0..300)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state.to_le_bytes()[0]
                })
                .collect();
            assert_eq!(mqtt_roundtrip(&data).verdict, Verdict::accept(1));
            let mut u = Unstructured::new(&data);
            let v5 = bool::arbitrary(&mut u).unwrap();
            let version = if v5 { Version::V5 } else { Version::V311 };
            seen.insert((v5, arbitrary_packet(&mut u, version).0.packet_type()));
        }
        assert_eq!(seen.len(), 14 + 15, "{seen:?}");
    }
}
