//! Image folders: `root/class_name/*.png|jpg|jpeg`, read and written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{DataError, ImageDataset, byte_table, io_err};

/// Whether a file name has an image extension this loader reads (png, jpg, jpeg; any case).
fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        e == "png" || e == "jpg" || e == "jpeg"
    })
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Sorted `(name, path)` of the entries of `dir` that pass `keep` (hidden entries skipped).
/// Names that are not UTF-8 are shown lossily; entries stay distinct (sorted by name, then path).
fn list_dir(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_hidden(&name) && keep(&path) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A file of the folder that cannot be used, and why.
#[derive(Debug)]
pub struct BadImage {
    /// The file (or link).
    pub path: PathBuf,
    /// Why it cannot be used: the read or decode error (it names the file too).
    pub error: DataError,
}

/// The image files of one class folder, its sub-folders included, in sorted order of their
/// paths. Every directory is read once: a directory already read — the root, a class folder
/// (this one or another), or one met through an earlier link — is not entered again (a
/// symbolic link to it is logged and skipped), so a link loop ends and no image is read under
/// two classes. An entry that cannot be resolved (a dangling link, a link loop) goes to `bad`.
fn class_images(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    bad: &mut Vec<BadImage>,
) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for (_, path) in list_dir(dir, |_| true)? {
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(source) => {
                bad.push(BadImage {
                    error: DataError::Io {
                        path: path.clone(),
                        source,
                    },
                    path,
                });
                continue;
            }
        };
        if meta.is_dir() {
            let canonical = std::fs::canonicalize(&path).map_err(io_err(&path))?;
            if visited.insert(canonical) {
                files.extend(class_images(&path, visited, bad)?);
            } else {
                log::warn!(
                    "{}: a folder already read (a link to the root, to a class or back up the \
                     tree); not read again",
                    path.display()
                );
            }
        } else if meta.is_file() && is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// How many channels [`load_image_folder`] gives the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FolderChannels {
    /// One channel when every image of the folder is grayscale — stored as gray, or as RGB with
    /// equal red, green and blue in every pixel — three otherwise.
    #[default]
    Auto,
    /// One channel: colour images are converted to luma.
    Gray,
    /// Three channels: grayscale images are repeated in R, G and B.
    Rgb,
}

/// The largest `size` [`load_image_folder`] accepts (pixels per side).
pub const MAX_FOLDER_IMAGE_SIDE: u32 = 2048;

/// The largest image file a folder may hold, in pixels per side: larger ones are refused from
/// their header, before any pixel is decoded.
pub const MAX_SOURCE_IMAGE_SIDE: u32 = 16_384;

/// The most memory the decoder may allocate for one image (512 MiB, the image crate's
/// default): a 16,384² RGB image (768 MiB) is refused, a 12,000 × 12,000 one (412 MiB) is not.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// The decoder's limits for one file.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Whether a JPEG file holds its end-of-image marker (FF D9) within its last 4 KiB (data after
/// the marker is allowed). In a JPEG's coded data a 0xFF byte is always followed by 0x00 or a
/// restart marker, so FF D9 there is the marker. A file cut short lacks it, unless an embedded
/// thumbnail's own marker happens to fall within the cut file's last 4 KiB.
fn ends_with_jpeg_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// How [`load_image_folder_with`] reads a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderOptions {
    /// Side of the images after resizing, in pixels (1..=[`MAX_FOLDER_IMAGE_SIDE`]).
    pub size: u32,
    /// How many channels the images get.
    pub channels: FolderChannels,
    /// Skip files that cannot be read or decoded (returned in [`FolderLoad::skipped`]) instead
    /// of failing on the first one.
    pub skip_bad_images: bool,
    /// Threads decoding the images (`None`: one per core). The result does not depend on it.
    pub workers: Option<usize>,
    /// [`open_image_folder`](super::open_image_folder) only: host memory, in bytes, that may
    /// keep decoded images (as u8, at the final size) so that later epochs do not decode them
    /// again; 0 keeps none. Images are kept as first decoded until the budget is spent.
    pub cache_bytes: u64,
}

impl FolderOptions {
    /// Images resized to `size`, channels [`FolderChannels::Auto`], bad files an error, no
    /// cache.
    pub fn new(size: u32) -> Self {
        FolderOptions {
            size,
            channels: FolderChannels::Auto,
            skip_bad_images: false,
            workers: None,
            cache_bytes: 0,
        }
    }
}

