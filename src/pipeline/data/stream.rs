//! Image folders read lazily ([`FolderSource`]): listed and checked up front, decoded by a pool
//! of worker threads when a batch asks for the images, optionally kept in a byte cache.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use super::folder::{
    BadImage, FolderChannels, FolderOptions, Listing, Planes, check_options, decode_bytes,
    decode_pool, list_folder, probe_image,
};
use super::{DataError, ImageSource, byte_table, sample_indices};

/// Images decoded (drawn with a fixed seed from every file of the folder) to decide the
/// channels of a [`FolderChannels::Auto`] folder: one channel when all of them are grayscale.
pub const CHANNEL_SAMPLE: usize = 1024;

/// A folder opened by [`open_image_folder`].
#[derive(Debug)]
pub struct FolderOpen {
    /// The images, read when asked for.
    pub source: FolderSource,
    /// The files left out (only with [`FolderOptions::skip_bad_images`]), in path order.
    pub skipped: Vec<BadImage>,
}

/// What the views of one opened folder (or pair of folders) share: the files, the decoder
/// settings, the worker pool and the cache.
struct Shared {
    files: Vec<PathBuf>,
    size: u32,
    planes: Planes,
    /// Whether `planes` was guessed from a sample ([`FolderChannels::Auto`]): a colour image met
    /// later is then reported once.
    guessed_gray: bool,
    skip_bad_images: bool,
    pool: rayon::ThreadPool,
    /// One slot per file when there is a cache, else empty.
    cache: Vec<OnceLock<Box<[u8]>>>,
    /// Bytes the cache may still take.
    cache_left: Mutex<u64>,
    /// Files that failed to decode while reading (with `skip_bad_images`): never tried again.
    failed: Mutex<HashMap<usize, String>>,
    colour_seen: AtomicBool,
    table: [f32; 256],
}

/// An image folder whose images are decoded when read ([`ImageSource::read_into`]), by a pool
/// of worker threads, resized to the folder's size with the channels decided when it was opened
/// ([`open_image_folder`]); decoded bytes are kept while the cache budget lasts
/// ([`FolderOptions::cache_bytes`]). Host memory holds the file list and the cache, never the
/// whole set as f32. Pixels equal those [`super::load_image_folder_with`] gives for the same
/// options. [`FolderSource::subset`] makes views that share the files, workers and cache.
///
/// A file that fails to decode when read (changed after it was opened, or damaged inside its
/// coded data, which the check at opening cannot see) is an error naming it; with
/// [`FolderOptions::skip_bad_images`] the image is replaced by the next one of the same class
/// (in this source's order, wrapping around) that decodes, the file is named in the log once
/// and listed by [`FolderSource::failed`].
pub struct FolderSource {
    shared: Arc<Shared>,
    /// The file (index into `shared.files`) of each image.
    files: Vec<usize>,
    labels: Vec<u32>,
    class_names: Vec<String>,
}

impl std::fmt::Debug for FolderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderSource")
            .field("images", &self.files.len())
            .field("shape", &self.shape())
            .field("classes", &self.class_names.len())
            .finish()
    }
}

impl FolderSource {
    /// A view of the images at `indices` (in that order; repeats allowed) that shares this
    /// source's files, workers and cache.
    ///
    /// # Panics
    /// If an index is `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> FolderSource {
        FolderSource {
            shared: Arc::clone(&self.shared),
            files: indices.iter().map(|&i| self.files[i]).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// The file of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn path(&self, i: usize) -> &Path {
        &self.shared.files[self.files[i]]
    }

    /// The files that failed to decode while being read (only with
    /// [`FolderOptions::skip_bad_images`]; each was replaced), in path order, across every view
    /// of the folder.
    pub fn failed(&self) -> Vec<PathBuf> {
        let failed = self.shared.failed.lock().expect("failed-files lock");
        let paths: BTreeSet<&PathBuf> = failed.keys().map(|&g| &self.shared.files[g]).collect();
        paths.into_iter().cloned().collect()
    }

    /// Bytes of decoded images the cache holds now (shared by every view of the folder).
    pub fn cached_bytes(&self) -> u64 {
        self.shared
            .cache
            .iter()
            .filter_map(OnceLock::get)
            .map(|b| b.len() as u64)
            .sum()
    }

    /// Threads of the decoding pool.
    pub fn workers(&self) -> usize {
        self.shared.pool.current_num_threads()
    }

