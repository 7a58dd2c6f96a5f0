//! Image data sets for the training pipeline.
//!
//! - [`digits()`]: the embedded UCI handwritten digits (1,797 images, 1×8×8, 10 classes), so the
//!   default run needs no download.
//! - [`load_cifar`]: CIFAR-10 / CIFAR-100 from their official binary versions.
//! - [`load_image_folder`] / [`load_image_folder_with`]: a `root/class_name/**/*.png|jpg|jpeg`
//!   tree, bad files an error or skipped.
//! - [`open_image_folder`]: the same tree read lazily ([`FolderSource`]): checked up front,
//!   decoded by worker threads when a batch asks for the images, for folders of any size.
//! - [`stratified_split`]: a deterministic, per-class train/test split.
//!
//! Every loader returns an [`ImageDataset`]: f32 pixels in `[0, 1]`, NCHW row-major. The
//! pipeline reads any [`ImageSource`] (an [`ImageDataset`] or a [`FolderSource`]).

mod cifar;
mod digits;
mod folder;
mod source;
mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

pub use cifar::{
    CIFAR10_NAMES, Cifar, Split, TransferLimits, download_cifar, download_cifar_with, load_cifar,
};
pub use digits::{DIGITS_CSV_GZ, digits, parse_digits_csv_gz};
pub use folder::{
    BadImage, FolderChannels, FolderLoad, FolderOptions, MAX_DECODE_BYTES, MAX_FOLDER_IMAGE_SIDE,
    MAX_SOURCE_IMAGE_SIDE, load_image_folder, load_image_folder_with, load_split_image_folder,
    split_folders, write_image_folder,
};
pub use source::{ImageSource, PREFETCH_BATCHES, prefetch, sample_indices};
pub use stream::{
    CHANNEL_SAMPLE, FolderOpen, FolderSource, open_image_folder, open_split_image_folder,
};

/// Images as f32 in `[0, 1]`, NCHW row-major: image `i` is
/// `images[i*c*h*w .. (i+1)*c*h*w]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    /// All pixels, image after image, each image channel-major (`[c][h][w]`).
    pub images: Vec<f32>,
    /// One class index per image, `< class_names.len()`.
    pub labels: Vec<u32>,
    /// Channels per image (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Class names; label `k` is `class_names[k]`.
    pub class_names: Vec<String>,
}

