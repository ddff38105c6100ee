//! The benchmark inputs are what they claim, and every peer decodes them
//! whole: a bench over a stream a peer refuses would measure nothing.

use bytes::BytesMut;
use sessionwire_bench::encode::Packets;
use sessionwire_bench::inputs::{publishes, session, sessions, PUBLISH_SIZE, SESSION_PACKETS};
use sessionwire_bench::{frame_len, Peer, Version};

const VERSIONS: [Version; 2] = [Version::V311, Version::V5];
const ALL: [Peer; 7] = Peer::ALL;

#[test]
fn remaining_length_splits_each_packet_only_once_it_is_whole() {
    for version in VERSIONS {
        let stream = session(version);
        let mut pos = 0;
        while pos < stream.len() {
            let len = frame_len(&stream[pos..]).unwrap().unwrap();
            // Fed byte by byte, the splitter asks for more until the last byte.
            for end in pos..pos + len {
                assert_eq!(frame_len(&stream[pos..end]), Ok(None), "at {pos}..{end}");
            }
            pos += len;
        }
        assert_eq!(pos, stream.len());
    }
    assert!(frame_len(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
}

#[test]
fn publish_input_is_qos1_packets_of_90_bytes_every_peer_decodes() {
    for version in VERSIONS {
        let stream = publishes(version, 1000);
        assert_eq!(stream.len(), 1000 * PUBLISH_SIZE);
        assert!(stream
            .chunks(PUBLISH_SIZE)
            .all(|p| p[0] == 0x32 && p[1] == 88));
        for peer in ALL.into_iter().filter(|p| p.supports(version)) {
            let decoded = peer.decode_all(&mut BytesMut::from(&stream[..]), version);
            assert_eq!(decoded, Ok(1000), "{} {version:?}", peer.name());
        }
    }
}

#[test]
fn session_input_decodes_whole_with_every_peer_and_reencodes_to_as_many_packets() {
    for version in VERSIONS {
        let stream = sessions(version, 3);
        for peer in ALL.into_iter().filter(|p| p.supports(version)) {
            let decoded = peer.decode_all(&mut BytesMut::from(&stream[..]), version);
            assert_eq!(
                decoded,
                Ok(3 * SESSION_PACKETS),
                "{} {version:?}",
                peer.name()
            );
            let packets = Packets::decode(peer, version, &stream).unwrap();
            assert_eq!(packets.len(), 3 * SESSION_PACKETS);
            let mut out = packets.output(stream.len() * 2);
            packets.encode(&mut out).unwrap();
            // Peers may write properties in another order, but not lose packets.
            let again = Peer::Floor.decode_all(&mut out, version);
            assert_eq!(
                again,
                Ok(3 * SESSION_PACKETS),
                "{} {version:?}",
                peer.name()
            );
        }
    }
}
