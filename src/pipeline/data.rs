//! Image data sets for the training pipeline.
//!
//! - [`digits`]: the embedded UCI handwritten digits (1,797 images, 1×8×8, 10 classes), so the
//!   default run needs no download.
//! - [`load_cifar`]: CIFAR-10 / CIFAR-100 from their official binary versions.
//! - [`load_image_folder`]: a `root/class_name/*.png|jpg|jpeg` tree.
//! - [`stratified_split`]: a deterministic, per-class train/test split.
//!
//! Every loader returns an [`ImageDataset`]: f32 pixels in `[0, 1]`, NCHW row-major.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `b / 255` for every byte value, so that conversion is a table look-up.
fn byte_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as f32 / 255.0;
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Digits
// ---------------------------------------------------------------------------------------------

/// The UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998;
/// CC BY 4.0) as scikit-learn ships it: gzip CSV, 1,797 rows of 64 pixels (0..=16) and a label.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

const DIGITS_ORIGIN: &str = "digits.csv.gz";
const DIGITS_SIDE: usize = 8;
const DIGITS_PIXELS: usize = DIGITS_SIDE * DIGITS_SIDE;
const DIGITS_MAX: u32 = 16;
const DIGITS_CLASSES: usize = 10;

/// The embedded digits data set: 1,797 images, 1 channel, 8×8, pixels `value / 16`, class
/// names `"0"..="9"`.
pub fn digits() -> Result<ImageDataset, DataError> {
    parse_digits_csv_gz(DIGITS_CSV_GZ)
}

/// Parses a gzip-compressed CSV in the digits format: per line 64 integer pixels `0..=16`
/// (8×8, row-major) then the label `0..=9`; any number of rows (at least one). Empty lines are
/// skipped; every other line must have exactly 65 fields.
pub fn parse_digits_csv_gz(bytes: &[u8]) -> Result<ImageDataset, DataError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|source| DataError::Gzip {
            origin: DIGITS_ORIGIN.to_string(),
            source,
        })?;

    let csv_err = |line: usize, reason: String| DataError::Csv {
        origin: DIGITS_ORIGIN.to_string(),
        line,
        reason,
    };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let n_fields = line.split(',').count();
        if n_fields != DIGITS_PIXELS + 1 {
            return Err(csv_err(
                line_no,
                format!(
                    "expected {} comma-separated fields (64 pixels and a label), found {n_fields}",
                    DIGITS_PIXELS + 1
                ),
            ));
        }
        for (col, field) in line.split(',').enumerate() {
            let field = field.trim();
            let value: u32 = field.parse().map_err(|_| {
                csv_err(
                    line_no,
                    format!("field {}: {field:?} is not a non-negative integer", col + 1),
                )
            })?;
            if col < DIGITS_PIXELS {
                if value > DIGITS_MAX {
                    return Err(csv_err(
                        line_no,
                        format!(
                            "field {}: pixel value {value} is out of range 0..={DIGITS_MAX}",
                            col + 1
                        ),
                    ));
                }
                images.push(value as f32 / DIGITS_MAX as f32);
            } else {
                if value as usize >= DIGITS_CLASSES {
                    return Err(DataError::LabelOutOfRange {
                        origin: DIGITS_ORIGIN.to_string(),
                        record: line_no,
                        label: value,
                        n_classes: DIGITS_CLASSES,
                    });
                }
                labels.push(value);
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::EmptyDataset {
            what: DIGITS_ORIGIN.to_string(),
        });
    }
    Ok(ImageDataset {
        images,
        labels,
        channels: 1,
        height: DIGITS_SIDE,
        width: DIGITS_SIDE,
        class_names: (0..DIGITS_CLASSES).map(|k| k.to_string()).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Split
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// CIFAR
// ---------------------------------------------------------------------------------------------

/// Which CIFAR data set, and for CIFAR-100 which labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    /// CIFAR-10: 10 classes.
    Ten,
    /// CIFAR-100 with its 100 fine labels.
    HundredFine,
    /// CIFAR-100 with its 20 coarse labels (super-classes).
    HundredCoarse,
}

impl Cifar {
    /// Number of classes of these labels.
    pub fn n_classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::HundredFine => 100,
            Cifar::HundredCoarse => 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cifar::Ten => "CIFAR-10",
            Cifar::HundredFine | Cifar::HundredCoarse => "CIFAR-100",
        }
    }

    /// Bytes per record: label byte(s) then 3072 pixel bytes.
    fn record_size(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::HundredFine | Cifar::HundredCoarse => 2,
        }
    }

    /// Offset of the label used, within a record.
    fn label_offset(self) -> usize {
        match self {
            Cifar::Ten | Cifar::HundredCoarse => 0,
            Cifar::HundredFine => 1,
        }
    }

    fn subfolder(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::HundredFine | Cifar::HundredCoarse => "cifar-100-binary",
        }
    }

    fn files(self, split: Split) -> Vec<String> {
        match (self, split) {
            (Cifar::Ten, Split::Train) => (1..=5).map(|k| format!("data_batch_{k}.bin")).collect(),
            (Cifar::Ten, Split::Test) => vec!["test_batch.bin".to_string()],
            (_, Split::Train) => vec!["train.bin".to_string()],
            (_, Split::Test) => vec!["test.bin".to_string()],
        }
    }

    fn expected(self) -> String {
        let files = match self {
            Cifar::Ten => "data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin (test)",
            Cifar::HundredFine | Cifar::HundredCoarse => "train.bin and test.bin",
        };
        format!(
            "the official binary version: {files}, directly in the directory or in its {}/ subfolder",
            self.subfolder()
        )
    }

    fn names_file(self) -> &'static str {
        match self {
            Cifar::Ten => "batches.meta.txt",
            Cifar::HundredFine => "fine_label_names.txt",
            Cifar::HundredCoarse => "coarse_label_names.txt",
        }
    }

    fn default_names(self) -> Vec<String> {
        match self {
            Cifar::Ten => CIFAR10_NAMES.iter().map(|s| s.to_string()).collect(),
            _ => (0..self.n_classes()).map(|k| k.to_string()).collect(),
        }
    }
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training part.
    Train,
    /// The test part.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// The ten CIFAR-10 class names, in label order.
