//! Where `ckrv` keeps things and which API it talks to.
//!
//! The API URL comes from `--api-url`/`CKRV_API_URL`, else `api_url` in `<config dir>/config.toml`,
//! else the local default. Directories follow the platform, overridable for tests and CI.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The API a fresh install talks to: the embedded default on this machine.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone)]
pub struct Config {
    pub api_url: String,
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Keep the session in the 0600 file, not the OS keyring.
    pub insecure_storage: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    api_url: Option<String>,
}

impl Config {
    /// Resolves the configuration; `api_url` is the flag/env value if given.
    pub fn load(api_url: Option<String>, insecure_storage: bool) -> anyhow::Result<Self> {
        let config_dir = env_dir("CKRV_CONFIG_DIR")
            .or_else(|| dirs::config_dir().map(|d| d.join("ckrv")))
            .context("no configuration directory: set CKRV_CONFIG_DIR")?;
        let cache_dir = env_dir("CKRV_CACHE_DIR")
            .or_else(|| dirs::cache_dir().map(|d| d.join("ckrv")))
            .unwrap_or_else(|| config_dir.join("cache"));
        let file = read_file(&config_dir.join("config.toml"))?;
        let api_url = api_url
            .filter(|u| !u.trim().is_empty())
            .or(file.api_url)
            .unwrap_or_else(|| DEFAULT_API_URL.to_string());
        Ok(Self {
            api_url: normalize_api_url(&api_url)?,
            config_dir,
            cache_dir,
            insecure_storage,
        })
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
