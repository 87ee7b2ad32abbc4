//! Passages → vectors: a BERT encoder on candle, its tokenizer, pooling and length-bucketed
//! batching.
//!
//! The same [`Encoder`] serves inference (frozen weights, fast kernels) and fine-tuning
//! (weights held as variables in a [`VarMap`], differentiable kernels, real dropout).

mod bert;
mod config;
mod cpu;
mod device;
mod kernels;
mod packed;
mod pool;
mod precision;
mod profile;
mod quant;
mod tiny;
mod tokenize;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

pub use bert::Bert;
pub use config::{Activation, BertConfig};
pub use device::{DeviceSpec, open as open_device};
pub use pool::{Pooling, l2_normalize, pool};
pub use precision::Precision;
pub use profile::{Profile, Role};
pub use tiny::write_tiny_model;
pub use tokenize::{TextTokenizer, Tokens};

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("{}: {msg}; fix the file or point --model at another model folder", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}: cannot use this tokenizer: {msg}; point --model at a folder with a BERT tokenizer.json", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("{}: {msg}; delete the model folder and run `dochash model fetch`, or point --model at another folder", path.display())]
    Weights { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Device(String),
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// How to load an encoder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: DeviceSpec,
    /// Hold the weights as trainable variables (fine-tuning); otherwise frozen and faster.
    pub trainable: bool,
    /// Tokens per text including `[CLS]`/`[SEP]`; `None` takes the model's own setting
    /// (`sentence_bert_config.json`'s `max_seq_length`, else `max_position_embeddings`).
    pub max_len: Option<usize>,
    /// Run frozen CPU inference through candle's general tensor path instead of the fused one
    /// (`dochash bench encode --candle`, the baseline it is measured against).
    pub candle_only: bool,
    /// The weight products' number format; `int8` runs on the fused CPU path only. `None`:
    /// int8 where that path runs and the CPU has an int8 SIMD kernel (it is about twice as fast
    /// and measured within 0.5 points of f32, see docs/BENCHMARKS.md), else f32.
    pub precision: Option<Precision>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Auto,
            trainable: false,
            max_len: None,
            candle_only: false,
            precision: None,
        }
    }
}

/// Batching limits for [`Encoder::embed`]: at most `max_batch` texts and `max_tokens` padded
/// tokens per forward pass, which bounds memory for long texts and keeps GEMMs large for short.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_tokens: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_tokens: 32 * 128,
        }
    }
}

/// Vectors of many texts, row-major, in the order the texts were given.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub dim: usize,
    pub data: Vec<f32>,
    /// Indices of the texts that were longer than the model's limit and were cut.
    pub truncated: Vec<usize>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

pub struct Encoder {
    bert: Bert,
    tokenizer: TextTokenizer,
    profile: Profile,
    device: Device,
    device_label: String,
    varmap: Option<VarMap>,
    dir: PathBuf,
}

impl Encoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self, EncoderError> {
        let cfg = BertConfig::from_file(&dir.join("config.json"))?;
        let profile = Profile::read(dir)?;
        let max_len = match opts.max_len {
            Some(n) => n,
            None => sentence_bert_max_len(dir).unwrap_or(cfg.positions()),
        }
        .clamp(2, cfg.positions());
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        let (device, device_label) = device::open(opts.device)?;
        let fused = !opts.trainable && !opts.candle_only && device.is_cpu();
        let precision = match opts.precision {
            Some(Precision::Int8) if !fused => {
                return Err(EncoderError::Device(format!(
                    "--precision int8 runs on the CPU inference path only, not on {}; use --precision f32",
                    if opts.trainable || opts.candle_only {
                        "candle's tensor path"
                    } else {
                        device_label.as_str()
                    }
                )));
            }
            Some(p) => p,
            None if fused && quant::Kernel::detect().is_simd() => Precision::Int8,
            None => Precision::F32,
        };

        let weights = dir.join("model.safetensors");
        let bad = |msg: String| EncoderError::Weights {
            path: weights.clone(),
            msg,
        };
        let names = safetensors_names(&weights).map_err(bad)?;
        let prefix = cfg.weight_prefix();
        let prefixed = bert::has_prefix(names.iter().map(String::as_str), prefix);

