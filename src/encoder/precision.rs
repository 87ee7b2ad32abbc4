//! The number format of the encoder's weight products: a setting of the index, like its model.

use std::fmt;
use std::str::FromStr;

/// `f32` everywhere, or 8-bit integer weight products (see `quant`) with everything else in
/// `f32`. Vectors of the two differ slightly, so an index records which one made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
        }
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "int8" | "i8" => Ok(Self::Int8),
            other => Err(format!("unknown precision {other:?}: use f32 or int8")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
