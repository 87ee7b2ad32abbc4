//! Text → token ids, truncated to the model's limit.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::EncoderError;

/// Token ids of one text, `[CLS] … [SEP]` included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// The text was longer than the model's limit and its tail was cut.
    pub truncated: bool,
}

/// Two tokenizer instances: one truncating with special tokens (for the model) and one plain
/// (for counting tokens while chunking, where truncation would hide the real length).
pub struct TextTokenizer {
    model: Tokenizer,
    plain: Tokenizer,
    max_len: usize,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, EncoderError> {
        let bad = |msg: String| EncoderError::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        if !path.is_file() {
            return Err(bad("file not found".into()));
        }
        let mut plain = Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| bad(e.to_string()))?;
        let mut model = plain.clone();
        // Padding is done per length bucket by the encoder, never by the tokenizer.
        model
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| bad(e.to_string()))?;
        let tok = Self {
            model,
            plain,
            max_len,
        };
        // A tokenizer.json that adds no special tokens, or maps everything to nothing, would
        // silently produce meaningless vectors: check once at load.
        let probe = tok.encode("hello")?;
        if probe.ids.len() < 2 {
            return Err(bad(
                "its post-processor adds no [CLS]/[SEP] tokens; is this a BERT tokenizer?".into(),
            ));
        }
        Ok(tok)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn encode(&self, text: &str) -> Result<Tokens, EncoderError> {
        let enc = self
            .model
            .encode_fast(text, true)
            .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
        Ok(Tokens {
            truncated: !enc.get_overflowing().is_empty(),
            ids: enc.get_ids().to_vec(),
        })
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Tokens>, EncoderError> {
        let encs = self
            .model
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
        Ok(encs
            .into_iter()
            .map(|enc| Tokens {
                truncated: !enc.get_overflowing().is_empty(),
                ids: enc.get_ids().to_vec(),
            })
            .collect())
    }

    /// Tokens in `text` without special tokens and without truncation.
    pub fn count(&self, text: &str) -> usize {
        // A text the tokenizer rejects is counted by bytes, an upper bound, so that the chunker
        // errs on the side of smaller passages rather than failing the whole document.
        self.plain
            .encode_fast(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or(text.len())
    }
}
