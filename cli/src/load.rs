//! `sessionwire load`: parses the load generator's options, runs it
//! ([`sessionwire_client::load`]) and prints its report.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use sessionwire_client::load::{self, LoadConfig};

/// The options of `sessionwire load`.
#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// WebSocket address of the server (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Connections opened at once during the ramp.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Each session sends a USER_PING this often during the exchange, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub ping_interval: u64,
    /// How long the exchange lasts, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub duration: u64,
    /// How long all sessions stay idle after the ramp before the server's
    /// idle memory is read, in seconds.
    #[arg(long, value_name = "S", default_value_t = 2)]
    pub settle: u64,
    /// Longest ramp, in seconds: sessions not connected by then count as
    /// failed.
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub ramp_timeout: u64,
    /// The server's process id: its memory is read from /proc/PID/status.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    fn config(&self) -> LoadConfig {
        LoadConfig {
            addr: self.addr,
            sessions: self.sessions,
            connect_concurrency: self.connect_concurrency,
            ping_interval: self.ping_interval,
            duration: self.duration,
            settle: self.settle,
            ramp_timeout: self.ramp_timeout,
            server_pid: self.server_pid,
        }
    }
}

/// Runs the load and prints its report.
pub fn run(args: &LoadArgs) -> ExitCode {
    match load::run_blocking(&args.config()) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    #[test]
    fn load_args_defaults_are_the_generator_defaults() {
        let parsed = Cli::parse_from(["load"]).load.config();
        let default = LoadConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}
