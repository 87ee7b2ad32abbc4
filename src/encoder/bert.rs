//! A BERT encoder that can be trained.
//!
//! candle-transformers' `BertModel` cannot be fine-tuned: its dropout is a no-op (`// TODO`) and
//! its fused layer norm and softmax are custom ops without a backward pass. This implementation
//! keeps the same weight layout (HF `BertModel`, with or without a `bert.` prefix) and has two
//! kinds of kernels:
//! - *differentiable*: layer norm and softmax composed from primitive ops, real dropout in train
//!   mode; used whenever the weights are trainable variables;
//! - *fast*: for frozen weights (indexing, queries): on the CPU the hand-fused path of
//!   [`super::cpu`], elsewhere candle's fused layer norm and softmax.
//!
//! All produce the same numbers within float rounding.

use candle_core::{D, DType, Device, Module, Tensor, Var};
use candle_nn::{Embedding, VarBuilder, VarMap};

use super::Precision;
use super::config::{Activation, BertConfig};
use super::cpu::{CpuEmbeddings, CpuLayer, CpuLayers, DenseRef, LayerRef};
use super::kernels::Act;

/// HF uses the dtype minimum; -10 000 already underflows `exp` to exactly 0 in f32 and is safe in
/// f16/bf16, so padded positions get exactly zero attention weight.
const MASK_BIAS: f64 = -10_000.0;

