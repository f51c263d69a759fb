//! The YAML subset a rota is written in, read into a tree that keeps the line and
//! column of every node (the approach crates/policy takes for policy files).
//!
//! A rota decides who may touch production, so what a reviewer reads must be what is
//! enforced: duplicated keys, anchors, aliases, merge keys, tags and more than one
//! document are refused. Scalars keep their text; the field reading them decides the
//! type, so `no` or `09:00` are never reinterpreted.

use saphyr_parser::{Event, Parser, Span};

/// A rota nests four levels deep; allow some slack.
const MAX_DEPTH: usize = 8;

/// A position in the text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    Scalar(String),
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

fn fail<T>(pos: Pos, message: impl Into<String>) -> Result<T, YamlError> {
    Err(YamlError {
        pos,
        message: message.into(),
    })
}

/// Parses one YAML document into a [`Node`] tree, stopping at the first problem.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(ok) => ok,
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    line: m.line(),
                    column: m.col() + 1,
                };
                return fail(pos, format!("YAML syntax error: {}", e.info()));
            }
        };
        let pos = Pos::of(&span);
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return fail(pos, "a rota file holds exactly one YAML document");
                }
                continue;
            }
            Event::Alias(_) => {
                return fail(pos, "YAML aliases (`*name`) are not allowed in a rota: write every schedule out in full");
            }
            Event::Scalar(value, _, anchor, tag) => {
                refuse_anchor_and_tag(pos, anchor, tag.is_some())?;
                Node {
                    pos,
                    kind: NodeKind::Scalar(value.into_owned()),
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
                    return fail(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
                }
                if let Some(Frame::Map {
                    pending_key: None, ..
                }) = stack.last()
                {
                    return fail(pos, "mapping keys must be plain scalars");
                }
                stack.push(if matches!(event, Event::MappingStart(..)) {
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
                None => return fail(pos, "unbalanced YAML structure"),
            },
        };
        // Attach the finished node to its parent, or make it the document.
        match stack.last_mut() {
            None => {
                if root.is_some() {
                    return fail(pos, "more than one YAML document");
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
                    let NodeKind::Scalar(name) = node.kind else {
                        return fail(node.pos, "mapping keys must be plain scalars");
                    };
                    if name == "<<" {
                        return fail(node.pos, "YAML merge keys (`<<`) are not allowed in a rota");
                    }
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        return fail(
                            node.pos,
                            format!(
                                "duplicated key {name:?} (first at line {}); YAML readers disagree on which one wins",
                                first.pos.line
                            ),
                        );
                    }
                    *pending_key = Some(Key {
                        pos: node.pos,
                        name,
                    });
                }
            },
        }
    }
    match root {
        Some(root) => Ok(root),
        None => fail(Pos { line: 1, column: 1 }, "the rota file is empty"),
    }
}

fn refuse_anchor_and_tag(pos: Pos, anchor: usize, tagged: bool) -> Result<(), YamlError> {
    if anchor != 0 {
        return fail(pos, "YAML anchors (`&name`) are not allowed in a rota");
    }
    if tagged {
        return fail(
            pos,
            "YAML tags (`!!type`, `!name`) are not allowed in a rota",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions() {
        let node = parse("a:\n  b: x\n  c: [1, two]\n").expect("valid");
        let NodeKind::Map(top) = node.kind else {
            panic!("map")
        };
        let (_, inner) = &top[0];
        let NodeKind::Map(entries) = &inner.kind else {
            panic!("map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 2, column: 3 });
        assert_eq!(entries[1].1.pos.line, 3);
    }

    #[test]
    fn refuses_duplicates_anchors_aliases_tags_and_documents() {
        for (text, needle) in [
            ("a: 1\na: 2\n", "duplicated key"),
            ("a: &x 1\nb: *x\n", "anchors"),
            ("a: !!str 1\n", "tags"),
            ("a: 1\n---\nb: 2\n", "exactly one"),
            ("", "empty"),
            ("a: [1\n", "syntax"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.message.contains(needle), "{text:?}: {}", err.message);
        }
    }
}