pub const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const CIFAR_SIDE: usize = 32;
const CIFAR_PIXELS: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;

impl Cifar {
    /// The address of the official binary archive (A. Krizhevsky's CIFAR page).
    pub fn archive_url(self) -> &'static str {
        match self {
            Cifar::Ten => "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            Cifar::HundredFine | Cifar::HundredCoarse => {
                "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
            }
        }
    }

    fn present(self, dir: &Path) -> bool {
        [Split::Train, Split::Test].iter().all(|&split| {
            [dir.to_path_buf(), dir.join(self.subfolder())]
                .iter()
                .any(|base| self.files(split).iter().all(|f| base.join(f).is_file()))
        })
    }
}

/// When a download gives up: a connection not made within `connect_s` seconds, or a transfer
/// slower than `min_bytes_per_s` for `stall_s` seconds, ends it with an error (a stalled network
/// never hangs a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Seconds allowed to connect.
    pub connect_s: u32,
    /// The slowest acceptable transfer, bytes per second...
    pub min_bytes_per_s: u32,
    /// ...sustained for this many seconds.
    pub stall_s: u32,
}

impl Default for TransferLimits {
    /// 30 s to connect; under 1 KiB/s for 60 s is a stall.
    fn default() -> Self {
        TransferLimits {
            connect_s: 30,
            min_bytes_per_s: 1024,
            stall_s: 60,
        }
    }
}

impl TransferLimits {
    /// curl's flags: fail on HTTP errors, follow redirects, retry twice, these limits.
    fn curl_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--fail", "--location", "--silent", "--show-error"]
            .map(String::from)
            .into();
        for (flag, value) in [
            ("--retry", 2),
            ("--connect-timeout", self.connect_s),
            ("--speed-limit", self.min_bytes_per_s),
            ("--speed-time", self.stall_s),
        ] {
            args.push(flag.into());
            args.push(value.to_string());
        }
        args
    }
}

/// Makes sure the CIFAR binary files are in `dir`. When [`load_cifar`] would not find them,
/// downloads the archive from `url` (default [`Cifar::archive_url`]) with the `curl` program
/// and unpacks the `.tar.gz` into `dir` (which then holds `cifar-10-batches-bin/` or
/// `cifar-100-binary/`). Any address curl takes works (`file://` included). Returns whether a
/// download happened.
///
/// Errors: curl missing or failing (no network), an archive that is not a `.tar.gz`, or one
/// without the expected files.
pub fn download_cifar(dir: &Path, which: Cifar, url: Option<&str>) -> Result<bool, DataError> {
    download_cifar_with(dir, which, url, &TransferLimits::default())
}

