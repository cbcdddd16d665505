//! Job artifacts (the diff) in an object store: a local directory on the embedded default,
//! S3-compatible storage when scaled out.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("creating the artifact directory {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
}

#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
}

impl ArtifactStore {
    /// Artifacts as files under `dir`.
    pub fn local(dir: &Path) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Create {
            path: dir.display().to_string(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self {
            inner: Arc::new(fs),
        })
    }

    pub async fn put_diff(&self, job_id: &str, diff: Bytes) -> Result<(), ArtifactError> {
        self.inner
            .put(&diff_path(job_id), PutPayload::from_bytes(diff))
            .await?;
        Ok(())
    }

    pub async fn get_diff(&self, job_id: &str) -> Result<Bytes, ArtifactError> {
        Ok(self.inner.get(&diff_path(job_id)).await?.bytes().await?)
    }

    /// Removes the job's diff; one already gone is fine.
    pub async fn delete_diff(&self, job_id: &str) -> Result<(), ArtifactError> {
        match self.inner.delete(&diff_path(job_id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the store answers: a look-up of an object that is not there succeeds as "not
    /// found".
    pub async fn check(&self) -> Result<(), ArtifactError> {
        match self
            .inner
            .head(&ObjectPath::from("ckrv-readiness-probe"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Job ids are UUIDs the API generated, so they are safe path segments.
fn diff_path(job_id: &str) -> ObjectPath {
    ObjectPath::from_iter(["jobs", job_id, "diff.patch"])
}
