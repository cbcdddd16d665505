//! `ckrv cloud whoami`: the account and its quota.

use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, json: bool) -> anyhow::Result<()> {
    let user = cloud.call(async |p, ctx| p.whoami(ctx).await).await?;
    if json {
        return output::json(&user);
    }
    output::ok(format!("Logged in as {}", user.email));
    let remaining = match user.job_quota_limit {
        Some(limit) => format!("{} of {limit}", user.job_quota_remaining),
        None => user.job_quota_remaining.to_string(),
    };
    output::line(format!(
        "Subscription: {} ({remaining} jobs remaining this month)",
        output::title(user.subscription_tier.as_str()),
    ));
    output::line(format!("Quota resets: {}", user.billing_cycle_end));
    if let Some(cost) = user.model_cost_usd {
        output::line(format!("Model spend this month: ${cost:.4}"));
    }
    output::line(format!("Provider: {}", cloud.provider_name));
    output::line(format!("API: {}", cloud.api_url));
    match cloud.stored_in() {
        Some(location) => output::line(format!("Session stored in: {location}")),
        None => output::line("Session: CKRV_TOKEN (not stored)"),
    }
    Ok(())
}
