//! The WIT contract as Rust.
//!
//! [`types`] is generated from `types.wit` by this crate's build script; the API serializes it as
//! JSON, `ckrv` and `ckrv-orchestrator` pass it to components (feature `wasmtime`), and guests
//! map their bindings onto it (feature `guest`). [`WIT_DIR`] lets hosts and guests run their
//! `bindgen!`/`generate!` on the same files.

/// The directory holding the WIT package and its `deps/`.
pub const WIT_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The version of the `ckrv:cloud` package: a provider plugin or step exports its interface
/// under it (`ckrv:cloud/provider@0.5.0`), and hosts load only components built for it.
pub const WIT_VERSION: &str = "0.5.0";

/// A JSON Schema of every type in [`types`], keyed by its Rust name (`Job`, `LogEntry` …),
/// generated with it: the API's OpenAPI document takes its `components.schemas` from here.
pub const JSON_SCHEMAS: &str = include_str!(concat!(env!("OUT_DIR"), "/schemas.json"));

/// Shared models of the `ckrv:cloud/types` interface.
#[allow(clippy::all, missing_docs)]
pub mod types {
    include!(concat!(env!("OUT_DIR"), "/types.rs"));

    #[cfg(feature = "wasmtime")]
    pub use crate::host_link::*;
}

/// What wasmtime's `bindgen!` expects of an interface mapped with `with`. `types` declares no
/// functions, so linking it adds nothing.
#[cfg(feature = "wasmtime")]
mod host_link {
    pub trait HostWithStore<T>: wasmtime::component::HasData {}
    impl<H: ?Sized, T> HostWithStore<T> for H where H: wasmtime::component::HasData {}

    pub trait Host {}
    impl<T: Host + ?Sized> Host for &mut T {}

    /// Links the (function-less) `types` interface.
    pub fn add_to_linker<T, D>(
        linker: &mut wasmtime::component::Linker<T>,
        _host_getter: fn(&mut T) -> D::Data<'_>,
    ) -> wasmtime::Result<()>
    where
        D: HostWithStore<T>,
        for<'a> D::Data<'a>: Host,
        T: 'static,
    {
        linker.instance("ckrv:cloud/types@0.5.0")?;
        Ok(())
    }
}

#[cfg(feature = "guest")]
pub mod guest;

mod error;
pub mod group;
mod job;
pub mod log_page;
pub mod origin;
pub mod programs;
pub mod protocol;
pub mod repo_url;
#[cfg(feature = "timestamps")]
pub mod timestamp;

/// A string that names no case of a WIT enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {type_name}")]
pub struct UnknownCase {
    pub type_name: &'static str,
    pub value: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::types::*;

    #[test]
    fn the_wit_version_is_the_packages() {
        for (file, text) in [
            ("types.wit", include_str!("../types.wit")),
            ("provider.wit", include_str!("../provider.wit")),
            ("step.wit", include_str!("../step.wit")),
        ] {
            let package = format!("package ckrv:cloud@{};", super::WIT_VERSION);
            assert!(text.contains(&package), "{file} does not declare {package}");
        }
    }

    #[test]
    fn enums_serialize_as_snake_case_strings() {
        assert_eq!(
            serde_json::to_string(&JobStatus::Succeeded).unwrap(),
            "\"succeeded\""
        );
        assert_eq!(
            serde_json::to_string(&CredentialType::DeployKey).unwrap(),
            "\"deploy_key\""
        );
        assert_eq!(
            "quota_exceeded".parse::<ErrorKind>(),
            Ok(ErrorKind::QuotaExceeded)
        );
        assert!("Succeeded".parse::<JobStatus>().is_err());
        assert!("cancelled".parse::<JobStatus>().is_err());
        assert_eq!("cancelled".parse::<JobState>(), Ok(JobState::Cancelled));
    }

    #[test]
    fn absent_options_are_left_out_and_read_back_from_absent_or_null() {
        let entry = LogEntry {
            sequence: None,
            timestamp: "2026-11-22T12:00:00Z".into(),
            level: LogLevel::Info,
            source: "agent".into(),
            message: "hi".into(),
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["level"], "info");
        assert!(json.get("sequence").is_none(), "{json}");

        let create: JobCreate = serde_json::from_str(
            r#"{"spec_content":"s","git_repo_url":"u","git_credential_name":null}"#,
        )
        .unwrap();
        assert_eq!(create.git_base_branch, None);
        assert_eq!(create.git_credential_name, None);
        assert_eq!(JobCreate::JSON_FIELDS[0], "spec_content");
    }

    #[test]
    fn a_job_from_a_server_that_knows_only_the_contract_reads() {
        let job: Job = serde_json::from_str(
            r#"{"id":"3f8a9b2c-1234-5678-abcd-ef0123456789","status":"failed",
                "git_repo_url":"https://git.example.com/r.git","git_base_branch":"main",
                "feature_branch_name":null,"created_at":"2026-11-22T12:00:00Z",
                "started_at":null,"completed_at":"2026-11-22T12:05:00Z",
                "result_status":"failed","result_summary":null,"error_message":"boom"}"#,
        )
        .unwrap();
        assert_eq!(job.state, None);
        assert_eq!(job.lifecycle(), JobState::Failed);
        assert_eq!(job.error_message.as_deref(), Some("boom"));
    }

    #[test]
    fn both_error_shapes_of_the_contract_read() {
        let err: ApiError =
            serde_json::from_str(r#"{"error":"slow_down","error_description":"wait"}"#).unwrap();
        assert_eq!(err.error, ErrorKind::SlowDown);
        assert_eq!(err.description(), "wait");
        let quota: ApiError = serde_json::from_str(
            r#"{"error":"quota_exceeded","message":"all used","quota_resets_at":"2026-12-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(quota.description(), "all used");
        assert_eq!(
            ApiError::new(ErrorKind::NotFound, "gone").description(),
            "gone"
        );
    }

    #[test]
    fn secrets_never_print_in_debug() {
        let tokens = TokenResponse {
            access_token: "ckrv_at_s3cret".into(),
            refresh_token: Some("ckrv_rt_s3cret".into()),
            token_type: "Bearer".into(),
            expires_in: 3600,
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("expires_in: 3600"), "{shown}");
        let credential = CredentialCreate {
            name: "github-work".into(),
            provider: GitProvider::Github,
            credential_type: CredentialType::Pat,
            value: "ghp_s3cret".into(),
            username: None,
        };
        assert!(!format!("{credential:?}").contains("s3cret"));
    }
}
