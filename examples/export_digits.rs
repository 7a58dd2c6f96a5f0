//! Writes the embedded UCI digits as an image folder (`ROOT/<digit>/<index>.png`), so the
//! `--dataset folder` path can be tried and measured on real images without a download.
//!
//! ```text
//! cargo run --release --example export_digits -- /tmp/digits-png          # 8×8 grayscale PNGs
//! cargo run --release --example export_digits -- /tmp/digits-rgb --rgb    # the same as RGB PNGs
//! cargo run --release --example train_wgpu -- --dataset folder --data-dir /tmp/digits-png --image-size 16
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use supcon_wgpu::pipeline::data;

/// Export the embedded digits (1,797 8×8 images, 10 classes) as PNG class folders.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Output folder (must not exist or be empty).
    root: PathBuf,
    /// Write RGB PNGs (three equal channels) instead of grayscale ones.
    #[arg(long)]
    rgb: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = data::digits().and_then(|d| {
        let d = if args.rgb { d.to_rgb() } else { d };
        data::write_image_folder(&d, &args.root).map(|()| d.len())
    });
    match result {
        Ok(n) => {
            println!("{n} images written to {}", args.root.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
