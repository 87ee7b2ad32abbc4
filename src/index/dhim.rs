//! The DHIM hashing head (Ou et al., 2021) as a code source: its parameters, how it turns the
//! encoder's token states into codes, and how it is stored. Training it is `train::dhim`'s
//! business; this is what the index needs to code passages and queries with a trained head.
//!
//! The head: convolutions with windows 1, 3 and 5 over the word positions' states (padding
//! zeroed first), ReLU, a READOUT that averages the local features over real tokens, and a
//! linear projection to `bits` logits; bit = logit > 0.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::rng::SplitMix64;

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("{0}")]
    Msg(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl HeadError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Windows of the three convolutions, as in the paper.
pub const WINDOWS: [usize; 3] = [1, 3, 5];

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DhimConfig {
    pub bits: usize,
    /// Filters per window.
    pub filters: usize,
    /// Temperature of the sigmoid that turns logits into bit probabilities.
    pub alpha: f64,
    /// Weight of the global-code / sentence-embedding MI term.
    pub beta: f64,
    pub lr: f64,
    pub batch: usize,
    pub max_epochs: usize,
    /// Epochs without a better validation score before stopping.
    pub patience: usize,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Word positions per document the head reads.
    pub max_tokens: usize,
    pub seed: u64,
    /// What the global code is tied to by the β term.
    #[serde(default)]
    pub sentence_code: SentenceCode,
    /// Where the weights start.
    #[serde(default)]
    pub init: HeadInit,
}

/// Starting weights of a head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadInit {
    /// PyTorch's default uniform fan-in init (the reference's).
    #[default]
    Random,
    /// The head starts as ITQ: window-1 filters `±w_j` (so `relu(z) − relu(−z) = z` passes the
    /// READOUT through linearly) and a projection that reads `w_j · (readout − mean)`, where
    /// `w_j` are ITQ's directions fitted on the training documents' READOUTs. Training then
    /// starts from codes that already keep float neighbourhoods, instead of from random bits.
    Itq,
}

impl std::str::FromStr for HeadInit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(HeadInit::Random),
            "itq" => Ok(HeadInit::Itq),
            _ => Err(format!("unknown head init {s:?}: use random or itq")),
        }
    }
}

impl std::str::FromStr for SentenceCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "learned" => Ok(SentenceCode::Learned),
            "itq" => Ok(SentenceCode::Itq),
            _ => Err(format!("unknown sentence code {s:?}: use learned or itq")),
        }
    }
}

/// The binarised sentence embedding the β term ties the global code to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentenceCode {
    /// A projection of the mean-pooled embedding learned with the head, sampled like the
    /// other codes (the reference's choice for its CLS vector).
    #[default]
    Learned,
    /// The fixed ITQ code of the mean-pooled embedding, fitted on the training documents.
    Itq,
}

impl Default for DhimConfig {
    fn default() -> Self {
        Self {
            bits: 64,
            filters: 256,
            alpha: 0.3,
            beta: 0.5,
            lr: 1e-3,
            batch: 64,
            max_epochs: 8,
            patience: 2,
            clip: 10.0,
            max_tokens: 127,
            seed: 0x0d41,
            sentence_code: SentenceCode::Learned,
            init: HeadInit::Random,
        }
    }
}

/// The head's parameters. Inference uses the same tensors (without sampling).
pub struct DhimHead {
    pub cfg: DhimConfig,
    pub hidden: usize,
    pub(crate) varmap: VarMap,
    pub(crate) convs: Vec<(Tensor, Tensor)>,
    pub(crate) proj_w: Tensor,
    pub(crate) proj_b: Tensor,
    pub(crate) sent_w: Tensor,
    pub(crate) sent_b: Tensor,
    pub(crate) disc_l: Tensor,
    pub(crate) disc_g: Tensor,
}

impl std::fmt::Debug for DhimHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhimHead")
            .field("cfg", &self.cfg)
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

pub(crate) fn var(
    map: &VarMap,
    name: &str,
    shape: &[usize],
    bound: f64,
    rng: &mut SplitMix64,
    device: &Device,
) -> Result<Tensor, HeadError> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
        .collect();
    let v = Var::from_tensor(&Tensor::from_vec(data, shape, device)?)?;
    let t = v.as_tensor().clone();
    varmap_lock(map)?.insert(name.to_string(), v);
    Ok(t)
}