        let (bert, varmap) = if opts.trainable {
            let bytes = std::fs::read(&weights).map_err(|e| bad(format!("cannot read: {e}")))?;
            let tensors = candle_core::safetensors::load_buffer(&bytes, &device)
                .map_err(|e| bad(format!("cannot load tensors: {e}")))?;
            let dotted = if prefixed {
                format!("{prefix}.")
            } else {
                String::new()
            };
            let varmap = bert::varmap_from(tensors, &dotted).map_err(|e| bad(e.to_string()))?;
            let before = varmap.all_vars().len();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
            let vb = if prefixed { vb.pp(prefix) } else { vb };
            let bert = Bert::new(vb, &cfg, true, None).map_err(|e| bad(shape_msg(e)))?;
            // VarBuilder over a VarMap silently creates a variable for a missing name; a
            // checkpoint that lacks a tensor must fail instead of training from zeros.
            if varmap.all_vars().len() != before {
                return Err(bad("a tensor the config requires is missing".into()));
            }
            (bert, Some(varmap))
        } else {
            // Mapping the file instead of reading it saves a 90 MB copy and its page faults:
            // a third of a one-shot query's time.
            // SAFETY: the map only lives while the tensors are copied out of it (the var
            // builder is dropped at the end of this block); a file truncated by another process
            // during those milliseconds could fault, which is the same exposure every mmap-based
            // model loader accepts.
            let vb =
                unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
                    .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
            let vb = if prefixed { vb.pp(prefix) } else { vb };
            (
                Bert::new(vb, &cfg, false, (!opts.candle_only).then_some(precision))
                    .map_err(|e| bad(shape_msg(e)))?,
                None,
            )
        };
        Ok(Self {
            bert,
            tokenizer,
            profile,
            device,
            device_label,
            varmap,
            dir: dir.to_path_buf(),
        })
    }

    /// Loads a resolved model: its folder, plus the prompts its preset is known to need when
    /// the folder does not carry them.
    pub fn load_model(
        files: &crate::model::ModelFiles,
        opts: &LoadOptions,
    ) -> Result<Self, EncoderError> {
        let mut enc = Self::load(&files.dir, opts)?;
        if let Some(p) = crate::model::preset(&files.id) {
            enc.profile = enc
                .profile
                .clone()
                .with_fallback_prompts(p.query_prompt, p.document_prompt);
        }
        Ok(enc)
    }

    /// How this model pools and what it puts in front of queries and documents.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// `texts` with the prompt of `role` in front (borrowed when the model has none).
    pub fn prompted<'a>(&self, texts: &'a [&'a str], role: Role) -> Vec<std::borrow::Cow<'a, str>> {
        let prompt = self.profile.prompt(role);
        texts
            .iter()
            .map(|t| {
                if prompt.is_empty() {
                    std::borrow::Cow::Borrowed(*t)
                } else {
                    std::borrow::Cow::Owned(format!("{prompt}{t}"))
                }
            })
            .collect()
    }

    /// Unit-length vectors of `texts` as this model embeds queries or documents: its prompt in
    /// front, its pooling.
    pub fn embed_as(
        &self,
        texts: &[&str],
        role: Role,
        limits: BatchLimits,
    ) -> Result<Embeddings, EncoderError> {
        self.embed_as_with(texts, role, limits, |_, _, _| Ok(()))
    }

    /// [`embed_as`](Self::embed_as), handing each batch to `on_batch` like
    /// [`embed_with`](Self::embed_with).
    pub fn embed_as_with<E: From<EncoderError>>(
        &self,
        texts: &[&str],
        role: Role,
        limits: BatchLimits,
        on_batch: impl FnMut(&[usize], &Tensor, &Tensor) -> Result<(), E>,
    ) -> Result<Embeddings, E> {
        let prompted = self.prompted(texts, role);
        let refs: Vec<&str> = prompted.iter().map(|c| c.as_ref()).collect();
        self.embed_with(&refs, self.profile.pooling, true, limits, on_batch)
    }

    pub fn dim(&self) -> usize {
        self.bert.config().hidden_size
    }
    pub fn max_len(&self) -> usize {
        self.tokenizer.max_len()
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// What device is really in use, e.g. `cpu` after `--device auto` on a machine without GPU.
    pub fn device_label(&self) -> &str {
        &self.device_label
    }
    pub fn config(&self) -> &BertConfig {
        self.bert.config()
    }
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    /// The trainable variables, by checkpoint name; `None` for a frozen encoder.
    pub fn varmap(&self) -> Option<&VarMap> {
        self.varmap.as_ref()
    }

    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>, EncoderError> {
        self.tokenizer.encode_batch(texts)
    }

    /// Pads token id lists to the longest one: `(ids, mask)` as `(b, t)` u32 tensors.
    pub fn pad(&self, items: &[&[u32]]) -> Result<(Tensor, Tensor), EncoderError> {
        let t = items.iter().map(|i| i.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(items.len() * t);
        let mut mask = Vec::with_capacity(items.len() * t);
        for item in items {
            ids.extend_from_slice(item);
            mask.extend(std::iter::repeat_n(1u32, item.len()));
            let pad = t - item.len();
            ids.extend(std::iter::repeat_n(self.config().pad_token_id as u32, pad));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let shape = (items.len(), t);
        Ok((
            Tensor::from_vec(ids, shape, &self.device)?,
            Tensor::from_vec(mask, shape, &self.device)?,
        ))
    }

    /// Last-layer token states `(b, t, h)` and the mask `(b, t)` of a batch of token id lists.
    pub fn token_states(
        &self,
        items: &[&[u32]],
        train: bool,
    ) -> Result<(Tensor, Tensor), EncoderError> {
        let (ids, mask) = self.pad(items)?;
        let states = self.bert.forward(&ids, &mask, train)?;
        Ok((states, mask))
    }

    /// States after the embeddings and the first `layers` layers, with the mask.
    pub fn layer_states(
        &self,
        items: &[&[u32]],
        layers: usize,
        train: bool,
    ) -> Result<(Tensor, Tensor), EncoderError> {
        let (ids, mask) = self.pad(items)?;
        let states = self.bert.forward_until(&ids, &mask, layers, train)?;
        Ok((states, mask))
    }

    /// Runs layers `from..` on `(b, t, h)` states (from [`layer_states`](Self::layer_states)).
    pub fn forward_from(
        &self,
        states: &Tensor,
        mask: &Tensor,
        from: usize,
        train: bool,
    ) -> Result<Tensor, EncoderError> {
        Ok(self.bert.forward_from(states, mask, from, train)?)
    }

    pub fn num_layers(&self) -> usize {
        self.bert.num_layers()
    }

    /// Whether inference runs on the fused CPU path (frozen weights on the CPU).
    pub fn fused_cpu(&self) -> bool {
        self.bert.fused_cpu()
    }

    /// The precision the weight products run in.
    pub fn precision(&self) -> Precision {
        self.bert.precision()
    }

    /// How this CPU runs int8 weight products (`avx512-vnni`, `avx-vnni`, `avx2`, `portable`).
    pub fn int8_kernel() -> &'static str {
        quant::Kernel::detect().name()
    }

    /// Pooled (optionally unit-length) vectors of `texts`, in order.
    pub fn embed(
        &self,
        texts: &[&str],
        pooling: Pooling,
        normalize: bool,
        limits: BatchLimits,
    ) -> Result<Embeddings, EncoderError> {
        self.embed_with(texts, pooling, normalize, limits, |_, _, _| Ok(()))
    }

    /// [`embed`](Self::embed), also handing each batch's text indices, last-layer states and
    /// mask to `on_batch`, so that a consumer of token states (the hashing head) shares the one
    /// encoder pass.
    pub fn embed_with<E: From<EncoderError>>(
        &self,
        texts: &[&str],
        pooling: Pooling,
        normalize: bool,
        limits: BatchLimits,
        mut on_batch: impl FnMut(&[usize], &Tensor, &Tensor) -> Result<(), E>,
    ) -> Result<Embeddings, E> {
        let tokens = self.tokenize(texts)?;
        let dim = self.dim();
        let mut data = vec![0f32; texts.len() * dim];
        for batch in length_buckets(&tokens, limits) {
            let items: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].ids.as_slice()).collect();
            let (states, mask) = self.token_states(&items, false)?;
            let mut v = pool(&states, &mask, pooling).map_err(EncoderError::from)?;
            if normalize {
                v = l2_normalize(&v).map_err(EncoderError::from)?;
            }
            let rows: Vec<f32> = v
                .to_dtype(DType::F32)
                .and_then(|v| v.flatten_all())
                .and_then(|v| v.to_vec1())
                .map_err(EncoderError::from)?;
            for (k, &i) in batch.iter().enumerate() {
                data[i * dim..(i + 1) * dim].copy_from_slice(&rows[k * dim..(k + 1) * dim]);
            }
            on_batch(&batch, &states, &mask)?;
        }
        let truncated = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.truncated)
            .map(|(i, _)| i)
            .collect();
        Ok(Embeddings {
            dim,
            data,
            truncated,
        })
    }
}

