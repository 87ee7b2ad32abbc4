//! `config.json` of a HF BERT checkpoint, validated before any weight is touched so that a wrong
//! or foreign config fails with a message about the config rather than a tensor-shape error.

use std::path::Path;

use serde::Deserialize;

use super::EncoderError;

/// The activation used inside the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The exact erf GELU that BERT and MiniLM were trained with; the tanh approximation would
    /// break parity with the reference at the 1e-4 level.
    Gelu,
    /// tanh approximation ("gelu_new"/"gelu_pytorch_tanh"), used by some BERT descendants.
    GeluTanh,
    Relu,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self, EncoderError> {
        let bad = |msg: String| EncoderError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let cfg: BertConfig =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a BERT config: {e}")))?;
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        // BERT, and the RoBERTa family (XLM-R too), which is BERT with position ids that start
        // after the padding id; DistilBERT and others use another weight layout and would load
        // garbage rather than fail.
        if let Some(t) = &self.model_type
            && !matches!(t.as_str(), "bert" | "roberta" | "xlm-roberta")
        {
            return Err(format!(
                "model_type {t:?} is not supported (bert, roberta or xlm-roberta)"
            ));
        }
        if self.max_position_embeddings <= self.position_offset() + 1 {
            return Err("max_position_embeddings leaves no position after the offset".into());
        }
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return Err(
                "hidden_size, num_attention_heads and num_hidden_layers must be > 0".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.max_position_embeddings < 2 {
            return Err("max_position_embeddings must be at least 2".into());
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        if let Some(p) = &self.position_embedding_type
            && p != "absolute"
        {
            return Err(format!(
                "position_embedding_type {p:?} is not supported (only \"absolute\")"
            ));
        }
        self.activation()?;
        Ok(())
    }

    pub fn activation(&self) -> Result<Activation, String> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!("hidden_act {other:?} is not supported")),
        }
    }

    /// Where real positions start in the position table: RoBERTa-family models count positions
    /// from the padding id plus one (2 in XLM-R), BERT from 0.
    pub fn position_offset(&self) -> usize {
        match self.model_type.as_deref() {
            Some("roberta" | "xlm-roberta") => self.pad_token_id + 1,
            _ => 0,
        }
    }

    /// How many tokens a text may have: the position table without its offset.
    pub fn positions(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }

    /// The name prefix of the encoder's tensors in a checkpoint saved with a task head
    /// (`bert.` for `BertForMaskedLM`, `roberta.` for the RoBERTa family).
    pub fn weight_prefix(&self) -> &'static str {
        match self.model_type.as_deref() {
            Some("roberta" | "xlm-roberta") => "roberta",
            _ => "bert",
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// A tiny configuration for tests and examples, where a real model's quality does not matter.
    pub fn tiny(vocab_size: usize) -> Self {
        BertConfig {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 128,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: Some("absolute".into()),
            model_type: Some("bert".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_indivisible_heads() {
        let mut c = BertConfig::tiny(100);
        c.num_attention_heads = 5;
        assert!(c.validate().unwrap_err().contains("divisible"));
    }

    #[test]
    fn rejects_unknown_activation_and_model_type() {
        let mut c = BertConfig::tiny(100);
        c.hidden_act = "swish".into();
        assert!(c.validate().unwrap_err().contains("hidden_act"));
        let mut c = BertConfig::tiny(100);
        c.model_type = Some("gpt2".into());
        assert!(c.validate().unwrap_err().contains("gpt2"));
    }

    #[test]
    fn reads_a_file_and_names_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "{\"hidden_size\": 3}").unwrap();
        let err = BertConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(&p, serde_json::to_string(&serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 16
        })).unwrap()).unwrap();
        let c = BertConfig::from_file(&p).unwrap();
        assert_eq!(c.head_dim(), 4);
    }
}
