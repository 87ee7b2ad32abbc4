//! How a model turns token states into one vector, and what it expects in front of a text: the
//! sentence-transformers layout of a model folder.
//!
//! - `modules.json` lists the modules; the Pooling module's folder (usually `1_Pooling/`) holds
//!   `config.json` with the pooling mode (`pooling_mode_cls_token`, `…_mean_tokens`,
//!   `…_max_tokens`), and a `Normalize` module means unit-length output;
//! - `config_sentence_transformers.json` may carry `prompts`: text put in front of queries
//!   (bge's "Represent this sentence for searching relevant passages: ") and of documents (e5's
//!   "passage: "), which such models were trained with and lose accuracy without.
//!
//! A folder without these files is a plain BERT checkpoint: mean pooling, no normalisation, no
//! prompts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{EncoderError, Pooling};

/// What a text is, for its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// What someone typed to search.
    Query,
    /// A passage of a note.
    Document,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub pooling: Pooling,
    /// Whether the model's own output is unit length: a `Normalize` module in `modules.json`
    /// (`dochash embed` follows it; search always compares unit vectors).
    pub normalize: bool,
    pub query_prompt: String,
    pub document_prompt: String,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            normalize: false,
            query_prompt: String::new(),
            document_prompt: String::new(),
        }
    }
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PoolingConfig {
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StConfig {
    prompts: std::collections::HashMap<String, String>,
}

/// JSON files of a model folder larger than this are not read (real ones are a few hundred
/// bytes).
const MAX_JSON: u64 = 1 << 20;

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, EncoderError> {
    let bad = |msg: String| EncoderError::Config {
        path: path.to_path_buf(),
        msg,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot read: {e}"))),
        Ok(m) if m.len() > MAX_JSON => return Err(bad("too large to be a model setting".into())),
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| bad(format!("not valid JSON: {e}")))
}

impl Profile {
    /// Reads the sentence-transformers files of the model folder `dir` (see the module
    /// documentation); missing files mean the defaults.
    pub fn read(dir: &Path) -> Result<Self, EncoderError> {
        let mut p = Profile::default();
        let modules: Option<Vec<Module>> = read_json(&dir.join("modules.json"))?;
        let mut pooling_dir = dir.join("1_Pooling");
        if let Some(modules) = &modules {
            p.normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
            if let Some(m) = modules.iter().find(|m| m.kind.ends_with(".Pooling"))
                && !m.path.is_empty()
                && !m.path.contains("..")
            {
                pooling_dir = dir.join(&m.path);
            }
        }
        let cfg_path = pooling_dir.join("config.json");
        if let Some(c) = read_json::<PoolingConfig>(&cfg_path)? {
            let modes = [
                (c.pooling_mode_cls_token, Some(Pooling::Cls), "cls"),
                (c.pooling_mode_mean_tokens, Some(Pooling::Mean), "mean"),
                (c.pooling_mode_max_tokens, Some(Pooling::Max), "max"),
                (c.pooling_mode_mean_sqrt_len_tokens, None, "mean_sqrt_len"),
                (c.pooling_mode_weightedmean_tokens, None, "weightedmean"),
                (c.pooling_mode_lasttoken, None, "lasttoken"),
            ];
            let on: Vec<_> = modes.iter().filter(|m| m.0).collect();
            p.pooling = match on.as_slice() {
                [(_, Some(how), _)] => *how,
                [(_, None, name)] => {
                    return Err(EncoderError::Config {
                        path: cfg_path,
                        msg: format!("pooling mode {name} is not supported (cls, mean or max)"),
                    });
                }
                [] => Pooling::Mean,
                _ => {
                    return Err(EncoderError::Config {
                        path: cfg_path,
                        msg: "several pooling modes at once are not supported".into(),
                    });
                }
            };
        }
        if let Some(st) = read_json::<StConfig>(&dir.join("config_sentence_transformers.json"))? {
            if let Some(q) = st.prompts.get("query") {
                p.query_prompt = q.clone();
            }
            for name in ["document", "passage", "corpus", "doc"] {
                if let Some(d) = st.prompts.get(name) {
                    p.document_prompt = d.clone();
                    break;
                }
            }
        }
        Ok(p)
    }

    /// The prompts a model is known to need, where its folder does not say (see
    /// `model::Preset`).
    pub fn with_fallback_prompts(mut self, query: &str, document: &str) -> Self {
        if self.query_prompt.is_empty() {
            self.query_prompt = query.to_string();
        }
        if self.document_prompt.is_empty() {
            self.document_prompt = document.to_string();
        }
        self
    }

    pub fn prompt(&self, role: Role) -> &str {
        match role {
            Role::Query => &self.query_prompt,
            Role::Document => &self.document_prompt,
        }
    }

    /// What stored vectors depend on (for the index fingerprint): pooling and the document
    /// prompt (the query prompt only shapes queries).
    pub fn describe(&self) -> String {
        if self.document_prompt.is_empty() {
            self.pooling.to_string()
        } else {
            format!(
                "{}; documents prefixed {:?}",
                self.pooling, self.document_prompt
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_transformers_folder_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(Profile::read(d).unwrap(), Profile::default());
        std::fs::write(
            d.join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::create_dir_all(d.join("1_Pooling")).unwrap();
        std::fs::write(
            d.join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": true,
                "pooling_mode_mean_tokens": false}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "query: ", "passage": "passage: "}}"#,
        )
        .unwrap();
        let p = Profile::read(d).unwrap();
        assert_eq!(p.pooling, Pooling::Cls);
        assert!(!p.normalize, "no Normalize module");
        assert_eq!(
            (p.prompt(Role::Query), p.prompt(Role::Document)),
            ("query: ", "passage: ")
        );
        assert!(p.describe().contains("passage: "));

        std::fs::write(
            d.join("1_Pooling/config.json"),
            r#"{"pooling_mode_weightedmean_tokens": true}"#,
        )
        .unwrap();
        let e = Profile::read(d).unwrap_err().to_string();
        assert!(e.contains("weightedmean") && e.contains("1_Pooling"), "{e}");
        std::fs::write(d.join("modules.json"), "[oops").unwrap();
        assert!(
            Profile::read(d)
                .unwrap_err()
                .to_string()
                .contains("modules.json")
        );
    }

    #[test]
    fn fallback_prompts_only_fill_what_is_missing() {
        let p = Profile {
            query_prompt: "own: ".into(),
            ..Default::default()
        }
        .with_fallback_prompts("query: ", "passage: ");
        assert_eq!(
            (p.query_prompt.as_str(), p.document_prompt.as_str()),
            ("own: ", "passage: ")
        );
    }
}
