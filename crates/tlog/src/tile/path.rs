//! tlog-tiles v0.1.0 resource paths: `tile/<L>/<N>[.p/<W>]` and
//! `tile/entries/<N>[.p/<W>]`, with `N` in three-digit groups (`x001/x234/067`).
//!
//! Parsing accepts exactly the canonical form that formatting produces, so a path
//! names one tile and one tile has one path (no leading zeros, no empty groups, no
//! `.p/256`).

use std::fmt;
use std::str::FromStr;

use super::{TileId, MAX_TILE_LEVEL, TILE_WIDTH};
use crate::text::parse_decimal;

/// A parsed tile or entry-bundle path, relative to the log prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`
    Hashes(TileId),
    /// `tile/entries/<N>[.p/<W>]`: the bundle beside the level-0 tile of the same
    /// index and width (the level of the id is ignored when formatting).
    Entries(TileId),
}

/// What is wrong with a tile path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tile path {path:?}: {problem}")]
pub struct PathError {
    pub path: String,
    pub problem: PathProblem,
}

/// The part of a tile path that is not canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("does not start with tile/")]
    Prefix,
    #[error("level is not a canonical decimal from 0 to 63")]
    Level,
    #[error("index is not canonical x-prefixed three-digit groups")]
    Index,
    #[error("index does not fit in 64 bits")]
    IndexOverflow,
    #[error("partial width is not a canonical decimal from 1 to 255")]
    Width,
    #[error("longer than any canonical tile path")]
    Length,
}

/// Longest canonical path: `tile/entries/` + seven groups + `.p/255`.
const MAX_PATH_LEN: usize = 64;

impl fmt::Display for TilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tile = match self {
            TilePath::Hashes(tile) => {
                write!(f, "tile/{}/", tile.level())?;
                tile
            }
            TilePath::Entries(tile) => {
                f.write_str("tile/entries/")?;
                tile
            }
        };
        write_index(f, tile.index())?;
        if !tile.is_full() {
            write!(f, ".p/{}", tile.width())?;
        }
        Ok(())
    }
}

/// `N` as three-digit groups, all but the last prefixed with `x`.
fn write_index(f: &mut fmt::Formatter<'_>, index: u64) -> fmt::Result {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let mut iter = groups.iter().rev().peekable();
    while let Some(group) = iter.next() {
        if iter.peek().is_some() {
            write!(f, "x{group:03}/")?;
        } else {
            write!(f, "{group:03}")?;
        }
    }
    Ok(())
}

impl FromStr for TilePath {
    type Err = PathError;

    fn from_str(path: &str) -> Result<TilePath, PathError> {
        parse(path).map_err(|problem| PathError {
            path: path.chars().take(MAX_PATH_LEN + 16).collect(),
            problem,
        })
    }
}

impl TilePath {
    /// Parses a canonical path; see the module docs.
    pub fn parse(path: &str) -> Result<TilePath, PathError> {
        path.parse()
    }

    /// The tile coordinates, for either kind.
    pub fn tile(&self) -> TileId {
        match self {
            TilePath::Hashes(tile) | TilePath::Entries(tile) => *tile,
        }
    }
}

fn parse(path: &str) -> Result<TilePath, PathProblem> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathProblem::Length);
    }
    let rest = path.strip_prefix("tile/").ok_or(PathProblem::Prefix)?;
    let (kind, rest) = rest.split_once('/').ok_or(PathProblem::Index)?;
    let level = if kind == "entries" {
        None
    } else {
        let level = parse_decimal(kind).ok_or(PathProblem::Level)?;
        Some(
            u8::try_from(level)
                .ok()
                .filter(|&l| l <= MAX_TILE_LEVEL)
                .ok_or(PathProblem::Level)?,
        )
    };

    let (groups, width) = match rest.split_once(".p/") {
        None => (rest, TILE_WIDTH),
        Some((groups, width)) => {
            let width = parse_decimal(width)
                .filter(|w| (1..u64::from(TILE_WIDTH)).contains(w))
                .ok_or(PathProblem::Width)?;
            (groups, width as u16)
        }
    };
    let index = parse_index(groups)?;
    let tile = TileId::new(level.unwrap_or(0), index, width).map_err(|_| PathProblem::Width)?;
    Ok(match level {
        Some(_) => TilePath::Hashes(tile),
        None => TilePath::Entries(tile),
    })
}

/// `x001/x234/067` → 1234067, rejecting leading zero groups and any other spelling.
fn parse_index(groups: &str) -> Result<u64, PathProblem> {
    let parts: Vec<&str> = groups.split('/').collect();
    let Some((last, init)) = parts.split_last() else {
        return Err(PathProblem::Index);
    };
    let mut index: u64 = 0;
    for (i, part) in init.iter().enumerate() {
        let digits = part.strip_prefix('x').ok_or(PathProblem::Index)?;
        let group = three_digits(digits).ok_or(PathProblem::Index)?;
        if i == 0 && group == 0 {
            return Err(PathProblem::Index);
        }
        index = push_group(index, group)?;
    }
    let group = three_digits(last).ok_or(PathProblem::Index)?;
    push_group(index, group)
}

fn push_group(index: u64, group: u64) -> Result<u64, PathProblem> {
    index
        .checked_mul(1000)
        .and_then(|i| i.checked_add(group))
        .ok_or(PathProblem::IndexOverflow)
}

fn three_digits(s: &str) -> Option<u64> {
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
