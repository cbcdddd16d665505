//! `ckrv-api serve --dispatcher kubernetes` as an operator starts it: the real binary, its
//! flags, and its first words with a cluster, here a stand-in Kubernetes API on loopback named
//! by a kubeconfig (no cluster runs on these machines). Bad settings are refused naming the
//! flag before any cluster is asked; a cluster that refuses the API's Role stops it with what
//! to do; one that lets it list Jobs and Pods lets it serve.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;

fn serve(dir: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ckrv-api"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", dir)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        None => command.env("KUBECONFIG", dir.join("no-such-kubeconfig")),
    };
    command
}

fn refused(command: &mut Command) -> String {
    let out: Output = command.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// Waits for `child` (`ckrv-api serve`) to say where it listens, then stops it.
async fn expect_serving(mut child: std::process::Child) {
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("serve printed its address")
        .unwrap();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "{line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const KUBERNETES: [&str; 6] = [
    "--dispatcher",
    "kubernetes",
    "--worker-image",
    "registry.example/ckrv-orchestrator:0.2.0",
    "--worker-api-url",
    "http://ckrv.ckrv.svc:8080",
];

#[test]
fn bad_kubernetes_settings_are_refused_naming_the_flag_before_any_cluster_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--dispatcher", "kubernetes"],
            "--dispatcher kubernetes needs --worker-image",
        ),
        (
            &["--worker-image", "w:1"],
            "--worker-image is for --dispatcher kubernetes",
        ),
        (
            &["--agent-memory", "4GB"],
            "--agent-memory: `4GB` is not a Kubernetes quantity",
        ),
        (
            &["--agent-image", "claud=registry.example/claude:1"],
            "--agent-image: unknown agent `claud`",
        ),
        (
            &["--namespace", "Jobs"],
            "--namespace: `Jobs` is not a valid name",
        ),
        (
            &["--job-priority-class", "Batch_Low"],
            "--job-priority-class: `Batch_Low` is not a valid name",
        ),
    ];
    for (args, expected) in cases {
        let mut all: Vec<&str> = if args[0] == "--dispatcher" || args[0] == "--worker-image" {
            Vec::new()
        } else {
            KUBERNETES.to_vec()
        };
        all.extend(args);
        let err = refused(&mut serve(dir.path(), None, &all));
        assert!(err.contains(expected), "{all:?}: {err}");
    }
    // A value clap itself checks.
    let mut all = KUBERNETES.to_vec();
    all.extend(["--job-label", "team=-x"]);
    let out = serve(dir.path(), None, &all).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("label value `-x`"));
    let mut all = KUBERNETES.to_vec();
    all.extend(["--job-toleration", "dedicated=agents:Never"]);
    let out = serve(dir.path(), None, &all).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown effect `Never`"),
        "{out:?}"
    );

    // Good settings, but no cluster to talk to: it says where it looked.
    let err = refused(&mut serve(dir.path(), None, &KUBERNETES));
    assert!(
        err.contains("connecting to Kubernetes: in a pod this uses its service account; elsewhere set KUBECONFIG"),
        "{err}"
    );
}

/// A stand-in Kubernetes API on loopback: lists of Jobs and Pods answer `status`, and the
/// kubeconfig that names it.
async fn cluster(dir: &Path, status: StatusCode) -> std::path::PathBuf {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        let kind = if uri.path().ends_with("/jobs") {
            "JobList"
        } else {
            "PodList"
        };
        let body = if status == StatusCode::OK {
            serde_json::json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
        } else {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status.as_u16(),
                "reason": "Forbidden",
                "message": "jobs.batch is forbidden: User \"system:serviceaccount:ckrv:default\" cannot list resource \"jobs\""})
        };
        (status, axum::Json(body)).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: c\n  context: {{cluster: stand-in, user: u, namespace: ckrv}}\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    kubeconfig
}

