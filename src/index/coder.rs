//! Where binary codes come from. The code source is pluggable: a training-free projection of the
//! embeddings fitted on the corpus (so search works from the first index), replaced later by a
//! learned hashing head. Whatever the source, it is stored with the index and stamped with a
//! generation, so codes of two sources are never compared with each other.

use super::binarize::{LinearHasher, Method};

/// Below this many passages per code bit, PCA/ITQ would be fitted on too little data to be
/// better than random hyperplanes, so LSH is used until the corpus grows.
pub const MIN_PASSAGES_PER_BIT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CoderError {
    #[error("cannot fit codes: {0}")]
    Fit(String),
    #[error("the stored code source is damaged: {0}")]
    Decode(String),
}

#[derive(Debug, Clone)]
pub enum Coder {
    /// LSH, median-threshold PCA or ITQ over the pooled embedding.
    Linear(LinearHasher),
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
        }
    }

    pub fn bits(&self) -> usize {
        match self {
            Coder::Linear(h) => h.bits,
        }
    }

    pub fn words(&self) -> usize {
        self.bits().div_ceil(64)
    }

    /// Codes of `n` row-major vectors.
    pub fn encode(&self, vectors: &[f32], n: usize) -> Result<Vec<u64>, CoderError> {
        match self {
            Coder::Linear(h) => h
                .encode_batch(vectors, n)
                .map_err(|e| CoderError::Fit(e.to_string())),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Coder::Linear(h) => {
                let mut out = b"linear\n".to_vec();
                out.extend_from_slice(&h.to_bytes());
                out
            }
        }
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, CoderError> {
        if let Some(rest) = b.strip_prefix(b"linear\n") {
            return LinearHasher::from_bytes(rest)
                .map(Coder::Linear)
                .map_err(|e| CoderError::Decode(e.to_string()));
        }
        Err(CoderError::Decode("unknown code source".into()))
    }
}
