//! The ranking head: a code source learned for what the codes are for in dochash — passing a
//! query's true nearest passages through the filter in as few candidates as possible. Training
//! it is `train::ranked`'s business; this is what the index needs to code with a trained head.
//!
//! A code is the sign of `(x − mean)·W − offset + scale ⊙ MLP(x)` over the pooled vector `x`:
//! ITQ's projection (where training starts, so a head is never worse than ITQ at step 0) plus
//! a residual one-hidden-layer MLP. The linear part alone cannot beat ITQ by much — on R8 even
//! the unquantised 64-float projection needs 0.66× ITQ's candidates — so the residual is what
//! lets the bits bend around the neighbourhoods (docs/BENCHMARKS.md). Like ITQ, the head gives
//! the query's real-valued logits as margins, so the product's weighted filter scores it.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use super::dhim::{
    HeadError, pack, var, varmap_get, varmap_load, varmap_set, varmap_to_safetensors,
};
use crate::rng::SplitMix64;

/// How a ranking head is shaped and trained (the defaults are the measured recipe).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RankConfig {
    pub bits: usize,
    /// Width of the residual MLP's hidden layer.
    pub hidden: usize,
    pub lr: f64,
    /// Training queries per step.
    pub batch: usize,
    /// Passages each step ranks a query's neighbours among (a random sample; the rank is
    /// scaled up to the corpus).
    pub pool: usize,
    /// Most steps; the head kept is the one that needed the fewest candidates on held-back
    /// passages, checked every `every` steps.
    pub steps: usize,
    pub every: usize,
    /// Temperature of the sigmoid that counts "scored above a neighbour", in units of a
    /// query's score spread.
    pub temperature: f64,
    /// Share of the batch's worst (query, neighbour) pairs weighed again: the 0.99 point the
    /// filter is sized by is set by the hardest pairs, not the typical one.
    pub tail: f64,
    /// Teacher neighbours per passage (exact cosine).
    pub neighbours: usize,
    /// Passages trained on at most (an evenly spaced sample), so time and memory stay bounded.
    pub max_passages: usize,
    /// Passages held back as the check's queries (at most; they stay in the pool as passages).
    pub held_back: usize,
    pub seed: u64,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            bits: 64,
            hidden: 512,
            lr: 3e-4,
            batch: 256,
            pool: 4096,
            steps: 600,
            every: 50,
            temperature: 0.1,
            tail: 0.05,
            neighbours: 10,
            max_passages: 20_000,
            held_back: 1000,
            seed: 0x7a11,
        }
    }
}

/// The head's parameters; the fixed ones (ITQ's mean and offsets, the residual's per-bit
/// scale) live in the same map so one checkpoint holds everything.
pub struct RankHead {
    pub cfg: RankConfig,
    pub dim: usize,
    varmap: VarMap,
    pub(crate) mean: Tensor,
    pub(crate) offset: Tensor,
    pub(crate) scale: Tensor,
    pub(crate) proj: Tensor,
    pub(crate) w1: Tensor,
    pub(crate) b1: Tensor,
    pub(crate) w2: Tensor,
    pub(crate) b2: Tensor,
}

impl std::fmt::Debug for RankHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankHead")
            .field("cfg", &self.cfg)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

/// Names of the trained parameters (the rest are fixed at the ITQ start).
pub(crate) const TRAINED: [&str; 5] = ["proj", "mlp.w1", "mlp.b1", "mlp.w2", "mlp.b2"];

/// Rows coded per matrix product, so coding a large index does not hold all its logits twice.
const CODE_CHUNK: usize = 4096;

impl RankHead {
    /// A head for `dim`-wide vectors: random projection and hidden layer, a zero output layer
    /// (the residual starts silent), zero mean and offsets, unit scale.
    pub fn new(cfg: RankConfig, dim: usize, device: &Device) -> Result<Self, HeadError> {
        if cfg.bits == 0 || cfg.bits > super::binarize::MAX_BITS || cfg.hidden == 0 || dim == 0 {
            return Err(HeadError::Msg(format!(
                "a ranking head needs 1 to {} bits, a hidden layer and a vector width (got {} bits, {} hidden, width {dim})",
                super::binarize::MAX_BITS,
                cfg.bits,
                cfg.hidden
            )));
        }
        let map = VarMap::new();
        let mut rng = SplitMix64::new(cfg.seed);
        let (b, h) = (cfg.bits, cfg.hidden);
        let bound = 1.0 / (dim as f64).sqrt();
        let proj = var(&map, "proj", &[dim, b], bound, &mut rng, device)?;
        let w1 = var(&map, "mlp.w1", &[dim, h], bound, &mut rng, device)?;
        let b1 = var(&map, "mlp.b1", &[h], bound, &mut rng, device)?;
        let w2 = var(&map, "mlp.w2", &[h, b], 0.0, &mut rng, device)?;
        let b2 = var(&map, "mlp.b2", &[b], 0.0, &mut rng, device)?;
        let mean = var(&map, "itq.mean", &[dim], 0.0, &mut rng, device)?;
        let offset = var(&map, "itq.offset", &[b], 0.0, &mut rng, device)?;
        let scale = var(&map, "scale", &[b], 0.0, &mut rng, device)?;
        let head = Self {
            cfg,
            dim,
            varmap: map,
            mean,
            offset,
            scale,
            proj,
            w1,
            b1,
            w2,
            b2,
        };
        head.set("scale", vec![1.0; b])?;
        Ok(head)
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The parameters training updates (the fixed ones stay as the ITQ start set them).
    pub fn trained_vars(&self) -> Result<Vec<Var>, HeadError> {
        TRAINED
            .iter()
            .map(|name| varmap_get(&self.varmap, name))
            .collect()
    }

    /// Replaces one parameter's values (same shape).
    pub(crate) fn set(&self, name: &str, values: Vec<f32>) -> Result<(), HeadError> {
        varmap_set(&self.varmap, name, values)
    }

    /// Logits `(n, bits)` of `(n, dim)` pooled vectors: bit = logit > 0. The fixed
    /// parameters are detached, so training computes no gradient for them.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let lin = x
            .broadcast_sub(&self.mean.detach())?
            .matmul(&self.proj)?
            .broadcast_sub(&self.offset.detach())?;
        let hidden = x.matmul(&self.w1)?.broadcast_add(&self.b1)?.gelu_erf()?;
        let res = hidden
            .matmul(&self.w2)?
            .broadcast_add(&self.b2)?
            .broadcast_mul(&self.scale.detach())?;
        lin + res
    }

