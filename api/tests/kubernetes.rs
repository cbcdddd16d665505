//! The Kubernetes dispatcher against a mocked Kubernetes API (kube-rs's client on a
//! `tower-test` mock service, `ckrv_test_support::kube_mock`; no cluster runs here): the exact
//! Job, Secret and NetworkPolicy a job becomes, the network narrowed after the clone, the
//! watchers' verdicts on scripted pod and Job histories, cancellation, a restart that finds
//! leftovers, and two replicas that never dispatch one job twice. The manifests are also
//! validated offline against the Kubernetes schemas.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ckrv_api::dispatch::kubernetes::KubernetesSettings;
use ckrv_api::dispatch::kubernetes::manifests::{self, JobPod, NetworkStage};
use ckrv_api::dispatch::kubernetes::settings::{Scheduling, parse_toleration};
use ckrv_api::{DispatcherConfig, KubernetesConfig};
use ckrv_test_support::kube_mock::{KubeRequest, MockCluster};
use ckrv_test_support::kubernetes::{Validated, validate, validate_against};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{RecordingDispatcher, TestApi, access};

const NAMESPACE: &str = "ckrv-jobs";
const WORKER_IMAGE: &str = "ghcr.io/chakravarti/ckrv-orchestrator:0.2.0";
const WORKER_API: &str = "http://ckrv.ckrv.svc:8080";
const ANTHROPIC_KEY: &str = "sk-ant-api-test-0123456789";

fn settings() -> KubernetesSettings {
    let mut settings = KubernetesSettings::new(NAMESPACE, WORKER_IMAGE, WORKER_API, 0);
    settings.api_namespace = Some("ckrv".into());
    settings
        .job_labels
        .insert("app.kubernetes.io/instance".into(), "prod".into());
    settings
        .api_pod_labels
        .insert("app.kubernetes.io/instance".into(), "prod".into());
    settings.image_pull_secrets = vec!["registry".into()];
    settings
}

