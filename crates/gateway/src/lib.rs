//! Palisade gateway: not built yet. Until it is,
//! the `palisade` subcommands that need it say so and exit non-zero.
#![forbid(unsafe_code)]
