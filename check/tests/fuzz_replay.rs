//! Replays every file of every fuzz target's corpus (`corpus/<target>/`) on
//! stable Rust, through the same function the fuzz target runs
//! (`sessionwire::fuzzing`): the target's properties must hold, and the
//! verdict must be the one recorded in the directory's `expected.tsv` and the
//! one `sessionwire_check::corpus::verdict` gives. A directory with no input file
//! fails.
//!
//! Recording: with `SESSIONWIRE_RECORD=<dir>` (as `fuzz/run.sh` and
//! `fuzz/triage.sh` set it), every input file of `corpus/<dir>/` that
//! `expected.tsv` does not list yet gets a row with its current verdict (a
//! regression baseline), before the replay checks it like any other.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::panic;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use sessionwire::mqtt::Version;
use sessionwire::{fuzzing, Message, MessageType, Verdict, ViolationKind};
use sessionwire_check::corpus::{self, Expected, Outcome, Target};
use sessionwire_check::fuzz_targets;

/// A fuzz target of `fuzz/targets.txt`, with its body.
struct FuzzTarget {
    dir: &'static str,
    /// The `check` target whose verdict must agree; `None` for a fuzz-only
    /// target that `corpus::verdict` does not run (`session`).
    target: Option<Target>,
    run: fn(&[u8]) -> Outcome,
}

/// The body (in `sessionwire::fuzzing`) of the target named `name`.
fn body(name: &str) -> Option<fn(&[u8]) -> Outcome> {
    Some(match name {
        "message" => fuzzing::message,
        "http_body" => fuzzing::http_body,
        "incremental" => fuzzing::incremental,
        "roundtrip" => fuzzing::roundtrip,
        "session" => |d| fuzzing::session(d, std::time::Instant::now()),
        "sp" => sp,
        "mqtt_v311" => fuzzing::mqtt_v311,
        "mqtt_v5" => fuzzing::mqtt_v5,
        "mqtt_stream" => fuzzing::mqtt_stream,
        "mqtt_roundtrip" => fuzzing::mqtt_roundtrip,
        "mqtt_session" => |d| fuzzing::mqtt_session(d, std::time::Instant::now()),
        _ => return None,
    })
}

/// The `sp` target as a verdict: accepted with its number of properties as
/// `messages`, or refused with the close reason of a malformed `sp` at the
/// offset the reader gives.
fn sp(data: &[u8]) -> Outcome {
    let verdict = match fuzzing::sp(data) {
        Ok(properties) => Verdict::accept(properties),
        Err(offset) => Verdict {
            reason: Some(ViolationKind::MalformedSessionProperties.close_reason()),
            offset: Some(offset),
            messages: 0,
        },
    };
    Outcome {
        verdict,
        violation: None,
    }
}

/// Every fuzz target of the list, with its body.
fn targets() -> Vec<FuzzTarget> {
    fuzz_targets::all()
        .map(|t| FuzzTarget {
            dir: t.corpus,
            target: t.check_target(),
            run: body(t.name).unwrap_or_else(|| panic!("fuzz target {} has no body", t.name)),
        })
        .collect()
}

fn corpus_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(dir)
}

fn target(dir: &str) -> FuzzTarget {
    targets()
        .into_iter()
        .find(|t| t.dir == dir)
        .expect("a known target")
}

