//! The feature queue of `--queue-size` (the loss's keys: contrast-only rows from earlier steps)
//! and the momentum encoder of `--momentum-encoder` (MoCo, He et al. 2020: the keys come from an
//! exponential moving average of encoder + head, so that they go stale slowly).
//!
//! Each step contrasts its batch against the queue as it was before the step, then pushes the
//! step's keys (both views of every image, L2-normalised, with their labels) to its front and
//! drops the oldest beyond its size. Keys are the online model's detached projections, or,
//! with a momentum encoder, the averaged model's projections of the same augmented views (its
//! batch norm uses the batch's statistics, as the online model's in training). The queue and the
//! averaged model are part of every checkpoint, so a resumed run continues exactly.

use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::burn_pack::Bytes;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::checkpoint::checkpoint_error;
use crate::backend::CachedForward;
use crate::backend::composed::normalize;
use crate::pipeline::model::PretrainModel;
use crate::pipeline::{Result, io_error, write_atomic};

/// The queue of one run: at most `size` keys, newest first.
pub(super) struct KeyQueue {
    size: usize,
    /// `[len, dim]` normalised keys; `None` while empty.
    keys: Option<Tensor<2>>,
    /// `[len]` their labels (SupCon); `None` without labels (SimCLR) or while empty.
    labels: Option<Tensor<1, Int>>,
    /// The averaged model and its momentum m (`θ_k ← m θ_k + (1 − m) θ_q` before each step).
    momentum: Option<(PretrainModel, f64)>,
    /// Where the keys live (the training device).
    device: Device,
}

impl KeyQueue {
    /// An empty queue of `size` keys on `device`; with `momentum`, its averaged model starts as
    /// a copy of `model`.
    pub(super) fn new(
        size: usize,
        momentum: Option<f64>,
        model: &PretrainModel,
        device: &Device,
    ) -> Self {
        KeyQueue {
            device: device.clone(),
            size,
            keys: None,
            labels: None,
            momentum: momentum.map(|m| (model.clone(), m)),
        }
    }

