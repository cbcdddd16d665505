//! `ckrv cloud whoami`: the account and its quota.

use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, json: bool) -> anyhow::Result<()> {
    let user = cloud.call(async |p, ctx| p.whoami(ctx).await).await?;
    if json {
        return output::json(&user);
    }
    output::ok(format!("Logged in as {}", user.email));
    output::line(format!(
        "Subscription: {} ({} of {} jobs remaining this month)",
        output::title(user.tier.as_str()),
        user.quota.remaining,
        user.quota.limit
    ));
    output::line(format!("Quota resets: {}", user.quota.cycle_end));
    output::line(format!("API: {}", cloud.api_url));
    Ok(())
}
