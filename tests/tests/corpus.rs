//! The bundled corpus through the library and through the real `sessionwire`
//! binary: every expected verdict, the exit codes, and the JSON output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sessionwire::polling::{Batch, BodyDecoder};
use sessionwire::Verdict;
use sessionwire::{CloseReason, Direction, Limits};
use sessionwire_check::corpus::{self, Target};
use sessionwire_tests::{corpus_root, sessionwire_bin};

/// The targets whose corpus the main job checks; each must have files.
const REQUIRED: [Target; 3] = [Target::Message, Target::HttpBody, Target::Scenario];

/// Every case of every known target that has a directory under `corpus/`;
/// fails if a required target has none, or any present one has no files.
fn cases() -> Vec<(Target, corpus::Case)> {
    let mut all = Vec::new();
    for target in REQUIRED {
        assert!(
            corpus_root().join(target.name()).is_dir(),
            "no corpus/{target}/"
        );
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_str().unwrap();
        let Some(target) = Target::of_dir(name) else {
            continue;
        };
        let loaded = corpus::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.cases.is_empty(), "no corpus files for {name}");
        all.extend(loaded.cases.into_iter().map(|c| (target, c)));
    }
    for target in REQUIRED {
        let n = all.iter().filter(|(t, _)| *t == target).count();
        assert!(n >= 20, "only {n} corpus files for {target}");
    }
    all
}

/// The http-body verdict reached by feeding the text one byte at a time, as
/// the server reads it.
fn http_body_byte_by_byte(text: &[u8], limits: &Limits) -> Verdict {
    let mut dec = BodyDecoder::new(limits.clone());
    let mut batch = Batch::default();
    let fed = text
        .iter()
        .try_for_each(|b| dec.feed(std::slice::from_ref(b), &mut batch.messages));
    batch.violation = fed.and_then(|()| dec.finish()).err();
    let batch = Direction::ClientToServer.check_batch(batch);
    match batch.violation {
        Some(v) => Verdict::close(&v, batch.messages.len()),
        None => Verdict::accept(batch.messages.len()),
    }
}

#[test]
fn corpus_every_file_gets_its_expected_verdict_from_the_library() {
    let mut per_target: BTreeMap<Target, usize> = BTreeMap::new();
    for (target, case) in cases() {
        // A row may set limits of its own; else these are the defaults.
        let limits = &case.limits;
        let bytes = std::fs::read(&case.path).unwrap();
        let got = corpus::verdict(target, &bytes, limits);
        assert_eq!(got, Ok(case.expected), "{}", case.path.display());
        match target {
            Target::HttpBody => assert_eq!(
                http_body_byte_by_byte(&bytes, limits),
                case.expected,
                "{} byte by byte",
                case.path.display()
            ),
            Target::Message => {
                // Every prefix decodes, and a fault lies within the prefix.
                for cut in 0..bytes.len().min(256) {
                    let v = corpus::verdict(target, &bytes[..cut], limits).unwrap();
                    assert!(
                        v.offset.unwrap_or(0) <= cut,
                        "{}[..{cut}]",
                        case.path.display()
                    );
                }
            }
            _ => {}
        }
        *per_target.entry(target).or_default() += 1;
    }
    for target in REQUIRED {
        assert!(
            per_target.get(&target).copied().unwrap_or(0) > 0,
            "{target}"
        );
    }
}

#[test]
fn corpus_covers_every_message_type_and_both_close_reasons() {
    let all = cases();
    let accepted = all.iter().filter(|(_, c)| c.expected.is_accept()).count();
    let reasons: Vec<_> = all.iter().filter_map(|(_, c)| c.expected.reason).collect();
    assert!(accepted >= 10);
    assert!(reasons.contains(&CloseReason::InvalidInboundMessage));
    assert!(reasons.contains(&CloseReason::MessageTooLarge));
    let mut seen = Vec::new();
    for (target, case) in &all {
        if *target == Target::Message && case.expected.is_accept() {
            let bytes = bytes::Bytes::from(std::fs::read(&case.path).unwrap());
            let m = sessionwire::Message::decode(&bytes, &Limits::default()).unwrap();
            seen.push(m.message_type());
        }
    }
    // Every type a client may send is accepted by some file; ABORT, which
    // only the server sends, by none.
    for ty in sessionwire::MessageType::ALL {
        let client_sends = Direction::ClientToServer.allows(ty);
        assert_eq!(
            seen.contains(&ty),
            client_sends,
            "{ty:?} accepted in corpus/message"
        );
    }
}

