//! Manifest parsing and validation. The format is documented in `MANIFEST.md`.

use std::path::{Component, Path, PathBuf};

use regex::bytes::Regex;
use serde::Deserialize;

/// Errors found while loading a manifest. Any of them stops the run before
/// anything is read from the tree.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest: {0}")]
    Read(#[source] std::io::Error),
    #[error("manifest {path}: invalid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

// ---------------------------------------------------------------------------
// Raw, deserialised form.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default, rename = "patch")]
    patches: Vec<RawPatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatch {
    number: u64,
    id: String,
    description: String,
    why: String,
    critical: bool,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    targets: Option<Vec<String>>,
    #[serde(default)]
    replace: Option<RawReplace>,
    #[serde(default)]
    regex: Option<RawRegex>,
    #[serde(default)]
    insert: Option<RawInsert>,
    #[serde(default)]
    add_file: Option<RawAddFile>,
    #[serde(default)]
    require: Option<RawCondition>,
    #[serde(default)]
    post: Option<RawCondition>,
    #[serde(default)]
    verify: Option<RawVerify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplace {
    find: String,
    with: String,
    #[serde(default)]
    expect_matches: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegex {
    #[serde(default)]
    expect_matches: Option<usize>,
    alternatives: Vec<RawAlternative>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlternative {
    name: String,
    pattern: String,
    replacement: String,
    #[serde(default)]
    expect_matches: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInsert {
    #[serde(default)]
    anchor: Option<String>,
    #[serde(default)]
    anchor_regex: Option<String>,
    position: Position,
    text: String,
    #[serde(default)]
    expect_matches: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddFile {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    mode: Option<u32>,
    #[serde(default)]
    create_dirs: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default)]
    contains: Vec<String>,
    #[serde(default)]
    lacks: Vec<String>,
    #[serde(default)]
    regex: Vec<String>,
    #[serde(default)]
    lacks_regex: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    command: RawCommand,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Argv(Vec<String>),
    Line(String),
}

// ---------------------------------------------------------------------------
// Validated form.

/// Where `insert` puts its text relative to the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Before,
    After,
}

/// A loaded, validated manifest.
#[derive(Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub description: Option<String>,
    pub upstream: Option<String>,
    pub patches: Vec<Patch>,
}

/// One numbered patch.
#[derive(Debug)]
pub struct Patch {
    pub number: u64,
    pub id: String,
    pub description: String,
    pub why: String,
    pub critical: bool,
    /// Relative, validated target paths (at least one).
    pub targets: Vec<PathBuf>,
    pub op: Operation,
    pub post: Option<Condition>,
    pub verify: Option<Verify>,
}

/// A compiled regex together with the source text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: Regex,
}

/// What a patch does to its target.
#[derive(Debug)]
pub enum Operation {
    Replace {
        find: Vec<u8>,
        with: Vec<u8>,
        expect_matches: usize,
    },
    Regex {
        alternatives: Vec<Alternative>,
    },
    Insert {
        anchor: Anchor,
        position: Position,
        text: Vec<u8>,
        expect_matches: usize,
    },
    AddFile {
        content: Vec<u8>,
        mode: Option<u32>,
        create_dirs: bool,
    },
    Require(Condition),
}

impl Operation {
    /// Short name used in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Replace { .. } => "replace",
            Operation::Regex { .. } => "regex",
            Operation::Insert { .. } => "insert",
            Operation::AddFile { .. } => "add_file",
            Operation::Require(_) => "require",
        }
    }
}

/// One named alternative of a regex replacement.
#[derive(Debug)]
pub struct Alternative {
    pub name: String,
    pub pattern: Pattern,
    pub replacement: Vec<u8>,
    pub expect_matches: usize,
}

/// The anchor of an insert.
#[derive(Debug)]
pub enum Anchor {
    Literal(Vec<u8>),
    Regex(Pattern),
}

/// A condition on a file's content (post-condition or requirement).
#[derive(Debug, Clone, Default)]
pub struct Condition {
    pub contains: Vec<Vec<u8>>,
    pub lacks: Vec<Vec<u8>>,
    pub regex: Vec<Pattern>,
    pub lacks_regex: Vec<Pattern>,
}

/// A verify command with its time limit.
#[derive(Debug, Clone)]
pub struct Verify {
    pub argv: Vec<String>,
    pub timeout_secs: u64,
}

/// Default time limit of a verify command.
pub const DEFAULT_VERIFY_TIMEOUT_SECS: u64 = 60;

