//! Every MQTT packet, both versions, both directions: what the encoder
//! writes decodes back to the same packet and re-encodes to the same bytes,
//! whole, byte by byte and in random chunkings.

mod mqtt_common;

use bytes::{Bytes, BytesMut};
use mqtt_common::*;
use proptest::prelude::*;
use sessionwire::mqtt::{self, Packet, PacketType, Property, PropertyId, Sender, Str, Version};
use sessionwire::Limits;

#[test]
fn every_packet_round_trips_in_both_versions() {
    for v in [Version::V311, Version::V5] {
        let packets = every_packet(v);
        let types: std::collections::BTreeSet<_> =
            packets.iter().map(|(_, p)| p.packet_type()).collect();
        assert_eq!(types.len(), if v == Version::V5 { 15 } else { 14 });
        for (from, packet) in packets {
            let wire = packet.to_bytes(v).expect("encodes");
            let mut vec = Vec::new();
            packet.encode_to_vec(v, &mut vec).unwrap();
            assert_eq!(&vec[..], &wire[..]);
            assert_eq!(one(v, from, &wire), packet, "{v:?} {packet:?}");
        }
    }
}

#[test]
fn every_5_0_property_is_covered_and_read_back() {
    let mut seen = std::collections::BTreeSet::new();
    for (_, p) in every_packet(Version::V5) {
        let blocks = match &p {
            Packet::Connect(c) => vec![c.properties.clone(), c.will().unwrap().properties.clone()],
            Packet::ConnAck(c) => vec![c.properties.clone()],
            Packet::Publish(x) => vec![x.properties.clone()],
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                vec![a.properties.clone()]
            }
            Packet::Subscribe(s) => vec![s.properties.clone()],
            Packet::SubAck(s) => vec![s.properties.clone()],
            Packet::Unsubscribe(u) => vec![u.properties.clone()],
            Packet::UnsubAck(u) => vec![u.properties.clone()],
            Packet::Disconnect(d) => vec![d.properties.clone()],
            Packet::Auth(a) => vec![a.properties.clone()],
            Packet::PingReq | Packet::PingResp => vec![],
        };
        for b in blocks {
            seen.extend(b.iter().map(|p| p.id()));
        }
    }
    let all: Vec<_> = (0..=0x7f).filter_map(PropertyId::from_u8).collect();
    assert_eq!(all.len(), 27);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), all);
}

#[test]
fn a_servers_stream_starts_with_connect_and_takes_its_version() {
    for v in [Version::V311, Version::V5] {
        let client: Vec<Packet> = every_packet(v)
            .into_iter()
            .filter(|(from, _)| *from == Sender::Client)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(client[0].packet_type(), PacketType::Connect);
        let mut stream = Vec::new();
        for p in &client {
            p.encode_to_vec(v, &mut stream).unwrap();
        }
        let (decoded, violation) = decode(Mode::Server, &stream);
        assert_eq!(violation, None);
        assert_eq!(decoded, client);
    }
}

#[test]
fn decoded_fields_are_views_of_the_input() {
    let wire = every_packet(Version::V5)[2]
        .1
        .to_bytes(Version::V5)
        .unwrap();
    let Packet::Publish(p) = Packet::decode(&wire, Version::V5, Sender::Client).unwrap() else {
        panic!()
    };
    let range = wire.as_ptr_range();
    for view in [
        p.topic_view().as_bytes(),
        &p.payload_view(),
        p.properties.as_bytes(),
    ] {
        assert!(range.contains(&view.as_ptr()), "a view, not a copy");
    }
    let Some(Property::ResponseTopic(t)) = p.properties.get(PropertyId::ResponseTopic) else {
        panic!()
    };
    assert!(range.contains(&t.as_bytes().as_ptr()));
}

#[test]
fn packet_decode_wants_exactly_one_packet() {
    let wire = Packet::PingReq.to_bytes(Version::V311).unwrap();
    let mut longer = wire.to_vec();
    longer.push(0xc0);
    let v = Packet::decode(&Bytes::from(longer), Version::V311, Sender::Client).unwrap_err();
    assert_eq!((v.kind().name(), v.offset()), ("trailing-bytes", 2));
    let v = Packet::decode(&wire.slice(..1), Version::V311, Sender::Client).unwrap_err();
    assert_eq!((v.kind().name(), v.offset()), ("truncated", 1));
}

#[test]
fn encoding_refuses_what_the_wire_cannot_carry() {
    let huge = Packet::Publish(mqtt::Publish::new(
        &Str::from_static("t"),
        &vec![0; mqtt::MAX_REMAINING_LENGTH],
    ));
    assert_eq!(
        huge.encoded_len(Version::V311),
        Err(mqtt::EncodeError::PacketTooLarge)
    );
    let mut buf = BytesMut::new();
    assert!(huge.encode(Version::V311, &mut buf).is_err());
    assert!(buf.is_empty(), "nothing written");
    let auth = Packet::Auth(mqtt::Auth::default());
    assert_eq!(
        auth.encoded_len(Version::V311),
        Err(mqtt::EncodeError::NotInVersion)
    );
    let long = mqtt::Property::CorrelationData(Bytes::from(vec![0; 65_536]));
    assert!(mqtt::Properties::builder().push(long).is_err());
    assert_eq!(
        mqtt::Subscriptions::new(&[]).unwrap_err(),
        mqtt::EncodeError::Empty
    );
}

/// A stream with every client packet, then a fault.
fn client_stream_then(v: Version, tail: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    for (from, p) in every_packet(v) {
        if from == Sender::Client {
            p.encode_to_vec(v, &mut stream).unwrap();
        }
    }
    stream.extend_from_slice(tail);
    stream
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_chunking_decodes_like_the_whole(
        sizes in prop::collection::vec(1usize..40, 1..80),
        tail in prop::sample::select(vec![
            vec![],
            vec![0x36, 0x00],
            vec![0x30, 0xff, 0xff, 0xff, 0x7f],
            vec![0x30, 0x05, 0x00, 0x01],
            vec![0x82, 0x02, 0x00, 0x00],
        ]),
        v5 in any::<bool>(),
    ) {
        let v = if v5 { Version::V5 } else { Version::V311 };
        let stream = client_stream_then(v, &tail);
        let limits = Limits::builder().max_message_size(4096).build().unwrap();
        let whole = decode_with(Mode::Server, &limits, &stream);
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        for n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at((*n).min(rest.len()));
            chunks.push(a);
            rest = b;
        }
        prop_assert_eq!(feed_chunks(Mode::Server, &limits, chunks), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        v5 in any::<bool>(),
        server in any::<bool>(),
    ) {
        let v = if v5 { Version::V5 } else { Version::V311 };
        let from = if server { Sender::Server } else { Sender::Client };
        // decode_with checks that every way of decoding agrees.
        let (packets, _) = decode_with(Mode::Known(v, from), &Limits::default(), &bytes);
        for p in packets {
            // What decodes, encodes.
            prop_assert!(p.encoded_len(v).is_ok());
        }
    }
}
