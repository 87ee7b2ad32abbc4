//! What can go wrong in the owner and around it, typed like the other layers' errors; the
//! binaries add context with anyhow.

use crate::encoder::EncoderError;
use crate::index::IndexError;
use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Socket(#[from] super::socket::SocketError),
    /// The index is not open yet (the model is loading, or the first open is under way); the
    /// message says what is happening.
    #[error("{0}")]
    NotReady(String),
    /// The owner could not start (its message was already reported in the status).
    #[error("{0}")]
    Failed(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
