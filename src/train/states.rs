//! A corpus's last-layer token states, computed once by the frozen encoder and kept in f16.
//!
//! The hashing head reads token states, not pooled vectors, and trains for several epochs: on a
//! 2-core CPU encoding 11 k documents takes about ten minutes while an epoch of the head takes
//! about one, so the encoder runs once and the epochs read this.

use std::io::{Read, Write};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::encoder::{BatchLimits, Encoder, l2_normalize, length_buckets, pool};

use super::TrainError;

const MAGIC: &[u8; 8] = b"DHSTATE1";

/// Ragged token states of `n` texts (`[CLS]` and `[SEP]` included) plus their unit-length
/// mean-pooled vectors, which were computed in f32 before the states were rounded.
#[derive(Debug, Clone)]
pub struct CorpusStates {
    pub dim: usize,
    /// Text `i` owns token rows `offsets[i]..offsets[i + 1]`.
    pub offsets: Vec<usize>,
    pub states: Vec<f16>,
    pub pooled: Vec<f32>,
}

impl CorpusStates {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn tokens(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }
    pub fn pooled_row(&self, i: usize) -> &[f32] {
        &self.pooled[i * self.dim..(i + 1) * self.dim]
    }

    /// Encodes `texts` with `enc` (frozen), calling `progress(done, total)` after each batch.
    pub fn encode(
        enc: &Encoder,
        texts: &[&str],
        limits: BatchLimits,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, TrainError> {
        Self::encode_layers(enc, texts, enc.num_layers(), limits, progress)
    }

    /// Like [`encode`](Self::encode) but keeps the states after the first `layers` layers
    /// (what fine-tuning the layers above them starts from).
    pub fn encode_layers(
        enc: &Encoder,
        texts: &[&str],
        layers: usize,
        limits: BatchLimits,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, TrainError> {
        let tokens = enc.tokenize(texts)?;
        let dim = enc.dim();
        // One buffer of the final size, filled in place: every text's length is known from
        // its tokens, so the states are never held twice.
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        for t in &tokens {
            offsets.push(offsets.last().copied().unwrap_or(0) + t.ids.len());
        }
        let total = offsets.last().copied().unwrap_or(0);
        let mut states = vec![f16::ZERO; total * dim];
        let mut pooled = vec![0f32; texts.len() * dim];
        let mut done = 0;
        for batch in length_buckets(&tokens, limits) {
            let items: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].ids.as_slice()).collect();
            let (out, mask) = enc.layer_states(&items, layers, false)?;
            let v = l2_normalize(&pool(&out, &mask, enc.profile().pooling)?)?;
            let v: Vec<f32> = v.flatten_all()?.to_vec1()?;
            let t = out.dim(1)?;
            let flat: Vec<f32> = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            for (k, &i) in batch.iter().enumerate() {
                let len = items[k].len();
                let start = k * t * dim;
                let dst = &mut states[offsets[i] * dim..(offsets[i] + len) * dim];
                for (d, x) in dst.iter_mut().zip(&flat[start..start + len * dim]) {
                    *d = f16::from_f32(*x);
                }
                pooled[i * dim..(i + 1) * dim].copy_from_slice(&v[k * dim..(k + 1) * dim]);
            }
            done += batch.len();
            progress(done, texts.len());
        }
        Ok(Self {
            dim,
            offsets,
            states,
            pooled,
        })
    }

