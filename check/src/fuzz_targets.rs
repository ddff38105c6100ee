//! The fuzz targets, read from the one list of them, `fuzz/targets.txt`
//! (compiled in): each target's name, its cargo-fuzz binary and its corpus
//! directory.
//!
//! ```
//! use sessionwire_check::corpus::Target;
//! use sessionwire_check::fuzz_targets;
//!
//! let body = fuzz_targets::find("http-body").unwrap();
//! assert_eq!((body.name, body.binary), ("http_body", "http_body"));
//! assert_eq!(body.check_target(), Some(Target::HttpBody));
//! // The session target's corpus is fuzz input, not something `check` runs.
//! assert_eq!(fuzz_targets::find("session").unwrap().check_target(), None);
//! ```

use crate::corpus::Target;

/// The list itself, as committed.
pub const LIST: &str = include_str!("../../fuzz/targets.txt");

/// One fuzz target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzTarget {
    /// The target's name (`fuzz/run.sh NAME`).
    pub name: &'static str,
    /// Its `[[bin]]` in fuzz/Cargo.toml, built from `fuzz_targets/<binary>.rs`.
    pub binary: &'static str,
    /// Its corpus directory under `corpus/`.
    pub corpus: &'static str,
}

impl FuzzTarget {
    /// The `check` target whose verdicts the fuzz target's corpus records,
    /// when `check` can run that corpus; `None` for a fuzz-only corpus.
    pub fn check_target(&self) -> Option<Target> {
        self.corpus.parse().ok()
    }
}

/// Every fuzz target, in list order. A line that does not have exactly three
/// words is skipped (a test keeps the list well formed).
pub fn all() -> impl Iterator<Item = FuzzTarget> {
    LIST.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some(name), Some(binary), Some(corpus), None) => Some(FuzzTarget {
                name,
                binary,
                corpus,
            }),
            _ => None,
        }
    })
}

/// The fuzz target with this name, binary or corpus directory.
pub fn find(word: &str) -> Option<FuzzTarget> {
    all().find(|t| t.name == word || t.binary == word || t.corpus == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_fuzz_target_list_is_a_target() {
        let lines = LIST
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(all().count(), lines, "a line without three words");
        assert!(lines > 0);
    }

    #[test]
    fn fuzz_target_names_binaries_and_corpora_are_unique() {
        let targets: Vec<_> = all().collect();
        for (i, a) in targets.iter().enumerate() {
            for b in &targets[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.binary, b.binary);
                assert_ne!(a.corpus, b.corpus);
            }
        }
    }
}