    fn check_rows(&self, vectors: &[f32], n: usize) -> Result<(), HeadError> {
        if vectors.len() != n.saturating_mul(self.dim) {
            return Err(HeadError::Msg(format!(
                "{} floats are not {n} vectors of {}",
                vectors.len(),
                self.dim
            )));
        }
        Ok(())
    }

    /// Logits of `n` row-major vectors, flattened.
    pub fn logits_of(&self, vectors: &[f32], n: usize) -> Result<Vec<f32>, HeadError> {
        self.check_rows(vectors, n)?;
        let device = self.mean.device();
        let mut out = Vec::with_capacity(n * self.cfg.bits);
        for chunk in vectors.chunks(CODE_CHUNK * self.dim) {
            let rows = chunk.len() / self.dim;
            let x = Tensor::from_slice(chunk, (rows, self.dim), device)?;
            out.extend(self.logits(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Packed codes of `n` row-major vectors (`bits.div_ceil(64)` words each).
    pub fn codes(&self, vectors: &[f32], n: usize) -> Result<Vec<u64>, HeadError> {
        let l = self.logits_of(vectors, n)?;
        Ok(pack(&l, n, self.cfg.bits))
    }

    /// One vector's logits: the margins the weighted filter weighs a query's bits by.
    pub fn margins(&self, vector: &[f32]) -> Result<Vec<f32>, HeadError> {
        self.logits_of(vector, 1)
    }

    /// The weights as a safetensors file image.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, HeadError> {
        varmap_to_safetensors(&self.varmap)
    }

    /// A head with `cfg` for `dim`-wide vectors whose weights come from a safetensors image
    /// with every tensor in the shape `cfg` implies.
    pub fn from_safetensors(
        cfg: RankConfig,
        dim: usize,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self, HeadError> {
        let head = Self::new(cfg, dim, device)?;
        varmap_load(&head.varmap, bytes, device)?;
        Ok(head)
    }

    /// Values of one parameter, flattened.
    #[cfg(test)]
    pub(crate) fn values(&self, t: &Tensor) -> candle_core::Result<Vec<f32>> {
        t.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RankConfig {
        RankConfig {
            bits: 8,
            hidden: 16,
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_head_is_its_linear_part_and_round_trips_to_identical_codes() {
        let dev = Device::Cpu;
        let head = RankHead::new(small(), 12, &dev).unwrap();
        let mut rng = SplitMix64::new(3);
        let x: Vec<f32> = (0..12 * 30).map(|_| rng.gaussian() as f32).collect();
        // The residual's output layer starts at zero: logits are the projection's.
        let proj = head.values(&head.proj).unwrap();
        let l = head.logits_of(&x, 30).unwrap();
        for r in 0..30 {
            for j in 0..8 {
                let want: f32 = (0..12).map(|i| x[r * 12 + i] * proj[i * 8 + j]).sum();
                assert!((l[r * 8 + j] - want).abs() < 1e-4);
            }
        }
        // Give the residual a say, then a checkpoint reloads to the same codes and margins.
        head.set(
            "mlp.w2",
            (0..16 * 8).map(|i| (i as f32 * 0.37).sin()).collect(),
        )
        .unwrap();
        let bytes = head.to_safetensors().unwrap();
        let back = RankHead::from_safetensors(small(), 12, &bytes, &dev).unwrap();
        assert_eq!(back.codes(&x, 30).unwrap(), head.codes(&x, 30).unwrap());
        assert_eq!(
            back.margins(&x[..12]).unwrap(),
            head.margins(&x[..12]).unwrap()
        );
        assert_ne!(head.logits_of(&x, 30).unwrap(), l);
        // Another shape is refused, not half-loaded; so is a wrong number of floats.
        let other = RankConfig {
            hidden: 8,
            ..small()
        };
        assert!(RankHead::from_safetensors(other, 12, &bytes, &dev).is_err());
        assert!(head.codes(&x[..13], 1).is_err());
    }
}