/// Makes the C allocator keep buffers of up to 32 MiB for reuse instead of mapping fresh pages
/// for each one and unmapping them on free. A forward pass allocates a few buffers of
/// batch × length × width floats (6 MiB at 32 × 128 × 384); with glibc's defaults each came as new
/// pages, and their page faults and zeroing were 8 % of a 3-layer model's time. At most 64 MiB
/// of freed memory stays with the process. Binaries call this once at start; elsewhere (macOS,
/// musl) it does nothing.
pub fn keep_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts glibc's allocation thresholds; called before any threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The C allocator's top pad while a [`HoldFreedMemory`] is alive; glibc's default is 128 KiB.
const HELD_TOP_PAD: usize = 1 << 30;
const DEFAULT_TOP_PAD: usize = 128 << 10;
/// Guards alive, counted so that trainings that overlap in one process restore the allocator
/// only when the last one ends.
static HOLDERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// While alive, memory the process frees stays with it (up to 1 GiB at the top of each heap)
/// instead of going back to the system. A training step builds and frees a few hundred MB of
/// tensors (the autograd graph), which glibc returned at every step — and, on a thread other
/// than the main one, unmapped whole arena heaps — so each step faulted the same pages in
/// again: a third of the CPU time of a training was the system's. No heap grows past its own
/// high-water mark. When the last guard ends, the default pad is back and `malloc_trim` returns
/// the main heap's free top and every arena's free chunks; a thread heap's free top (at most
/// 64 MiB) stays until that thread frees again, which [`keep_large_buffers`]' trim threshold
/// already allowed. Setting the pad also fixes glibc's mmap threshold (the binaries fix it
/// anyway), and the default restored is glibc's, not a `MALLOC_TOP_PAD_` from the environment.
/// Elsewhere than glibc it does nothing.
pub struct HoldFreedMemory(());

