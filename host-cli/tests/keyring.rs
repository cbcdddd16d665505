//! The session in the OS keyring: a real Secret Service (GNOME Keyring on a private D-Bus), the
//! fallback to the 0600 file where no keyring answers, and `--insecure-storage`.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{Env, NO_BUS};

/// What `secret-tool` finds for ckrv's entry of `api_url` on `bus` (empty when none).
fn keyring_entry(bus: &str, api_url: &str) -> String {
    let out = Command::new("secret-tool")
        .args([
            "lookup",
            "service",
            "ckrv",
            "username",
            &format!("chakravarti@{api_url}"),
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_lives_in_the_keyring_where_there_is_one_and_in_the_file_where_not() {
    let Some(keyring) = ckrv_test_support::SecretService::start() else {
        return;
    };
    let env = Env::start().await;
    env.add_user("dev@example.com").await;
    let store = env.store().await;
    // A token for each login: logging out revokes the session's token.
    let mut tokens = Vec::new();
    for name in ["keyring", "insecure", "fallback"] {
        let (_, token) =
            ckrv_api::identity::admin::issue_token(&store, "dev@example.com", name, None)
                .await
                .unwrap();
        tokens.push(token);
    }
    let token = tokens[0].clone();
    let home = env.home.path();
    let file = env.config_dir().join("credentials.json");
    let login = ["cloud", "login", "--with-token"];

    // With a keyring: stored there, no file, and whoami says where.
    *env.bus.lock().unwrap() = keyring.bus_address.clone();
    let out = env.run_with_stdin(home, &login, &token).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("note:"));
    assert!(!file.exists());
    assert!(keyring_entry(&keyring.bus_address, &env.api_url).contains(&token));
    let whoami = env.ok(home, &["cloud", "whoami"]).await;
    assert!(
        whoami.contains("Session stored in: the OS keyring"),
        "{whoami}"
    );
    let out = env.ok(home, &["cloud", "logout"]).await;
    assert!(out.contains("Logged out"), "{out}");
    assert_eq!(keyring_entry(&keyring.bus_address, &env.api_url), "");

    // --insecure-storage: the file, even with a keyring there.
    let mut insecure = vec!["--insecure-storage"];
    insecure.extend(login);
    let out = env.run_with_stdin(home, &insecure, &tokens[1]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(file.exists());
    assert_eq!(keyring_entry(&keyring.bus_address, &env.api_url), "");
    env.ok(home, &["cloud", "logout"]).await;
    assert!(!file.exists());

    // No keyring answers: the file, said once, at login; whoami names the file.
    *env.bus.lock().unwrap() = NO_BUS.to_string();
    let out = env.run_with_stdin(home, &login, &tokens[2]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("note: no OS keyring is available"), "{said}");
    assert!(said.contains("the session is kept in"), "{said}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = env.run(home, &["cloud", "whoami"]).await;
    let whoami = String::from_utf8_lossy(&out.stdout);
    assert!(
        whoami.contains(&format!(
            "Session stored in: {} (mode 0600)",
            file.display()
        )),
        "{whoami}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("note:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_that_never_answers_does_not_hang_the_cli() {
    // A bus that takes the connection and then says nothing, as a wedged one would.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let env = Env::start().await;
    env.add_user("dev@example.com").await;
    let (_, token) =
        ckrv_api::identity::admin::issue_token(&env.store().await, "dev@example.com", "t", None)
            .await
            .unwrap();
    *env.bus.lock().unwrap() = format!("unix:path={}", socket.display());
    let out = env
        .run_with_stdin(env.home.path(), &["cloud", "login", "--with-token"], &token)
        .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("note: the OS keyring did not answer within 3s"),
        "{said}"
    );
    assert!(env.config_dir().join("credentials.json").exists());
}
