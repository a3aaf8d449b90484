//! The commands a user types. Each module has an `Args` (clap) and a `run` returning the
//! process exit code; none of them holds logic the core does not.

pub mod check;
pub mod daemon;
pub mod dump;
pub mod export;
pub mod fleet;
pub mod live;
pub mod probes;
pub mod record;
pub mod replay;
pub mod verify;
