//! Image folders: `root/class_name/*.png|jpg|jpeg`, read and written.

use std::path::{Path, PathBuf};

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

/// Decodes one image file into `size×size`, CHW f32 in `[0, 1]` (three planes, or one for
/// `gray`), appended to `out`.
fn decode_image(
    path: &Path,
    size: u32,
    gray: bool,
    table: &[f32; 256],
    out: &mut Vec<f32>,
) -> Result<(), DataError> {
    let decode_err = |source| DataError::ImageDecode {
        path: path.to_path_buf(),
        source,
    };
    let reader = image::ImageReader::open(path)
        .map_err(io_err(path))?
        .with_guessed_format()
        .map_err(io_err(path))?;
    let decoded = reader.decode().map_err(decode_err)?;
    let fit = |img: image::DynamicImage| {
        if img.width() == size && img.height() == size {
            img
        } else {
            img.resize_exact(size, size, image::imageops::FilterType::Triangle)
        }
    };
    if gray {
        let luma = fit(decoded).into_luma8();
        out.extend(luma.as_raw().iter().map(|&b| table[b as usize]));
        return Ok(());
    }
    let rgb = fit(decoded).into_rgb8();
    let raw = rgb.as_raw();
    for c in 0..3 {
        out.extend(raw.iter().skip(c).step_by(3).map(|&b| table[b as usize]));
    }
    Ok(())
}

/// Loads `root/class_name/*.{png,jpg,jpeg}` (extension in any case; other files ignored, as are
/// hidden entries whose name starts with `.`). Classes are the sorted subdirectory names
/// (label = index); files are read in sorted order within a class. Images are resized to
/// `size×size` (triangle filter) unless already that size. `channels` chooses 1 or 3 channels;
/// with [`FolderChannels::Auto`] a folder of grayscale images (even when stored as RGB) loads
/// with one channel.
///
/// Errors: `root` missing, no class folder, a class folder without image, a file that cannot be
/// read or decoded (named), `size` 0 or over [`MAX_FOLDER_IMAGE_SIDE`], or a data set too large
/// to hold in memory.
pub fn load_image_folder(
    root: &Path,
    size: u32,
    channels: FolderChannels,
) -> Result<ImageDataset, DataError> {
    if size == 0 || size > MAX_FOLDER_IMAGE_SIDE {
        return Err(DataError::Unsupported {
            what: format!("image size {size} (expected 1..={MAX_FOLDER_IMAGE_SIDE} pixels)"),
        });
    }
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
    let mut items: Vec<(PathBuf, u32)> = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        let files = list_dir(dir, |p| p.is_file() && is_image_file(p))?;
        if files.is_empty() {
            return Err(DataError::EmptyClass { dir: dir.clone() });
        }
        items.extend(files.into_iter().map(|(_, p)| (p, label as u32)));
    }
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

    // Decode in parallel over contiguous chunks; results are joined in order, so the output
    // (and the first error reported) does not depend on the thread count.
    let table = byte_table();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    let chunk = items.len().div_ceil(threads);
    let parts: Vec<Result<Vec<f32>, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let table = &table;
                s.spawn(move || {
                    let mut out = Vec::with_capacity(part.len() * per_image);
                    for (path, _) in part {
                        decode_image(path, size, gray, table, &mut out)?;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut images = Vec::with_capacity(items.len() * per_image);
    for part in parts {
        images.extend_from_slice(&part?);
    }
    let dataset = ImageDataset {
        images,
        labels: items.iter().map(|(_, l)| *l).collect(),
        channels: planes,
        height: size as usize,
        width: size as usize,
        class_names: classes.into_iter().map(|(name, _)| name).collect(),
    };
    Ok(
        if channels == FolderChannels::Auto && dataset.is_grayscale() {
            dataset.first_channel()
        } else {
            dataset
        },
    )
}

/// The most memory [`load_image_folder`] fills with f32 pixels (16 GiB).
const MAX_FOLDER_BYTES: u64 = 16 << 30;

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
