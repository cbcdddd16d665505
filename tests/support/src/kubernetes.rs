//! Kubernetes objects checked offline, since no cluster exists where the tests run: every
//! manifest the project makes (the Helm chart's, the API dispatcher's Jobs, Secrets and
//! NetworkPolicies) is validated against the official schemas with `kubernetes-validate
//! --strict` (PyPI), and the chart is linted and rendered by Helm's own library through
//! `tests/e2e/helm/helm_tool.py` (PyPI `helm-sdkpy`).
//!
//! Where a tool is missing the checks say why and the test passes, unless
//! `CKRV_REQUIRE_K8S_TOOLS=1` (CI installs both and sets it), when it fails.
//!
//! ```no_run
//! use ckrv_test_support::kubernetes::{Validated, validate};
//! # let job_yaml = String::new();
//! match validate(&job_yaml) {
//!     Ok(Validated::Passed) => {}
//!     Ok(Validated::Skipped(why)) => eprintln!("{why}"),
//!     Err(output) => panic!("the Job is not valid Kubernetes:\n{output}"),
//! }
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `kubernetes-validate` executable, when it is not on `PATH`.
pub const KUBERNETES_VALIDATE_ENV: &str = "CKRV_KUBERNETES_VALIDATE";
/// A Python that imports `helm_sdkpy` (and PyYAML), when `python3` on `PATH` does not.
pub const HELM_PYTHON_ENV: &str = "CKRV_HELM_PYTHON";
/// Set to `1` to fail, rather than skip, when a tool is missing.
pub const K8S_TOOLS_REQUIRED_ENV: &str = "CKRV_REQUIRE_K8S_TOOLS";

/// What became of a validation that did not find a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated {
    /// Every object passed `kubernetes-validate --strict`.
    Passed,
    /// `kubernetes-validate` is not installed (and not required): why, for the test to print.
    Skipped(String),
}

/// Validates every document of `yaml` (one or more objects, `---`-separated) against the
/// Kubernetes schemas of `kubernetes-validate`'s default version, rejecting unknown fields.
///
/// `Err` carries the tool's output, naming each object that failed and why; it is also `Err`
/// when the tool is missing while [`K8S_TOOLS_REQUIRED_ENV`] is `1`, or when `yaml` holds no
/// object at all (so a test cannot pass on nothing).
pub fn validate(yaml: &str) -> Result<Validated, String> {
    run_validate(yaml, None)
}

/// [`validate`] against the schemas of one Kubernetes version (`1.25.0` … the tool's default;
/// the oldest a manifest claims to support, say).
pub fn validate_against(yaml: &str, kubernetes_version: &str) -> Result<Validated, String> {
    run_validate(yaml, Some(kubernetes_version))
}

fn run_validate(yaml: &str, kubernetes_version: Option<&str>) -> Result<Validated, String> {
    let program = match kubernetes_validate() {
        Ok(program) => program,
        Err(missing) if required() => {
            return Err(format!("{K8S_TOOLS_REQUIRED_ENV}=1 but {missing}"));
        }
        Err(missing) => return Ok(Validated::Skipped(format!("skipped: {missing}"))),
    };
    let content = |line: &&str| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "---"
    };
    if !yaml.lines().any(|line| content(&line)) {
        return Err(format!("no Kubernetes object to validate in:\n{yaml}"));
    }
    let mut file = tempfile::Builder::new()
        .prefix("ckrv-manifest-")
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| format!("a temporary file for the manifest: {e}"))?;
    file.write_all(yaml.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| format!("writing the manifest: {e}"))?;
    let mut command = Command::new(program);
    command.arg("--strict");
    if let Some(version) = kubernetes_version {
        command.args(["--kubernetes-version", version]);
    }
    let output = command
        .arg(file.path())
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if output.status.success() {
        Ok(Validated::Passed)
    } else {
        Err(format!(
            "kubernetes-validate --strict failed ({}):\n{}",
            output.status,
            output_text(&output)
        ))
    }
}

/// [`validate`] for a test: panics with the tool's output when `yaml` is not valid, prints why
/// when it was skipped. Whether it was checked.
pub fn assert_valid(yaml: &str) -> bool {
    match validate(yaml) {
        Ok(Validated::Passed) => true,
        Ok(Validated::Skipped(why)) => {
            eprintln!("{why}");
            false
        }
        Err(output) => panic!("{output}"),
    }
}

/// The `kubernetes-validate` to run, or why there is none.
pub fn kubernetes_validate() -> Result<&'static Path, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let program = std::env::var_os(KUBERNETES_VALIDATE_ENV)
                .map_or_else(|| PathBuf::from("kubernetes-validate"), PathBuf::from);
            let hint = format!(
                "pip install kubernetes-validate==1.37.0 and set {KUBERNETES_VALIDATE_ENV}"
            );
            match Command::new(&program).arg("--version").output() {
                Ok(output) if output.status.success() => Ok(program),
                Ok(output) => Err(format!(
                    "{} --version failed: {}; {hint}",
                    program.display(),
                    output_text(&output).trim()
                )),
                Err(e) => Err(format!(
                    "no kubernetes-validate ({}: {e}); {hint}",
                    program.display()
                )),
            }
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