#[tokio::test]
async fn a_cluster_that_refuses_the_role_stops_serve_with_what_to_do_against_a_stand_in_kubernetes_api()
 {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster(dir.path(), StatusCode::FORBIDDEN).await;
    let mut command = serve(dir.path(), Some(&kubeconfig), &KUBERNETES);
    let err = tokio::task::spawn_blocking(move || refused(&mut command))
        .await
        .unwrap();
    assert!(
        err.contains("the API's service account needs the chart's Role")
            && err.contains("listing Jobs in namespace ckrv: jobs.batch is forbidden"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cluster_that_lets_it_list_jobs_and_pods_lets_it_serve_against_a_stand_in_kubernetes_api()
{
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster(dir.path(), StatusCode::OK).await;
    // Job scheduling as the chart renders it into the environment.
    let child = serve(dir.path(), Some(&kubeconfig), &KUBERNETES)
        .env(
            "CKRV_API_JOB_NODE_SELECTOR",
            "example.com/pool=agents,kubernetes.io/arch=amd64",
        )
        .env(
            "CKRV_API_JOB_TOLERATIONS",
            "example.com/pool=agents:NoSchedule,example.com/spot",
        )
        .env("CKRV_API_JOB_PRIORITY_CLASS", "ckrv-batch")
        .env("CKRV_API_JOB_SCHEDULE_TIMEOUT", "5m")
        .spawn()
        .unwrap();
    expect_serving(child).await;
}

#[tokio::test]
async fn an_egress_policy_past_the_gateway_stops_serve_on_kubernetes_without_the_egress_proxy_against_a_stand_in_kubernetes_api()
 {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster(dir.path(), StatusCode::OK).await;
    // A NetworkPolicy cannot name hosts: without the API's proxy these would open every public
    // address to the agent; and that proxy cannot read HTTPS, which read-only needs.
    let cases = [
        (
            "registries",
            false,
            "run the API's egress proxy (--egress-proxy-listen",
        ),
        (
            "pypi.org",
            false,
            "run the API's egress proxy (--egress-proxy-listen",
        ),
        ("pypi.org;read-only", false, "drop `;read-only` here"),
        ("pypi.org;read-only", true, "drop `;read-only` here"),
    ];
    for (policy, proxy, what_to_do) in cases {
        let mut args = KUBERNETES.to_vec();
        args.extend(["--egress-allow", policy]);
        if proxy {
            args.extend(["--egress-proxy-listen", "127.0.0.1:0"]);
        }
        let mut command = serve(dir.path(), Some(&kubeconfig), &args);
        let err = tokio::task::spawn_blocking(move || refused(&mut command))
            .await
            .unwrap();
        assert!(
            err.contains(&format!(
                "--egress-allow: the operator's egress policy `{policy}` (this flag or the pipeline's agent stage) cannot be held with --dispatcher kubernetes"
            )) && err.contains(what_to_do),
            "{policy}: {err}"
        );
    }
    // With the proxy, a host list is held: serve starts.
    let mut args = KUBERNETES.to_vec();
    args.extend([
        "--egress-allow",
        "registries",
        "--egress-proxy-listen",
        "127.0.0.1:0",
    ]);
    expect_serving(serve(dir.path(), Some(&kubeconfig), &args).spawn().unwrap()).await;
    // Not a flag of the other dispatchers.
    let mut command = serve(dir.path(), None, &["--egress-proxy-listen", "127.0.0.1:0"]);
    let err = refused(&mut command);
    assert!(
        err.contains("--egress-proxy-listen is for --dispatcher kubernetes"),
        "{err}"
    );
}

#[test]
fn bad_setup_egress_and_internal_entries_are_refused_naming_the_flag_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            ["--setup-egress-allow", "https://localhost/simple"],
            "bad egress entry `https://localhost/simple`: give a host, not a URL",
        ),
        (
            ["--egress-internal", "mirror.localhost:99999"],
            "bad egress entry `mirror.localhost:99999`",
        ),
        (
            ["--egress-internal", "registries"],
            "a preset is the whole policy, not an entry of a list",
        ),
        (
            ["--publish", "sometimes"],
            "`sometimes` is not a way to publish; use one of none, branch, pr, draft_pr",
        ),
    ] {
        let out = serve(dir.path(), None, &args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(args[0]) && err.contains(expected),
            "{args:?}: {err}"
        );
    }
}
