//! The policy linter: YAML text in, a [`Policy`] out, or every problem found with its
//! line and column.
//!
//! Besides the shape of every field (unknown fields are errors, scalars are typed by
//! the field that reads them), the linter enforces the rule that makes a policy
//! reviewable: **an action may only narrow its handler** ([`crate::catalogue`]).
//! Concretely, for each action:
//! - the handler exists, the target kind equals the handler's, the risk is not lower
//!   than the handler's and the output schema is the handler's;
//! - every parameter is one the handler declares, with the same type (or an `enum`
//!   whose every value the handler's string type accepts);
//! - `maxLength`, `min`/`max` lie within the handler's; enum values are a subset;
//! - a parameter the handler requires is required; a pattern is applied *in addition
//!   to* the handler's own pattern (regex inclusion is undecidable in general, so the
//!   validator simply checks both);
//! - `allowNonAscii` only where the handler allows it (no built-in handler does).
//!
//! Anything wider is an error, never a silent clamp: a reviewer must see what is granted.

use crate::catalogue::{self, Handler, HandlerParamType};
use crate::model::{
    ActionSpec, Duration, JustificationSpec, Metadata, ParamSpec, ParamType, PolicyDocument,
    RateLimit, Risk, Target, API_VERSION, KIND,
};
use crate::policy::Policy;
use crate::validate::{check_string, Check, CompiledAction, CompiledParam, Pattern};
use crate::yaml::{self, Node, NodeKind, Pos};
use palisade_core::ActionName;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The largest policy file read.
pub const MAX_POLICY_BYTES: usize = 1 << 20;
/// The most actions one policy may hold.
pub const MAX_ACTIONS: usize = 1_000;
/// The most parameters one action may declare.
pub const MAX_PARAMS: usize = 32;
/// The longest pattern (before anchoring).
pub const MAX_PATTERN_BYTES: usize = 1_024;
/// The compiled-program size limit for one pattern; larger ones (`(a{1000}){1000}`)
/// are refused rather than allowed to cost memory and time at every request.
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
const DESCRIPTION_MAX: usize = 2_048;
const ENUM_VALUE_MAX: usize = 253;
const MAX_ENUM_VALUES: usize = 256;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The field, as a path such as `actions[2].params.node.maxLength` (empty for the
    /// document itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for LintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for LintError {}

/// Lints policy text. On success the policy is ready to validate requests; on failure
/// every error found is returned, sorted by position.
pub fn lint(text: &str) -> Result<Policy, Vec<LintError>> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(vec![LintError {
            line: 1,
            column: 1,
            path: String::new(),
            message: format!(
                "the policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            ),
        }]);
    }
    let root = yaml::parse(text).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| LintError {
                line: e.pos.line,
                column: e.pos.column,
                path: String::new(),
                message: e.message,
            })
            .collect::<Vec<_>>()
    })?;
    let mut linter = Linter {
        errors: Vec::new(),
        patterns: HashMap::new(),
    };
    let built = linter.document(&root);
    match built {
        Some((doc, compiled)) if linter.errors.is_empty() => Policy::assemble(doc, compiled)
            .map_err(|message| {
                vec![LintError {
                    line: 1,
                    column: 1,
                    path: String::new(),
                    message,
                }]
            }),
        _ => {
            let mut errors = linter.errors;
            errors.sort_by_key(|e| (e.line, e.column));
            if errors.is_empty() {
                // Unreachable by construction; refuse rather than accept.
                errors.push(LintError {
                    line: 1,
                    column: 1,
                    path: String::new(),
                    message: "the policy could not be read".into(),
                });
            }
            Err(errors)
        }
    }
}

/// Reads policy text as JSON (for checking it against `policy.schema.json`), without
/// linting it. YAML-level problems (duplicated keys, anchors) are still errors.
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, Vec<LintError>> {
    yaml::parse(text)
        .map(|n| yaml::to_json(&n))
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|e| LintError {
                    line: e.pos.line,
                    column: e.pos.column,
                    path: String::new(),
                    message: e.message,
                })
                .collect()
        })
}

