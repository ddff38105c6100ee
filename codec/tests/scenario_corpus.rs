//! Replays every scenario in `corpus/scenario` and checks it against
//! `corpus/scenario/expected.tsv`: verdict, close reason, closing line and
//! delivered messages. Fails too when a close reason of section 1 (ids 0-9,
//! 11-15) is produced by no scenario.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use sessionwire::session::scenario;
use sessionwire::{CloseReason, Limits};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus/scenario")
}

struct Expected {
    reason: Option<CloseReason>,
    line: Option<usize>,
    messages: u64,
}

fn expected() -> BTreeMap<String, Expected> {
    let text = fs::read_to_string(corpus().join("expected.tsv")).expect("expected.tsv");
    let mut rows = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "expected.tsv line {}: {line:?}", i + 1);
        let reason = match (cols[1], cols[2]) {
            ("accept", "-") => None,
            ("close", name) => Some(CloseReason::from_name(name).expect("a close reason name")),
            other => panic!("expected.tsv line {}: bad verdict {other:?}", i + 1),
        };
        let line_no = match cols[3] {
            "-" => None,
            n => Some(n.parse().expect("a line number")),
        };
        let messages = cols[4].parse().expect("a message count");
        let old = rows.insert(
            cols[0].to_owned(),
            Expected {
                reason,
                line: line_no,
                messages,
            },
        );
        assert!(old.is_none(), "{} listed twice", cols[0]);
    }
    rows
}

#[test]
fn section_1_every_scenario_replays_to_its_expected_verdict() {
    let expected = expected();
    let mut files = Vec::new();
    for entry in fs::read_dir(corpus()).expect("corpus/scenario") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "scn") {
            files.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    files.sort();
    assert_eq!(
        files,
        expected.keys().cloned().collect::<Vec<_>>(),
        "every .scn file has exactly one row in expected.tsv"
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = fs::read_to_string(corpus().join(file)).unwrap();
        let outcome = match scenario::run(&text, &Limits::default()) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let want = &expected[file];
        if (outcome.verdict, outcome.close_line, outcome.delivered)
            != (want.reason, want.line, want.messages)
        {
            failures.push(format!(
                "{file}: got {:?} at line {:?} with {} delivered, expected {:?} at line {:?} with {}\n{outcome}",
                outcome.verdict.map(CloseReason::name),
                outcome.close_line,
                outcome.delivered,
                want.reason.map(CloseReason::name),
                want.line,
                want.messages
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn section_1_every_close_reason_has_a_scenario() {
    let expected = expected();
    for reason in CloseReason::ALL {
        let n = expected
            .values()
            .filter(|e| e.reason == Some(reason))
            .count();
        assert!(n >= 1, "no scenario closes {reason}");
    }
    assert_eq!(CloseReason::ALL.len(), 15, "ids 0-9 and 11-15");
}
