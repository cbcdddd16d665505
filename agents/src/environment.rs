//! A repository's ready-to-work environment: `.ckrv/environment.toml` (docs/environments.md).
//! It says how to set the workspace up before the agent starts (`setup`), which files decide
//! whether an earlier setup's result still holds (`key_files`), what to keep of that result
//! (`cache`), the plain variables setup and agent get (`env`), where setup may connect
//! (`egress`), and how to check the agent's change (`verify`, docs/verification.md). The file is the repository's, so everything in it is checked as hostile input:
//! paths stay inside the workspace or the agent's home, and no variable the sandbox or the
//! platform sets can be replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::egress::Policy;
use crate::verify::{Verify, VerifyError};

/// Where the file is, relative to the repository's root.
pub const ENVIRONMENT_FILE: &str = ".ckrv/environment.toml";
/// The largest file read: a setup script, not a program.
pub const MAX_ENVIRONMENT_BYTES: usize = 64 * 1024;
/// The most `key_files`, `cache` paths and `env` variables each.
pub const MAX_ENTRIES: usize = 64;

/// Variables the platform sets for setup and agent besides the proxy and CA bundle ones
/// (`crate::egress::PROXY_VARIABLES`, `crate::sandbox::CA_BUNDLE_VARIABLES`), which the file
/// may not replace either; nor any `CKRV_` one.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "SHELL",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "ALL_PROXY",
    "SSL_CERT_DIR",
    "NODE_OPTIONS",
];

/// Whether the platform sets `name` (compared without case: `https_proxy` is `HTTPS_PROXY`).
fn reserved(name: &str) -> bool {
    let set_by_us = RESERVED
        .iter()
        .chain(&crate::egress::PROXY_VARIABLES)
        .chain(&crate::egress::NO_PROXY_VARIABLES)
        .chain(&crate::sandbox::CA_BUNDLE_VARIABLES);
    set_by_us
        .into_iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
        || name.to_ascii_uppercase().starts_with("CKRV_")
}

/// A repository's environment, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// The shell script run in the workspace before the agent; none when absent.
    pub setup: Option<String>,
    /// Workspace files whose contents decide whether a snapshot still holds.
    pub key_files: Vec<PathBuf>,
    /// What to keep of a setup's result.
    pub cache: Vec<CachePath>,
    /// Plain, non-secret variables for setup and agent.
    pub env: BTreeMap<String, String>,
    /// Where setup may connect, within what the operator allows; nowhere when absent.
    pub egress: Option<Policy>,
    /// The project's check of the agent's change, unless the spec names its own.
    pub verify: Option<Verify>,
}

/// A path kept in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CachePath {
    /// Relative to the workspace, e.g. `node_modules`.
    Workspace(PathBuf),
    /// Relative to the agent's home (written `~/…`), e.g. `.cargo/registry`.
    Home(PathBuf),
}

impl fmt::Display for CachePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CachePath::Workspace(path) => write!(f, "{}", path.display()),
            CachePath::Home(path) => write!(f, "~/{}", path.display()),
        }
    }
}

/// Why a repository's environment file cannot be used; each names the file and what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvironmentError {
    #[error(
        "{ENVIRONMENT_FILE} is larger than {MAX_ENVIRONMENT_BYTES} bytes; keep long setup in a script the file runs"
    )]
    TooLarge,
    #[error("{ENVIRONMENT_FILE} is not UTF-8")]
    NotText,
    #[error("{ENVIRONMENT_FILE}: {0}")]
    Syntax(String),
    #[error(
        "{ENVIRONMENT_FILE}: `{key}` has more than {MAX_ENTRIES} entries; keep the ones that matter"
    )]
    TooMany { key: &'static str },
    #[error("{ENVIRONMENT_FILE}: `{key}` entry `{path}` {why}")]
    Path {
        key: &'static str,
        path: String,
        why: &'static str,
    },
    #[error(
        "{ENVIRONMENT_FILE}: env `{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
    )]
    VariableName { name: String },
    #[error(
        "{ENVIRONMENT_FILE}: env `{name}` is set by the platform and cannot be replaced; name your variable otherwise"
    )]
    ReservedVariable { name: String },
    #[error("{ENVIRONMENT_FILE}: env `{name}` holds a NUL character")]
    VariableValue { name: String },
    #[error("{ENVIRONMENT_FILE}: `setup` is empty; leave it out, or give the commands to run")]
    EmptySetup,
    #[error("{ENVIRONMENT_FILE}: {0}")]
    Verify(#[from] VerifyError),
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    setup: Option<String>,
    #[serde(default)]
    key_files: Vec<String>,
    #[serde(default)]
    cache: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    egress: Option<Policy>,
    verify: Option<String>,
    verify_junit: Option<String>,
}

