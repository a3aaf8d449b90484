//! Kernel facts.
