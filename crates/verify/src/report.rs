//! The evidence report: `report.json` (machine-readable), `report.md` and a
//! self-contained `report.html` (inline CSS, no scripts, no external assets; the
//! evidence of each scenario folds out with `<details>`).

use crate::Claim;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// Whether an attack failed as it should and left the evidence it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

/// One scenario's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRecord {
    pub claim: Claim,
    pub id: String,
    pub title: String,
    pub verdict: Verdict,
    /// Short strings: HTTP statuses, refusal codes, log indexes, digests.
    pub evidence: Vec<String>,
    /// Why it failed (absent when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub duration_ms: u64,
}

/// What was tested: versions and digests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions {
    pub palisade: String,
    pub etcd: Option<String>,
    pub policy_version: Option<u64>,
    pub policy_digest: Option<String>,
    /// (TUF target, sha256) of every release the deployment runs.
    pub releases: Vec<ReleaseDigest>,
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseDigest {
    pub target: String,
    pub sha256: String,
}

/// One claim's line in the matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimSummary {
    pub claim: Claim,
    pub statement: String,
    pub passed: usize,
    pub failed: usize,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    /// `local` (a deployment started for the run) or `against` (an existing one).
    pub mode: String,
    pub target: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub versions: Versions,
    pub claims: Vec<ClaimSummary>,
    pub scenarios: Vec<ScenarioRecord>,
    /// Problems outside any scenario (e.g. the deployment did not start).
    pub errors: Vec<String>,
}

pub const SCHEMA: &str = "palisade.dev/verify-claims-report/v1";

impl Report {
    pub fn new(
        mode: &str,
        target: &str,
        started_at: String,
        duration_ms: u64,
        versions: Versions,
        scenarios: Vec<ScenarioRecord>,
        errors: Vec<String>,
    ) -> Self {
        let claims = Claim::ALL
            .iter()
            .map(|c| {
                let passed = scenarios
                    .iter()
                    .filter(|s| s.claim == *c && s.verdict == Verdict::Pass)
                    .count();
                let failed = scenarios
                    .iter()
                    .filter(|s| s.claim == *c && s.verdict == Verdict::Fail)
                    .count();
                ClaimSummary {
                    claim: *c,
                    statement: c.statement().to_string(),
                    passed,
                    failed,
                    verdict: if failed == 0 && passed > 0 {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    },
                }
            })
            .collect();
        Self {
            schema: SCHEMA.into(),
            mode: mode.into(),
            target: target.into(),
            started_at,
            duration_ms,
            versions,
            claims,
            scenarios,
            errors,
        }
    }

    pub fn all_passed(&self) -> bool {
        self.errors.is_empty()
            && !self.scenarios.is_empty()
            && self.claims.iter().all(|c| c.verdict == Verdict::Pass)
    }

    /// One line per claim, for the terminal.
    pub fn summary_lines(&self) -> Vec<String> {
        self.claims
            .iter()
            .map(|c| {
                format!(
                    "{} {}  {:>3} passed, {} failed  {}",
                    c.claim,
                    if c.verdict == Verdict::Pass {
                        "PASS"
                    } else {
                        "FAIL"
                    },
                    c.passed,
                    c.failed,
                    c.statement
                )
            })
            .collect()
    }

