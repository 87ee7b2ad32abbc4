//! The frozen encoder's forward pass on the CPU, on plain `f32` buffers.
//!
//! candle's general tensor path spends about half of a BERT forward outside matrix products:
//! scalar `erf`/`exp`, a kernel launch and a fresh buffer per element-wise op, and copies for the
//! head permutes. This path keeps only the products (candle's own `gemm`) and does everything else
//! in fused passes ([`super::kernels`]):
//! - each text is processed at its real length: padding is never computed (its rows come back as
//!   zeros, which every consumer masks out), so length bucketing is no longer needed for speed;
//! - texts run in parallel, one per task, layer by layer, so the layer's weights stay in the
//!   shared cache while every core works on its own text with a single-threaded GEMM; a lone text
//!   (a query) spreads each GEMM over the threads instead;
//! - Q, K and V come out of one product, the 1/√d attention scale is folded into Q's weights, and
//!   the heads read Q, K and V in place through strides instead of being permuted;
//! - bias + GELU and bias + residual + layer norm are one pass each.
//!
//! It is used for frozen weights only; training keeps candle's differentiable graph.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::Precision;
use super::kernels::{self, Act};
use super::packed::{Packed, dense};
use super::quant::{PackedI8, dense_i8};

/// A weight matrix packed for `x · W + b`, in the precision the model was loaded with.
pub(crate) enum Weights {
    F32(Packed),
    Int8(PackedI8),
}

impl Weights {
    /// Packs PyTorch-layout `(out, k)` parts (see [`Packed::from_rows`]).
    fn new(parts: &[(&[f32], f32)], k: usize, precision: Precision) -> Self {
        match precision {
            Precision::F32 => Self::F32(Packed::from_rows(parts, k)),
            Precision::Int8 => Self::Int8(PackedI8::from_rows(parts, k)),
        }
    }

    /// `y[r] = act(x[r] · W + bias)`; see [`dense`].
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        x: &[f32],
        ldx: usize,
        m: usize,
        bias: &[f32],
        act: Option<Act>,
        y: &mut [f32],
        ldy: usize,
        parallel: bool,
    ) {
        match self {
            Self::F32(w) => dense(x, ldx, m, w, bias, act, y, ldy, parallel),
            Self::Int8(w) => dense_i8(x, ldx, m, w, bias, act, y, ldy, parallel),
        }
    }
}

/// One BERT layer's weights, packed for `x · W + b` with `x` row-major `(tokens, in)`.
pub(crate) struct CpuLayer {
    /// `(h, 3h)`: the columns give Q (pre-scaled by 1/√d), K and V.
    qkv: (Weights, Vec<f32>),
    attn_out: (Weights, Vec<f32>),
    attn_norm: (Vec<f32>, Vec<f32>),
    inter: (Weights, Vec<f32>),
    out: (Weights, Vec<f32>),
    out_norm: (Vec<f32>, Vec<f32>),
}

/// A dense layer's weight `(out, in)` and bias `(out)` as candle holds them (PyTorch layout).
pub(crate) struct DenseRef<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
}

/// The tensors of one layer, in the checkpoint's layout.
pub(crate) struct LayerRef<'a> {
    pub query: DenseRef<'a>,
    pub key: DenseRef<'a>,
    pub value: DenseRef<'a>,
    pub attn_out: DenseRef<'a>,
    pub attn_norm: (&'a Tensor, &'a Tensor),
    pub inter: DenseRef<'a>,
    pub out: DenseRef<'a>,
    pub out_norm: (&'a Tensor, &'a Tensor),
}

fn vec1(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// Runs `f` on a tensor's values as `f32`, borrowing candle's CPU buffer when it already holds
/// them contiguously (the case for a model loaded on the CPU) instead of copying.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&cpu.as_slice::<f32>()?[start..end]));
        }
    }
    Ok(f(&vec1(&t)?))
}

fn packed(d: &DenseRef<'_>, precision: Precision) -> candle_core::Result<(Weights, Vec<f32>)> {
    let (_, inp) = d.weight.dims2()?;
    Ok((
        with_f32(d.weight, |w| Weights::new(&[(w, 1.0)], inp, precision))?,
        vec1(d.bias)?,
    ))
}

impl CpuLayer {
    pub(crate) fn new(
        l: &LayerRef<'_>,
        heads: usize,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let (h, _) = l.query.weight.dims2()?;
        let scale = 1.0 / ((h / heads.max(1)) as f32).sqrt();
        let qkv = with_f32(l.query.weight, |q| {
            with_f32(l.key.weight, |k| {
                with_f32(l.value.weight, |v| {
                    Weights::new(&[(q, scale), (k, 1.0), (v, 1.0)], h, precision)
                })
            })
        })???;
        let mut qkv_b: Vec<f32> = vec1(l.query.bias)?.into_iter().map(|b| b * scale).collect();
        qkv_b.extend(vec1(l.key.bias)?);
        qkv_b.extend(vec1(l.value.bias)?);
        Ok(Self {
            qkv: (qkv, qkv_b),
            attn_out: packed(&l.attn_out, precision)?,
            attn_norm: (vec1(l.attn_norm.0)?, vec1(l.attn_norm.1)?),
            inter: packed(&l.inter, precision)?,
            out: packed(&l.out, precision)?,
            out_norm: (vec1(l.out_norm.0)?, vec1(l.out_norm.1)?),
        })
    }
}