#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
        })
    }

    /// `x` is 2-D `(rows, in)`: one GEMM for the whole batch instead of a batched GEMM per item.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }

    fn concat(parts: &[&Dense]) -> candle_core::Result<Dense> {
        let ws: Vec<&Tensor> = parts.iter().map(|d| &d.weight).collect();
        let bs: Vec<&Tensor> = parts.iter().map(|d| &d.bias).collect();
        Ok(Dense {
            weight: Tensor::cat(&ws, 0)?,
            bias: Tensor::cat(&bs, 0)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        // Original TF-converted BERT checkpoints name the affine parameters gamma/beta.
        let (w, b) = if vb.contains_tensor("weight") {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(Self {
            weight: vb.get(dim, w)?,
            bias: vb.get(dim, b)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, differentiable: bool) -> candle_core::Result<Tensor> {
        if differentiable {
            let dim = x.dim(D::Minus1)? as f64;
            let mean = (x.sum_keepdim(D::Minus1)? / dim)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
            let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            normed
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

fn softmax_last(x: &Tensor, differentiable: bool) -> candle_core::Result<Tensor> {
    if differentiable {
        // The max is only a numerical shift: detaching it keeps the gradient exact and skips
        // back-propagating through the arg-max.
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

fn dropout(x: &Tensor, p: f64, train: bool) -> candle_core::Result<Tensor> {
    if train && p > 0.0 {
        candle_nn::ops::dropout(x, p as f32)
    } else {
        Ok(x.clone())
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    /// Q, K and V weights stacked into one matrix for frozen weights. Trainable weights are
    /// stacked on every forward instead, because an optimiser step updates the variables in place
    /// and a cached stack would go stale.
    qkv: Option<Dense>,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
}

impl Layer {
    fn load(vb: &VarBuilder, cfg: &BertConfig, fuse: bool) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        let query = Dense::load(&att.pp("self").pp("query"), h, h)?;
        let key = Dense::load(&att.pp("self").pp("key"), h, h)?;
        let value = Dense::load(&att.pp("self").pp("value"), h, h)?;
        let qkv = if fuse {
            Some(Dense::concat(&[&query, &key, &value])?)
        } else {
            None
        };
        Ok(Self {
            query,
            key,
            value,
            qkv,
            attn_out: Dense::load(&att.pp("output").pp("dense"), h, h)?,
            attn_norm: Norm::load(&att.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            inter: Dense::load(&vb.pp("intermediate").pp("dense"), cfg.intermediate_size, h)?,
            out: Dense::load(&vb.pp("output").pp("dense"), h, cfg.intermediate_size)?,
            out_norm: Norm::load(&vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }
}

impl Layer {
    fn cpu(&self, heads: usize, precision: Precision) -> candle_core::Result<CpuLayer> {
        fn d(x: &Dense) -> DenseRef<'_> {
            DenseRef {
                weight: &x.weight,
                bias: &x.bias,
            }
        }
        CpuLayer::new(
            &LayerRef {
                query: d(&self.query),
                key: d(&self.key),
                value: d(&self.value),
                attn_out: d(&self.attn_out),
                attn_norm: (&self.attn_norm.weight, &self.attn_norm.bias),
                inter: d(&self.inter),
                out: d(&self.out),
                out_norm: (&self.out_norm.weight, &self.out_norm.bias),
            },
            heads,
            precision,
        )
    }
}

/// The encoder layers in the form the forward pass runs them.
enum Stack {
    /// candle tensors: trainable weights, and frozen weights on a GPU.
    Candle(Vec<Layer>),
    /// Frozen weights on the CPU. The candle copies are dropped, so the model is held once.
    Cpu(CpuLayers),
}

/// The encoder proper. Weights are either plain tensors (frozen) or [`Var`]s held by a
/// [`VarMap`] (trainable), decided at load time.
pub struct Bert {
    cfg: BertConfig,
    act: Activation,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: Norm,
    stack: Stack,
    differentiable: bool,
    device: Device,
}

impl Bert {
    /// Builds the model from a var builder whose root is the BERT module (the caller strips a
    /// `bert.` prefix). `trainable` selects the differentiable kernels; `fused_cpu` lets frozen
    /// weights on the CPU take the fused path, with its weight products in that precision.
    pub fn new(
        vb: VarBuilder,
        cfg: &BertConfig,
        trainable: bool,
        fused_cpu: Option<Precision>,
    ) -> candle_core::Result<Self> {
        let act = cfg.activation().map_err(candle_core::Error::msg)?;
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let word = Embedding::new(emb.get((cfg.vocab_size, h), "word_embeddings.weight")?, h);
        // A RoBERTa-family table starts with rows for the padding positions: dropping them
        // makes position 0 the first real one, as in BERT.
        let position = Embedding::new(
            emb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?
            .narrow(0, cfg.position_offset(), cfg.positions())?,
            h,
        );
        let token_type = Embedding::new(
            emb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            h,
        );
        let emb_norm = Norm::load(&emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let device = vb.device().clone();
        let cpu_path = match fused_cpu {
            Some(p) if !trainable && device.is_cpu() => Some(p),
            _ => None,
        };
        // The fused CPU path stacks Q/K/V itself; a candle copy would only cost load time.
        let stack_qkv = !trainable && cpu_path.is_none();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), cfg, stack_qkv))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stack = if let Some(precision) = cpu_path {
            let act = match act {
                Activation::Gelu => Act::GeluErf,
                Activation::GeluTanh => Act::GeluTanh,
                Activation::Relu => Act::Relu,
            };
            // Packing is a pass over every weight that a one-shot query waits for: spread the
            // layers over the cores.
            use rayon::prelude::*;
            let cpu = layers
                .par_iter()
                .map(|l| l.cpu(cfg.num_attention_heads, precision))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let embeddings = CpuEmbeddings::new(
                position.embeddings(),
                token_type.embeddings(),
                (&emb_norm.weight, &emb_norm.bias),
            )?;
            Stack::Cpu(CpuLayers::new(
                cpu,
                embeddings,
                h,
                cfg.num_attention_heads,
                cfg.intermediate_size,
                cfg.layer_norm_eps,
                act,
            ))
        } else {
            Stack::Candle(layers)
        };
        Ok(Self {
            cfg: cfg.clone(),
            act,
            word,
            position,
            token_type,
            emb_norm,
            stack,
            differentiable: trainable,
            device,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Token states of the last layer, `(batch, seq, hidden)`.
    ///
    /// `ids` and `mask` are `(batch, seq)` u32 tensors; `mask` is 1 for real tokens and 0 for
    /// padding. With `train` set, dropout is active (two calls give different outputs).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_until(ids, mask, self.num_layers(), train)
    }

    /// States after the embeddings and the first `layers` layers. Fine-tuning only the top
    /// layers computes this once per text with frozen weights and trains from there.
    pub fn forward_until(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        layers: usize,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cfg.positions() {
            candle_core::bail!(
                "sequence of {t} tokens exceeds the model's limit of {}",
                self.cfg.positions()
            );
        }
        if let Stack::Cpu(cpu) = &self.stack {
            if train {
                candle_core::bail!("dropout needs the encoder loaded as trainable");
            }
            let n = layers.min(self.num_layers());
            return cpu.forward_ids(ids, mask, self.word.embeddings(), 0..n);
        }
        let positions = Tensor::arange(0u32, t as u32, &self.device)?;
        let types = Tensor::zeros((b, t), DType::U32, &self.device)?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let x = self.emb_norm.forward(&x, self.differentiable)?;
        let x = dropout(&x, self.cfg.hidden_dropout_prob, train)?;
        self.run_layers(&x, mask, 0..layers.min(self.num_layers()), train)
    }

    /// Runs layers `from..` on `(batch, seq, hidden)` states, e.g. ones cached from
    /// [`forward_until`](Self::forward_until).
    pub fn forward_from(
        &self,
        x: &Tensor,
        mask: &Tensor,
        from: usize,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let n = self.num_layers();
        self.run_layers(x, mask, from.min(n)..n, train)
    }

    pub fn num_layers(&self) -> usize {
        match &self.stack {
            Stack::Candle(l) => l.len(),
            Stack::Cpu(c) => c.len(),
        }
    }

    /// Whether frozen inference runs on the fused CPU path.
    pub fn fused_cpu(&self) -> bool {
        matches!(self.stack, Stack::Cpu(_))
    }

    /// The precision of the weight products (`f32` on every path but the fused CPU one).
    pub fn precision(&self) -> Precision {
        match &self.stack {
            Stack::Cpu(c) => c.precision(),
            Stack::Candle(_) => Precision::F32,
        }
    }

    fn run_layers(
        &self,
        x: &Tensor,
        mask: &Tensor,
        range: std::ops::Range<usize>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let layers = match &self.stack {
            Stack::Cpu(cpu) => {
                if train {
                    candle_core::bail!("dropout needs the encoder loaded as trainable");
                }
                return cpu.forward(x, mask, range);
            }
            Stack::Candle(layers) => layers,
        };
        let (b, t, h) = x.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let hd = self.cfg.head_dim();
        let d = self.differentiable;
        let mut x = x.reshape((b * t, h))?;

        // (b, 1, 1, t): 0 for tokens, MASK_BIAS for padding, broadcast over heads and queries.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * -MASK_BIAS)?.reshape((b, 1, 1, t))?;
        let scale = 1.0 / (hd as f64).sqrt();

        for layer in &layers[range] {
            let qkv = match &layer.qkv {
                Some(f) => f.forward(&x)?,
                None => Dense::concat(&[&layer.query, &layer.key, &layer.value])?.forward(&x)?,
            };
            // (b*t, 3h) → (3, b, heads, t, hd)
            let qkv = qkv
                .reshape((b, t, 3, heads, hd))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let q = (qkv.get(0)? * scale)?;
            let k = qkv.get(1)?;
            let v = qkv.get(2)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let probs = softmax_last(&scores, d)?;
            let probs = dropout(&probs, self.cfg.attention_probs_dropout_prob, train)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, h))?;
            let a = dropout(
                &layer.attn_out.forward(&ctx)?,
                self.cfg.hidden_dropout_prob,
                train,
            )?;
            x = layer.attn_norm.forward(&(a + &x)?, d)?;

            let i = layer.inter.forward(&x)?;
            let i = match self.act {
                Activation::Gelu => i.gelu_erf()?,
                Activation::GeluTanh => i.gelu()?,
                Activation::Relu => i.relu()?,
            };
            let o = dropout(&layer.out.forward(&i)?, self.cfg.hidden_dropout_prob, train)?;
            x = layer.out_norm.forward(&(o + &x)?, d)?;
        }
        x.reshape((b, t, h))
    }
}

/// Whether a checkpoint's tensor names carry the model's prefix (`bert.` as saved by
/// `BertForMaskedLM` and friends, `roberta.` by `XLMRobertaForMaskedLM`), so that both layouts
/// load.
pub fn has_prefix<'a>(mut names: impl Iterator<Item = &'a str>, prefix: &str) -> bool {
    let want = format!("{prefix}.embeddings.");
    names.any(|n| n.starts_with(&want))
}

/// Wraps the encoder's float tensors in [`Var`]s so that an optimiser can update them. Heads the
/// encoder does not use (pooler, MLM head) are left out: they would never get a gradient.
pub fn varmap_from(
    tensors: std::collections::HashMap<String, Tensor>,
    prefix: &str,
) -> candle_core::Result<VarMap> {
    let map = VarMap::new();
    {
        let mut data = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::msg("variable map lock poisoned"))?;
        for (name, t) in tensors {
            let used = name.starts_with(&format!("{prefix}embeddings."))
                || name.starts_with(&format!("{prefix}encoder."));
            if used && t.dtype().is_float() {
                data.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
            }
        }
    }
    Ok(map)
}
