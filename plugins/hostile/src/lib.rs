//! A provider plugin that attacks its host, so the host's limits are tested against real guest
//! code: it spins forever, eats memory, and answers with text meant to drive a terminal. Built
//! only for `ckrv`'s tests; never shipped.

ckrv_wit::guest_bindings!("../../wit", "ckrv:cloud/provider-plugin");

use ckrv_wit::types::{
    ApiError, CredentialCreate, CredentialSummary, DeviceCodeResponse, ErrorKind, Group,
    GroupCreate, Job, JobCreate, JobListResponse, JobState, JobStatus, LogEntry, LogLevel,
    LogQuery, LogResponse, SnapshotSummary, TokenResponse, User, Webhook, WebhookCreate,
    WebhookDelivery,
};
use exports::ckrv::cloud::provider::{CallContext, Guest, PluginInfo};

struct Hostile;

fn refuse() -> ApiError {
    ApiError::new(ErrorKind::Forbidden, "the hostile plugin does not do that")
}

impl Guest for Hostile {
    /// A name that would escape the plugin directory and text meant to drive a terminal.
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "../chakravarti".into(),
            version: "1.0.0\u{1b}[2J".into(),
            description: "\u{1b}]0;pwned\u{7}a plugin that attacks its host".into(),
            default_api_url: Some("http://127.0.0.1:1".into()),
            origins: vec!["http://127.0.0.1:2".into(), "file:///etc/passwd".into()],
        }
    }

    fn login_start(_: CallContext) -> Result<DeviceCodeResponse, ApiError> {
        Err(refuse())
    }

    fn login_poll(_: CallContext, _: String) -> Result<TokenResponse, ApiError> {
        Err(refuse())
    }

    fn refresh(_: CallContext, _: String) -> Result<TokenResponse, ApiError> {
        Err(refuse())
    }

    fn logout(_: CallContext) -> Result<(), ApiError> {
        Err(refuse())
    }

    /// Spins forever without a single host call: only a CPU deadline stops it.
    fn whoami(_: CallContext) -> Result<User, ApiError> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn credentials_add(_: CallContext, _: CredentialCreate) -> Result<CredentialSummary, ApiError> {
        Err(refuse())
    }

    fn credentials_list(_: CallContext) -> Result<Vec<CredentialSummary>, ApiError> {
        Err(refuse())
    }

    fn credentials_remove(_: CallContext, _: String) -> Result<(), ApiError> {
        Err(refuse())
    }

    fn snapshots_list(_: CallContext) -> Result<Vec<SnapshotSummary>, ApiError> {
        Err(refuse())
    }

    fn snapshots_remove(_: CallContext, _: String) -> Result<(), ApiError> {
        Err(refuse())
    }

    fn webhooks_add(_: CallContext, _: WebhookCreate) -> Result<Webhook, ApiError> {
        Err(refuse())
    }

    fn webhooks_list(_: CallContext) -> Result<Vec<Webhook>, ApiError> {
        Err(refuse())
    }

    fn webhooks_remove(_: CallContext, _: String) -> Result<(), ApiError> {
        Err(refuse())
    }

    fn webhooks_rotate(_: CallContext, _: String) -> Result<Webhook, ApiError> {
        Err(refuse())
    }

    fn webhooks_deliveries(
        _: CallContext,
        _: Option<String>,
        _: Option<String>,
        _: u32,
    ) -> Result<Vec<WebhookDelivery>, ApiError> {
        Err(refuse())
    }

    fn webhooks_redeliver(_: CallContext, _: String) -> Result<WebhookDelivery, ApiError> {
        Err(refuse())
    }

    fn dispatch(_: CallContext, _: JobCreate, _: String) -> Result<Job, ApiError> {
        Err(refuse())
    }

    /// Grows its memory until the host's limit stops it.
    fn get_job(_: CallContext, _: String) -> Result<Job, ApiError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 16 * 1024 * 1024]);
            std::hint::black_box(&hoard);
        }
    }

    fn list_jobs(
        _: CallContext,
        _: Option<JobStatus>,
        _: Option<String>,
        _: u32,
    ) -> Result<JobListResponse, ApiError> {
        Err(refuse())
    }

    fn cancel_job(_: CallContext, _: String) -> Result<Job, ApiError> {
        Err(refuse())
    }

    fn dispatch_group(_: CallContext, _: GroupCreate) -> Result<Group, ApiError> {
        Err(refuse())
    }

    fn get_group(_: CallContext, _: String) -> Result<Group, ApiError> {
        Err(refuse())
    }

    fn cancel_group(_: CallContext, _: String) -> Result<Group, ApiError> {
        Err(refuse())
    }

    /// Log lines and an error meant to take over the terminal.
    fn read_logs(_: CallContext, _: String, query: LogQuery) -> Result<LogResponse, ApiError> {
        if query.after > 0 {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "\u{1b}]0;pwned\u{7}\u{1b}[2Jerror text that clears the screen",
            ));
        }
        Ok(LogResponse {
            logs: vec![LogEntry {
                timestamp: "2026-11-22T12:00:00Z".into(),
                level: LogLevel::Info,
                source: "agent".into(),
                message: "\u{1b}[31mred\u{1b}[0m\rhidden".into(),
                sequence: Some(1),
            }],
            next_after: Some(1),
            job_state: Some(JobState::Running),
        })
    }

    fn fetch_diff(_: CallContext, _: String) -> Result<Vec<u8>, ApiError> {
        Err(refuse())
    }
}

export!(Hostile);
