//! The OpenAPI document is true of the node: schemathesis (a property-based OpenAPI tester,
//! installed from PyPI by `.ci/run`) runs every check against the real binary, once without a
//! token and once with one, and must report nothing. A missing schemathesis fails.
//!
//! The phases run are the seeded ones (examples, coverage, fuzzing), so a run is repeatable; the
//! stateful phase chains calls by their answers and is not, so it is left to runs by hand
//! (`schemathesis run http://ADDR/openapi.json --checks all`, settings in `schemathesis.toml`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::Bookd;

/// Examples per operation and phase: enough to reach every rule of the schema, few enough for CI.
const EXAMPLES: &str = "60";
const SEED: &str = "7";

fn schemathesis(bookd: &Bookd, token: Option<&str>) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemathesis.toml");
    // schemathesis keeps a cache in its working directory: a scratch one, not the repository.
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new("schemathesis");
    command
        .current_dir(scratch.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://{}/openapi.json", bookd.http))
        .args(["--checks", "all", "--max-examples", EXAMPLES, "--seed", SEED])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "30", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("HYPOTHESIS_STORAGE_DIRECTORY", std::env::temp_dir().join("bookd-hypothesis"));
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.output().unwrap_or_else(|error| {
        panic!("schemathesis did not run ({error}); install it: pip install schemathesis")
    });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures (token: {}):\n{report}\n{}",
        token.is_some(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn schemathesis_finds_nothing_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let bookd = Bookd::serve(dir.path(), &[]);
    schemathesis(&bookd, None);
    assert!(bookd.terminate().success());
}

#[test]
fn schemathesis_finds_nothing_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let bookd = Bookd::serve(dir.path(), &["--token", "t0ken"]);
    schemathesis(&bookd, Some("t0ken"));
    assert!(bookd.terminate().success());
}