/// The operator's agent keys, in a private file as `--agent-secrets` takes them.
fn agent_secrets(dir: &Path) -> Arc<ckrv_api::dispatch::worker_setup::WorkerSetup> {
    let file = dir.join("agent-secrets.env");
    std::fs::write(&file, format!("ANTHROPIC_API_KEY={ANTHROPIC_KEY}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Arc::new(ckrv_api::dispatch::worker_setup::WorkerSetup::load(None, None, Some(&file)).unwrap())
}

/// An API whose jobs go to `cluster`, on `dir` and, when given, an earlier API's database.
async fn api_on(
    dir: &Path,
    client: kube::Client,
    database: Option<Arc<ckrv_test_support::TestDatabase>>,
) -> TestApi {
    api_with(dir, client, database, settings()).await
}

/// [`api_on`] with other settings.
async fn api_with(
    dir: &Path,
    client: kube::Client,
    database: Option<Arc<ckrv_test_support::TestDatabase>>,
    settings: KubernetesSettings,
) -> TestApi {
    api_with_workers(dir, client, database, settings, agent_secrets(dir)).await
}

/// [`api_with`] with other workers' settings (a pipeline, an egress policy).
async fn api_with_workers(
    dir: &Path,
    client: kube::Client,
    database: Option<Arc<ckrv_test_support::TestDatabase>>,
    settings: KubernetesSettings,
    workers: Arc<ckrv_api::dispatch::worker_setup::WorkerSetup>,
) -> TestApi {
    let configure = move |c: &mut ckrv_api::Config| {
        c.dispatcher = DispatcherConfig::Kubernetes(Box::new(KubernetesConfig {
            client,
            settings,
            egress_proxy_listen: None,
        }));
        c.workers = workers;
        c.engine.job_timeout = Duration::from_secs(1800);
    };
    let recorder = Arc::new(RecordingDispatcher::default());
    match database {
        Some(database) => TestApi::start_configured_on(dir, database, recorder, configure).await,
        None => TestApi::start_configured(dir, recorder, configure).await,
    }
}

fn claude_job() -> Value {
    let mut request = support::job_request();
    request["spec_content"] = "---\nagent: claude-code\n---\nAdd a greeting.\n".into();
    request
}

fn name_of(job_id: &str) -> String {
    format!("ckrv-{job_id}-g1")
}

async fn job_state(api: &TestApi, user: &str, id: &str) -> Value {
    api.get(&format!("/v1/jobs/{id}"), user).await.1
}

/// Waits for the job to reach `state`, and returns it.
async fn wait_state(api: &TestApi, user: &str, id: &str, state: &str) -> Value {
    for _ in 0..200 {
        let job = job_state(api, user, id).await;
        if job["state"] == state {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "job {id} never became {state}: {}",
        job_state(api, user, id).await
    );
}

/// Submits a job and waits until its Job has been let go; returns the job's id.
async fn dispatched(api: &TestApi, cluster: &MockCluster, user: &str, request: Value) -> String {
    let (status, job) = api.post("/v1/jobs", user, request).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let name = name_of(&id);
    cluster
        .wait_for(&format!("the Job {name} started"), |r| {
            r.is("PATCH", "jobs") && r.name.as_deref() == Some(name.as_str())
        })
        .await;
    id
}

/// The worker token in the job's Secret.
fn worker_token(cluster: &MockCluster, id: &str) -> String {
    decoded(
        &cluster.object("secrets", &name_of(id)).unwrap(),
        "worker-token",
    )
}

fn decoded(secret: &Value, key: &str) -> String {
    let text = secret["data"][key].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

fn expect_valid(yaml: &str) {
    for outcome in [validate(yaml), validate_against(yaml, "1.33.0")] {
        match outcome {
            Ok(Validated::Passed) => {}
            Ok(Validated::Skipped(why)) => eprintln!("{why}"),
            Err(output) => panic!("not valid Kubernetes:\n{output}\n{yaml}"),
        }
    }
}

fn yaml_of(objects: &[&Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test]
async fn a_job_becomes_a_suspended_job_its_secret_and_policy_then_starts_against_a_mocked_kubernetes_api()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let port = url::Url::parse(&api.url).unwrap().port().unwrap();
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let id = &dispatched(&api, &cluster, user, claude_job()).await;
    let name = name_of(id);
    let writes: Vec<(String, String)> = cluster
        .writes()
        .into_iter()
        .map(|r| (r.method, r.resource))
        .collect();
    assert_eq!(
        writes,
        [
            ("POST", "jobs"),
            ("POST", "secrets"),
            ("POST", "networkpolicies"),
            ("PATCH", "jobs")
        ]
        .map(|(m, r)| (m.to_string(), r.to_string())),
        "the Job is made suspended, then what its pod mounts, then it is let go"
    );
    let sent = |resource: &str| -> KubeRequest {
        cluster
            .requests()
            .into_iter()
            .find(|r| r.is("POST", resource))
            .unwrap()
    };
    let labels = json!({
        "app.kubernetes.io/component": "job",
        "app.kubernetes.io/instance": "prod",
        "app.kubernetes.io/managed-by": "ckrv-api",
        "app.kubernetes.io/name": "ckrv",
        "ckrv.dev/generation": "1",
        "ckrv.dev/job": id,
    });
    let hardened = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let init = json!({
        "name": "install-entrypoint",
        "image": WORKER_IMAGE,
        "command": ["ckrv-agent-entrypoint", "install", "/ckrv/bin"],
        "resources": {
            "limits": {"cpu": "100m", "memory": "64Mi"},
            "requests": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": hardened,
        "volumeMounts": [{"mountPath": "/ckrv/bin", "name": "entrypoint"}],
    });
    let containers = json!([
        {
            "name": "orchestrator",
            "image": WORKER_IMAGE,
            "command": ["ckrv-orchestrator"],
            "args": ["run", "--api-url", WORKER_API, "--job-id", id,
                     "--token-file", "/ckrv/secrets/worker-token",
                     "--work-dir", "/work", "--workspace", "/workspace",
                     "--agent-control", "/ckrv/control",
                     "--agent-output", "/ckrv/agent",
                     "--agent-home", "/ckrv/home"],
            "env": [{"name": "HOME", "value": "/work"}],
            "resources": {
                "limits": {"cpu": "500m", "memory": "512Mi"},
                "requests": {"cpu": "500m", "memory": "512Mi"},
            },
            "securityContext": hardened,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"mountPath": "/workspace", "name": "workspace"},
                {"mountPath": "/ckrv/control", "name": "control"},
                {"mountPath": "/ckrv/agent", "name": "agent-output", "readOnly": true},
                {"mountPath": "/ckrv/home", "name": "agent-home"},
                {"mountPath": "/work", "name": "work"},
                {"mountPath": "/tmp", "name": "tmp"},
                {"mountPath": "/ckrv/secrets", "name": "worker-token", "readOnly": true},
            ],
        },
        {
            "name": "agent",
            "image": "ghcr.io/chakravarti/ckrv-agent-claude-code:0.2.0",
            "command": ["/ckrv/bin/ckrv-agent-entrypoint"],
            "args": ["run", "--control", "/ckrv/control", "--output", "/ckrv/agent"],
            "workingDir": "/workspace",
            "env": [
                {"name": "HOME", "value": "/home/agent"},
                {"name": "CKRV_JOB_ID", "value": id},
                {"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {
                    "name": name, "key": "model-token", "optional": false}}},
                {"name": "ANTHROPIC_BASE_URL",
                 "value": format!("{WORKER_API}/v1/gateway/anthropic")},
            ],
            "resources": {
                "limits": {"cpu": "2", "memory": "4Gi"},
                "requests": {"cpu": "2", "memory": "4Gi"},
            },
            "securityContext": hardened,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"mountPath": "/workspace", "name": "workspace"},
                {"mountPath": "/ckrv/control", "name": "control", "readOnly": true},
                {"mountPath": "/ckrv/agent", "name": "agent-output"},
                {"mountPath": "/ckrv/bin", "name": "entrypoint", "readOnly": true},
                {"mountPath": "/home/agent", "name": "agent-home"},
                {"mountPath": "/tmp", "name": "agent-tmp"},
            ],
        },
    ]);
    let volumes = json!([
        {"name": "workspace", "emptyDir": {"sizeLimit": "10Gi"}},
        {"name": "control", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "agent-output", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "entrypoint", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "work", "emptyDir": {"sizeLimit": "10Gi"}},
        {"name": "agent-home", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "agent-tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "worker-token", "secret": {
            "secretName": name, "defaultMode": 256, "optional": false,
            "items": [{"key": "worker-token", "path": "worker-token", "mode": 256}]}},
    ]);
    let expected_job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "activeDeadlineSeconds": 1860,
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "suspend": true,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "imagePullSecrets": [{"name": "registry"}],
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "fsGroup": 10001,
                        "runAsGroup": 10001,
                        "runAsNonRoot": true,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [init],
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    });
    let job_sent = sent("jobs").body;
    assert_eq!(job_sent, expected_job, "the Job, exactly");

    let uid = cluster.object("jobs", &name).unwrap()["metadata"]["uid"].clone();
    let owner = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]);
    let secret = sent("secrets").body;
    assert_eq!(secret["metadata"]["ownerReferences"], owner);
    assert_eq!(secret["metadata"]["labels"], labels);
    assert_eq!(
        (&secret["type"], &secret["immutable"]),
        (&json!("Opaque"), &json!(true))
    );
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["model-token", "worker-token"]);
    // No key of the operator's reaches the pod: the agent gets the job's model token, which
    // the gateway takes in its place, and the same one the worker reads.
    assert!(!secret.to_string().contains(ANTHROPIC_KEY));
    assert!(!job_sent.to_string().contains(ANTHROPIC_KEY));
    let model_token = decoded(&secret, "model-token");
    assert!(model_token.starts_with("ckrv_mt_"), "{model_token}");
    // The token in the Secret is the job's worker token: it reads the job, nothing else.
    let token = decoded(&secret, "worker-token");
    let (status, work) = api.get(&format!("/v1/worker/jobs/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(work["model_access"]["token"], model_token.as_str());
    assert_eq!(work["model_access"]["keys"], json!(["ANTHROPIC_API_KEY"]));
    // The operator's limit on the repository's setup (the default: 10 minutes).
    assert_eq!(work["setup_timeout_s"], 600);
    let (status, _) = api.get("/v1/users/me", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let private_v4 = json!([
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4"
    ]);
    let private_v6 = json!([
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8"
    ]);
    let always = json!([
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ckrv"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/component": "api",
                                                 "app.kubernetes.io/instance": "prod"}}}],
         "ports": [{"protocol": "TCP", "port": port}]},
    ]);
    let public_on = |port: u16| {
        json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": private_v4}},
                      {"ipBlock": {"cidr": "::/0", "except": private_v6}}],
               "ports": [{"protocol": "TCP", "port": port}]})
    };
    let mut clone_egress = always.as_array().unwrap().clone();
    clone_egress.push(public_on(443));
    let policy = sent("networkpolicies").body;
    assert_eq!(
        policy,
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels,
                         "ownerReferences": owner},
            "spec": {
                "podSelector": {"matchLabels": {"ckrv.dev/generation": "1", "ckrv.dev/job": id}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": clone_egress,
            },
        }),
        "no ingress; DNS, the API and the repository's port on public addresses"
    );
    let start = cluster
        .requests()
        .into_iter()
        .find(|r| r.is("PATCH", "jobs"))
        .unwrap();
    assert_eq!(start.name.as_deref(), Some(name.as_str()));
    assert_eq!(start.body, json!({"spec": {"suspend": false}}));

    // What the cluster received is valid Kubernetes, unknown fields refused.
    expect_valid(&yaml_of(&[&job_sent, &secret, &policy]));

    // The clone is done: the worker reports the agent's phase, and before the API answers it
    // the pod keeps only DNS and the API, whose gateway carries claude-code's model calls.
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{id}/phase"),
            &token,
            json!({"phase": "agent", "agent": "claude-code"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let narrowed = cluster
        .requests()
        .into_iter()
        .find(|r| r.is("PATCH", "networkpolicies"))
        .expect("the policy was narrowed before the phase was acknowledged");
    assert_eq!(narrowed.body, json!({"spec": {"egress": always}}));
    // Later phases change nothing more.
    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{id}/phase"),
            &token,
            json!({"phase": "diffing", "agent": "claude-code"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        cluster
            .requests()
            .iter()
            .filter(|r| r.is("PATCH", "networkpolicies"))
            .count(),
        1
    );
}

#[tokio::test]
async fn an_agent_without_network_gets_none_once_cloned_and_a_refused_narrowing_fails_the_job_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let id = &dispatched(&api, &cluster, user, support::job_request()).await;
    let token = worker_token(&cluster, id);
    let secret = cluster.object("secrets", &name_of(id)).unwrap();
    assert_eq!(
        secret["data"].as_object().unwrap().len(),
        1,
        "the script agent declares no keys: the Secret holds the worker's token alone"
    );

    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{id}/phase"),
            &token,
            json!({"phase": "agent", "agent": "script"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let narrowed = cluster
        .requests()
        .into_iter()
        .find(|r| r.is("PATCH", "networkpolicies"))
        .unwrap();
    let egress = narrowed.body["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2, "DNS and the API only: {egress:?}");
    assert!(egress.iter().all(|rule| rule["to"][0]["ipBlock"].is_null()));

    // A second job whose policy the cluster will not narrow must not run its agent.
    cluster.refuse(
        "PATCH",
        "networkpolicies",
        403,
        "networkpolicies.networking.k8s.io is forbidden: cannot patch",
    );
    let second_id = &dispatched(&api, &cluster, user, support::job_request()).await;
    let token = worker_token(&cluster, second_id);
    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{second_id}/phase"),
            &token,
            json!({"phase": "agent", "agent": "script"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "the worker is told to stop");
    let failed = wait_state(&api, user, second_id, "failed").await;
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .starts_with("narrowing the network of the job's pod (NetworkPolicy"),
        "{failed}"
    );
    cluster
        .wait_for("the failed job's Job deleted", |r| {
            r.is("DELETE", "jobs") && r.name.as_deref() == Some(name_of(second_id).as_str())
        })
        .await;
}

/// A pod of the job `id`'s first claim, as the cluster reports it.
fn pod(id: &str, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{}-abcde", name_of(id)), "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "ckrv-api", "ckrv.dev/job": id,
                                "ckrv.dev/generation": "1"}},
        "status": status,
    })
}

