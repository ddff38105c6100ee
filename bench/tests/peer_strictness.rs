//! Feeds every row of `bench/strictness.tsv` and every real-client capture of
//! `corpus/mqtt-capture/` to each peer codec, and checks that
//! `bench/peer-strictness.md` says what they did.
//!
//! Regenerate the table after a peer upgrade or a new row with
//! `PEER_STRICTNESS_WRITE=1 cargo test -p sessionwire-bench --test peer_strictness`.

use std::fmt::Write as _;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use sessionwire_bench::encode::Packets;
use sessionwire_bench::{frame_len, Peer, Verdict, Version};

const CONNECT_311: &str = "100c00044d5154540402003c0000";
const CONNECT_5: &str = "100d00044d5154540502003c000000";

struct Row {
    name: String,
    conformance: String,
    version: Version,
    bytes: Vec<u8>,
    rule: String,
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {text}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn rows() -> Vec<Row> {
    let text = fs::read_to_string(manifest().join("strictness.tsv")).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    assert_eq!(lines.next(), Some("name\tconformance\tversion\thex\trule"));
    lines
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "row {line:?}");
            let version = Version::parse(cols[2]).unwrap_or_else(|| panic!("version in {line:?}"));
            let connect = match version {
                Version::V311 => CONNECT_311,
                Version::V5 => CONNECT_5,
            };
            Row {
                name: cols[0].into(),
                conformance: cols[1].into(),
                version,
                bytes: unhex(&cols[3].replace("{connect}", connect)),
                rule: cols[4].into(),
            }
        })
        .collect()
}

/// Verdicts of every peer codec, with panics caught and their messages muted.
fn verdicts(bytes: &[u8], version: Version) -> Vec<Verdict> {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let out = Peer::CODECS
        .iter()
        .map(|peer| peer.verdict(bytes, version))
        .collect();
    panic::set_hook(hook);
    out
}

fn cell(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Reject(rejected) => {
            let short: String = rejected.error.chars().take(40).collect();
            let at = rejected.packets + 1;
            format!("reject packet {at}: `{}`", short.replace('|', "\\|"))
        }
        Verdict::Accept => "**accept**".into(),
        other => other.word().into(),
    }
}