    /// Writes the three files into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("report.json"), format!("{json}\n"))
            .with_context(|| format!("cannot write {}/report.json", dir.display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())
            .with_context(|| format!("cannot write {}/report.md", dir.display()))?;
        std::fs::write(dir.join("report.html"), self.html())
            .with_context(|| format!("cannot write {}/report.html", dir.display()))?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let total = self.scenarios.len();
        let failed = self
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Fail)
            .count();
        let _ = writeln!(out, "# Palisade verify-claims report\n");
        let _ = writeln!(
            out,
            "- Result: **{}** ({} scenarios, {} failed)",
            if self.all_passed() { "PASS" } else { "FAIL" },
            total,
            failed
        );
        let _ = writeln!(out, "- Mode: {} ({})", self.mode, md_cell(&self.target));
        let _ = writeln!(out, "- Started: {}", self.started_at);
        let _ = writeln!(out, "- Duration: {:.1} s", self.duration_ms as f64 / 1000.0);
        for line in self.version_lines() {
            let _ = writeln!(out, "- {}", md_cell(&line));
        }
        for e in &self.errors {
            let _ = writeln!(out, "- **Error:** {}", md_cell(e));
        }
        let _ = writeln!(out, "\n## Claims\n");
        let _ = writeln!(out, "| Claim | Verdict | Passed | Failed | Statement |");
        let _ = writeln!(out, "|---|---|---:|---:|---|");
        for c in &self.claims {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.claim,
                verdict_word(c.verdict),
                c.passed,
                c.failed,
                md_cell(&c.statement)
            );
        }
        for c in Claim::ALL {
            let _ = writeln!(out, "\n## {c}: {}\n", c.statement());
            let _ = writeln!(out, "| Scenario | Verdict | Time | Evidence |");
            let _ = writeln!(out, "|---|---|---:|---|");
            for s in self.scenarios.iter().filter(|s| s.claim == c) {
                let mut evidence = s.evidence.join("; ");
                if let Some(f) = &s.failure {
                    evidence = format!("FAILURE: {f}; {evidence}");
                }
                let _ = writeln!(
                    out,
                    "| `{}` {} | {} | {} ms | {} |",
                    s.id,
                    md_cell(&s.title),
                    verdict_word(s.verdict),
                    s.duration_ms,
                    md_cell(&evidence)
                );
            }
        }
        out
    }

    fn version_lines(&self) -> Vec<String> {
        let v = &self.versions;
        let mut lines = vec![format!("palisade {}", v.palisade)];
        if let Some(e) = &v.etcd {
            lines.push(format!("etcd {e}"));
        }
        if let (Some(ver), Some(d)) = (v.policy_version, &v.policy_digest) {
            lines.push(format!("action policy version {ver}, digest {d}"));
        }
        for r in &v.releases {
            lines.push(format!("release {} sha256:{}", r.target, r.sha256));
        }
        if let Some(k) = &v.kms_key_id {
            lines.push(format!("KMS key_id {k}"));
        }
        lines
    }

    pub fn html(&self) -> String {
        let mut out = String::new();
        let ok = self.all_passed();
        let total = self.scenarios.len();
        let failed = self
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Fail)
            .count();
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        out.push_str("<title>Palisade verify-claims report</title>\n<style>\n");
        out.push_str(CSS);
        out.push_str("</style></head><body>\n");
        let _ = writeln!(
            out,
            "<h1>Palisade verify-claims <span class=\"badge {}\">{}</span></h1>",
            if ok { "pass" } else { "fail" },
            if ok { "ALL CLAIMS HOLD" } else { "FAILURES" }
        );
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} scenarios, {} failed &middot; mode {} ({}) &middot; started {} &middot; {:.1} s</p>",
            total,
            failed,
            esc(&self.mode),
            esc(&self.target),
            esc(&self.started_at),
            self.duration_ms as f64 / 1000.0
        );
        out.push_str("<h2>Claims</h2>\n<table class=\"matrix\"><thead><tr><th>Claim</th><th>Verdict</th><th>Scenarios</th><th>Statement</th></tr></thead><tbody>\n");
        for c in &self.claims {
            let cells: String = self
                .scenarios
                .iter()
                .filter(|s| s.claim == c.claim)
                .map(|s| {
                    format!(
                        "<a class=\"cell {}\" href=\"#{}\" title=\"{}\"></a>",
                        if s.verdict == Verdict::Pass {
                            "pass"
                        } else {
                            "fail"
                        },
                        esc(&s.id),
                        esc(&s.title)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<tr><td><a href=\"#{}\">{}</a></td><td class=\"{}\">{}</td><td>{}<br><small>{} passed, {} failed</small></td><td>{}</td></tr>",
                c.claim,
                c.claim,
                if c.verdict == Verdict::Pass { "pass" } else { "fail" },
                verdict_word(c.verdict),
                cells,
                c.passed,
                c.failed,
                esc(&c.statement)
            );
        }
        out.push_str("</tbody></table>\n");
        out.push_str("<h2>What was tested</h2>\n<ul>\n");
        for line in self.version_lines() {
            let _ = writeln!(out, "<li><code>{}</code></li>", esc(&line));
        }
        out.push_str("</ul>\n");
        if !self.errors.is_empty() {
            out.push_str("<h2>Errors</h2>\n<ul>\n");
            for e in &self.errors {
                let _ = writeln!(out, "<li class=\"fail\">{}</li>", esc(e));
            }
            out.push_str("</ul>\n");
        }
        for c in Claim::ALL {
            let _ = writeln!(
                out,
                "<h2 id=\"{c}\">{c}: {}</h2>\n<div class=\"scenarios\">",
                esc(c.statement())
            );
            for s in self.scenarios.iter().filter(|s| s.claim == c) {
                let class = if s.verdict == Verdict::Pass {
                    "pass"
                } else {
                    "fail"
                };
                let _ = writeln!(
                    out,
                    "<details id=\"{}\" class=\"{class}\"{}><summary><span class=\"v {class}\">{}</span> <code>{}</code> {} <small>{} ms</small></summary>",
                    esc(&s.id),
                    if s.verdict == Verdict::Fail { " open" } else { "" },
                    verdict_word(s.verdict),
                    esc(&s.id),
                    esc(&s.title),
                    s.duration_ms
                );
                if let Some(f) = &s.failure {
                    let _ = writeln!(out, "<p class=\"failure\">{}</p>", esc(f));
                }
                out.push_str("<ul>");
                for e in &s.evidence {
                    let _ = write!(out, "<li><code>{}</code></li>", esc(e));
                }
                out.push_str("</ul></details>\n");
            }
            out.push_str("</div>\n");
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// HTML escaping for text and attribute values. Evidence may quote attacker input.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#1d2430;background:#fff}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #dde;padding-bottom:.2em;font-size:1.2em}
.meta{color:#555}.badge{font-size:.6em;padding:.25em .6em;border-radius:.3em;vertical-align:middle;color:#fff}
.badge.pass{background:#1a7f37}.badge.fail{background:#cf222e}
table.matrix{border-collapse:collapse;width:100%}table.matrix td,table.matrix th{border:1px solid #dde;padding:.4em .6em;text-align:left;vertical-align:top}
td.pass{color:#1a7f37;font-weight:bold}td.fail{color:#cf222e;font-weight:bold}
a.cell{display:inline-block;width:.9em;height:.9em;margin:1px;border-radius:2px}a.cell.pass{background:#2da44e}a.cell.fail{background:#cf222e}
details{border:1px solid #e4e6eb;border-radius:.3em;margin:.25em 0;padding:.25em .6em}details.fail{border-color:#cf222e;background:#fff5f5}
summary{cursor:pointer}.v{font-weight:bold;font-size:.85em}.v.pass{color:#1a7f37}.v.fail{color:#cf222e}
details ul{margin:.3em 0 .3em 1em;padding:0}details li{list-style:square;margin:.1em 0}code{font-size:.9em;word-break:break-all}
.failure{color:#cf222e;font-weight:bold}small{color:#666}
";
