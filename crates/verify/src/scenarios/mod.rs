//! The scenarios, one module per claim. Each returns evidence or the reason the
//! claim did not hold.

use crate::{run_fn, BoxFut, Claim, Ctx, Scenario, Scope};
use std::path::Path;

mod c1;
mod c2;
mod c3;
mod c4;
mod c5;
mod c5_backup;
mod c6;
mod c7;
mod c7_access;
mod c7_approval;
mod c8;

pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    c1::add(&mut v);
    c2::add(&mut v);
    c3::add(&mut v);
    c4::add(&mut v);
    c5::add(&mut v);
    c5_backup::add(&mut v);
    c6::add(&mut v);
    c7::add(&mut v);
    c7_approval::add(&mut v);
    c8::add(&mut v);
    // After c8: its flood and burst use up the operator's refusal and rate budgets.
    c7_access::add(&mut v);
    c2::add_final(&mut v);
    v
}

/// Adds a scenario whose body is `f(cx)`.
pub(crate) fn push(
    v: &mut Vec<Scenario>,
    claim: Claim,
    scope: Scope,
    id: &str,
    title: &str,
    f: for<'a> fn(&'a Ctx) -> BoxFut<'a>,
) {
    v.push(Scenario {
        claim,
        id: id.to_string(),
        title: title.to_string(),
        scope,
        run: run_fn(f),
    });
}

/// Adds a scenario whose body is `f(cx, param)`.
pub(crate) fn push_with<P: Clone + 'static>(
    v: &mut Vec<Scenario>,
    claim: Claim,
    scope: Scope,
    id: &str,
    title: &str,
    param: P,
    f: for<'a> fn(&'a Ctx, P) -> BoxFut<'a>,
) {
    v.push(Scenario {
        claim,
        id: id.to_string(),
        title: title.to_string(),
        scope,
        run: run_fn(move |cx| f(cx, param.clone())),
    });
}

/// Copies a directory tree (files and directories only).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// A fresh directory under the run's scratch directory.
pub(crate) fn scratch(cx: &Ctx, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let d = cx.scratch.join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d)?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A short, single-line rendering of a value for evidence.
pub(crate) fn short(s: &str) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one.chars().count() > 120 {
        format!("{}…", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}

/// Every file under `dir`.
pub(crate) fn walk(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}