#[test]
fn section_3_check_gives_the_servers_verdict_on_a_client_sent_abort() {
    let root = corpus_root();
    let cases = [
        (
            "message",
            root.join("message/valid-abort.bin"),
            "message: close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages: message type 28 is never sent by a client",
        ),
        (
            "http-body",
            root.join("http-body/client-abort-after-ping.txt"),
            "http-body: close INVALID_INBOUND_MESSAGE (7) at offset 11, 1 message: message type 28 is never sent by a client",
        ),
    ];
    for (target, path, want) in cases {
        let out = run(&["check", "--target", target, path.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.lines().next().unwrap().ends_with(want), "{text}");
    }
}

fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(sessionwire_bin());
    cmd.args(args).env_remove("SESSIONWIRE_CORPUS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the sessionwire binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_on_the_bundled_corpus_prints_a_line_per_file_and_exits_0() {
    let total = cases().len();
    let out = run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    // One line a file; a scenario's transcript follows it, indented; the
    // summary line ends stdout, so that it survives a pipe.
    let (report, summary) = text.trim_end().rsplit_once('\n').expect("lines");
    assert!(
        summary.starts_with(&format!("checked {total} files (")),
        "{summary}"
    );
    assert!(summary.ends_with("0 mismatches"), "{summary}");
    let verdict_lines = report.lines().filter(|l| !l.starts_with(' ')).count();
    assert_eq!(verdict_lines, total, "{text}");
    // Every corpus folder is either checked or a fuzz target's own: no note.
    assert!(!stderr(&out).contains("skipping"), "{}", stderr(&out));
    assert!(!text.contains("MISMATCH"));
    let line = text
        .lines()
        .find(|l| l.contains("unknown-type-3f.bin"))
        .expect("the 0x3f case is in the corpus");
    assert!(
        line.ends_with(
            "message: close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages: unknown message type 0x3f"
        ),
        "{line}"
    );
    for target in REQUIRED {
        let needle = format!(": {target}: ");
        assert!(text.lines().any(|l| l.contains(&needle)), "{target}");
    }
}

#[test]
fn check_json_prints_one_parsable_object_per_file() {
    let total = cases().len();
    let out = run(&["check", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut per_target: BTreeMap<String, usize> = BTreeMap::new();
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert_eq!(v["matches"], serde_json::Value::Bool(true), "{line}");
        let verdict = v["verdict"].as_str().unwrap();
        assert!(verdict == "accept" || verdict == "close", "{line}");
        assert_eq!(v["expected"]["verdict"], v["verdict"]);
        if v["target"] == "scenario" {
            // A scenario reports what the session sent, and when.
            assert!(
                v["transcript"].as_array().is_some_and(|t| !t.is_empty()),
                "{line}"
            );
            assert!(verdict == "accept" || v["reason"].is_string(), "{line}");
        } else if verdict == "close" {
            assert!(
                v["reason"].is_string() && v["description"].is_string(),
                "{line}"
            );
        }
        if v["path"]
            .as_str()
            .unwrap()
            .ends_with("too-large-ffffffff.txt")
        {
            assert_eq!(v["reason"], "MESSAGE_TOO_LARGE");
            assert_eq!(v["reason_id"], 5);
            assert_eq!(v["offset"], 0);
            assert_eq!(v["violation"], "message-too-large");
        }
        *per_target
            .entry(v["target"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_target.values().sum::<usize>(), total);
    for target in REQUIRED {
        assert!(
            per_target.get(target.name()).copied().unwrap_or(0) > 0,
            "{target}"
        );
    }
}

/// A temporary `corpus/<target>/` directory holding `files` and `expected`.
fn temp_corpus(
    target: &str,
    files: &[(&str, &[u8])],
    expected: &str,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("expected.tsv"), expected).unwrap();
    (tmp, dir)
}

#[test]
fn check_exits_1_on_a_wrong_expected_verdict() {
    let (_tmp, dir) = temp_corpus(
        "message",
        &[("ping.bin", &[0x00, 0x38, 0x01]), ("close.bin", &[0x1d])],
        "ping.bin\tclose\tINVALID_INBOUND_MESSAGE\t0\t0\nclose.bin\taccept\t-\t-\t1\n",
    );
    let out = run(&["check", dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "ping.bin: MISMATCH expected close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages got accept, 1 message"
        ),
        "{text}"
    );
    assert_eq!(text.matches("MISMATCH").count(), 1, "{text}");
    // The same mismatch in JSON mode: one object per file, the note on stderr.
    let out = run(&["check", "--json", dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).lines().count(), 2);
    assert!(stderr(&out).contains("MISMATCH"));
}

#[test]
fn check_exits_2_on_usage_and_io_errors() {
    let missing = run(
        &[
            "check",
            "--target",
            "message",
            "/nonexistent/sessionwire/x.bin",
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("x.bin"));
    // Without --target too: the file is missing, whatever its target.
    let missing = run(&["check", "/no/such/file"], &[]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("/no/such/file: no such file or directory"),
        "{}",
        stderr(&missing)
    );
    assert!(
        !stderr(&missing).contains("--target"),
        "{}",
        stderr(&missing)
    );

    let tmp = tempfile::tempdir().unwrap();
    let loose = tmp.path().join("loose.bin");
    std::fs::write(&loose, [0x1d]).unwrap();
    let no_target = run(&["check", loose.to_str().unwrap()], &[]);
    assert_eq!(no_target.status.code(), Some(2));
    assert!(
        stderr(&no_target).contains("--target"),
        "{}",
        stderr(&no_target)
    );
    assert_eq!(
        run(
            &["check", "--target", "scenario", loose.to_str().unwrap()],
            &[]
        )
        .status
        .code(),
        Some(2)
    );
    assert_eq!(run(&["check", "--bogus"], &[]).status.code(), Some(2));
    assert_eq!(
        run(
            &["check", "--max-message-size", "0", loose.to_str().unwrap()],
            &[]
        )
        .status
        .code(),
        Some(2)
    );

    // A malformed expected.tsv, a file it does not list, a row naming no file.
    for expected in [
        "a.bin\taccept\t-\t-\n",
        "",
        "a.bin\taccept\t-\t-\t1\nb.bin\taccept\t-\t-\t1\n",
    ] {
        let (_t, dir) = temp_corpus("message", &[("a.bin", &[0x1d])], expected);
        let out = run(&["check", dir.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(2), "{expected:?}: {}", stderr(&out));
    }
}

#[test]
fn section_3_unknown_type_3f_closes_invalid_inbound_message_at_offset_0() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.bin");
    std::fs::write(&file, [0x3f, 1, 2, 3, 4]).unwrap();
    let out = run(
        &["check", "--target", "message", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn section_6_declared_length_over_max_message_size_closes_message_too_large() {
    // Declares a 64-byte body (65 with the type byte) and carries only 5 bytes.
    let (_tmp, dir) = temp_corpus(
        "http-body",
        &[("long.txt", b"AAAAQAQAAAAB")],
        "long.txt\tclose\tMESSAGE_TOO_LARGE\t0\t0\n",
    );
    let file = dir.join("long.txt");
    let out = run(
        &["check", "--max-message-size", "64", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("close MESSAGE_TOO_LARGE (5) at offset 0"));
    // Under the default limit the same body is merely cut short.
    let out = run(&["check", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("close INVALID_INBOUND_MESSAGE (7) at offset 5"));
    // A 0x3F message of 5 bytes is too large under a 4-byte maximum.
    let tmp = tempfile::tempdir().unwrap();
    let msg = tmp.path().join("m.bin");
    std::fs::write(&msg, [0x3f, 0, 0, 0, 0]).unwrap();
    let out = run(
        &[
            "check",
            "--target",
            "message",
            "--max-message-size",
            "4",
            msg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(stdout(&out).contains("close MESSAGE_TOO_LARGE (5) at offset 0"));
}

#[test]
fn check_skips_unknown_targets_of_a_corpus_root_with_a_note() {
    let (tmp, _dir) = temp_corpus(
        "message",
        &[("close.bin", &[0x1d])],
        "close.bin\taccept\t-\t-\t1\n",
    );
    let root = tmp.path().join("corpus");
    std::fs::create_dir_all(root.join("future-target")).unwrap();
    std::fs::write(root.join("future-target").join("x"), "not for this version").unwrap();
    std::fs::write(root.join("README.md"), "about").unwrap();
    for out in [
        run(&["check", "--corpus", root.to_str().unwrap()], &[]),
        run(&["check"], &[("SESSIONWIRE_CORPUS", &root)]),
    ] {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
        assert!(stdout(&out).contains("close.bin: message: accept, 1 message"));
        assert!(stderr(&out).contains("skipping"), "{}", stderr(&out));
        assert!(stderr(&out).contains("future-target"), "{}", stderr(&out));
    }
    // A corpus root with no known target has nothing to check: an error.
    std::fs::remove_dir_all(root.join("message")).unwrap();
    let out = run(&["check", "--corpus", root.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_compares_with_expected_tsv_only_for_the_directory_target() {
    let file = corpus_root().join("http-body").join("valid-user-ping.txt");
    let out = run(
        &["check", "--target", "message", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // The base64 text read as a message: 'A' (0x41) is no message type.
    assert!(
        stdout(&out).contains("message: close INVALID_INBOUND_MESSAGE (7) at offset 0"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("1 without an expected verdict"));
    let out = run(&["check", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("http-body: accept, 1 message"));
}
