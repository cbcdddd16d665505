//! What a diff does beyond editing ordinary files, shown before `ckrv pull` applies it: links,
//! executables, and files that tools load or run on their own (dotfiles such as `.envrc`, git's
//! own files, CI configuration). A job is hostile until its change has been read.

use crate::git::FileStat;

/// One thing the person should look at before applying.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Risk {
    pub path: String,
    pub why: String,
}

/// The risks in a diff, from `git apply --numstat` (every path) and `git apply --summary`
/// (modes), one per path with its reasons joined.
pub fn risks(files: &[FileStat], summary: &str) -> Vec<Risk> {
    let mut found: Vec<Risk> = Vec::new();
    let mut note = |path: &str, why: &str| match found.iter_mut().find(|r| r.path == path) {
        Some(risk) => {
            if !risk.why.contains(why) {
                risk.why.push_str("; ");
                risk.why.push_str(why);
            }
        }
        None => found.push(Risk {
            path: path.to_string(),
            why: why.to_string(),
        }),
    };
    for line in summary.lines().map(str::trim) {
        if let Some(path) = line.strip_prefix("create mode 120000 ") {
            note(path, "a symbolic link");
        } else if let Some(path) = line.strip_prefix("create mode 100755 ") {
            note(path, "an executable file");
        } else if let Some(rest) = line.strip_prefix("mode change ") {
            // `mode change 100644 => 100755 path`
            let mut parts = rest.splitn(4, ' ');
            let (_, _, to, path) = (parts.next(), parts.next(), parts.next(), parts.next());
            match (to, path) {
                (Some("100755"), Some(path)) => note(path, "made executable"),
                (Some("120000"), Some(path)) => note(path, "becomes a symbolic link"),
                _ => {}
            }
        }
    }
    for file in files {
        if let Some(why) = sensitive(&file.path) {
            note(&file.path, why);
        }
    }
    found
}

/// Why a path matters beyond its contents, if it does.
fn sensitive(path: &str) -> Option<&'static str> {
    let components: Vec<&str> = path.split('/').collect();
    let name = components.last().copied().unwrap_or(path);
    if components.first() == Some(&".github") {
        return Some("GitHub workflows and repository settings");
    }
    if components.contains(&".git") || name.starts_with(".git") {
        return Some("git's own configuration (attributes, submodules, hooks)");
    }
    match name {
        ".envrc" => return Some("direnv runs it when you enter the directory"),
        ".gitlab-ci.yml"
        | ".travis.yml"
        | "Jenkinsfile"
        | "azure-pipelines.yml"
        | "bitbucket-pipelines.yml"
        | ".drone.yml" => return Some("CI configuration"),
        _ => {}
    }
    if components
        .first()
        .is_some_and(|c| matches!(*c, ".circleci" | ".buildkite"))
    {
        return Some("CI configuration");
    }
    if components
        .first()
        .is_some_and(|c| matches!(*c, ".vscode" | ".idea" | ".devcontainer"))
    {
        return Some("editor and container settings that can run tasks");
    }
    components
        .iter()
        .any(|c| c.starts_with('.') && *c != "." && *c != "..")
        .then_some("a dotfile or dot-directory, which tools load on their own")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str) -> FileStat {
        FileStat {
            path: path.into(),
            insertions: 1,
            deletions: 0,
            binary: false,
        }
    }

    #[test]
    fn links_executables_and_dotfiles_are_named_with_why() {
        let files = [
            stat("src/lib.rs"),
            stat("link"),
            stat("run.sh"),
            stat("tool"),
            stat(".envrc"),
            stat(".github/workflows/ci.yml"),
            stat(".gitattributes"),
            stat("config/.secret"),
            stat("Jenkinsfile"),
        ];
        let summary = " create mode 120000 link\n create mode 100755 run.sh\n mode change 100644 => 100755 tool\n create mode 100644 src/lib.rs\n";
        let risks = risks(&files, summary);
        let why = |path: &str| {
            risks
                .iter()
                .find(|r| r.path == path)
                .map(|r| r.why.as_str())
        };
        assert_eq!(why("src/lib.rs"), None);
        assert_eq!(why("link"), Some("a symbolic link"));
        assert_eq!(why("run.sh"), Some("an executable file"));
        assert_eq!(why("tool"), Some("made executable"));
        assert!(why(".envrc").unwrap().contains("direnv"));
        assert!(why(".github/workflows/ci.yml").unwrap().contains("GitHub"));
        assert!(why(".gitattributes").unwrap().contains("git's own"));
        assert!(why("config/.secret").unwrap().contains("dotfile"));
        assert_eq!(why("Jenkinsfile"), Some("CI configuration"));
        assert_eq!(risks.len(), 8);
    }
}
