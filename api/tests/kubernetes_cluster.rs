//! Opt-in: the Kubernetes dispatcher against a real cluster. It runs when
//! `CKRV_K8S_TEST_NAMESPACE` names a namespace that the current kubeconfig (`KUBECONFIG` or
//! `~/.kube/config`) may create Jobs, Secrets and NetworkPolicies in; otherwise it prints that
//! it skipped. No cluster exists on the machines this project is built on, so CI skips it; it
//! is here for operators and for anyone with `kind` or a test cluster at hand.
//!
//! The job's worker image does not exist, so no pod ever runs: what it proves is that the real
//! API server accepts the Job, Secret and NetworkPolicy as sent, that the kubelet's image
//! failure reaches the job as its reason, and that the failed job's Job is deleted.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use ckrv_api::dispatch::kubernetes::{KubernetesSettings, check_access};
use ckrv_api::{DispatcherConfig, KubernetesConfig};
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use support::{RecordingDispatcher, TestApi, access};

const MISSING_IMAGE: &str = "ckrv.invalid/no-such-worker:0";

#[tokio::test]
async fn on_a_real_cluster_a_job_whose_image_is_missing_fails_saying_so_and_is_cleaned_up() {
    let Some(namespace) = std::env::var("CKRV_K8S_TEST_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
    else {
        eprintln!("skipped: set CKRV_K8S_TEST_NAMESPACE (and KUBECONFIG) to run against a cluster");
        return;
    };
    let client = kube::Client::try_default().await.unwrap();
    check_access(&client, &namespace).await.unwrap();
    let settings =
        KubernetesSettings::new(&namespace, MISSING_IMAGE, "http://ckrv.invalid:8080", 0);
    let dir = tempfile::tempdir().unwrap();
    let api =
        TestApi::start_configured(dir.path(), Arc::new(RecordingDispatcher::default()), |c| {
            c.dispatcher = DispatcherConfig::Kubernetes(Box::new(KubernetesConfig {
                client: client.clone(),
                settings,
                egress_proxy_listen: None,
            }));
        })
        .await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();

    let mut failed = None;
    for _ in 0..360 {
        let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
        if job["state"] == "failed" {
            failed = Some(job);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed = failed.expect("the job failed within 3 minutes");
    let message = failed["error_message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("image not found: {MISSING_IMAGE}")),
        "{message}"
    );

    let jobs: kube::Api<Job> = kube::Api::namespaced(client, &namespace);
    let mine = ListParams::default().labels(&format!("ckrv.dev/job={id}"));
    for _ in 0..120 {
        if jobs.list(&mine).await.unwrap().items.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the failed job's Kubernetes Job was not deleted within a minute");
}
