//! The byte streams every peer decodes, written byte by byte here so that
//! no peer's encoder shapes them.

use crate::Version;

/// Packets in one [`session`] unit.
pub const SESSION_PACKETS: usize = 31;

/// Size of each packet of [`publishes`], fixed header included.
pub const PUBLISH_SIZE: usize = 90;

fn vbi(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            return;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends a packet: first byte, remaining length, body.
fn packet(first: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(first);
    vbi(body.len(), out);
    out.extend_from_slice(body);
}

/// Appends a 5.0 property block (length, then `props`); nothing for 3.1.1.
fn properties(version: Version, props: &[u8], out: &mut Vec<u8>) {
    if version == Version::V5 {
        vbi(props.len(), out);
        out.extend_from_slice(props);
    }
}

/// `count` QoS 1 PUBLISH packets of [`PUBLISH_SIZE`] bytes each, packet ids
/// 1, 2, ... (wrapping, never 0), 16-byte topic, no properties.
pub fn publishes(version: Version, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * PUBLISH_SIZE);
    let topic = b"sensors/0042/tmp";
    let payload_len = match version {
        Version::V311 => 68,
        Version::V5 => 67,
    };
    let payload = vec![b'x'; payload_len];
    let mut body = Vec::with_capacity(PUBLISH_SIZE);
    for i in 0..count {
        body.clear();
        string(topic, &mut body);
        body.extend_from_slice(&((i % 65535) as u16 + 1).to_be_bytes());
        properties(version, &[], &mut body);
        body.extend_from_slice(&payload);
        packet(0x32, &body, &mut out);
    }
    debug_assert_eq!(out.len(), count * PUBLISH_SIZE);
    out
}

fn connect(version: Version, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(if version == Version::V5 { 5 } else { 4 });
    // user name, password, will retain, will QoS 1, will, clean start
    body.push(0b1110_1110);
    body.extend_from_slice(&60u16.to_be_bytes());
    // session expiry 3600, receive maximum 100, user property site=bench
    properties(
        version,
        b"\x11\x00\x00\x0e\x10\x21\x00\x64\x26\x00\x04site\x00\x05bench",
        &mut body,
    );
    string(b"bench-client-0001", &mut body);
    // will delay 10, content type text/plain
    properties(
        version,
        b"\x18\x00\x00\x00\x0a\x03\x00\x0atext/plain",
        &mut body,
    );
    string(b"status/bench-client-0001", &mut body);
    string(b"offline", &mut body);
    string(b"bench", &mut body);
    string(b"secret", &mut body);
    packet(0x10, &body, out);
}

fn publish(version: Version, qos: u8, pid: u16, topic: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::new();
    string(topic, &mut body);
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    // message expiry 60, content type application/json, user property unit=C
    properties(
        version,
        b"\x02\x00\x00\x00\x3c\x03\x00\x10application/json\x26\x00\x04unit\x00\x01C",
        &mut body,
    );
    body.extend_from_slice(br#"{"t":21.5,"h":40.2,"seq":123456,"ok":true}"#);
    packet(0x30 | (qos << 1), &body, out);
}

fn ack(first: u8, pid: u16, out: &mut Vec<u8>) {
    packet(first, &pid.to_be_bytes(), out);
}

/// One client session as seen on both directions of a connection, 31
/// packets: CONNECT (will, user name, password; 5.0 properties), CONNACK,
/// SUBSCRIBE with four filters, SUBACK, eight QoS 1 PUBLISH (5.0: three
/// properties) and their PUBACKs, a QoS 2 exchange, two QoS 0 PUBLISH,
/// PINGREQ, PINGRESP, UNSUBSCRIBE of two filters, UNSUBACK, DISCONNECT.
pub fn session(version: Version) -> Vec<u8> {
    let v5 = version == Version::V5;
    let mut out = Vec::new();
    connect(version, &mut out);
    packet(
        0x20,
        if v5 { b"\x00\x00\x00" } else { b"\x00\x00" },
        &mut out,
    );

    let filters: [(&[u8], u8); 4] = [
        (b"sensors/+/tmp", 1),
        (b"alerts/#", 2),
        (b"cmd/bench-client-0001", 1),
        (b"+/status", 0),
    ];
    let mut body = 1u16.to_be_bytes().to_vec();
    properties(version, b"\x0b\x05", &mut body); // subscription identifier 5
    for (filter, qos) in filters {
        string(filter, &mut body);
        body.push(qos);
    }
    packet(0x82, &body, &mut out);
    let mut body = 1u16.to_be_bytes().to_vec();
    properties(version, &[], &mut body);
    body.extend_from_slice(&[1, 2, 1, 0]);
    packet(0x90, &body, &mut out);

    for pid in 2..10 {
        publish(version, 1, pid, b"sensors/dev-17/tmp", &mut out);
    }
    for pid in 2..10 {
        ack(0x40, pid, &mut out);
    }
    publish(version, 2, 10, b"alerts/fire", &mut out);
    ack(0x50, 10, &mut out);
    ack(0x62, 10, &mut out);
    ack(0x70, 10, &mut out);
    publish(version, 0, 0, b"cmd/bench-client-0001", &mut out);
    publish(version, 0, 0, b"lobby/status", &mut out);
    packet(0xC0, &[], &mut out);
    packet(0xD0, &[], &mut out);

    let mut body = 11u16.to_be_bytes().to_vec();
    properties(version, &[], &mut body);
    string(b"alerts/#", &mut body);
    string(b"+/status", &mut body);
    packet(0xA2, &body, &mut out);
    let mut body = 11u16.to_be_bytes().to_vec();
    if v5 {
        body.extend_from_slice(&[0, 0, 0]);
    }
    packet(0xB0, &body, &mut out);
    // 5.0: reason code and empty properties written out, because mqttbytes
    // 0.6 and rumqttc 0.25 refuse the shorter forms the specification allows.
    packet(0xE0, if v5 { b"\x00\x00" } else { b"" }, &mut out);
    out
}

/// [`session`] `repeats` times over.
pub fn sessions(version: Version, repeats: usize) -> Vec<u8> {
    session(version).repeat(repeats)
}
