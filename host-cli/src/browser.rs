//! Opening the activation page for `ckrv cloud login`, as gh does: only where a person sits at
//! a desktop (never over SSH, never on Linux without a display), and only web URLs, since the
//! URL comes from a provider. The URL is always printed too, so nothing depends on it opening.

/// Whether a browser opened here would be in front of the person running `ckrv`.
pub fn desktop_session(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    if ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"]
        .into_iter()
        .any(set)
    {
        return false;
    }
    cfg!(any(target_os = "macos", target_os = "windows"))
        || set("DISPLAY")
        || set("WAYLAND_DISPLAY")
}

/// Opens `url` in the person's browser (`$BROWSER` where set); an error says why it did not.
/// It does not wait for the browser.
pub fn open(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url)?;
    if !matches!(parsed.scheme(), "https" | "http") {
        anyhow::bail!("{} is not a web page", parsed.scheme());
    }
    let url = parsed.to_string();
    // A text-mode browser would block until closed; the login polls meanwhile.
    std::thread::spawn(move || {
        if let Err(error) = webbrowser::open(&url) {
            tracing::warn!(%error, "opening the browser");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn never_over_ssh_and_on_linux_only_with_a_display() {
        assert!(desktop_session(env(&[("DISPLAY", ":0")])));
        assert!(desktop_session(env(&[("WAYLAND_DISPLAY", "wayland-0")])));
        for ssh in ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"] {
            assert!(
                !desktop_session(env(&[("DISPLAY", ":0"), (ssh, "10.0.0.1 22")])),
                "{ssh}"
            );
        }
        if cfg!(target_os = "linux") {
            assert!(!desktop_session(env(&[])));
            assert!(!desktop_session(env(&[("DISPLAY", "")])));
        }
    }

    #[test]
    fn only_web_pages_are_opened() {
        for url in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "-oProxy",
            "mailto:x@y",
        ] {
            assert!(open(url).is_err(), "{url}");
        }
    }
}