/// A folder as loaded by [`load_image_folder_with`].
#[derive(Debug)]
pub struct FolderLoad {
    /// The images that loaded.
    pub dataset: ImageDataset,
    /// The files skipped (only with [`FolderOptions::skip_bad_images`]), in path order.
    pub skipped: Vec<BadImage>,
}

/// How a decoded image becomes planes of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Planes {
    /// Red, green and blue planes.
    Rgb,
    /// One plane of luma (colour converted).
    Luma,
    /// One plane, the red channel of the RGB image: for images known (or guessed) to be
    /// grayscale, whose three channels are equal.
    FirstOfRgb,
}

impl Planes {
    /// Planes per image.
    pub(super) fn count(self) -> usize {
        match self {
            Planes::Rgb => 3,
            Planes::Luma | Planes::FirstOfRgb => 1,
        }
    }
}

fn truncated(format: image::ImageFormat, what: &'static str) -> image::ImageError {
    image::ImageError::Decoding(image::error::DecodingError::new(
        image::error::ImageFormatHint::Exact(format),
        what,
    ))
}

/// Decodes one image file into `size×size` bytes, CHW (the planes `planes` says), written to
/// `out` (exactly that many bytes). Returns whether the image has colour (two channels differ
/// somewhere), which only [`Planes::FirstOfRgb`] looks at (else `false`).
pub(super) fn decode_bytes(
    path: &Path,
    size: u32,
    planes: Planes,
    out: &mut [u8],
) -> Result<bool, DataError> {
    let decode_err = |source| DataError::ImageDecode {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(io_err(path))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !ends_with_jpeg_eoi(&bytes) {
        // The JPEG decoder fills a truncated file's missing part without an error.
        return Err(decode_err(truncated(
            image::ImageFormat::Jpeg,
            JPEG_TRUNCATED,
        )));
    }
    reader.limits(decode_limits());
    let decoded = reader.decode().map_err(decode_err)?;
    let fit = |img: image::DynamicImage| {
        if img.width() == size && img.height() == size {
            img
        } else {
            img.resize_exact(size, size, image::imageops::FilterType::Triangle)
        }
    };
    if planes == Planes::Luma {
        out.copy_from_slice(fit(decoded).into_luma8().as_raw());
        return Ok(false);
    }
    let rgb = fit(decoded).into_rgb8();
    let plane = size as usize * size as usize;
    let mut colour = false;
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        if planes == Planes::FirstOfRgb {
            out[i] = px[0];
            colour |= px[1] != px[0] || px[2] != px[0];
        } else {
            for (c, &b) in px.iter().enumerate() {
                out[c * plane + i] = b;
            }
        }
    }
    Ok(colour)
}

const JPEG_TRUNCATED: &str = "truncated: no end-of-image marker (FF D9) in the last 4 KiB";
const PNG_TRUNCATED: &str = "truncated: no IEND chunk in the last 4 KiB";

