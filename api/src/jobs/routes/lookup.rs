//! Finding one of the caller's jobs by its id or a unique prefix of it, as `ckrv status 1a2b`
//! does: every route that names a job, and the console's pages, look it up here.

use ckrv_wit::types::ErrorKind;

use crate::error::{AppError, invalid};
use crate::identity::extract::Session;
use crate::jobs::JobsState;
use crate::store::{JobLookup, JobRow};

/// The shortest prefix looked for.
const MIN_PREFIX: usize = 4;

/// An id, or a prefix of one, as a look-up takes it (lower case): `None` when it cannot name
/// a `what` (ids are UUIDs; anything else cannot match, nor smuggle LIKE wildcards), an error
/// when it is too short to look for.
pub(crate) fn id_prefix(what: &str, id: &str) -> Option<Result<String, AppError>> {
    if id.len() < MIN_PREFIX {
        return Some(Err(invalid(format!(
            "{what} id {id:?} is too short: give at least {MIN_PREFIX} characters"
        ))));
    }
    id.chars()
        .all(|c| c.is_ascii_hexdigit() || c == '-')
        .then(|| Ok(id.to_ascii_lowercase()))
}

/// Resolves a job id or unique prefix among the caller's jobs.
pub(crate) async fn resolve(
    state: &JobsState,
    session: &Session,
    id: &str,
) -> Result<JobRow, AppError> {
    let not_found = || AppError::new(ErrorKind::NotFound, format!("job not found: {id}"));
    let prefix = id_prefix("job", id).ok_or_else(not_found)??;
    match state.store.find_job(&session.account_id, &prefix).await? {
        JobLookup::Found(row) => Ok(*row),
        JobLookup::NotFound => Err(not_found()),
        JobLookup::Ambiguous => Err(invalid(format!(
            "job id prefix {id:?} matches more than one job: give more characters"
        ))),
    }
}
