//! The WIT contract as Rust.
//!
//! [`types`] is generated from `types.wit` by this crate's build script; the API serializes it as
//! JSON, `ckrv` and `ckrv-orchestrator` pass it to components (feature `wasmtime`), and guests
//! map their bindings onto it (feature `guest`). [`WIT_DIR`] lets hosts and guests run their
//! `bindgen!`/`generate!` on the same files.

/// The directory holding the WIT package and its `deps/`.
pub const WIT_DIR: &str = env!("CARGO_MANIFEST_DIR");

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
        linker.instance("ckrv:cloud/types@0.1.0")?;
        Ok(())
    }
}

#[cfg(feature = "guest")]
pub mod guest;

mod job;

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
    fn enums_serialize_as_snake_case_strings() {
        assert_eq!(
            serde_json::to_string(&JobStatus::Succeeded).unwrap(),
            "\"succeeded\""
        );
        assert_eq!(
            serde_json::to_string(&ErrorKind::AuthorizationPending).unwrap(),
            "\"authorization_pending\""
        );
        assert_eq!(
            "quota_exceeded".parse::<ErrorKind>(),
            Ok(ErrorKind::QuotaExceeded)
        );
        assert!("Succeeded".parse::<JobStatus>().is_err());
    }

    #[test]
    fn records_use_snake_case_fields_and_null_for_absent_options() {
        let entry = LogEntry {
            sequence: 3,
            timestamp: "2026-11-22T12:00:00Z".into(),
            level: LogLevel::Info,
            source: "agent".into(),
            message: "hi".into(),
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["sequence"], 3);
        assert_eq!(json["level"], "info");

        let req: JobRequest = serde_json::from_str(
            r#"{"spec":"s","spec_path":"specs/a.md","repo_url":"u","base_branch":"main"}"#,
        )
        .unwrap();
        assert_eq!(req.credential, None);
        assert_eq!(req.spec_path, "specs/a.md");
    }

    #[test]
    fn the_oauth_error_shape_round_trips() {
        let err: ApiError =
            serde_json::from_str(r#"{"error":"slow_down","error_description":"wait"}"#).unwrap();
        assert_eq!(err.error, ErrorKind::SlowDown);
    }
}