/// [`download_cifar`] with other [`TransferLimits`].
pub fn download_cifar_with(
    dir: &Path,
    which: Cifar,
    url: Option<&str>,
    limits: &TransferLimits,
) -> Result<bool, DataError> {
    if which.present(dir) {
        return Ok(false);
    }
    let url = url.unwrap_or(which.archive_url());
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let part = dir.join(format!(".{}.tar.gz.part", which.subfolder()));
    let status = std::process::Command::new("curl")
        .args(limits.curl_args())
        .arg("--output")
        .arg(&part)
        .arg(url)
        .status()
        .map_err(|e| {
            fail(format!(
                "cannot run curl ({e}); install curl, or download and unpack the archive into {} yourself",
                dir.display()
            ))
        })?;
    if !status.success() {
        let _ = std::fs::remove_file(&part);
        return Err(fail(format!(
            "curl failed ({status}); without a network, download the archive elsewhere and unpack it into {}",
            dir.display()
        )));
    }
    let unpacked = std::fs::File::open(&part)
        .map_err(|e| e.to_string())
        .and_then(|file| {
            tar::Archive::new(flate2::read::GzDecoder::new(file))
                .unpack(dir)
                .map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_file(&part);
    unpacked.map_err(|e| fail(format!("not a readable .tar.gz archive: {e}")))?;
    if !which.present(dir) {
        return Err(fail(format!(
            "the archive did not contain {}",
            which.expected()
        )));
    }
    Ok(true)
}

/// Loads CIFAR-10 or CIFAR-100 from the official binary version in `dir` (or in its
/// `cifar-10-batches-bin/` / `cifar-100-binary/` subfolder): 3 channels, 32×32, pixels
/// `byte / 255`.
///
/// - CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` (train), `test_batch.bin` (test);
///   records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B, each row-major).
///   Class names from `batches.meta.txt` when present, else [`CIFAR10_NAMES`].
/// - CIFAR-100: `train.bin`, `test.bin`; records of a coarse label byte, a fine label byte and
///   3072 pixel bytes. Names from `fine_label_names.txt` / `coarse_label_names.txt` when
///   present, else `"0".."99"` / `"0".."19"`.
///
/// Errors: missing directory or files (named), an empty file, a file length that is not a
/// multiple of the record size, a label out of range, a names file with the wrong count.
pub fn load_cifar(dir: &Path, which: Cifar, split: Split) -> Result<ImageDataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingDir {
            path: dir.to_path_buf(),
            expected: which.expected(),
        });
    }
    let files = which.files(split);
    // The directory itself or its subfolder: the first that holds every file, else the one
    // that holds the most (ties: the directory itself), whose missing files are reported.
    let candidates = [dir.to_path_buf(), dir.join(which.subfolder())];
    let missing_in = |base: &Path| -> Vec<String> {
        files
            .iter()
            .filter(|f| !base.join(f).is_file())
            .cloned()
            .collect()
    };
    let mut best: Option<(PathBuf, Vec<String>)> = None;
    for base in candidates {
        let missing = missing_in(&base);
        if best.as_ref().is_none_or(|(_, m)| missing.len() < m.len()) {
            best = Some((base, missing));
        }
    }
    let (base, missing) = best.expect("two candidates");
    if !missing.is_empty() {
        return Err(DataError::MissingFiles {
            dataset: format!("{} {split}", which.name()),
            dir: base,
            missing,
            expected: which.expected(),
        });
    }

    // Sizes first: validate and reserve the exact capacity once.
    let record = which.record_size();
    let paths: Vec<PathBuf> = files.iter().map(|f| base.join(f)).collect();
    let mut total_records = 0usize;
    for path in &paths {
        let len = std::fs::metadata(path).map_err(io_err(path))?.len();
        check_size(path, len, record)?;
        total_records += (len / record as u64) as usize;
    }

    let table = byte_table();
    let n_classes = which.n_classes();
    let mut images = Vec::with_capacity(total_records * CIFAR_PIXELS);
    let mut labels = Vec::with_capacity(total_records);
    for path in &paths {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        // The file may have changed since the metadata call.
        check_size(path, bytes.len() as u64, record)?;
        for (r, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[which.label_offset()] as u32;
            if label as usize >= n_classes {
                return Err(DataError::LabelOutOfRange {
                    origin: path.display().to_string(),
                    record: r,
                    label,
                    n_classes,
                });
            }
            labels.push(label);
            // CIFAR's pixel layout (R plane, G plane, B plane) already is CHW.
            images.extend(
                rec[which.label_bytes()..]
                    .iter()
                    .map(|&b| table[b as usize]),
            );
        }
    }

    let names_path = base.join(which.names_file());
    let class_names = if names_path.is_file() {
        read_class_names(&names_path, n_classes)?
    } else {
        which.default_names()
    };
    Ok(ImageDataset {
        images,
        labels,
        channels: 3,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
        class_names,
    })
}

fn check_size(path: &Path, len: u64, record: usize) -> Result<(), DataError> {
    if len == 0 {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    if !len.is_multiple_of(record as u64) {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            len,
            record_size: record,
        });
    }
    Ok(())
}

/// Class names, one per non-empty line (trimmed); there must be exactly `expected`.
fn read_class_names(path: &Path, expected: usize) -> Result<Vec<String>, DataError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != expected {
        return Err(DataError::BadClassNames {
            path: path.to_path_buf(),
            expected,
            found: names.len(),
        });
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------------------
// Image folder
// ---------------------------------------------------------------------------------------------

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
        let encoded = if data.channels == 1 {
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([byte(img[(y * w + x) as usize])]))
                .save_with_format(&path, image::ImageFormat::Png)
        } else {
            image::RgbImage::from_fn(w, h, |x, y| {
                let p = (y * w + x) as usize;
                image::Rgb([byte(img[p]), byte(img[plane + p]), byte(img[2 * plane + p])])
            })
            .save_with_format(&path, image::ImageFormat::Png)
        };
        encoded.map_err(|source| DataError::ImageEncode {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
