//! Tests of the pipeline's data sets: the embedded digits, the stratified split, the CIFAR
//! binary loaders and the image-folder loader (on small files written to a temp dir).
#![cfg(feature = "pipeline")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use supcon_wgpu::pipeline::data::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "supcon-data-{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A way of reading an image folder: what [`load_image_folder_with`] returns.
type Loader = fn(&Path, &FolderOptions) -> Result<FolderLoad, DataError>;

/// The two implementations every folder test runs: decoded into memory up front, and opened
/// to be read as needed ([`open_image_folder`], every image then read through the source).
const LOADERS: [(&str, Loader); 2] = [
    ("in memory", load_image_folder_with),
    ("streamed", load_streamed),
];

fn load_streamed(root: &Path, options: &FolderOptions) -> Result<FolderLoad, DataError> {
    let opened = open_image_folder(root, options)?;
    Ok(FolderLoad {
        dataset: read_all(&opened.source)?,
        skipped: opened.skipped,
    })
}

/// Every image of `source`, in order, as an in-memory data set.
fn read_all(source: &dyn ImageSource) -> Result<ImageDataset, DataError> {
    let [channels, height, width] = source.shape();
    let all: Vec<usize> = (0..source.len()).collect();
    Ok(ImageDataset {
        images: source.read(&all)?,
        labels: source.labels().to_vec(),
        channels,
        height,
        width,
        class_names: source.class_names().to_vec(),
    })
}

/// `load` with bad files an error, at `size` with `channels`.
fn load_simple(
    load: Loader,
    root: &Path,
    size: u32,
    channels: FolderChannels,
) -> Result<ImageDataset, DataError> {
    let options = FolderOptions {
        channels,
        ..FolderOptions::new(size)
    };
    Ok(load(root, &options)?.dataset)
}

