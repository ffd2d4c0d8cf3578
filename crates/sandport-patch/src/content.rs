//! Byte-level text operations: line endings, literal search, conditions and
//! the content-changing operations.

use crate::manifest::{Alternative, Anchor, Condition, Position};

/// Line-ending convention of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eol {
    /// LF, mixed, or no line ending at all: matched byte for byte.
    AsIs,
    /// Every `\n` is preceded by `\r`: matched in LF form, written back as CRLF.
    Crlf,
}

/// Detect whether a file uses CRLF for every line.
pub fn detect_eol(bytes: &[u8]) -> Eol {
    let mut saw = false;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            if i == 0 || bytes[i - 1] != b'\r' {
                return Eol::AsIs;
            }
            saw = true;
        }
    }
    if saw {
        Eol::Crlf
    } else {
        Eol::AsIs
    }
}

/// The form operations see.
pub fn to_logical(bytes: &[u8], eol: Eol) -> Vec<u8> {
    match eol {
        Eol::AsIs => bytes.to_vec(),
        Eol::Crlf => {
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    out.push(b'\n');
                    i += 2;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            out
        }
    }
}

/// Back from the logical form to the file's own line endings.
pub fn from_logical(bytes: &[u8], eol: Eol) -> Vec<u8> {
    match eol {
        Eol::AsIs => bytes.to_vec(),
        Eol::Crlf => {
            let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
            for b in bytes {
                if *b == b'\n' {
                    out.push(b'\r');
                }
                out.push(*b);
            }
            out
        }
    }
}

/// Start offsets of the non-overlapping occurrences of `needle`.
pub fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if needle.is_empty() || needle.len() > hay.len() {
        return out;
    }
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            out.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Show a manifest text in a message: lossy UTF-8, escaped, shortened.
pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut e = format!("{s:?}");
    if e.chars().count() > 120 {
        e = e.chars().take(117).collect::<String>() + "...";
    }
    e
}

/// Evaluate a condition on logical content. `Err` names the first unmet part.
pub fn check_condition(cond: &Condition, text: &[u8]) -> Result<(), String> {
    for c in &cond.contains {
        if find_all(text, c).is_empty() {
            return Err(format!("does not contain {}", show(c)));
        }
    }
    for l in &cond.lacks {
        if !find_all(text, l).is_empty() {
            return Err(format!("contains {}", show(l)));
        }
    }
    for r in &cond.regex {
        if !r.regex.is_match(text) {
            return Err(format!("does not match regex {:?}", r.source));
        }
    }
    for r in &cond.lacks_regex {
        if r.regex.is_match(text) {
            return Err(format!("matches regex {:?}", r.source));
        }
    }
    Ok(())
}

fn count_err(what: &str, found: usize, expected: usize) -> String {
    format!("{what} found {found} times, expected exactly {expected}")
}

/// Literal replace of every occurrence, which must number `expect`.
pub fn replace_literal(
    text: &[u8],
    find: &[u8],
    with: &[u8],
    expect: usize,
) -> Result<Vec<u8>, String> {
    let hits = find_all(text, find);
    if hits.len() != expect {
        return Err(count_err(
            &format!("text {}", show(find)),
            hits.len(),
            expect,
        ));
    }
    let mut out = Vec::with_capacity(text.len() + hits.len() * with.len());
    let mut last = 0;
    for h in hits {
        out.extend_from_slice(&text[last..h]);
        out.extend_from_slice(with);
        last = h + find.len();
    }
    out.extend_from_slice(&text[last..]);
    Ok(out)
}

/// Regex replace: the first alternative with at least one match wins; its
/// match count must equal its `expect_matches`. Returns the new text and the
/// name of the alternative used.
pub fn replace_regex(text: &[u8], alts: &[Alternative]) -> Result<(Vec<u8>, String), String> {
    for alt in alts {
        let n = alt.pattern.regex.find_iter(text).count();
        if n == 0 {
            continue;
        }
        if n != alt.expect_matches {
            return Err(format!(
                "alternative {:?}: {}",
                alt.name,
                count_err("pattern", n, alt.expect_matches)
            ));
        }
        let out = alt
            .pattern
            .regex
            .replace_all(text, alt.replacement.as_slice())
            .into_owned();
        return Ok((out, alt.name.clone()));
    }
    let names: Vec<&str> = alts.iter().map(|a| a.name.as_str()).collect();
    Err(format!(
        "no alternative matched (tried: {})",
        names.join(", ")
    ))
}

/// Insert `ins` before/after each anchor match, which must number `expect`.
pub fn insert(
    text: &[u8],
    anchor: &Anchor,
    position: Position,
    ins: &[u8],
    expect: usize,
) -> Result<Vec<u8>, String> {
    let (spans, what): (Vec<(usize, usize)>, String) = match anchor {
        Anchor::Literal(a) => (
            find_all(text, a)
                .into_iter()
                .map(|s| (s, s + a.len()))
                .collect(),
            format!("anchor {}", show(a)),
        ),
        Anchor::Regex(p) => (
            p.regex
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            format!("anchor regex {:?}", p.source),
        ),
    };
    if spans.len() != expect {
        return Err(count_err(&what, spans.len(), expect));
    }
    let mut out = Vec::with_capacity(text.len() + spans.len() * ins.len());
    let mut last = 0;
    for (s, e) in spans {
        let at = match position {
            Position::Before => s,
            Position::After => e,
        };
        out.extend_from_slice(&text[last..at]);
        out.extend_from_slice(ins);
        last = at;
    }
    out.extend_from_slice(&text[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_round_trip() {
        let f = b"a\r\nb\r\n\rc\r\n";
        assert_eq!(detect_eol(f), Eol::Crlf);
        let l = to_logical(f, Eol::Crlf);
        assert_eq!(l, b"a\nb\n\rc\n");
        assert_eq!(from_logical(&l, Eol::Crlf), f);
        assert_eq!(detect_eol(b"a\r\nb\n"), Eol::AsIs);
        assert_eq!(detect_eol(b"\n"), Eol::AsIs);
        assert_eq!(detect_eol(b"no newline"), Eol::AsIs);
    }

    #[test]
    fn find_all_non_overlapping() {
        assert_eq!(find_all(b"aaaa", b"aa"), vec![0, 2]);
        assert_eq!(find_all(b"abc", b"abcd"), Vec::<usize>::new());
    }

    #[test]
    fn insert_before_and_after() {
        let a = Anchor::Literal(b"X".to_vec());
        assert_eq!(
            insert(b"1X2", &a, Position::Before, b"<", 1).expect("ok"),
            b"1<X2"
        );
        assert_eq!(
            insert(b"1X2", &a, Position::After, b">", 1).expect("ok"),
            b"1X>2"
        );
        assert!(insert(b"XX", &a, Position::After, b">", 1).is_err());
    }
}
