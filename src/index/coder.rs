//! Where binary codes come from. The code source is pluggable: a training-free projection of the
//! embeddings fitted on the corpus (so search works from the first index), replaced later by a
//! learned hashing head. Whatever the source, it is stored with the index and stamped with a
//! generation, so codes of two sources are never compared with each other.
//!
//! A linear source codes the pooled vector; the learned DHIM head codes the encoder's token
//! states, so [`embed_and_code`] computes vectors and codes in one encoder pass for both.

use std::sync::Arc;

use super::dhim::{DhimConfig, DhimHead};
use super::ranked::{RankConfig, RankHead};
use crate::encoder::{BatchLimits, Embeddings, Encoder, EncoderError, Role};

use super::binarize::{LinearHasher, Method};

/// Below this many passages per code bit, PCA/ITQ would be fitted on too little data to be
/// better than random hyperplanes, so LSH is used until the corpus grows.
pub const MIN_PASSAGES_PER_BIT: usize = 4;

/// Format of a stored hashing head (its JSON header); the linear hashers carry their own.
const DHIM_BLOB_VERSION: u32 = 1;
/// Format of a stored ranking head (its JSON header).
const RANKED_BLOB_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CoderError {
    #[error("cannot fit codes: {0}")]
    Fit(String),
    #[error("the stored code source is damaged: {0}")]
    Decode(String),
    #[error("the stored code source was made by another version of dochash ({0})")]
    OtherVersion(String),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error("hashing head: {0}")]
    Head(String),
}

#[derive(Debug, Clone)]
pub enum Coder {
    /// LSH, median-threshold PCA or ITQ over the pooled embedding.
    Linear(LinearHasher),
    /// A DHIM head trained on this corpus, over the encoder's token states.
    Dhim(Arc<DhimHead>),
    /// A ranking head trained on this corpus, over the pooled vectors.
    Ranked(Arc<RankHead>),
}

impl Coder {
    /// Fits the best training-free source the corpus size allows: ITQ with enough data,
    /// random hyperplanes otherwise.
    pub fn fit(vectors: &[f32], n: usize, dim: usize, bits: usize) -> Result<Self, CoderError> {
        let method = if n >= bits * MIN_PASSAGES_PER_BIT && bits <= dim {
            Method::Itq
        } else {
            Method::Lsh
        };
        LinearHasher::fit(method, vectors, n, dim, bits, 0x5eed)
            .map(Coder::Linear)
            .map_err(|e| CoderError::Fit(e.to_string()))
    }

    pub fn name(&self) -> String {
        match self {
            Coder::Linear(h) => h.method.to_string(),
            Coder::Dhim(_) => "dhim".into(),
            Coder::Ranked(_) => "ranked".into(),
        }
    }

    /// Whether the source was learned (and so must not be replaced by a refit).
    pub fn is_learned(&self) -> bool {
        matches!(self, Coder::Dhim(_) | Coder::Ranked(_))
    }

    /// Whether it codes pooled vectors: then stored vectors can be re-coded without the encoder,
    /// and a query's margins weigh its bits in the weighted filter.
    pub fn codes_vectors(&self) -> bool {
        !matches!(self, Coder::Dhim(_))
    }

    pub fn bits(&self) -> usize {
        match self {
            Coder::Linear(h) => h.bits,
            Coder::Dhim(h) => h.cfg.bits,
            Coder::Ranked(h) => h.cfg.bits,
        }
    }

    pub fn words(&self) -> usize {
        self.bits().div_ceil(64)
    }

    /// Codes of `n` row-major pooled vectors; `None` for a source that needs token states.
    pub fn encode_vectors(
        &self,
        vectors: &[f32],
        n: usize,
    ) -> Result<Option<Vec<u64>>, CoderError> {
        match self {
            Coder::Linear(h) => h
                .encode_batch(vectors, n)
                .map(Some)
                .map_err(|e| CoderError::Fit(e.to_string())),
            Coder::Dhim(_) => Ok(None),
            Coder::Ranked(h) => h
                .codes(vectors, n)
                .map(Some)
                .map_err(|e| CoderError::Head(e.to_string())),
        }
    }

    /// Per-bit margins of one pooled vector (see [`LinearHasher::margins`]) for the
    /// asymmetric filter; `None` for a source that codes token states.
    pub fn margins(&self, vector: &[f32]) -> Result<Option<Vec<f32>>, CoderError> {
        match self {
            Coder::Linear(h) => h
                .margins(vector)
                .map(Some)
                .map_err(|e| CoderError::Fit(e.to_string())),
            Coder::Dhim(_) => Ok(None),
            Coder::Ranked(h) => h
                .margins(vector)
                .map(Some)
                .map_err(|e| CoderError::Head(e.to_string())),
        }
    }