fn container(name: &str, image: &str, state: Value) -> Value {
    json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
           "state": state})
}

#[tokio::test]
async fn the_watchers_fail_jobs_whose_pods_cannot_run_with_the_reason_on_a_mocked_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    cluster.wait_watching("pods").await;
    cluster.wait_watching("jobs").await;
    let agent_image = "ghcr.io/chakravarti/ckrv-agent-claude-code:0.2.0";

    let histories: Vec<(&str, Vec<Value>, &str)> = vec![
        (
            "image pull",
            vec![
                json!({"phase": "Pending"}),
                json!({"phase": "Pending", "containerStatuses": [
                    container("orchestrator", WORKER_IMAGE, json!({"running": {}})),
                    container("agent", agent_image, json!({"waiting": {"reason": "ImagePullBackOff",
                        "message": "Back-off pulling image \"ghcr.io/chakravarti/ckrv-agent-claude-code:0.2.0\""}}))]}),
            ],
            "image not found: ghcr.io/chakravarti/ckrv-agent-claude-code:0.2.0 (the agent container: ImagePullBackOff",
        ),
        (
            "eviction",
            vec![
                json!({"phase": "Running"}),
                json!({"phase": "Failed", "reason": "Evicted",
                       "message": "The node was low on resource: ephemeral-storage."}),
            ],
            "the job's pod was evicted: The node was low on resource: ephemeral-storage.",
        ),
        (
            "agent out of memory",
            vec![json!({"phase": "Running", "containerStatuses": [
                container("orchestrator", WORKER_IMAGE, json!({"running": {}})),
                container("agent", agent_image, json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))]})],
            "the agent container ran out of memory (OOMKilled; its limit is --agent-memory)",
        ),
        (
            "orchestrator crash",
            vec![json!({"phase": "Running", "containerStatuses": [
                container("orchestrator", WORKER_IMAGE, json!({"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "error: reading the worker token from /ckrv/secrets/worker-token"}})),
                container("agent", agent_image, json!({"running": {}}))]})],
            "the orchestrator container ended with Error (exit code 1): error: reading the worker token",
        ),
        (
            "missing secret",
            vec![json!({"phase": "Pending", "containerStatuses": [
                container("orchestrator", WORKER_IMAGE, json!({"waiting": {"reason": "CreateContainerConfigError",
                    "message": "secret \"x\" not found"}}))]})],
            "the orchestrator container cannot start (CreateContainerConfigError: secret \"x\" not found)",
        ),
    ];
    for (what, history, reason) in histories {
        let id = &dispatched(&api, &cluster, user, claude_job()).await;
        for status in history {
            cluster.update("pods", pod(id, status));
        }
        let failed = wait_state(&api, user, id, "failed").await;
        let message = failed["error_message"].as_str().unwrap();
        assert!(message.starts_with(reason), "{what}: {message}");
        // The job has ended: its Job goes, pods first.
        let delete = cluster
            .wait_for(&format!("{what}: the Job deleted"), |r| {
                r.is("DELETE", "jobs") && r.name.as_deref() == Some(name_of(id).as_str())
            })
            .await;
        assert_eq!(delete.body["propagationPolicy"], "Foreground", "{what}");
    }
}

/// A pod's status while the scheduler finds no node for it, since `since`.
fn unschedulable(since: &str) -> Value {
    json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "lastTransitionTime": since,
        "message": "0/3 nodes are available: 3 node(s) had untolerated taint {dedicated: gpu}. \
                    preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."}]})
}

