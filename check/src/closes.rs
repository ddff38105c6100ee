//! The `# closes REASON` comments of scenario files: a claim, on the line
//! that closes the session, of the reason it closes with. They are checked
//! against what the scenario does ([`check`]), so a wrong one fails `check`
//! and the corpus tests instead of misleading a reader.
//!
//! ```
//! use sessionwire::{CloseReason, Limits};
//! use sessionwire_check::{closes, scenario};
//!
//! let text = "connect ws ty=WB&v=29&ca=8&r=0\nws 1d   # closes CLOSED_BY_CLIENT\n";
//! let outcome = scenario::run(text, &Limits::default(), std::time::Instant::now()).unwrap();
//! assert_eq!(closes::check(text, &outcome), Ok(()));
//!
//! let wrong = "connect ws ty=WB&v=29&ca=8&r=0\nws 1d   # closes ABORTED\n";
//! let outcome = scenario::run(wrong, &Limits::default(), std::time::Instant::now()).unwrap();
//! assert!(closes::check(wrong, &outcome).is_err());
//! ```

use std::fmt;

use sessionwire::CloseReason;

use crate::scenario::ScenarioOutcome;

/// One `# closes REASON` comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The 1-based line that carries it.
    pub line: usize,
    /// The reason it names.
    pub reason: CloseReason,
}

/// A `# closes` comment that does not match what the scenario does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The comment names something that is not a close reason.
    UnknownReason {
        /// The 1-based line of the comment.
        line: usize,
        /// The word after `closes`.
        word: String,
    },
    /// The session closes (or not) otherwise than a comment says.
    Wrong {
        /// The comment.
        claim: Claim,
        /// The reason and line the scenario really closes with, if any.
        actual: Option<(CloseReason, usize)>,
    },
    /// The scenario closes, and its closing line has no `# closes` comment.
    Missing {
        /// The reason it closes with.
        reason: CloseReason,
        /// The closing line.
        line: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::UnknownReason { line, word } => {
                write!(f, "line {line}: `# closes {word}` names no close reason")
            }
            Mismatch::Wrong {
                claim,
                actual: Some((reason, line)),
            } => write!(
                f,
                "line {}: `# closes {}`, but the session closes {} at line {line}",
                claim.line,
                claim.reason.name(),
                reason.name()
            ),
            Mismatch::Wrong {
                claim,
                actual: None,
            } => write!(
                f,
                "line {}: `# closes {}`, but the session does not close",
                claim.line,
                claim.reason.name()
            ),
            Mismatch::Missing { reason, line } => write!(
                f,
                "line {line} closes {}, without a `# closes {}` comment",
                reason.name(),
                reason.name()
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// The `# closes REASON` comments of `text`: a comment after a command (not
/// a whole-line comment) whose first word is `closes` and whose second is an
/// upper-case name.
pub fn claims(text: &str) -> Result<Vec<Claim>, Mismatch> {
    let mut found = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let Some((command, comment)) = raw.split_once('#') else {
            continue;
        };
        if command.trim().is_empty() {
            continue;
        }
        let mut words = comment.split_whitespace();
        if words.next() != Some("closes") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        if !word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            continue;
        }
        let line = i + 1;
        let reason = CloseReason::from_name(word).ok_or_else(|| Mismatch::UnknownReason {
            line,
            word: word.to_owned(),
        })?;
        found.push(Claim { line, reason });
    }
    Ok(found)
}

/// Checks the `# closes` comments of `text` against its `outcome`: each one
/// sits on the closing line and names the reason the session closes with.
pub fn check(text: &str, outcome: &ScenarioOutcome) -> Result<(), Mismatch> {
    let actual = outcome.verdict.zip(outcome.close_line);
    for claim in claims(text)? {
        if actual != Some((claim.reason, claim.line)) {
            return Err(Mismatch::Wrong { claim, actual });
        }
    }
    Ok(())
}

/// Like [`check`], and a scenario that closes must say so: the rule of the
/// committed corpus (`corpus/scenario/`).
pub fn check_complete(text: &str, outcome: &ScenarioOutcome) -> Result<(), Mismatch> {
    check(text, outcome)?;
    match outcome.verdict.zip(outcome.close_line) {
        Some((reason, line)) if claims(text)?.is_empty() => Err(Mismatch::Missing { reason, line }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionwire::Limits;

    fn run(text: &str) -> Result<(), Mismatch> {
        let outcome = crate::scenario::run(text, &Limits::default(), std::time::Instant::now())
            .expect("a scenario");
        check_complete(text, &outcome)
    }

    #[test]
    fn closes_comment_on_the_closing_line_with_its_reason_passes() {
        let text = "# Section 5: closes the client.\n\
                    connect ws ty=WB&v=29&ca=8&r=0\n\
                    ws 1d   # closes CLOSED_BY_CLIENT (not recoverable)\n";
        assert_eq!(run(text), Ok(()));
        // No close, no comment.
        assert_eq!(run("connect ws ty=WB&v=29&ca=8&r=0\n"), Ok(()));
    }

    #[test]
    fn closes_comment_with_a_wrong_reason_or_line_fails() {
        let wrong_reason = "connect ws ty=WB&v=29&ca=8&r=0\nws 1d   # closes ABORTED\n";
        assert!(matches!(run(wrong_reason), Err(Mismatch::Wrong { .. })));
        let wrong_line = "connect ws ty=WB&v=29&ca=8&r=0   # closes CLOSED_BY_CLIENT\nws 1d\n";
        assert!(matches!(run(wrong_line), Err(Mismatch::Wrong { .. })));
        let no_close = "connect ws ty=WB&v=29&ca=8&r=0   # closes CLOSED_BY_CLIENT\n";
        assert_eq!(
            run(no_close).unwrap_err().to_string(),
            "line 1: `# closes CLOSED_BY_CLIENT`, but the session does not close"
        );
    }

    #[test]
    fn closes_comment_missing_or_naming_no_reason_fails() {
        let missing = "connect ws ty=WB&v=29&ca=8&r=0\nws 1d\n";
        let outcome =
            crate::scenario::run(missing, &Limits::default(), std::time::Instant::now()).unwrap();
        assert_eq!(
            check(missing, &outcome),
            Ok(()),
            "optional outside the corpus"
        );
        assert_eq!(
            run(missing),
            Err(Mismatch::Missing {
                reason: CloseReason::ClosedByClient,
                line: 2
            })
        );
        let unknown = "connect ws ty=WB&v=29&ca=8&r=0\nws 1d   # closes BY_MAGIC\n";
        assert!(matches!(
            run(unknown),
            Err(Mismatch::UnknownReason { line: 2, .. })
        ));
    }
}