impl Environment {
    /// The `cache` paths under the agent's home, relative to it: the directories its runs
    /// keep ([`crate::RunRequest::home_cache`]).
    pub fn home_cache(&self) -> Vec<PathBuf> {
        self.cache
            .iter()
            .filter_map(|path| match path {
                CachePath::Home(path) => Some(path.clone()),
                CachePath::Workspace(_) => None,
            })
            .collect()
    }

    /// Reads `.ckrv/environment.toml` under `workspace`: `None` when the repository has none.
    /// A symbolic link there is not followed (it could name a file outside the workspace).
    pub fn load(workspace: &Path) -> Result<Option<Self>, EnvironmentError> {
        let path = workspace.join(ENVIRONMENT_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(_) => {
                return Err(EnvironmentError::Syntax(
                    "is not a regular file (a link or a directory is not read)".into(),
                ));
            }
            Err(_) => return Ok(None),
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| EnvironmentError::Syntax(format!("cannot be read: {e}")))?;
        Self::parse_bytes(&bytes).map(Some)
    }

    /// Parses and checks the file's bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, EnvironmentError> {
        if bytes.len() > MAX_ENVIRONMENT_BYTES {
            return Err(EnvironmentError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EnvironmentError::NotText)?;
        let written: Written =
            toml::from_str(text).map_err(|e| EnvironmentError::Syntax(e.message().to_string()))?;
        for (key, count) in [
            ("key_files", written.key_files.len()),
            ("cache", written.cache.len()),
            ("env", written.env.len()),
        ] {
            if count > MAX_ENTRIES {
                return Err(EnvironmentError::TooMany { key });
            }
        }
        if written
            .setup
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(EnvironmentError::EmptySetup);
        }
        let key_files = written
            .key_files
            .iter()
            .map(|path| inside("key_files", path))
            .collect::<Result<_, _>>()?;
        let cache = written
            .cache
            .iter()
            .map(|path| cache_path(path))
            .collect::<Result<_, _>>()?;
        for (name, value) in &written.env {
            check_variable(name, value)?;
        }
        let verify =
            Verify::from_written(written.verify.as_deref(), written.verify_junit.as_deref())?;
        Ok(Environment {
            setup: written.setup,
            key_files,
            cache,
            env: written.env,
            egress: written.egress,
            verify,
        })
    }
}

/// `path` as a relative path that stays where it is put: no root, no `..`, nothing empty.
fn inside(key: &'static str, path: &str) -> Result<PathBuf, EnvironmentError> {
    let refuse = |why| EnvironmentError::Path {
        key,
        path: path.to_string(),
        why,
    };
    if path.contains('\0') {
        return Err(refuse("holds a NUL character"));
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("leaves its directory (`..`)")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(
                    "is absolute; name it relative to the repository (or `~/` for the agent's home)",
                ));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(refuse("names no file or directory"));
    }
    if clean.starts_with(".git") {
        return Err(refuse("is inside .git, which the host's git owns"));
    }
    Ok(clean)
}

/// A `cache` entry: under the agent's home when it starts with `~/`, else in the workspace.
fn cache_path(path: &str) -> Result<CachePath, EnvironmentError> {
    match path.strip_prefix("~/") {
        Some(home) => inside("cache", home)
            .map(CachePath::Home)
            .map_err(|e| match e {
                EnvironmentError::Path { why, .. } => EnvironmentError::Path {
                    key: "cache",
                    path: path.to_string(),
                    why,
                },
                other => other,
            }),
        None if path.starts_with('~') => Err(EnvironmentError::Path {
            key: "cache",
            path: path.to_string(),
            why: "names another user's home; write `~/PATH` for the agent's",
        }),
        None => inside("cache", path).map(CachePath::Workspace),
    }
}

