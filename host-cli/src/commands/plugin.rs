//! `ckrv plugin install|list|remove`: provider plugins from files or https URLs, checked
//! before they are written: a component, built for this release's WIT, with a digest the user
//! gave (required for a URL), asking only for origins the user approves.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::cli::{PluginCommand, PluginInstallArgs};
use crate::config::Config;
use crate::output;
use crate::plugin_host::{Access, PluginError, Provider};
use crate::plugins::{self, Manifest, Registry};

/// The largest plugin accepted.
const MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;

pub async fn run(config: &Config, command: PluginCommand) -> anyhow::Result<()> {
    let registry = Registry::new(&config.config_dir);
    match command {
        PluginCommand::Install(args) => install(config, &registry, args).await,
        PluginCommand::List { json } => list(&registry, json),
        PluginCommand::Check(args) => super::plugin_check::run(config, args).await,
        PluginCommand::Remove { name } => {
            registry.remove(&name)?;
            output::ok(format!("Removed plugin {name}"));
            Ok(())
        }
    }
}

async fn install(
    config: &Config,
    registry: &Registry,
    args: PluginInstallArgs,
) -> anyhow::Result<()> {
    let expected = args.sha256.as_deref().map(parse_sha256).transpose()?;
    let (bytes, source) = if is_url(&args.source) {
        let Some(expected) = expected else {
            anyhow::bail!(
                "installing from a URL needs the file's digest: pass --sha256 HEX as its \
                 publisher gives it"
            );
        };
        let bytes = download(&args.source).await?;
        check_digest(&bytes, &expected, &args.source)?;
        (bytes, args.source.clone())
    } else {
        let path = std::path::Path::new(&args.source);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let source = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        if let Some(expected) = expected {
            check_digest(&bytes, &expected, &args.source)?;
        }
        (bytes, source)
    };
    // Loaded with no network at all: describing itself needs none.
    let mut plugin = Provider::load(&bytes, &Access::default(), &config.cache_dir)
        .await
        .map_err(|e| match e {
            PluginError::Host(ckrv_wasm_host::HostError::Load(e)) => anyhow::anyhow!(
                "{} is not a WebAssembly component ({e:#}); a provider plugin is built with \
                 `cargo build --release --target wasm32-wasip2`",
                args.source
            ),
            e => anyhow::anyhow!("{}: {e}", args.source),
        })?;
    let info = plugin
        .describe()
        .await
        .with_context(|| format!("asking {} what it is", args.source))?;
    let manifest = plugins::checked_manifest(&info, args.name.as_deref(), &source, &bytes)?;
    if !manifest.origins.is_empty() && !args.yes {
        approve(&manifest)?;
    }
    registry.install(&manifest, &bytes, args.force)?;
    if args.json {
        return output::json(&manifest);
    }
    output::ok(format!(
        "Installed plugin {} {} (ckrv:cloud@{})",
        manifest.name, manifest.version, manifest.world
    ));
    output::line(format!("From: {}", manifest.source));
    output::line(format!("SHA-256: {}", manifest.sha256));
    output::line(format!("May call: {}", reach(&manifest)));
    output::blank();
    output::line(format!(
        "Use it:  ckrv --provider {} cloud login   (or provider = \"{}\" in config.toml)",
        manifest.name, manifest.name
    ));
    Ok(())
}

fn list(registry: &Registry, json: bool) -> anyhow::Result<()> {
    let manifests = registry.list()?;
    if json {
        return output::json(&manifests);
    }
    let rows: Vec<[String; 6]> = manifests
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.version.clone(),
                m.world.clone(),
                m.source.clone(),
                m.sha256.get(..12).unwrap_or(&m.sha256).to_string(),
                reach(m),
            ]
        })
        .collect();
    for line in output::table(
        &["NAME", "VERSION", "WIT", "SOURCE", "SHA-256", "MAY CALL"],
        &rows,
    ) {
        output::emit(line);
    }
    Ok(())
}

