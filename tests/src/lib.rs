//! Shared helpers for the cross-crate integration tests: where the bundled
//! corpus is, and the `sessionwire` binary built from this workspace.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub mod attack;
pub mod mqtt;
pub mod server;
pub mod wire;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits inside the workspace")
        .to_path_buf()
}

/// The bundled corpus: `corpus/` at the workspace root.
pub fn corpus_root() -> PathBuf {
    workspace_root().join("corpus")
}

/// Builds one target of the workspace with the same cargo and profile that
/// built the tests (so it also works in a fresh clone) and returns its path.
///
/// Panics if the build fails: the tests cannot run without it.
fn build_target(
    what: &str,
    package: &str,
    target: impl FnOnce(escargot::CargoBuild) -> escargot::CargoBuild,
) -> PathBuf {
    let cargo = escargot::CargoBuild::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .package(package);
    target(cargo)
        .current_release()
        .run()
        .unwrap_or_else(|e| panic!("building {what}: {e}"))
        .path()
        .to_path_buf()
}

/// The `sessionwire` binary, built once per test process.
pub fn sessionwire_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        build_target("the sessionwire binary", "sessionwire-cli", |c| {
            c.bin("sessionwire")
        })
    })
}

/// The `minimal_server` example of the server crate, built once per test
/// process.
pub fn minimal_server_example() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        build_target("the minimal_server example", "sessionwire-server", |c| {
            c.example("minimal_server")
        })
    })
}

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
