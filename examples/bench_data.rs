//! Benchmark of the image-folder reader as training uses it: a folder opened with
//! `open_image_folder` (listed, each file's header and end checked), then read in epochs — the
//! training set's seeded order in batches of `--batch`, read ahead by `prefetch` on a pool of
//! decoding threads (reading, decoding, resizing, converting to f32) while the loop draws each
//! batch's augmentation parameters, as `train_wgpu` does — at several numbers of workers, without
//! the byte cache and with it (a later epoch, every image cached).
//!
//! Two generated folders, written once into `--dir` (default: a fresh temporary folder, removed
//! at the end): `--pngs` 32×32 RGB PNGs (CIFAR-sized, loaded at 32×32) and `--jpegs` 500×375
//! RGB JPEGs (quality 85, the size of an average ImageNet photo, loaded at 224×224). Their pixels
//! are smooth gradients plus seeded noise, so the files have realistic sizes (noise does not
//! compress). Each figure is the median of `--runs` after one warm-up (the files are in the page
//! cache: what is measured is the CPU work, which is what a fast disk leaves).
//!
//! ```text
//! cargo run --release --example bench_data -- [--pngs 10000] [--jpegs 1000] [--workers 1,2,0]
//!     [--batch 256] [--runs 3] [--json PATH]
//! ```
//! `--workers 0` means one thread per core.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use supcon_wgpu::pipeline::augment::Recipe;
use supcon_wgpu::pipeline::data::{
    FolderChannels, FolderOptions, FolderSource, ImageSource, PREFETCH_BATCHES,
    load_image_folder_with, open_image_folder, prefetch,
};

#[derive(Parser)]
#[command(
    about = "Images per second of an image folder read for training, at several thread counts"
)]
struct Args {
    /// 32×32 PNGs to generate (0: none).
    #[arg(long, default_value_t = 10_000)]
    pngs: usize,
    /// 500×375 JPEGs to generate, loaded at 224×224 (0: none).
    #[arg(long, default_value_t = 1_000)]
    jpegs: usize,
    /// Decoding threads per row; 0 = one per core.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 0])]
    workers: Vec<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Timed opens and epochs per row (median reported), after one warm-up.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where to write the folders (kept); default: a temporary folder, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A small seeded generator (SplitMix64) for the noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u8 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u8
    }
}

/// Image `i` of `w × h`: a gradient whose direction and colours follow `i`, plus noise of ±16.
fn picture(i: usize, w: u32, h: u32) -> image::RgbImage {
    let mut noise = Noise(i as u64);
    let (a, b) = ((i % 7) as f32 + 1.0, (i % 5) as f32 + 1.0);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let base = [
            255.0 * (a * u).fract(),
            255.0 * (b * v).fract(),
            255.0 * ((u + v) * 0.5),
        ];
        image::Rgb(base.map(|c| (c + f32::from(noise.next() % 33) - 16.0).clamp(0.0, 255.0) as u8))
    })
}

/// Writes `count` images of `w × h` into 10 class folders under `root`; returns the mean file
/// size in bytes.
fn write_folder(
    root: &Path,
    count: usize,
    (w, h): (u32, u32),
    format: image::ImageFormat,
) -> Result<f64, Box<dyn std::error::Error>> {
    let ext = if format == image::ImageFormat::Png {
        "png"
    } else {
        "jpg"
    };
    let mut bytes = 0u64;
    for i in 0..count {
        let dir = root.join(format!("class{}", i % 10));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{i:06}.{ext}"));
        let img = picture(i, w, h);
        if format == image::ImageFormat::Jpeg {
            let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(file, 85).encode_image(&img)?;
        } else {
            img.save_with_format(&path, format)?;
        }
        bytes += std::fs::metadata(&path)?.len();
    }
    Ok(bytes as f64 / count.max(1) as f64)
}

struct Row {
    case: String,
    images: usize,
    mean_file_bytes: f64,
    workers: usize,
    /// Whether `workers` is one per core (`--workers 0`).
    all_cores: bool,
    /// Seconds to open the folder (list and check every file).
    open_s: f64,
    /// Seconds of an epoch that decodes every image.
    epoch_s: f64,
    /// Seconds of an epoch with every image in the byte cache.
    cached_s: f64,
    /// Seconds of `load_image_folder_with` (the whole folder decoded into memory at once): the
    /// same decoding without batches, prefetching or a cache, the baseline.
    load_s: f64,
}

/// Seconds of one epoch over `source`: the images in a seeded order, whole batches of `batch`,
/// read ahead by `prefetch` while this thread draws each batch's augmentation parameters.
fn epoch(
    source: &FolderSource,
    batch: usize,
    seed: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let [_, h, w] = source.shape();
    let augment = Recipe::Natural.config(h.min(w), vec![0.5; 3], vec![0.25; 3]);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..source.len()).collect();
    order.shuffle(&mut rng);
    let batches: Vec<Vec<usize>> = order.chunks_exact(batch).map(<[usize]>::to_vec).collect();
    let t = Instant::now();
    std::thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
        let mut values = 0usize;
        for pixels in prefetch(scope, source, batches, PREFETCH_BATCHES) {
            let pixels = pixels?;
            let params = augment.sample(pixels.len() / source.image_len(), h, w, &mut rng);
            values += pixels.len() + params.len();
        }
        std::hint::black_box(values);
        Ok(())
    })?;
    Ok(t.elapsed().as_secs_f64())
}

