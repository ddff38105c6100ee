//! Replays every scenario in `corpus/scenario` and checks it against
//! `corpus/scenario/expected.tsv` (read with [`sessionwire_check::corpus`]): verdict,
//! close reason, closing line (the offset column) and delivered messages, and
//! the `# closes REASON` comment every closing scenario carries on its
//! closing line.
//! Fails too when a close reason of section 1 (ids 0-9, 11-15) is produced by
//! no scenario.

use std::path::PathBuf;

use sessionwire::{CloseReason, Limits};
use sessionwire_check::corpus::{load_dir, CorpusDir};
use sessionwire_check::{closes, scenario};

fn corpus() -> CorpusDir {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus/scenario");
    match load_dir(&dir) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn section_1_every_scenario_replays_to_its_expected_verdict() {
    let corpus = corpus();
    assert!(!corpus.cases.is_empty());
    let mut failures = Vec::new();
    for case in &corpus.cases {
        assert!(case.name.ends_with(".scn"), "{}: not a scenario", case.name);
        let text = std::fs::read_to_string(&case.path).unwrap();
        let outcome = match scenario::run(&text, &Limits::default(), std::time::Instant::now()) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        if let Err(e) = closes::check_complete(&text, &outcome) {
            failures.push(format!("{}: {e}", case.name));
        }
        if case.code.is_some_and(|c| outcome.code != Some(c)) {
            failures.push(format!(
                "{}: reason code {:02x?}, expected 0x{:02x}\n{outcome}",
                case.name,
                outcome.code,
                case.code.unwrap_or_default()
            ));
        }
        let got = outcome.corpus_verdict();
        if got != case.expected {
            failures.push(format!(
                "{}: got {got}, expected {}\n{outcome}",
                case.name, case.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn section_1_every_close_reason_has_a_scenario() {
    let corpus = corpus();
    assert_eq!(CloseReason::ALL.len(), 15, "ids 0-9 and 11-15");
    for reason in CloseReason::ALL {
        let n = corpus
            .cases
            .iter()
            .filter(|c| c.expected.reason == Some(reason))
            .count();
        assert!(n >= 1, "no scenario closes {reason}");
    }
}

#[test]
fn section_1_every_close_reason_is_produced_by_its_scenario_when_replayed() {
    // Not only listed: each reason is what a replay actually decides.
    let corpus = corpus();
    let mut seen = Vec::new();
    for case in &corpus.cases {
        let text = std::fs::read_to_string(&case.path).unwrap();
        if let Ok(o) = scenario::run(&text, &Limits::default(), std::time::Instant::now()) {
            seen.extend(o.verdict);
        }
    }
    for reason in CloseReason::ALL {
        assert!(seen.contains(&reason), "no replay closes {reason}");
    }
}
