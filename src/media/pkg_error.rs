//! Error type shared by the audio packaging modules (`aac`, `fmp4`, `hls`, `ladder`).

use thiserror::Error;

/// Everything that can go wrong while encoding and packaging a rendition.
#[derive(Debug, Error)]
pub enum PackError {
    /// The fdk-aac encoder rejected a parameter or failed while encoding.
    #[error("aac encoder error: {0}")]
    Encoder(String),
    /// A configuration value is out of the supported range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The planar input did not have the channel count the encoder was built for.
    #[error("expected {expected} channel buffers, got {got}")]
    ChannelMismatch {
        /// Channels the encoder was created with.
        expected: usize,
        /// Channel buffers passed in.
        got: usize,
    },
    /// The per-channel buffers of one chunk have different lengths.
    #[error("channel buffers have different lengths")]
    RaggedChannels,
    /// `push` or `finish` was called after `finish`.
    #[error("encoder already finished")]
    Finished,
    /// The sink refused a file.
    #[error("failed to write {name}: {source}")]
    Sink {
        /// File name handed to the sink.
        name: String,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase() {
        let errs = [
            PackError::Encoder("x".into()),
            PackError::Config("x".into()),
            PackError::ChannelMismatch { expected: 2, got: 1 },
            PackError::RaggedChannels,
            PackError::Finished,
            PackError::Sink { name: "a".into(), source: std::io::Error::other("boom") },
        ];
        for e in errs {
            let msg = e.to_string();
            assert!(msg.chars().next().unwrap().is_lowercase(), "{msg}");
        }
    }
}
