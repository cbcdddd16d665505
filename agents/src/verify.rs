//! A job's verification (docs/verification.md): the project's own check, such as `cargo test`,
//! run on the agent's change where the agent ran. It is asked for with `verify` (and
//! `verify_junit`, where the check writes a JUnit XML report) in the spec's front matter or in
//! `.ckrv/environment.toml`; the spec's wins, since it is this job's request. Both are
//! hostile input, checked here.

use std::path::{Component, Path, PathBuf};

/// The longest command accepted: a command line, not a script.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// A checked verification request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// Run with `sh -c` in the workspace.
    pub command: String,
    /// Where the command writes its JUnit XML report, relative to the workspace.
    pub junit: Option<PathBuf>,
}

/// Why a `verify` or `verify_junit` value is refused; the caller names where it was written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("`verify` is empty; leave it out, or give the command that checks the change")]
    Empty,
    #[error("`verify` is longer than {MAX_COMMAND_BYTES} bytes; put a long check in a script")]
    TooLong,
    #[error("`{key}` holds a NUL character")]
    Nul { key: &'static str },
    #[error("`verify_junit` is set without `verify`; name the command that writes the report")]
    JunitAlone,
    #[error("`verify_junit` `{path}` {why}")]
    Path { path: String, why: &'static str },
}

impl Verify {
    /// `verify` and `verify_junit` as written: `None` when neither is set.
    pub fn from_written(
        command: Option<&str>,
        junit: Option<&str>,
    ) -> Result<Option<Self>, VerifyError> {
        let Some(command) = command else {
            return match junit {
                Some(_) => Err(VerifyError::JunitAlone),
                None => Ok(None),
            };
        };
        if command.trim().is_empty() {
            return Err(VerifyError::Empty);
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(VerifyError::TooLong);
        }
        if command.contains('\0') {
            return Err(VerifyError::Nul { key: "verify" });
        }
        let junit = junit.map(report_path).transpose()?;
        Ok(Some(Self {
            command: command.to_string(),
            junit,
        }))
    }
}

/// The report's path: relative, staying in the workspace, outside `.git`.
fn report_path(path: &str) -> Result<PathBuf, VerifyError> {
    let refuse = |why| VerifyError::Path {
        path: path.to_string(),
        why,
    };
    if path.contains('\0') {
        return Err(VerifyError::Nul {
            key: "verify_junit",
        });
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("leaves the workspace (`..`)")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("is absolute; name it relative to the repository"));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(refuse("names no file"));
    }
    if clean.starts_with(".git") {
        return Err(refuse("is inside .git, which the host's git owns"));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_command_with_its_report_is_taken_as_written() {
        let verify = Verify::from_written(Some("cargo test"), Some("./target/junit.xml"))
            .unwrap()
            .unwrap();
        assert_eq!(verify.command, "cargo test");
        assert_eq!(verify.junit, Some(PathBuf::from("target/junit.xml")));
        assert_eq!(Verify::from_written(None, None).unwrap(), None);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        for (command, junit, said) in [
            (Some("  "), None, "`verify` is empty"),
            (Some(long.as_str()), None, "longer than 4096 bytes"),
            (Some("a\0b"), None, "`verify` holds a NUL"),
            (None, Some("r.xml"), "set without `verify`"),
            (
                Some("t"),
                Some("../r.xml"),
                "`verify_junit` `../r.xml` leaves",
            ),
            (Some("t"), Some("/tmp/r.xml"), "is absolute"),
            (Some("t"), Some(".git/r.xml"), "inside .git"),
            (Some("t"), Some("."), "names no file"),
            (Some("t"), Some("r\0.xml"), "`verify_junit` holds a NUL"),
        ] {
            let error = Verify::from_written(command, junit)
                .unwrap_err()
                .to_string();
            assert!(error.contains(said), "{said}: {error}");
        }
    }
}