impl DhimHead {
    /// A freshly initialised head for encoder states of width `hidden` (PyTorch's default
    /// uniform fan-in init, from a seeded generator so training is reproducible).
    pub fn new(cfg: DhimConfig, hidden: usize, device: &Device) -> Result<Self, HeadError> {
        if cfg.bits == 0 || cfg.bits > super::binarize::MAX_BITS {
            return Err(HeadError::Msg(format!(
                "{} bits: use 1 to {}",
                cfg.bits,
                super::binarize::MAX_BITS
            )));
        }
        let map = VarMap::new();
        let mut rng = SplitMix64::new(cfg.seed);
        let f = cfg.filters;
        let mut convs = Vec::new();
        for w in WINDOWS {
            let bound = 1.0 / ((hidden * w) as f64).sqrt();
            let wt = var(
                &map,
                &format!("conv{w}.weight"),
                &[f, hidden, w],
                bound,
                &mut rng,
                device,
            )?;
            let b = var(
                &map,
                &format!("conv{w}.bias"),
                &[f],
                bound,
                &mut rng,
                device,
            )?;
            convs.push((wt, b));
        }
        let feat = f * WINDOWS.len();
        let b = cfg.bits;
        let pb = 1.0 / (feat as f64).sqrt();
        let sb = 1.0 / (hidden as f64).sqrt();
        let db = 1.0 / (b as f64).sqrt();
        Ok(Self {
            proj_w: var(&map, "proj.weight", &[b, feat], pb, &mut rng, device)?,
            proj_b: var(&map, "proj.bias", &[b], pb, &mut rng, device)?,
            sent_w: var(&map, "sent.weight", &[b, hidden], sb, &mut rng, device)?,
            sent_b: var(&map, "sent.bias", &[b], sb, &mut rng, device)?,
            disc_l: var(&map, "disc_local", &[b, b], db, &mut rng, device)?,
            disc_g: var(&map, "disc_global", &[b, b], db, &mut rng, device)?,
            convs,
            varmap: map,
            cfg,
            hidden,
        })
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Replaces one parameter's values (same shape).
    pub(crate) fn set(&self, name: &str, values: Vec<f32>) -> Result<(), HeadError> {
        varmap_set(&self.varmap, name, values)
    }

    /// Local features `(b, t, 3f)` and the masked-mean global feature `(b, 3f)`.
    pub(crate) fn features(
        &self,
        x: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let m = mask.unsqueeze(D::Minus1)?;
        let xt = x.broadcast_mul(&m)?.transpose(1, 2)?.contiguous()?;
        let mut parts = Vec::with_capacity(self.convs.len());
        for (w, b) in &self.convs {
            let k = w.dim(2)?;
            let y = xt.conv1d(w, (k - 1) / 2, 1, 1, 1)?;
            parts.push(y.broadcast_add(&b.reshape((1, (), 1))?)?.relu()?);
        }
        let local = Tensor::cat(&parts, 1)?.transpose(1, 2)?.contiguous()?;
        let count = mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?;
        let global = local.broadcast_mul(&m)?.sum(1)?.broadcast_div(&count)?;
        Ok((local, global))
    }

    pub(crate) fn project(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_matmul(&w.t()?)?.broadcast_add(b)
    }

    /// Global-code logits `(b, bits)` of a padded batch: bit = logit > 0 (probability > 0.5).
    pub fn logits(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor, HeadError> {
        let (_, global) = self.features(x, mask)?;
        Ok(Self::project(&global, &self.proj_w, &self.proj_b)?)
    }

    /// Packed codes of a padded batch, `bits.div_ceil(64)` words per row, bit `i` of the code in
    /// bit `i % 64` of word `i / 64`.
    pub fn codes(&self, x: &Tensor, mask: &Tensor) -> Result<Vec<u64>, HeadError> {
        let l = self.logits(x, mask)?;
        let (n, bits) = l.dims2()?;
        let v: Vec<f32> = l.flatten_all()?.to_vec1()?;
        Ok(pack(&v, n, bits))
    }

    /// The weights as a safetensors file image (f32, names sorted).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, HeadError> {
        varmap_to_safetensors(&self.varmap)
    }

    /// Writes the weights as safetensors, atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), HeadError> {
        let bytes = self.to_safetensors()?;
        crate::fsx::write_atomic(path, &bytes).map_err(|e| HeadError::io(path, e))
    }