fn check_variable(name: &str, value: &str) -> Result<(), EnvironmentError> {
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(EnvironmentError::VariableName {
            name: name.to_string(),
        });
    }
    if reserved(name) {
        return Err(EnvironmentError::ReservedVariable {
            name: name.to_string(),
        });
    }
    if value.contains('\0') {
        return Err(EnvironmentError::VariableValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<Environment, EnvironmentError> {
        Environment::parse_bytes(text.as_bytes())
    }

    fn refused(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses_as_it_reads() {
        let example = include_str!("../../examples/environment.toml");
        let env = parse(example).unwrap();
        assert!(env.setup.as_deref().unwrap().contains("npm ci"));
        assert_eq!(
            env.key_files,
            [PathBuf::from("package-lock.json"), PathBuf::from(".nvmrc")]
        );
        assert_eq!(
            env.cache,
            [
                CachePath::Workspace("node_modules".into()),
                CachePath::Home(".npm".into())
            ]
        );
        assert_eq!(env.cache[1].to_string(), "~/.npm");
        assert_eq!(env.env["NODE_ENV"], "development");
        assert_eq!(env.egress, Some(Policy::Registries));
        let verify = env.verify.unwrap();
        assert!(verify.command.starts_with("npx jest --ci"));
        assert_eq!(verify.junit, Some(PathBuf::from("junit.xml")));
    }

    #[test]
    fn a_bad_verify_is_refused_naming_the_file_and_key() {
        assert_eq!(
            refused("verify = \"t\"\nverify_junit = \"/etc/passwd\"\n"),
            ".ckrv/environment.toml: `verify_junit` `/etc/passwd` is absolute; name it relative to the repository"
        );
        assert!(refused("verify_junit = \"r.xml\"\n").contains("set without `verify`"));
        assert_eq!(parse("").unwrap().verify, None);
    }

    #[test]
    fn an_empty_file_is_an_environment_without_setup() {
        let env = parse("").unwrap();
        assert_eq!(env.setup, None);
        assert!(env.key_files.is_empty() && env.cache.is_empty() && env.env.is_empty());
        assert_eq!(env.egress, None);
    }

    #[test]
    fn paths_stay_in_the_workspace_or_the_agents_home() {
        for (text, what) in [
            (
                "key_files = [\"../secrets\"]",
                "`key_files` entry `../secrets` leaves its directory",
            ),
            (
                "key_files = [\"/etc/passwd\"]",
                "`key_files` entry `/etc/passwd` is absolute",
            ),
            (
                "cache = [\"~/../../etc\"]",
                "`cache` entry `~/../../etc` leaves its directory",
            ),
            (
                "cache = [\"~root/.ssh\"]",
                "`cache` entry `~root/.ssh` names another user's home",
            ),
            (
                "cache = [\".git/hooks\"]",
                "`cache` entry `.git/hooks` is inside .git",
            ),
            (
                "cache = [\"./\"]",
                "`cache` entry `./` names no file or directory",
            ),
            ("key_files = [\"a\\u0000b\"]", "holds a NUL character"),
        ] {
            let error = refused(text);
            assert!(error.starts_with(".ckrv/environment.toml: "), "{error}");
            assert!(error.contains(what), "{text}: {error}");
        }
        let env = parse("cache = [\"./target/\", \"~/.cargo/registry\"]").unwrap();
        assert_eq!(
            env.cache,
            [
                CachePath::Workspace("target".into()),
                CachePath::Home(".cargo/registry".into())
            ]
        );
    }

    #[test]
    fn variables_the_platform_sets_cannot_be_replaced() {
        for name in [
            "PATH",
            "https_proxy",
            "SSL_CERT_FILE",
            "CKRV_JOB_ID",
            "LD_PRELOAD",
        ] {
            let error = refused(&format!("[env]\n{name} = \"x\"\n"));
            assert!(
                error.contains(&format!("env `{name}` is set by the platform")),
                "{error}"
            );
        }
        for name in ["1ABC", "A-B", "\"A B\""] {
            let error = refused(&format!("[env]\n{name} = \"x\"\n"));
            assert!(error.contains("is not a variable name"), "{name}: {error}");
        }
        assert!(refused("[env]\nA = \"x\\u0000y\"\n").contains("holds a NUL"));
    }

    #[test]
    fn bad_files_are_refused_naming_what_to_change() {
        assert!(refused("colour = \"blue\"").contains("unknown field `colour`"));
        assert!(refused("setup = 3").contains("invalid type"));
        assert!(refused("setup = \"  \\n\"").contains("`setup` is empty"));
        assert!(refused("egress = \"*\"").contains("bad egress entry"));
        let many = format!(
            "key_files = [{}]",
            (0..=MAX_ENTRIES)
                .map(|i| format!("\"f{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(refused(&many).contains("`key_files` has more than 64 entries"));
        let large = format!("setup = \"{}\"", "x".repeat(MAX_ENVIRONMENT_BYTES));
        assert_eq!(parse(&large), Err(EnvironmentError::TooLarge));
        assert_eq!(
            Environment::parse_bytes(&[0xff, 0xfe]),
            Err(EnvironmentError::NotText)
        );
    }

    #[test]
    fn the_file_is_read_from_the_workspace_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Environment::load(dir.path()), Ok(None));
        std::fs::create_dir(dir.path().join(".ckrv")).unwrap();
        let outside = dir.path().join("outside.toml");
        std::fs::write(&outside, "setup = \"make\"").unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join(ENVIRONMENT_FILE)).unwrap();
        let error = Environment::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not a regular file"), "{error}");
        std::fs::remove_file(dir.path().join(ENVIRONMENT_FILE)).unwrap();
        std::fs::write(dir.path().join(ENVIRONMENT_FILE), "setup = \"make\"").unwrap();
        let env = Environment::load(dir.path()).unwrap().unwrap();
        assert_eq!(env.setup.as_deref(), Some("make"));
    }
}
