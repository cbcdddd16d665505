//! Publishing a job's result: the change the last diff staged, committed on top of the base in
//! the host's private repository and pushed to the job's own branch with the job's credential.
//! Nothing the agent wrote under `.git` is read, the branch is the job's and no other, and a
//! branch of that name already in the repository is never overwritten.

use ckrv_wit::repo_url::{self, Transport};
use ckrv_wit::types::{CredentialType, GitCredential, GitProvider};

use super::{GitError, HostGit, RepoCredential};

/// Where a job publishes: its repository, its own branch, and its credential for one push.
#[derive(Debug)]
pub(super) struct PublishTarget {
    url: String,
    branch: String,
    /// The commit the branch holds there now, when the job updates it (a follow-up); the
    /// branch must not exist otherwise.
    lease: Option<String>,
    credential: Option<RepoCredential>,
}

/// A forge's REST API as the host knows it, and the token requests to it carry.
#[derive(Clone, PartialEq, Eq)]
pub struct ForgeApi {
    pub kind: ForgeKind,
    /// The REST API's base URL, no trailing `/`.
    pub api_url: String,
    /// `owner/name`, or a GitLab group path.
    pub project: String,
    /// The job's access token, which the host adds to the step's requests to `api_url`.
    pub token: String,
}

impl std::fmt::Debug for ForgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeApi")
            .field("kind", &self.kind)
            .field("api_url", &self.api_url)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    Github,
    Gitlab,
}

/// The forge hosting `url`, when the host knows its REST API and the credential can call it
/// (an access token; a deploy key only pushes). github.com and gitlab.com are known by name;
/// another host is GitHub Enterprise (`/api/v3`) or self-managed GitLab (`/api/v4`) when the
/// credential says it is for one, and its API is on the repository's own host.
pub fn forge_of(url: &str, credential: &GitCredential) -> Option<ForgeApi> {
    if credential.credential_type != CredentialType::Pat {
        return None;
    }
    let repo = repo_url::check(url, true).ok()?;
    let host = repo.host.as_deref()?.to_ascii_lowercase();
    let path = project_path(url, repo.scp_like)?;
    // The API speaks https unless the repository itself is served over plain http (a
    // development server on loopback, allowed by the operator).
    let scheme = if repo.transport == Transport::Http {
        "http"
    } else {
        "https"
    };
    let authority = match (repo.transport, repo.port) {
        (Transport::Https, 443) | (Transport::Http, 80) | (Transport::Ssh, _) => host.clone(),
        (_, port) => format!("{host}:{port}"),
    };
    let (kind, api_url) = match (host.as_str(), credential.provider) {
        ("github.com", _) => (ForgeKind::Github, "https://api.github.com".to_string()),
        ("gitlab.com", _) => (ForgeKind::Gitlab, "https://gitlab.com/api/v4".to_string()),
        (_, GitProvider::Github) => (ForgeKind::Github, format!("{scheme}://{authority}/api/v3")),
        (_, GitProvider::Gitlab) => (ForgeKind::Gitlab, format!("{scheme}://{authority}/api/v4")),
        _ => return None,
    };
    Some(ForgeApi {
        kind,
        api_url,
        project: path,
        token: credential.value.clone(),
    })
}

