//! A YAML tree that remembers where every node came from.
//!
//! The cloud-config validator needs a line and column for every key (unknown-key warnings) and
//! every value (type errors). serde-based decoding only reports the first error and loses the
//! positions of keys it ignores, so the document is read once into this small tree from the
//! event stream of `granit_parser` (the YAML parser underneath serde-saphyr) and everything else
//! — normalisation, validation, the typed model — walks the tree. Aliases are expanded here with
//! a node budget so a hostile document cannot blow up memory; `<<` merge keys are applied as
//! go-yaml (which coreos-cloudinit used) applied them.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError};
use std::collections::HashMap;

/// Most nodes a document may have after aliases are expanded. Real cloud-configs have a few
/// hundred; the budget only exists to stop "billion laughs" documents.
pub const NODE_BUDGET: usize = 200_000;

/// Deepest nesting accepted; deeper documents are refused instead of risking the stack.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `plain` is false for quoted and block scalars: only plain scalars resolve to null,
    /// booleans or numbers. `binary` marks a `!!binary` scalar, whose text is base64 that
    /// go-yaml decoded before coreos-cloudinit saw it.
    Scalar {
        value: String,
        plain: bool,
        binary: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Plain `~`, `null` and the empty scalar: a key written without a value.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true, .. }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The YAML 1.1 boolean spellings go-yaml accepted (`yes`, `on`, `true`, ...), plain only.
    pub fn as_bool(&self) -> Option<bool> {
        let Kind::Scalar {
            value, plain: true, ..
        } = &self.kind
        else {
            return None;
        };
        match value.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                Some(true)
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => Some(false),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// What the node is, for "want X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing",
            Kind::Scalar { .. } if self.as_bool().is_some() => "a boolean",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax problem, positioned like a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SyntaxError {
    fn at(line: usize, column: usize, message: impl Into<String>) -> Self {
        SyntaxError {
            line,
            column,
            message: message.into(),
        }
    }

    fn scan(e: &ScanError) -> Self {
        let m = e.marker();
        SyntaxError::at(m.line().max(1), m.col() + 1, e.info())
    }
}

enum Frame {
    Seq {
        start: (usize, usize),
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: (usize, usize),
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Reads the first (and only) document of `text`. `Ok(None)` means the stream holds no
/// document at all (only comments), which is how an empty `#cloud-config` reads.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut budget = NODE_BUDGET;
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Err(e)) => return Err(SyntaxError::scan(&e)),
            Some(Ok(ev)) => ev,
        };
        let pos = (span.start.line().max(1), span.start.col() + 1);
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::DocumentEnd => None,
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError::at(
                        pos.0,
                        pos.1,
                        "a second YAML document starts here; a cloud-config is a single document",
                    ));
                }
                None
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(SyntaxError::at(pos.0, pos.1, "alias to an unknown anchor"));
                };
                spend(&mut budget, *size, pos)?;
                Some((node.clone(), 0))
            }
            Event::Scalar(value, style, anchor, tag) => {
                spend(&mut budget, 1, pos)?;
                // `!!binary` is outside the core schema, so compare the resolved parts.
                let binary = tag
                    .is_some_and(|t| t.handle() == "tag:yaml.org,2002:" && t.suffix() == "binary");
                let node = Node {
                    line: pos.0,
                    column: pos.1,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain && !binary,
                        binary,
                    },
                };
                Some((node, anchor))
            }
            Event::SequenceStart(_, anchor, _) => {
                spend(&mut budget, 1, pos)?;
                depth_ok(stack.len(), pos)?;
                stack.push(Frame::Seq {
                    start: pos,
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(_, anchor, _) => {
                spend(&mut budget, 1, pos)?;
                depth_ok(stack.len(), pos)?;
                stack.push(Frame::Map {
                    start: pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) => Some((
                    Node {
                        line: start.0,
                        column: start.1,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                )),
                _ => return Err(SyntaxError::at(pos.0, pos.1, "unbalanced sequence end")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    ..
                }) => Some((
                    Node {
                        line: start.0,
                        column: start.1,
                        kind: Kind::Map(merge_keys(entries)),
                    },
                    anchor,
                )),
                _ => return Err(SyntaxError::at(pos.0, pos.1, "unbalanced mapping end")),
            },
            // Anchor metadata, comments and unresolved aliases are not requested from the parser.
            _ => None,
        };
        let Some((node, anchor)) = finished else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), size_of(&node)));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.kind, Kind::Scalar { .. }) {
                        return Err(SyntaxError::at(
                            node.line,
                            node.column,
                            "mapping keys must be plain words, not lists or mappings",
                        ));
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(root)
}

