//! `ckrv cloud logout`: revoke the session at the API and forget it here.

use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud) -> anyhow::Result<()> {
    if !cloud.has_session() {
        output::line("Not logged in.");
        return Ok(());
    }
    // Forget the local session even when the API cannot be told; say so.
    let revoked = cloud.call(async |p, ctx| p.logout(ctx).await).await;
    cloud.forget_session()?;
    match revoked {
        Ok(()) => output::ok("Logged out"),
        Err(e) => {
            output::ok("Logged out on this machine");
            eprintln!("warning: the API did not revoke the session: {e:#}");
        }
    }
    Ok(())
}
