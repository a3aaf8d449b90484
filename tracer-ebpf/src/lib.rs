//! Empty library target: lets `tracer` declare this crate as a build-dependency so that cargo
//! reruns tracer/build.rs when the programs (src/main.rs and its modules) or tracer-common change.
#![no_std]
