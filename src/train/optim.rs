//! What both learners' training loops share: the optimiser, gradient clipping and weight
//! snapshots for early stopping.

use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;

/// Adam without weight decay (AdamW with decay 0), as both papers train.
pub(crate) fn adam(vars: Vec<Var>, lr: f64) -> candle_core::Result<candle_nn::AdamW> {
    candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
}

pub(crate) fn snapshot(vars: &[Var]) -> candle_core::Result<Vec<Tensor>> {
    vars.iter().map(|v| v.as_tensor().copy()).collect()
}

/// Scales all gradients down together when their global L2 norm exceeds `clip`.
pub(crate) fn clip_gradients(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    clip: f64,
) -> candle_core::Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if clip > 0.0 && norm > clip {
        let scale = clip / norm;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}
