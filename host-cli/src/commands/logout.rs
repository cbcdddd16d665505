//! `ckrv cloud logout`: forget the session here and end it at the API. A personal access token
//! outlives the logout unless `--revoke` says otherwise: like gh, logging out of one machine
//! must not break the CI jobs and other machines that share the token.

use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, revoke: bool) -> anyhow::Result<()> {
    let Some(session) = cloud.session() else {
        output::line("Not logged in.");
        return Ok(());
    };
    let personal = session.is_personal_access_token();
    if cloud.stored_in().is_none() && !revoke {
        // CKRV_TOKEN: nothing is stored here to forget.
        anyhow::bail!(
            "the session comes from CKRV_TOKEN, which is not stored: unset it to log out here, \
             or add --revoke to revoke the token at the service"
        );
    }
    if personal && !revoke {
        cloud.forget_session()?;
        output::ok("Logged out on this machine");
        output::line(
            "The personal access token still works elsewhere; `ckrv cloud logout --revoke` \
             revokes it (log in with it again first), or an administrator can with \
             `ckrv-api users revoke-token`.",
        );
        return Ok(());
    }
    // Forget the local session even when the API cannot be told; say so.
    let revoked = cloud.call(async |p, ctx| p.logout(ctx).await).await;
    cloud.forget_session()?;
    match revoked {
        Ok(()) if personal => output::ok("Logged out; the personal access token is revoked"),
        Ok(()) => output::ok("Logged out"),
        Err(e) => {
            output::ok("Logged out on this machine");
            eprintln!("warning: the API did not revoke the session: {e:#}");
        }
    }
    Ok(())
}