    /// Codes of `n` row-major pooled vectors from a source that codes vectors.
    pub fn encode(&self, vectors: &[f32], n: usize) -> Result<Vec<u64>, CoderError> {
        self.encode_vectors(vectors, n)?
            .ok_or_else(|| CoderError::Head("the DHIM head codes token states, not vectors".into()))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, CoderError> {
        match self {
            Coder::Linear(h) => {
                let mut out = b"linear\n".to_vec();
                out.extend_from_slice(&h.to_bytes());
                Ok(out)
            }
            Coder::Dhim(h) => join_head(
                b"dhim\n",
                serde_json::json!({
                    "version": DHIM_BLOB_VERSION, "config": h.cfg, "hidden": h.hidden
                }),
                h.to_safetensors(),
            ),
            Coder::Ranked(h) => join_head(
                b"ranked\n",
                serde_json::json!({
                    "version": RANKED_BLOB_VERSION, "config": h.cfg, "dim": h.dim
                }),
                h.to_safetensors(),
            ),
        }
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, CoderError> {
        if let Some(rest) = b.strip_prefix(b"linear\n") {
            return LinearHasher::from_bytes(rest)
                .map(Coder::Linear)
                .map_err(|e| match e {
                    super::binarize::BinarizeError::UnsupportedVersion(_) => {
                        CoderError::OtherVersion(e.to_string())
                    }
                    e => CoderError::Decode(e.to_string()),
                });
        }
        let bad = |m: String| CoderError::Decode(m);
        let device = candle_core::Device::Cpu;
        if let Some(rest) = b.strip_prefix(b"dhim\n") {
            #[derive(serde::Deserialize)]
            struct Head {
                #[serde(default = "first_version")]
                version: u32,
                config: DhimConfig,
                hidden: usize,
            }
            let (h, weights): (Head, _) = split_head(rest)?;
            same_version(h.version, DHIM_BLOB_VERSION, "hashing head")?;
            return DhimHead::from_safetensors(h.config, h.hidden, weights, &device)
                .map(|h| Coder::Dhim(Arc::new(h)))
                .map_err(|e| bad(e.to_string()));
        }
        if let Some(rest) = b.strip_prefix(b"ranked\n") {
            #[derive(serde::Deserialize)]
            struct Head {
                version: u32,
                config: RankConfig,
                dim: usize,
            }
            let (h, weights): (Head, _) = split_head(rest)?;
            same_version(h.version, RANKED_BLOB_VERSION, "ranking head")?;
            return RankHead::from_safetensors(h.config, h.dim, weights, &device)
                .map(|h| Coder::Ranked(Arc::new(h)))
                .map_err(|e| bad(e.to_string()));
        }
        Err(CoderError::Decode("unknown code source".into()))
    }
}

fn first_version() -> u32 {
    1
}

/// A learned head's stored form: its tag, then what [`split_head`] reads.
fn join_head(
    tag: &[u8],
    header: serde_json::Value,
    weights: Result<Vec<u8>, super::dhim::HeadError>,
) -> Result<Vec<u8>, CoderError> {
    let header = header.to_string();
    let mut out = tag.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&weights.map_err(|e| CoderError::Head(e.to_string()))?);
    Ok(out)
}

fn same_version(found: u32, want: u32, what: &str) -> Result<(), CoderError> {
    if found == want {
        Ok(())
    } else {
        Err(CoderError::OtherVersion(format!("{what} format {found}")))
    }
}

/// A learned head's stored form after its tag: a little-endian `u32` length, that many bytes
/// of JSON header, then the safetensors weights.
fn split_head<T: serde::de::DeserializeOwned>(rest: &[u8]) -> Result<(T, &[u8]), CoderError> {
    let bad = |m: String| CoderError::Decode(m);
    let len = rest
        .get(..4)
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .ok_or_else(|| bad("truncated".into()))?;
    let head = rest
        .get(4..4usize.saturating_add(len))
        .ok_or_else(|| bad("truncated".into()))?;
    let h = serde_json::from_slice(head).map_err(|e| bad(e.to_string()))?;
    Ok((h, &rest[4 + len..]))
}

/// Unit-length vectors of `texts` (queries or documents, as the model embeds them) and, when
/// `coder` is given, their codes (`coder.words()` words per text), from one encoder pass.
pub fn embed_and_code(
    encoder: &Encoder,
    coder: Option<&Coder>,
    texts: &[&str],
    role: Role,
    limits: BatchLimits,
) -> Result<(Embeddings, Option<Vec<u64>>), CoderError> {
    match coder {
        Some(Coder::Dhim(head)) => {
            let words = head.cfg.bits.div_ceil(64);
            let mut codes = vec![0u64; texts.len() * words];
            let emb = encoder.embed_as_with(texts, role, limits, |batch, states, mask| {
                let c = head
                    .codes_from_encoder(states, mask)
                    .map_err(|e| CoderError::Head(e.to_string()))?;
                for (k, &i) in batch.iter().enumerate() {
                    codes[i * words..(i + 1) * words]
                        .copy_from_slice(&c[k * words..(k + 1) * words]);
                }
                Ok::<(), CoderError>(())
            })?;
            Ok((emb, Some(codes)))
        }
        Some(c) => {
            let emb = encoder.embed_as(texts, role, limits)?;
            let codes = if emb.is_empty() {
                Some(Vec::new())
            } else {
                c.encode_vectors(&emb.data, emb.len())?
            };
            Ok((emb, codes))
        }
        None => Ok((encoder.embed_as(texts, role, limits)?, None)),
    }
}
