//! `sessionwire check --target mqtt` and the MQTT corpus: every rule's
//! client stream (`corpus/mqtt/`) and every real client's capture
//! (`corpus/mqtt-capture/`), through the library, a decoder fed byte by byte,
//! and the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use sessionwire::mqtt::{Decoder, Packet, Version};
use sessionwire::{Limits, Verdict};
use sessionwire_check::corpus::{self, Target};
use sessionwire_check::mqtt as mqtt_check;
use sessionwire_tests::{corpus_root, sessionwire_bin};

fn run(args: &[&str]) -> Output {
    Command::new(sessionwire_bin())
        .args(args)
        .env_remove("SESSIONWIRE_CORPUS")
        .output()
        .expect("the sessionwire binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

fn cases(dir: &str) -> Vec<corpus::Case> {
    let loaded = corpus::load_dir(&corpus_root().join(dir)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!loaded.cases.is_empty(), "corpus/{dir} is empty");
    loaded.cases
}

/// The verdict of a server's decoder fed `stream` one byte at a time; a
/// stream that ends inside a packet is reported as the one-shot walk does.
fn byte_by_byte(stream: &[u8], limits: &Limits) -> (Verdict, Option<u8>) {
    let mut d = Decoder::server(limits);
    let mut packets = 0;
    for b in stream {
        let mut input = std::slice::from_ref(b);
        match d.feed(&mut input) {
            Ok(Some(_)) => packets += 1,
            Ok(None) => {}
            Err(v) => return (Verdict::close(&v, packets), v.kind().reason_code()),
        }
    }
    assert_eq!(
        d.buffered(),
        0,
        "the corpus streams end on a packet boundary"
    );
    (Verdict::accept(packets), None)
}

#[test]
fn mqtt_corpus_every_rule_file_gets_its_verdict_and_reason_code() {
    let limits = Limits::default();
    let all = cases("mqtt");
    for case in &all {
        let file = std::fs::read(&case.path).unwrap();
        let stream = mqtt_check::read_input(&file);
        assert_ne!(&stream[..], &file[..], "{}: hex text", case.path.display());
        let report = mqtt_check::report(&stream, None, &limits);
        assert_eq!(
            report.outcome.verdict,
            case.expected,
            "{}",
            case.path.display()
        );
        assert_eq!(
            corpus::verdict(Target::Mqtt, &file, &limits),
            Ok(case.expected)
        );
        let code = case.code.filter(|_| !case.expected.is_accept());
        assert_eq!(report.code, code, "{}", case.path.display());
        assert!(
            case.expected.is_accept() || code.is_some(),
            "{}: no code",
            case.path.display()
        );
        assert_eq!(
            byte_by_byte(&stream, &limits),
            (case.expected, code),
            "{} byte by byte",
            case.path.display()
        );
    }
    // One file per rule of docs/mqtt.md that a client's stream can break.
    let doc = std::fs::read_to_string(corpus_root().join("../docs/mqtt.md")).unwrap();
    for case in &all {
        assert!(
            doc.contains(&format!("(../corpus/mqtt/{})", case.name)),
            "{}",
            case.name
        );
    }
    assert!(all.len() >= 60, "{}", all.len());
}

#[test]
fn mqtt_captures_of_real_clients_are_accepted_and_reencode_byte_identical() {
    let limits = Limits::default();
    let mut versions = Vec::new();
    for case in cases("mqtt-capture") {
        let file = std::fs::read(&case.path).unwrap();
        let stream = mqtt_check::read_input(&file);
        assert_eq!(
            &stream[..],
            &file[..],
            "{}: captures are raw bytes",
            case.name
        );
        let report = mqtt_check::report(&stream, None, &limits);
        assert!(case.expected.is_accept(), "{}", case.name);
        assert_eq!(report.outcome.verdict, case.expected, "{}", case.name);
        assert_eq!(
            byte_by_byte(&stream, &limits),
            (case.expected, None),
            "{}",
            case.name
        );
        let again = mqtt_check::reencode(&stream, &limits)
            .unwrap_or_else(|at| panic!("{}: the packet at {at} re-encodes otherwise", case.name));
        assert_eq!(again, file, "{}", case.name);
        versions.extend(report.version);
    }
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions,
        [Version::V311, Version::V5],
        "captures of both versions"
    );
}

#[test]
fn mqtt_3_1_2_2_check_reports_an_unsupported_level_as_a_refusal() {
    let file = corpus_root().join("mqtt/MQTT-3.1.2-2.hex");
    let out = run(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(
            "mqtt: close ABORTED (8) at offset 8, 0 messages: unsupported MQTT protocol level 6, \
             code 0x84: refuse CONNACK 0x84"
        ),
        "{text}"
    );
    assert!(!text.contains("INVALID_INBOUND_MESSAGE"), "{text}");
    let out = run(&["check", "--json", file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (&v["code"], &v["server_sends"], &v["reason"], &v["matches"]),
        (
            &serde_json::json!("0x84"),
            &serde_json::json!("refuse CONNACK 0x84"),
            &serde_json::json!("ABORTED"),
            &serde_json::json!(true)
        )
    );
}

/// A temporary `corpus/mqtt/` holding `files` and `expected`.
fn temp_mqtt(files: &[(&str, &[u8])], expected: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus").join("mqtt");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("expected.tsv"), expected).unwrap();
    (tmp, dir)
}

/// CONNECT 3.1.1 (15 bytes), then a QoS 0 PUBLISH of 7 bytes.
const STREAM: &[u8] = &[
    0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c', 0x30,
    0x05, 0x00, 0x01, b't', b'h', b'i',
];

#[test]
fn mqtt_sec_2_1_4_max_message_size_bounds_the_whole_packet() {
    let (_tmp, dir) = temp_mqtt(&[("s.bin", STREAM)], "s.bin\taccept\t-\t-\t2\n");
    let file = dir.join("s.bin");
    let path = file.to_str().unwrap();
    // The CONNECT is 15 bytes, the PUBLISH 7, fixed headers included.
    let out = run(&["check", "--max-message-size", "15", path]);
    assert!(
        stdout(&out).contains("s.bin: mqtt: accept, 2 messages"),
        "{}",
        stdout(&out)
    );
    let out = run(&["check", "--max-message-size", "14", path]);
    assert!(
        stdout(&out).contains("close MESSAGE_TOO_LARGE (5) at offset 0, 0 messages"),
        "{}",
        stdout(&out)
    );
    let out = run(&[
        "check",
        "--max-message-size",
        "6",
        "--target",
        "mqtt",
        "--mqtt-version",
        "3.1.1",
        path,
    ]);
    assert!(
        stdout(&out).contains("close MESSAGE_TOO_LARGE (5) at offset 0, 0 messages"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn mqtt_check_compares_the_reason_code_and_exits_1_on_a_mismatch() {
    let bad = [STREAM, &[0x36, 0x00]].concat();
    let (_tmp, dir) = temp_mqtt(
        &[("qos3.bin", &bad), ("ping.hex", b"# a hex stream\nc0 00\n")],
        "qos3.bin\tclose\tINVALID_INBOUND_MESSAGE\t22\t2\t-\t0x82\nping.hex\tclose\tINVALID_INBOUND_MESSAGE\t0\t0\n",
    );
    let out = run(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(
            "qos3.bin: MISMATCH expected close INVALID_INBOUND_MESSAGE (7) at offset 22, 2 messages, \
             code 0x82 got close INVALID_INBOUND_MESSAGE (7) at offset 22, 2 messages, code 0x81"
        ),
        "{text}"
    );
    // The hex PINGREQ as a first packet breaks MQTT-3.1.0-1; with a version
    // given, it is the rest of a connection and is accepted.
    assert!(
        text.contains("ping.hex: mqtt: close INVALID_INBOUND_MESSAGE (7) at offset 0"),
        "{text}"
    );
    let hex = dir.join("ping.hex");
    let out = run(&[
        "check",
        "--target",
        "mqtt",
        "--mqtt-version",
        "5",
        hex.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("ping.hex: mqtt: accept, 1 message"),
        "{}",
        stdout(&out)
    );
    let out = run(&["check", "--mqtt-version", "6", hex.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn mqtt_3_3_1_4_one_packet_verdicts_match_the_stream_after_a_connect() {
    // The one-packet fuzz corpora hold packets sent after a CONNECT: the
    // same packet behind a real CONNECT gets the same verdict, moved.
    let limits = Limits::default();
    let connect5 = [
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x01,
        b'c',
    ];
    for (dir, connect) in [("mqtt-v311", &STREAM[..15]), ("mqtt-v5", &connect5[..])] {
        for case in cases(dir) {
            let packet = std::fs::read(&case.path).unwrap();
            if packet.first().is_some_and(|b| b >> 4 == 1) {
                continue; // a CONNECT after a CONNECT is a protocol error in a stream
            }
            let one = Packet::decode(
                &Bytes::from(packet.clone()),
                version(dir),
                sessionwire::mqtt::Sender::Client,
            );
            if one.is_ok() {
                let stream = Bytes::from([connect, &packet[..]].concat());
                let r = mqtt_check::report(&stream, None, &limits);
                assert_eq!(
                    r.outcome.verdict,
                    Verdict::accept(2),
                    "{}",
                    case.path.display()
                );
            }
        }
    }
}

fn version(dir: &str) -> Version {
    if dir.ends_with("v5") {
        Version::V5
    } else {
        Version::V311
    }
}

#[test]
fn mqtt_corpus_dirs_are_checked_by_default() {
    let out = run(&["check", "--target", "mqtt"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let n = cases("mqtt").len() + cases("mqtt-capture").len();
    assert!(
        text.trim_end().ends_with("0 mismatches")
            && text.contains(&format!("checked {n} files (mqtt {n})")),
        "{text}"
    );
    assert!(Path::new(&corpus_root().join("mqtt-capture/README.md")).is_file());
}