#[tokio::test]
async fn a_pod_no_node_will_take_fails_its_job_with_the_schedulers_reason_at_the_schedule_timeout_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let mut settings = settings();
    settings.scheduling.schedule_timeout = Duration::from_secs(2);
    let api = api_with(dir.path(), client, None, settings).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    cluster.wait_watching("pods").await;
    let now = || k8s_openapi::jiff::Timestamp::now().to_string();

    // Unschedulable since just now, and nothing changes after: the timer fails it.
    let stuck = &dispatched(&api, &cluster, user, claude_job()).await;
    cluster.update("pods", pod(stuck, unschedulable(&now())));
    // Unschedulable at first, then a node turns up (an autoscaler, say) within the time.
    let placed = &dispatched(&api, &cluster, user, claude_job()).await;
    cluster.update("pods", pod(placed, unschedulable(&now())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.update("pods", pod(placed, json!({"phase": "Running"})));

    let failed = wait_state(&api, user, stuck, "failed").await;
    assert_eq!(
        failed["error_message"],
        "no node could take the job's pod in 2s: 0/3 nodes are available: 3 node(s) had \
         untolerated taint {dedicated: gpu}. preemption: 0/3 nodes are available: 3 Preemption \
         is not helpful for scheduling. (the operator's job node selector, tolerations and \
         resources decide where job pods fit)"
    );
    cluster
        .wait_for("the stuck Job deleted", |r| {
            r.is("DELETE", "jobs") && r.name.as_deref() == Some(name_of(stuck).as_str())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job_state(&api, user, placed).await["state"], "running");

    // A pod found waiting for longer than that (by an API that restarted, say) fails at once.
    let old = &dispatched(&api, &cluster, user, claude_job()).await;
    cluster.update("pods", pod(old, unschedulable("2026-01-01T00:00:00Z")));
    let failed = wait_state(&api, user, old, "failed").await;
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .starts_with("no node could take the job's pod in 2s: 0/3 nodes are available"),
        "{failed}"
    );
}

#[tokio::test]
async fn a_finished_pod_leaves_its_result_and_a_job_past_its_kubernetes_deadline_times_out_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    cluster.wait_watching("pods").await;

    // The worker completes its job; then its pod ends, which changes nothing.
    let done_id = &dispatched(&api, &cluster, user, support::job_request()).await;
    let token = worker_token(&cluster, done_id);
    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{done_id}/complete"),
            &token,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    cluster.update(
        "pods",
        pod(done_id, json!({"phase": "Succeeded", "containerStatuses": [
            container("orchestrator", WORKER_IMAGE, json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
            container("agent", "a", json!({"terminated": {"exitCode": 0, "reason": "Completed"}}))]})),
    );
    // A pod that ends without its worker having completed the job fails it.
    let quiet_id = &dispatched(&api, &cluster, user, support::job_request()).await;
    cluster.update("pods", pod(quiet_id, json!({"phase": "Succeeded"})));
    let failed = wait_state(&api, user, quiet_id, "failed").await;
    assert_eq!(
        failed["error_message"],
        "the job's pod ended without the worker completing the job"
    );
    assert_eq!(job_state(&api, user, done_id).await["state"], "succeeded");

    // Kubernetes ends a Job at its deadline: the job times out.
    let late_id = &dispatched(&api, &cluster, user, support::job_request()).await;
    let mut job = cluster.object("jobs", &name_of(late_id)).unwrap();
    job["status"] = json!({"conditions": [{"type": "Failed", "status": "True",
        "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]});
    cluster.update("jobs", job);
    let timed_out = wait_state(&api, user, late_id, "timeout").await;
    assert!(
        timed_out["error_message"]
            .as_str()
            .unwrap()
            .starts_with("the job ran longer than its 30m deadline"),
        "{timed_out}"
    );
}

#[tokio::test]
async fn a_deleted_pod_fails_its_job_with_its_last_word_and_a_refused_cleanup_is_counted_and_retried_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    cluster.wait_watching("pods").await;
    cluster.wait_watching("jobs").await;

    // A pod deleted before anything judged it (by hand, say) fails its job.
    let id = &dispatched(&api, &cluster, user, claude_job()).await;
    cluster.update("pods", pod(id, json!({"phase": "Running"})));
    cluster.remove("pods", &format!("{}-abcde", name_of(id)));
    let failed = wait_state(&api, user, id, "failed").await;
    assert_eq!(failed["error_message"], "the job's pod was deleted");
    cluster
        .wait_for("the failed job's Job deleted", |r| {
            r.is("DELETE", "jobs") && r.name.as_deref() == Some(name_of(id).as_str())
        })
        .await;

    // A pod that failed and went at once fails its job with why it failed, not that it went.
    let evicted = &dispatched(&api, &cluster, user, claude_job()).await;
    cluster.update(
        "pods",
        pod(
            evicted,
            json!({"phase": "Failed", "reason": "Evicted",
                   "message": "The node was low on resource: memory."}),
        ),
    );
    cluster.remove("pods", &format!("{}-abcde", name_of(evicted)));
    let failed = wait_state(&api, user, evicted, "failed").await;
    assert_eq!(
        failed["error_message"],
        "the job's pod was evicted: The node was low on resource: memory."
    );
    cluster
        .wait_for("the evicted job's Job deleted", |r| {
            r.is("DELETE", "jobs") && r.name.as_deref() == Some(name_of(evicted).as_str())
        })
        .await;

    // A Job of ours for a job that does not run on it is deleted. The cluster refuses at
    // first: the error is counted, and the delete is tried again until it goes through.
    cluster.refuse("DELETE", "jobs", 500, "etcdserver: request timed out");
    let stray = "ckrv-job-stray";
    cluster.update(
        "jobs",
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": stray, "namespace": NAMESPACE,
                            "labels": {"app.kubernetes.io/managed-by": "ckrv-api",
                                       "ckrv.dev/job": "no-such-job", "ckrv.dev/generation": "1"}},
               "status": {}}),
    );
    let deletes = || {
        cluster
            .requests()
            .into_iter()
            .filter(|r| r.is("DELETE", "jobs") && r.name.as_deref() == Some(stray))
            .count()
    };
    cluster
        .wait_for("the stray Job's delete", |r| {
            r.is("DELETE", "jobs") && r.name.as_deref() == Some(stray)
        })
        .await;
    let counted = "ckrv_kubernetes_watch_errors_total{resource=\"jobs\"}";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = api.metrics().await;
        if metrics.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(counted), "{metrics}");
    assert!(
        !metrics.contains("ckrv_kubernetes_watch_errors_total{resource=\"pods\"}"),
        "{metrics}"
    );
    let refused = deletes();
    cluster.stop_refusing();
    for _ in 0..400 {
        if cluster.object("jobs", stray).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.object("jobs", stray).is_none(),
        "the stray Job is still there"
    );
    assert!(deletes() > refused);
}