/// Checks one image file without decoding its pixels: it can be opened, is not empty, is a
/// PNG or JPEG by its content, ends with its format's end marker (a file cut short does not),
/// and its header's size is within [`MAX_SOURCE_IMAGE_SIDE`] and [`MAX_DECODE_BYTES`]. What it
/// cannot see — damage inside the coded data — shows when the file is decoded.
pub(super) fn probe_image(path: &Path) -> Result<(), DataError> {
    use std::io::{Read, Seek, SeekFrom};
    let decode_err = |source| DataError::ImageDecode {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut tail = Vec::with_capacity(4096);
    file.seek(SeekFrom::Start(len.saturating_sub(4096)))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(io_err(path))?;
    file.rewind().map_err(io_err(path))?;
    let mut reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(io_err(path))?;
    match reader.format() {
        Some(f @ image::ImageFormat::Jpeg) if !ends_with_jpeg_eoi(&tail) => {
            return Err(decode_err(truncated(f, JPEG_TRUNCATED)));
        }
        Some(f @ image::ImageFormat::Png) if !tail.windows(4).any(|w| w == b"IEND") => {
            return Err(decode_err(truncated(f, PNG_TRUNCATED)));
        }
        _ => {}
    }
    reader.limits(decode_limits());
    // Reads the header only; the limits refuse an over-sized side here.
    let decoder = reader.into_decoder().map_err(decode_err)?;
    if image::ImageDecoder::total_bytes(&decoder) > MAX_DECODE_BYTES {
        return Err(decode_err(image::ImageError::Limits(
            image::error::LimitError::from_kind(image::error::LimitErrorKind::InsufficientMemory),
        )));
    }
    Ok(())
}

/// Loads `root/class_name/*.{png,jpg,jpeg}` with bad files an error:
/// [`load_image_folder_with`] with [`FolderOptions::new`]`(size)` and `channels`.
pub fn load_image_folder(
    root: &Path,
    size: u32,
    channels: FolderChannels,
) -> Result<ImageDataset, DataError> {
    let options = FolderOptions {
        channels,
        ..FolderOptions::new(size)
    };
    Ok(load_image_folder_with(root, &options)?.dataset)
}

/// Loads `root/class_name/**/*.{png,jpg,jpeg}` (extension in any case; other files ignored, as
/// are hidden entries whose name starts with `.`). Classes are the sorted subdirectory names of
/// `root` (label = index; names that are not UTF-8 are shown lossily and stay distinct classes);
/// a class's images are the image files in its folder and its sub-folders, in sorted path
/// order, each directory read once (see the guide, docs/training.md, "Data sets"). Images are
/// resized to `size×size` (triangle filter) unless already that size. `channels` chooses 1 or 3
/// channels; with [`FolderChannels::Auto`] a folder of grayscale images (even when stored as
/// RGB) loads with one channel.
///
/// A bad file — unreadable, a dangling link or link loop, empty, not an image, truncated, or
/// beyond [`MAX_SOURCE_IMAGE_SIDE`] / [`MAX_DECODE_BYTES`] — is an error naming it, or with
/// [`FolderOptions::skip_bad_images`] is left out and listed in [`FolderLoad::skipped`]; a
/// class left without image is then an error.
///
/// Errors also: `root` missing, no class folder, a class folder without (usable) image, `size`
/// 0 or over [`MAX_FOLDER_IMAGE_SIDE`], or a data set too large to hold in memory.
pub fn load_image_folder_with(
    root: &Path,
    options: &FolderOptions,
) -> Result<FolderLoad, DataError> {
    let FolderOptions {
        size,
        channels,
        skip_bad_images,
        workers,
        ..
    } = *options;
    check_options(options)?;
    let Listing {
        classes,
        items,
        mut bad,
    } = list_folder(root, skip_bad_images)?;
    let gray = channels == FolderChannels::Gray;
    let planes = if gray { 1 } else { 3 };
    let per_image = planes * size as usize * size as usize;
    // f32 pixels of the whole set, held in memory: refuse sizes that cannot be.
    let total_bytes = (items.len() as u64)
        .checked_mul(per_image as u64 * 4)
        .filter(|&b| b <= MAX_FOLDER_BYTES);
    if total_bytes.is_none() {
        return Err(DataError::Unsupported {
            what: format!(
                "{} images of {planes}×{size}×{size} need more than {} GiB as f32; \
                 choose a smaller --image-size",
                items.len(),
                MAX_FOLDER_BYTES >> 30
            ),
        });
    }

    // Decoded by a pool of `workers` threads (rayon: work stealing, so large and small files
    // balance), each image into its own slot of the output, in blocks: without skipping, the
    // first block holding a bad file is the last decoded. The output and the error reported do
    // not depend on the thread count.
    let table = byte_table();
    let pool = decode_pool(workers)?;
    let mode = if gray { Planes::Luma } else { Planes::Rgb };
    let mut images = vec![0f32; items.len() * per_image];
    let mut failed: Vec<Option<DataError>> = Vec::with_capacity(items.len());
    for (block, out) in items
        .chunks(DECODE_BLOCK)
        .zip(images.chunks_mut(DECODE_BLOCK * per_image))
    {
        let block_failed: Vec<Option<DataError>> = pool.install(|| {
            block
                .par_iter()
                .zip(out.par_chunks_mut(per_image))
                .map_init(
                    || vec![0u8; per_image],
                    |bytes, ((path, _), slot)| {
                        let decoded = decode_bytes(path, size, mode, bytes);
                        for (o, &b) in slot.iter_mut().zip(bytes.iter()) {
                            *o = table[b as usize];
                        }
                        decoded.err()
                    },
                )
                .collect()
        });
        let stop = !skip_bad_images && block_failed.iter().any(Option::is_some);
        failed.extend(block_failed);
        if stop {
            break;
        }
    }
    // Compact: the images that decoded, in order, with their labels.
    let mut labels = Vec::with_capacity(items.len());
    let mut kept = 0;
    for (i, ((path, label), error)) in items.iter().zip(failed).enumerate() {
        match error {
            None => {
                if kept != i {
                    images.copy_within(i * per_image..(i + 1) * per_image, kept * per_image);
                }
                labels.push(*label);
                kept += 1;
            }
            Some(error) => bad.push(BadImage {
                path: path.clone(),
                error,
            }),
        }
    }
    images.truncate(kept * per_image);
    images.shrink_to_fit();
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    if !skip_bad_images && !bad.is_empty() {
        return Err(bad.swap_remove(0).error);
    }
    let dataset = ImageDataset {
        images,
        labels,
        channels: planes,
        height: size as usize,
        width: size as usize,
        class_names: classes.iter().map(|(name, _)| name.clone()).collect(),
    };
    // A class whose every file was bad is as empty as one without files.
    if let Some(k) = dataset.class_counts().iter().position(|&c| c == 0) {
        return Err(DataError::EmptyClass {
            dir: classes[k].1.clone(),
        });
    }
    let dataset = if channels == FolderChannels::Auto && dataset.is_grayscale() {
        dataset.first_channel()
    } else {
        dataset
    };
    Ok(FolderLoad {
        dataset,
        skipped: bad,
    })
}

/// A folder's classes and image files, as [`list_folder`] finds them.
pub(super) struct Listing {
    /// `(name, folder)` of each class, sorted by name; label `k` is `classes[k]`.
    pub(super) classes: Vec<(String, PathBuf)>,
    /// Every image file with its label, class by class, each class in path order.
    pub(super) items: Vec<(PathBuf, u32)>,
    /// Entries that cannot be resolved (a dangling link, a link loop): only with
    /// `skip_bad_images` (else the first is the error).
    pub(super) bad: Vec<BadImage>,
}

/// The classes and image files of `root` (the rules of [`load_image_folder_with`]), nothing
/// decoded: `root` must hold class folders, each with at least one image file or bad entry.
pub(super) fn list_folder(root: &Path, skip_bad_images: bool) -> Result<Listing, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingDir {
            path: root.to_path_buf(),
            expected: "one subdirectory per class, each holding .png/.jpg/.jpeg images".to_string(),
        });
    }
    let classes = list_dir(root, Path::is_dir)?;
    if classes.is_empty() {
        return Err(DataError::NoClassFolders {
            root: root.to_path_buf(),
        });
    }
    // The root and every class folder count as read before any is walked, so that a link
    // inside one class to another class (or to the root) is never followed.
    let mut visited = HashSet::new();
    for dir in std::iter::once(root).chain(classes.iter().map(|(_, d)| d.as_path())) {
        visited.insert(std::fs::canonicalize(dir).map_err(io_err(dir))?);
    }
    let mut bad = Vec::new();
    let mut items: Vec<(PathBuf, u32)> = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        let bad_before = bad.len();
        let files = class_images(dir, &mut visited, &mut bad)?;
        if files.is_empty() && bad.len() == bad_before {
            return Err(DataError::EmptyClass { dir: dir.clone() });
        }
        items.extend(files.into_iter().map(|p| (p, label as u32)));
    }
    // Entries that cannot be resolved are reported before any decoding.
    if !skip_bad_images && !bad.is_empty() {
        return Err(bad.swap_remove(0).error);
    }
    Ok(Listing {
        classes,
        items,
        bad,
    })
}

