//! The routes of jobs: what users call (create, read, list, cancel, logs, the diff) and what a
//! job's worker calls (`/v1/worker/…`).

pub(crate) mod account_snapshots;
pub(crate) mod artifacts;
pub(crate) mod follow_ups;
pub(crate) mod groups;
pub(crate) mod jobs;
pub(crate) mod logs;
pub(crate) mod lookup;
pub(crate) mod snapshots;
pub(crate) mod worker;

use axum::extract::DefaultBodyLimit;
use axum::routing::on;
use ckrv_wit::protocol::paths;
use ckrv_wit::types::ErrorKind;

use crate::error::AppError;
use crate::jobs::JobsState;
use crate::route::{
    Auth, Content, Method, Operation, Param, Route, answering, op, with_body, with_query,
};

/// The largest diff a worker may upload.
const MAX_DIFF_BYTES: usize = 64 * 1024 * 1024;

/// 410 for a job whose diff and log were removed under the retention rule.
fn expired(job_id: &str, when: &str) -> AppError {
    AppError::new(
        ErrorKind::Gone,
        format!(
            "job {job_id}'s diff and log expired at {when} under this server's retention; the \
             job itself is still listed"
        ),
    )
}

const LIMIT_100: &str = r#"{"type": "integer", "minimum": 1, "maximum": 100, "default": 20}"#;
const LIMIT_10K: &str = r#"{"type": "integer", "minimum": 1, "maximum": 10000}"#;
const SEQUENCE: &str = r#"{"type": "integer", "minimum": 0}"#;