/// Compiles a policy pattern anchored at both ends, with size limits.
///
/// The pattern is first compiled on its own: a pattern that is valid by itself has
/// balanced groups, so wrapping it in `\A(?:…)\z` cannot be escaped (a pattern such
/// as `a)|(?:b` would otherwise turn the anchors into one alternative).
pub(crate) fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "pattern is {} bytes; the limit is {MAX_PATTERN_BYTES}",
            pattern.len()
        ));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control())
    {
        return Err(format!(
            "pattern contains {c:?}; patterns must be printable ASCII (write non-ASCII as \\u{{…}} escapes, and only where allowNonAscii is set)"
        ));
    }
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(4 * PATTERN_SIZE_LIMIT)
            .nest_limit(32)
            .build()
    };
    build(pattern).map_err(|e| format!("invalid pattern: {}", first_line(&e.to_string())))?;
    build(&format!("\\A(?:{pattern})\\z"))
        .map_err(|e| format!("invalid pattern: {}", first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    let t: String = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    t.chars().take(300).collect()
}

struct Linter {
    errors: Vec<LintError>,
    /// Compiled patterns by source: a policy repeats the same ticket and handler
    /// patterns in many actions, and compiling is the costly part of linting.
    patterns: HashMap<String, Result<regex::Regex, String>>,
}

/// The fields of one mapping, after unknown and missing ones were reported.
struct Fields<'a> {
    pos: Pos,
    entries: &'a [(yaml::Key, Node)],
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v)
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl Linter {
    fn err(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(LintError {
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Checks that `node` is a mapping with only `allowed` keys and all `required` ones.
    fn map<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Option<Fields<'a>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.describe()),
            );
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.err(
                    key.pos,
                    &join(path, &key.name),
                    format!(
                        "unknown field {:?}; the fields here are: {}",
                        key.name.chars().take(64).collect::<String>(),
                        allowed.join(", ")
                    ),
                );
            }
        }
        for name in required {
            if !entries.iter().any(|(k, _)| k.name == *name) {
                self.err(node.pos, path, format!("missing field {name:?}"));
            }
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            _ => {
                self.err(
                    node.pos,
                    path,
                    format!("expected a string, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// Human text: a description. Newlines allowed, other control characters not.
    fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.trim().is_empty() {
            self.err(node.pos, path, "must not be empty");
            return None;
        }
        if s.len() > DESCRIPTION_MAX {
            self.err(
                node.pos,
                path,
                format!("is {} bytes; the limit is {DESCRIPTION_MAX}", s.len()),
            );
            return None;
        }
        if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\n') {
            self.err(
                node.pos,
                path,
                format!("contains the control character {c:?}"),
            );
            return None;
        }
        Some(s)
    }

    fn int(&mut self, node: &Node, path: &str) -> Option<i64> {
        let digits = match &node.kind {
            NodeKind::Scalar { text, plain: true } => text.strip_prefix('-').unwrap_or(text),
            _ => "",
        };
        if let NodeKind::Scalar { text, plain: true } = &node.kind {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return match text.parse::<i64>() {
                    Ok(i) => Some(i),
                    Err(_) => {
                        self.err(
                            node.pos,
                            path,
                            format!("{text} does not fit a signed 64-bit integer"),
                        );
                        None
                    }
                };
            }
        }
        self.err(
            node.pos,
            path,
            format!(
                "expected a decimal integer (unquoted, no sign but '-', no '_', no hex), found {}",
                shown_node(node)
            ),
        );
        None
    }

    fn int_in(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        let i = self.int(node, path)?;
        if i < min || i > max {
            self.err(node.pos, path, format!("{i} is outside {min}..={max}"));
            return None;
        }
        Some(i)
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            NodeKind::Scalar { text, plain: true } if text == "true" => Some(true),
            NodeKind::Scalar { text, plain: true } if text == "false" => Some(false),
            _ => {
                self.err(
                    node.pos,
                    path,
                    format!("expected true or false, found {}", shown_node(node)),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let s = self.string(node, path)?;
        let d = Duration::parse(&s);
        if d.is_none() {
            self.err(
                node.pos,
                path,
                format!("{s:?} is not a duration such as 30s, 5m, 24h or 7d (at most ten years)"),
            );
        }
        d
    }

    fn keyword<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: fn(&str) -> Option<T>,
        allowed: &str,
    ) -> Option<T> {
        let s = self.string(node, path)?;
        let v = parse(&s);
        if v.is_none() {
            self.err(node.pos, path, format!("{s:?} is not one of {allowed}"));
        }
        v
    }

    fn compile(&mut self, source: &str) -> Result<regex::Regex, String> {
        if let Some(done) = self.patterns.get(source) {
            return done.clone();
        }
        let done = compile_pattern(source);
        self.patterns.insert(source.to_string(), done.clone());
        done
    }

    fn pattern(&mut self, node: &Node, path: &str) -> Option<Pattern> {
        let source = self.string(node, path)?;
        match self.compile(&source) {
            Ok(regex) => Some(Pattern { source, regex }),
            Err(e) => {
                self.err(node.pos, path, e);
                None
            }
        }
    }

    fn document(&mut self, root: &Node) -> Option<(PolicyDocument, Vec<CompiledAction>)> {
        let top = self.map(
            root,
            "",
            &["apiVersion", "kind", "metadata", "actions"],
            &["apiVersion", "kind", "metadata", "actions"],
        )?;
        if let Some(n) = top.get("apiVersion") {
            if let Some(v) = self.string(n, "apiVersion") {
                if v != API_VERSION {
                    self.err(n.pos, "apiVersion", format!("{v:?} is not {API_VERSION:?}"));
                }
            }
        }
        if let Some(n) = top.get("kind") {
            if let Some(v) = self.string(n, "kind") {
                if v != KIND {
                    self.err(n.pos, "kind", format!("{v:?} is not {KIND:?}"));
                }
            }
        }
        let metadata = top.get("metadata").and_then(|n| self.metadata(n));
        let mut actions = Vec::new();
        let mut compiled = Vec::new();
        if let Some(node) = top.get("actions") {
            match &node.kind {
                NodeKind::Seq(items) if items.is_empty() => self.err(
                    node.pos,
                    "actions",
                    "a policy must allow at least one action",
                ),
                NodeKind::Seq(items) if items.len() > MAX_ACTIONS => self.err(
                    node.pos,
                    "actions",
                    format!("{} actions; the limit is {MAX_ACTIONS}", items.len()),
                ),
                NodeKind::Seq(items) => {
                    let mut seen: HashMap<String, Pos> = HashMap::new();
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("actions[{i}]");
                        if let Some((spec, c)) = self.action(item, &path, &mut seen) {
                            actions.push(spec);
                            compiled.push(c);
                        }
                    }
                }
                _ => self.err(
                    node.pos,
                    "actions",
                    format!("expected a sequence of actions, found {}", node.describe()),
                ),
            }
        }
        let doc = PolicyDocument {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: metadata?,
            actions,
        };
        Some((doc, compiled))
    }

    fn metadata(&mut self, node: &Node) -> Option<Metadata> {
        let f = self.map(node, "metadata", &["version", "description"], &["version"])?;
        let version = f.get("version").and_then(|n| {
            let v = self.int(n, "metadata.version")?;
            if v < 1 {
                self.err(n.pos, "metadata.version", "must be at least 1");
                return None;
            }
            u64::try_from(v).ok()
        });
        let description = match f.get("description") {
            Some(n) => Some(self.text(n, "metadata.description")?),
            None => None,
        };
        Some(Metadata {
            version: version?,
            description,
        })
    }

    fn action(
        &mut self,
        node: &Node,
        path: &str,
        seen: &mut HashMap<String, Pos>,
    ) -> Option<(ActionSpec, CompiledAction)> {
        const FIELDS: &[&str] = &[
            "name",
            "description",
            "handler",
            "target",
            "role",
            "risk",
            "outputSchema",
            "rateLimit",
            "justification",
            "params",
        ];
        let f = self.map(node, path, FIELDS, &FIELDS[..9])?;
        let p = |field: &str| join(path, field);

        let name = f.get("name").and_then(|n| {
            let s = self.string(n, &p("name"))?;
            match ActionName::parse(&s) {
                Ok(name) => {
                    if let Some(first) = seen.get(name.as_str()) {
                        self.err(
                            n.pos,
                            &p("name"),
                            format!(
                                "action {name} is already defined at line {}; each action is defined once",
                                first.line
                            ),
                        );
                        return None;
                    }
                    seen.insert(name.as_str().to_string(), n.pos);
                    Some(name)
                }
                Err(e) => {
                    self.err(n.pos, &p("name"), e.to_string());
                    None
                }
            }
        });
        let description = f
            .get("description")
            .and_then(|n| self.text(n, &p("description")));
        let handler: Option<&'static Handler> = f.get("handler").and_then(|n| {
            let id = self.string(n, &p("handler"))?;
            let h = catalogue::handler_by_id(&id);
            if h.is_none() {
                let known: Vec<&str> = catalogue::HANDLERS.iter().map(|h| h.id).collect();
                self.err(
                    n.pos,
                    &p("handler"),
                    format!(
                        "unknown handler {:?}; the built-in handlers are: {}",
                        id.chars().take(64).collect::<String>(),
                        known.join(", ")
                    ),
                );
            }
            h
        });
        let target = f.get("target").and_then(|n| {
            let t = self.keyword(n, &p("target"), Target::parse, "cluster, instance")?;
            if let Some(h) = handler {
                if t != h.target {
                    self.err(
                        n.pos,
                        &p("target"),
                        format!("handler {} runs on the {}, not the {t}", h.id, h.target),
                    );
                    return None;
                }
            }
            Some(t)
        });
        let role = f.get("role").and_then(|n| {
            let r = self.string(n, &p("role"))?;
            let ok = r.len() <= 63
                && r.starts_with(|c: char| c.is_ascii_lowercase())
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !r.ends_with('-');
            if !ok {
                self.err(
                    n.pos,
                    &p("role"),
                    format!(
                        "{:?} is not a role name (lower-case letters, digits and '-', at most 63)",
                        r.chars().take(64).collect::<String>()
                    ),
                );
                return None;
            }
            Some(r)
        });
        let risk = f.get("risk").and_then(|n| {
            let r = self.keyword(n, &p("risk"), Risk::parse, "read, mutate, disruptive")?;
            if let Some(h) = handler {
                if r < h.risk {
                    self.err(
                        n.pos,
                        &p("risk"),
                        format!(
                            "risk {r} is lower than handler {}'s risk {}; a policy may raise risk, never lower it",
                            h.id, h.risk
                        ),
                    );
                    return None;
                }
            }
            Some(r)
        });
        let output_schema = f.get("outputSchema").and_then(|n| {
            let s = self.string(n, &p("outputSchema"))?;
            if let Some(h) = handler {
                if s != h.output_schema {
                    self.err(
                        n.pos,
                        &p("outputSchema"),
                        format!(
                            "{:?} is not handler {}'s output schema {:?}; output filtering cannot be changed by policy",
                            s.chars().take(128).collect::<String>(),
                            h.id,
                            h.output_schema
                        ),
                    );
                    return None;
                }
            }
            Some(s)
        });
        let rate_limit = f
            .get("rateLimit")
            .and_then(|n| self.rate_limit(n, &p("rateLimit")));
        let justification = f
            .get("justification")
            .and_then(|n| self.justification(n, &p("justification")));

        // Parameters are checked against the handler only when the handler is known.
        let mut params = BTreeMap::new();
        let mut checks = Vec::new();
        if let Some(h) = handler {
            let params_path = p("params");
            let declared = match f.get("params") {
                None => Some(Vec::new()),
                Some(n) if n.is_null() => Some(Vec::new()),
                Some(n) => match &n.kind {
                    NodeKind::Map(entries) if entries.len() > MAX_PARAMS => {
                        self.err(
                            n.pos,
                            &params_path,
                            format!("{} parameters; the limit is {MAX_PARAMS}", entries.len()),
                        );
                        None
                    }
                    NodeKind::Map(entries) => Some(entries.iter().collect::<Vec<_>>()),
                    _ => {
                        self.err(
                            n.pos,
                            &params_path,
                            format!(
                                "expected a mapping of parameter names to types, found {}",
                                n.describe()
                            ),
                        );
                        None
                    }
                },
            };
            let mut all_ok = declared.is_some();
            for (key, value) in declared.unwrap_or_default() {
                let ppath = join(&params_path, &key.name);
                match self.param(h, &key.name, key.pos, value, &ppath) {
                    Some((spec, check)) => {
                        checks.push(CompiledParam {
                            name: key.name.clone(),
                            required: spec.required,
                            check,
                        });
                        params.insert(key.name.clone(), spec);
                    }
                    None => all_ok = false,
                }
            }
            if all_ok {
                for hp in h.params.iter().filter(|hp| hp.required) {
                    if !params.contains_key(hp.name) {
                        let pos = f.get("params").map_or(f.pos, |n| n.pos);
                        self.err(
                            pos,
                            &params_path,
                            format!(
                                "handler {} needs parameter {:?}; declare it (narrowed as you like)",
                                h.id, hp.name
                            ),
                        );
                    }
                }
            }
        }

        let spec = ActionSpec {
            name: name?,
            description: description?,
            handler: handler?.id.to_string(),
            target: target?,
            role: role?,
            risk: risk?,
            output_schema: output_schema?,
            rate_limit: rate_limit?,
            justification: justification?,
            params,
        };
        // Parameters in name order, as the BTreeMap above and the validator's output.
        checks.sort_by(|a, b| a.name.cmp(&b.name));
        let ticket = self.pattern_of(&spec.justification.ticket_pattern)?;
        let compiled = CompiledAction {
            handler: handler?,
            params: checks,
            ticket,
        };
        Some((spec, compiled))
    }

    fn pattern_of(&mut self, source: &str) -> Option<Pattern> {
        self.compile(source).ok().map(|regex| Pattern {
            source: source.to_string(),
            regex,
        })
    }

    fn rate_limit(&mut self, node: &Node, path: &str) -> Option<RateLimit> {
        let f = self.map(node, path, &["max", "per"], &["max", "per"])?;
        let max = f
            .get("max")
            .and_then(|n| self.int_in(n, &join(path, "max"), 1, 10_000))
            .and_then(|i| u32::try_from(i).ok());
        let per = f.get("per").and_then(|n| {
            let d = self.duration(n, &join(path, "per"))?;
            if d.as_secs() < 1 || d.as_secs() > 86_400 {
                self.err(n.pos, &join(path, "per"), "must be between 1s and 1d");
                return None;
            }
            Some(d)
        });
        Some(RateLimit {
            max: max?,
            per: per?,
        })
    }

    fn justification(&mut self, node: &Node, path: &str) -> Option<JustificationSpec> {
        let fields = ["ticketPattern", "minReasonLength"];
        let f = self.map(node, path, &fields, &fields)?;
        let ticket = f
            .get("ticketPattern")
            .and_then(|n| self.pattern(n, &join(path, "ticketPattern")));
        let min = f
            .get("minReasonLength")
            .and_then(|n| self.int_in(n, &join(path, "minReasonLength"), 1, 1_000))
            .and_then(|i| u32::try_from(i).ok());
        Some(JustificationSpec {
            ticket_pattern: ticket?.source,
            min_reason_length: min?,
        })
    }

    /// One parameter, checked against the handler's declaration of it.
    fn param(
        &mut self,
        h: &'static Handler,
        name: &str,
        name_pos: Pos,
        node: &Node,
        path: &str,
    ) -> Option<(ParamSpec, Check)> {
        let Some(hp) = h.param(name) else {
            let declared: Vec<&str> = h.params.iter().map(|p| p.name).collect();
            self.err(
                name_pos,
                path,
                format!(
                    "handler {} has no parameter {:?} (it declares: {}); a policy cannot add parameters",
                    h.id,
                    name.chars().take(64).collect::<String>(),
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                ),
            );
            return None;
        };
        // Read `type` first: it decides which other fields exist.
        let NodeKind::Map(entries) = &node.kind else {
            self.err(
                node.pos,
                path,
                format!(
                    "expected a mapping with a `type`, found {}",
                    node.describe()
                ),
            );
            return None;
        };
        let type_node = entries
            .iter()
            .find(|(k, _)| k.name == "type")
            .map(|(_, v)| v);
        let Some(type_node) = type_node else {
            self.err(node.pos, path, "missing field \"type\"");
            return None;
        };
        let ty_name = self.string(type_node, &join(path, "type"))?;
        let extra: &[&str] = match ty_name.as_str() {
            "string" => &["pattern", "maxLength", "allowNonAscii"],
            "integer" | "duration" => &["min", "max"],
            "enum" => &["values"],
            "boolean" => &[],
            other => {
                self.err(
                    type_node.pos,
                    &join(path, "type"),
                    format!(
                        "{:?} is not a parameter type; the types are string, integer, boolean, duration, enum",
                        other.chars().take(64).collect::<String>()
                    ),
                );
                return None;
            }
        };
        let mut allowed = vec!["type", "description", "required"];
        allowed.extend_from_slice(extra);
        let required_fields: &[&str] = if ty_name == "enum" { &["values"] } else { &[] };
        let f = self.map(node, path, &allowed, required_fields)?;
        let description = match f.get("description") {
            Some(n) => self.text(n, &join(path, "description"))?,
            None => String::new(),
        };
        let required = match f.get("required") {
            Some(n) => self.bool(n, &join(path, "required"))?,
            None => true,
        };
        if hp.required && !required {
            self.err(
                f.get("required").map_or(node.pos, |n| n.pos),
                &join(path, "required"),
                format!("handler {} needs {name:?}; it cannot be optional", h.id),
            );
            return None;
        }
        let widens = |what: String| format!("{what}: that widens handler {}'s grant", h.id);

        let (ty, check) = match (ty_name.as_str(), hp.ty) {
            (
                "string",
                HandlerParamType::String {
                    pattern: h_pattern,
                    max_length: h_max,
                },
            ) => {
                let max_length = match f.get("maxLength") {
                    Some(n) => {
                        let m = self.int(n, &join(path, "maxLength"))?;
                        if m < 1 {
                            self.err(n.pos, &join(path, "maxLength"), "must be at least 1");
                            return None;
                        }
                        if m > i64::from(h_max) {
                            self.err(
                                n.pos,
                                &join(path, "maxLength"),
                                widens(format!("maxLength {m} is above the handler's {h_max}")),
                            );
                            return None;
                        }
                        u32::try_from(m).ok()?
                    }
                    None => h_max,
                };
                if let Some(n) = f.get("allowNonAscii") {
                    if self.bool(n, &join(path, "allowNonAscii"))? {
                        self.err(
                            n.pos,
                            &join(path, "allowNonAscii"),
                            widens("allowNonAscii: the handler accepts ASCII only".into()),
                        );
                        return None;
                    }
                }
                let handler_pattern = self.pattern_of(h_pattern)?;
                let mut patterns = vec![handler_pattern];
                let mut pattern_source = None;
                if let Some(n) = f.get("pattern") {
                    let p = self.pattern(n, &join(path, "pattern"))?;
                    pattern_source = Some(p.source.clone());
                    patterns.push(p);
                }
                (
                    ParamType::String {
                        pattern: pattern_source,
                        max_length,
                        allow_non_ascii: false,
                    },
                    Check::String {
                        max_length: max_length as usize,
                        allow_non_ascii: false,
                        patterns,
                    },
                )
            }
            ("enum", widest) => {
                let n = f.get("values")?;
                let values = self.enum_values(n, &join(path, "values"))?;
                // Every value must be one the handler accepts.
                for v in &values {
                    let ok = match widest {
                        HandlerParamType::Enum(allowed) => allowed.contains(&v.as_str()),
                        HandlerParamType::String {
                            pattern,
                            max_length,
                        } => {
                            let p = self.pattern_of(pattern)?;
                            check_string(
                                name,
                                v,
                                max_length as usize,
                                false,
                                std::slice::from_ref(&p),
                            )
                            .is_ok()
                        }
                        _ => {
                            self.err(
                                type_node.pos,
                                &join(path, "type"),
                                format!(
                                    "handler {} takes {name:?} as {}, not enum",
                                    h.id,
                                    hp.widest().name()
                                ),
                            );
                            return None;
                        }
                    };
                    if !ok {
                        self.err(
                            n.pos,
                            &join(path, "values"),
                            widens(format!("value {v:?} is not one the handler accepts")),
                        );
                        return None;
                    }
                }
                (
                    ParamType::Enum {
                        values: values.clone(),
                    },
                    Check::Enum(values),
                )
            }
            (
                "integer",
                HandlerParamType::Integer {
                    min: h_min,
                    max: h_max,
                },
            ) => {
                let min = match f.get("min") {
                    Some(n) => self.int(n, &join(path, "min"))?,
                    None => h_min,
                };
                let max = match f.get("max") {
                    Some(n) => self.int(n, &join(path, "max"))?,
                    None => h_max,
                };
                if min < h_min || max > h_max {
                    let at = if min < h_min { "min" } else { "max" };
                    let pos = f.get(at).map_or(node.pos, |n| n.pos);
                    self.err(
                        pos,
                        &join(path, at),
                        widens(format!(
                            "range {min}..={max} is not within the handler's {h_min}..={h_max}"
                        )),
                    );
                    return None;
                }
                if min > max {
                    self.err(node.pos, path, format!("min {min} is above max {max}"));
                    return None;
                }
                (ParamType::Integer { min, max }, Check::Integer { min, max })
            }
            ("duration", HandlerParamType::Duration { min_secs, max_secs }) => {
                let (h_min, h_max) = (Duration::from_secs(min_secs), Duration::from_secs(max_secs));
                let min = match f.get("min") {
                    Some(n) => self.duration(n, &join(path, "min"))?,
                    None => h_min,
                };
                let max = match f.get("max") {
                    Some(n) => self.duration(n, &join(path, "max"))?,
                    None => h_max,
                };
                if min < h_min || max > h_max {
                    let at = if min < h_min { "min" } else { "max" };
                    let pos = f.get(at).map_or(node.pos, |n| n.pos);
                    self.err(
                        pos,
                        &join(path, at),
                        widens(format!(
                            "range {min}..={max} is not within the handler's {h_min}..={h_max}"
                        )),
                    );
                    return None;
                }
                if min > max {
                    self.err(node.pos, path, format!("min {min} is above max {max}"));
                    return None;
                }
                (
                    ParamType::Duration { min, max },
                    Check::Duration { min, max },
                )
            }
            ("boolean", HandlerParamType::Boolean) => (ParamType::Boolean, Check::Boolean),
            (other, _) => {
                self.err(
                    type_node.pos,
                    &join(path, "type"),
                    format!(
                        "handler {} takes {name:?} as {}, not {other}",
                        h.id,
                        hp.widest().name()
                    ),
                );
                return None;
            }
        };
        Some((
            ParamSpec {
                description,
                required,
                ty,
            },
            check,
        ))
    }

    fn enum_values(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.err(
                node.pos,
                path,
                format!("expected a sequence of strings, found {}", node.describe()),
            );
            return None;
        };
        if items.is_empty() || items.len() > MAX_ENUM_VALUES {
            self.err(
                node.pos,
                path,
                format!("must list 1 to {MAX_ENUM_VALUES} values"),
            );
            return None;
        }
        let mut values: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let v = self.string(item, path)?;
            let bad = v.is_empty()
                || v.len() > ENUM_VALUE_MAX
                || v.starts_with('-')
                || !v.bytes().all(|b| b.is_ascii_graphic());
            if bad {
                self.err(
                    item.pos,
                    path,
                    format!(
                        "enum value {:?} must be 1 to {ENUM_VALUE_MAX} printable ASCII characters, without spaces and not starting with '-'",
                        v.chars().take(64).collect::<String>()
                    ),
                );
                return None;
            }
            if values.contains(&v) {
                self.err(item.pos, path, format!("enum value {v:?} is listed twice"));
                return None;
            }
            values.push(v);
        }
        Some(values)
    }
}