impl HoldFreedMemory {
    #[must_use = "memory is held only while the guard lives"]
    pub fn new() -> Self {
        let mut n = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if *n == 0 {
            set_top_pad(HELD_TOP_PAD);
        }
        *n += 1;
        HoldFreedMemory(())
    }
}

impl Default for HoldFreedMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HoldFreedMemory {
    fn drop(&mut self) {
        let mut n = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            set_top_pad(DEFAULT_TOP_PAD);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory of every arena to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// glibc keeps `pad` bytes of free memory at the top of each heap (main and per-thread) when
/// it trims, and never unmaps a thread's heap while the heaps before it have less than that
/// free (`heap_trim` in glibc's arena.c).
fn set_top_pad(pad: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes the allocator's lock and only sets a tuning parameter.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, pad.min(i32::MAX as usize) as i32);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = pad;
}

/// Groups text indices into batches of similar length (longest first), so short texts are not
/// padded to the length of long ones.
pub fn length_buckets(tokens: &[Tokens], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].ids.len()));
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_len = 0;
    for i in order {
        let len = tokens[i].ids.len().max(1);
        // Sorted descending: the first item of a batch is its longest.
        let width = if cur.is_empty() { len } else { cur_len };
        if !cur.is_empty()
            && (cur.len() >= limits.max_batch.max(1) || (cur.len() + 1) * width > limits.max_tokens)
        {
            batches.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur_len = len;
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// Tensor names from a safetensors header, read without loading the data: an 8-byte length,
/// then that many bytes of JSON.
fn safetensors_names(path: &Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| "not a valid safetensors file (too short)".to_string())?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 || n.saturating_add(8) > file_len {
        return Err(format!(
            "not a valid safetensors file (header length {n} does not fit a {file_len}-byte file)"
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| format!("not a valid safetensors file ({e})"))?;
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("not a valid safetensors file (header: {e})"))?;
    Ok(v.into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect())
}

fn sentence_bert_max_len(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("sentence_bert_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("max_seq_length")?.as_u64().map(|n| n as usize)
}

fn shape_msg(e: candle_core::Error) -> String {
    format!("does not match config.json ({e})")
}

#[cfg(test)]
mod tests;