/// What users call about their jobs, then what a job's worker calls.
pub const ROUTES: &[Route<JobsState>] = &[
    Route::new(
        Operation {
            headers: &[Param {
                name: "Idempotency-Key",
                schema: r#"{"type": "string", "minLength": 1, "maxLength": 255}"#,
                description: "The same key and body within a day answer with the same job",
            }],
            ..answering(
                with_body(
                    op(
                        Method::Post,
                        paths::JOBS,
                        "createJob",
                        "Dispatch a job",
                        Auth::User,
                    ),
                    Content::Json("JobCreate"),
                ),
                &[(201, Content::Json("Job"))],
            )
        },
        |method| on(method, jobs::create),
    ),
    Route::new(
        answering(
            with_query(
                op(
                    Method::Get,
                    paths::JOBS,
                    "listJobs",
                    "The account's jobs, newest first",
                    Auth::User,
                ),
                &[
                    Param {
                        name: "status",
                        schema: r##"{"$ref": "#/components/schemas/JobStatus"}"##,
                        description: "Only jobs in this status",
                    },
                    Param {
                        name: "limit",
                        schema: LIMIT_100,
                        description: "Jobs per page",
                    },
                    Param {
                        name: "cursor",
                        schema: r#"{"type": "string"}"#,
                        description: "`next_cursor` of the previous page",
                    },
                ],
            ),
            &[(200, Content::Json("JobListResponse"))],
        ),
        |method| on(method, jobs::list),
    ),
    Route::new(
        answering(
            op(Method::Get, paths::JOB, "getJob", "One job", Auth::User),
            &[(200, Content::Json("Job"))],
        ),
        |method| on(method, jobs::get),
    ),
    Route::new(
        answering(
            op(
                Method::Post,
                paths::JOB_CANCEL,
                "cancelJob",
                "Cancel a job and stop its worker",
                Auth::User,
            ),
            &[(200, Content::Json("Job"))],
        ),
        |method| on(method, jobs::cancel),
    ),
    Route::new(
        answering(
            with_query(
                op(
                    Method::Get,
                    paths::JOB_LOGS,
                    "getJobLogs",
                    "A job's log: a page, or a live stream with follow=true",
                    Auth::User,
                ),
                &[
                    Param {
                        name: "follow",
                        schema: r#"{"type": "boolean", "default": false}"#,
                        description: "Stream as server-sent events until the job ends",
                    },
                    Param {
                        name: "after",
                        schema: SEQUENCE,
                        description: "Only entries with a higher sequence",
                    },
                    Param {
                        name: "tail",
                        schema: SEQUENCE,
                        description: "Only the last this many entries",
                    },
                    Param {
                        name: "limit",
                        schema: LIMIT_10K,
                        description: "At most this many entries",
                    },
                    Param {
                        name: "wait_ms",
                        schema: r#"{"type": "integer", "minimum": 0, "maximum": 30000}"#,
                        description: "While no entry is there and the job runs, wait up to this many milliseconds for one",
                    },
                ],
            ),
            &[(200, Content::Json("LogResponse"))],
        ),
        |method| on(method, logs::read),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::JOB_DIFF,
                "getJobDiff",
                "A succeeded job's diff, as `git apply` reads it",
                Auth::User,
            ),
            &[(200, Content::Text("text/plain"))],
        ),
        |method| on(method, artifacts::diff),
    ),
    Route::new(
        answering(
            with_body(
                op(
                    Method::Post,
                    paths::GROUPS,
                    "createGroup",
                    "Run one spec several times, by one or several agents (docs/attempts.md)",
                    Auth::User,
                ),
                Content::Json("GroupCreate"),
            ),
            &[(201, Content::Json("Group"))],
        ),
        |method| on(method, groups::create),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::GROUP,
                "getGroup",
                "An attempt group, its attempts ranked best first",
                Auth::User,
            ),
            &[(200, Content::Json("Group"))],
        ),
        |method| on(method, groups::get),
    ),
    Route::new(
        answering(
            op(
                Method::Post,
                paths::GROUP_CANCEL,
                "cancelGroup",
                "Cancel every attempt of a group still waiting or running",
                Auth::User,
            ),
            &[(200, Content::Json("Group"))],
        ),
        |method| on(method, groups::cancel),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::SNAPSHOTS,
                "listSnapshots",
                "The account's snapshots of repository setups, most recently used first",
                Auth::User,
            ),
            &[(200, Content::Json("SnapshotList"))],
        ),
        |method| on(method, account_snapshots::list),
    ),
    Route::new(
        op(
            Method::Delete,
            paths::SNAPSHOT,
            "removeSnapshot",
            "Drop one of the account's snapshots, by its key or a unique prefix",
            Auth::User,
        ),
        |method| on(method, account_snapshots::remove),
    ),
    Route::new(
        answering(
            op(
                Method::Post,
                paths::WORKER_CLAIM,
                "claimJob",
                "An external worker claims the next job",
                Auth::WorkerCredential,
            ),
            &[(200, Content::Json("WorkerClaim")), (204, Content::None)],
        ),
        |method| on(method, worker::claim),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::WORKER_JOB,
                "getWorkerJob",
                "The job and its spec, for its worker",
                Auth::Worker,
            ),
            &[(200, Content::Json("WorkerJob"))],
        ),
        |method| on(method, worker::job),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::WORKER_COMPONENT,
                "getPipelineComponent",
                "A step component of the pipeline, by its SHA-256",
                Auth::Worker,
            ),
            &[(200, Content::Text("application/wasm"))],
        ),
        |method| on(method, worker::component),
    ),
    Route::new(
        answering(
            op(
                Method::Post,
                paths::WORKER_HEARTBEAT,
                "renewLease",
                "Renew the worker's lease; the answer carries its agent's refused connections",
                Auth::Worker,
            ),
            &[
                (200, Content::Json("HeartbeatAnswer")),
                (204, Content::None),
            ],
        ),
        |method| on(method, worker::heartbeat),
    ),
    Route::new(
        with_body(
            op(
                Method::Post,
                paths::WORKER_PHASE,
                "reportPhase",
                "Report the job's phase",
                Auth::Worker,
            ),
            Content::Json("PhaseUpdate"),
        ),
        |method| on(method, worker::phase),
    ),
    Route::new(
        with_body(
            op(
                Method::Post,
                paths::WORKER_LOGS,
                "appendLogs",
                "Append numbered log lines",
                Auth::Worker,
            ),
            Content::Json("LogBatch"),
        ),
        |method| on(method, worker::logs),
    ),
    Route::new(
        with_body(
            op(
                Method::Put,
                paths::WORKER_DIFF,
                "uploadDiff",
                "Upload the job's diff",
                Auth::Worker,
            ),
            Content::Text("text/x-diff"),
        ),
        |method| on(method, worker::diff).layer(DefaultBodyLimit::max(MAX_DIFF_BYTES)),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::WORKER_SNAPSHOT,
                "getSnapshot",
                "The job's account's snapshot of a repository setup, by key",
                Auth::Worker,
            ),
            &[(200, Content::Text("application/octet-stream"))],
        ),
        |method| on(method, snapshots::get),
    ),
    Route::new(
        with_body(
            op(
                Method::Put,
                paths::WORKER_SNAPSHOT,
                "putSnapshot",
                "Save a snapshot of the repository's setup for the job's account",
                Auth::Worker,
            ),
            Content::Text("application/octet-stream"),
        ),
        // Streamed and bounded by the operator's --max-snapshot-mb instead.
        |method| on(method, snapshots::put).layer(DefaultBodyLimit::disable()),
    ),
    Route::new(
        with_body(
            op(
                Method::Post,
                paths::WORKER_RESULT,
                "reportResult",
                "Report the diff's statistics",
                Auth::Worker,
            ),
            Content::Json("DiffStats"),
        ),
        |method| on(method, worker::result),
    ),
    Route::new(
        with_body(
            op(
                Method::Post,
                paths::WORKER_COMPLETE,
                "completeJob",
                "End the job",
                Auth::Worker,
            ),
            Content::Json("JobCompletion"),
        ),
        |method| on(method, worker::complete),
    ),
    Route::new(
        with_body(
            op(
                Method::Put,
                paths::WORKER_PUBLICATION,
                "reportPublication",
                "Report where the job's result was published",
                Auth::Worker,
            ),
            Content::Json("Publication"),
        ),
        |method| on(method, worker::publication),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::WORKER_START_DIFF,
                "getStartDiff",
                "A follow-up's start: the change of the job it follows up",
                Auth::Worker,
            ),
            &[(200, Content::Text("text/x-diff"))],
        ),
        |method| on(method, worker::start_diff),
    ),
];
