//! Serves this machine's GPUs to supcon-wgpu clients over WebSocket (feature `remote`): Burn's
//! remote server with the fused SupCon operations registered, so a client's loss runs the same
//! WGSL kernels here.
//!
//! ```text
//! export SUPCON_REMOTE_TOKEN=$(head -c 24 /dev/urandom | base64)   # the same on the client
//! cargo run --release --features remote --example serve_device -- --listen 192.168.1.20:3000
//! # on the client:
//! cargo run --release --features remote --example train_wgpu -- --remote ws://192.168.1.20:3000
//! ```
//!
//! It listens only on the address named (default 127.0.0.1:3000, this machine alone) and admits
//! only clients with the token. WebSocket is not encrypted: use it on a network you trust.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use supcon_wgpu::backend::device::{request_burn_device, request_burn_devices};
use supcon_wgpu::backend::remote;

#[derive(Parser, Debug)]
#[command(about = "Serve this machine's GPUs to supcon-wgpu clients (Burn's remote backend)")]
struct Args {
    /// Address and port to listen on: 127.0.0.1 serves this machine only, a LAN address that
    /// network; port 0 picks a free port (printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Adapter indices to serve (`0,1`); clients see them in this order. Default: the adapter
    /// wgpu prefers.
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// A file whose first line is the token; default: the SUPCON_REMOTE_TOKEN variable.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match serve(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> supcon_wgpu::Result<()> {
    let token = remote::read_token(args.token_file.as_deref())?;
    let devices = match &args.devices {
        None => vec![request_burn_device()?],
        Some(indices) => request_burn_devices(indices)?,
    };
    let server = remote::server(
        &devices.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        &token,
    )?;
    let listener = TcpListener::bind(&args.listen).map_err(|e| {
        supcon_wgpu::Error::Devices(format!("cannot listen on {}: {e}", args.listen))
    })?;
    let address = listener
        .local_addr()
        .map_err(|e| supcon_wgpu::Error::Devices(e.to_string()))?;
    for (i, (_, adapter)) in devices.iter().enumerate() {
        println!("device {i}: {} ({:?})", adapter.name, adapter.backend);
    }
    println!("serving on ws://{address} (Ctrl+C stops)");
    remote::serve(&server, listener)
}