fn captures() -> Vec<(String, Version, Vec<u8>)> {
    let dir = manifest().join("../corpus/mqtt-capture");
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "bin"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let version = if name.contains("-5-") {
                Version::V5
            } else {
                Version::V311
            };
            (name, version, fs::read(&path).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether `peer` decodes `bytes` and encodes its packets back to them.
fn round_trips(peer: Peer, version: Version, bytes: &[u8]) -> bool {
    let Ok(packets) = Packets::decode(peer, version, bytes) else {
        return false;
    };
    let mut out = packets.output(bytes.len() * 2 + 64);
    packets.encode(&mut out).is_ok() && out[..] == bytes[..]
}

const TYPES: [&str; 16] = [
    "type 0",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

/// Every packet of `stream` whose remaining length fits one byte, re-sent
/// with each smaller remaining length k and only its first k body bytes
/// (what comes before it unchanged): (packet type, stream).
fn cut_short(stream: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(Some(len)) = frame_len(&stream[pos..]) {
        let remaining = len - 2;
        if remaining < 128 {
            for k in 0..remaining {
                let mut cut = stream[..pos + 1].to_vec();
                cut.push(k as u8);
                cut.extend_from_slice(&stream[pos + 2..pos + 2 + k]);
                out.push((usize::from(stream[pos] >> 4), cut));
            }
        }
        pos += len;
        if pos == stream.len() {
            break;
        }
    }
    out
}

fn render_cut_short(inputs: &[(Version, &[u8])], md: &mut String) {
    md.push_str(
        "\n## Packets cut short\n\n\
         Every packet of every input above whose remaining length fits one byte,\n\
         re-sent with each smaller remaining length k and only its first k body\n\
         bytes: a body too short for the fields its flags announce. Each cell:\n\
         panics / variants of that packet type in the versions the codec speaks.\n\n",
    );
    let peers = Peer::CODECS;
    // [type][peer] -> (panics, variants)
    let mut counts = [[(0usize, 0usize); Peer::CODECS.len()]; 16];
    for (version, stream) in inputs {
        for (kind, cut) in cut_short(stream) {
            for (i, verdict) in verdicts(&cut, *version).iter().enumerate() {
                if *verdict != Verdict::Unsupported {
                    counts[kind][i].1 += 1;
                    counts[kind][i].0 += usize::from(*verdict == Verdict::Panic);
                }
            }
        }
    }
    let names: Vec<&str> = peers.iter().map(|p| p.name()).collect();
    let _ = writeln!(md, "| packet | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(peers.len()));
    for (kind, per_peer) in counts.iter().enumerate() {
        if per_peer.iter().all(|&(_, variants)| variants == 0) {
            continue;
        }
        let cells: Vec<String> = per_peer.iter().map(|(p, v)| format!("{p} / {v}")).collect();
        let _ = writeln!(md, "| {} | {} |", TYPES[kind], cells.join(" | "));
    }
}

fn render(rows: &[Row]) -> String {
    let mut md = String::new();
    let peers: Vec<&str> = Peer::CODECS.iter().map(|p| p.name()).collect();
    md.push_str(
        "# How strict are the peer MQTT codecs?\n\n\
         Generated by `bench/tests/peer_strictness.rs` from `bench/strictness.tsv`\n\
         (sessionwire, our codec, as a server decodes a client's stream; mqttrs\n\
         0.4.1, mqttbytes 0.6.0, rumqttc 0.25.1); do not edit by hand.\n\
         Each input is a stream a client sends, usually its CONNECT then one\n\
         packet, decoded whole: **accept** means every packet decoded and every\n\
         byte consumed. `n/a`: the codec does not speak that version. Rows\n\
         named `valid-*` are controls that should be accepted; every other row\n\
         breaks the rule given and should be refused.\n\n",
    );
    let _ = writeln!(
        md,
        "| input | rule | conformance | version | {} |",
        peers.join(" | ")
    );
    let _ = writeln!(md, "|---|---|---|---|{}", "---|".repeat(peers.len()));
    let mut accepted = vec![0usize; peers.len()];
    let mut panicked = vec![0usize; peers.len()];
    let mut refused_valid = vec![0usize; peers.len()];
    let mut bad = 0;
    let mut spoken = vec![0usize; peers.len()];
    for row in rows {
        let verdicts = verdicts(&row.bytes, row.version);
        let valid = row.name.starts_with("valid-");
        bad += usize::from(!valid);
        for (i, verdict) in verdicts.iter().enumerate() {
            match verdict {
                Verdict::Accept if !valid => accepted[i] += 1,
                Verdict::Reject(_) | Verdict::Panic if valid => refused_valid[i] += 1,
                _ => {}
            }
            panicked[i] += usize::from(*verdict == Verdict::Panic);
            spoken[i] += usize::from(!valid && *verdict != Verdict::Unsupported);
        }
        let cells: Vec<String> = verdicts.iter().map(cell).collect();
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            row.name,
            row.rule,
            row.conformance,
            row.version.label(),
            cells.join(" | ")
        );
    }
    let _ = writeln!(md, "\n## Summary ({bad} bad inputs)\n");
    let _ = writeln!(md, "| | {} |", peers.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(peers.len()));
    let join = |v: &[usize]| {
        v.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(md, "| bad inputs of its versions | {} |", join(&spoken));
    let _ = writeln!(md, "| bad inputs accepted | {} |", join(&accepted));
    let _ = writeln!(md, "| valid controls refused | {} |", join(&refused_valid));
    let _ = writeln!(md, "| panics | {} |", join(&panicked));

    md.push_str(
        "\n## Real-client captures\n\n\
         The files of `corpus/mqtt-capture/` (what mosquitto_pub, mosquitto_sub and\n\
         paho-mqtt send), decoded whole, then re-encoded: `round trip` when the\n\
         codec's encoder gives back the same bytes. Every 5.0 capture ends with\n\
         the 2-byte DISCONNECT `e0 00`, which 5.0 allows.\n\n",
    );
    let _ = writeln!(md, "| capture | {} |", peers.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(peers.len()));
    for (name, version, bytes) in &captures() {
        let (version, bytes) = (*version, &bytes[..]);
        let cells: Vec<String> = Peer::CODECS
            .iter()
            .zip(verdicts(bytes, version))
            .map(|(peer, verdict)| match verdict {
                Verdict::Accept if round_trips(*peer, version, bytes) => {
                    "accept, round trip".into()
                }
                Verdict::Accept => "accept, re-encodes differently".into(),
                other => cell(&other),
            })
            .collect();
        let _ = writeln!(md, "| `{name}` | {} |", cells.join(" | "));
    }
    let captures = captures();
    let inputs: Vec<(Version, &[u8])> = rows
        .iter()
        .map(|r| (r.version, &r.bytes[..]))
        .chain(captures.iter().map(|(_, v, b)| (*v, &b[..])))
        .collect();
    render_cut_short(&inputs, &mut md);
    md
}

#[test]
fn strictness_rows_are_well_formed_and_controls_frame_whole() {
    let rows = rows();
    assert!(rows.len() >= 40, "only {} rows", rows.len());
    for row in &rows {
        assert!(
            !row.conformance.is_empty() && !row.rule.is_empty(),
            "{}",
            row.name
        );
        // Controls are whole packets: the split-only floor consumes every byte.
        if row.name.starts_with("valid-") {
            assert_eq!(
                Peer::Floor.verdict(&row.bytes, row.version),
                Verdict::Accept,
                "{}",
                row.name
            );
        }
    }
    let mut keys: Vec<_> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.version.label()))
        .collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "a name appears twice for one version");
}

#[test]
fn peer_strictness_table_matches_the_peers() {
    let path: &Path = &manifest().join("peer-strictness.md");
    let table = render(&rows());
    if std::env::var_os("PEER_STRICTNESS_WRITE").is_some() {
        fs::write(path, &table).unwrap();
        return;
    }
    let committed = fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == table,
        "{} is stale: regenerate it with PEER_STRICTNESS_WRITE=1",
        path.display()
    );
}

