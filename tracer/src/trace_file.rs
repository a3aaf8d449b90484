//! Trace file.
