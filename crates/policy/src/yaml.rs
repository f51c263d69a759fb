//! The YAML subset a policy file is written in, read into a tree that keeps the line
//! and column of every node.
//!
//! Policy files are reviewed by people, so what they read must be what is enforced.
//! This reader therefore refuses the YAML features that make a document mean more
//! than it shows:
//! - duplicated mapping keys (most YAML libraries keep the last one silently);
//! - anchors, aliases and merge keys (`&a`, `*a`, `<<: *a`): a grant defined once and
//!   merged elsewhere is easy to widen unseen, and aliases allow exponential blow-up;
//! - tags (`!!str`, `!custom`), complex (non-scalar) keys, and more than one document.
//!
//! Scalars keep their text and whether they were quoted; their type is decided by the
//! field that reads them ([`crate::lint`]), never guessed (so `no`, `on` and `0x10`
//! are never silently booleans or numbers).

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// The deepest nesting a policy can need is five levels; allow some slack.
const MAX_DEPTH: usize = 16;

/// A position in the text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Scalar { text: String, plain: bool },
    Map(Vec<(Key, Node)>),
    Seq(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub pos: Pos,
    pub name: String,
}

impl Node {
    /// A plain `~`, `null`, `Null`, `NULL` or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "null",
            NodeKind::Scalar { plain: false, .. } => "a quoted string",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a sequence",
        }
    }
}

/// A problem in the YAML itself, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Map {
        pos: Pos,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
    },
    Seq {
        pos: Pos,
        items: Vec<Node>,
    },
}

/// Parses one YAML document into a [`Node`] tree. Errors stop at the first problem
/// in the YAML layer (a syntax error leaves nothing sensible to check further), except
/// duplicated keys, which are all reported.
pub fn parse(text: &str) -> Result<Node, Vec<YamlError>> {
    let mut errors = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let fail = |pos: Pos, message: String| vec![YamlError { pos, message }];

    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(ok) => ok,
            Err(e) => {
                let m = e.marker();
                return Err(fail(
                    Pos {
                        line: m.line(),
                        column: m.col() + 1,
                    },
                    format!("YAML syntax error: {}", e.info()),
                ));
            }
        };
        let pos = Pos::of(&span);
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail(
                        pos,
                        "a policy file holds exactly one YAML document".into(),
                    ));
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(fail(
                    pos,
                    "YAML aliases (`*name`) are not allowed in a policy: write every grant out in full".into(),
                ));
            }
            Event::Scalar(value, style, anchor, tag) => {
                refuse_anchor_and_tag(pos, anchor, tag.is_some())?;
                Node {
                    pos,
                    kind: NodeKind::Scalar {
                        text: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                }
            }
            Event::MappingStart(anchor, tag) | Event::SequenceStart(anchor, tag)
                if anchor != 0 || tag.is_some() =>
            {
                refuse_anchor_and_tag(pos, anchor, tag.is_some())?;
                continue;
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let map = matches!(event, Event::MappingStart(..));
                if let Some(Frame::Map {
                    pending_key: None, ..
                }) = stack.last()
                {
                    return Err(fail(
                        pos,
                        "mapping keys must be plain scalars, not mappings or sequences".into(),
                    ));
                }
                stack.push(if map {
                    Frame::Map {
                        pos,
                        entries: Vec::new(),
                        pending_key: None,
                    }
                } else {
                    Frame::Seq {
                        pos,
                        items: Vec::new(),
                    }
                });
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                Some(Frame::Map { pos, entries, .. }) => Node {
                    pos,
                    kind: NodeKind::Map(entries),
                },
                Some(Frame::Seq { pos, items }) => Node {
                    pos,
                    kind: NodeKind::Seq(items),
                },
                None => return Err(fail(pos, "unbalanced YAML structure".into())),
            },
        };
        // Attach the finished node to its parent (or make it the document).
        match stack.last_mut() {
            None => {
                if root.is_some() {
                    return Err(fail(pos, "more than one YAML document".into()));
                }
                root = Some(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let NodeKind::Scalar { text, .. } = node.kind else {
                        return Err(fail(node.pos, "mapping keys must be plain scalars".into()));
                    };
                    if text == "<<" {
                        errors.push(YamlError {
                            pos: node.pos,
                            message: "YAML merge keys (`<<`) are not allowed in a policy: a merged grant is easy to widen unseen".into(),
                        });
                    }
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == text) {
                        errors.push(YamlError {
                            pos: node.pos,
                            message: format!(
                                "duplicated key {text:?} (first at line {}); YAML readers disagree on which one wins, so a policy may not repeat a key",
                                first.pos.line
                            ),
                        });
                    }
                    *pending_key = Some(Key {
                        pos: node.pos,
                        name: text,
                    });
                }
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    root.ok_or_else(|| {
        fail(
            Pos { line: 1, column: 1 },
            "the policy file is empty".into(),
        )
    })
}