/// The part of the table docs/mqtt.md includes, between its markers.
const DOC_START: &str = "<!-- peer-strictness: generated by bench/tests/peer_strictness.rs -->\n";
const DOC_END: &str = "<!-- peer-strictness: end -->\n";

#[test]
fn docs_mqtt_md_holds_the_strictness_table() {
    let path = manifest().join("../docs/mqtt.md");
    let doc = fs::read_to_string(&path).unwrap();
    let table = render(&rows());
    // The table and summary, without the page's title and introduction.
    let body = &table[table.find("| input |").unwrap()..table.find("\n## Real-client").unwrap()];
    let body = body.replace("\n## Summary", "\n### Summary");
    let (Some(start), Some(end)) = (doc.find(DOC_START), doc.find(DOC_END)) else {
        panic!("docs/mqtt.md has no peer strictness markers");
    };
    let want = format!(
        "{}{}{}",
        &doc[..start + DOC_START.len()],
        body.trim_start(),
        &doc[end..]
    );
    if std::env::var_os("PEER_STRICTNESS_WRITE").is_some() {
        fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        doc == want,
        "docs/mqtt.md's strictness table is stale: regenerate it with PEER_STRICTNESS_WRITE=1"
    );
}

#[test]
fn mqtt_sessionwire_refuses_every_bad_packet_and_accepts_every_control() {
    for row in rows() {
        let verdict = Peer::Sessionwire.verdict(&row.bytes, row.version);
        if row.name.starts_with("valid-") {
            assert_eq!(
                verdict,
                Verdict::Accept,
                "{} ({})",
                row.name,
                row.version.label()
            );
        } else {
            assert!(
                matches!(verdict, Verdict::Reject(_)),
                "{} ({}): {verdict:?}",
                row.name,
                row.version.label()
            );
        }
    }
    for (name, version, bytes) in captures() {
        assert_eq!(
            Peer::Sessionwire.verdict(&bytes, version),
            Verdict::Accept,
            "{name}"
        );
        assert!(round_trips(Peer::Sessionwire, version, &bytes), "{name}");
    }
}
