//! `ckrv cloud login`: the RFC 8628 device flow.

use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use ckrv_wit::types::ErrorKind;

use crate::browser;
use crate::cloud::{Cloud, describe};
use crate::output;
use crate::session::Session;

/// RFC 8628 §3.5: on `slow_down`, wait this much longer from then on.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The device flow; with `open_browser`, the activation page (with the code filled in) opens
/// in the browser where a desktop session exists.
pub async fn run(cloud: &mut Cloud, open_browser: bool) -> anyhow::Result<()> {
    let anonymous = cloud.anonymous();
    let device = cloud
        .provider
        .login_start(&anonymous)
        .await?
        .map_err(describe)?;
    output::ok("Device Code Generated");
    output::line(format!("Visit: {}", device.verification_uri));
    output::line(format!("Enter code: {}", device.user_code));
    output::blank();
    if open_browser && browser::desktop_session(|name| std::env::var(name).ok()) {
        let page = device
            .verification_uri_complete
            .as_deref()
            .unwrap_or(&device.verification_uri);
        match browser::open(page) {
            Ok(()) => output::line("Opened your browser; check that it shows the code above."),
            Err(error) => tracing::warn!(%error, "not opening the activation page"),
        }
    }
    output::line("Waiting for authorization...");

    let mut interval = Duration::from_secs(u64::from(device.interval.max(1)));
    let deadline = Instant::now() + Duration::from_secs(u64::from(device.expires_in));
    let tokens = loop {
        if Instant::now() >= deadline {
            anyhow::bail!("the code expired before it was approved: run `ckrv cloud login` again");
        }
        tokio::time::sleep(interval).await;
        match cloud
            .provider
            .login_poll(&anonymous, &device.device_code)
            .await?
        {
            Ok(tokens) => break tokens,
            Err(e) => match e.error {
                ErrorKind::AuthorizationPending => {}
                ErrorKind::SlowDown => interval += SLOW_DOWN_STEP,
                ErrorKind::ExpiredToken => anyhow::bail!(
                    "the code expired before it was approved: run `ckrv cloud login` again"
                ),
                ErrorKind::AccessDenied => anyhow::bail!("the login was denied"),
                _ => return Err(describe(e)),
            },
        }
    };
    cloud.save_session(Session::device(
        cloud.api_url.clone(),
        tokens.access_token,
        tokens.refresh_token,
    ))?;
    report(cloud, "").await
}

/// `--with-token`: a personal access token from standard input, checked before it is stored.
pub async fn with_token(cloud: &mut Cloud) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the token from standard input")?;
    let token = input.trim();
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        anyhow::bail!(
            "no token on standard input: pipe one in, e.g. `ckrv-api users token you@example.com | ckrv cloud login --with-token`"
        );
    }
    let session = Session::personal(cloud.api_url.clone(), token.to_string());
    // Tried before it is stored: a bad token replaces nothing that worked.
    cloud.use_session(session.clone());
    cloud
        .call(async |p, ctx| p.whoami(ctx).await)
        .await
        .context("the token was not accepted; nothing was stored")?;
    cloud.save_session(session)?;
    report(cloud, " (personal access token)").await
}

async fn report(cloud: &mut Cloud, how: &str) -> anyhow::Result<()> {
    let user = cloud.call(async |p, ctx| p.whoami(ctx).await).await?;
    output::ok(format!("Authenticated as {}{how}", user.email));
    output::line(format!(
        "Subscription: {} ({} jobs remaining this month)",
        output::title(user.subscription_tier.as_str()),
        user.job_quota_remaining
    ));
    Ok(())
}