/// The median of `times`.
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let temp = args.dir.is_none();
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("supcon-bench-data-{}", std::process::id()))
    });
    let cases = [
        (
            "32×32 PNG → 32×32",
            args.pngs,
            (32, 32),
            image::ImageFormat::Png,
            32,
        ),
        (
            "500×375 JPEG → 224×224",
            args.jpegs,
            (500, 375),
            image::ImageFormat::Jpeg,
            224,
        ),
    ];
    println!(
        "cores: {cores}; {} timed load(s) per row after a warm-up",
        args.runs
    );
    let mut rows = Vec::new();
    for (name, count, dims, format, size) in cases {
        if count == 0 {
            continue;
        }
        let root = base.join(format!(
            "{}-{count}",
            if size == 32 { "png" } else { "jpeg" }
        ));
        let t = Instant::now();
        let mean_file_bytes = if root.is_dir() {
            // Written by an earlier run with the same --dir.
            let n = count.max(1) as f64;
            walk_bytes(&root)? as f64 / n
        } else {
            write_folder(&root, count, dims, format)?
        };
        println!(
            "{name}: {count} files, mean {:.1} KiB, ready in {:.1} s",
            mean_file_bytes / 1024.0,
            t.elapsed().as_secs_f64()
        );
        for &w in &args.workers {
            let workers = if w == 0 { cores } else { w };
            let options = FolderOptions {
                channels: FolderChannels::Rgb,
                workers: Some(workers),
                ..FolderOptions::new(size)
            };
            let batch = args.batch.min(count);
            let mut opens = Vec::new();
            let mut plain = Vec::new();
            let mut loads = Vec::new();
            for run in 0..=args.runs {
                let t = Instant::now();
                let opened = open_image_folder(&root, &options)?;
                let open_s = t.elapsed().as_secs_f64();
                assert_eq!(opened.source.len(), count, "every image opens");
                let epoch_s = epoch(&opened.source, batch, run as u64)?;
                let t = Instant::now();
                let loaded = load_image_folder_with(&root, &options)?;
                let load_s = t.elapsed().as_secs_f64();
                assert_eq!(loaded.dataset.len(), count, "every image loads");
                drop(loaded);
                if run > 0 {
                    opens.push(open_s);
                    plain.push(epoch_s);
                    loads.push(load_s);
                }
            }
            // With a cache for every image: the first epoch fills it, the later ones read it.
            let cached = open_image_folder(
                &root,
                &FolderOptions {
                    cache_bytes: u64::MAX,
                    ..options
                },
            )?
            .source;
            let mut cached_times = Vec::new();
            for run in 0..=args.runs {
                let seconds = epoch(&cached, batch, run as u64)?;
                if run > 0 {
                    cached_times.push(seconds);
                }
            }
            rows.push(Row {
                case: name.to_string(),
                images: count,
                mean_file_bytes,
                workers,
                all_cores: w == 0,
                open_s: median(opens),
                epoch_s: median(plain),
                cached_s: median(cached_times),
                load_s: median(loads),
            });
        }
    }
    if temp {
        let _ = std::fs::remove_dir_all(&base);
    }

    println!();
    println!(
        "| case | images | mean file | workers | open s | epoch images/s | cached images/s | \
         in-memory load images/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let workers = if r.all_cores {
            format!("{} (all)", r.workers)
        } else {
            r.workers.to_string()
        };
        let whole = (r.images / args.batch.min(r.images)) * args.batch.min(r.images);
        println!(
            "| {} | {} | {:.1} KiB | {workers} | {:.2} | {:.0} | {:.0} | {:.0} |",
            r.case,
            r.images,
            r.mean_file_bytes / 1024.0,
            r.open_s,
            whole as f64 / r.epoch_s,
            whole as f64 / r.cached_s,
            r.images as f64 / r.load_s
        );
    }
    if let Some(path) = &args.json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "case": r.case,
                    "images": r.images,
                    "mean_file_bytes": r.mean_file_bytes,
                    "workers": r.workers,
                    "all_cores": r.all_cores,
                    "open_s": r.open_s,
                    "epoch_s": r.epoch_s,
                    "cached_epoch_s": r.cached_s,
                    "in_memory_load_s": r.load_s,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// Total bytes of the files under `dir`, one level of class folders deep.
fn walk_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for class in std::fs::read_dir(dir)? {
        for file in std::fs::read_dir(class?.path())? {
            total += file?.metadata()?.len();
        }
    }
    Ok(total)
}