/// What the embedding layer adds to a word vector: position `j`'s vector plus token type 0's,
/// summed once at load, then the layer norm's parameters.
pub(crate) struct CpuEmbeddings {
    pos_type: Vec<f32>,
    norm: (Vec<f32>, Vec<f32>),
}

impl CpuEmbeddings {
    /// From the position table `(positions, h)`, the token-type table `(types, h)` and the
    /// embedding layer norm.
    pub(crate) fn new(
        position: &Tensor,
        token_type: &Tensor,
        norm: (&Tensor, &Tensor),
    ) -> candle_core::Result<Self> {
        let type0 = token_type.get(0)?;
        let pos_type = vec1(&position.broadcast_add(&type0)?)?;
        Ok(Self {
            pos_type,
            norm: (vec1(norm.0)?, vec1(norm.1)?),
        })
    }
}

/// The encoder layers of a frozen model, ready for the CPU path.
pub(crate) struct CpuLayers {
    pub(crate) layers: Vec<CpuLayer>,
    embeddings: CpuEmbeddings,
    hidden: usize,
    heads: usize,
    inter: usize,
    eps: f32,
    act: Act,
}

/// Per-thread work buffers, grown to the longest text seen and then reused: allocating them per
/// layer cost page faults that showed up in profiles.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// A strided read-only matrix operand: element `(r, c)` is `data[offset + r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Operand<'a> {
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rs: cols,
            cs: 1,
        }
    }
}

