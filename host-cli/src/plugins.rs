//! Installed provider plugins: `<config dir>/plugins/NAME/` holds `plugin.wasm` and the
//! `plugin.toml` manifest written at install. The built-in `chakravarti` is always there.
//!
//! A plugin is loaded only when its bytes match the digest its manifest recorded, and may call
//! only the configured API and the origins the user approved when installing it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ckrv_wasm_host::Origin;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{BUILTIN, normalize_api_url};
use crate::plugin_host::{Access, CHAKRAVARTI_PLUGIN, CHAKRAVARTI_SHA256, PluginInfo};

/// What `ckrv plugin install` recorded about a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// The plugin's own version, as it describes itself.
    pub version: String,
    /// The `ckrv:cloud` WIT version it was built for.
    pub world: String,
    pub description: String,
    /// Where it came from: a path, a URL, or `built in`.
    pub source: String,
    /// SHA-256 (hex) of `plugin.wasm`.
    pub sha256: String,
    /// The origins it may call besides the API, as the user approved them.
    pub origins: Vec<String>,
    /// The API it uses when the user configures none.
    pub default_api_url: Option<String>,
    pub installed_at: Option<String>,
}

impl Manifest {
    /// What the plugin may reach once `api_url` is chosen.
    pub fn access(&self, api_url: &str) -> anyhow::Result<Access> {
        let origins = self
            .origins
            .iter()
            .map(|o| Origin::parse(o).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("plugin {}'s manifest is damaged", self.name))?;
        Ok(Access {
            api_url: api_url.to_string(),
            origins,
        })
    }
}

/// A plugin ready to load: its manifest and bytes, checked against each other.
pub struct Plugin {
    pub manifest: Manifest,
    pub bytes: std::borrow::Cow<'static, [u8]>,
}

/// The plugins directory.
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn new(config_dir: &Path) -> Self {
        Self {
            dir: config_dir.join("plugins"),
        }
    }

    fn builtin() -> Plugin {
        Plugin {
            manifest: Manifest {
                name: BUILTIN.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                world: ckrv_wit::WIT_VERSION.to_string(),
                description:
                    "The Chakravarti API: hosted, or `ckrv-api serve` on your own machines"
                        .to_string(),
                source: "built in".to_string(),
                sha256: CHAKRAVARTI_SHA256.to_string(),
                origins: Vec::new(),
                default_api_url: Some(ckrv_wit::protocol::DEFAULT_API_URL.to_string()),
                installed_at: None,
            },
            bytes: std::borrow::Cow::Borrowed(CHAKRAVARTI_PLUGIN),
        }
    }

    /// Every plugin's manifest, the built-in one first, then by name.
    pub fn list(&self) -> anyhow::Result<Vec<Manifest>> {
        let mut manifests = vec![Self::builtin().manifest];
        let mut names = self.installed_names()?;
        names.sort();
        for name in names {
            match self.manifest(&name) {
                Ok(manifest) => manifests.push(manifest),
                Err(e) => tracing::warn!(plugin = %name, error = %format!("{e:#}"), "skipping"),
            }
        }
        Ok(manifests)
    }

    fn installed_names(&self) -> anyhow::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("plugin.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| check_name(name).is_ok())
            .collect())
    }

    fn manifest(&self, name: &str) -> anyhow::Result<Manifest> {
        let path = self.dir.join(name).join("plugin.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Whether a plugin called `name` is installed (the built-in one is not installed).
    pub fn is_installed(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.dir.join(name).join("plugin.toml").is_file()
    }

    /// The plugin called `name`, its bytes checked against the digest recorded at install.
    pub fn get(&self, name: &str) -> anyhow::Result<Plugin> {
        if name == BUILTIN {
            return Ok(Self::builtin());
        }
        if !self.is_installed(name) {
            let installed: Vec<String> = self.list()?.into_iter().map(|m| m.name).collect();
            anyhow::bail!(
                "unknown provider '{}': installed are {}; add one with `ckrv plugin install PATH`",
                crate::output::printable(name),
                installed.join(", ")
            );
        }
        let manifest = self.manifest(name)?;
        let path = self.dir.join(name).join("plugin.wasm");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if sha256 != manifest.sha256 {
            anyhow::bail!(
                "plugin {name} is damaged: {} has SHA-256 {sha256}, not the {} recorded at \
                 install; reinstall it with `ckrv plugin install {} --name {name} --force`",
                path.display(),
                manifest.sha256,
                manifest.source
            );
        }
        Ok(Plugin {
            manifest,
            bytes: std::borrow::Cow::Owned(bytes),
        })
    }

    /// Writes the plugin under `manifest.name`, replacing one there only when `force`.
    pub fn install(&self, manifest: &Manifest, bytes: &[u8], force: bool) -> anyhow::Result<()> {
        let name = &manifest.name;
        check_name(name)?;
        if name == BUILTIN {
            anyhow::bail!("`{BUILTIN}` is built in; install this plugin under another --name");
        }
        let target = self.dir.join(name);
        if target.exists() && !force {
            anyhow::bail!(
                "a plugin named {name} is installed already: remove it first \
                 (`ckrv plugin remove {name}`), pass --force to replace it, or choose --name"
            );
        }
        create_private_dir(&self.dir)?;
        // Written beside the target and renamed into place: a crash leaves no half plugin.
        let staging = tempfile::Builder::new()
            .prefix(".installing-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("writing under {}", self.dir.display()))?;
        std::fs::write(staging.path().join("plugin.wasm"), bytes)?;
        std::fs::write(
            staging.path().join("plugin.toml"),
            toml::to_string(manifest).context("writing the manifest")?,
        )?;
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .with_context(|| format!("replacing {}", target.display()))?;
        }
        std::fs::rename(staging.keep(), &target)
            .with_context(|| format!("writing {}", target.display()))?;
        Ok(())
    }

    /// Removes an installed plugin; the built-in one cannot be.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        if name == BUILTIN {
            anyhow::bail!("`{BUILTIN}` is built into ckrv and cannot be removed");
        }
        self.get(name).map(drop).or_else(|e| {
            // A damaged plugin can still be removed.
            if self.dir.join(name).join("plugin.toml").is_file() && check_name(name).is_ok() {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let path = self.dir.join(name);
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))
    }
}

