//! Single sign-on through a team's OpenID Connect provider (`openidconnect`): the authorization
//! code flow with PKCE, a nonce and a state, and an ID token checked for its issuer, audience,
//! signature, expiry and nonce. A person gets in only with a verified email that matches an
//! account, or whose domain the operator allows (an account is then created).

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse as _,
};
use zeroize::Zeroizing;

/// The operator's settings for the provider.
#[derive(Clone)]
pub struct SsoConfig {
    /// Shown on the sign-in button: "Sign in with NAME".
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Zeroizing<String>>,
    /// Emails of these domains get an account on first sign-in; others need one made first.
    pub allowed_domains: Vec<String>,
}

impl std::fmt::Debug for SsoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("allowed_domains", &self.allowed_domains)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("the single sign-on issuer {0} is not a URL")]
    Issuer(String),
    #[error("the sign-on callback {0} is not a URL")]
    Redirect(String),
    #[error("cannot reach the single sign-on provider: {0}")]
    Discovery(String),
    #[error("the provider refused the sign-in: {0}")]
    Exchange(String),
    #[error("the provider's answer did not check out: {0}")]
    IdToken(String),
    #[error("the provider did not vouch for an email address")]
    NoEmail,
    #[error("the provider has not verified {0}")]
    Unverified(String),
}

/// Where a started sign-in goes, and what its answer is checked against.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// One provider, discovered on first use.
pub struct Sso {
    config: SsoConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: openidconnect::reqwest::Client,
    metadata: tokio::sync::OnceCell<CoreProviderMetadata>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso").field("config", &self.config).finish()
    }
}

/// The path the provider sends people back to.
pub const CALLBACK_PATH: &str = "/signin/sso/callback";

impl Sso {
    pub fn new(config: SsoConfig, public_url: &str) -> Result<Self, SsoError> {
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|_| SsoError::Issuer(config.issuer.clone()))?;
        let callback = format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/'));
        let redirect =
            RedirectUrl::new(callback.clone()).map_err(|_| SsoError::Redirect(callback))?;
        // Following redirects would let a provider's answer send the server elsewhere.
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| SsoError::Discovery(e.to_string()))?;
        Ok(Self {
            config,
            issuer,
            redirect,
            http,
            metadata: tokio::sync::OnceCell::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    async fn client(
        &self,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SsoError,
    > {
        let metadata = self
            .metadata
            .get_or_try_init(|| async {
                CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                    .await
                    .map_err(|e| SsoError::Discovery(chain(&e)))
            })
            .await?
            .clone();
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.to_string())),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// A new sign-in: where to send the person, and what to keep until they come back.
    pub async fn start(&self) -> Result<Started, SsoError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code and checks the ID token; returns the verified email it vouches for.
    pub async fn finish(
        &self,
        code: String,
        pkce_verifier: String,
        nonce: String,
    ) -> Result<String, SsoError> {
        let client = self.client().await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SsoError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| SsoError::Exchange(chain(&e)))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| SsoError::IdToken("no ID token".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce))
            .map_err(|e| SsoError::IdToken(e.to_string()))?;
        if let Some(email) = claims.email() {
            return verified(email.to_string(), claims.email_verified());
        }
        // Many providers keep the email out of the ID token: ask the UserInfo endpoint, for
        // the subject the ID token named.
        let info: openidconnect::core::CoreUserInfoClaims = client
            .user_info(
                tokens.access_token().clone(),
                Some(claims.subject().clone()),
            )
            .map_err(|e| SsoError::IdToken(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| SsoError::IdToken(chain(&e)))?;
        let email = info.email().ok_or(SsoError::NoEmail)?.to_string();
        verified(email, info.email_verified())
    }

    /// Whether an email's domain gets an account on first sign-in.
    pub fn domain_allowed(&self, email: &str) -> bool {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        self.config
            .allowed_domains
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(domain))
    }
}

/// The email, if the provider says it verified it.
fn verified(email: String, email_verified: Option<bool>) -> Result<String, SsoError> {
    if email_verified == Some(true) {
        Ok(email)
    } else {
        Err(SsoError::Unverified(email))
    }
}

/// An error with its causes, for a log line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
