//! State engine.
