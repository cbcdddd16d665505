//! A provider plugin plus the stored session: every cloud command calls through here, which
//! adds the access token, refreshes it once when the API says it expired, and turns the API's
//! errors into messages that say what to do.

use anyhow::Context as _;
use ckrv_wit::types::{ApiError, ErrorKind, Job};

use crate::config::BUILTIN;
use crate::config::Config;
use crate::plugin_host::{CallContext, CallResult, Provider};
use crate::plugins::Registry;
use crate::session::{Location, Session, SessionStore};

pub struct Cloud {
    pub provider: Provider,
    /// The provider plugin's name.
    pub provider_name: String,
    pub api_url: String,
    /// The worktree's `origin`, passed to plugins whose jobs belong to a repository.
    repository: Option<String>,
    store: SessionStore,
    stored_in: Option<Location>,
    session: Option<Session>,
    /// Why there is no usable session, when there is none.
    missing: String,
}

impl Cloud {
    /// Loads the plugin and the session for the configured API (`CKRV_TOKEN` wins over the
    /// stored one). Contacts nothing.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        // The worktree's `origin`, asked of git while the plugin loads. The built-in provider's
        // jobs do not belong to a worktree: it is spared the git call.
        let origin = (config.provider != BUILTIN).then(|| {
            std::thread::spawn(|| {
                std::env::current_dir()
                    .ok()
                    .and_then(|cwd| crate::git::origin_url(&cwd).ok())
            })
        });
        let plugin = Registry::new(&config.config_dir).get(&config.provider)?;
        let api_url = config.api_url(plugin.manifest.default_api_url.as_deref())?;
        let access = plugin.manifest.access(&api_url)?;
        let store = SessionStore::new(
            &config.config_dir,
            &config.provider,
            &api_url,
            config.insecure_storage,
        );
        let mut missing = "not authenticated: run `ckrv cloud login`".to_string();
        let mut stored_in = None;
        let session = match std::env::var("CKRV_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(token) => Some(Session::personal(api_url.clone(), token)),
            None => match store.load()? {
                Some((s, location)) if s.api_url == api_url => {
                    stored_in = Some(location);
                    Some(s)
                }
                Some((s, _)) => {
                    missing = format!(
                        "not authenticated with {}: your session is for {}; run `ckrv cloud login`",
                        api_url, s.api_url
                    );
                    None
                }
                None => None,
            },
        };
        let provider = Provider::load_verified(
            &plugin.bytes,
            &plugin.manifest.sha256,
            &access,
            &config.cache_dir,
        )
        .await
        .with_context(|| format!("loading provider plugin {}", config.provider))?;
        let repository = origin.and_then(|asked| asked.join().ok().flatten());
        Ok(Self {
            provider,
            provider_name: config.provider.clone(),
            api_url,
            repository,
            store,
            session,
            stored_in,
            missing,
        })
    }

    /// A context without a token, for the login calls.
    pub fn anonymous(&self) -> CallContext {
        self.context(None)
    }

    fn context(&self, access_token: Option<String>) -> CallContext {
        CallContext {
            api_url: self.api_url.clone(),
            access_token,
            repository: self.repository.clone(),
        }
    }

    pub fn save_session(&mut self, session: Session) -> anyhow::Result<()> {
        self.stored_in = Some(self.store.save(&session)?);
        self.session = Some(session);
        Ok(())
    }

    /// Where the session in use is kept: `None` for `CKRV_TOKEN`, which is not stored.
    pub fn stored_in(&self) -> Option<&Location> {
        self.stored_in.as_ref()
    }

    /// Forgets the stored session; true if there was one.
    pub fn forget_session(&mut self) -> anyhow::Result<bool> {
        self.session = None;
        self.stored_in = None;
        self.store.delete()
    }

    /// Uses `session` for the calls that follow, without storing it.
    pub fn use_session(&mut self, session: Session) {
        self.session = Some(session);
    }

    /// The session in use, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The job `id` names; one that is not there says how to find the right id.
    pub async fn job(&mut self, id: &str) -> anyhow::Result<Job> {
        match self
            .call_raw(async |p, ctx| p.get_job(ctx, id).await)
            .await?
        {
            Ok(job) => Ok(job),
            Err(e) if e.error == ErrorKind::NotFound => anyhow::bail!(
                "{}: no job {} for this account at {}\n  `ckrv list` shows your jobs; \
                 `--provider` and `--api-url` choose where to look",
                e.description(),
                crate::output::printable(id),
                self.api_url
            ),
            Err(e) => Err(describe(e)),
        }
    }

    /// The job `id` names or, when no job has that id, the attempt group (docs/attempts.md).
    pub async fn job_or_group(&mut self, id: &str) -> anyhow::Result<Found> {
        match self
            .call_raw(async |p, ctx| p.get_job(ctx, id).await)
            .await?
        {
            Ok(job) => return Ok(Found::Job(Box::new(job))),
            Err(e) if e.error == ErrorKind::NotFound => {}
            Err(e) => return Err(describe(e)),
        }
        match self
            .call_raw(async |p, ctx| p.get_group(ctx, id).await)
            .await?
        {
            Ok(group) => Ok(Found::Group(Box::new(group))),
            // A provider without groups says so, which would hide that the job was not found.
            Err(e) if matches!(e.error, ErrorKind::NotFound | ErrorKind::Forbidden) => {
                self.job(id).await.map(|job| Found::Job(Box::new(job)))
            }
            Err(e) => Err(describe(e)),
        }
    }

    /// Calls the plugin as the signed-in user.
    pub async fn call<T>(
        &mut self,
        call: impl AsyncFnMut(&mut Provider, &CallContext) -> CallResult<T>,
    ) -> anyhow::Result<T> {
        self.call_raw(call).await?.map_err(describe)
    }

    /// As [`Cloud::call`], leaving the API's refusal to the caller, for commands that handle
    /// some (a `not_found` that is fine, say).
    pub async fn call_raw<T>(
        &mut self,
        mut call: impl AsyncFnMut(&mut Provider, &CallContext) -> CallResult<T>,
    ) -> anyhow::Result<Result<T, ApiError>> {
        let Some(session) = self.session.clone() else {
            anyhow::bail!("{}", self.missing);
        };
        let ctx = self.context(Some(session.access_token.clone()));
        match call(&mut self.provider, &ctx).await? {
            Err(e) if e.error == ErrorKind::NotAuthenticated && session.refresh_token.is_some() => {
                tracing::debug!("access token refused; refreshing");
            }
            answer => return Ok(answer),
        }
        let refresh_token = session.refresh_token.unwrap_or_default();
        let tokens = match self
            .provider
            .refresh(&self.anonymous(), &refresh_token)
            .await?
        {
            Ok(tokens) => tokens,
            Err(e) if e.error == ErrorKind::InvalidGrant => {
                anyhow::bail!("your session has expired or was revoked: run `ckrv cloud login`")
            }
            Err(e) => return Err(describe(e)),
        };
        // RFC 6749 §6: a server that issues no new refresh token leaves the old one valid.
        let renewed = Session::device(
            self.api_url.clone(),
            tokens.access_token,
            tokens.refresh_token.or(Some(refresh_token)),
        );
        let ctx = self.context(Some(renewed.access_token.clone()));
        self.save_session(renewed)?;
        Ok(call(&mut self.provider, &ctx).await?)
    }
}

