//! The README's quick starts, run as a newcomer would paste them: every shell
//! block marked `<!-- runnable: NAME -->` runs under bash in a fresh
//! directory, with `cargo run --release -p sessionwire-cli --` standing for
//! the binary under test and `127.0.0.1:8080` for a server the test started on
//! an ephemeral port. Then the newcomer's other stumbles: logs at the default
//! level, and `check` in a pipe.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sessionwire::session::ResponseCode;
use sessionwire_client::{ConnectOptions, WsClient};
use sessionwire_tests::server::Server;
use sessionwire_tests::{sessionwire_bin, workspace_root};

/// How the README runs the binary.
const CARGO_RUN: &str = "cargo run --release -p sessionwire-cli --";

/// The bound on one block or one step.
const STEP: Duration = Duration::from_secs(20);

/// The runnable shell blocks of README.md, by name.
fn blocks() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let mut blocks = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- runnable: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```sh"),
            "block {name}: a sh fence follows"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.insert(name.to_owned(), body.join("\n"));
    }
    blocks
}

/// Runs one block under bash in a temporary directory, bounded in time.
fn run_block(name: &str, server: Option<&Server>) -> Output {
    let mut script = blocks()
        .remove(name)
        .unwrap_or_else(|| panic!("README.md has no runnable block {name}"));
    script = script.replace(CARGO_RUN, &sessionwire_bin().display().to_string());
    if let Some(server) = server {
        script = script.replace("127.0.0.1:8080", &server.addr.to_string());
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let child = Command::new("timeout")
        .arg(STEP.as_secs().to_string())
        .args(["bash", "-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("running bash");
    assert!(
        child.status.success(),
        "block {name} failed: {}\n{}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    child
}

#[test]
fn readme_blocks_are_all_known_to_this_test() {
    let names: Vec<String> = blocks().into_keys().collect();
    assert_eq!(names, ["polling", "users"]);
}

#[test]
fn section_6_readme_polling_quick_start_connects_sends_and_polls() {
    let server = Server::start(&[]);
    let out = run_block("polling", Some(&server));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("35  29 100"), "{text}");
    assert_eq!(text.lines().last(), Some("AAAAAQYB"), "{text}");
}

#[test]
fn section_2_readme_users_quick_start_adds_a_user() {
    let out = run_block("users", None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn check_summary_line_survives_a_pipe() {
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!("{} check | tail -n 1", sessionwire_bin().display()))
        .env_remove("SESSIONWIRE_CORPUS")
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout);
    assert!(last.starts_with("checked "), "{last}");
    assert!(last.trim_end().ends_with("0 mismatches"), "{last}");
}

/// Lines of the server's stderr, as they come.
struct Logs {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Logs {
    /// Waits (bounded) for a line containing every one of `words`.
    fn wait_for(&mut self, words: &[&str]) -> String {
        let deadline = Instant::now() + STEP;
        let matches = |l: &String| words.iter().all(|w| l.contains(w));
        loop {
            if let Some(l) = self.seen.iter().find(|l| matches(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no log line with {words:?}:\n{}", self.seen.join("\n")),
            }
        }
    }
}

#[tokio::test]
async fn section_1_refusals_and_closes_show_at_the_default_log_level() {
    let mut child = Command::new(sessionwire_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--mqtt-listen", "off"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sessionwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    let mut stdout = BufReader::new(stdout);
    stdout.read_line(&mut banner).expect("the listening line");
    let addr = banner
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));
    let mut logs = Logs {
        lines: rx,
        seen: Vec::new(),
    };

    let old = ConnectOptions {
        version: 28,
        ..ConnectOptions::default()
    };
    let refused = tokio::time::timeout(STEP, WsClient::connect(addr, &old))
        .await
        .expect("bounded")
        .expect("an answer");
    assert_eq!(refused.response().code, ResponseCode::VersionNotSupported);
    let line = logs.wait_for(&["INFO", "session refused", "102"]);
    assert!(line.contains("ws"), "{line}");

    let mut client =
        tokio::time::timeout(STEP, WsClient::connect(addr, &ConnectOptions::default()))
            .await
            .expect("bounded")
            .expect("connected");
    tokio::time::timeout(STEP, client.close())
        .await
        .expect("bounded")
        .expect("closed");
    logs.wait_for(&["INFO", "session closed", "CLOSED_BY_CLIENT"]);

    let _ = child.kill();
    let _ = child.wait();
}