#[tokio::test]
async fn cancelling_deletes_the_jobs_kubernetes_job_with_foreground_propagation_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let id = &dispatched(&api, &cluster, user, support::job_request()).await;
    let (status, body) = api
        .post(&format!("/v1/jobs/{id}/cancel"), user, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = cluster
        .wait_for("the job's Jobs listed", |r| {
            r.is("GET", "jobs")
                && r.query.get("labelSelector").map(String::as_str)
                    == Some(&format!("ckrv.dev/job={id}"))
        })
        .await;
    assert!(!listed.is_watch());
    let delete = cluster
        .wait_for("the Job deleted", |r| r.is("DELETE", "jobs"))
        .await;
    assert_eq!(delete.name.as_deref(), Some(name_of(id).as_str()));
    assert_eq!(delete.body["propagationPolicy"], "Foreground");
    assert!(cluster.names("jobs").is_empty());
}

#[tokio::test]
async fn a_restarted_api_deletes_leftover_jobs_and_judges_pods_that_failed_while_it_was_down_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let running_id = dispatched(&api, &cluster, user, support::job_request()).await;
    let cancelled_id = dispatched(&api, &cluster, user, support::job_request()).await;
    // The cluster refuses to delete the cancelled job's Job: it is left behind.
    cluster.refuse("DELETE", "jobs", 500, "etcdserver: request timed out");
    let (status, _) = api
        .post(
            &format!("/v1/jobs/{cancelled_id}/cancel"),
            user,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    cluster
        .wait_for("a delete tried", |r| r.is("DELETE", "jobs"))
        .await;
    let database = api.database();
    drop(api);

    // While no API runs, the running job's pod fails. The restarted API finds the cluster as
    // it is: both Jobs, and that pod.
    let (restarted, client) = MockCluster::start(NAMESPACE);
    for name in cluster.names("jobs") {
        restarted.insert("jobs", cluster.object("jobs", &name).unwrap());
    }
    restarted.insert(
        "pods",
        pod(&running_id, json!({"phase": "Failed", "containerStatuses": [
            container("orchestrator", WORKER_IMAGE, json!({"terminated": {"exitCode": 2, "reason": "Error"}}))]})),
    );
    let api = api_on(dir.path(), client, Some(database)).await;

    restarted
        .wait_for("the leftover Job deleted", |r| {
            r.is("DELETE", "jobs") && r.name.as_deref() == Some(name_of(&cancelled_id).as_str())
        })
        .await;
    let failed = wait_state(&api, user, &running_id, "failed").await;
    assert_eq!(
        failed["error_message"],
        "the orchestrator container ended with Error (exit code 2)"
    );
    assert_eq!(
        job_state(&api, user, &cancelled_id).await["state"],
        "cancelled"
    );
}

#[tokio::test]
async fn a_cluster_that_refuses_a_secret_fails_the_job_and_leaves_nothing_behind_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    cluster.refuse(
        "POST",
        "secrets",
        403,
        "secrets is forbidden: User \"system:serviceaccount:ckrv:ckrv\" cannot create resource \"secrets\"",
    );
    let api = api_on(dir.path(), client, None).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    // The API answers the dispatch with the job, failed at once with the cluster's refusal.
    let (status, refused) = api.create_job(user).await;
    assert_eq!(status, StatusCode::CREATED, "{refused}");
    let (_, jobs) = api.get("/v1/jobs", user).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    let failed = &jobs["jobs"][0];
    let id = failed["id"].as_str().unwrap();
    let reason = format!(
        "could not start a worker: creating the Secret {}: secrets is forbidden: User \"system:serviceaccount:ckrv:ckrv\" cannot create resource \"secrets\" (403 Forbidden)",
        name_of(id)
    );
    assert_eq!(refused["id"], id);
    assert_eq!(refused["error_message"], reason.as_str());
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error_message"], reason.as_str());
    cluster
        .wait_for("the half-made Job deleted", |r| r.is("DELETE", "jobs"))
        .await;
    assert!(cluster.names("jobs").is_empty());
    assert!(
        !cluster.writes().iter().any(|r| r.is("PATCH", "jobs")),
        "it never started"
    );
}