/// The repository's path on its forge: `owner/name` without `.git`.
fn project_path(url: &str, scp_like: bool) -> Option<String> {
    let path = if scp_like {
        url.split_once(':')?.1.to_string()
    } else {
        url::Url::parse(url).ok()?.path().to_string()
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (!path.is_empty() && path.contains('/')).then(|| path.to_string())
}

/// Who a commit is by: one line each, no angle brackets (git's own rules for an ident).
fn check_ident(what: &str, value: &str) -> Result<(), GitError> {
    let bad = value.trim().is_empty()
        || value.len() > 200
        || value
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>');
    if bad {
        return Err(GitError::Publish(format!(
            "the commit's {what} `{value}` is not a name git takes: one line, no < or >, at most 200 bytes"
        )));
    }
    Ok(())
}

/// What a refused push says, from git's porcelain status line and the forge's own `remote:`
/// lines (a protected branch, missing rights).
fn refusal(branch: &str, stdout: &str, stderr: &str) -> String {
    let status = stdout
        .lines()
        .find(|line| line.starts_with('!'))
        .and_then(|line| line.split('\t').nth(2))
        .unwrap_or("")
        .trim();
    let said: Vec<String> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("remote:"))
        .map(|line| {
            line.replace("\x1b[K", "")
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        })
        .filter(|line| !line.is_empty())
        .take(5)
        .collect();
    if status.contains("stale info") {
        return format!(
            "branch {branch} is not as the job expects it in the repository (it exists, or moved \
             since it was published); a job never overwrites a branch"
        );
    }
    let mut message = format!("the repository refused the push of {branch}");
    if !status.is_empty() {
        message.push_str(&format!(": {status}"));
    }
    if !said.is_empty() {
        message.push_str(&format!("; it said: {}", said.join(" ")));
    } else if status.is_empty() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git gave no reason");
        message.push_str(&format!(
            ": {}",
            last.trim().chars().take(300).collect::<String>()
        ));
    }
    message
}

impl HostGit {
    /// Lets the job publish to `branch` of `url`, with `credential` for one push and for
    /// its forge's API.
    pub fn with_publish(
        mut self,
        url: &str,
        (branch, lease): (&str, Option<&str>),
        credential: Option<GitCredential>,
    ) -> Self {
        self.forge = credential.as_ref().and_then(|c| forge_of(url, c));
        *self.lock_publish() = Some(PublishTarget {
            url: url.to_string(),
            branch: branch.to_string(),
            lease: lease.map(str::to_string),
            credential: credential.map(|credential| RepoCredential {
                url: url.to_string(),
                credential,
            }),
        });
        self
    }

    fn lock_publish(&self) -> std::sync::MutexGuard<'_, Option<PublishTarget>> {
        self.publish
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The forge's API, when the job publishes to a forge the host knows (before and after
    /// the push).
    pub fn forge(&self) -> Option<ForgeApi> {
        self.forge.clone()
    }