/// Refuses a size or worker count that [`FolderOptions`] does not allow.
pub(super) fn check_options(options: &FolderOptions) -> Result<(), DataError> {
    if options.workers == Some(0) {
        return Err(DataError::Unsupported {
            what: "0 decoding workers (expected at least 1)".to_string(),
        });
    }
    if options.size == 0 || options.size > MAX_FOLDER_IMAGE_SIDE {
        return Err(DataError::Unsupported {
            what: format!(
                "image size {} (expected 1..={MAX_FOLDER_IMAGE_SIDE} pixels)",
                options.size
            ),
        });
    }
    Ok(())
}

/// A pool of `workers` decoding threads (`None`: one per core).
pub(super) fn decode_pool(workers: Option<usize>) -> Result<rayon::ThreadPool, DataError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers.unwrap_or(0))
        .thread_name(|i| format!("supcon-decode-{i}"))
        .build()
        .map_err(|e| DataError::Unsupported {
            what: format!("a pool of decoding threads: {e}"),
        })
}

/// The training and test folders of an image folder that comes split (the ImageNet layout):
/// `root` holds exactly two folders (hidden ones aside), `train` and `val` or `test`, each with
/// one sub-folder per class. `None` for any other `root` (its folders are then the classes).
pub fn split_folders(root: &Path) -> Result<Option<(PathBuf, PathBuf)>, DataError> {
    if !root.is_dir() {
        return Ok(None);
    }
    let dirs = list_dir(root, Path::is_dir)?;
    let names: Vec<&str> = dirs.iter().map(|(n, _)| n.as_str()).collect();
    // Sorted names: "test" comes before "train", "val" after it.
    Ok(match names.as_slice() {
        ["test", "train"] => Some((dirs[1].1.clone(), dirs[0].1.clone())),
        ["train", "val"] => Some((dirs[0].1.clone(), dirs[1].1.clone())),
        _ => None,
    })
}

