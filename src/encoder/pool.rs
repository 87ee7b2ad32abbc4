//! Turning token states into one vector per text.

use std::fmt;
use std::str::FromStr;

use candle_core::{D, DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over real tokens: what sentence-transformers models such as MiniLM are trained for.
    #[default]
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
}

impl FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            "max" => Ok(Self::Max),
            _ => Err(format!("unknown pooling {s:?}: use mean, cls or max")),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        })
    }
}

/// `(b, t, h)` states and `(b, t)` mask → `(b, h)`. Padding never contributes.
pub fn pool(states: &Tensor, mask: &Tensor, how: Pooling) -> candle_core::Result<Tensor> {
    match how {
        Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => {
            let m = mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?;
            let sum = states.broadcast_mul(&m)?.sum(1)?;
            // Every row has at least [CLS] and [SEP], so the count is never zero; the clamp
            // only guards against a caller passing an all-zero mask.
            let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
            sum.broadcast_div(&count)
        }
        Pooling::Max => {
            // Padding is pushed far below any real value before the maximum.
            let m = mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?;
            let penalty = ((m - 1.0)? * 1e9)?;
            states.broadcast_add(&penalty)?.max(1)
        }
    }
}

/// Unit-length rows, so that a dot product is the cosine.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_ignores_padding_and_cls_takes_first() {
        let s = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [100., 100.]],
                [[5., 6.], [7., 8.], [9., 10.]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let m = Tensor::new(&[[1u32, 1, 0], [1, 1, 1]], &Device::Cpu).unwrap();
        let mean: Vec<Vec<f32>> = pool(&s, &m, Pooling::Mean).unwrap().to_vec2().unwrap();
        assert_eq!(mean, vec![vec![2., 3.], vec![7., 8.]]);
        let cls: Vec<Vec<f32>> = pool(&s, &m, Pooling::Cls).unwrap().to_vec2().unwrap();
        assert_eq!(cls, vec![vec![1., 2.], vec![5., 6.]]);
        let max: Vec<Vec<f32>> = pool(&s, &m, Pooling::Max).unwrap().to_vec2().unwrap();
        assert_eq!(max, vec![vec![3., 4.], vec![9., 10.]]);
        let n: Vec<Vec<f32>> = l2_normalize(&Tensor::new(&[[3f32, 4.]], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(n, vec![vec![0.6, 0.8]]);
    }
}