impl Manifest {
    /// Read and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = fs_err::read_to_string(path).map_err(ManifestError::Read)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Manifest::parse(&text, path, base)
    }

    /// Parse manifest text. `path` is used in messages; `base` is the
    /// directory that `add_file.source` paths are relative to.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if raw.format != 1 {
            return Err(invalid(format!(
                "unsupported format {} (this engine reads format 1)",
                raw.format
            )));
        }
        let mut patches = Vec::with_capacity(raw.patches.len());
        let mut ids = std::collections::HashSet::new();
        let mut last_number: Option<u64> = None;
        for rp in raw.patches {
            let label = format!("patch #{} ({})", rp.number, rp.id);
            if !valid_id(&rp.id) {
                return Err(invalid(format!(
                    "{label}: id must match [a-z0-9][a-z0-9._-]*"
                )));
            }
            if !ids.insert(rp.id.clone()) {
                return Err(invalid(format!("{label}: duplicate id {:?}", rp.id)));
            }
            if let Some(last) = last_number {
                if rp.number <= last {
                    return Err(invalid(format!(
                        "{label}: numbers must be strictly increasing (previous was {last})"
                    )));
                }
            }
            last_number = Some(rp.number);
            let patch = convert_patch(rp, base).map_err(|m| invalid(format!("{label}: {m}")))?;
            patches.push(patch);
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            description: raw.description,
            upstream: raw.upstream,
            patches,
        })
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Manifest texts are read with `\n` line endings whatever the manifest
/// file itself uses.
fn text_bytes(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").into_bytes()
}

fn compile(source: &str, what: &str) -> Result<Pattern, String> {
    let source = source.replace("\r\n", "\n");
    let regex = Regex::new(&source).map_err(|e| format!("{what}: invalid regex: {e}"))?;
    Ok(Pattern { source, regex })
}

fn expect(n: Option<usize>, what: &str) -> Result<usize, String> {
    match n {
        None => Ok(1),
        Some(0) => Err(format!("{what}: expect_matches must be at least 1")),
        Some(n) => Ok(n),
    }
}

/// Validate a path that must stay inside a base directory: relative, and
/// made only of normal components.
pub fn relative_path(raw: &str, what: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err(format!("{what}: empty path"));
    }
    let p = Path::new(raw);
    if p.is_absolute() {
        return Err(format!("{what}: {raw:?} is absolute; paths are relative"));
    }
    if raw
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{what}: {raw:?} must not contain '..', '.' or empty components"
        ));
    }
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("{what}: {raw:?} is not a plain relative path"));
    }
    Ok(p.to_path_buf())
}

fn convert_condition(raw: RawCondition, what: &str) -> Result<Condition, String> {
    let cond = Condition {
        contains: raw.contains.iter().map(|s| text_bytes(s)).collect(),
        lacks: raw.lacks.iter().map(|s| text_bytes(s)).collect(),
        regex: raw
            .regex
            .iter()
            .map(|s| compile(s, &format!("{what}.regex")))
            .collect::<Result<_, _>>()?,
        lacks_regex: raw
            .lacks_regex
            .iter()
            .map(|s| compile(s, &format!("{what}.lacks_regex")))
            .collect::<Result<_, _>>()?,
    };
    if cond.contains.is_empty()
        && cond.lacks.is_empty()
        && cond.regex.is_empty()
        && cond.lacks_regex.is_empty()
    {
        return Err(format!("{what}: needs at least one entry"));
    }
    if cond
        .contains
        .iter()
        .chain(&cond.lacks)
        .any(|s| s.is_empty())
    {
        return Err(format!("{what}: empty strings are not allowed"));
    }
    Ok(cond)
}