/// Appends a row with the current verdict for every input file of `dir` that
/// `expected.tsv` does not list.
fn record_unlisted(t: &FuzzTarget, dir: &Path) {
    let path = dir.join(corpus::EXPECTED_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let listed: Expected = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| corpus::is_corpus_file(n) && listed.get(n).is_none())
        .collect();
    names.sort();
    let mut rows = Expected::new();
    for name in &names {
        let bytes = std::fs::read(dir.join(name)).expect("a readable corpus file");
        let outcome = (t.run)(&bytes);
        let code = outcome.violation.and_then(|v| v.kind().reason_code());
        rows.insert_with_code(name, outcome.verdict, code)
            .expect("names are unique");
    }
    if rows.is_empty() {
        return;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("expected.tsv opens for appending");
    // The rows as the corpus writer formats them, its header first.
    let written = rows.to_string();
    let mut add = String::new();
    if text.is_empty() {
        add.push_str(written.lines().next().unwrap_or_default());
        add.push('\n');
    } else if !text.ends_with('\n') {
        add.push('\n');
    }
    add.push_str(
        "# Recorded from the fuzz target's verdict by the fuzz replay (SESSIONWIRE_RECORD): \
         a regression baseline, not derived by hand.\n",
    );
    for line in written.lines().filter(|l| !l.starts_with('#')) {
        add.push_str(line);
        add.push('\n');
    }
    out.write_all(add.as_bytes())
        .expect("expected.tsv is writable");
}

/// Replays one target's corpus; returns the inputs it ran.
fn replay(dir_name: &str) -> Vec<Vec<u8>> {
    let t = target(dir_name);
    let dir = corpus_dir(t.dir);
    if std::env::var("SESSIONWIRE_RECORD").as_deref() == Ok(t.dir) {
        record_unlisted(&t, &dir);
    }
    let corpus = corpus::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !corpus.cases.is_empty(),
        "{}: no corpus file to replay",
        dir.display()
    );
    let limits = fuzzing::limits();
    let mut failures = Vec::new();
    let mut inputs = Vec::new();
    for case in &corpus.cases {
        let bytes = std::fs::read(&case.path).expect("a readable corpus file");
        let run = t.run;
        let input = bytes.clone();
        let shown = format!("{}/{}", t.dir, case.name);
        match panic::catch_unwind(move || run(&input)) {
            Err(_) => failures.push(format!("{shown}: a property failed (see the panic above)")),
            Ok(outcome) => {
                let library = t.target.map(|target| {
                    corpus::verdict(target, &bytes, &case.limits)
                        .expect("fuzz targets take any bytes")
                });
                let code = outcome.violation.and_then(|v| v.kind().reason_code());
                if case.limits != limits {
                    // A row with limits of its own: the target decodes under
                    // the defaults (its properties still ran), the library
                    // under the row's limits gives the verdict.
                    if library.is_some_and(|l| l != case.expected) {
                        failures.push(format!(
                            "{shown}: corpus::verdict under its own limits says `{}`, expected.tsv `{}`",
                            library.unwrap_or(case.expected),
                            case.expected
                        ));
                    }
                } else if outcome.verdict != case.expected {
                    failures.push(format!(
                        "{shown}: verdict `{}`, expected.tsv says `{}`",
                        outcome.verdict, case.expected
                    ));
                } else if case.code.is_some_and(|c| Some(c) != code) {
                    failures.push(format!(
                        "{shown}: reason code {code:02x?}, expected.tsv says {:02x?}",
                        case.code
                    ));
                } else if let Some(library) = library.filter(|l| *l != outcome.verdict) {
                    failures.push(format!(
                        "{shown}: corpus::verdict says `{library}`, the fuzz target `{}`",
                        outcome.verdict
                    ));
                }
            }
        }
        inputs.push(bytes);
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files failed:\n{}",
        failures.len(),
        corpus.cases.len(),
        failures.join("\n")
    );
    inputs
}

#[test]
fn section_3_message_corpus_keeps_its_verdicts_and_properties() {
    let inputs = replay("message");
    assert!(inputs
        .iter()
        .any(|i| fuzzing::message(i).verdict.is_accept()));
    assert!(inputs
        .iter()
        .any(|i| !fuzzing::message(i).verdict.is_accept()));
}

#[test]
fn section_6_http_body_corpus_keeps_its_verdicts_and_properties() {
    let inputs = replay("http-body");
    assert!(inputs
        .iter()
        .any(|i| fuzzing::http_body(i).verdict.is_accept()));
    assert!(inputs
        .iter()
        .any(|i| !fuzzing::http_body(i).verdict.is_accept()));
}

#[test]
fn section_6_incremental_corpus_decodes_in_chunks_like_in_one_piece() {
    let inputs = replay("incremental");
    // The seeds cross the chunked decoder's 4096-character step.
    assert!(inputs
        .iter()
        .any(|i| corpus::split_incremental(i).2.len() > 4096));
}