fn shown_node(node: &Node) -> String {
    match &node.kind {
        NodeKind::Scalar { text, plain } if !node.is_null() => {
            let t: String = text.chars().take(64).collect();
            if *plain {
                format!("{t:?}")
            } else {
                format!("the quoted string {t:?}")
            }
        }
        _ => node.describe().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../../deploy/policy/default.yaml");
    const SCHEMA: &str = include_str!("../../../deploy/policy/policy.schema.json");

    #[test]
    fn default_policy_lints_and_covers_the_catalogue() {
        let policy = match lint(DEFAULT) {
            Ok(p) => p,
            Err(e) => panic!("{e:#?}"),
        };
        for h in catalogue::HANDLERS {
            let a = policy
                .action_named(h.id)
                .unwrap_or_else(|| panic!("{} missing", h.id));
            assert_eq!(a.handler, h.id);
            if a.risk == Risk::Disruptive {
                assert_eq!(a.role, "senior-operator", "{}", h.id);
            }
        }
        assert_eq!(policy.version(), 1);
        assert_eq!(
            policy.digest(),
            palisade_core::Sha256Digest::of(policy.canonical_json())
        );
    }

    #[test]
    fn default_policy_validates_against_its_json_schema() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
        let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
        let doc = yaml_to_json(DEFAULT).expect("yaml");
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // The parsed policy (defaults filled in) has the same shape.
        let policy = lint(DEFAULT).expect("lints");
        let canonical: serde_json::Value =
            serde_json::from_slice(policy.canonical_json()).expect("canonical is JSON");
        let errors: Vec<String> = validator
            .iter_errors(&canonical)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // And the schema does refuse an unknown field.
        let bad =
            yaml_to_json(&DEFAULT.replace("metadata:\n", "metadata:\n  owner: x\n")).expect("yaml");
        assert!(!validator.is_valid(&bad));
    }

    #[test]
    fn errors_have_positions_and_are_all_reported() {
        let text = "apiVersion: palisade.dev/v1\nkind: ActionPolicy\nmetadata: {version: 0}\nactions:\n  - name: etcd.status\n    handler: etcd.nope\n    colour: blue\n";
        let errors = lint(text).expect_err("bad");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("3:") && e.contains("metadata.version")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("6:14: actions[0].handler: unknown handler")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("7:5: actions[0].colour: unknown field")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.contains("missing field \"description\"")),
            "{shown:#?}"
        );
        let mut sorted = errors.clone();
        sorted.sort_by_key(|e| (e.line, e.column));
        assert_eq!(sorted, errors);
    }

    #[test]
    fn anchors_cannot_escape_the_wrapper() {
        assert!(compile_pattern("a)|(?:b").is_err());
        let re = compile_pattern("a|b").expect("alternation");
        assert!(re.is_match("a") && re.is_match("b") && !re.is_match("ab") && !re.is_match("a\n"));
        assert!(compile_pattern("(?m)a$").expect("flags").is_match("a"));
        assert!(!compile_pattern("(?m)a$").expect("flags").is_match("a\nb"));
    }
}