/// One past the last element a `rows × cols` view with these strides touches.
fn extent(offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        offset
    } else {
        offset + (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst[dst_off..]` (row stride `dst_rs`) `= lhs (m×k) · rhs (k×n)`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_off: usize,
    dst_rs: usize,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    par: Parallelism,
) {
    // The bounds checks make the unchecked GEMM below safe; they are cheap next to the product.
    assert!(extent(dst_off, m, n, dst_rs, 1) <= dst.len());
    assert!(extent(lhs.offset, m, k, lhs.rs, lhs.cs) <= lhs.data.len());
    assert!(extent(rhs.offset, k, n, rhs.rs, rhs.cs) <= rhs.data.len());
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every element the GEMM reads or writes lies inside the slices (checked above);
    // `dst` is a unique borrow, so it cannot overlap the operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_off),
            1,
            dst_rs as isize,
            false,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// The positions of each of the `b` rows of a `(b, t)` mask that hold real tokens (non-zero).
fn real_positions(mask: &Tensor, b: usize, t: usize) -> candle_core::Result<Vec<Vec<usize>>> {
    let keep: Vec<f32> = vec1(mask)?;
    if keep.len() != b * t {
        candle_core::bail!("mask of {} values for {b}×{t} tokens", keep.len());
    }
    Ok(keep
        .chunks_exact(t.max(1))
        .map(|row| (0..row.len()).filter(|&j| row[j] != 0.0).collect())
        .collect())
}

impl CpuLayers {
    pub(crate) fn new(
        layers: Vec<CpuLayer>,
        embeddings: CpuEmbeddings,
        hidden: usize,
        heads: usize,
        inter: usize,
        eps: f64,
        act: Act,
    ) -> Self {
        Self {
            layers,
            embeddings,
            hidden,
            heads,
            inter,
            eps: eps as f32,
            act,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.layers.len()
    }

    pub(crate) fn precision(&self) -> Precision {
        match self.layers.first().map(|l| &l.qkv.0) {
            Some(Weights::Int8(_)) => Precision::Int8,
            _ => Precision::F32,
        }
    }

    /// Runs `range` of the layers on `(b, t, h)` states with a `(b, t)` mask (non-zero = real
    /// token, anywhere in the row). Rows of masked positions come back as zeros.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        range: Range<usize>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        if h != self.hidden {
            candle_core::bail!("states of width {h} for a model of width {}", self.hidden);
        }
        if range.start.min(self.len()) >= range.end.min(self.len()) {
            return Ok(x.clone());
        }
        let flat: Vec<f32> = vec1(x)?;
        let real = real_positions(mask, b, t)?;
        // Each text as the rows of its real tokens only: attending among them is exactly
        // attention with the padded keys masked out.
        let seqs: Vec<(Vec<usize>, Vec<f32>)> = real
            .into_iter()
            .enumerate()
            .map(|(i, pos)| {
                let mut rows = Vec::with_capacity(pos.len() * h);
                for &j in &pos {
                    let at = (i * t + j) * h;
                    rows.extend_from_slice(&flat[at..at + h]);
                }
                (pos, rows)
            })
            .collect();
        drop(flat);
        self.run(seqs, b, t, range)
    }

    /// The embeddings of `(b, t)` token ids (word + position + token type 0, layer norm), then
    /// `range` of the layers, for the tokens the mask keeps: [`forward`](Self::forward) without
    /// materialising the padded embedding tensor.
    pub(crate) fn forward_ids(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        word: &Tensor,
        range: Range<usize>,
    ) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.hidden;
        let ids: Vec<u32> = ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
        let real = real_positions(mask, b, t)?;
        let emb = &self.embeddings;
        if t * h > emb.pos_type.len() {
            candle_core::bail!("sequence of {t} tokens exceeds the model's positions");
        }
        let seqs = with_f32(word, |word| {
            let vocab = word.len() / h;
            real.into_par_iter()
                .enumerate()
                .map(|(i, pos)| {
                    let mut rows = vec![0f32; pos.len() * h];
                    for (row, &j) in rows.chunks_exact_mut(h).zip(&pos) {
                        let id = ids[i * t + j] as usize;
                        if id >= vocab {
                            return Err(candle_core::Error::Msg(format!(
                                "token id {id} outside the vocabulary of {vocab}"
                            )));
                        }
                        let w = &word[id * h..(id + 1) * h];
                        let p = &emb.pos_type[j * h..(j + 1) * h];
                        for ((r, &a), &c) in row.iter_mut().zip(w).zip(p) {
                            *r = a + c;
                        }
                    }
                    kernels::layer_norm(&mut rows, &emb.norm.0, &emb.norm.1, self.eps);
                    Ok((pos, rows))
                })
                .collect::<candle_core::Result<Vec<_>>>()
        })??;
        self.run(seqs, b, t, range)
    }

    /// The layers of `range` over each text's real-token rows, scattered back to `(b, t, h)`.
    fn run(
        &self,
        mut seqs: Vec<(Vec<usize>, Vec<f32>)>,
        b: usize,
        t: usize,
        range: Range<usize>,
    ) -> candle_core::Result<Tensor> {
        let h = self.hidden;
        let range = range.start.min(self.len())..range.end.min(self.len());
        for layer in &self.layers[range] {
            if seqs.len() == 1 {
                for (_, rows) in &mut seqs {
                    self.layer(layer, rows, Parallelism::Rayon(0));
                }
            } else {
                seqs.par_iter_mut()
                    .for_each(|(_, rows)| self.layer(layer, rows, Parallelism::None));
            }
        }

        let mut out = vec![0f32; b * t * h];
        for (i, (pos, rows)) in seqs.iter().enumerate() {
            for (k, &j) in pos.iter().enumerate() {
                let at = (i * t + j) * h;
                out[at..at + h].copy_from_slice(&rows[k * h..(k + 1) * h]);
            }
        }
        Tensor::from_vec(out, (b, t, h), &Device::Cpu)
    }

    /// One layer on one text's `(len, h)` rows, in place.
    fn layer(&self, w: &CpuLayer, x: &mut [f32], par: Parallelism) {
        let h = self.hidden;
        let len = x.len() / h;
        if len == 0 {
            return;
        }
        let heads = self.heads;
        let hd = h / heads;
        let alone = !matches!(par, Parallelism::None);
        SCRATCH.with_borrow_mut(|s| {
            let Scratch {
                qkv,
                ctx,
                tmp,
                inter,
                scores,
            } = s;
            let qkv = grown(qkv, len * 3 * h);
            let ctx = grown(ctx, len * h);
            let tmp = grown(tmp, len * h);
            let inter = grown(inter, len * self.inter);
            let scores = grown(scores, len * len);

            w.qkv.0.apply(x, h, len, &w.qkv.1, None, qkv, 3 * h, alone);
            for head in 0..heads {
                let q = Operand {
                    data: qkv,
                    offset: head * hd,
                    rs: 3 * h,
                    cs: 1,
                };
                // Kᵀ read in place: element (d, j) is K[j][d].
                let kt = Operand {
                    data: qkv,
                    offset: h + head * hd,
                    rs: 1,
                    cs: 3 * h,
                };
                let v = Operand {
                    data: qkv,
                    offset: 2 * h + head * hd,
                    rs: 3 * h,
                    cs: 1,
                };
                matmul(len, len, hd, scores, 0, len, q, kt, par);
                kernels::softmax_rows(scores, len);
                matmul(
                    len,
                    hd,
                    len,
                    ctx,
                    head * hd,
                    h,
                    Operand::rows(scores, len),
                    v,
                    par,
                );
            }
            w.attn_out
                .0
                .apply(ctx, h, len, &w.attn_out.1, None, tmp, h, alone);
            kernels::residual_layer_norm(x, tmp, &w.attn_norm.0, &w.attn_norm.1, self.eps);
            w.inter.0.apply(
                x,
                h,
                len,
                &w.inter.1,
                Some(self.act),
                inter,
                self.inter,
                alone,
            );
            w.out
                .0
                .apply(inter, self.inter, len, &w.out.1, None, tmp, h, alone);
            kernels::residual_layer_norm(x, tmp, &w.out_norm.0, &w.out_norm.1, self.eps);
        });
    }
}