impl ImageDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes (`class_names.len()`).
    pub fn n_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of f32 values per image (`channels * height * width`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (`channels * height * width` values, CHW).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// A new data set holding the images at `indices`, in that order (repeats allowed), with the
    /// same shape and class names.
    ///
    /// # Panics
    /// If an index is `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ImageDataset {
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        }
    }

    /// The same images with only their first channel (for images whose channels are equal).
    pub fn first_channel(&self) -> ImageDataset {
        let plane = self.height * self.width;
        let mut images = Vec::with_capacity(self.len() * plane);
        for i in 0..self.len() {
            images.extend_from_slice(&self.image(i)[..plane]);
        }
        ImageDataset {
            images,
            channels: 1,
            labels: self.labels.clone(),
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        }
    }

    /// The same images with their single channel repeated as R, G and B (a copy of `self` when
    /// it already has three channels).
    pub fn to_rgb(&self) -> ImageDataset {
        if self.channels != 1 {
            return self.clone();
        }
        let mut images = Vec::with_capacity(self.images.len() * 3);
        for i in 0..self.len() {
            let img = self.image(i);
            for _ in 0..3 {
                images.extend_from_slice(img);
            }
        }
        ImageDataset {
            images,
            channels: 3,
            labels: self.labels.clone(),
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        }
    }

    /// Whether every image has three equal channels (grayscale content stored as RGB) or one.
    pub fn is_grayscale(&self) -> bool {
        if self.channels == 1 {
            return true;
        }
        let plane = self.height * self.width;
        (0..self.len()).all(|i| {
            let img = self.image(i);
            (0..plane).all(|p| (1..self.channels).all(|c| img[c * plane + p] == img[p]))
        })
    }

    /// Number of images per class: element `k` counts label `k`. The length is `n_classes()`
    /// (longer only if some label is out of range, which the loaders never produce).
    pub fn class_counts(&self) -> Vec<usize> {
        let max_label = self
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let mut counts = vec![0usize; self.n_classes().max(max_label)];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// What can go wrong while loading or splitting a data set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Reading a file or directory failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data directory does not exist or is not a directory.
    #[error("data directory {} does not exist or is not a directory (expected {expected})", path.display())]
    MissingDir {
        /// The directory asked for.
        path: PathBuf,
        /// What the directory should hold.
        expected: String,
    },
    /// Files a data set needs are not there.
    #[error("{dataset}: missing {} in {} (expected {expected})", missing.join(", "), dir.display())]
    MissingFiles {
        /// Which data set (e.g. "CIFAR-10 test").
        dataset: String,
        /// The directory searched.
        dir: PathBuf,
        /// The names of the missing files.
        missing: Vec<String>,
        /// Which files are expected, and where.
        expected: String,
    },
    /// A binary file's length is not a whole number of records (truncated or wrong file).
    #[error(
        "{}: size {len} bytes is not a multiple of the {record_size}-byte record size \
         ({} whole records + {} extra bytes; truncated or not the right file?)",
        path.display(), len / *record_size as u64, len % *record_size as u64
    )]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// The record size in bytes.
        record_size: usize,
    },
    /// A data file holds no record.
    #[error("{}: the file is empty", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A label is not below the number of classes.
    #[error("{origin}: record {record}: label {label} is out of range (expected 0..{n_classes})")]
    LabelOutOfRange {
        /// The file (or embedded data set) the label comes from.
        origin: String,
        /// Zero-based record index in that file (for CSV: the line number, one-based).
        record: usize,
        /// The offending label.
        label: u32,
        /// The number of classes.
        n_classes: usize,
    },
    /// A CSV line cannot be parsed.
    #[error("{origin}: line {line}: {reason}")]
    Csv {
        /// The file (or embedded data set).
        origin: String,
        /// One-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The gzip stream cannot be decompressed (or is not UTF-8 text).
    #[error("{origin}: cannot decompress gzip CSV: {source}")]
    Gzip {
        /// The file (or embedded data set).
        origin: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A class-name file has the wrong number of names.
    #[error("{}: expected {expected} class names (one per line), found {found}", path.display())]
    BadClassNames {
        /// The names file.
        path: PathBuf,
        /// The number of classes the data set has.
        expected: usize,
        /// The number of non-empty lines found.
        found: usize,
    },
    /// An image file cannot be decoded.
    #[error("cannot decode image {}: {source}", path.display())]
    ImageDecode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An image file failed before (it is not decoded again).
    #[error("{}: {reason}", path.display())]
    ImageFailed {
        /// The image file.
        path: PathBuf,
        /// Why it failed the first time.
        reason: String,
    },
    /// An image file cannot be written.
    #[error("cannot write image {}: {source}", path.display())]
    ImageEncode {
        /// The image file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An image-folder root holds no class subdirectory.
    #[error(
        "{}: no class folders (expected one subdirectory per class, each holding \
         .png/.jpg/.jpeg images)", root.display()
    )]
    NoClassFolders {
        /// The root directory.
        root: PathBuf,
    },
    /// A class folder holds no image.
    #[error("class folder {} holds no .png/.jpg/.jpeg image", dir.display())]
    EmptyClass {
        /// The class folder.
        dir: PathBuf,
    },
    /// A data set (or label list) has no element.
    #[error("{what}: the data set is empty")]
    EmptyDataset {
        /// Which data set.
        what: String,
    },
    /// A class has too few images to appear in both the training and the test split.
    #[error(
        "class {class} has {count} image(s); a train/test split needs at least 2 per class \
         (add images or remove the class)"
    )]
    ClassTooSmall {
        /// The class label.
        class: u32,
        /// Its number of images.
        count: usize,
    },
    /// A test folder's class is not among the training folder's classes.
    #[error(
        "test class {class:?} ({}) is not one of the {train} classes of the training folder",
        dir.display()
    )]
    UnknownClass {
        /// The class name.
        class: String,
        /// Its folder.
        dir: PathBuf,
        /// How many classes the training folder has.
        train: usize,
    },
    /// An argument has an unsupported value.
    #[error("unsupported value: {what}")]
    Unsupported {
        /// What is wrong.
        what: String,
    },
    /// Downloading or unpacking a data set failed.
    #[error("downloading {url}: {reason}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong and what to do.
        reason: String,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `b / 255` for every byte value, so that conversion is a table look-up.
pub(super) fn byte_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as f32 / 255.0;
    }
    t
}

/// Splits indices `0..labels.len()` into `(train, test)`, class by class: of a class with `n`
/// images, `round(n * test_fraction)` go to test, but at least one goes to each side. Which ones
/// is drawn with a generator seeded by `seed`, so the split is deterministic for a seed. Both
/// lists are sorted, disjoint and together cover every index.
///
/// Errors: `test_fraction` not in the open interval `(0, 1)`, no label, or a class with a single
/// image (it could not be both trained on and tested).
pub fn stratified_split(
    labels: &[u32],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::Unsupported {
            what: format!(
                "test fraction {test_fraction} (expected a value in the open interval (0, 1))"
            ),
        });
    }
    if labels.is_empty() {
        return Err(DataError::EmptyDataset {
            what: "stratified_split labels".to_string(),
        });
    }
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut test = Vec::new();
    for (&class, members) in by_class.iter_mut() {
        let n = members.len();
        if n < 2 {
            return Err(DataError::ClassTooSmall { class, count: n });
        }
        let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
        members.shuffle(&mut rng);
        test.extend_from_slice(&members[..n_test]);
        train.extend_from_slice(&members[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}
