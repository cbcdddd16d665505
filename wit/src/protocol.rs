//! Constants of the HTTP protocol that client and server must spell the same way.

/// RFC 8628 §3.4: the `grant_type` of a device-code token request.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 6749 §6: the `grant_type` of a refresh request.
pub const REFRESH_TOKEN_GRANT: &str = "refresh_token";

/// The OAuth `client_id` the `ckrv` CLI (through its provider plugin) identifies as.
pub const CLI_CLIENT_ID: &str = "ckrv-cli";

/// The `token_type` of every access token the API issues.
pub const BEARER: &str = "Bearer";