/// Loads an image folder that comes split ([`split_folders`]): `train` and `test` each as
/// [`load_image_folder_with`] does, the test images labelled by their class's name in the
/// training folder's class list (a test class the training folder lacks is an error). With
/// [`FolderChannels::Auto`], both get three channels unless both are grayscale.
pub fn load_split_image_folder(
    train: &Path,
    test: &Path,
    options: &FolderOptions,
) -> Result<(FolderLoad, FolderLoad), DataError> {
    let mut train = load_image_folder_with(train, options)?;
    let mut test_load = load_image_folder_with(test, options)?;
    let by_name: std::collections::HashMap<&str, u32> = train
        .dataset
        .class_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let test_set = &mut test_load.dataset;
    let mut map = Vec::with_capacity(test_set.class_names.len());
    for name in &test_set.class_names {
        map.push(
            *by_name
                .get(name.as_str())
                .ok_or_else(|| DataError::UnknownClass {
                    class: name.clone(),
                    dir: test.join(name),
                    train: train.dataset.class_names.len(),
                })?,
        );
    }
    for l in &mut test_set.labels {
        *l = map[*l as usize];
    }
    test_set.class_names = train.dataset.class_names.clone();
    if train.dataset.channels != test_set.channels {
        // Auto chose one channel for one side only: the set is in colour.
        if train.dataset.channels == 1 {
            train.dataset = train.dataset.to_rgb();
        } else {
            *test_set = test_set.to_rgb();
        }
    }
    Ok((train, test_load))
}

/// The most memory [`load_image_folder`] fills with f32 pixels (16 GiB).
const MAX_FOLDER_BYTES: u64 = 16 << 30;

/// Images decoded between checks for a bad file (when bad files are errors).
const DECODE_BLOCK: usize = 4096;

/// Writes `data` as an image folder that [`load_image_folder`] reads back: `root/<class name>/
/// <index>.png`, 8-bit grayscale for one channel, RGB for three (pixels rounded to 1/255).
/// `root` must not exist yet or be empty, so nothing is overwritten.
pub fn write_image_folder(data: &ImageDataset, root: &Path) -> Result<(), DataError> {
    if data.channels != 1 && data.channels != 3 {
        return Err(DataError::Unsupported {
            what: format!("{}-channel images as PNG (expected 1 or 3)", data.channels),
        });
    }
    if root.exists()
        && std::fs::read_dir(root)
            .map_err(io_err(root))?
            .next()
            .is_some()
    {
        return Err(DataError::Unsupported {
            what: format!("writing into {}: the folder is not empty", root.display()),
        });
    }
    let (w, h) = (data.width as u32, data.height as u32);
    let plane = data.width * data.height;
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for i in 0..data.len() {
        let class = &data.class_names[data.labels[i] as usize];
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{i:06}.png"));
        let img = data.image(i);
        let mut png = std::io::Cursor::new(Vec::new());
        let encoded = if data.channels == 1 {
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([byte(img[(y * w + x) as usize])]))
                .write_to(&mut png, image::ImageFormat::Png)
        } else {
            image::RgbImage::from_fn(w, h, |x, y| {
                let p = (y * w + x) as usize;
                image::Rgb([byte(img[p]), byte(img[plane + p]), byte(img[2 * plane + p])])
            })
            .write_to(&mut png, image::ImageFormat::Png)
        };
        encoded.map_err(|source| DataError::ImageEncode {
            path: path.clone(),
            source,
        })?;
        // Whole files only: a crash leaves each image either complete or absent.
        crate::pipeline::replace_file(&path, png.get_ref()).map_err(io_err(&path))?;
    }
    Ok(())
}
