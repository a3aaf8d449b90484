//! BTF layout resolver.
