//! The reference server (`sessionwire serve`) as a child process for the
//! end-to-end tests: started on ephemeral loopback ports with its files in a
//! temporary directory, killed when the guard drops.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionwire_client::load::ProcessMemory;
use sessionwire_client::{ClientError, HttpReply};

use crate::sessionwire_bin;

/// How long the server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `sessionwire serve`; killed (and reaped) on drop.
pub struct Server {
    child: Child,
    /// The WebSocket and HTTP polling address.
    pub addr: SocketAddr,
    /// The control API address.
    pub control: SocketAddr,
    /// The MQTT (TCP) address, the listening line's third; `None` with
    /// `--mqtt-listen off`.
    pub mqtt: Option<SocketAddr>,
    /// The line the server printed at start.
    pub banner: String,
    /// The control API token.
    pub control_token: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `args` on top of ephemeral loopback ports (the
    /// MQTT one too, unless `args` give `--mqtt-listen`), an
    /// event log, a control token file and a users file in a new temporary
    /// directory.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(args, |_| Vec::new())
    }

    /// Like [`start`](Self::start); `prepare` may write files into the
    /// server's directory first (a users file, say) and returns more
    /// arguments.
    pub fn start_with(args: &[&str], prepare: impl FnOnce(&Path) -> Vec<String>) -> Server {
        Self::start_inner(args, prepare, false)
    }

    /// Like [`start_with`](Self::start_with), the server's standard error
    /// written to a file in its directory instead of the test's (read it
    /// with [`stderr_text`](Self::stderr_text)).
    pub fn start_with_stderr_file(
        args: &[&str],
        prepare: impl FnOnce(&Path) -> Vec<String>,
    ) -> Server {
        Self::start_inner(args, prepare, true)
    }

    /// What the server wrote to its standard error so far, when started
    /// with [`start_with_stderr_file`](Self::start_with_stderr_file).
    pub fn stderr_text(&self) -> String {
        let bytes = std::fs::read(self.dir.path().join("stderr.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn start_inner(
        args: &[&str],
        prepare: impl FnOnce(&Path) -> Vec<String>,
        stderr_file: bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = "e2e-control-token-0123456789abcdef";
        std::fs::write(dir.path().join("control-token"), format!("{token}\n"))
            .expect("writing the control token");
        let more = prepare(dir.path());
        let mut cmd = Command::new(sessionwire_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--control")
            .arg("127.0.0.1:0")
            .arg("--control-token-file")
            .arg(dir.path().join("control-token"))
            .arg("--events")
            .arg(dir.path().join("events.jsonl"))
            .args(args)
            .args(&more)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if stderr_file {
                Stdio::from(
                    std::fs::File::create(dir.path().join("stderr.log"))
                        .expect("creating the server's stderr file"),
                )
            } else {
                Stdio::inherit()
            });
        if !args.contains(&"--mqtt-listen") && !more.iter().any(|a| a == "--mqtt-listen") {
            cmd.arg("--mqtt-listen").arg("127.0.0.1:0");
        }
        let mut child = cmd.spawn().expect("starting sessionwire serve");
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let banner = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sessionwire serve printed no listening line");
            }
        };
        let addrs = addresses(&banner);
        assert!(
            addrs.len() >= 2,
            "expected two addresses in the listening line: {banner:?}"
        );
        Server {
            child,
            addr: addrs[0],
            control: addrs[1],
            mqtt: addrs.get(2).copied(),
            banner,
            control_token: token.to_owned(),
            dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's memory now.
    pub fn memory(&self) -> ProcessMemory {
        ProcessMemory::of(self.pid()).expect("reading /proc/PID/status of the server")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (up to `limit`) for the process to exit;
    /// returns its exit code (`None`: killed by a signal or still running).
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return exit.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The event log's path.
    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// Every event logged so far, one JSON value per line.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.events_path()).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line {l:?}: {e}")))
            .collect()
    }

    /// Waits (polling the log) for the first event that `matches`, up to
    /// `limit`; panics with the log when none comes.
    pub async fn wait_event(&self, limit: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| matches(e)) {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no matching event within {limit:?}; log: {:#?}",
                    self.events()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A control API request with the token.
    pub async fn control(
        &self,
        method: hyper::Method,
        path: &str,
        body: &str,
    ) -> Result<HttpReply, ClientError> {
        let auth = format!("Bearer {}", self.control_token);
        sessionwire_client::request(
            self.control,
            method,
            path,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body.to_owned(),
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `principal` with `password` to the users file through
/// `sessionwire add-user`.
pub fn add_user(users: &std::path::Path, principal: &str, password: &str) {
    use std::io::Write as _;
    let mut child = Command::new(sessionwire_bin())
        .arg("add-user")
        .arg("--users")
        .arg(users)
        .arg(principal)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sessionwire add-user");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "add-user failed");
}

/// Every `IP:PORT` in a line, in order.
fn addresses(line: &str) -> Vec<SocketAddr> {
    line.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .map(|w| w.trim_start_matches("ws://").trim_start_matches("http://"))
        .map(|w| w.trim_end_matches('/'))
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::addresses;

    #[test]
    fn listening_line_addresses_are_found_in_order() {
        let a = addresses("listening ws+http on 127.0.0.1:4000 control on 127.0.0.1:4001");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].port(), 4000);
        assert_eq!(a[1].port(), 4001);
        let a = addresses(
            "listening ws+http on 127.0.0.1:4000 control on 127.0.0.1:4001 mqtt on 127.0.0.1:4002",
        );
        assert_eq!(a.get(2).map(|a| a.port()), Some(4002));
        let a = addresses("listening ws+http on 127.0.0.1:4000 control on 127.0.0.1:4001 mqtt off");
        assert_eq!(a.get(2), None);
    }
}