    /// Image `i` as bytes into `slot`'s f32 values; with `skip_bad_images`, a file that fails
    /// is replaced by the next image of its class that decodes.
    fn load(&self, i: usize, bytes: &mut [u8], slot: &mut [f32]) -> Result<(), DataError> {
        let sh = &*self.shared;
        let to_f32 = |px: &[u8], slot: &mut [f32]| {
            for (o, &b) in slot.iter_mut().zip(px) {
                *o = sh.table[b as usize];
            }
        };
        let error = match sh.with_bytes(self.files[i], bytes, |px| to_f32(px, slot)) {
            Ok(()) => return Ok(()),
            Err(e) if !sh.skip_bad_images => return Err(e),
            Err(e) => e,
        };
        let label = self.labels[i];
        let n = self.files.len();
        for j in (i + 1..n).chain(0..i) {
            if self.labels[j] == label
                && sh
                    .with_bytes(self.files[j], bytes, |px| to_f32(px, slot))
                    .is_ok()
            {
                return Ok(());
            }
        }
        Err(error)
    }
}

impl Shared {
    /// Calls `f` with the bytes of file `g`: from the cache, or decoded (and cached while the
    /// budget lasts) into `buf`.
    fn with_bytes<R>(
        &self,
        g: usize,
        buf: &mut [u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, DataError> {
        if let Some(px) = self.cache.get(g).and_then(OnceLock::get) {
            return Ok(f(px));
        }
        let path = &self.files[g];
        if self.skip_bad_images
            && let Some(reason) = self.failed.lock().expect("failed-files lock").get(&g)
        {
            return Err(DataError::ImageFailed {
                path: path.clone(),
                reason: reason.clone(),
            });
        }
        match decode_bytes(path, self.size, self.planes, buf) {
            Ok(colour) => {
                if colour && self.guessed_gray && !self.colour_seen.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "{} has colour, but the {CHANNEL_SAMPLE} images sampled to choose the \
                         channels were all grayscale: the folder is read with one channel \
                         (colour images as their red channel); use --channels three to keep \
                         colour",
                        path.display()
                    );
                }
                self.keep(g, buf);
                Ok(f(buf))
            }
            Err(e) => {
                if self.skip_bad_images {
                    let mut failed = self.failed.lock().expect("failed-files lock");
                    if failed.insert(g, e.to_string()).is_none() {
                        log::warn!(
                            "--skip-bad-images: {e}; replaced by another image of its class \
                             (now and in every later epoch)"
                        );
                    }
                }
                Err(e)
            }
        }
    }

    /// Keeps a copy of file `g`'s bytes when the cache has room for them. The check and the
    /// reservation happen under one lock, so a file decoded by two workers at once is kept
    /// (and counted) once, and a budget of `k` images' bytes keeps exactly `k` images.
    fn keep(&self, g: usize, px: &[u8]) {
        let Some(slot) = self.cache.get(g) else {
            return;
        };
        let len = px.len() as u64;
        let mut left = self.cache_left.lock().expect("cache lock");
        if slot.get().is_none() && *left >= len {
            *left -= len;
            let _ = slot.set(px.into());
        }
    }
}

impl ImageSource for FolderSource {
    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn shape(&self) -> [usize; 3] {
        let side = self.shared.size as usize;
        [self.shared.planes.count(), side, side]
    }

    /// Decodes the images on the worker pool, each into its own slot; the first error in the
    /// order of `indices` is returned, so results do not depend on the worker count.
    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<(), DataError> {
        let n = self.image_len();
        assert_eq!(out.len(), indices.len() * n, "output length");
        let results: Vec<Result<(), DataError>> = self.shared.pool.install(|| {
            indices
                .par_iter()
                .zip(out.par_chunks_mut(n))
                .map_init(
                    || vec![0u8; n],
                    |bytes, (&i, slot)| self.load(i, bytes, slot),
                )
                .collect()
        });
        results.into_iter().collect()
    }
}

/// Opens `root/class_name/**/*.{png,jpg,jpeg}` for reading as needed: the classes and files as
/// [`super::load_image_folder_with`] finds them, every file checked without decoding its
/// pixels (readable, not empty, a PNG or JPEG, not cut short, within the size limits), the
/// channels decided ([`FolderChannels::Auto`]: from [`CHANNEL_SAMPLE`] decoded images), nothing
/// else decoded. A bad file is an error naming it, or with [`FolderOptions::skip_bad_images`]
/// is left out and listed in [`FolderOpen::skipped`]. Holds no cap on the folder's size: host
/// memory keeps the file list and at most [`FolderOptions::cache_bytes`] of decoded images.
///
/// Errors: as [`super::load_image_folder_with`] (without the in-memory size limit).
pub fn open_image_folder(root: &Path, options: &FolderOptions) -> Result<FolderOpen, DataError> {
    let mut opened = open_folders(&[root], options)?;
    let (source, skipped) = opened.pop().expect("one folder");
    Ok(FolderOpen { source, skipped })
}

/// [`open_image_folder`] for a folder that comes split ([`super::split_folders`]): `train` and
/// `test` opened together, the test images labelled by their class's name in the training
/// folder's classes (a test class the training folder lacks is an error), one channel rule
/// for both, one worker pool and cache.
pub fn open_split_image_folder(
    train: &Path,
    test: &Path,
    options: &FolderOptions,
) -> Result<(FolderOpen, FolderOpen), DataError> {
    let mut opened = open_folders(&[train, test], options)?.into_iter();
    let mut next = || {
        let (source, skipped) = opened.next().expect("two folders");
        FolderOpen { source, skipped }
    };
    let train = next();
    Ok((train, next()))
}

