//! Attempt groups (docs/attempts.md): one spec run several times, by one or several agents, as
//! ordinary jobs that name their group. The group ranks them by evidence (`ckrv_wit::group`):
//! `ckrv status GROUP` shows why the best won, and `ckrv pull GROUP` applies it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::{ErrorKind, Group, GroupCreate, JobCreate};

use super::jobs::{Lineage, checked, make};
use super::lookup::id_prefix;
use crate::clock;
use crate::error::{ApiJson, AppError, invalid};
use crate::identity::extract::Session;
use crate::identity::quota;
use crate::jobs::JobsState;
use crate::store::{GroupLookup, GroupRow, JobRow};

/// The most attempts one group runs: each is a job of the account's quota, and they run side
/// by side.
pub const MAX_ATTEMPTS: u32 = 8;

pub async fn create(
    State(state): State<JobsState>,
    session: Session,
    ApiJson(request): ApiJson<GroupCreate>,
) -> Result<Response, AppError> {
    let GroupCreate {
        job,
        agents,
        attempts,
        stop_at_first_verified,
    } = request;
    if job.continues.is_some() || job.feedback.is_some() {
        return Err(invalid(
            "job.continues: a group's attempts start afresh; follow up one attempt instead",
        ));
    }
    let specs = specs_for(&job.spec_content, agents.as_deref())?;
    let per_agent = attempts.unwrap_or(1);
    let total = u32::try_from(specs.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(per_agent);
    if per_agent == 0 || total > MAX_ATTEMPTS {
        return Err(invalid(format!(
            "attempts: {per_agent} per agent for {} agent(s) is {total} attempts; a group runs 1 to {MAX_ATTEMPTS}",
            specs.len()
        )));
    }
    // Every attempt is checked as its own job would be, before any is made.
    let mut requests = Vec::with_capacity(specs.len());
    for (agent, spec) in specs {
        let request = JobCreate {
            spec_content: spec,
            ..job.clone()
        };
        let checked = checked(&state, &session, &request)
            .await
            .map_err(|e| match &agent {
                Some(agent) => e.prefixed(&format!("agent {agent}: ")),
                None => e,
            })?;
        requests.push((request, checked));
    }
    let account = session.account(&state.store).await?;
    let now = clock::now();
    let (cycle_start, cycle_end) = quota::cycle(now);
    let limit = quota::monthly_limit(account.tier);
    let used = state
        .store
        .jobs_created_since(&account.id, clock::millis(cycle_start))
        .await?;
    let left = limit.saturating_sub(used);
    if left < total {
        return Err(AppError::quota_exceeded(
            format!(
                "the group needs {total} jobs of this month's {} quota and {left} are left; it resets at {}",
                account.tier,
                clock::rfc3339(cycle_end)
            ),
            clock::rfc3339(cycle_end),
            state.billing_url.clone(),
        ));
    }
    let group = GroupRow {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.id.clone(),
        created_at: clock::rfc3339(now),
        stop_at_first_verified: stop_at_first_verified.unwrap_or(false),
    };
    state.store.insert_group(&group).await?;
    let mut made = Vec::new();
    let mut number = 0;
    for (request, (base_branch, publish)) in &requests {
        for _ in 0..per_agent {
            number += 1;
            let lineage = Lineage {
                publish: *publish,
                parent_id: None,
                group: Some((&group.id, number)),
            };
            match make(&state, &session, request, base_branch, lineage, None).await {
                Ok(job) => made.push(job.id),
                Err(refused) => {
                    // Another request took the quota meanwhile: no half group is left running.
                    for id in &made {
                        state.engine.cancel(id).await?;
                    }
                    return Err(refused);
                }
            }
        }
    }
    tracing::info!(group_id = %group.id, attempts = total, "attempt group created");
    let view = view(&state, group).await?;
    Ok((StatusCode::CREATED, ApiJson(view)).into_response())
}

pub async fn get(
    State(state): State<JobsState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Group>, AppError> {
    Ok(ApiJson(group_of(&state, &session, &id).await?))
}

/// The caller's group `id` (or a prefix of it), its attempts ranked.
pub(crate) async fn group_of(
    state: &JobsState,
    session: &Session,
    id: &str,
) -> Result<Group, AppError> {
    let group = resolve(state, session, id).await?;
    view(state, group).await
}

/// Cancels every attempt still waiting or running.
pub async fn cancel(
    State(state): State<JobsState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Group>, AppError> {
    let group = resolve(&state, &session, &id).await?;
    let mut cancelled = 0;
    for row in state.store.group_jobs(&group.id).await? {
        if state.engine.cancel(&row.job.id).await? {
            cancelled += 1;
        }
    }
    if cancelled == 0 {
        return Err(AppError::new(
            ErrorKind::Conflict,
            format!("every attempt of group {} already ended", group.id),
        ));
    }
    Ok(ApiJson(view(&state, group).await?))
}

/// The spec for each agent (`None`: the spec's own), as the attempts run it.
fn specs_for(
    spec: &str,
    agents: Option<&[String]>,
) -> Result<Vec<(Option<String>, String)>, AppError> {
    let Some(agents) = agents else {
        return Ok(vec![(None, spec.to_string())]);
    };
    if agents.is_empty() {
        return Err(invalid(
            "agents is empty: name at least one, or leave it out for the spec's own",
        ));
    }
    let mut specs: Vec<(Option<String>, String)> = Vec::with_capacity(agents.len());
    for agent in agents {
        let agent = agent.trim();
        if specs.iter().any(|(a, _)| a.as_deref() == Some(agent)) {
            return Err(invalid(format!(
                "agents names {agent} twice; ask for more attempts of it with attempts"
            )));
        }
        let rewritten = ckrv_agents::with_agent(spec, agent)
            .map_err(|e| invalid(format!("spec_content: {e}")))?;
        specs.push((Some(agent.to_string()), rewritten));
    }
    Ok(specs)
}

/// One of the account's groups by id or unique prefix.
async fn resolve(state: &JobsState, session: &Session, id: &str) -> Result<GroupRow, AppError> {
    let not_found = || AppError::new(ErrorKind::NotFound, format!("group not found: {id}"));
    let prefix = id_prefix("group", id).ok_or_else(not_found)??;
    match state.store.find_group(&session.account_id, &prefix).await? {
        GroupLookup::Found(group) => Ok(group),
        GroupLookup::NotFound => Err(not_found()),
        GroupLookup::Ambiguous => Err(invalid(format!(
            "group id prefix {id:?} matches more than one group; give more characters"
        ))),
    }
}

/// The group with its attempts ranked, best first, and why the best won.
async fn view(state: &JobsState, group: GroupRow) -> Result<Group, AppError> {
    let mut attempts: Vec<_> = state
        .store
        .group_jobs(&group.id)
        .await?
        .into_iter()
        .map(|row: JobRow| row.job)
        .collect();
    ckrv_wit::group::rank(&mut attempts);
    let (winner, reason) = ckrv_wit::group::winner(&attempts)
        .map(|(job, why)| (Some(job.id.clone()), Some(why)))
        .unwrap_or_default();
    Ok(Group {
        id: group.id,
        created_at: group.created_at,
        stop_at_first_verified: group.stop_at_first_verified,
        attempts,
        winner,
        reason,
    })
}