fn spend(budget: &mut usize, n: usize, pos: (usize, usize)) -> Result<(), SyntaxError> {
    if n > *budget {
        return Err(SyntaxError::at(
            pos.0,
            pos.1,
            format!("document too large: more than {NODE_BUDGET} nodes once aliases are expanded"),
        ));
    }
    *budget -= n;
    Ok(())
}

fn depth_ok(depth: usize, pos: (usize, usize)) -> Result<(), SyntaxError> {
    if depth >= MAX_DEPTH {
        return Err(SyntaxError::at(
            pos.0,
            pos.1,
            format!("document nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(())
}

fn size_of(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(size_of).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size_of(k) + size_of(v))
                .sum::<usize>()
        }
    }
}

/// Applies `<<: *base` (or a list of them): merged keys fill in what the mapping does not set
/// itself, earlier merge sources winning over later ones, as in YAML 1.1.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge =
        |k: &Node| matches!(&k.kind, Kind::Scalar { value, plain: true, .. } if value == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let mut own = Vec::new();
    let mut sources = Vec::new();
    for (k, v) in entries {
        if is_merge(&k) {
            match v.kind {
                Kind::Map(m) => sources.push(m),
                Kind::Seq(items) => {
                    for item in items {
                        if let Kind::Map(m) = item.kind {
                            sources.push(m);
                        }
                    }
                }
                // Not mergeable: keep it so the validator reports the odd key.
                _ => own.push((k, v)),
            }
        } else {
            own.push((k, v));
        }
    }
    for source in sources {
        for (k, v) in source {
            let present = own.iter().any(|(ok, _)| ok.as_scalar() == k.as_scalar());
            if !present {
                own.push((k, v));
            }
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.kind {
            Kind::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based_and_point_at_keys_and_values() {
        let root = parse("#cloud-config\nhostname: box\ncoreos:\n  units: []\n")
            .expect("parses")
            .expect("a document");
        let m = map(&root);
        assert_eq!((m[0].0.line, m[0].0.column), (2, 1));
        assert_eq!((m[0].1.line, m[0].1.column), (2, 11));
        let inner = map(&m[1].1);
        assert_eq!((inner[0].0.line, inner[0].0.column), (4, 3));
    }

    #[test]
    fn comments_only_is_no_document() {
        assert_eq!(parse("#cloud-config\n# nothing\n").expect("parses"), None);
        assert_eq!(parse("").expect("parses"), None);
    }

    #[test]
    fn scalar_styles_decide_plainness() {
        let root = parse("a: yes\nb: 'yes'\nc: |\n  x\n")
            .expect("ok")
            .expect("doc");
        let m = map(&root);
        assert_eq!(m[0].1.as_bool(), Some(true));
        assert_eq!(m[1].1.as_bool(), None);
        assert_eq!(m[2].1.as_scalar(), Some("x\n"));
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let e = parse("a: [1, 2\nb: c\n").expect_err("unterminated flow sequence");
        assert!(e.line >= 1 && e.column >= 1, "{e:?}");
        let e = parse("a: b\n  c: d\n").expect_err("bad indentation");
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn aliases_expand_and_merge_keys_fill_in() {
        let root = parse("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
            .expect("ok")
            .expect("doc");
        let used = map(&map(&root)[1].1);
        let pairs: Vec<(&str, &str)> = used
            .iter()
            .map(|(k, v)| (k.as_scalar().unwrap_or(""), v.as_scalar().unwrap_or("")))
            .collect();
        assert_eq!(pairs, vec![("y", "3"), ("x", "1")]);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse(&doc).expect_err("too large");
        assert!(e.message.contains("too large"), "{e:?}");
    }

    #[test]
    fn second_document_is_refused() {
        let e = parse("a: 1\n---\nb: 2\n").expect_err("two docs");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&doc).is_err());
    }
}