#[test]
fn section_3_roundtrip_corpus_builds_every_message_type() {
    let inputs = replay("roundtrip");
    let built: BTreeSet<u8> = inputs
        .iter()
        .map(|i| {
            let m = Message::arbitrary(&mut Unstructured::new(i)).expect("never fails");
            m.message_type().value()
        })
        .collect();
    let all: BTreeSet<u8> = MessageType::ALL.iter().map(|t| t.value()).collect();
    assert_eq!(built, all, "the roundtrip seeds build every message type");
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_verdict_target() {
    for t in &targets() {
        if let Some(target) = t.target {
            assert_eq!(target.name(), t.dir);
        }
        assert_eq!(t.target, Target::of_dir(t.dir));
        assert!(
            corpus_dir(t.dir).join(corpus::EXPECTED_FILE).is_file(),
            "{}",
            t.dir
        );
    }
}

#[test]
fn section_1_session_corpus_keeps_its_verdicts_and_invariants() {
    let inputs = replay("session");
    // The seeds reach both outcomes: a session left open, and one closed.
    assert!(inputs
        .iter()
        .any(|i| fuzzing::session(i, std::time::Instant::now())
            .verdict
            .is_accept()));
    assert!(inputs
        .iter()
        .any(|i| !fuzzing::session(i, std::time::Instant::now())
            .verdict
            .is_accept()));
}

#[test]
fn mqtt_session_corpus_keeps_its_verdicts_and_invariants() {
    let inputs = replay("mqtt-session");
    let now = std::time::Instant::now;
    // The seeds close connections for more than one reason.
    let reasons: BTreeSet<_> = inputs
        .iter()
        .filter_map(|i| fuzzing::mqtt_session(i, now()).verdict.reason)
        .collect();
    assert!(reasons.len() >= 3, "{reasons:?}");
}

#[test]
fn section_1_sp_corpus_keeps_its_verdicts() {
    let inputs = replay("sp");
    assert!(inputs.iter().any(|i| fuzzing::sp(i).is_ok()));
    assert!(inputs.iter().any(|i| fuzzing::sp(i).is_err()));
}

#[test]
fn sp_target_accepts_flat_string_objects_and_refuses_the_rest() {
    assert_eq!(fuzzing::sp(br#"{"room":"7","x":"\ud83d\ude00"}"#), Ok(2));
    assert_eq!(fuzzing::sp(b"{}"), Ok(0));
    assert_eq!(fuzzing::sp(br#"{"room":7}"#), Err(8));
    assert_eq!(fuzzing::sp(br#"{"a":"1","a":"2"}"#), Err(9));
    assert_eq!(fuzzing::sp(b"\xff"), Err(0));
    // Every prefix and every one-byte change of a valid object keeps the
    // target's properties.
    let valid = br#"{"k":"v\"\\\u00e9","l":""}"#;
    for end in 0..valid.len() {
        let _ = fuzzing::sp(&valid[..end]);
    }
    for i in 0..valid.len() {
        for b in [b'"', b'\\', b'{', b'}', b':', b',', b' ', b'u', b'0', 0] {
            let mut v = valid.to_vec();
            v[i] = b;
            let _ = fuzzing::sp(&v);
        }
    }
}

/// The `[[bin]]` names of fuzz/Cargo.toml, with their paths.
fn fuzz_bins() -> Vec<(String, String)> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("fuzz/Cargo.toml");
    let mut bins = Vec::new();
    let mut in_bin = false;
    let (mut name, mut path) = (None, None);
    for line in text.lines().map(str::trim).chain(["["]) {
        if line.starts_with('[') {
            if let (true, Some(n), Some(p)) = (in_bin, name.take(), path.take()) {
                bins.push((n, p));
            }
            in_bin = line == "[[bin]]";
            continue;
        }
        let value = |key: &str| {
            let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_owned())
        };
        if in_bin {
            name = value("name").or(name);
            path = value("path").or(path);
        }
    }
    bins
}

#[test]
fn fuzz_target_list_matches_the_cargo_fuzz_bins_and_bodies() {
    let listed: Vec<(String, String)> = fuzz_targets::all()
        .map(|t| (t.binary.to_owned(), format!("fuzz_targets/{}.rs", t.binary)))
        .collect();
    let mut bins = fuzz_bins();
    let mut want = listed.clone();
    bins.sort();
    want.sort();
    assert_eq!(bins, want, "fuzz/Cargo.toml [[bin]]s vs fuzz/targets.txt");
    for (_, path) in &listed {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz")
            .join(path);
        assert!(file.is_file(), "{}", file.display());
    }
    // Every listed target has a body, every corpus directory a listed target.
    assert_eq!(targets().len(), listed.len());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .expect("corpus/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    dirs.sort();
    for dir in dirs {
        let is_fuzzed = fuzz_targets::find(&dir).is_some();
        let is_checked = Target::of_dir(&dir).is_some();
        assert!(is_fuzzed || is_checked, "corpus/{dir} belongs to no target");
    }
}

#[test]
fn mqtt_v311_corpus_keeps_its_verdicts_and_round_trips() {
    let inputs = replay("mqtt-v311");
    assert!(inputs
        .iter()
        .any(|i| fuzzing::mqtt_v311(i).verdict.is_accept()));
    assert!(inputs
        .iter()
        .any(|i| !fuzzing::mqtt_v311(i).verdict.is_accept()));
}

#[test]
fn mqtt_v5_corpus_keeps_its_verdicts_and_round_trips() {
    let inputs = replay("mqtt-v5");
    assert!(inputs
        .iter()
        .any(|i| fuzzing::mqtt_v5(i).verdict.is_accept()));
    assert!(inputs
        .iter()
        .any(|i| !fuzzing::mqtt_v5(i).verdict.is_accept()));
}

#[test]
fn mqtt_stream_corpus_decodes_in_chunks_like_in_one_piece() {
    let inputs = replay("mqtt-stream");
    // The seeds hold whole sessions of both versions, chunked and not.
    let versions: BTreeSet<_> = inputs
        .iter()
        .filter(|i| fuzzing::mqtt_stream(i).verdict.is_accept())
        .filter_map(|i| {
            let (_, _, stream) = corpus::split_mqtt_stream(i);
            stream.get(8).copied()
        })
        .collect();
    assert!(
        versions.is_superset(&BTreeSet::from([4, 5])),
        "{versions:?}"
    );
}

#[test]
fn mqtt_roundtrip_corpus_builds_every_packet_type() {
    let inputs = replay("mqtt-roundtrip");
    let built: BTreeSet<(bool, u8)> = inputs
        .iter()
        .map(|i| {
            let mut u = Unstructured::new(i);
            let v5 = bool::arbitrary(&mut u).unwrap_or(false);
            let version = if v5 { Version::V5 } else { Version::V311 };
            let (p, _) = fuzzing::mqtt::arbitrary_packet(&mut u, version);
            (v5, p.packet_type() as u8)
        })
        .collect();
    // 14 packet types in 3.1.1, 15 in 5.0.
    assert_eq!(
        built.len(),
        29,
        "the seeds build every packet type: {built:?}"
    );
}
