//! `ckrv cloud login`: the RFC 8628 device flow.

use std::time::{Duration, Instant};

use ckrv_wit::types::ErrorKind;

use crate::cloud::{Cloud, describe};
use crate::output;
use crate::session::Session;

/// RFC 8628 §3.5: on `slow_down`, wait this much longer from then on.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

pub async fn run(cloud: &mut Cloud) -> anyhow::Result<()> {
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
    cloud.save_session(Session {
        api_url: cloud.api_url.clone(),
        access_token: tokens.access_token,
        refresh_token: Some(tokens.refresh_token),
    })?;
    let user = cloud.call(async |p, ctx| p.whoami(ctx).await).await?;
    output::ok(format!("Authenticated as {}", user.email));
    output::line(format!(
        "Subscription: {} ({} jobs remaining this month)",
        output::title(user.tier.as_str()),
        user.quota.remaining
    ));
    Ok(())
}