    /// Commits what the last diff staged on top of the base and pushes it to the job's branch,
    /// once; returns the commit's id.
    pub async fn push_branch(
        &self,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<String, GitError> {
        check_ident("author name", author_name)?;
        check_ident("author email", author_email)?;
        if message.trim().is_empty() {
            return Err(GitError::Publish("the commit message is empty".into()));
        }
        // Taken: the credential pushes once, whatever comes of it.
        let Some(PublishTarget {
            url,
            branch,
            lease,
            credential,
        }) = self.lock_publish().take()
        else {
            return Err(GitError::Publish(
                "the job does not publish, or has published already".into(),
            ));
        };
        let write_tree = self.with_base(&["write-tree"]);
        let tree = self.git(&self.workspace, &write_tree, &[], &[]).await?;
        let tree = tree.trim().to_string();
        let parent = self.resolve("HEAD").await?;
        let parent_tree = self.resolve_tree(&parent).await?;
        if tree == parent_tree {
            return Err(GitError::Publish(
                "the job changed nothing, so there is nothing to publish".into(),
            ));
        }
        let ident = [
            ("GIT_AUTHOR_NAME", author_name),
            ("GIT_AUTHOR_EMAIL", author_email),
            ("GIT_COMMITTER_NAME", author_name),
            ("GIT_COMMITTER_EMAIL", author_email),
        ];
        let git_dir = format!("--git-dir={}", self.base_repo().display());
        let commit = self
            .run_git(
                &self.workspace,
                &[
                    git_dir.as_str(),
                    "commit-tree",
                    &tree,
                    "-p",
                    &parent,
                    "-F",
                    "-",
                ],
                &[],
                &ident,
                Some(message.as_bytes().to_vec()),
                &[0],
            )
            .await?;
        let commit = String::from_utf8(commit)
            .map_err(|_| GitError::NotUtf8)?
            .trim()
            .to_string();
        let reference = self.set_branch(&branch, &commit).await?;
        let remote = self.remote(&url, credential.as_ref()).await?;
        let mut args: Vec<String> = remote.config.clone();
        args.push(git_dir.clone());
        args.extend([
            "push".to_string(),
            "--porcelain".to_string(),
            "--no-verify".to_string(),
            // The branch must hold what the job expects there: nothing (it must not exist
            // yet), or the commit a follow-up replaces.
            format!(
                "--force-with-lease={reference}:{}",
                lease.as_deref().unwrap_or("")
            ),
            "--".to_string(),
            remote.url.clone(),
            format!("{reference}:{reference}"),
        ]);
        let output = self
            .git_output(&self.workspace, &args, &self.network(), &remote.env())
            .await?;
        drop(remote);
        drop(credential);
        if !output.status.success() {
            return Err(GitError::Publish(refusal(
                &branch,
                &String::from_utf8_lossy(&output.stdout),
                &String::from_utf8_lossy(&output.stderr),
            )));
        }
        Ok(commit)
    }

    /// The tree of `commit` in the private base repository.
    async fn resolve_tree(&self, commit: &str) -> Result<String, GitError> {
        let git_dir = format!("--git-dir={}", self.base_repo().display());
        let tree = format!("{commit}^{{tree}}");
        let out = self
            .git(
                &self.workspace,
                &[git_dir.as_str(), "rev-parse", "--verify", "--quiet", &tree],
                &[],
                &[],
            )
            .await?;
        Ok(out.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn token(provider: GitProvider) -> GitCredential {
        GitCredential {
            provider,
            credential_type: CredentialType::Pat,
            username: None,
            value: "tok".into(),
        }
    }

    #[test]
    fn the_forge_api_is_the_repositorys_own() {
        let github = forge_of("https://github.com/o/r.git", &token(GitProvider::Generic)).unwrap();
        assert_eq!(
            (
                github.kind,
                github.api_url.as_str(),
                github.project.as_str()
            ),
            (ForgeKind::Github, "https://api.github.com", "o/r")
        );
        let ssh = forge_of(
            "git@gitlab.com:group/sub/r.git",
            &token(GitProvider::Gitlab),
        )
        .unwrap();
        assert_eq!(
            (ssh.kind, ssh.api_url.as_str(), ssh.project.as_str()),
            (
                ForgeKind::Gitlab,
                "https://gitlab.com/api/v4",
                "group/sub/r"
            )
        );
        let ghe = forge_of(
            "https://git.corp.test:8443/o/r",
            &token(GitProvider::Github),
        )
        .unwrap();
        assert_eq!(ghe.api_url, "https://git.corp.test:8443/api/v3");
        let dev = forge_of("http://127.0.0.1:9000/o/r.git", &token(GitProvider::Gitlab)).unwrap();
        assert_eq!(dev.api_url, "http://127.0.0.1:9000/api/v4");
        // An unknown forge, or a credential that cannot call an API: none.
        assert_eq!(
            forge_of(
                "https://git.corp.test/o/r.git",
                &token(GitProvider::Generic)
            ),
            None
        );
        let key = GitCredential {
            credential_type: CredentialType::DeployKey,
            ..token(GitProvider::Github)
        };
        assert_eq!(forge_of("git@github.com:o/r.git", &key), None);
        assert!(!format!("{github:?}").contains("tok"));
    }

    #[test]
    fn a_refusal_says_what_the_forge_said() {
        let stdout = "To http://h/o/r.git\n!\trefs/heads/ckrv/1:refs/heads/ckrv/1\t[remote rejected] (pre-receive hook declined)\nDone\n";
        let stderr = "remote: GH006: Protected branch update failed for refs/heads/ckrv/1.\x1b[K\nerror: failed to push some refs\n";
        assert_eq!(
            refusal("ckrv/1", stdout, stderr),
            "the repository refused the push of ckrv/1: [remote rejected] (pre-receive hook declined); it said: GH006: Protected branch update failed for refs/heads/ckrv/1."
        );
        let stale = "!\trefs/heads/ckrv/1:refs/heads/ckrv/1\t[rejected] (stale info)\n";
        assert!(refusal("ckrv/1", stale, "").contains("never overwrites"));
        assert!(check_ident("author name", "a\nb").is_err());
        assert!(check_ident("author email", "<x>").is_err());
        assert!(check_ident("author name", "ckrv").is_ok());
    }
}