/// Runs a folder test body with each of [`LOADERS`].
fn for_each_loader(body: fn(Loader)) {
    for (how, load) in LOADERS {
        eprintln!("image folder read {how}");
        body(load);
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

fn csv_row(pixels: &[u32], label: u32) -> String {
    let mut fields: Vec<String> = pixels.iter().map(u32::to_string).collect();
    fields.push(label.to_string());
    fields.join(",")
}

// ---------------------------------------------------------------------------------------------
// Digits
// ---------------------------------------------------------------------------------------------

#[test]
fn digits_shape_range_and_counts() {
    let d = digits().unwrap();
    assert_eq!(d.len(), 1797);
    assert!(!d.is_empty());
    assert_eq!((d.channels, d.height, d.width), (1, 8, 8));
    assert_eq!(d.image_len(), 64);
    assert_eq!(d.images.len(), 1797 * 64);
    assert_eq!(d.n_classes(), 10);
    let names: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    assert_eq!(d.class_names, names);
    let (min, max) = d
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!(min, 0.0);
    assert_eq!(max, 1.0);
    let counts = d.class_counts();
    assert_eq!(counts.len(), 10);
    assert_eq!(counts.iter().sum::<usize>(), 1797);
    // The known per-class counts of the scikit-learn digits.
    assert_eq!(
        counts,
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
}

#[test]
fn digits_first_rows_match_csv() {
    let d = digits().unwrap();
    let row0: [u32; 64] = [
        0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
        0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
        0, 6, 13, 10, 0, 0, 0,
    ];
    let expected: Vec<f32> = row0.iter().map(|&v| v as f32 / 16.0).collect();
    assert_eq!(d.image(0), expected.as_slice());
    assert_eq!(d.labels[0], 0);
    assert_eq!(d.labels[1], 1);
    // Row 1 starts 0,0,0,12,13,5.
    assert_eq!(
        &d.image(1)[..6],
        &[0.0, 0.0, 0.0, 0.75, 13.0 / 16.0, 5.0 / 16.0]
    );
    assert_eq!(DIGITS_CSV_GZ.len(), 57_523);
}

#[test]
fn parse_small_csv_and_subset() {
    let a: Vec<u32> = (0..64).map(|i| i % 17).collect();
    let b: Vec<u32> = (0..64).map(|i| 16 - i % 17).collect();
    let text = format!("{}\r\n\n{}\n", csv_row(&a, 3), csv_row(&b, 9));
    let d = parse_digits_csv_gz(&gzip(&text)).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.labels, vec![3, 9]);
    assert_eq!(d.image(1)[0], 1.0);
    assert_eq!(d.image(0)[16], 1.0);
    assert_eq!(d.image(0)[17], 0.0);
    assert_eq!(d.image(0)[5], 5.0 / 16.0);
    let s = d.subset(&[1, 0, 1]);
    assert_eq!(s.labels, vec![9, 3, 9]);
    assert_eq!(s.image(0), d.image(1));
    assert_eq!(s.image(1), d.image(0));
    assert_eq!(s.class_names, d.class_names);
    let mut counts = vec![0; 10];
    counts[3] = 1;
    counts[9] = 2;
    assert_eq!(s.class_counts(), counts);
}

#[test]
fn parse_wrong_field_count() {
    let good = csv_row(&[0; 64], 1);
    let short = csv_row(&[0; 63], 1);
    let err = parse_digits_csv_gz(&gzip(&format!("{good}\n{short}\n"))).unwrap_err();
    match &err {
        DataError::Csv { line, reason, .. } => {
            assert_eq!(*line, 2);
            assert!(reason.contains("64"), "{reason}");
        }
        other => panic!("expected Csv error, got {other:?}"),
    }
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn parse_non_number() {
    let mut fields: Vec<String> = vec!["0".to_string(); 64];
    fields[10] = "x7".to_string();
    fields.push("4".to_string());
    let err = parse_digits_csv_gz(&gzip(&fields.join(","))).unwrap_err();
    match &err {
        DataError::Csv { line, reason, .. } => {
            assert_eq!(*line, 1);
            assert!(reason.contains("x7"), "{reason}");
        }
        other => panic!("expected Csv error, got {other:?}"),
    }
}

#[test]
fn parse_pixel_out_of_range() {
    let mut px = [0u32; 64];
    px[3] = 17;
    let err = parse_digits_csv_gz(&gzip(&csv_row(&px, 4))).unwrap_err();
    assert!(matches!(err, DataError::Csv { line: 1, .. }), "{err:?}");
}

#[test]
fn parse_label_out_of_range() {
    let text = format!("{}\n{}\n", csv_row(&[1; 64], 2), csv_row(&[1; 64], 12));
    let err = parse_digits_csv_gz(&gzip(&text)).unwrap_err();
    match err {
        DataError::LabelOutOfRange {
            label, n_classes, ..
        } => {
            assert_eq!(label, 12);
            assert_eq!(n_classes, 10);
        }
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
}

#[test]
fn parse_empty_and_not_gzip() {
    let err = parse_digits_csv_gz(&gzip("\n\n")).unwrap_err();
    assert!(matches!(err, DataError::EmptyDataset { .. }), "{err:?}");
    let err = parse_digits_csv_gz(b"0,1,2 not gzip").unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Stratified split
// ---------------------------------------------------------------------------------------------

#[test]
fn split_deterministic_disjoint_covering_proportional() {
    let d = digits().unwrap();
    let (train, test) = stratified_split(&d.labels, 0.2, 7).unwrap();
    let (train2, test2) = stratified_split(&d.labels, 0.2, 7).unwrap();
    assert_eq!(train, train2);
    assert_eq!(test, test2);
    assert!(train.windows(2).all(|w| w[0] < w[1]));
    assert!(test.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..d.len()).collect::<Vec<_>>());
    let counts = d.class_counts();
    let test_counts = d.subset(&test).class_counts();
    for (k, (&n, &t)) in counts.iter().zip(&test_counts).enumerate() {
        let want = n as f64 * 0.2;
        assert!((t as f64 - want).abs() <= 1.0, "class {k}: {t} test of {n}");
    }
    let (train3, test3) = stratified_split(&d.labels, 0.2, 8).unwrap();
    assert_ne!(test, test3);
    assert_eq!(test.len(), test3.len());
    assert_eq!(train.len(), train3.len());
}

#[test]
fn split_keeps_one_on_each_side() {
    // With fraction 0.9 each class keeps one in train; with 0.1 a class of two still puts one
    // in test (round(0.2) would be 0: the class would be missing from the test set).
    let labels = [1u32, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    let (train, test) = stratified_split(&labels, 0.9, 1).unwrap();
    let train_labels: Vec<u32> = train.iter().map(|&i| labels[i]).collect();
    assert_eq!(train_labels.iter().filter(|&&l| l == 1).count(), 1);
    assert_eq!(train_labels.iter().filter(|&&l| l == 2).count(), 1);
    assert_eq!(test.len(), labels.len() - 2);
    let (train, test) = stratified_split(&labels, 0.1, 1).unwrap();
    let test_labels: Vec<u32> = test.iter().map(|&i| labels[i]).collect();
    assert_eq!(test_labels.iter().filter(|&&l| l == 1).count(), 1);
    assert_eq!(test_labels.iter().filter(|&&l| l == 2).count(), 1);
    assert_eq!(train.len(), labels.len() - 2);
    // A class of one image cannot be on both sides: an error that names it.
    let err = stratified_split(&[0, 1, 1, 1], 0.2, 0).unwrap_err();
    assert!(
        matches!(err, DataError::ClassTooSmall { class: 0, count: 1 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("class 0 has 1 image"), "{err}");
}

#[test]
fn split_bad_fraction() {
    let labels = [0u32, 1, 0, 1];
    for f in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
        let err = stratified_split(&labels, f, 0).unwrap_err();
        assert!(matches!(err, DataError::Unsupported { .. }), "{f}: {err:?}");
    }
    let err = stratified_split(&[], 0.5, 0).unwrap_err();
    assert!(matches!(err, DataError::EmptyDataset { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// CIFAR
// ---------------------------------------------------------------------------------------------

/// A record's pixel byte at position `p`, varied by record `r` and channel so they differ.
fn pixel_byte(r: usize, p: usize) -> u8 {
    // p / 1024 is the channel: each plane gets its own offset.
    ((p * 7 + (p / 1024) * 85 + r * 31) % 256) as u8
}

/// `n` records with the given label bytes.
fn cifar_records(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (r, lab) in labels.iter().enumerate() {
        out.extend_from_slice(lab);
        out.extend((0..3072).map(|p| pixel_byte(r, p)));
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Writes a CIFAR-10 layout to `dir`: batch k holds one record with label k, test two.
fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 1..=5u8 {
        write(
            &dir.join(format!("data_batch_{k}.bin")),
            &cifar_records(&[&[k]]),
        );
    }
    write(&dir.join("test_batch.bin"), &cifar_records(&[&[9], &[0]]));
}

fn check_pixels(d: &ImageDataset, i: usize, r: usize) {
    let img = d.image(i);
    assert_eq!(img.len(), 3072);
    for p in [0, 1, 1023, 1024, 2047, 2048, 3071] {
        assert_eq!(
            img[p],
            pixel_byte(r, p) as f32 / 255.0,
            "image {i} pixel {p}"
        );
    }
    let expected: Vec<f32> = (0..3072).map(|p| pixel_byte(r, p) as f32 / 255.0).collect();
    assert_eq!(img, expected.as_slice());
}

#[test]
fn cifar10_train_and_test() {
    let tmp = TempDir::new("c10");
    write_cifar10(tmp.path());
    let train = load_cifar(tmp.path(), Cifar::Ten, Split::Train).unwrap();
    assert_eq!(train.len(), 5);
    assert_eq!((train.channels, train.height, train.width), (3, 32, 32));
    assert_eq!(train.labels, vec![1, 2, 3, 4, 5]);
    assert_eq!(train.class_names[0], "airplane");
    assert_eq!(train.class_names[9], "truck");
    assert_eq!(train.n_classes(), 10);
    for i in 0..5 {
        check_pixels(&train, i, 0);
    }
    // Channel order: image values 0..1024 are the R plane (the record's bytes 1..1025), then G,
    // then B; pixel_byte differs between planes, so a reordering would fail check_pixels.
    assert_ne!(train.image(0)[1025], train.image(0)[1]);

    let test = load_cifar(tmp.path(), Cifar::Ten, Split::Test).unwrap();
    assert_eq!(test.labels, vec![9, 0]);
    check_pixels(&test, 0, 0);
    check_pixels(&test, 1, 1);
}

#[test]
fn cifar10_meta_file_and_subfolder() {
    let tmp = TempDir::new("c10sub");
    let sub = tmp.path().join("cifar-10-batches-bin");
    write_cifar10(&sub);
    let names = ["a0", "b1", "c2", "d3", "e4", "f5", "g6", "h7", "i8", "j9"];
    write(
        &sub.join("batches.meta.txt"),
        format!("{}\n\n\n", names.join("\n")).as_bytes(),
    );
    let test = load_cifar(tmp.path(), Cifar::Ten, Split::Test).unwrap();
    assert_eq!(test.class_names, names);
    assert_eq!(test.labels, vec![9, 0]);
    check_pixels(&test, 1, 1);
}

#[test]
fn cifar10_truncated_file() {
    let tmp = TempDir::new("c10trunc");
    write_cifar10(tmp.path());
    let mut bytes = cifar_records(&[&[1], &[2]]);
    bytes.truncate(3073 + 100);
    let path = tmp.path().join("data_batch_3.bin");
    write(&path, &bytes);
    let err = load_cifar(tmp.path(), Cifar::Ten, Split::Train).unwrap_err();
    match &err {
        DataError::BadSize {
            path: p,
            len,
            record_size,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*len, 3173);
            assert_eq!(*record_size, 3073);
        }
        other => panic!("expected BadSize, got {other:?}"),
    }
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
}

#[test]
fn cifar10_empty_file() {
    let tmp = TempDir::new("c10empty");
    write_cifar10(tmp.path());
    write(&tmp.path().join("test_batch.bin"), &[]);
    let err = load_cifar(tmp.path(), Cifar::Ten, Split::Test).unwrap_err();
    assert!(matches!(err, DataError::EmptyFile { .. }), "{err:?}");
}

#[test]
fn cifar10_missing_test_batch() {
    let tmp = TempDir::new("c10missing");
    write_cifar10(tmp.path());
    std::fs::remove_file(tmp.path().join("test_batch.bin")).unwrap();
    // Train still loads.
    assert_eq!(
        load_cifar(tmp.path(), Cifar::Ten, Split::Train)
            .unwrap()
            .len(),
        5
    );
    let err = load_cifar(tmp.path(), Cifar::Ten, Split::Test).unwrap_err();
    match &err {
        DataError::MissingFiles { missing, .. } => {
            assert_eq!(missing, &vec!["test_batch.bin".to_string()]);
        }
        other => panic!("expected MissingFiles, got {other:?}"),
    }
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
    // A directory that does not exist.
    let err = load_cifar(&tmp.path().join("nope"), Cifar::Ten, Split::Test).unwrap_err();
    assert!(matches!(err, DataError::MissingDir { .. }), "{err:?}");
}

#[test]
fn cifar10_label_out_of_range() {
    let tmp = TempDir::new("c10label");
    write_cifar10(tmp.path());
    write(
        &tmp.path().join("test_batch.bin"),
        &cifar_records(&[&[3], &[10]]),
    );
    let err = load_cifar(tmp.path(), Cifar::Ten, Split::Test).unwrap_err();
    match err {
        DataError::LabelOutOfRange {
            record,
            label,
            n_classes,
            ..
        } => {
            assert_eq!((record, label, n_classes), (1, 10, 10));
        }
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
}

#[test]
fn cifar100_fine_and_coarse() {
    let tmp = TempDir::new("c100");
    let dir = tmp.path();
    // (coarse, fine) per record.
    write(
        &dir.join("train.bin"),
        &cifar_records(&[&[19, 99], &[0, 5], &[7, 42]]),
    );
    write(&dir.join("test.bin"), &cifar_records(&[&[4, 30]]));

    let fine = load_cifar(dir, Cifar::HundredFine, Split::Train).unwrap();
    assert_eq!(fine.labels, vec![99, 5, 42]);
    assert_eq!(fine.n_classes(), 100);
    assert_eq!(fine.class_names[0], "0");
    assert_eq!(fine.class_names[99], "99");
    for i in 0..3 {
        check_pixels(&fine, i, i);
    }
    let coarse = load_cifar(dir, Cifar::HundredCoarse, Split::Train).unwrap();
    assert_eq!(coarse.labels, vec![19, 0, 7]);
    assert_eq!(coarse.n_classes(), 20);
    assert_eq!(coarse.class_names[19], "19");
    assert_eq!(coarse.images, fine.images);

    let test = load_cifar(dir, Cifar::HundredCoarse, Split::Test).unwrap();
    assert_eq!(test.labels, vec![4]);
    check_pixels(&test, 0, 0);
}

#[test]
fn cifar100_names_subfolder_and_errors() {
    let tmp = TempDir::new("c100sub");
    let sub = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&sub).unwrap();
    write(&sub.join("test.bin"), &cifar_records(&[&[1, 2], &[3, 4]]));
    let fine: Vec<String> = (0..100).map(|k| format!("fine{k}")).collect();
    let coarse: Vec<String> = (0..20).map(|k| format!("coarse{k}")).collect();
    write(
        &sub.join("fine_label_names.txt"),
        fine.join("\n").as_bytes(),
    );
    write(
        &sub.join("coarse_label_names.txt"),
        format!("{}\n", coarse.join("\n")).as_bytes(),
    );
    let f = load_cifar(tmp.path(), Cifar::HundredFine, Split::Test).unwrap();
    assert_eq!(f.class_names, fine);
    assert_eq!(f.labels, vec![2, 4]);
    let c = load_cifar(tmp.path(), Cifar::HundredCoarse, Split::Test).unwrap();
    assert_eq!(c.class_names, coarse);
    assert_eq!(c.labels, vec![1, 3]);

    // train.bin is missing.
    let err = load_cifar(tmp.path(), Cifar::HundredFine, Split::Train).unwrap_err();
    match &err {
        DataError::MissingFiles { missing, .. } => assert_eq!(missing, &vec!["train.bin"]),
        other => panic!("expected MissingFiles, got {other:?}"),
    }
    // A coarse label of 20 is out of range; truncation gives a size error.
    write(&sub.join("test.bin"), &cifar_records(&[&[20, 2]]));
    let err = load_cifar(tmp.path(), Cifar::HundredCoarse, Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                label: 20,
                n_classes: 20,
                ..
            }
        ),
        "{err:?}"
    );
    let mut bytes = cifar_records(&[&[1, 2]]);
    bytes.pop();
    write(&sub.join("test.bin"), &bytes);
    let err = load_cifar(tmp.path(), Cifar::HundredFine, Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadSize {
                len: 3073,
                record_size: 3074,
                ..
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Image folder
// ---------------------------------------------------------------------------------------------

fn rgb_image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
}

fn gradient(x: u32, y: u32) -> [u8; 3] {
    [
        (x * 40 + y) as u8,
        (y * 50 + 3) as u8,
        (x * 10 + y * 20 + 100) as u8,
    ]
}

#[test]
fn image_folder_loads_sorted_classes_and_pixels() {
    for_each_loader(image_folder_loads_sorted_classes_and_pixels_with);
}

fn image_folder_loads_sorted_classes_and_pixels_with(load: Loader) {
    let tmp = TempDir::new("folder");
    let root = tmp.path();
    let cats = root.join("a_cats");
    let dogs = root.join("b_dogs");
    std::fs::create_dir_all(&cats).unwrap();
    std::fs::create_dir_all(&dogs).unwrap();
    // Written out of order; loaded sorted by file name.
    rgb_image(4, 4, |_, _| [10, 20, 30])
        .save(cats.join("z.png"))
        .unwrap();
    rgb_image(4, 4, gradient).save(cats.join("m.PNG")).unwrap();
    // Grayscale PNG, converted to RGB.
    image::GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * 60 + y) as u8]))
        .save_with_format(dogs.join("gray.png"), image::ImageFormat::Png)
        .unwrap();
    // A larger PNG, resized to 4×4; uniform color survives the resize.
    rgb_image(9, 6, |_, _| [200, 100, 50])
        .save(dogs.join("big.png"))
        .unwrap();
    // A JPEG (lossy: compared with a tolerance).
    rgb_image(4, 4, |_, _| [128, 64, 192])
        .save_with_format(dogs.join("photo.jpg"), image::ImageFormat::Jpeg)
        .unwrap();
    // Ignored: a text file in a class folder and a file at the root.
    std::fs::write(dogs.join("notes.txt"), b"not an image").unwrap();
    std::fs::write(root.join("README"), b"root file").unwrap();

    let d = load_simple(load, root, 4, FolderChannels::Auto).unwrap();
    assert_eq!(d.class_names, vec!["a_cats", "b_dogs"]);
    assert_eq!((d.channels, d.height, d.width), (3, 4, 4));
    assert_eq!(d.len(), 5);
    // Sorted: a_cats/m.PNG, a_cats/z.png, b_dogs/big.png, b_dogs/gray.png, b_dogs/photo.jpg.
    assert_eq!(d.labels, vec![0, 0, 1, 1, 1]);
    assert_eq!(d.class_counts(), vec![2, 3]);

    // m.PNG: exact CHW pixels.
    let img = d.image(0);
    for c in 0..3 {
        for y in 0..4u32 {
            for x in 0..4u32 {
                let want = gradient(x, y)[c] as f32 / 255.0;
                assert_eq!(img[c * 16 + (y * 4 + x) as usize], want, "c{c} y{y} x{x}");
            }
        }
    }
    // z.png: uniform.
    let img = d.image(1);
    assert!(img[..16].iter().all(|&v| v == 10.0 / 255.0));
    assert!(img[16..32].iter().all(|&v| v == 20.0 / 255.0));
    assert!(img[32..].iter().all(|&v| v == 30.0 / 255.0));
    // big.png resized: uniform color within one byte step.
    let img = d.image(2);
    for (c, want) in [200.0f32, 100.0, 50.0].iter().enumerate() {
        for &v in &img[c * 16..(c + 1) * 16] {
            assert!((v * 255.0 - want).abs() <= 1.0, "resized channel {c}: {v}");
        }
    }
    // gray.png: all three channels equal the gray value.
    let img = d.image(3);
    for y in 0..4u32 {
        for x in 0..4u32 {
            let want = (x * 60 + y) as f32 / 255.0;
            let p = (y * 4 + x) as usize;
            assert_eq!([img[p], img[16 + p], img[32 + p]], [want; 3]);
        }
    }
    // photo.jpg: close to its color.
    let img = d.image(4);
    for (c, want) in [128.0f32, 64.0, 192.0].iter().enumerate() {
        for &v in &img[c * 16..(c + 1) * 16] {
            assert!(
                (v * 255.0 - want).abs() <= 8.0,
                "jpeg channel {c}: {}",
                v * 255.0
            );
        }
    }

    // Another size: everything resized.
    let small = load_simple(load, root, 2, FolderChannels::Auto).unwrap();
    assert_eq!((small.height, small.width), (2, 2));
    assert_eq!(small.images.len(), 5 * 3 * 2 * 2);
    assert!(small.images.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(small.labels, d.labels);
}

#[test]
fn image_folder_corrupt_png() {
    for_each_loader(image_folder_corrupt_png_with);
}

fn image_folder_corrupt_png_with(load: Loader) {
    let tmp = TempDir::new("corrupt");
    let class = tmp.path().join("only");
    std::fs::create_dir_all(&class).unwrap();
    rgb_image(3, 3, gradient).save(class.join("a.png")).unwrap();
    let bad = class.join("b_broken.png");
    let noise: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&bad, noise).unwrap();
    let err = load_simple(load, tmp.path(), 3, FolderChannels::Auto).unwrap_err();
    match &err {
        DataError::ImageDecode { path, .. } => assert_eq!(path, &bad),
        other => panic!("expected ImageDecode, got {other:?}"),
    }
    assert!(err.to_string().contains("b_broken.png"), "{err}");
}

/// CRC-32 (IEEE) of `bytes`, as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header says `side × side` gray pixels, followed by one small data chunk: what a
/// decoder must refuse from the header alone.
fn png_header_only(side: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, no interlace
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A folder with every kind of bad entry the loader decides on, beside good images:
/// `(root, good image count, the bad files' paths)`.
fn folder_with_bad_files(tmp: &TempDir) -> (PathBuf, usize, Vec<PathBuf>) {
    use std::os::unix::ffi::OsStrExt;
    let root = tmp.path().to_path_buf();
    let cat = root.join("cat");
    let dog = root.join("dog");
    // A class name that is not UTF-8.
    let odd = root.join(std::ffi::OsStr::from_bytes(b"\xffodd"));
    for d in [&cat, &dog, &odd, &cat.join("sub")] {
        std::fs::create_dir_all(d).unwrap();
    }
    rgb_image(4, 4, gradient).save(cat.join("a.png")).unwrap();
    rgb_image(4, 4, |_, _| [1, 2, 3])
        .save(cat.join("sub").join("nested.png"))
        .unwrap();
    for i in 0..2 {
        rgb_image(4, 4, |x, _| [x as u8 * 9, i, 7])
            .save(dog.join(format!("d{i}.png")))
            .unwrap();
    }
    rgb_image(4, 4, |_, y| [y as u8, 5, 6])
        .save(odd.join("o.png"))
        .unwrap();
    let mut png = std::io::Cursor::new(Vec::new());
    rgb_image(16, 16, gradient)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    rgb_image(64, 64, gradient)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    let bad = vec![
        (cat.join("b_truncated.png"), png[..png.len() / 2].to_vec()),
        (cat.join("b_truncated.jpg"), jpeg[..jpeg.len() / 2].to_vec()),
        (cat.join("c_empty.png"), Vec::new()),
        (dog.join("e_text.jpg"), b"not an image at all".to_vec()),
        (dog.join("h_huge.png"), png_header_only(20_000)),
    ];
    let mut paths: Vec<PathBuf> = Vec::new();
    for (path, bytes) in bad {
        std::fs::write(&path, bytes).unwrap();
        paths.push(path);
    }
    // A dangling link and a link to itself (a loop), both in a class folder.
    std::os::unix::fs::symlink(cat.join("gone.png"), cat.join("f_dangling.png")).unwrap();
    std::os::unix::fs::symlink(dog.join("g_loop"), dog.join("g_loop")).unwrap();
    paths.push(cat.join("f_dangling.png"));
    paths.push(dog.join("g_loop"));
    // Links that must not be followed: back to the root, and into another class (its images
    // would otherwise be read with this class's label).
    std::os::unix::fs::symlink(&root, cat.join("up")).unwrap();
    std::os::unix::fs::symlink(&dog, cat.join("to_dog")).unwrap();
    paths.sort();
    (root, 5, paths)
}

#[test]
fn image_folder_bad_files_are_named_or_skipped() {
    for_each_loader(image_folder_bad_files_are_named_or_skipped_with);
}

fn image_folder_bad_files_are_named_or_skipped_with(load: Loader) {
    let tmp = TempDir::new("badfiles");
    let (root, good, bad) = folder_with_bad_files(&tmp);

    // Skipped: every bad file listed, the good images with their own class's label.
    let options = FolderOptions {
        skip_bad_images: true,
        ..FolderOptions::new(4)
    };
    let loaded = load(&root, &options).unwrap();
    let skipped: Vec<PathBuf> = loaded.skipped.iter().map(|b| b.path.clone()).collect();
    assert_eq!(skipped, bad, "{:#?}", loaded.skipped);
    let d = &loaded.dataset;
    assert_eq!(d.len(), good);
    assert_eq!(d.class_names, vec!["cat", "dog", "\u{FFFD}odd"]);
    // cat: a.png, sub/nested.png; dog: d0, d1 (nothing through cat/to_dog); the odd class: o.
    assert_eq!(d.labels, vec![0, 0, 1, 1, 2]);
    assert_eq!(&d.image(1)[..2], &[1.0 / 255.0; 2]);
    // Each error says what is wrong with its file.
    let reason = |name: &str| {
        let b = loaded
            .skipped
            .iter()
            .find(|b| b.path.ends_with(name))
            .unwrap();
        b.error.to_string()
    };
    assert!(
        reason("h_huge.png").to_lowercase().contains("limit"),
        "{}",
        reason("h_huge.png")
    );
    for name in [
        "b_truncated.png",
        "b_truncated.jpg",
        "c_empty.png",
        "e_text.jpg",
    ] {
        assert!(
            matches!(
                loaded
                    .skipped
                    .iter()
                    .find(|b| b.path.ends_with(name))
                    .unwrap()
                    .error,
                DataError::ImageDecode { .. }
            ),
            "{name}: {}",
            reason(name)
        );
    }
    for name in ["f_dangling.png", "g_loop"] {
        assert!(reason(name).contains(name), "{}", reason(name));
    }

    // The same result whatever the number of decoding threads.
    for workers in [1, 3] {
        let options = FolderOptions {
            workers: Some(workers),
            ..options
        };
        let again = load(&root, &options).unwrap();
        assert_eq!(again.dataset, loaded.dataset, "{workers} workers");
        let again: Vec<PathBuf> = again.skipped.iter().map(|b| b.path.clone()).collect();
        assert_eq!(again, skipped, "{workers} workers");
    }
    let options = FolderOptions {
        workers: Some(0),
        ..options
    };
    assert!(matches!(
        load(&root, &options),
        Err(DataError::Unsupported { .. })
    ));

    // Not skipped: an error naming a bad file, before training.
    let err = load(&root, &FolderOptions::new(4)).unwrap_err();
    assert!(
        bad.iter()
            .any(|p| err.to_string().contains(&*p.to_string_lossy())),
        "{err}"
    );
    // Each kind of bad file alone is an error naming it.
    for path in &bad {
        let solo = TempDir::new("badsolo");
        let class = solo.path().join("k");
        std::fs::create_dir_all(&class).unwrap();
        rgb_image(4, 4, gradient)
            .save(class.join("ok.png"))
            .unwrap();
        let name = path.file_name().unwrap();
        let target = class.join(name);
        if name == "f_dangling.png" {
            std::os::unix::fs::symlink(class.join("gone.png"), &target).unwrap();
        } else if name == "g_loop" {
            std::os::unix::fs::symlink(&target, &target).unwrap();
        } else {
            std::fs::copy(path, &target).unwrap();
        }
        let err = load_simple(load, solo.path(), 4, FolderChannels::Auto).unwrap_err();
        assert!(
            err.to_string().contains(&*target.to_string_lossy()),
            "{err}"
        );
    }
}

#[test]
fn image_folder_class_of_bad_files_only_is_empty() {
    for_each_loader(image_folder_class_of_bad_files_only_is_empty_with);
}

fn image_folder_class_of_bad_files_only_is_empty_with(load: Loader) {
    let tmp = TempDir::new("allbad");
    let (good, bad) = (tmp.path().join("good"), tmp.path().join("bad"));
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    rgb_image(2, 2, gradient).save(good.join("a.png")).unwrap();
    std::fs::write(bad.join("x.png"), b"").unwrap();
    let options = FolderOptions {
        skip_bad_images: true,
        ..FolderOptions::new(2)
    };
    match load(tmp.path(), &options).unwrap_err() {
        DataError::EmptyClass { dir } => assert_eq!(dir, bad),
        other => panic!("expected EmptyClass, got {other:?}"),
    }
}

#[test]
fn image_folder_empty_class() {
    for_each_loader(image_folder_empty_class_with);
}

fn image_folder_empty_class_with(load: Loader) {
    let tmp = TempDir::new("emptyclass");
    let full = tmp.path().join("full");
    let empty = tmp.path().join("hollow");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    rgb_image(2, 2, gradient).save(full.join("a.png")).unwrap();
    std::fs::write(empty.join("readme.txt"), b"no images here").unwrap();
    let err = load_simple(load, tmp.path(), 2, FolderChannels::Auto).unwrap_err();
    match &err {
        DataError::EmptyClass { dir } => assert_eq!(dir, &empty),
        other => panic!("expected EmptyClass, got {other:?}"),
    }
}

#[test]
fn image_folder_no_class_folders() {
    for_each_loader(image_folder_no_class_folders_with);
}

fn image_folder_no_class_folders_with(load: Loader) {
    let tmp = TempDir::new("noclass");
    rgb_image(2, 2, gradient)
        .save(tmp.path().join("a.png"))
        .unwrap();
    let err = load_simple(load, tmp.path(), 2, FolderChannels::Auto).unwrap_err();
    assert!(matches!(err, DataError::NoClassFolders { .. }), "{err:?}");
    let err = load_simple(load, &tmp.path().join("missing"), 2, FolderChannels::Auto).unwrap_err();
    assert!(matches!(err, DataError::MissingDir { .. }), "{err:?}");
    for size in [0, MAX_FOLDER_IMAGE_SIDE + 1] {
        let err = load_simple(load, tmp.path(), size, FolderChannels::Auto).unwrap_err();
        assert!(matches!(err, DataError::Unsupported { .. }), "{err:?}");
    }
}

#[test]
fn image_folder_channels_follow_the_content() {
    for_each_loader(image_folder_channels_follow_the_content_with);
}

fn image_folder_channels_follow_the_content_with(load: Loader) {
    let tmp = TempDir::new("gray");
    let root = tmp.path();
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    let value = |x: u32, y: u32| (x * 37 + y * 11) as u8;
    // Grayscale stored two ways: an 8-bit gray PNG and an RGB PNG with equal channels.
    image::GrayImage::from_fn(4, 4, |x, y| image::Luma([value(x, y)]))
        .save_with_format(root.join("a/gray.png"), image::ImageFormat::Png)
        .unwrap();
    rgb_image(4, 4, |x, y| [value(x, y); 3])
        .save(root.join("b/rgb_gray.png"))
        .unwrap();
    let auto = load_simple(load, root, 4, FolderChannels::Auto).unwrap();
    assert_eq!(
        auto.channels, 1,
        "a folder of grayscale images loads with one channel"
    );
    for i in 0..2 {
        for y in 0..4u32 {
            for x in 0..4u32 {
                let want = value(x, y) as f32 / 255.0;
                assert_eq!(auto.image(i)[(y * 4 + x) as usize], want);
            }
        }
    }
    let rgb = load_simple(load, root, 4, FolderChannels::Rgb).unwrap();
    assert_eq!(rgb.channels, 3);
    assert_eq!(rgb.first_channel(), auto);
    assert_eq!(auto.to_rgb(), rgb);
    assert!(rgb.is_grayscale());

    // One colour image makes the folder colour.
    rgb_image(4, 4, gradient)
        .save(root.join("b/colour.png"))
        .unwrap();
    let mixed = load_simple(load, root, 4, FolderChannels::Auto).unwrap();
    assert_eq!(mixed.channels, 3);
    assert!(!mixed.is_grayscale());
    // Forced to one channel: colour becomes luma, gray stays as it is.
    let gray = load_simple(load, root, 4, FolderChannels::Gray).unwrap();
    assert_eq!(gray.channels, 1);
    assert_eq!(gray.image(0), auto.image(0));
    let [r, g, b] = gradient(1, 2).map(f32::from);
    let luma = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255.0;
    let got = gray.image(1)[2 * 4 + 1];
    assert!((got - luma).abs() <= 1.0 / 255.0, "luma {got} vs {luma}");
}

#[test]
fn digits_written_as_a_folder_read_back() {
    for_each_loader(digits_written_as_a_folder_read_back_with);
}

fn digits_written_as_a_folder_read_back_with(load: Loader) {
    let all = digits().unwrap();
    let picks: Vec<usize> = (0..all.len()).step_by(60).collect();
    let some = all.subset(&picks);
    let tmp = TempDir::new("export");
    let root = tmp.path().join("digits");
    write_image_folder(&some, &root).unwrap();
    // One PNG per image and nothing else (each written to a temporary file, then renamed).
    let mut files = Vec::new();
    for class in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(class.unwrap().path()).unwrap() {
            files.push(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    assert_eq!(files.len(), some.len(), "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.ends_with(".png") && !f.starts_with('.')),
        "{files:?}"
    );
    // Refuses to write into a folder that holds something.
    let err = write_image_folder(&some, &root).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");

    let check = |back: &ImageDataset| {
        assert_eq!((back.channels, back.height, back.width), (1, 8, 8));
        assert_eq!(back.len(), some.len());
        assert_eq!(back.class_names, some.class_names);
        // Folders are read class by class: compare as multisets of (label, image).
        let mut want: Vec<(u32, Vec<u8>)> = (0..some.len())
            .map(|i| {
                (
                    some.labels[i],
                    some.image(i)
                        .iter()
                        .map(|v| (v * 255.0).round() as u8)
                        .collect(),
                )
            })
            .collect();
        let mut got: Vec<(u32, Vec<u8>)> = (0..back.len())
            .map(|i| {
                (
                    back.labels[i],
                    back.image(i)
                        .iter()
                        .map(|v| (v * 255.0).round() as u8)
                        .collect(),
                )
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    };
    check(&load_simple(load, &root, 8, FolderChannels::Auto).unwrap());
    // Stored as RGB, still read as one channel.
    let rgb_root = tmp.path().join("digits-rgb");
    write_image_folder(&some.to_rgb(), &rgb_root).unwrap();
    check(&load_simple(load, &rgb_root, 8, FolderChannels::Auto).unwrap());
    // Resized on load.
    let big = load_simple(load, &rgb_root, 16, FolderChannels::Auto).unwrap();
    assert_eq!((big.channels, big.height, big.width), (1, 16, 16));
}

/// A `.tar.gz` of a CIFAR-10 layout under `cifar-10-batches-bin/`, as the official archive.
fn cifar10_archive(path: &Path) {
    let src = TempDir::new("c10-src");
    write_cifar10(&src.path().join("cifar-10-batches-bin"));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut archive = tar::Builder::new(gz);
    archive
        .append_dir_all(
            "cifar-10-batches-bin",
            src.path().join("cifar-10-batches-bin"),
        )
        .unwrap();
    archive
        .into_inner()
        .unwrap()
        .finish()
        .unwrap()
        .flush()
        .unwrap();
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn cifar_download_unpacks_an_archive_once() {
    let tmp = TempDir::new("c10-dl");
    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    cifar10_archive(&archive);
    let dir = tmp.path().join("data");
    let url = file_url(&archive);
    assert!(download_cifar(&dir, Cifar::Ten, Some(&url)).unwrap());
    let train = load_cifar(&dir, Cifar::Ten, Split::Train).unwrap();
    assert_eq!(train.labels, vec![1, 2, 3, 4, 5]);
    check_pixels(&train, 0, 0);
    assert_eq!(load_cifar(&dir, Cifar::Ten, Split::Test).unwrap().len(), 2);
    // Present now: no second download, even from a bad address.
    assert!(!download_cifar(&dir, Cifar::Ten, Some("file:///nonexistent/x.tar.gz")).unwrap());
    // No partial file left behind.
    assert!(
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".part"))
    );
}

#[test]
fn cifar_download_errors_are_clear() {
    let tmp = TempDir::new("c10-dl-err");
    let dir = tmp.path().join("data");
    let missing = tmp.path().join("missing.tar.gz");
    let err = download_cifar(&dir, Cifar::Ten, Some(&file_url(&missing))).unwrap_err();
    assert!(
        matches!(err, DataError::Download { .. }) && err.to_string().contains("curl failed"),
        "{err}"
    );
    // Not a .tar.gz.
    let junk = tmp.path().join("junk.tar.gz");
    write(&junk, b"this is not an archive");
    let err = download_cifar(&dir, Cifar::Ten, Some(&file_url(&junk))).unwrap_err();
    assert!(err.to_string().contains("not a readable"), "{err}");
    // A valid archive of the wrong data set.
    let c10 = tmp.path().join("c10.tar.gz");
    cifar10_archive(&c10);
    let err = download_cifar(&dir, Cifar::HundredFine, Some(&file_url(&c10))).unwrap_err();
    assert!(err.to_string().contains("did not contain"), "{err}");
}

/// A server that accepts and then stalls (headers promising a large body, then nothing): the
/// download ends with an error within the limits instead of hanging.
#[test]
fn cifar_download_gives_up_on_a_stalled_server() {
    use std::io::Read;
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        // Each connection (curl retries twice) gets headers, then silence.
        let mut open = Vec::new();
        for stream in listener.incoming().take(3).flatten() {
            let mut stream = stream;
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\nContent-Type: application/gzip\r\n\r\n",
            );
            open.push(stream);
        }
        std::thread::sleep(std::time::Duration::from_secs(300));
    });
    let tmp = TempDir::new("stall");
    let dir = tmp.path().to_path_buf();
    let url = format!("http://{addr}/cifar-10-binary.tar.gz");
    let limits = TransferLimits {
        connect_s: 5,
        min_bytes_per_s: 1024,
        stall_s: 2,
    };
    let (send, receive) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = send.send(download_cifar_with(&dir, Cifar::Ten, Some(&url), &limits));
    });
    let result = receive
        .recv_timeout(std::time::Duration::from_secs(90))
        .expect("the download hung on a stalled server");
    let err = result.unwrap_err();
    assert!(err.to_string().contains("curl failed"), "{err}");
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    assert!(
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".part")),
        "no partial file left"
    );
}

/// A way of reading a folder that comes split, as [`load_split_image_folder`] does.
type SplitLoader = fn(&Path, &Path, &FolderOptions) -> Result<(FolderLoad, FolderLoad), DataError>;

fn load_split_streamed(
    train: &Path,
    test: &Path,
    options: &FolderOptions,
) -> Result<(FolderLoad, FolderLoad), DataError> {
    let (a, b) = open_split_image_folder(train, test, options)?;
    let read = |o: FolderOpen| -> Result<FolderLoad, DataError> {
        Ok(FolderLoad {
            dataset: read_all(&o.source)?,
            skipped: o.skipped,
        })
    };
    Ok((read(a)?, read(b)?))
}

#[test]
fn image_folder_split_as_given() {
    let loaders: [(&str, SplitLoader); 2] = [
        ("in memory", load_split_image_folder),
        ("streamed", load_split_streamed),
    ];
    for (how, load) in loaders {
        eprintln!("split folder read {how}");
        image_folder_split_as_given_with(load);
    }
}

fn image_folder_split_as_given_with(load: SplitLoader) {
    let tmp = TempDir::new("presplit");
    let root = tmp.path();
    // train/{a, b, c}, val/{a, c}: val's labels follow train's class list.
    for (split, classes) in [("train", &["a", "b", "c"][..]), ("val", &["a", "c"][..])] {
        for (k, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..2u8 {
                // Gray content in train, colour in val: both get three channels.
                let colour = split == "val";
                rgb_image(4, 4, |x, _| {
                    let v = x as u8 * 10 + i + k as u8;
                    [v, if colour { 255 - v } else { v }, v]
                })
                .save(dir.join(format!("{i}.png")))
                .unwrap();
            }
        }
    }
    let (train, test) = split_folders(root).unwrap().expect("a split folder");
    assert_eq!(
        (train.clone(), test.clone()),
        (root.join("train"), root.join("val"))
    );
    let (tr, te) = load(&train, &test, &FolderOptions::new(4)).unwrap();
    assert!(tr.skipped.is_empty() && te.skipped.is_empty());
    let (tr, te) = (tr.dataset, te.dataset);
    assert_eq!(tr.class_names, vec!["a", "b", "c"]);
    assert_eq!(te.class_names, tr.class_names);
    assert_eq!(tr.labels, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(te.labels, vec![0, 0, 2, 2]);
    assert_eq!((tr.channels, te.channels), (3, 3));
    // The gray training images, repeated in R, G and B.
    let plane = 16;
    assert_eq!(&tr.image(0)[..plane], &tr.image(0)[plane..2 * plane]);

    // A test class the training folder lacks is an error naming it.
    std::fs::create_dir_all(root.join("val").join("zebra")).unwrap();
    rgb_image(4, 4, gradient)
        .save(root.join("val").join("zebra").join("z.png"))
        .unwrap();
    match load(&train, &test, &FolderOptions::new(4)).unwrap_err() {
        DataError::UnknownClass { class, train, .. } => {
            assert_eq!((class.as_str(), train), ("zebra", 3))
        }
        other => panic!("expected UnknownClass, got {other:?}"),
    }

    // `test/` works as `val/`; anything else beside `train/` means the folders are classes.
    std::fs::rename(root.join("val"), root.join("test")).unwrap();
    assert_eq!(split_folders(root).unwrap().unwrap().1, root.join("test"));
    std::fs::create_dir_all(root.join("extra")).unwrap();
    assert!(split_folders(root).unwrap().is_none());
    assert!(split_folders(&root.join("train")).unwrap().is_none());
}

/// A colour folder of three classes: PNGs of several sizes (resized on reading), a JPEG and a
/// nested sub-folder.
fn mixed_folder(root: &Path) {
    for k in 0..3u32 {
        let class = root.join(format!("c{k}"));
        std::fs::create_dir_all(&class).unwrap();
        for i in 0..4u32 {
            rgb_image(5 + i, 4 + k, |x, y| {
                [(x * 20 + i) as u8, (y * 30 + k) as u8, ((x + y) * 7) as u8]
            })
            .save(class.join(format!("{i}.png")))
            .unwrap();
        }
    }
    rgb_image(12, 12, gradient)
        .save_with_format(root.join("c1").join("photo.jpg"), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::create_dir_all(root.join("c2").join("deep")).unwrap();
    image::GrayImage::from_fn(5, 5, |x, y| image::Luma([(x * 40 + y) as u8]))
        .save_with_format(root.join("c2/deep/g.png"), image::ImageFormat::Png)
        .unwrap();
}

/// A folder read as needed gives the pixels the in-memory loader gives, in any order, for each
/// channel rule, 1 or 3 workers, no cache, a cache that holds some of the images and one that
/// holds them all (read twice: the second time from the cache); a subset view reads the same.
#[test]
fn streamed_folder_matches_the_loader_whatever_the_workers_and_cache() {
    let tmp = TempDir::new("stream");
    let root = tmp.path();
    mixed_folder(root);
    for channels in [
        FolderChannels::Auto,
        FolderChannels::Gray,
        FolderChannels::Rgb,
    ] {
        let options = FolderOptions {
            channels,
            ..FolderOptions::new(5)
        };
        let want = load_image_folder_with(root, &options).unwrap().dataset;
        let n = want.len();
        assert_eq!(n, 14);
        // Every image, backwards, then some again.
        let order: Vec<usize> = (0..n).rev().chain([0, 0, 7]).collect();
        let expect: Vec<f32> = order.iter().flat_map(|&i| want.image(i).to_vec()).collect();
        let image_bytes = want.image_len() as u64;
        for workers in [1, 3] {
            for cache_bytes in [0, 5 * image_bytes + 3, 1 << 20] {
                let how = format!("{channels:?}, {workers} workers, cache {cache_bytes} B");
                let options = FolderOptions {
                    workers: Some(workers),
                    cache_bytes,
                    ..options
                };
                let opened = open_image_folder(root, &options).unwrap();
                assert!(opened.skipped.is_empty(), "{how}");
                let s = &opened.source;
                assert_eq!(s.shape(), [want.channels, want.height, want.width], "{how}");
                assert_eq!(s.labels(), &want.labels[..], "{how}");
                assert_eq!(s.class_names(), &want.class_names[..], "{how}");
                assert_eq!(s.workers(), workers, "{how}");
                for pass in 0..2 {
                    assert_eq!(s.read(&order).unwrap(), expect, "{how}, pass {pass}");
                }
                let held = s.cached_bytes();
                let all = n as u64 * image_bytes;
                assert_eq!(
                    held,
                    cache_bytes.min(all) / image_bytes * image_bytes,
                    "{how}"
                );
                let sub = s.subset(&[3, 1]);
                let mut both = want.image(3).to_vec();
                both.extend_from_slice(want.image(1));
                assert_eq!(sub.read(&[0, 1]).unwrap(), both, "{how}");
                assert_eq!(sub.labels(), &[want.labels[3], want.labels[1]], "{how}");
                assert!(sub.path(0).ends_with("c0/3.png"), "{how}");
            }
        }
    }
}

/// A file that goes bad after the folder was opened (the check at opening saw it whole) is an
/// error naming it when read; with `skip_bad_images` the image is the next one of its class,
/// every time, and the file is listed once; a class with no image left is an error.
#[test]
fn streamed_folder_file_going_bad_while_reading() {
    let tmp = TempDir::new("gonebad");
    let root = tmp.path();
    mixed_folder(root);
    let options = FolderOptions::new(5);
    let want = load_image_folder_with(root, &options).unwrap().dataset;
    let strict = open_image_folder(root, &options).unwrap().source;
    let skip = open_image_folder(
        root,
        &FolderOptions {
            skip_bad_images: true,
            workers: Some(3),
            ..options
        },
    )
    .unwrap()
    .source;
    // c0: 0..3.png are images 0..3; c1: 0..3.png and photo.jpg are 4..8.
    let noise = root.join("c0/1.png");
    std::fs::write(&noise, b"no longer a PNG").unwrap();
    let cut = root.join("c1/3.png");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    let err = strict.read(&[0, 1, 2]).unwrap_err();
    match &err {
        DataError::ImageDecode { path, .. } => assert_eq!(path, &noise),
        other => panic!("expected ImageDecode, got {other:?}"),
    }
    assert!(err.to_string().contains("c0/1.png"), "{err}");
    assert!(strict.read(&[7]).is_err(), "a truncated PNG");
    assert_eq!(strict.read(&[2]).unwrap(), want.image(2));
    assert!(strict.failed().is_empty());

    for pass in 0..2 {
        let got = skip.read(&[1, 7, 0]).unwrap();
        let mut expect = want.image(2).to_vec(); // c0/1.png -> c0/2.png
        expect.extend_from_slice(want.image(8)); // c1/3.png -> c1/photo.jpg
        expect.extend_from_slice(want.image(0));
        assert_eq!(got, expect, "pass {pass}");
    }
    assert_eq!(skip.failed(), vec![noise.clone(), cut.clone()]);

    // Every image of c0 gone: nothing to stand in for them.
    for i in 0..4 {
        std::fs::write(root.join(format!("c0/{i}.png")), b"").unwrap();
    }
    match skip.read(&[3]).unwrap_err() {
        DataError::ImageDecode { path, .. } | DataError::Io { path, .. } => {
            assert!(path.ends_with("c0/3.png"), "{}", path.display())
        }
        other => panic!("expected the file's error, got {other:?}"),
    }
}

/// The channel rule of a folder read as needed looks at `CHANNEL_SAMPLE` images: a colour image
/// outside the sample of an otherwise gray folder is read as its red channel (the documented
/// failure mode; `FolderChannels::Rgb` keeps its colour), where the in-memory loader, which
/// decodes every image, sees it.
#[test]
fn streamed_folder_channels_come_from_a_sample() {
    let tmp = TempDir::new("sample");
    let root = tmp.path();
    let n = CHANNEL_SAMPLE + 40;
    let picked = sample_indices(n, CHANNEL_SAMPLE, 0);
    let outside = (0..n).find(|i| picked.binary_search(i).is_err()).unwrap();
    let value = |i: usize| (i % 200) as u8;
    for i in 0..n {
        // Two classes; files sorted by name within each, so index i is the i-th file.
        let class = root.join(if i < n / 2 { "a" } else { "b" });
        std::fs::create_dir_all(&class).unwrap();
        let v = value(i);
        let px = if i == outside {
            [v, 255 - v, 9]
        } else {
            [v; 3]
        };
        rgb_image(2, 2, |_, _| px)
            .save(class.join(format!("{i:05}.png")))
            .unwrap();
    }
    let opened = open_image_folder(root, &FolderOptions::new(2)).unwrap();
    assert_eq!(opened.source.shape(), [1, 2, 2]);
    let red = value(outside) as f32 / 255.0;
    assert_eq!(opened.source.read(&[outside]).unwrap(), vec![red; 4]);
    let mem = load_image_folder(root, 2, FolderChannels::Auto).unwrap();
    assert_eq!(mem.channels, 3, "the loader decodes every image");
    let rgb = FolderOptions {
        channels: FolderChannels::Rgb,
        ..FolderOptions::new(2)
    };
    let colour = open_image_folder(root, &rgb).unwrap().source;
    assert_eq!(colour.read(&[outside]).unwrap(), mem.image(outside));
}
