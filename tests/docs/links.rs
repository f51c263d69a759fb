//! Every relative link in README.md and docs/ resolves: the file exists and, for a
//! `#fragment` into a Markdown page, a heading of that page has that anchor (as
//! GitHub derives it: lower case, punctuation but `-` and `_` dropped, spaces as `-`,
//! repeated headings numbered `-1`, `-2`, …). The pages also stay within their size
//! budget.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut stack = vec![root().join("docs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("docs/") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    out
}

/// The anchors of a page's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// `(line, target)` of every inline Markdown link `](target)` outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code spans are not links.
        let mut plain = String::new();
        for (j, part) in line.split('`').enumerate() {
            if j % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read page");
        for (line, target) in links(&text) {
            // Not a link target (a regex or code in text): brackets or spaces.
            if target.is_empty()
                || target.contains(['[', ' '])
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().expect("dir").join(path)
            };
            let shown = format!(
                "{}:{line}: {target}",
                page.strip_prefix(root()).unwrap_or(&page).display()
            );
            if !file.exists() {
                broken.push(format!("{shown} (no such file)"));
                continue;
            }
            if let Some(f) = fragment {
                if file.extension().is_some_and(|x| x == "md") {
                    let target_text = std::fs::read_to_string(&file).expect("read target");
                    if !anchors(&target_text).contains(f) {
                        broken.push(format!("{shown} (no heading with this anchor)"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The pages a newcomer reads stay short, and docs/ as a whole stays a size one can
/// read: reference pages are looked up, but facts live in one place each.
#[test]
fn the_docs_stay_within_their_size_budget() {
    let size = |rel: &str| {
        std::fs::metadata(root().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .len()
    };
    let reader: u64 = ["README.md", "docs/architecture.md", "docs/threat-model.md"]
        .iter()
        .map(|p| size(p))
        .sum();
    assert!(
        reader <= 70_000,
        "README, architecture and threat model hold {reader} bytes together (budget 70,000)"
    );
    let docs: u64 = pages()
        .iter()
        .filter(|p| p.starts_with(root().join("docs")))
        .filter(|p| {
            !p.components()
                .any(|c| c.as_os_str() == "verify-claims-report")
        })
        .map(|p| std::fs::metadata(p).expect("page").len())
        .sum();
    assert!(
        docs <= 250_000,
        "docs/ holds {docs} bytes of Markdown besides the generated report (budget 250,000)"
    );
}

#[test]
fn anchors_follow_githubs_rules() {
    let a = anchors("# The gateway API\n## C1 — No interactive access\n## Keys\n## Keys\n```\n# not a heading\n```\n");
    for want in [
        "the-gateway-api",
        "c1--no-interactive-access",
        "keys",
        "keys-1",
    ] {
        assert!(a.contains(want), "{want} missing from {a:?}");
    }
    assert!(!a.contains("not-a-heading"));
}

#[test]
fn links_are_found_outside_code_only() {
    let text = "see [x](a.md#b) and `[y](z.md)`\n```\n[w](v.md)\n```\n[u](t.md)";
    let found: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["a.md#b", "t.md"]);
}