/// What an id names: a job, or an attempt group.
pub enum Found {
    Job(Box<Job>),
    Group(Box<ckrv_wit::types::Group>),
}

/// The API's error as a message for a person.
pub fn describe(error: ApiError) -> anyhow::Error {
    let description = error.description();
    match error.error {
        ErrorKind::NotAuthenticated => {
            anyhow::anyhow!("not authenticated ({description}): run `ckrv cloud login`")
        }
        ErrorKind::QuotaExceeded => {
            let mut message = format!("quota exceeded: {description}");
            if let Some(resets) = &error.quota_resets_at {
                message.push_str(&format!("\n  wait for the quota to reset at {resets}"));
            }
            if let Some(url) = &error.upgrade_url {
                message.push_str(&format!("\n  or upgrade your subscription at {url}"));
            }
            message.push_str("\n  see your quota with `ckrv cloud whoami`");
            anyhow::anyhow!(message)
        }
        ErrorKind::Forbidden => anyhow::anyhow!("forbidden: {description}"),
        ErrorKind::Unavailable => anyhow::anyhow!(
            "{description}\n  check that the service is running and that --api-url (or api_url in \
             config.toml) names it; `ckrv cloud whoami` shows which API is in use\n  or run the \
             spec on this machine instead: `ckrv run --spec FILE` (without --cloud)"
        ),
        _ => anyhow::anyhow!("{description}"),
    }
}