    /// The texts `idx`, in that order, as a corpus of their own.
    pub fn subset(&self, idx: &[usize]) -> Self {
        let d = self.dim;
        let mut offsets = vec![0];
        let mut states = Vec::new();
        let mut pooled = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            states.extend_from_slice(&self.states[self.offsets[i] * d..self.offsets[i + 1] * d]);
            offsets.push(states.len() / d.max(1));
            pooled.extend_from_slice(self.pooled_row(i));
        }
        Self {
            dim: d,
            offsets,
            states,
            pooled,
        }
    }

    /// Rows `idx` as a padded batch without `[CLS]` (the head reads word positions only):
    /// `(b, t, dim)` f32 states with padding set to zero, and the `(b, t)` f32 mask.
    /// At most `max_t` positions per text are kept.
    pub fn batch(
        &self,
        idx: &[usize],
        max_t: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor), TrainError> {
        self.padded(idx, 1, max_t, device)
    }

    /// Rows `idx` as a padded batch with every token, `[CLS]` included.
    pub fn batch_full(
        &self,
        idx: &[usize],
        device: &Device,
    ) -> Result<(Tensor, Tensor), TrainError> {
        self.padded(idx, 0, usize::MAX, device)
    }

    /// Rows `idx` as a padded batch of random crops: `[CLS]`, a random run of `len − 2` word
    /// positions, and the text's last token (`[SEP]`); texts of at most `len` tokens whole.
    pub fn batch_crops(
        &self,
        idx: &[usize],
        len: usize,
        rng: &mut crate::rng::SplitMix64,
        device: &Device,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let len = len.max(3);
        let rows: Vec<Vec<usize>> = idx
            .iter()
            .map(|&i| {
                let (o, n) = (self.offsets[i], self.tokens(i));
                if n <= len {
                    return (o..o + n).collect();
                }
                let inner = len - 2;
                let start = 1 + (rng.next_u64() % (n - 1 - inner) as u64) as usize;
                std::iter::once(o)
                    .chain(o + start..o + start + inner)
                    .chain(std::iter::once(o + n - 1))
                    .collect()
            })
            .collect();
        let t = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let d = self.dim;
        let mut x = vec![0f32; idx.len() * t * d];
        let mut m = vec![0f32; idx.len() * t];
        for (k, r) in rows.iter().enumerate() {
            for (j, &row) in r.iter().enumerate() {
                let dst = &mut x[(k * t + j) * d..(k * t + j + 1) * d];
                for (a, s) in dst.iter_mut().zip(&self.states[row * d..(row + 1) * d]) {
                    *a = s.to_f32();
                }
            }
            m[k * t..k * t + r.len()].fill(1.0);
        }
        Ok((
            Tensor::from_vec(x, (idx.len(), t, d), device)?,
            Tensor::from_vec(m, (idx.len(), t), device)?,
        ))
    }

    /// Token rows of text `i` a batch keeps: `skip` leading tokens dropped, at most `max_t` kept.
    fn kept(&self, i: usize, skip: usize, max_t: usize) -> std::ops::Range<usize> {
        let start = self.offsets[i] + skip.min(self.tokens(i));
        start..start + self.tokens(i).saturating_sub(skip).min(max_t)
    }

    fn padded(
        &self,
        idx: &[usize],
        skip: usize,
        max_t: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let t = idx
            .iter()
            .map(|&i| self.kept(i, skip, max_t).len())
            .max()
            .unwrap_or(0)
            .max(1);
        let d = self.dim;
        let mut x = vec![0f32; idx.len() * t * d];
        let mut m = vec![0f32; idx.len() * t];
        for (k, &i) in idx.iter().enumerate() {
            let rows = self.kept(i, skip, max_t);
            let n = rows.len();
            let src = &self.states[rows.start * d..rows.end * d];
            for (dst, s) in x[k * t * d..k * t * d + n * d].iter_mut().zip(src) {
                *dst = s.to_f32();
            }
            m[k * t..k * t + n].fill(1.0);
        }
        Ok((
            Tensor::from_vec(x, (idx.len(), t, d), device)?,
            Tensor::from_vec(m, (idx.len(), t), device)?,
        ))
    }

    /// The hashing head's READOUT input of rows `idx`, row-major `(idx.len(), dim)`: the mean
    /// state over the positions [`batch`](Self::batch) keeps (word positions, at most `max_t`).
    pub fn readouts(&self, idx: &[usize], max_t: usize) -> Vec<f32> {
        let d = self.dim;
        let mut out = vec![0f32; idx.len() * d];
        for (row, &i) in out.chunks_exact_mut(d.max(1)).zip(idx) {
            let rows = self.kept(i, 1, max_t);
            let inv = 1.0 / rows.len().max(1) as f32;
            for t in rows {
                for (o, s) in row.iter_mut().zip(&self.states[t * d..(t + 1) * d]) {
                    *o += s.to_f32();
                }
            }
            row.iter_mut().for_each(|o| *o *= inv);
        }
        out
    }

    /// The pooled vectors of rows `idx` as a `(b, dim)` tensor.
    pub fn pooled_batch(&self, idx: &[usize], device: &Device) -> Result<Tensor, TrainError> {
        let mut v = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            v.extend_from_slice(self.pooled_row(i));
        }
        Ok(Tensor::from_vec(v, (idx.len(), self.dim), device)?)
    }

    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let io = |e| TrainError::io(path, e);
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            f.write_all(MAGIC).map_err(io)?;
            for v in [self.len(), self.dim, self.states.len() / self.dim.max(1)] {
                f.write_all(&(v as u64).to_le_bytes()).map_err(io)?;
            }
            let offs: Vec<u64> = self.offsets.iter().map(|&o| o as u64).collect();
            f.write_all(bytemuck::cast_slice(&offs)).map_err(io)?;
            f.write_all(bytemuck::cast_slice(&self.pooled))
                .map_err(io)?;
            f.write_all(bytemuck::cast_slice(&self.states))
                .map_err(io)?;
            f.flush().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a file written by [`save`](Self::save); `None` if it is missing or not one.
    pub fn load(path: &Path) -> Option<Self> {
        let mut f = std::fs::File::open(path).ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        let rest = bytes.strip_prefix(MAGIC)?;
        let num = |k: usize| -> Option<usize> {
            let b = rest.get(k * 8..k * 8 + 8)?;
            usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()
        };
        let (n, dim, total) = (num(0)?, num(1)?, num(2)?);
        let mut at = 24;
        let take = |at: &mut usize, len: usize| -> Option<&[u8]> {
            let s = rest.get(*at..at.checked_add(len)?)?;
            *at += len;
            Some(s)
        };
        let offs = take(&mut at, (n + 1).checked_mul(8)?)?;
        let offsets: Vec<usize> = offs
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
            .collect();
        let pooled: Vec<f32> = take(&mut at, n.checked_mul(dim)?.checked_mul(4)?)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let states: Vec<f16> = take(&mut at, total.checked_mul(dim)?.checked_mul(2)?)?
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect();
        let sane = at == rest.len()
            && offsets.first() == Some(&0)
            && offsets.last() == Some(&total)
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        sane.then_some(Self {
            dim,
            offsets,
            states,
            pooled,
        })
    }
}
