//! The step host's own imports: the job's `git` and `log`. Everything else a step's store
//! holds (WASI, HTTP under its policy, limits) is the shared host's.

use super::bindings::ckrv::cloud::{git, log};
use crate::host_git::{ForgeKind, GitError, HostGit};
use crate::logs::JobLog;
use ckrv_wasm_host::HostState;
use ckrv_wit::types::LogLevel;

/// What the step host adds to a store: the job's git, and its log under the step's name.
pub struct StepData {
    pub(super) git: HostGit,
    pub(super) step: String,
    pub(super) log: JobLog,
}

/// A step's store state.
pub type StepState = HostState<StepData>;

/// The WIT `git` interface speaks strings: the guest gets the error's message, nothing else.
fn for_guest<T>(result: Result<T, GitError>) -> Result<T, String> {
    result.map_err(|error| error.to_string())
}

impl git::Host for StepState {
    async fn clone_repo(
        &mut self,
        url: String,
        branch: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(for_guest(self.data.git.clone_repo(&url, &branch).await))
    }

    async fn create_branch(&mut self, name: String) -> wasmtime::Result<Result<(), String>> {
        Ok(for_guest(self.data.git.create_branch(&name).await))
    }

    /// The patch; what the diff left out goes to the log as warnings the user sees.
    async fn diff(&mut self, base: String) -> wasmtime::Result<Result<String, String>> {
        Ok(for_guest(self.data.git.diff(&base).await).map(|diff| {
            for notice in diff.notices {
                self.data.log.write(LogLevel::Warn, &self.data.step, notice);
            }
            diff.patch
        }))
    }

    async fn resolve(&mut self, rev: String) -> wasmtime::Result<Result<String, String>> {
        Ok(for_guest(self.data.git.resolve(&rev).await))
    }

    async fn push_branch(
        &mut self,
        message: String,
        author_name: String,
        author_email: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let pushed = self
            .data
            .git
            .push_branch(&message, &author_name, &author_email)
            .await;
        Ok(for_guest(pushed))
    }

    /// The forge, without the token: the host adds that to the step's requests itself.
    async fn forge(&mut self) -> wasmtime::Result<Option<git::ForgeApi>> {
        Ok(self.data.git.forge().map(|forge| git::ForgeApi {
            kind: match forge.kind {
                ForgeKind::Github => git::ForgeKind::Github,
                ForgeKind::Gitlab => git::ForgeKind::Gitlab,
            },
            api_url: forge.api_url,
            project: forge.project,
        }))
    }
}

impl log::Host for StepState {
    async fn write(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.data.log.write(level, &self.data.step, message);
        Ok(())
    }
}
