//! Where `ckrv` keeps things, which provider it uses and which API that provider talks to.
//!
//! The provider comes from `--provider`/`CKRV_PROVIDER`, else `provider` in
//! `<config dir>/config.toml`, else the built-in `chakravarti`. Its API URL comes from
//! `--api-url`/`CKRV_API_URL`, else `api_url` in that provider's `[providers.NAME]` table (or
//! the top-level `api_url`, which belongs to the file's provider), else the plugin's own default.
//! Directories follow the platform, overridable for tests and CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The provider this build carries, used unless another is chosen.
pub const BUILTIN: &str = "chakravarti";

#[derive(Debug, Clone)]
pub struct Config {
    /// The provider plugin every cloud command goes through.
    pub provider: String,
    /// The API URL the user configured for that provider, if any.
    api_url: Option<String>,
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Keep the session in the 0600 file, not the OS keyring.
    pub insecure_storage: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    provider: Option<String>,
    api_url: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSettings {
    api_url: Option<String>,
}

impl Config {
    /// Resolves the configuration; `provider` and `api_url` are the flag/env values if given.
    pub fn load(
        provider: Option<String>,
        api_url: Option<String>,
        insecure_storage: bool,
    ) -> anyhow::Result<Self> {
        let config_dir = env_dir("CKRV_CONFIG_DIR")
            .or_else(|| dirs::config_dir().map(|d| d.join("ckrv")))
            .context("no configuration directory: set CKRV_CONFIG_DIR")?;
        let cache_dir = env_dir("CKRV_CACHE_DIR")
            .or_else(|| dirs::cache_dir().map(|d| d.join("ckrv")))
            .unwrap_or_else(|| config_dir.join("cache"));
        let mut file = read_file(&config_dir.join("config.toml"))?;
        let file_provider = file.provider.clone().unwrap_or_else(|| BUILTIN.to_string());
        let provider = provider
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| file_provider.clone());
        let configured = file.providers.remove(&provider).and_then(|p| p.api_url);
        let top_level = file.api_url.filter(|_| provider == file_provider);
        let api_url = api_url
            .filter(|u| !u.trim().is_empty())
            .or(configured)
            .or(top_level)
            .map(|url| normalize_api_url(&url))
            .transpose()?;
        Ok(Self {
            provider,
            api_url,
            config_dir,
            cache_dir,
            insecure_storage,
        })
    }

    /// The API URL to use: the configured one, else the plugin's default.
    pub fn api_url(&self, plugin_default: Option<&str>) -> anyhow::Result<String> {
        match (&self.api_url, plugin_default) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(url)) => normalize_api_url(url),
            (None, None) => anyhow::bail!(
                "provider {} has no default API URL: pass --api-url, or set api_url under \
                 [providers.{}] in config.toml",
                self.provider,
                self.provider
            ),
        }
    }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn read_file(path: &Path) -> anyhow::Result<ConfigFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Checks the URL is http(s) with a host and drops a trailing slash.
pub fn normalize_api_url(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .with_context(|| format!("the API URL {url:?} is not a URL"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none() {
        anyhow::bail!("the API URL {url:?} must look like http://host:port or https://host");
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_are_checked_and_normalized() {
        assert_eq!(
            normalize_api_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_api_url(" https://api.example.com ").unwrap(),
            "https://api.example.com"
        );
        for bad in ["", "127.0.0.1:8080", "ftp://x", "not a url"] {
            let err = normalize_api_url(bad).unwrap_err().to_string();
            assert!(err.contains("API URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_config_file_names_the_api_and_bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "api_url = \"http://10.0.0.1:9000\"\n").unwrap();
        assert_eq!(
            read_file(&path).unwrap().api_url.as_deref(),
            Some("http://10.0.0.1:9000")
        );
        std::fs::write(
            &path,
            "provider = \"acme\"\n[providers.acme]\napi_url = \"https://acme.test\"\n",
        )
        .unwrap();
        let file = read_file(&path).unwrap();
        assert_eq!(file.provider.as_deref(), Some("acme"));
        assert_eq!(
            file.providers["acme"].api_url.as_deref(),
            Some("https://acme.test")
        );
        std::fs::write(&path, "api_ur = 1\n").unwrap();
        let err = format!("{:#}", read_file(&path).unwrap_err());
        assert!(err.contains("config.toml"), "{err}");
        assert!(
            read_file(&dir.path().join("none.toml"))
                .unwrap()
                .api_url
                .is_none()
        );
    }
}
