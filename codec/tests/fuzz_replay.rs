//! Replays every file of every fuzz target's corpus (`corpus/<target>/`) on
//! stable Rust, through the same function the fuzz target runs
//! (`sessionwire::fuzzing`): the target's properties must hold, and the
//! verdict must be the one recorded in the directory's `expected.tsv` and the
//! one `sessionwire::corpus::verdict` gives. A directory with no input file
//! fails.
//!
//! Recording: with `SESSIONWIRE_RECORD=<dir>` (as `fuzz/run.sh` and
//! `fuzz/triage.sh` set it), every input file of `corpus/<dir>/` that
//! `expected.tsv` does not list yet gets a row with its current verdict (a
//! regression baseline), before the replay checks it like any other.
#![cfg(feature = "fuzzing")]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::panic;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use sessionwire::corpus::{self, Expected, Outcome, Target};
use sessionwire::{fuzzing, Message, MessageType};

/// A fuzz target: its corpus directory, its verdict target and its body.
struct FuzzTarget {
    dir: &'static str,
    /// The `check` target whose verdict must agree; `None` for a fuzz-only
    /// target that `corpus::verdict` does not run (`session`).
    target: Option<Target>,
    run: fn(&[u8]) -> Outcome,
}

/// Every fuzz target; a new one is one more entry (and one in fuzz/run.sh).
const TARGETS: [FuzzTarget; 5] = [
    FuzzTarget {
        dir: "message",
        target: Some(Target::Message),
        run: fuzzing::message,
    },
    FuzzTarget {
        dir: "http-body",
        target: Some(Target::HttpBody),
        run: fuzzing::http_body,
    },
    FuzzTarget {
        dir: "incremental",
        target: Some(Target::Incremental),
        run: fuzzing::incremental,
    },
    FuzzTarget {
        dir: "roundtrip",
        target: Some(Target::Roundtrip),
        run: fuzzing::roundtrip,
    },
    FuzzTarget {
        dir: "session",
        target: None,
        run: |d| fuzzing::session(d, std::time::Instant::now()),
    },
];

fn corpus_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(dir)
}

fn target(dir: &str) -> &'static FuzzTarget {
    TARGETS
        .iter()
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
        let verdict = (t.run)(&bytes).verdict;
        rows.insert(name, verdict).expect("names are unique");
    }
    if rows.is_empty() {
        return;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("expected.tsv opens for appending");
    let mut add = String::new();
    if text.is_empty() {
        add.push_str("# file\tverdict\treason\toffset\tmessages\n");
    } else if !text.ends_with('\n') {
        add.push('\n');
    }
    add.push_str(
        "# Recorded from the fuzz target's verdict by the fuzz replay (SESSIONWIRE_RECORD): \
         a regression baseline, not derived by hand.\n",
    );
    // The rows as the corpus writer formats them, without its header.
    let written = rows.to_string();
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
        record_unlisted(t, &dir);
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
                    corpus::verdict(target, &bytes, &limits).expect("fuzz targets take any bytes")
                });
                if outcome.verdict != case.expected {
                    failures.push(format!(
                        "{shown}: verdict `{}`, expected.tsv says `{}`",
                        outcome.verdict, case.expected
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
    for t in &TARGETS {
        assert_eq!(t.target.map_or("session", |t| t.name()), t.dir);
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