/// Lists and checks `roots` (the first one's classes are the classes; the others' are mapped to
/// them by name) into one [`Shared`] and returns a view of each root with its skipped files.
fn open_folders(
    roots: &[&Path],
    options: &FolderOptions,
) -> Result<Vec<(FolderSource, Vec<BadImage>)>, DataError> {
    check_options(options)?;
    let skip = options.skip_bad_images;
    let pool = decode_pool(options.workers)?;
    let mut class_names: Vec<String> = Vec::new();
    let mut files = Vec::new();
    let mut views = Vec::new();
    for (r, &root) in roots.iter().enumerate() {
        let Listing {
            classes,
            items,
            mut bad,
        } = list_folder(root, skip)?;
        let map: Vec<u32> =
            if r == 0 {
                class_names = classes.iter().map(|(name, _)| name.clone()).collect();
                (0..classes.len() as u32).collect()
            } else {
                let by_name: HashMap<&str, u32> = class_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), i as u32))
                    .collect();
                let mut map = Vec::with_capacity(classes.len());
                for (name, dir) in &classes {
                    map.push(*by_name.get(name.as_str()).ok_or_else(|| {
                        DataError::UnknownClass {
                            class: name.clone(),
                            dir: dir.clone(),
                            train: class_names.len(),
                        }
                    })?);
                }
                map
            };
        // Every file checked on the pool; without skipping, the first bad one in path order is
        // the error, whatever the worker count.
        let checks: Vec<Result<(), DataError>> =
            pool.install(|| items.par_iter().map(|(p, _)| probe_image(p)).collect());
        let mut first = Vec::with_capacity(items.len());
        let mut labels = Vec::with_capacity(items.len());
        let mut counts = vec![0usize; classes.len()];
        for ((path, label), check) in items.into_iter().zip(checks) {
            match check {
                Ok(()) => {
                    counts[label as usize] += 1;
                    first.push(files.len());
                    files.push(path);
                    labels.push(map[label as usize]);
                }
                Err(error) => bad.push(BadImage { path, error }),
            }
        }
        bad.sort_by(|a, b| a.path.cmp(&b.path));
        if !skip && !bad.is_empty() {
            return Err(bad.swap_remove(0).error);
        }
        // A class whose every file was bad is as empty as one without files.
        if let Some(k) = counts.iter().position(|&c| c == 0) {
            return Err(DataError::EmptyClass {
                dir: classes[k].1.clone(),
            });
        }
        views.push((first, labels, bad));
    }
    let (planes, guessed_gray) = match options.channels {
        FolderChannels::Gray => (Planes::Luma, false),
        FolderChannels::Rgb => (Planes::Rgb, false),
        FolderChannels::Auto => {
            match sample_has_colour(&pool, &files, options.size, options.skip_bad_images)? {
                true => (Planes::Rgb, false),
                false => (Planes::FirstOfRgb, true),
            }
        }
    };
    let cache = match options.cache_bytes {
        0 => Vec::new(),
        _ => (0..files.len()).map(|_| OnceLock::new()).collect(),
    };
    let shared = Arc::new(Shared {
        files,
        size: options.size,
        planes,
        guessed_gray,
        skip_bad_images: skip,
        pool,
        cache,
        cache_left: Mutex::new(options.cache_bytes),
        failed: Mutex::new(HashMap::new()),
        colour_seen: AtomicBool::new(false),
        table: byte_table(),
    });
    Ok(views
        .into_iter()
        .map(|(files, labels, bad)| {
            let source = FolderSource {
                shared: Arc::clone(&shared),
                files,
                labels,
                class_names: class_names.clone(),
            };
            (source, bad)
        })
        .collect())
}

/// Whether any of [`CHANNEL_SAMPLE`] files (drawn with a fixed seed; all when there are no
/// more) decodes with colour. A file that fails is an error, or with `skip` is passed over.
fn sample_has_colour(
    pool: &rayon::ThreadPool,
    files: &[PathBuf],
    size: u32,
    skip: bool,
) -> Result<bool, DataError> {
    let picked = sample_indices(files.len(), CHANNEL_SAMPLE, 0);
    let plane = size as usize * size as usize;
    let decoded: Vec<Result<bool, DataError>> = pool.install(|| {
        picked
            .par_iter()
            .map_init(
                || vec![0u8; plane],
                |buf, &g| decode_bytes(&files[g], size, Planes::FirstOfRgb, buf),
            )
            .collect()
    });
    let mut colour = false;
    for d in decoded {
        match d {
            Ok(c) => colour |= c,
            Err(e) if !skip => return Err(e),
            Err(_) => {}
        }
    }
    Ok(colour)
}
