//! Benchmarks: in-process policy timing, the load generator and the echo floor.