#[tokio::test]
async fn two_replicas_on_one_database_dispatch_each_job_once_on_a_mocked_cluster() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (cluster_a, client_a) = MockCluster::start(NAMESPACE);
    let (cluster_b, client_b) = MockCluster::start(NAMESPACE);
    let a = api_on(dir_a.path(), client_a, None).await;
    let b = api_on(dir_b.path(), client_b, Some(a.database())).await;
    let user = a.login("dev@example.com").await;
    let user = access(&user);
    let mut ids = Vec::new();
    for i in 0..12 {
        let api = if i % 2 == 0 { &a } else { &b };
        let (status, job) = api.create_job(user).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // Each replica's reaper also looks for waiting jobs; give them several rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut created: Vec<String> = [&cluster_a, &cluster_b]
        .iter()
        .flat_map(|c| c.requests())
        .filter(|r| r.is("POST", "jobs"))
        .map(|r| {
            r.body["metadata"]["labels"]["ckrv.dev/job"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    created.sort();
    ids.sort();
    assert_eq!(
        created, ids,
        "every job made into a Kubernetes Job exactly once"
    );
}

#[test]
fn every_agents_manifests_are_valid_kubernetes_in_both_network_stages() {
    let mut settings = settings();
    settings.api_port = 8080;
    settings.worker_service_account = Some("ckrv-worker".into());
    settings.scheduling = Scheduling {
        node_selector: [("example.com/pool".to_string(), "agents".to_string())].into(),
        tolerations: ["example.com/pool=agents:NoSchedule", "example.com/spot"]
            .into_iter()
            .map(|t| parse_toleration(t).unwrap())
            .collect(),
        priority_class: Some("ckrv-batch".into()),
        ..Scheduling::default()
    };
    let mut documents = Vec::new();
    for agent in ckrv_agents::agents() {
        let pod = JobPod {
            job_id: "3f8a9b2c-1234-5678-abcd-ef0123456789",
            generation: 3,
            agent,
            repo_port: 22,
            public_https_after_clone: false,
            model_keys: agent.secrets.clone(),
        };
        let mut job = manifests::job(&settings, &pod);
        job.metadata.uid = Some("uid-1".into());
        let owner = manifests::owned_by(&job).unwrap();
        let mut values = vec![
            serde_json::to_value(&job).unwrap(),
            serde_json::to_value(manifests::secret(
                &settings,
                &pod,
                "ckrv_wt_token",
                "ckrv_mt_token",
                owner.clone(),
            ))
            .unwrap(),
        ];
        for stage in [NetworkStage::Clone, NetworkStage::AfterClone] {
            values.push(
                serde_json::to_value(manifests::network_policy(
                    &settings,
                    &pod,
                    stage,
                    owner.clone(),
                ))
                .unwrap(),
            );
        }
        // kube fills apiVersion and kind when it sends; a manifest on its own needs them.
        for (value, (api_version, kind)) in values.iter_mut().zip([
            ("batch/v1", "Job"),
            ("v1", "Secret"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
        ]) {
            value["apiVersion"] = api_version.into();
            value["kind"] = kind.into();
        }
        assert_eq!(
            values[0]["spec"]["template"]["spec"]["containers"][1]["image"],
            agent.image.as_str()
        );
        let pod_spec = &values[0]["spec"]["template"]["spec"];
        assert_eq!(
            pod_spec["nodeSelector"],
            json!({"example.com/pool": "agents"})
        );
        assert_eq!(
            pod_spec["tolerations"],
            json!([
                {"key": "example.com/pool", "operator": "Equal", "value": "agents", "effect": "NoSchedule"},
                {"key": "example.com/spot", "operator": "Exists"},
            ])
        );
        assert_eq!(pod_spec["priorityClassName"], "ckrv-batch");
        documents.extend(values);
    }
    expect_valid(&yaml_of(&documents.iter().collect::<Vec<_>>()));
}

#[tokio::test]
async fn public_https_opens_only_in_the_phase_of_a_step_that_needs_it_never_the_agents_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n[[stage]]\nagent = true\nphase = \"agent\"\n\
         [[stage]]\nstep = \"diff\"\nphase = \"diffing\"\n\
         [[stage]]\nstep = \"upload\"\nphase = \"uploading\"\nallowed_hosts = [\"https://hooks.localhost\"]\n",
    )
    .unwrap();
    let workers =
        ckrv_api::dispatch::worker_setup::WorkerSetup::load(Some(&pipeline), None, None).unwrap();
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let api = api_with_workers(dir.path(), client, None, settings(), Arc::new(workers)).await;
    let user = api.login("dev@example.com").await;
    let id = &dispatched(&api, &cluster, access(&user), support::job_request()).await;
    let token = worker_token(&cluster, id);
    // Each patch of the pod's network, as the rules' public ports.
    let patches = || -> Vec<Vec<Value>> {
        cluster
            .requests()
            .into_iter()
            .filter(|r| r.is("PATCH", "networkpolicies"))
            .map(|r| {
                r.body["spec"]["egress"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|rule| !rule["to"][0]["ipBlock"].is_null())
                    .map(|rule| rule["ports"][0]["port"].clone())
                    .collect()
            })
            .collect()
    };
    for (phase, expected) in [
        // The agent runs with DNS and the API only.
        ("agent", vec![vec![]]),
        // Nothing to change for the diff.
        ("diffing", vec![vec![]]),
        // The upload step's hook needs public HTTPS: the agent's container has ended.
        ("uploading", vec![vec![], vec![json!(443)]]),
    ] {
        let mut body = json!({"phase": phase});
        if phase == "agent" {
            body["agent"] = "script".into();
        }
        let (status, _) = api
            .post(&format!("/v1/worker/jobs/{id}/phase"), &token, body)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{phase}");
        assert_eq!(patches(), expected, "{phase}");
    }
}

/// Why a server on a mocked cluster with the pipeline `text` refuses to start.
async fn refused_pipeline(dir: &Path, text: &str) -> String {
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, text).unwrap();
    let setup =
        ckrv_api::dispatch::worker_setup::WorkerSetup::load(Some(&pipeline), None, None).unwrap();
    let (_cluster, client) = MockCluster::start(NAMESPACE);
    let database = ckrv_test_support::TestDatabase::new(dir).await;
    let mut config = support::test_config(dir, &database);
    config.dispatcher = DispatcherConfig::Kubernetes(Box::new(KubernetesConfig {
        client,
        settings: settings(),
        egress_proxy_listen: None,
    }));
    config.workers = Arc::new(setup);
    ckrv_api::Server::bind(config)
        .await
        .err()
        .expect("the server refuses to start")
        .to_string()
}

#[tokio::test]
async fn a_pipeline_whose_agent_reports_cloning_is_refused_with_a_mocked_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let error = refused_pipeline(
        dir.path(),
        "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n[[stage]]\nagent = true\nphase = \"cloning\"\n\
         [[stage]]\nstep = \"diff\"\nphase = \"diffing\"\n[[stage]]\nstep = \"upload\"\nphase = \"uploading\"\n",
    )
    .await;
    assert!(
        error.starts_with("--pipeline: the agent stage reports phase `cloning`; with --dispatcher kubernetes it must come after `cloning`"),
        "{error}"
    );

    // A step that calls out in the agent's own phase would open public HTTPS to the agent.
    let dir = tempfile::tempdir().unwrap();
    let error = refused_pipeline(
        dir.path(),
        "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n[[stage]]\nagent = true\nphase = \"agent\"\n\
         [[stage]]\nstep = \"diff\"\nphase = \"agent\"\nallowed_hosts = [\"https://hooks.localhost\"]\n\
         [[stage]]\nstep = \"upload\"\nphase = \"uploading\"\n",
    )
    .await;
    assert!(
        error.starts_with("--pipeline: the stage `diff` has allowed_hosts and reports the agent stage's phase `agent`"),
        "{error}"
    );
}