fn refuse_anchor_and_tag(pos: Pos, anchor: usize, tagged: bool) -> Result<(), Vec<YamlError>> {
    if anchor != 0 {
        return Err(vec![YamlError {
            pos,
            message:
                "YAML anchors (`&name`) are not allowed in a policy: write every grant out in full"
                    .into(),
        }]);
    }
    if tagged {
        return Err(vec![YamlError {
            pos,
            message: "YAML tags (`!!type`, `!name`) are not allowed in a policy".into(),
        }]);
    }
    Ok(())
}

/// The document as JSON (every scalar as a string except plain integers, `true`,
/// `false` and null), for checking a policy file against its JSON Schema.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        _ if node.is_null() => Value::Null,
        NodeKind::Scalar { text, plain } => {
            if *plain {
                if let Ok(i) = text.parse::<i64>() {
                    return Value::from(i);
                }
                if text == "true" || text == "false" {
                    return Value::Bool(text == "true");
                }
            }
            Value::String(text.clone())
        }
        NodeKind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        NodeKind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> Vec<YamlError> {
        parse(text).expect_err(text)
    }

    #[test]
    fn keeps_positions_and_quoting() {
        let node = parse("a:\n  b: 'x'\n  c: [1, two]\n").expect("valid");
        let NodeKind::Map(entries) = &node.kind else {
            panic!("map")
        };
        let (key, value) = entries.first().expect("a");
        assert_eq!(key.pos, Pos { line: 1, column: 1 });
        let NodeKind::Map(inner) = &value.kind else {
            panic!("inner map")
        };
        let (bk, bv) = inner.first().expect("b");
        assert_eq!(bk.pos, Pos { line: 2, column: 3 });
        assert_eq!(
            bv.kind,
            NodeKind::Scalar {
                text: "x".into(),
                plain: false
            }
        );
    }

    #[test]
    fn refuses_duplicated_keys_with_both_lines() {
        let e = err("a: 1\nb: 2\na: 3\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pos, Pos { line: 3, column: 1 });
        assert!(e[0].message.contains("first at line 1"), "{:?}", e);
        // Quoting does not make a different key.
        assert!(!err("a: 1\n'a': 2\n").is_empty());
    }

    #[test]
    fn refuses_anchors_aliases_merges_tags_and_streams() {
        for (text, want) in [
            ("a: &x 1\nb: *x\n", "anchors"),
            ("a: !!str 1\n", "tags"),
            ("a: !custom 1\n", "tags"),
            ("base: {x: 1}\nb:\n  <<: {x: 2}\n", "merge keys"),
            ("a: 1\n---\nb: 2\n", "exactly one"),
            ("? [a]\n: 1\n", "plain scalars"),
            ("", "empty"),
            ("a: [\n", "syntax"),
        ] {
            let e = err(text);
            assert!(
                e.iter().any(|e| e.message.contains(want)),
                "{text:?}: {e:?}"
            );
        }
    }

    #[test]
    fn refuses_deep_nesting() {
        let text = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(err(&text)[0].message.contains("nesting"));
    }
}
