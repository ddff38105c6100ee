//! Packets a peer decoded, kept to be encoded again.

use bytes::BytesMut;

use crate::{frame_len, Peer, Rejected, Version, MAX_PACKET};

/// mqttbytes has no `Packet::write`: each packet type writes itself. The two
/// versions differ only in DISCONNECT, which carries a body in 5.0.
macro_rules! mqttbytes_write {
    ($version:ident, $packet:expr, $out:expr, $disconnect:pat => $write:expr) => {{
        use mqttbytes::$version::{Packet::*, PingReq as Req, PingResp as Resp};
        match $packet {
            Connect(p) => p.write($out),
            ConnAck(p) => p.write($out),
            Publish(p) => p.write($out),
            PubAck(p) => p.write($out),
            PubRec(p) => p.write($out),
            PubRel(p) => p.write($out),
            PubComp(p) => p.write($out),
            Subscribe(p) => p.write($out),
            SubAck(p) => p.write($out),
            Unsubscribe(p) => p.write($out),
            UnsubAck(p) => p.write($out),
            PingReq => Req.write($out),
            PingResp => Resp.write($out),
            $disconnect => $write,
        }
    }};
}

/// A stream decoded by one peer into its own packet types.
pub enum Packets<'a> {
    /// The floor's "packets": the byte ranges of each frame, copied as they are.
    Floor(Vec<&'a [u8]>),
    /// mqttrs 3.1.1 packets, borrowing the stream.
    Mqttrs(Vec<mqttrs::Packet<'a>>),
    /// mqttbytes 3.1.1 packets.
    MqttbytesV4(Vec<mqttbytes::v4::Packet>),
    /// mqttbytes 5.0 packets.
    MqttbytesV5(Vec<mqttbytes::v5::Packet>),
    /// rumqttc 3.1.1 packets.
    RumqttcV4(Vec<rumqttc::mqttbytes::v4::Packet>),
    /// rumqttc 5.0 packets.
    RumqttcV5(Vec<rumqttc::v5::mqttbytes::v5::Packet>),
    /// Our packets, views of the stream, and the version to write them in.
    Sessionwire(Vec<sessionwire::mqtt::Packet>, sessionwire::mqtt::Version),
}

fn all<P, E: std::fmt::Debug>(
    stream: &[u8],
    mut read: impl FnMut(&mut BytesMut) -> Result<P, E>,
) -> Result<Vec<P>, Rejected> {
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let packet = read(&mut buf).map_err(|e| Rejected {
            packets: out.len(),
            error: format!("{e:?}"),
        })?;
        out.push(packet);
    }
    Ok(out)
}