    /// A head with `cfg` whose weights come from a safetensors image; every tensor must be
    /// present with the shape `cfg` implies.
    pub fn from_safetensors(
        cfg: DhimConfig,
        hidden: usize,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self, HeadError> {
        let head = Self::new(cfg, hidden, device)?;
        varmap_load(&head.varmap, bytes, device)?;
        Ok(head)
    }

    /// Reads a head written by [`save`](Self::save).
    pub fn load(
        cfg: DhimConfig,
        hidden: usize,
        path: &Path,
        device: &Device,
    ) -> Result<Self, HeadError> {
        let bytes = std::fs::read(path).map_err(|e| HeadError::io(path, e))?;
        Self::from_safetensors(cfg, hidden, &bytes, device).map_err(|e| {
            HeadError::Msg(format!(
                "{}: not a hashing head for this model ({e}); run `dochash train` again",
                path.display()
            ))
        })
    }

    /// Codes straight from the encoder's output: `(b, t, h)` last-layer states with `[CLS]`
    /// first and the `(b, t)` mask of real tokens (any dtype).
    pub fn codes_from_encoder(
        &self,
        states: &Tensor,
        mask: &Tensor,
    ) -> Result<Vec<u64>, HeadError> {
        let t = states.dim(1)?;
        let keep = (t.saturating_sub(1)).min(self.cfg.max_tokens).max(1);
        let (x, m) = if t > 1 {
            (states.narrow(1, 1, keep)?, mask.narrow(1, 1, keep)?)
        } else {
            (states.clone(), mask.clone())
        };
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let m = m.to_dtype(DType::F32)?.contiguous()?;
        self.codes(&x, &m)
    }
}

/// `map`'s variables, locked; a poisoned lock is an error, not a panic.
fn varmap_lock(
    map: &VarMap,
) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<String, Var>>, HeadError> {
    map.data()
        .lock()
        .map_err(|_| HeadError::Msg("variable map lock poisoned".into()))
}

/// `map`'s variable `name` (a handle sharing its storage).
pub(crate) fn varmap_get(map: &VarMap, name: &str) -> Result<Var, HeadError> {
    varmap_lock(map)?
        .get(name)
        .cloned()
        .ok_or_else(|| HeadError::Msg(format!("tensor {name} is missing")))
}

/// Replaces the values of `map`'s variable `name` (same shape).
pub(crate) fn varmap_set(map: &VarMap, name: &str, values: Vec<f32>) -> Result<(), HeadError> {
    let v = varmap_get(map, name)?;
    let t = Tensor::from_vec(values, v.as_tensor().shape(), v.as_tensor().device())?;
    Ok(v.set(&t)?)
}

/// Every variable of `map` as a safetensors file image (f32, names sorted), for a head's
/// checkpoint.
pub(crate) fn varmap_to_safetensors(map: &VarMap) -> Result<Vec<u8>, HeadError> {
    let data = varmap_lock(map)?;
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, v) in data.iter() {
        let t = v.as_tensor();
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        named.push((
            name.clone(),
            t.dims().to_vec(),
            bytemuck::cast_slice(&values).to_vec(),
        ));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let views = named
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HeadError::Msg(format!("cannot serialise the head: {e}")))?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| HeadError::Msg(format!("cannot serialise the head: {e}")))
}

/// Sets every variable of `map` from a safetensors image: each must be present with its
/// current shape, so a checkpoint of another configuration is refused, not half-loaded.
pub(crate) fn varmap_load(map: &VarMap, bytes: &[u8], device: &Device) -> Result<(), HeadError> {
    let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
    let data = varmap_lock(map)?;
    for (name, v) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| HeadError::Msg(format!("tensor {name} is missing")))?;
        if t.dims() != v.as_tensor().dims() {
            return Err(HeadError::Msg(format!(
                "tensor {name} has shape {:?}, expected {:?}",
                t.dims(),
                v.as_tensor().dims()
            )));
        }
        v.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

/// Sign bits of `n` rows of `bits` logits, packed 64 to a word.
pub fn pack(logits: &[f32], n: usize, bits: usize) -> Vec<u64> {
    let words = bits.div_ceil(64);
    let mut out = vec![0u64; n * words];
    for r in 0..n {
        for i in 0..bits {
            if logits[r * bits + i] > 0.0 {
                out[r * words + i / 64] |= 1 << (i % 64);
            }
        }
    }
    out
}
