//! `sessionwire`: runs inputs through the session protocol codec and prints
//! what a server decides about each (accept, or close with a reason), checked
//! against the corpus's `expected.tsv` records.
//!
//! Exit status: 0 when every verdict matches, 1 on a mismatch, 2 on a usage or
//! I/O error (an unreadable file, a malformed or inconsistent `expected.tsv`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod add_user;
mod load;
mod serve;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use sessionwire::mqtt::Version;
use sessionwire::{Limits, Outcome, Verdict};
use sessionwire_check::corpus::{self, CorpusDir, Target};
use sessionwire_check::fuzz_targets;
use sessionwire_check::mqtt::{self as mqtt_check, Report};
use sessionwire_check::scenario::ScenarioOutcome;

/// The corpus bundled with the workspace, as found at build time.
const BUNDLED_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus");

#[derive(Debug, Parser)]
#[command(name = "sessionwire", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode each file and print the server's verdict; compare with the
    /// expected verdicts of the file's directory (`expected.tsv`).
    ///
    /// With no PATH, checks the bundled corpus (every `corpus/<target>/`).
    /// The summary line ends the report on stdout (on stderr with --json).
    /// Exit status: 0 all verdicts match, 1 a mismatch, 2 a usage or I/O error.
    Check(CheckArgs),
    /// Open many WebSocket sessions to a server on loopback, exchange pings,
    /// and report sessions held, messages per second, latency percentiles,
    /// lost messages and (with --server-pid) the server's memory per session.
    /// With --mode throughput: keep --window requests in flight per session
    /// (WebSocket or HTTP polling) and report messages per second and latency.
    ///
    /// Exit status: 0 every session held and nothing lost, 1 otherwise.
    Load(load::LoadArgs),
    /// Run the reference server: WebSocket and HTTP polling on --listen, the
    /// control API on --control. Prints the bound addresses on one stdout
    /// line; stops on SIGINT or SIGTERM (exit 0).
    Serve(Box<serve::ServeArgs>),
    /// Add a user to a users file (or replace their password): the password
    /// is read from the first line of stdin and stored as an Argon2id hash.
    AddUser(add_user::AddUserArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Decoder to run (a corpus target: `message`, `http-body`, `mqtt`, ...); by default
    /// inferred from a path under `corpus/<target>/` (`corpus/mqtt-capture/` is `mqtt`). With no
    /// PATH, checks only that target.
    ///
    /// An `mqtt` file is the byte stream a client sends, as raw bytes or as hex text (only hex
    /// digits, whitespace and `#` comments, an even number of digits).
    #[arg(long)]
    target: Option<Target>,
    /// MQTT: the stream continues a connection of this version (`3.1.1` or `5`) whose CONNECT is
    /// not in the file, and packets are taken as they come. Without it the stream must start
    /// with its CONNECT, which sets the version.
    #[arg(long, value_name = "VERSION", value_parser = parse_mqtt_version)]
    mqtt_version: Option<Version>,
    /// Print one JSON object per file instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Largest message accepted, type byte included; for MQTT, the whole packet, fixed header
    /// included [default: 32768].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Largest decoded HTTP polling batch accepted [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_batch_size: Option<usize>,
    /// Corpus root to check when no PATH is given [default: the workspace's
    /// corpus/].
    #[arg(long, value_name = "DIR", env = "SESSIONWIRE_CORPUS")]
    corpus: Option<PathBuf>,
    /// Files, or directories searched recursively (skipping expected.tsv and
    /// README files).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// `3.1.1` (or its protocol level, `4`) or `5`.
fn parse_mqtt_version(s: &str) -> Result<Version, String> {
    match s {
        "3.1.1" | "4" => Ok(Version::V311),
        "5" | "5.0" => Ok(Version::V5),
        _ => Err(format!("`{s}` is not an MQTT version: `3.1.1` or `5`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => match check(&args) {
            Ok(summary) => summary.exit_code(),
            Err(usage) => {
                eprintln!("error: {usage}");
                ExitCode::from(2)
            }
        },
        Command::Load(args) => load::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::AddUser(args) => add_user::run(&args),
    }
}

/// One input to decode.
struct Job {
    path: PathBuf,
    /// How the path is printed.
    shown: PathBuf,
    target: Target,
}

#[derive(Default)]
struct Summary {
    files: usize,
    per_target: Vec<(Target, usize)>,
    accepted: usize,
    closed: usize,
    unexpected: usize,
    mismatches: usize,
    errors: usize,
}

impl Summary {
    fn exit_code(&self) -> ExitCode {
        if self.errors > 0 {
            ExitCode::from(2)
        } else if self.mismatches > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    fn count(&mut self, target: Target) {
        self.files += 1;
        match self.per_target.iter_mut().find(|(t, _)| *t == target) {
            Some((_, n)) => *n += 1,
            None => self.per_target.push((target, 1)),
        }
    }

    fn error(&mut self, what: impl std::fmt::Display) {
        eprintln!("error: {what}");
        self.errors += 1;
    }

    /// Prints the summary line: on stdout after the text report, on stderr
    /// with `--json` (whose stdout holds only JSON objects).
    fn report(&self, json: bool) {
        let targets: Vec<_> = self
            .per_target
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let targets = if targets.is_empty() {
            String::new()
        } else {
            format!(" ({})", targets.join(", "))
        };
        let mut line = format!(
            "checked {} file{}{targets}: {} accepted, {} closed, {} mismatch{}",
            self.files,
            plural(self.files, "s"),
            self.accepted,
            self.closed,
            self.mismatches,
            plural(self.mismatches, "es"),
        );
        if self.unexpected > 0 {
            line += &format!(", {} without an expected verdict", self.unexpected);
        }
        if self.errors > 0 {
            line += &format!(", {} error{}", self.errors, plural(self.errors, "s"));
        }
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

fn plural(n: usize, suffix: &'static str) -> &'static str {
    if n == 1 {
        ""
    } else {
        suffix
    }
}

fn limits(args: &CheckArgs) -> Result<Limits, String> {
    let mut b = Limits::builder();
    if let Some(n) = args.max_message_size {
        b = b.max_message_size(n);
    }
    if let Some(n) = args.max_batch_size {
        b = b.max_batch_size(n);
    }
    b.build().map_err(|e| format!("invalid limits: {e}"))
}

/// Checks every input; `Err` is a usage error found before anything ran.
fn check(args: &CheckArgs) -> Result<Summary, String> {
    let limits = limits(args)?;
    let mut summary = Summary::default();
    let jobs = if args.paths.is_empty() {
        bundled_jobs(args, &mut summary)
    } else {
        path_jobs(args, &mut summary)?
    };
    if jobs.is_empty() && summary.errors == 0 {
        summary.error("no corpus files found");
    }
    let mut dirs: HashMap<PathBuf, Option<CorpusDir>> = HashMap::new();
    let mut out = std::io::stdout().lock();
    for job in &jobs {
        summary.count(job.target);
        let bytes = match std::fs::read(&job.path) {
            Ok(b) => b,
            Err(e) => {
                summary.error(format_args!("{}: {e}", job.shown.display()));
                continue;
            }
        };
        // A directory's records hold for its own target only (not for a
        // --target that overrides it), and for MQTT without --mqtt-version.
        let expected = match inferred_target(&job.path) {
            Some(t) if t != job.target => None,
            Some(Target::Mqtt) if args.mqtt_version.is_some() => None,
            _ => expected_case(&job.path, &mut dirs, &mut summary),
        };
        // A row's own limits apply unless limits were given here.
        let own = args.max_message_size.is_none() && args.max_batch_size.is_none();
        let (expected, job_limits) = match expected {
            Some((verdict, code, case_limits)) if own => (Some((verdict, code)), case_limits),
            other => (
                other.map(|(verdict, code, _)| (verdict, code)),
                limits.clone(),
            ),
        };
        let (outcome, scenario, report) = match run_job(job.target, &bytes, &job_limits, args) {
            Ok(done) => done,
            Err(e) => {
                summary.error(format_args!("{}: {e}", job.shown.display()));
                continue;
            }
        };
        if outcome.verdict.is_accept() {
            summary.accepted += 1;
        } else {
            summary.closed += 1;
        }
        if expected.is_none() {
            summary.unexpected += 1;
        }
        // A scenario's code is its first close decision's (MQTT scenarios).
        let code = match &scenario {
            Some(sc) => sc.code,
            None => outcome.violation.and_then(|v| v.kind().reason_code()),
        };
        let mismatch =
            expected.filter(|(e, c)| *e != outcome.verdict || c.is_some_and(|c| Some(c) != code));
        let expected = expected.map(|(e, _)| e);
        let printed = if args.json {
            let mut line = json_line(job, &outcome, expected);
            if let (Some(map), Some(sc)) = (line.as_object_mut(), &scenario) {
                let entries: Vec<String> = sc.transcript.iter().map(|e| e.to_string()).collect();
                map.insert("transcript".into(), json!(entries));
                // An MQTT scenario's first close has a reason code too.
                map.insert("code".into(), json!(sc.code.map(|c| format!("0x{c:02x}"))));
                map.insert(
                    "matches".into(),
                    json!(expected.map(|_| mismatch.is_none())),
                );
            }
            if let (Some(map), Some(r)) = (line.as_object_mut(), &report) {
                mqtt_json(map, r);
            }
            writeln!(out, "{line}")
        } else {
            print_text(&mut out, job, &outcome, scenario.as_ref(), report.as_ref())
        };
        if let Some((e, c)) = mismatch {
            summary.mismatches += 1;
            let code_of =
                |c: Option<u8>| c.map(|c| format!(", code 0x{c:02x}")).unwrap_or_default();
            let line = format!(
                "{}: MISMATCH expected {e}{} got {}{}",
                job.shown.display(),
                code_of(c),
                outcome.verdict,
                code_of(code)
            );
            if args.json {
                eprintln!("{line}");
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
        if let Err(e) = printed {
            summary.error(format_args!("writing the report: {e}"));
            break;
        }
    }
    drop(out);
    summary.report(args.json);
    Ok(summary)
}

/// What one input gave: the outcome, and a scenario's transcript (the
/// responses sent and when) or an MQTT stream's report.
type JobResult = (Outcome, Option<ScenarioOutcome>, Option<Report>);

/// Runs one input.
fn run_job(
    target: Target,
    bytes: &[u8],
    limits: &Limits,
    args: &CheckArgs,
) -> Result<JobResult, corpus::InputError> {
    match target {
        Target::Scenario => {
            let sc = corpus::scenario_outcome(bytes, limits)?;
            let outcome = Outcome {
                verdict: sc.corpus_verdict(),
                violation: None,
            };
            Ok((outcome, Some(sc), None))
        }
        Target::Mqtt => {
            let stream = mqtt_check::read_input(bytes);
            let report = mqtt_check::report(&stream, args.mqtt_version, limits);
            Ok((report.outcome.clone(), None, Some(report)))
        }
        _ => Ok((corpus::outcome(target, bytes, limits)?, None, None)),
    }
}

/// The packets of an MQTT report, as `CONNECT@0 PUBLISH@15`.
fn packet_list(r: &Report) -> Vec<String> {
    r.packets
        .iter()
        .map(|(at, ty)| format!("{ty}@{at}"))
        .collect()
}

/// The MQTT fields of a `--json` line.
fn mqtt_json(map: &mut serde_json::Map<String, serde_json::Value>, r: &Report) {
    let version = r.version.map(|v| match v {
        Version::V311 => "3.1.1",
        Version::V5 => "5",
    });
    map.insert("mqtt_version".into(), json!(version));
    map.insert("packets".into(), json!(packet_list(r)));
    map.insert("code".into(), json!(r.code.map(|c| format!("0x{c:02x}"))));
    let sends = match r.response {
        mqtt_check::Response::None => None,
        resp => Some(resp.to_string()),
    };
    map.insert("server_sends".into(), json!(sends));
}

fn print_text(
    out: &mut impl std::io::Write,
    job: &Job,
    o: &Outcome,
    scenario: Option<&ScenarioOutcome>,
    report: Option<&Report>,
) -> std::io::Result<()> {
    write!(
        out,
        "{}: {}: {}",
        job.shown.display(),
        job.target,
        o.verdict
    )?;
    if let Some(c) = scenario.and_then(|s| s.code) {
        write!(out, ", code 0x{c:02x}")?;
    }
    match (o.violation, report) {
        (Some(v), Some(r)) => {
            let code = r
                .code
                .map(|c| format!(", code 0x{c:02x}"))
                .unwrap_or_default();
            writeln!(out, ": {}{code}: {}", v.kind(), r.response)?
        }
        (Some(v), None) => writeln!(out, ": {}", v.kind())?,
        (None, _) => writeln!(out)?,
    }
    if let Some(r) = report.filter(|r| !r.packets.is_empty()) {
        writeln!(out, "    packets: {}", packet_list(r).join(" "))?;
    }
    for entry in scenario.map(|s| &s.transcript[..]).unwrap_or_default() {
        writeln!(out, "    {entry}")?;
    }
    Ok(())
}

fn verdict_json(v: &Verdict) -> serde_json::Value {
    json!({
        "verdict": v.word(),
        "reason": v.reason.map(|r| r.name()),
        "reason_id": v.reason.map(|r| r.id()),
        "offset": v.offset,
        "messages": v.messages,
    })
}

fn json_line(job: &Job, o: &Outcome, expected: Option<Verdict>) -> serde_json::Value {
    let mut line = json!({
        "path": job.shown.to_string_lossy(),
        "target": job.target.name(),
    });
    if let (Some(map), serde_json::Value::Object(v)) =
        (line.as_object_mut(), verdict_json(&o.verdict))
    {
        map.extend(v);
        map.insert(
            "violation".into(),
            json!(o.violation.map(|v| v.kind().name())),
        );
        map.insert(
            "description".into(),
            json!(o.violation.map(|v| v.kind().to_string())),
        );
        map.insert(
            "expected".into(),
            json!(expected.as_ref().map(verdict_json)),
        );
        map.insert("matches".into(), json!(expected.map(|e| e == o.verdict)));
    }
    line
}

/// The expected verdict of the file at `path`, the MQTT reason code its row
/// gives (if any) and the limits its row sets (else the defaults), from its
/// directory's `expected.tsv` if there is one. A directory whose records do
/// not load is reported once, as an error.
fn expected_case(
    path: &Path,
    dirs: &mut HashMap<PathBuf, Option<CorpusDir>>,
    summary: &mut Summary,
) -> Option<(Verdict, Option<u8>, Limits)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let loaded = dirs.entry(dir).or_insert_with_key(|dir| {
        if !dir.join(corpus::EXPECTED_FILE).is_file() {
            return None;
        }
        corpus::load_dir(dir).map_err(|e| summary.error(e)).ok()
    });
    let name = path.file_name()?.to_str()?;
    let case = loaded.as_ref()?.cases.iter().find(|c| c.name == name)?;
    Some((case.expected, case.code, case.limits.clone()))
}

/// The files of the bundled corpus (or `--corpus DIR`): every directory named
/// for a known target; others are skipped with a note.
fn bundled_jobs(args: &CheckArgs, summary: &mut Summary) -> Vec<Job> {
    let root = args
        .corpus
        .clone()
        .unwrap_or_else(|| PathBuf::from(BUNDLED_CORPUS));
    // Print paths relative to the current directory when they are below it.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let cwd = std::env::current_dir().ok();
    let shown = |p: &Path| -> PathBuf {
        cwd.as_deref()
            .and_then(|c| p.strip_prefix(c).ok())
            .map_or_else(|| p.to_path_buf(), Path::to_path_buf)
    };
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) => {
            summary.error(format_args!("corpus {}: {e}", root.display()));
            return Vec::new();
        }
    };
    let mut dirs = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) if e.path().is_dir() => dirs.push(e.path()),
            Ok(_) => {}
            Err(e) => summary.error(format_args!("corpus {}: {e}", root.display())),
        }
    }
    dirs.sort();
    let mut jobs = Vec::new();
    for dir in dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let target = match Target::of_dir(name) {
            Some(t) => t,
            // A fuzz target's own corpus (`session`) is replayed by its
            // test, not decoded here: nothing to say about it.
            None if fuzz_targets::find(name).is_some() => continue,
            None => {
                let e = corpus::UnknownTarget(name.to_owned());
                eprintln!("note: skipping {}: {e}", shown(&dir).display());
                continue;
            }
        };
        if args.target.is_some_and(|t| t != target) {
            continue;
        }
        walk(&dir, target, &shown, &mut jobs, summary);
    }
    jobs
}

/// The target of a path under `corpus/<target>/`, as given or made absolute.
fn inferred_target(path: &Path) -> Option<Target> {
    Target::of_path(path).or_else(|| {
        std::fs::canonicalize(path)
            .ok()
            .and_then(|p| Target::of_path(&p))
    })
}

/// The files named on the command line, directories searched recursively.
fn path_jobs(args: &CheckArgs, summary: &mut Summary) -> Result<Vec<Job>, String> {
    let mut jobs = Vec::new();
    for path in &args.paths {
        if !path.exists() {
            return Err(format!("{}: no such file or directory", path.display()));
        }
        let target = args
            .target
            .or_else(|| inferred_target(path))
            .ok_or_else(|| {
                format!(
                    "cannot tell the target of {}: it is not under corpus/<target>/; \
                     pass --target (or --corpus DIR to check a corpus root)",
                    path.display()
                )
            })?;
        if path.is_dir() {
            walk(path, target, &Path::to_path_buf, &mut jobs, summary);
        } else {
            jobs.push(Job {
                path: path.clone(),
                shown: path.clone(),
                target,
            });
        }
    }
    Ok(jobs)
}

/// Every corpus file under `dir`, recursively, in name order.
fn walk(
    dir: &Path,
    target: Target,
    shown: &dyn Fn(&Path) -> PathBuf,
    jobs: &mut Vec<Job>,
    summary: &mut Summary,
) {
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                summary.error(e);
                continue;
            }
        };
        let name = entry.file_name().to_str().unwrap_or_default();
        if entry.file_type().is_file() && corpus::is_corpus_file(name) {
            jobs.push(Job {
                path: entry.path().to_path_buf(),
                shown: shown(entry.path()),
                target,
            });
        }
    }
}
