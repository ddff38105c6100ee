//! `echo-floor [ADDR]`: runs the throughput floor ([`sessionwire_bench::floor`])
//! on ADDR (default 127.0.0.1:0) and prints `listening ws on ADDR` once
//! bound. Stops on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use sessionwire_bench::floor;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: bad address: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let (listener, local) = match floor::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        };
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            eprintln!("error: cannot install signal handlers");
            return ExitCode::from(2);
        };
        println!("listening ws on {local}");
        tokio::select! {
            _ = floor::serve(listener) => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        ExitCode::SUCCESS
    })
}