    /// Keys in the queue.
    pub(super) fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[0])
    }

    /// The keys and their labels (`None` when the queue is empty).
    pub(super) fn keys(&self) -> Option<(Tensor<2>, Option<Tensor<1, Int>>)> {
        self.keys.clone().map(|k| (k, self.labels.clone()))
    }

    /// Moves the averaged model towards `online` (a no-op without a momentum encoder).
    pub(super) fn momentum_update(&mut self, online: &PretrainModel) {
        let Some((averaged, m)) = self.momentum.take() else {
            return;
        };
        let mut collect = Collect(Vec::new());
        online.visit(&mut collect);
        let mut average = Average {
            online: collect.0.into_iter(),
            m,
        };
        let averaged = averaged.map(&mut average);
        assert!(
            average.online.next().is_none(),
            "the averaged model has the online model's parameters"
        );
        self.momentum = Some((averaged, m));
    }

    /// The keys of this step's `views` (`[2b]` rows, view-major): the averaged model's
    /// projections, in chunks of `chunk` images, or else `online` (the features the loss saw,
    /// `[b, 2, dim]`), detached.
    pub(super) fn step_keys(
        &self,
        views: &[Tensor<4>],
        chunk: usize,
        online: Tensor<3>,
    ) -> Tensor<2> {
        let keys = match &self.momentum {
            Some((averaged, _)) => {
                let b = views[0].dims()[0];
                let mut rows = Vec::new();
                for view in views {
                    for start in (0..b).step_by(chunk.max(1)) {
                        let len = chunk.min(b - start);
                        rows.push(averaged.forward_untracked(view.clone().narrow(0, start, len)));
                    }
                }
                Tensor::cat(rows, 0)
            }
            None => {
                let [b, n_views, dim] = online.dims();
                online.detach().swap_dims(0, 1).reshape([b * n_views, dim])
            }
        };
        normalize(keys.detach()).detach()
    }

    /// Pushes `keys` (with `labels`, of the same rows) to the front and drops the oldest keys
    /// beyond the queue's size.
    pub(super) fn push(&mut self, keys: Tensor<2>, labels: Option<Tensor<1, Int>>) {
        let total = self.len() + keys.dims()[0];
        let kept = total.min(self.size);
        let joined = match self.keys.take() {
            Some(old) => Tensor::cat(vec![keys, old], 0),
            None => keys,
        };
        self.keys = Some(joined.narrow(0, 0, kept));
        self.labels = match (labels, self.labels.take()) {
            (Some(new), Some(old)) => Some(Tensor::cat(vec![new, old], 0).narrow(0, 0, kept)),
            (Some(new), None) => Some(new.narrow(0, 0, kept)),
            (None, _) => None,
        };
    }

    /// Writes the queue (`<stem>.queue.bin`) and the averaged model (`<stem>.momentum.bpk`)
    /// next to a checkpoint; returns the file names.
    pub(super) fn save(&self, dir: &Path, stem: &str) -> Result<SavedQueue> {
        let queue_file = format!("{stem}.queue.bin");
        write_atomic(&dir.join(&queue_file), &self.to_bytes())?;
        let momentum_file = match &self.momentum {
            Some((averaged, _)) => {
                let file = format!("{stem}.momentum.bpk");
                let mut store = BurnpackStore::from_bytes(None);
                averaged.save_into(&mut store).map_err(|e| {
                    checkpoint_error(dir, format!("saving the averaged model: {e}"))
                })?;
                let bytes = store.get_bytes().map_err(|e| {
                    checkpoint_error(dir, format!("saving the averaged model: {e}"))
                })?;
                write_atomic(&dir.join(&file), &bytes)?;
                Some(file)
            }
            None => None,
        };
        Ok(SavedQueue {
            queue_file,
            momentum_file,
        })
    }

    /// Restores what [`save`](Self::save) wrote into this queue (as freshly built for the
    /// run).
    pub(super) fn load(&mut self, dir: &Path, saved: &SavedQueue) -> Result<()> {
        let path = dir.join(&saved.queue_file);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let device = self.device.clone();
        self.read_bytes(&bytes, &device)
            .map_err(|m| checkpoint_error(&path, m))?;
        match (&mut self.momentum, &saved.momentum_file) {
            (Some((averaged, _)), Some(file)) => {
                let path = dir.join(file);
                let bytes = std::fs::read(&path).map_err(io_error(&path))?;
                let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
                let applied = averaged
                    .load_from(&mut store)
                    .map_err(|e| checkpoint_error(&path, format!("corrupt averaged model: {e}")))?;
                if !applied.errors.is_empty() || !applied.missing.is_empty() {
                    return Err(checkpoint_error(&path, "does not fit the model"));
                }
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err(checkpoint_error(
                dir,
                "the checkpoint's momentum encoder does not match the run's",
            )),
        }
    }

    /// `[len u64][dim u64][has labels u64]`, the keys as f32, the labels as i64 (little-endian).
    fn to_bytes(&self) -> Vec<u8> {
        let (len, dim) = self.keys.as_ref().map_or((0, 0), |k| {
            let [len, dim] = k.dims();
            (len, dim)
        });
        let mut out = Vec::new();
        let has_labels = self.labels.is_some() as u64;
        for word in [len as u64, dim as u64, has_labels] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        if let Some(k) = &self.keys {
            let values = k.clone().into_data().convert::<f32>();
            for v in values.iter::<f32>() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(l) = &self.labels {
            for v in l.clone().into_data().convert::<i64>().iter::<i64>() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    fn read_bytes(&mut self, bytes: &[u8], device: &Device) -> std::result::Result<(), String> {
        let word = |i: usize| -> std::result::Result<u64, String> {
            let b = bytes.get(8 * i..8 * i + 8).ok_or("truncated queue file")?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let (len, dim, has_labels) = (word(0)? as usize, word(1)? as usize, word(2)? == 1);
        let want = 24 + len * dim * 4 + if has_labels { len * 8 } else { 0 };
        if bytes.len() != want || len > self.size {
            return Err(format!(
                "corrupt queue file ({} bytes, {len} keys of {dim}, queue of {})",
                bytes.len(),
                self.size
            ));
        }
        if len == 0 {
            self.keys = None;
            self.labels = None;
            return Ok(());
        }
        let floats: Vec<f32> = bytes[24..24 + len * dim * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        self.keys = Some(Tensor::from_data(
            TensorData::new(floats, [len, dim]),
            device,
        ));
        self.labels = has_labels.then(|| {
            let labels: Vec<i64> = bytes[24 + len * dim * 4..]
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            Tensor::from_data(TensorData::new(labels, [len]), device)
        });
        Ok(())
    }
}

/// The files of a saved queue, recorded in the checkpoint's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedQueue {
    pub(super) queue_file: String,
    pub(super) momentum_file: Option<String>,
}

/// The online model's float parameters in visiting order, flattened (inner backend: no graph).
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().inner().flatten(0, D - 1));
    }
}

/// `θ_k ← m θ_k + (1 − m) θ_q` for each float parameter, in the same visiting order.
struct Average {
    online: std::vec::IntoIter<Tensor<1>>,
    m: f64,
}

impl ModuleMapper for Average {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let online = self
            .online
            .next()
            .expect("the averaged model has the online model's parameters");
        let m = self.m;
        param.map(|t| {
            let dims = t.dims();
            let inner = t.inner();
            let mixed = inner.mul_scalar(m) + online.reshape(dims).mul_scalar(1.0 - m);
            Tensor::from_inner(mixed)
        })
    }
}