/// Helm's linter and renderer (`tests/e2e/helm/helm_tool.py` on a Python with `helm_sdkpy`).
#[derive(Debug, Clone)]
pub struct Helm {
    python: PathBuf,
    script: PathBuf,
}

impl Helm {
    /// Helm, or why there is none.
    pub fn find() -> Result<Self, String> {
        static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let python = FOUND.get_or_init(|| {
            let python = std::env::var_os(HELM_PYTHON_ENV)
                .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
            let hint = format!(
                "pip install --ignore-requires-python helm-sdkpy==0.1.32 pyyaml and set \
                 {HELM_PYTHON_ENV} to that Python"
            );
            match Command::new(&python)
                .args(["-c", "import helm_sdkpy, yaml"])
                .output()
            {
                Ok(output) if output.status.success() => Ok(python),
                Ok(output) => Err(format!(
                    "{} cannot import helm_sdkpy: {}; {hint}",
                    python.display(),
                    last_line(&output_text(&output))
                )),
                Err(e) => Err(format!("no Python ({}: {e}); {hint}", python.display())),
            }
        });
        let python = python.clone()?;
        Ok(Self {
            python,
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/helm/helm_tool.py"),
        })
    }

    /// Helm, or `None` after printing why the test is skipped; panics instead when
    /// [`K8S_TOOLS_REQUIRED_ENV`] is `1`.
    pub fn or_skip() -> Option<Self> {
        match Self::find() {
            Ok(helm) => Some(helm),
            Err(missing) => {
                // `missing` says what to install.
                crate::skip_unless_required(K8S_TOOLS_REQUIRED_ENV, &missing, "");
                None
            }
        }
    }

    /// Helm's linter on the chart at `chart` with its default values: its messages, or `Err`
    /// with them when one is an error.
    pub fn lint(&self, chart: &Path) -> Result<String, String> {
        self.run(&["lint".as_ref(), chart.as_os_str()])
    }

    /// The chart rendered as `helm install RELEASE CHART --namespace NAMESPACE --values
    /// VALUES` would install it: the manifest (every object, `---`-separated), or Helm's
    /// refusal (a schema violation, a `fail` guard) as `Err`.
    pub fn render(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &Path,
    ) -> Result<String, String> {
        self.install(chart, release, namespace, values, false)
    }

    /// The release notes (NOTES.txt) the same install would print.
    pub fn notes(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &Path,
    ) -> Result<String, String> {
        self.install(chart, release, namespace, values, true)
    }

    /// `helm_tool.py render`: the manifest, or with `notes` the release notes.
    fn install(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &Path,
        notes: bool,
    ) -> Result<String, String> {
        let mut args = vec![
            "render".as_ref(),
            chart.as_os_str(),
            release.as_ref(),
            namespace.as_ref(),
            values.as_os_str(),
        ];
        if notes {
            args.push("--notes".as_ref());
        }
        self.run(&args)
    }

    fn run(&self, args: &[&std::ffi::OsStr]) -> Result<String, String> {
        let output = Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", self.python.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "helm_tool.py {} failed ({}):\n{}",
                args.first()
                    .map(|a| a.to_string_lossy())
                    .unwrap_or_default(),
                output.status,
                output_text(&output)
            ))
        }
    }
}

fn required() -> bool {
    crate::required(K8S_TOOLS_REQUIRED_ENV)
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn last_line(text: &str) -> &str {
    text.trim().lines().last().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG_MAP: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";

    #[test]
    fn a_valid_object_passes_and_an_unknown_field_fails_naming_it() {
        match validate(CONFIG_MAP) {
            Ok(Validated::Passed) => {}
            Ok(Validated::Skipped(why)) => {
                eprintln!("{why}");
                return;
            }
            Err(output) => panic!("{output}"),
        }
        let two = format!("{CONFIG_MAP}---\n{}", CONFIG_MAP.replace("data:", "datta:"));
        let output = validate(&two).expect_err("an unknown field fails");
        assert!(output.contains("datta"), "{output}");
        assert_eq!(
            validate_against(CONFIG_MAP, "1.25.0"),
            Ok(Validated::Passed)
        );
        let output = validate_against(CONFIG_MAP, "0.1.0").expect_err("no such version");
        assert!(!output.is_empty());
    }

    #[test]
    fn nothing_to_validate_is_an_error() {
        if kubernetes_validate().is_err() && !required() {
            return;
        }
        assert!(validate("# nothing\n").is_err());
    }
}
