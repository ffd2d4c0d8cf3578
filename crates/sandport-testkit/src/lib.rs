//! Test harness shared by sandport's integration tests and benchmarks.