/// The API on a mocked cluster with `settings` and `workers`, running its egress proxy for
/// job pods on a loopback port.
async fn with_egress_proxy(
    dir: &Path,
    settings: KubernetesSettings,
    workers: Arc<ckrv_api::dispatch::worker_setup::WorkerSetup>,
) -> (TestApi, MockCluster) {
    let (cluster, client) = MockCluster::start(NAMESPACE);
    let configure = move |c: &mut ckrv_api::Config| {
        c.dispatcher = DispatcherConfig::Kubernetes(Box::new(KubernetesConfig {
            client,
            settings,
            egress_proxy_listen: Some("127.0.0.1:0".parse().unwrap()),
        }));
        c.workers = workers;
    };
    let recorder = Arc::new(RecordingDispatcher::default());
    let api = TestApi::start_configured(dir, recorder, configure).await;
    (api, cluster)
}

/// Sends `request` to the proxy at `proxy` and reads its answer to the end.
async fn through_proxy(proxy: &str, request: String) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn with_the_apis_egress_proxy_a_pods_agent_reaches_only_its_policy_and_each_refusal_reaches_its_worker_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    // The API's Service as job pods reach it, here a stand-in on loopback: the proxy allows
    // it (the gateway) to every job with network.
    let service = ckrv_test_support::FakeEndpoint::start(|_| {
        std::future::ready(axum::response::IntoResponse::into_response(
            "the API's service",
        ))
    })
    .await;
    let service_port = url::Url::parse(&service.url).unwrap().port().unwrap();
    let mut settings = settings();
    settings.worker_api_url = service.url.clone();
    let (api, cluster) = with_egress_proxy(dir.path(), settings, agent_secrets(dir.path())).await;
    let api_port = url::Url::parse(&api.url).unwrap().port().unwrap();
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let id = &dispatched(&api, &cluster, user, claude_job()).await;
    let name = name_of(id);

    // The Secret holds the proxy's URL with the job's model token as its password; only the
    // agent's container reads it, as HTTP(S)_PROXY; the API's host is reached directly.
    let secret = cluster.object("secrets", &name).unwrap();
    let model_token = decoded(&secret, "model-token");
    let proxy_url = decoded(&secret, "egress-proxy");
    let proxy = proxy_url
        .strip_prefix(&format!("http://job:{model_token}@"))
        .unwrap_or_else(|| panic!("{proxy_url}"))
        .to_string();
    let proxy_port: u16 = proxy.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
    let job = cluster.object("jobs", &name).unwrap();
    let containers = job["spec"]["template"]["spec"]["containers"].clone();
    let env_of = |container: usize| containers[container]["env"].as_array().unwrap().clone();
    for name_ in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert!(
            env_of(1).contains(&json!({"name": name_, "valueFrom": {"secretKeyRef": {
                "name": name, "key": "egress-proxy", "optional": false}}})),
            "{name_}: {containers}"
        );
    }
    assert!(env_of(1).contains(&json!({"name": "NO_PROXY", "value": "127.0.0.1"})));
    assert!(
        !env_of(0).iter().any(|e| e["name"] == "HTTPS_PROXY"),
        "the orchestrator's own network"
    );
    let policy = cluster.object("networkpolicies", &name).unwrap();
    assert_eq!(
        policy["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": api_port}, {"protocol": "TCP", "port": proxy_port}]),
        "the API's pods on the API's port and the proxy's: {policy}"
    );
    let secrets_yaml = yaml_of(&[&job, &secret, &policy]);
    expect_valid(&secrets_yaml);

    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("job:{model_token}"));
    // Allowed: the gateway (the API's service).
    let allowed = through_proxy(
        &proxy,
        format!(
            "GET http://127.0.0.1:{service_port}/v1/gateway/anthropic/x HTTP/1.1\r\nHost: 127.0.0.1:{service_port}\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"
        ),
    )
    .await;
    assert!(allowed.starts_with("HTTP/1.1 200 OK"), "{allowed}");
    assert!(allowed.ends_with("the API's service"), "{allowed}");
    assert!(
        service
            .requests()
            .iter()
            .all(|r| r.header("proxy-authorization").is_empty()),
        "the token stays with the proxy"
    );
    // Outside the job's policy (`model`): refused, told, kept for the worker.
    let refused = through_proxy(
        &proxy,
        format!("CONNECT paste.localhost:443 HTTP/1.1\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"),
    )
    .await;
    let line = "Connection blocked by network allowlist: paste.localhost:443 (not in the job's allowlist, policy `model`)";
    assert!(refused.starts_with("HTTP/1.1 403 Forbidden"), "{refused}");
    assert!(refused.ends_with(&format!("{line}\n")), "{refused}");
    // No job, or another token: 407, and nothing kept.
    for credentials in [
        None,
        Some("job:ckrv_mt_0000"),
        Some(&*format!("job:{}", decoded(&secret, "worker-token"))),
    ] {
        let header = credentials
            .map(|c| {
                format!(
                    "Proxy-Authorization: Basic {}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(c)
                )
            })
            .unwrap_or_default();
        let answer = through_proxy(
            &proxy,
            format!("CONNECT paste.localhost:443 HTTP/1.1\r\n{header}\r\n"),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 407 Proxy Authentication Required"),
            "{answer}"
        );
        assert!(answer.contains("Proxy-Authenticate: Basic"), "{answer}");
    }

    // The job's worker hears of the refusal with its next heartbeat, once.
    let token = worker_token(&cluster, id);
    let heartbeat = format!("/v1/worker/jobs/{id}/heartbeat");
    let mut heard = Vec::new();
    for _ in 0..100 {
        let (status, answer) = api.post(&heartbeat, &token, Value::Null).await;
        if status == StatusCode::OK {
            heard.extend(answer["egress_refusals"].as_array().unwrap().clone());
            break;
        }
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(heard, [json!(line)]);
    let (status, _) = api.post(&heartbeat, &token, Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "told once");

    // Once the job has ended its token names no job: the proxy admits it no more.
    let (status, _) = api
        .post(&format!("/v1/jobs/{id}/cancel"), user, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_state(&api, user, id, "cancelled").await;
    let late = through_proxy(
        &proxy,
        format!("GET http://127.0.0.1:{service_port}/ HTTP/1.1\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"),
    )
    .await;
    assert!(late.starts_with("HTTP/1.1 407 "), "{late}");
}

#[tokio::test]
async fn while_a_pods_job_is_in_setup_the_egress_proxy_applies_setups_policy_and_none_while_verifying_on_a_mocked_cluster()
 {
    let dir = tempfile::tempdir().unwrap();
    // A package index inside the operator's network, here on loopback: reachable by setup
    // (within the operator's --setup-egress-allow and --egress-internal), never by the agent.
    let index = ckrv_test_support::FakeEndpoint::start(|_| {
        std::future::ready(axum::response::IntoResponse::into_response("the index"))
    })
    .await;
    let index_port = url::Url::parse(&index.url).unwrap().port().unwrap();
    let index_entry = format!("localhost:{index_port}");
    let mut settings = settings();
    settings.worker_api_url = "http://127.0.0.1:9".into();
    let workers = Arc::new(
        Arc::into_inner(agent_secrets(dir.path()))
            .unwrap()
            .with_setup_egress(
                Some(index_entry.parse().unwrap()),
                vec![index_entry.parse().unwrap()],
            ),
    );
    let (api, cluster) = with_egress_proxy(dir.path(), settings, workers).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let id = &dispatched(&api, &cluster, user, claude_job()).await;
    let secret = cluster.object("secrets", &name_of(id)).unwrap();
    let model_token = decoded(&secret, "model-token");
    let proxy = decoded(&secret, "egress-proxy")
        .strip_prefix(&format!("http://job:{model_token}@"))
        .unwrap()
        .to_string();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("job:{model_token}"));
    let fetch = || {
        through_proxy(
            &proxy,
            format!(
                "GET http://{index_entry}/simple/ HTTP/1.1\r\nHost: {index_entry}\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"
            ),
        )
    };
    let token = worker_token(&cluster, id);
    let phase = format!("/v1/worker/jobs/{id}/phase");

    // Before setup, the job's own policy (`model`) holds.
    assert!(fetch().await.starts_with("HTTP/1.1 403 "));
    // A policy past the operator's ceiling, or sent with another phase, is refused, naming it.
    let (status, body) = api
        .post(
            &phase,
            &token,
            json!({"phase": "setup", "agent": "claude-code", "setup_egress": "elsewhere.localhost"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("elsewhere.localhost") && message.contains(&index_entry),
        "{body}"
    );
    let (status, body) = api
        .post(
            &phase,
            &token,
            json!({"phase": "agent", "agent": "claude-code", "setup_egress": index_entry}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(fetch().await.starts_with("HTTP/1.1 403 "));

    // In phase setup, setup's policy: the index answers through the proxy.
    let (status, body) = api
        .post(
            &phase,
            &token,
            json!({"phase": "setup", "agent": "claude-code", "setup_egress": index_entry}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let fetched = fetch().await;
    assert!(fetched.starts_with("HTTP/1.1 200 OK"), "{fetched}");
    assert!(fetched.ends_with("the index"), "{fetched}");
    assert_eq!(index.requests().len(), 1);

    // Once the agent's phase begins, the job's own policy again.
    let (status, body) = api
        .post(
            &phase,
            &token,
            json!({"phase": "agent", "agent": "claude-code"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let refused = fetch().await;
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    assert!(refused.contains("policy `model`"), "{refused}");
    assert_eq!(index.requests().len(), 1, "the agent reached the index");

    // While the change is verified (docs/verification.md), nothing at all.
    let (status, body) = api
        .post(
            &phase,
            &token,
            json!({"phase": "verifying", "agent": "claude-code"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let refused = fetch().await;
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    assert!(refused.contains("policy `none`"), "{refused}");
    assert_eq!(index.requests().len(), 1, "the check reached the index");
}
