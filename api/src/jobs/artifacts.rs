//! Job artifacts (the diff and the archived log) in an object store: a local directory on the
//! embedded default, an S3-compatible bucket when scaled out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("creating the artifact directory {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "artifact store {value:?}: {reason}; give s3://BUCKET/PREFIX for S3-compatible storage \
         or a directory"
    )]
    Location { value: String, reason: String },
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
}

/// Where artifacts go, as the operator wrote it in `--artifacts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactLocation {
    /// Files under a directory of this machine.
    Directory(PathBuf),
    /// Objects in an S3-compatible bucket, under `prefix`. Credentials and region come from
    /// the standard AWS environment variables.
    S3 {
        bucket: String,
        prefix: String,
        /// A server other than AWS (MinIO, Ceph, R2 …).
        endpoint: Option<String>,
    },
}

impl ArtifactLocation {
    /// `s3://BUCKET[/PREFIX]`, `file:///DIR` or a directory path.
    pub fn parse(value: &str, endpoint: Option<String>) -> Result<Self, ArtifactError> {
        let refuse = |reason: &str| ArtifactError::Location {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(refuse(
                    "a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if ObjectPath::parse(prefix).is_err() || prefix.split('/').any(|s| s == "..") {
                return Err(refuse("the prefix is not a valid object path"));
            }
            if let Some(endpoint) = &endpoint {
                let scheme = url::Url::parse(endpoint).map(|u| u.scheme().to_string());
                if !matches!(scheme.as_deref(), Ok("http" | "https")) {
                    return Err(refuse("the endpoint must be an http:// or https:// URL"));
                }
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint,
            });
        }
        if endpoint.is_some() {
            return Err(refuse("an endpoint applies only to s3:// locations"));
        }
        if let Some(dir) = value.strip_prefix("file://") {
            return Ok(Self::Directory(PathBuf::from(dir)));
        }
        if value.contains("://") {
            return Err(refuse("unsupported scheme"));
        }
        if value.is_empty() {
            return Err(refuse("empty"));
        }
        Ok(Self::Directory(PathBuf::from(value)))
    }

    /// For the start-up log line: where, never with credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Directory(dir) => dir.display().to_string(),
            Self::S3 {
                bucket,
                prefix,
                endpoint,
            } => {
                let at = endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default();
                format!("s3://{bucket}/{prefix}{at}")
            }
        }
    }
}

/// S3's naming rules, enough to catch a typo before the first request.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
}

impl ArtifactStore {
    pub fn open(location: &ArtifactLocation) -> Result<Self, ArtifactError> {
        match location {
            ArtifactLocation::Directory(dir) => Self::local(dir),
            ArtifactLocation::S3 {
                bucket,
                prefix,
                endpoint,
            } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = endpoint {
                    // Plain HTTP only where the operator named an http:// server.
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let s3 = builder.build()?;
                let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                };
                Ok(Self { inner })
            }
        }
    }

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
        self.put(&job_object(job_id, DIFF), diff).await
    }

    pub async fn get_diff(&self, job_id: &str) -> Result<Bytes, ArtifactError> {
        self.get(&job_object(job_id, DIFF)).await
    }

    /// Writes a finished job's archived log in parts, so a long one is never held whole.
    /// Nothing is visible until the writer is shut down.
    pub fn log_writer(&self, job_id: &str) -> BufWriter {
        BufWriter::new(Arc::clone(&self.inner), job_object(job_id, LOG))
    }

    /// A finished job's archived log as it arrives.
    pub async fn log_reader(
        &self,
        job_id: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, ArtifactError> {
        self.stream(&job_object(job_id, LOG)).await
    }

    /// Writes an account's snapshot in parts; nothing is visible until the writer is shut
    /// down.
    pub fn snapshot_writer(&self, account_id: &str, key: &str) -> BufWriter {
        BufWriter::new(Arc::clone(&self.inner), snapshot_object(account_id, key))
    }

    /// An account's snapshot as it arrives.
    pub async fn snapshot_reader(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, ArtifactError> {
        self.stream(&snapshot_object(account_id, key)).await
    }

    /// An object's bytes as they arrive.
    async fn stream(
        &self,
        path: &ObjectPath,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, ArtifactError> {
        Ok(self.inner.get(path).await?.into_stream())
    }

    /// Removes an account's snapshot; already gone is fine.
    pub async fn delete_snapshot(&self, account_id: &str, key: &str) -> Result<(), ArtifactError> {
        match self.inner.delete(&snapshot_object(account_id, key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the job's diff and archived log; either already gone is fine.
    pub async fn delete_job(&self, job_id: &str) -> Result<(), ArtifactError> {
        for name in [DIFF, LOG] {
            match self.inner.delete(&job_object(job_id, name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether the store answers. A listing, not a look-up: S3 answers a look-up in a bucket
    /// that does not exist with the same bare 404 as a missing object.
    pub async fn check(&self) -> Result<(), ArtifactError> {
        self.inner
            .list_with_delimiter(Some(&ObjectPath::from("ckrv-readiness-probe")))
            .await?;
        Ok(())
    }

    async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), ArtifactError> {
        self.inner.put(path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    async fn get(&self, path: &ObjectPath) -> Result<Bytes, ArtifactError> {
        Ok(self.inner.get(path).await?.bytes().await?)
    }
}

const DIFF: &str = "diff.patch";
const LOG: &str = "log.jsonl";

/// Account ids are UUIDs the API generated and keys 64 hex digits (the route checks): safe
/// path segments.
fn snapshot_object(account_id: &str, key: &str) -> ObjectPath {
    ObjectPath::from_iter(["snapshots", account_id, &format!("{key}.tar.zst")])
}

/// Job ids are UUIDs the API generated, so they are safe path segments.
fn job_object(job_id: &str, name: &str) -> ObjectPath {
    ObjectPath::from_iter(["jobs", job_id, name])
}

impl From<ArtifactError> for crate::error::AppError {
    fn from(error: ArtifactError) -> Self {
        tracing::error!(%error, "artifact store failure");
        crate::error::AppError::new(
            ckrv_wit::types::ErrorKind::Unavailable,
            "the artifact store did not answer; try again shortly",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_bad_ones_say_why() {
        assert_eq!(
            ArtifactLocation::parse("s3://ckrv-artifacts/prod/eu/", None).unwrap(),
            ArtifactLocation::S3 {
                bucket: "ckrv-artifacts".into(),
                prefix: "prod/eu".into(),
                endpoint: None
            }
        );
        assert_eq!(
            ArtifactLocation::parse("/var/lib/ckrv", None).unwrap(),
            ArtifactLocation::Directory("/var/lib/ckrv".into())
        );
        assert_eq!(
            ArtifactLocation::parse("file:///srv/a", None).unwrap(),
            ArtifactLocation::Directory("/srv/a".into())
        );
        for (bad, why) in [
            ("s3://Upper/x", "bucket name"),
            ("s3://ab", "bucket name"),
            ("s3://bucket/a/../b", "prefix"),
            ("gs://bucket", "unsupported scheme"),
            ("", "empty"),
        ] {
            let error = ArtifactLocation::parse(bad, None).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.contains("s3://BUCKET/PREFIX"), "{error}");
        }
        let error = ArtifactLocation::parse("s3://bucket", Some("ftp://x".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("http:// or https://"), "{error}");
        let error = ArtifactLocation::parse("/dir", Some("http://127.0.0.1:9000".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("only to s3://"), "{error}");
    }
}