/// What a plugin may reach, in words.
fn reach(manifest: &Manifest) -> String {
    let mut reach = vec!["the configured API".to_string()];
    reach.extend(manifest.origins.iter().cloned());
    reach.join(", ")
}

/// Asks the user to approve the origins a plugin asks for; without a terminal, refuses.
fn approve(manifest: &Manifest) -> anyhow::Result<()> {
    let listed = manifest.origins.join("\n  ");
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        anyhow::bail!(
            "plugin {} asks to call, besides the configured API:\n  {listed}\n  nothing was \
             installed; approve with --yes",
            manifest.name
        );
    }
    eprintln!(
        "Plugin {} asks to call, besides the configured API:\n  {listed}",
        manifest.name
    );
    if output::ask_yes("Allow?")? {
        Ok(())
    } else {
        anyhow::bail!("not installed")
    }
}

fn is_url(source: &str) -> bool {
    source.contains("://")
}

fn parse_sha256(value: &str) -> anyhow::Result<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(value.trim(), &mut digest).map_err(|_| {
        anyhow::anyhow!("--sha256 must be 64 hexadecimal characters, as `sha256sum` prints")
    })?;
    Ok(digest)
}

/// Refuses bytes whose SHA-256 is not the one the user gave.
fn check_digest(bytes: &[u8], expected: &[u8; 32], source: &str) -> anyhow::Result<()> {
    let actual: [u8; 32] = Sha256::digest(bytes).into();
    if &actual != expected {
        anyhow::bail!(
            "{source} has SHA-256 {}, not the {} given: nothing was installed",
            hex::encode(actual),
            hex::encode(expected)
        );
    }
    Ok(())
}

/// Downloads a plugin over https (plain http only from this machine, for development).
async fn download(url: &str) -> anyhow::Result<Vec<u8>> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    check_download_url(&parsed)?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if check_download_url(attempt.url()).is_err() {
                attempt.error("redirected off https")
            } else {
                attempt.follow()
            }
        }))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .context("starting the HTTP client")?;
    let mut response = client
        .get(parsed)
        .send()
        .await
        .with_context(|| format!("downloading {url}"))?;
    if !response.status().is_success() {
        anyhow::bail!(
            "downloading {url}: the server answered {}",
            response.status()
        );
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("downloading {url}"))?
    {
        if bytes.len() + chunk.len() > MAX_PLUGIN_BYTES {
            anyhow::bail!(
                "{url} is larger than {} MiB; not a plugin",
                MAX_PLUGIN_BYTES >> 20
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// https anywhere; http only to a loopback address.
fn check_download_url(url: &url::Url) -> anyhow::Result<()> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => anyhow::bail!(
            "{url}: plugins are downloaded over https only (plain http only from this machine)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_urls_must_be_https_except_on_this_machine() {
        for good in [
            "https://plugins.example.com/p.wasm",
            "http://127.0.0.1:8000/p.wasm",
            "http://[::1]/p.wasm",
            "http://localhost/p.wasm",
        ] {
            check_download_url(&url::Url::parse(good).unwrap()).unwrap();
        }
        for bad in [
            "http://plugins.invalid/p.wasm",
            "ftp://127.0.0.1/p.wasm",
            "file:///p.wasm",
        ] {
            let err = check_download_url(&url::Url::parse(bad).unwrap()).unwrap_err();
            assert!(err.to_string().contains("https only"), "{bad}: {err}");
        }
    }

    #[test]
    fn digests_are_hex_and_checked() {
        assert!(parse_sha256("abc").is_err());
        let digest: [u8; 32] = Sha256::digest(b"plugin").into();
        check_digest(b"plugin", &digest, "x").unwrap();
        let err = check_digest(b"other", &digest, "p.wasm")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing was installed"), "{err}");
        assert_eq!(parse_sha256(&hex::encode(digest)).unwrap(), digest);
    }
}
