//! Palisade kms: not built yet. Its capability arrives with its own issue; until then
//! the `palisade` subcommands that need it say so and exit non-zero.
#![forbid(unsafe_code)]