/// Plugin names are directory names and command-line words: `[a-z0-9-]`, 1 to 40 characters,
/// starting with a letter.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "`{}` is not a plugin name: use lowercase letters, digits and '-', starting with a \
             letter (at most 40)",
            crate::output::printable(name)
        )
    }
}

/// What a plugin describes, checked before anything is written: its name (unless the user
/// chose one), its version, and each origin it asks for.
pub fn checked_manifest(
    info: &PluginInfo,
    name: Option<&str>,
    source: &str,
    bytes: &[u8],
) -> anyhow::Result<Manifest> {
    let name = match name {
        Some(name) => name.to_string(),
        None => {
            check_name(&info.name)
                .context("the plugin's own name cannot be used; choose --name")?;
            info.name.clone()
        }
    };
    check_name(&name)?;
    let printable =
        |text: &str| !text.is_empty() && text.len() <= 200 && !text.chars().any(char::is_control);
    if !printable(&info.version) {
        anyhow::bail!("the plugin's version is not printable text");
    }
    if !info.description.is_empty() && !printable(&info.description) {
        anyhow::bail!("the plugin's description is not printable text");
    }
    let origins = info
        .origins
        .iter()
        .map(|o| {
            Origin::parse(o).map(|o| o.to_string()).map_err(|e| {
                anyhow::anyhow!(
                    "the plugin asks to call `{}`, which is not an origin \
                     (scheme://host[:port]): {e}",
                    crate::output::printable(o)
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(url) = &info.default_api_url {
        normalize_api_url(url).context("the plugin's default API URL")?;
    }
    Ok(Manifest {
        name,
        version: info.version.clone(),
        world: ckrv_wit::WIT_VERSION.to_string(),
        description: info.description.clone(),
        source: source.to_string(),
        sha256: hex::encode(Sha256::digest(bytes)),
        origins,
        default_api_url: info.default_api_url.clone(),
        installed_at: Some(ckrv_wit::timestamp::now()),
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "acme".into(),
            version: "1.2.3".into(),
            description: "Acme's cloud".into(),
            default_api_url: Some("https://api.acme.test".into()),
            origins: vec!["https://downloads.acme.test".into()],
        }
    }

    #[test]
    fn the_built_in_digest_is_the_built_in_plugin_s() {
        assert_eq!(
            Registry::builtin().manifest.sha256,
            hex::encode(Sha256::digest(CHAKRAVARTI_PLUGIN))
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["acme", "github-actions", "a1"] {
            check_name(good).unwrap();
        }
        for bad in ["", "../x", "Acme", "1acme", "a b", "a/b", &"a".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn install_get_list_remove_round_trip_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let manifest = checked_manifest(&info(), None, "./acme.wasm", b"bytes").unwrap();
        registry.install(&manifest, b"bytes", false).unwrap();
        assert_eq!(registry.get("acme").unwrap().manifest, manifest);
        let names: Vec<String> = registry
            .list()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["chakravarti", "acme"]);

        let err = registry.install(&manifest, b"other", false).unwrap_err();
        assert!(err.to_string().contains("installed already"), "{err}");
        registry.install(&manifest, b"bytes", true).unwrap();

        std::fs::write(dir.path().join("plugins/acme/plugin.wasm"), b"tampered").unwrap();
        let err = format!("{:#}", registry.get("acme").err().unwrap());
        assert!(
            err.contains("plugin acme is damaged") && err.contains("--force"),
            "{err}"
        );

        let err = format!("{:#}", registry.get("nope").err().unwrap());
        assert!(
            err.contains("unknown provider 'nope'") && err.contains("chakravarti, acme"),
            "{err}"
        );

        registry.remove("acme").unwrap();
        assert!(registry.get("acme").is_err());
        assert!(registry.remove(BUILTIN).is_err());
        assert!(registry.remove("../plugins").is_err());
    }

    #[test]
    fn what_a_plugin_declares_is_checked() {
        let mut bad = info();
        bad.name = "../chakravarti".into();
        let err = format!("{:#}", checked_manifest(&bad, None, "x", b"").unwrap_err());
        assert!(err.contains("choose --name"), "{err}");
        assert_eq!(
            checked_manifest(&bad, Some("mine"), "x", b"").unwrap().name,
            "mine"
        );

        let mut bad = info();
        bad.origins.push("file:///etc/passwd".into());
        let err = checked_manifest(&bad, None, "x", b"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("file:///etc/passwd") && err.contains("not an origin"),
            "{err}"
        );

        let mut bad = info();
        bad.version = "1\u{1b}[2J".into();
        assert!(checked_manifest(&bad, None, "x", b"").is_err());

        let registry = Registry::new(tempfile::tempdir().unwrap().path());
        let manifest = checked_manifest(&info(), Some(BUILTIN), "x", b"").unwrap();
        let err = registry.install(&manifest, b"", false).unwrap_err();
        assert!(err.to_string().contains("built in"), "{err}");
    }
}
