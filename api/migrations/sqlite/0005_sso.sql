-- Single sign-on attempts between the redirect to the team's OpenID provider and its answer:
-- the PKCE verifier and the nonce, found by the hash of the `state` sent along, used once.
CREATE TABLE sso_logins (
    state_hash TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
