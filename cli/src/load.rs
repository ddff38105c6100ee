//! `sessionwire load`: parses the load generator's options, runs it
//! ([`sessionwire_client::load`]) and prints its report.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sessionwire::mqtt::{QoS, Version};
use sessionwire_client::load::{self, LoadConfig};
use sessionwire_client::mqtt_load::{self, MqttLoadConfig, Pattern};
use sessionwire_client::throughput::{self, RequestMix, ThroughputConfig, Transport};

/// What a load run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Hold many sessions, ping each every --ping-interval, read the
    /// server's memory.
    Hold,
    /// Request/response throughput: each session keeps --window requests in
    /// flight for --duration (or until --requests are answered).
    Throughput,
    /// MQTT publish/subscribe through a broker at --addr (its MQTT
    /// listener): --mqtt-pattern fan-in (--sessions publishers, one
    /// subscriber) or fan-out (one publisher, --sessions subscribers), at
    /// --qos, with --window messages on their way at once, for --duration.
    Mqtt,
}

/// `--mqtt-version`: the MQTT version the load's clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "311")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5")]
    V5,
}

/// The options of `sessionwire load`.
#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Hold)]
    pub mode: Mode,
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
    /// Throughput: `ws` (WebSocket) or `http` (HTTP polling).
    #[arg(long, default_value = "ws")]
    pub transport: Transport,
    /// Throughput: requests in flight per session.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub window: usize,
    /// Throughput: requests in all, shared among the sessions (default: as
    /// many as --duration allows).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Throughput: `ping` (USER_PING), `service` (an unknown service,
    /// answered with SERVICE_ERROR 100) or `both` in turn.
    #[arg(long, default_value = "both")]
    pub mix: RequestMix,
    /// MQTT: `fan-in` or `fan-out`.
    #[arg(long, default_value = "fan-in")]
    pub mqtt_pattern: Pattern,
    /// MQTT: the protocol version.
    #[arg(long, value_enum, default_value_t = MqttVersion::V5)]
    pub mqtt_version: MqttVersion,
    /// MQTT: QoS of the publications and subscriptions (0 or 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// MQTT: payload size in bytes (at least 20: index, sequence, time).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub payload: usize,
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

    fn mqtt_config(&self) -> MqttLoadConfig {
        MqttLoadConfig {
            addr: self.addr,
            version: match self.mqtt_version {
                MqttVersion::V311 => Version::V311,
                MqttVersion::V5 => Version::V5,
            },
            pattern: self.mqtt_pattern,
            connections: self.sessions,
            qos: if self.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            window: self.window,
            payload: self.payload,
            duration: Duration::from_secs(self.duration),
            settle: Duration::from_secs(self.settle),
            connect_concurrency: self.connect_concurrency,
            ramp_timeout: Duration::from_secs(self.ramp_timeout),
            server_pid: self.server_pid,
            ..MqttLoadConfig::default()
        }
    }

    fn throughput_config(&self) -> ThroughputConfig {
        ThroughputConfig {
            addr: self.addr,
            transport: self.transport,
            sessions: self.sessions,
            window: self.window,
            requests: self.requests,
            duration: Duration::from_secs(self.duration),
            mix: self.mix,
            connect_concurrency: self.connect_concurrency,
            ramp_timeout: Duration::from_secs(self.ramp_timeout),
        }
    }
}

/// Runs the load and prints its report.
pub fn run(args: &LoadArgs) -> ExitCode {
    let outcome = match args.mode {
        Mode::Throughput => throughput::run_blocking(&args.throughput_config())
            .map(|r| (r.to_string(), r.to_json(), r.is_clean())),
        Mode::Mqtt => mqtt_load::run_blocking(&args.mqtt_config())
            .map(|r| (r.to_string(), r.to_json(), r.is_clean())),
        Mode::Hold => {
            load::run_blocking(&args.config()).map(|r| (r.to_string(), r.to_json(), r.is_clean()))
        }
    };
    match outcome {
        Ok((text, json, clean)) => {
            if args.json {
                println!("{json}");
            } else {
                println!("{text}");
            }
            if clean {
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

    #[test]
    fn mqtt_args_reach_the_config() {
        let parsed = Cli::parse_from([
            "load",
            "--mode",
            "mqtt",
            "--addr",
            "127.0.0.1:1883",
            "--mqtt-pattern",
            "fan-out",
            "--mqtt-version",
            "311",
            "--qos",
            "0",
            "--sessions",
            "7",
            "--window",
            "5",
            "--payload",
            "100",
        ])
        .load;
        assert_eq!(parsed.mode, Mode::Mqtt);
        let config = parsed.mqtt_config();
        assert_eq!(config.pattern, Pattern::FanOut);
        assert_eq!(config.version, Version::V311);
        assert_eq!(config.qos, QoS::AtMostOnce);
        assert_eq!(
            (config.connections, config.window, config.payload),
            (7, 5, 100)
        );
        assert!(Cli::try_parse_from(["load", "--qos", "2"]).is_err());
    }

    #[test]
    fn throughput_args_reach_the_config() {
        let parsed = Cli::parse_from([
            "load",
            "--mode",
            "throughput",
            "--transport",
            "http",
            "--sessions",
            "3",
            "--window",
            "4",
            "--requests",
            "99",
            "--mix",
            "ping",
        ])
        .load;
        assert_eq!(parsed.mode, Mode::Throughput);
        let config = parsed.throughput_config();
        assert_eq!(config.transport, Transport::Polling);
        assert_eq!((config.sessions, config.window), (3, 4));
        assert_eq!(config.requests, Some(99));
        assert_eq!(config.mix, RequestMix::Ping);
        assert_eq!(config.duration, Duration::from_secs(10));
    }
}
