//! The patch manifest parser (TOML, format 1). Input: the manifest text.
//!
//! Invariants: a parsed manifest has unique, well-formed ids and strictly increasing numbers;
//! every patch has at least one target and every target is a plain relative path (no `..`,
//! no `.`, not absolute), so no patch can write outside the tree it is applied to.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use sandport_patch::manifest::{self, Manifest, Operation};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `add_file.source` is read relative to the base: a directory that does not exist.
    let base = Path::new("/nonexistent/sandport-fuzz");
    for line in text.lines().take(4) {
        if let Ok(path) = manifest::relative_path(line, "fuzz") {
            assert_plain(&path);
        }
    }
    let Ok(manifest) = Manifest::parse(text, Path::new("fuzz.toml"), base) else {
        return;
    };
    let mut ids = std::collections::HashSet::new();
    let mut last = None;
    for patch in &manifest.patches {
        assert!(ids.insert(patch.id.clone()), "duplicate id {}", patch.id);
        let mut chars = patch.id.chars();
        assert!(chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert!(chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c)));
        if let Some(last) = last {
            assert!(patch.number > last);
        }
        last = Some(patch.number);
        assert!(!patch.targets.is_empty());
        for target in &patch.targets {
            assert_plain(target);
        }
        match &patch.op {
            Operation::Replace { expect_matches, .. }
            | Operation::Insert { expect_matches, .. } => {
                assert!(*expect_matches >= 1)
            }
            Operation::Regex { alternatives } => {
                assert!(alternatives.iter().all(|a| a.expect_matches >= 1))
            }
            Operation::AddFile { .. } | Operation::Require(_) => {}
        }
    }
});

fn assert_plain(path: &Path) {
    assert!(!path.as_os_str().is_empty());
    assert!(path.is_relative(), "{path:?}");
    assert!(
        path.components().all(|c| matches!(c, Component::Normal(_))),
        "{path:?}"
    );
}
