//! Test harness for real-node tests.