fn convert_patch(rp: RawPatch, base: &Path) -> Result<Patch, String> {
    if rp.description.trim().is_empty() {
        return Err("description must not be empty".into());
    }
    if rp.why.trim().is_empty() {
        return Err("why must not be empty".into());
    }
    let raw_targets = match (rp.target, rp.targets) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) if !ts.is_empty() => ts,
        (None, Some(_)) => return Err("targets must not be empty".into()),
        (None, None) => return Err("needs target or targets".into()),
        (Some(_), Some(_)) => return Err("give either target or targets, not both".into()),
    };
    let mut targets = Vec::with_capacity(raw_targets.len());
    for t in &raw_targets {
        let p = relative_path(t, "target")?;
        if targets.contains(&p) {
            return Err(format!("target {t:?} listed twice"));
        }
        targets.push(p);
    }

    let given = [
        rp.replace.is_some(),
        rp.regex.is_some(),
        rp.insert.is_some(),
        rp.add_file.is_some(),
        rp.require.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(format!(
            "needs exactly one operation (replace, regex, insert, add_file, require), found {given}"
        ));
    }

    let op = if let Some(r) = rp.replace {
        if r.find.is_empty() {
            return Err("replace.find must not be empty".into());
        }
        Operation::Replace {
            find: text_bytes(&r.find),
            with: text_bytes(&r.with),
            expect_matches: expect(r.expect_matches, "replace")?,
        }
    } else if let Some(r) = rp.regex {
        if r.alternatives.is_empty() {
            return Err("regex needs at least one alternative".into());
        }
        let default = expect(r.expect_matches, "regex")?;
        let mut names = std::collections::HashSet::new();
        let mut alternatives = Vec::new();
        for a in r.alternatives {
            if a.name.trim().is_empty() {
                return Err("regex alternative without a name".into());
            }
            if !names.insert(a.name.clone()) {
                return Err(format!("regex alternative {:?} named twice", a.name));
            }
            let what = format!("regex alternative {:?}", a.name);
            alternatives.push(Alternative {
                pattern: compile(&a.pattern, &what)?,
                replacement: text_bytes(&a.replacement),
                expect_matches: match a.expect_matches {
                    None => default,
                    n => expect(n, &what)?,
                },
                name: a.name,
            });
        }
        Operation::Regex { alternatives }
    } else if let Some(i) = rp.insert {
        let anchor = match (i.anchor, i.anchor_regex) {
            (Some(a), None) if !a.is_empty() => Anchor::Literal(text_bytes(&a)),
            (Some(_), None) => return Err("insert.anchor must not be empty".into()),
            (None, Some(r)) => Anchor::Regex(compile(&r, "insert.anchor_regex")?),
            _ => return Err("insert needs exactly one of anchor and anchor_regex".into()),
        };
        if i.text.is_empty() {
            return Err("insert.text must not be empty".into());
        }
        Operation::Insert {
            anchor,
            position: i.position,
            text: text_bytes(&i.text),
            expect_matches: expect(i.expect_matches, "insert")?,
        }
    } else if let Some(a) = rp.add_file {
        let content = match (a.content, a.source) {
            (Some(c), None) => c.into_bytes(),
            (None, Some(src)) => {
                let rel = relative_path(&src, "add_file.source")?;
                let full = base.join(rel);
                fs_err::read(&full).map_err(|e| format!("add_file.source: {e}"))?
            }
            _ => return Err("add_file needs exactly one of content and source".into()),
        };
        if let Some(m) = a.mode {
            if m > 0o7777 {
                return Err(format!("add_file.mode {m:#o} is not a file mode"));
            }
        }
        Operation::AddFile {
            content,
            mode: a.mode,
            create_dirs: a.create_dirs,
        }
    } else if let Some(r) = rp.require {
        Operation::Require(convert_condition(r, "require")?)
    } else {
        return Err("needs an operation".into());
    };

    let post = match (rp.post, &op) {
        (Some(_), Operation::Require(_)) => {
            return Err("require is its own condition; post is not allowed".into())
        }
        (None, Operation::Replace { .. } | Operation::Regex { .. } | Operation::Insert { .. }) => {
            return Err(format!(
                "{} needs a post-condition ([patch.post]) that proves it is in place",
                op.kind()
            ))
        }
        (Some(p), _) => Some(convert_condition(p, "post")?),
        (None, _) => None,
    };

    let verify = match rp.verify {
        None => None,
        Some(v) => {
            let argv: Vec<String> = match v.command {
                RawCommand::Argv(a) => a,
                RawCommand::Line(l) => l.split_whitespace().map(str::to_owned).collect(),
            };
            if argv.is_empty() || argv[0].is_empty() {
                return Err("verify.command must not be empty".into());
            }
            let timeout_secs = v.timeout_secs.unwrap_or(DEFAULT_VERIFY_TIMEOUT_SECS);
            if timeout_secs == 0 {
                return Err("verify.timeout_secs must be at least 1".into());
            }
            Some(Verify { argv, timeout_secs })
        }
    };

    Ok(Patch {
        number: rp.number,
        id: rp.id,
        description: rp.description,
        why: rp.why,
        critical: rp.critical,
        targets,
        op,
        post,
        verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("m.toml"), Path::new("."))
    }

    const OK: &str = r#"
format = 1
[[patch]]
number = 1
id = "a"
description = "d"
why = "w"
critical = true
target = "x.py"
[patch.replace]
find = "a"
with = "b"
[patch.post]
contains = ["b"]
"#;

    #[test]
    fn parses_minimal() {
        let m = parse(OK).expect("valid");
        assert_eq!(m.patches.len(), 1);
        assert!(m.patches[0].critical);
    }

    #[test]
    fn rejects_misspelt_key() {
        let bad = OK.replace("critical = true", "critical = true\ncritcal = false");
        let err = parse(&bad).expect_err("unknown key");
        assert!(err.to_string().contains("critcal"), "{err}");
    }

    #[test]
    fn rejects_escaping_targets() {
        for t in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", ""] {
            let bad = OK.replace("\"x.py\"", &format!("{t:?}"));
            assert!(parse(&bad).is_err(), "{t} accepted");
        }
    }

    #[test]
    fn requires_post_for_replace() {
        let bad = OK.replace("[patch.post]\ncontains = [\"b\"]\n", "");
        let err = parse(&bad).expect_err("no post");
        assert!(err.to_string().contains("post-condition"), "{err}");
    }

    #[test]
    fn crlf_manifest_reads_as_lf() {
        let crlf = OK
            .replace("find = \"a\"", "find = \"\"\"\nline1\nline2\n\"\"\"")
            .replace('\n', "\r\n");
        let m = parse(&crlf).expect("valid");
        match &m.patches[0].op {
            Operation::Replace { find, .. } => assert_eq!(find, b"line1\nline2\n"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn numbers_strictly_increase() {
        let two = format!(
            "{OK}{}",
            OK.replace("format = 1", "")
                .replace("id = \"a\"", "id = \"b\"")
        );
        let err = parse(&two).expect_err("same number");
        assert!(err.to_string().contains("strictly increasing"), "{err}");
    }
}
