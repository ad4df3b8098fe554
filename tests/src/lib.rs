//! Integration tests across the tigress crates live in `tests/integration/`; this library
//! is empty.
