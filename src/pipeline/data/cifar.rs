//! CIFAR-10 / CIFAR-100 from their official binary versions, and their download.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{DataError, ImageDataset, byte_table, io_err};

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
