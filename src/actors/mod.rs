//! The actors: the [`scheduler`], the [`stage`] worker pools, and the [`pipeline`] that starts and
//! owns them.

pub mod ingest;
pub mod pipeline;
pub mod scheduler;
pub mod speech;
pub mod stage;

pub use pipeline::{Engine, EngineParts};
