//! The text layer of a unit file: sections, `Key=Value` entries, comments and line continuations,
//! with no meaning attached to keys or values (systemd.syntax(7)).

use thiserror::Error;

/// One `Key=Value` assignment (after joining continuations), with the number of its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Line of the `[Name]` header.
    pub line: usize,
    pub name: String,
    pub entries: Vec<Entry>,
}

/// A line that is neither a comment, a section header nor an assignment.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("line {line}: {why}")]
pub struct SyntaxError {
    pub line: usize,
    pub why: String,
}

/// Splits unit-file text into sections. Total on any input: it never panics, so it can be fed
/// arbitrary bytes (after lossy UTF-8 decoding) by a fuzzer.
///
/// - Empty lines and lines starting with `#` or `;` are ignored.
/// - A line ending in an odd number of backslashes continues on the next line: the backslash
///   becomes a space. Comment lines inside a continuation are skipped; an empty line ends it.
/// - Whitespace around the key and the value is dropped.
/// - A section may appear more than once; its entries simply come later.
pub fn parse(text: &str) -> Result<Vec<Section>, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<Section> = Vec::new();
    // (first line number, text so far) of a logical line being continued
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = raw.trim();
        let (start, mut logical) = match pending.take() {
            Some((start, acc)) => {
                if trimmed.starts_with(['#', ';']) {
                    pending = Some((start, acc));
                    continue;
                }
                (start, acc + raw)
            }
            None => {
                if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
                    continue;
                }
                (number, raw.to_string())
            }
        };
        if ends_with_continuation(&logical) && !trimmed.is_empty() {
            logical.pop();
            logical.push(' ');
            pending = Some((start, logical));
            continue;
        }
        push_line(&mut sections, start, logical.trim())?;
    }
    // A backslash on the last line: keep what was collected.
    if let Some((start, logical)) = pending {
        let logical = logical.trim();
        if !logical.is_empty() {
            push_line(&mut sections, start, logical)?;
        }
    }
    Ok(sections)
}

/// An odd number of trailing backslashes: `\\` at the end is an escaped backslash, not a
/// continuation.
fn ends_with_continuation(s: &str) -> bool {
    let s = s.trim_end();
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

fn push_line(sections: &mut Vec<Section>, line: usize, text: &str) -> Result<(), SyntaxError> {
    let err = |why: String| SyntaxError { line, why };
    if let Some(rest) = text.strip_prefix('[') {
        let name = rest
            .strip_suffix(']')
            .ok_or_else(|| err(format!("section header {text:?} has no closing ]")))?;
        if name.is_empty() || name.contains(['[', ']']) || name.chars().any(char::is_control) {
            return Err(err(format!("invalid section header {text:?}")));
        }
        sections.push(Section {
            line,
            name: name.to_string(),
            entries: Vec::new(),
        });
        return Ok(());
    }
    let (key, value) = text.split_once('=').ok_or_else(|| {
        err(format!(
            "expected Key=Value or [Section], found {text:?}; comment lines start with # or ;"
        ))
    })?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(err(format!(
            "invalid key {key:?}; keys are letters, digits, - and _"
        )));
    }
    let section = sections.last_mut().ok_or_else(|| {
        err(format!(
            "{key}= appears before any [Section]; put it under [Unit], [Service] or [Install]"
        ))
    })?;
    section.entries.push(Entry {
        line,
        key: key.to_string(),
        value: value.trim().to_string(),
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(usize, String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.entries)
            .map(|e| (e.line, e.key, e.value))
            .collect()
    }

    #[test]
    fn sections_comments_and_whitespace() {
        let s = parse("\u{feff}# c\n; c\n\n[Unit]\n  Description = hi there  \n[Service]\r\nA=1\r\n[Unit]\nB=\n").unwrap();
        let names: Vec<_> = s.iter().map(|s| (s.line, s.name.as_str())).collect();
        assert_eq!(names, [(4, "Unit"), (6, "Service"), (8, "Unit")]);
        assert_eq!(s[0].entries[0].value, "hi there");
        assert_eq!(s[1].entries[0].value, "1");
        assert_eq!(s[2].entries[0].value, "");
    }

    #[test]
    fn continuations() {
        for (text, want) in [
            // backslash becomes a space, the next line is appended as it is
            ("[A]\nK=a \\\n  b\n", vec![(2, "K", "a    b")]),
            ("[A]\nK=a\\\nb\n", vec![(2, "K", "a b")]),
            // comment lines inside a continuation are skipped
            (
                "[A]\nK=a \\\n# x\n; y\n b\nL=2\n",
                vec![(2, "K", "a   b"), (6, "L", "2")],
            ),
            // an empty line ends it
            ("[A]\nK=a \\\n\nL=2\n", vec![(2, "K", "a"), (4, "L", "2")]),
            // an escaped backslash is not a continuation
            (
                "[A]\nK=a\\\\\nL=2\n",
                vec![(2, "K", "a\\\\"), (3, "L", "2")],
            ),
            ("[A]\nK=a\\\\\\\nb\n", vec![(2, "K", "a\\\\ b")]),
            // a backslash on the last line
            ("[A]\nK=a \\", vec![(2, "K", "a")]),
            ("[A]\nK=a \\\n# only a comment", vec![(2, "K", "a")]),
        ] {
            let got = entries(text);
            let got: Vec<(usize, &str, &str)> = got
                .iter()
                .map(|(l, k, v)| (*l, k.as_str(), v.as_str()))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn errors_carry_line_numbers() {
        for (text, line, needle) in [
            ("K=1\n", 1, "before any [Section]"),
            ("\n\n[Unit\n", 3, "closing ]"),
            ("[]\n", 1, "invalid section header"),
            ("[A]\nK=a \\\n b\nno equals\n", 4, "expected Key=Value"),
            ("[A]\n=x\n", 2, "invalid key"),
            ("[A]\nbad key=x\n", 2, "invalid key"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.why.contains(needle), "{text:?}: {e}");
        }
    }
}