impl<'a> Packets<'a> {
    /// Decodes all of `stream` with `peer`.
    pub fn decode(peer: Peer, version: Version, stream: &'a [u8]) -> Result<Self, Rejected> {
        Ok(match (peer, version) {
            (Peer::Floor | Peer::FloorSplit, _) => {
                let (mut rest, mut frames) = (stream, Vec::new());
                while !rest.is_empty() {
                    let Ok(Some(len)) = frame_len(rest) else {
                        return Err(Rejected {
                            packets: frames.len(),
                            error: "bad frame".into(),
                        });
                    };
                    let (frame, tail) = rest.split_at(len);
                    frames.push(frame);
                    rest = tail;
                }
                Packets::Floor(frames)
            }
            (Peer::Mqttrs, Version::V311) => {
                let (mut rest, mut packets) = (stream, Vec::new());
                while !rest.is_empty() {
                    let reject = |error: String, packets: &Vec<_>| Rejected {
                        packets: packets.len(),
                        error,
                    };
                    match (mqttrs::decode_slice(rest), frame_len(rest)) {
                        (Ok(Some(packet)), Ok(Some(len))) => {
                            packets.push(packet);
                            rest = &rest[len..];
                        }
                        (Err(e), _) => return Err(reject(format!("{e:?}"), &packets)),
                        _ => return Err(reject("incomplete".into(), &packets)),
                    }
                }
                Packets::Mqttrs(packets)
            }
            (Peer::Mqttrs, Version::V5) => {
                return Err(Rejected {
                    packets: 0,
                    error: "MQTT 5.0 unsupported".into(),
                })
            }
            (Peer::Mqttbytes, Version::V311) => {
                Packets::MqttbytesV4(all(stream, |s| mqttbytes::v4::read(s, MAX_PACKET))?)
            }
            (Peer::Mqttbytes, Version::V5) => {
                Packets::MqttbytesV5(all(stream, |s| mqttbytes::v5::read(s, MAX_PACKET))?)
            }
            (Peer::Rumqttc, Version::V311) => Packets::RumqttcV4(all(stream, |s| {
                rumqttc::mqttbytes::v4::Packet::read(s, MAX_PACKET)
            })?),
            (Peer::Rumqttc, Version::V5) => Packets::RumqttcV5(all(stream, |s| {
                rumqttc::v5::mqttbytes::v5::Packet::read(s, Some(MAX_PACKET as u32))
            })?),
            (Peer::Sessionwire | Peer::SessionwireBytes, _) => Packets::Sessionwire(
                all(stream, |s| crate::ours::read(s, version))?,
                crate::ours::version(version),
            ),
        })
    }

    /// How many packets there are.
    pub fn len(&self) -> usize {
        match self {
            Packets::Floor(v) => v.len(),
            Packets::Mqttrs(v) => v.len(),
            Packets::MqttbytesV4(v) => v.len(),
            Packets::MqttbytesV5(v) => v.len(),
            Packets::RumqttcV4(v) => v.len(),
            Packets::RumqttcV5(v) => v.len(),
            Packets::Sessionwire(v, _) => v.len(),
        }
    }

    /// Whether there are no packets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An output buffer for [`Packets::encode`] holding at least `size`
    /// bytes: mqttrs writes into an initialised slice, the others append.
    pub fn output(&self, size: usize) -> BytesMut {
        match self {
            Packets::Mqttrs(_) => BytesMut::zeroed(size),
            _ => BytesMut::with_capacity(size),
        }
    }

    /// Encodes every packet into `out` (made by [`Packets::output`]) and
    /// returns the bytes written.
    pub fn encode(&self, out: &mut BytesMut) -> Result<usize, String> {
        let err = |e: &dyn std::fmt::Debug| format!("{e:?}");
        match self {
            Packets::Floor(frames) => {
                for frame in frames {
                    out.extend_from_slice(frame);
                }
            }
            Packets::Mqttrs(packets) => {
                let mut pos = 0;
                for packet in packets {
                    pos += mqttrs::encode_slice(packet, &mut out[pos..]).map_err(|e| err(&e))?;
                }
                out.truncate(pos);
            }
            Packets::MqttbytesV4(packets) => {
                for packet in packets {
                    mqttbytes_write!(v4, packet, out, Disconnect => mqttbytes::v4::Disconnect.write(out))
                        .map_err(|e| err(&e))?;
                }
            }
            Packets::MqttbytesV5(packets) => {
                for packet in packets {
                    mqttbytes_write!(v5, packet, out, Disconnect(p) => p.write(out))
                        .map_err(|e| err(&e))?;
                }
            }
            Packets::RumqttcV4(packets) => {
                for packet in packets {
                    packet.write(out, MAX_PACKET).map_err(|e| err(&e))?;
                }
            }
            Packets::RumqttcV5(packets) => {
                for packet in packets {
                    packet
                        .write(out, Some(MAX_PACKET as u32))
                        .map_err(|e| err(&e))?;
                }
            }
            Packets::Sessionwire(packets, version) => {
                for packet in packets {
                    packet.encode(*version, out).map_err(|e| err(&e))?;
                }
            }
        }
        Ok(out.len())
    }
}
