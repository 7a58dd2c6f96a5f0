//! [`ImageSource`]: what the training pipeline reads images through, held in memory or read
//! from disk as needed.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index;

use super::{DataError, ImageDataset};

/// A labelled set of equally sized images that the pipeline reads a batch at a time: held in
/// memory ([`ImageDataset`]) or decoded from disk when a batch asks for them
/// ([`FolderSource`](super::FolderSource)). The pipeline ([`crate::pipeline::train::run`])
/// takes any source; the labels and the shape are known up front, the pixels only when read.
pub trait ImageSource: Send + Sync {
    /// One class index per image, `< class_names().len()`.
    fn labels(&self) -> &[u32];

    /// Class names; label `k` is `class_names()[k]`.
    fn class_names(&self) -> &[String];

    /// `[channels, height, width]` of every image.
    fn shape(&self) -> [usize; 3];

    /// Writes the images at `indices` (repeats allowed) into `out`, image after image, each
    /// CHW f32 in `[0, 1]`: `out.len()` must be `indices.len() * image_len()`.
    ///
    /// Errors: a file that cannot be read or decoded (for sources that read files).
    ///
    /// # Panics
    /// If an index is `>= len()` or `out` has the wrong length.
    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<(), DataError>;

    /// Number of images.
    fn len(&self) -> usize {
        self.labels().len()
    }

    /// Whether the source holds no image.
    fn is_empty(&self) -> bool {
        self.labels().is_empty()
    }

    /// Number of classes.
    fn n_classes(&self) -> usize {
        self.class_names().len()
    }

    /// f32 values per image (`channels * height * width`).
    fn image_len(&self) -> usize {
        self.shape().iter().product()
    }

    /// The images at `indices`, image after image ([`ImageSource::read_into`] into a new
    /// vector).
    fn read(&self, indices: &[usize]) -> Result<Vec<f32>, DataError> {
        let mut out = vec![0f32; indices.len() * self.image_len()];
        self.read_into(indices, &mut out)?;
        Ok(out)
    }
}

impl ImageSource for ImageDataset {
    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<(), DataError> {
        let n = self.image_len();
        assert_eq!(out.len(), indices.len() * n, "output length");
        for (&i, slot) in indices.iter().zip(out.chunks_exact_mut(n)) {
            slot.copy_from_slice(self.image(i));
        }
        Ok(())
    }
}

/// At most `max` indices of `0..n`, sorted: all of them when `n <= max`, else `max` drawn
/// without repeats by a generator seeded with `seed`. The images a statistic is computed from
/// when a set is too large to look at whole.
pub fn sample_indices(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut picked = index::sample(&mut StdRng::seed_from_u64(seed), n, max).into_vec();
    picked.sort_unstable();
    picked
}

/// Batches [`prefetch`] reads ahead of the one in use by the training and evaluation loops:
/// while the device works on one batch, the next two are decoded.
pub const PREFETCH_BATCHES: usize = 2;

/// The pixels of `batches` (each a list of image indices), in order, read by a thread of
/// `scope` that runs up to `depth` batches ahead of the receiver (a bounded queue: host memory
/// holds at most `depth + 1` batches waiting, whatever the data set's size). After an error the
/// thread sends it and stops; it also stops when the receiver is dropped.
pub fn prefetch<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    source: &'scope dyn ImageSource,
    batches: Vec<Vec<usize>>,
    depth: usize,
) -> std::sync::mpsc::IntoIter<Result<Vec<f32>, DataError>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(depth);
    std::thread::Builder::new()
        .name("supcon-prefetch".into())
        .spawn_scoped(scope, move || {
            for idx in batches {
                let read = source.read(&idx);
                let failed = read.is_err();
                if tx.send(read).is_err() || failed {
                    break;
                }
            }
        })
        .expect("spawning the prefetch thread");
    rx.into_iter()
}
