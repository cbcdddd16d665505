//! The Helm chart (`charts/ckrv`), checked without a cluster: Helm's own linter passes; every
//! value set in `charts/ckrv/ci/` renders (through Helm's library against a stand-in API
//! server on loopback) to objects that pass `kubernetes-validate --strict`; the rendered pods
//! are hardened, the Role grants exactly what the dispatcher uses and nothing is
//! cluster-scoped; the API's environment carries the dispatcher's settings, consistent with
//! the Service and the labels the NetworkPolicies select; and values that would deploy
//! something broken are refused with a message naming the problem.
//!
//! Skipped, saying why, where the tools are missing, unless `CKRV_REQUIRE_K8S_TOOLS=1`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ckrv_e2e::repository_root;
use ckrv_test_support::kubernetes::{self, Helm};
use serde_json::{Value, json};

const NAMESPACE: &str = "ckrv-test";
const RELEASE: &str = "team";

fn chart() -> PathBuf {
    repository_root().join("charts/ckrv")
}

fn ci_values(name: &str) -> PathBuf {
    chart().join("ci").join(format!("{name}-values.yaml"))
}

/// The lowest version Chart.yaml's kubeVersion (`>=X.Y.Z-0`) admits.
fn oldest_kubernetes() -> String {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let constraint = str(&chart["kubeVersion"]);
    let version = constraint
        .strip_prefix(">=")
        .and_then(|v| v.strip_suffix("-0"))
        .unwrap_or_else(|| panic!("kubeVersion {constraint:?} is not >=X.Y.Z-0"));
    assert_eq!(chart["appVersion"], "0.2.0");
    version.to_string()
}

/// Every value set CI renders.
fn ci_value_sets() -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    sets.sort();
    assert!(sets.len() >= 4, "{sets:?}");
    sets
}

/// The rendered chart, every object validated, as JSON values.
struct Rendered {
    objects: Vec<Value>,
}

impl Rendered {
    fn of(helm: &Helm, values: &Path) -> Self {
        let manifest = helm
            .render(&chart(), RELEASE, NAMESPACE, values)
            .unwrap_or_else(|e| panic!("{}: {e}", values.display()));
        // Against the newest schemas, and the oldest Kubernetes the chart claims to support.
        let oldest = oldest_kubernetes();
        for (version, validated) in [
            ("the newest", kubernetes::validate(&manifest)),
            (&*oldest, kubernetes::validate_against(&manifest, &oldest)),
        ] {
            match validated {
                Ok(kubernetes::Validated::Passed) => {}
                Ok(kubernetes::Validated::Skipped(why)) => eprintln!("{why}"),
                Err(output) => panic!("{} on {version}:\n{output}\n{manifest}", values.display()),
            }
        }
        // Helm separates the documents of a manifest with lines of `---` alone.
        let objects: Vec<Value> = manifest
            .split("\n---\n")
            .map(|document| serde_yaml_ng::from_str(document).unwrap())
            .filter(|object: &Value| !object.is_null())
            .collect();
        assert!(!objects.is_empty(), "{manifest}");
        Self { objects }
    }

    fn of_set(helm: &Helm, name: &str) -> Self {
        Self::of(helm, &ci_values(name))
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "one {kind}: {all:#?}");
        all[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", self.kinds()))
    }

    fn kinds(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
            .collect()
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn pod(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn api_container(&self) -> &Value {
        let containers = self.pod()["containers"].as_array().unwrap();
        containers.iter().find(|c| c["name"] == "api").unwrap()
    }

    /// The API container's plain environment (values, not Secret references).
    fn env(&self) -> BTreeMap<String, String> {
        self.api_container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((
                    str(&e["name"]).to_string(),
                    e["value"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    /// The Secret and key an environment variable comes from.
    fn env_from_secret(&self, name: &str) -> Option<(String, String)> {
        let env = self.api_container()["env"].as_array().unwrap();
        let var = env.iter().find(|e| e["name"] == name)?;
        let reference = &var["valueFrom"]["secretKeyRef"];
        Some((
            str(&reference["name"]).to_string(),
            str(&reference["key"]).to_string(),
        ))
    }

    fn volume(&self, name: &str) -> &Value {
        let volumes = self.pod()["volumes"].as_array().unwrap();
        volumes.iter().find(|v| v["name"] == name).unwrap()
    }
}

fn str(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// `KEY=VALUE,KEY=VALUE` as a map.
fn pairs(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap();
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn labels(selector: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(selector.clone()).unwrap()
}

/// What every value set's objects must be, whatever the values say.
fn check_invariants(rendered: &Rendered, set: &Path) {
    let set = set.display();
    let namespaced = [
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Ingress",
        "NetworkPolicy",
    ];
    for object in &rendered.objects {
        let kind = str(&object["kind"]);
        assert!(namespaced.contains(&kind), "{set}: unexpected {kind}");
        assert_eq!(
            object["metadata"]["namespace"], NAMESPACE,
            "{set}: {kind} not in the release namespace"
        );
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"], RELEASE,
            "{set}: {kind}"
        );
    }

    // The pod and its containers are hardened.
    let pod = rendered.pod();
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{set}");
    assert_eq!(security["runAsUser"], 10001, "{set}");
    assert_eq!(security["runAsGroup"], 10001, "{set}");
    assert_eq!(security["fsGroup"], 10001, "{set}");
    assert_eq!(
        security["seccompProfile"]["type"], "RuntimeDefault",
        "{set}"
    );
    assert_eq!(pod["automountServiceAccountToken"], true, "{set}");
    for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod.get(forbidden).is_none(), "{set}: {forbidden}");
    }
    for container in pod["containers"].as_array().unwrap() {
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{set}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{set}");
        assert_eq!(security["runAsNonRoot"], true, "{set}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{set}");
        assert!(security["capabilities"].get("add").is_none(), "{set}");
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{set}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{set}"
        );
        assert!(container["resources"]["requests"].is_object(), "{set}");
    }
    // Writable places are volumes: the data directory and /tmp.
    let mounts: BTreeMap<&str, &str> = rendered.api_container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (str(&m["mountPath"]), str(&m["name"])))
        .collect();
    assert_eq!(mounts.get("/var/lib/ckrv"), Some(&"data"), "{set}");
    // The data directory is made by the API inside the volume (it must own it to close it).
    assert_eq!(
        rendered.env()["CKRV_API_DATA_DIR"],
        "/var/lib/ckrv/data",
        "{set}"
    );
    assert_eq!(mounts.get("/tmp"), Some(&"tmp"), "{set}");
    let data = rendered.volume("data");
    assert!(
        data.get("emptyDir").is_some() || data.get("persistentVolumeClaim").is_some(),
        "{set}: {data}"
    );
    // Mounted Secrets are readable by the pod's group only (0440).
    for volume in pod["volumes"].as_array().unwrap() {
        if let Some(secret) = volume.get("secret") {
            assert_eq!(secret["defaultMode"], 0o440, "{set}: {volume}");
        }
    }

    // The Role, when rendered, grants exactly what the dispatcher uses.
    assert!(
        rendered.all("ClusterRole").is_empty() && rendered.all("ClusterRoleBinding").is_empty()
    );
    for role in rendered.all("Role") {
        let mut granted = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        granted.insert(format!("{}/{}:{}", str(group), str(resource), str(verb)));
                    }
                }
            }
        }
        let mut expected = BTreeSet::new();
        for (group, resource, verbs) in [
            ("batch", "jobs", "get list watch create patch delete"),
            ("", "pods", "get list watch"),
            ("", "pods/log", "get"),
            ("", "secrets", "create"),
            ("networking.k8s.io", "networkpolicies", "create patch"),
        ] {
            for verb in verbs.split(' ') {
                expected.insert(format!("{group}/{resource}:{verb}"));
            }
        }
        assert_eq!(granted, expected, "{set}");
        let binding = rendered.one("RoleBinding");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{
                "kind": "ServiceAccount",
                "name": rendered.pod()["serviceAccountName"],
                "namespace": NAMESPACE,
            }]),
            "{set}"
        );
    }

    // The API's settings: the Kubernetes dispatcher in the release namespace, reached through
    // the chart's Service, its pods and the job pods labelled as the policies select them.
    let env = rendered.env();
    let service = rendered.one("Service");
    let service_name = str(&service["metadata"]["name"]);
    let service_port = &service["spec"]["ports"][0]["port"];
    assert_eq!(env["CKRV_API_DISPATCHER"], "kubernetes", "{set}");
    assert_eq!(env["CKRV_API_NAMESPACE"], NAMESPACE, "{set}");
    assert_eq!(env["CKRV_API_LISTEN"], "0.0.0.0:8080", "{set}");
    assert_eq!(
        rendered.api_container()["ports"][0]["containerPort"],
        8080,
        "{set}"
    );
    assert_eq!(rendered.api_container()["args"], json!(["serve"]), "{set}");
    assert!(
        env["CKRV_API_WORKER_IMAGE"].contains("ckrv-orchestrator:"),
        "{set}"
    );
    for setting in [
        "CKRV_API_DATA_DIR",
        "CKRV_API_PUBLIC_URL",
        "CKRV_API_JOB_TIMEOUT",
        "CKRV_API_WORKER_API_URL",
        "CKRV_API_WORKER_CPU",
        "CKRV_API_WORKER_MEMORY",
        "CKRV_API_AGENT_CPU",
        "CKRV_API_AGENT_MEMORY",
        "CKRV_API_WORKSPACE_SIZE",
        "CKRV_API_JOB_TTL",
        "CKRV_API_JOB_SCHEDULE_TIMEOUT",
    ] {
        assert!(!env[setting].is_empty(), "{set}: {setting}");
    }
    if env["CKRV_API_WORKER_API_URL"].contains(".svc:") {
        assert_eq!(
            env["CKRV_API_WORKER_API_URL"],
            format!("http://{service_name}.{NAMESPACE}.svc:{service_port}"),
            "{set}"
        );
    }
    let api_labels = labels(&rendered.deployment()["spec"]["selector"]["matchLabels"]);
    assert_eq!(pairs(&env["CKRV_API_POD_LABELS"]), api_labels, "{set}");
    assert_eq!(api_labels["app.kubernetes.io/component"], "api");
    assert_eq!(labels(&service["spec"]["selector"]), api_labels, "{set}");
    let pod_labels = labels(&rendered.deployment()["spec"]["template"]["metadata"]["labels"]);
    for (key, value) in &api_labels {
        assert_eq!(pod_labels.get(key), Some(value), "{set}: pod label {key}");
    }
    // Job pods are told the DNS the API's own policy lets it ask.
    let dns_namespace = &env["CKRV_API_DNS_NAMESPACE"];
    let dns_labels = pairs(&env["CKRV_API_DNS_POD_LABELS"]);
    for policy in rendered.all("NetworkPolicy") {
        if let Some(egress) = policy["spec"]["egress"].as_array() {
            let dns = &egress[0]["to"][0];
            assert_eq!(
                dns["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                dns_namespace.as_str(),
                "{set}"
            );
            assert_eq!(
                labels(&dns["podSelector"]["matchLabels"]),
                dns_labels,
                "{set}"
            );
        }
    }
    let job_labels = pairs(&env["CKRV_API_JOB_LABELS"]);
    assert_eq!(job_labels["app.kubernetes.io/instance"], RELEASE, "{set}");
    // What the dispatcher puts on every job pod, with the chart's extra labels.
    let mut job_pod_labels = job_labels.clone();
    job_pod_labels.insert("app.kubernetes.io/name".into(), "ckrv".into());
    job_pod_labels.insert("app.kubernetes.io/component".into(), "job".into());
    job_pod_labels.insert("app.kubernetes.io/managed-by".into(), "ckrv-api".into());
    for policy in rendered.all("NetworkPolicy") {
        let selector = labels(&policy["spec"]["podSelector"]["matchLabels"]);
        let selects_jobs = selector
            .iter()
            .all(|(k, v)| job_pod_labels.get(k) == Some(v));
        let selects_api = selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v));
        assert!(selects_jobs != selects_api, "{set}: {policy}");
        if selects_jobs {
            // The safety net: no ingress rule at all.
            assert!(policy["spec"].get("ingress").is_none(), "{set}: {policy}");
            assert!(policy["spec"].get("egress").is_none(), "{set}: {policy}");
            let types = policy["spec"]["policyTypes"].as_array().unwrap();
            assert!(types.contains(&json!("Ingress")), "{set}: {policy}");
        } else {
            check_api_policy(policy, &job_pod_labels, &set.to_string());
            check_egress_proxy_policy(policy, &env, &job_pod_labels, &set.to_string());
        }
    }
    check_egress_proxy(rendered, &env, &set.to_string());
}

/// The port of the API's egress proxy for job pods, when the set runs one.
fn egress_proxy_port(env: &BTreeMap<String, String>) -> Option<u64> {
    let listen = env.get("CKRV_API_EGRESS_PROXY_LISTEN")?;
    Some(listen.strip_prefix("0.0.0.0:").unwrap().parse().unwrap())
}

/// With the egress proxy, the pods listen on its port and the Service exposes it under the
/// same number (job pods' `HTTPS_PROXY` names the worker API URL's host with that port).
fn check_egress_proxy(rendered: &Rendered, env: &BTreeMap<String, String>, set: &str) {
    let ports = rendered.api_container()["ports"].as_array().unwrap();
    let service_ports = rendered.one("Service")["spec"]["ports"].as_array().unwrap();
    let Some(port) = egress_proxy_port(env) else {
        assert_eq!(ports.len(), 1, "{set}");
        assert_eq!(service_ports.len(), 1, "{set}");
        return;
    };
    assert!(
        ports.contains(&json!({"name": "egress-proxy", "containerPort": port, "protocol": "TCP"})),
        "{set}: {ports:?}"
    );
    assert!(
        service_ports.contains(&json!({"name": "egress-proxy", "port": port,
                                       "targetPort": "egress-proxy", "protocol": "TCP"})),
        "{set}: {service_ports:?}"
    );
}

/// With the egress proxy, the API's policy lets job pods (and no one else) reach its port, and
/// the API's pods reach public addresses on any port, never private ones.
fn check_egress_proxy_policy(
    policy: &Value,
    env: &BTreeMap<String, String>,
    job_pod_labels: &BTreeMap<String, String>,
    set: &str,
) {
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let public: Vec<&Value> = egress
        .iter()
        .filter(|rule| rule["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0")
        .collect();
    let Some(port) = egress_proxy_port(env) else {
        assert_eq!(ingress.len(), 1, "{set}");
        assert!(public.is_empty(), "{set}: {policy}");
        return;
    };
    assert_eq!(ingress.len(), 2, "{set}");
    assert_eq!(
        ingress[1]["ports"],
        json!([{"port": port, "protocol": "TCP"}]),
        "{set}"
    );
    let from = ingress[1]["from"].as_array().unwrap();
    assert_eq!(from.len(), 1, "{set}");
    assert_eq!(
        labels(&from[0]["podSelector"]["matchLabels"])
            .iter()
            .filter(|(k, v)| job_pod_labels.get(*k) != Some(v))
            .count(),
        0,
        "{set}"
    );
    assert_eq!(public.len(), 1, "{set}: {policy}");
    assert!(public[0].get("ports").is_none(), "{set}: any port");
    let except = public[0]["to"][0]["ipBlock"]["except"].as_array().unwrap();
    for private in [
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ] {
        assert!(except.contains(&json!(private)), "{set}: {private} open");
    }
    assert_eq!(env["CKRV_API_EGRESS_ALLOW"], "registries", "{set}");
    assert_eq!(
        env["CKRV_API_SETUP_EGRESS_ALLOW"], "pypi.org,files.pythonhosted.org,mirror.internal:8081",
        "{set}"
    );
    assert_eq!(
        env["CKRV_API_EGRESS_INTERNAL"], "mirror.internal:8081",
        "{set}"
    );
}

/// The API's NetworkPolicy: its port open to job pods (alone or with everyone); DNS and the
/// Kubernetes API reachable.
fn check_api_policy(policy: &Value, job_pod_labels: &BTreeMap<String, String>, set: &str) {
    let spec = &policy["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]), "{set}");
    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 8080, "protocol": "TCP"}]),
        "{set}"
    );
    if let Some(from) = ingress[0].get("from") {
        let jobs_allowed = from.as_array().unwrap().iter().any(|peer| {
            peer.get("namespaceSelector").is_none()
                && labels(&peer["podSelector"]["matchLabels"])
                    .iter()
                    .all(|(k, v)| job_pod_labels.get(k) == Some(v))
        });
        assert!(jobs_allowed, "{set}: job pods cannot reach the API: {from}");
    }
    let egress = spec["egress"].as_array().unwrap();
    let ports: BTreeSet<(u64, &str)> = egress
        .iter()
        // A rule without ports (the egress proxy's public addresses) names none.
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .map(|p| (p["port"].as_u64().unwrap(), str(&p["protocol"])))
        .collect();
    assert!(
        ports.contains(&(53, "UDP")) && ports.contains(&(53, "TCP")),
        "{set}"
    );
    assert!(
        ports.contains(&(443, "TCP")) || ports.contains(&(6443, "TCP")),
        "{set}: no way to the Kubernetes API"
    );
}

#[test]
fn helms_linter_passes_the_chart() {
    let Some(helm) = Helm::or_skip() else { return };
    let output = helm.lint(&chart()).unwrap_or_else(|e| panic!("{e}"));
    assert!(output.contains("0 error(s)"), "{output}");
    assert!(!output.contains("WARNING"), "{output}");
}

#[test]
fn helms_linter_fails_a_broken_template() {
    let Some(helm) = Helm::or_skip() else { return };
    let copy = tempfile::tempdir().unwrap();
    let broken = copy.path().join("ckrv");
    std::fs::create_dir_all(broken.join("templates")).unwrap();
    for file in ["Chart.yaml", "values.yaml", "values.schema.json"] {
        std::fs::copy(chart().join(file), broken.join(file)).unwrap();
    }
    std::fs::write(
        broken.join("templates/service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }\n",
    )
    .unwrap();
    let refusal = helm
        .lint(&broken)
        .expect_err("an unclosed action fails the lint");
    assert!(refusal.contains("ERROR templates/"), "{refusal}");
}

#[test]
fn every_ci_value_set_renders_valid_hardened_objects() {
    let Some(helm) = Helm::or_skip() else { return };
    for set in ci_value_sets() {
        let rendered = Rendered::of(&helm, &set);
        check_invariants(&rendered, &set);
        eprintln!("{}: {}", set.display(), rendered.kinds().join(", "));
    }
}

#[test]
fn the_defaults_are_one_pod_on_sqlite_with_policies() {
    let Some(helm) = Helm::or_skip() else { return };
    let rendered = Rendered::of_set(&helm, "default");
    let deployment = rendered.deployment();
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert!(rendered.volume("data").get("emptyDir").is_some());
    for absent in ["PodDisruptionBudget", "Ingress", "PersistentVolumeClaim"] {
        assert!(rendered.all(absent).is_empty(), "{absent}");
    }
    let env = rendered.env();
    for unset in [
        "DATABASE_URL",
        "CKRV_API_ARTIFACTS",
        "CKRV_API_SECRETS_KEY_FILE",
        "CKRV_API_AGENT_SECRETS",
        "CKRV_API_AGENT_IMAGES",
        "CKRV_API_IMAGE_PULL_SECRETS",
        "CKRV_API_WORKER_SERVICE_ACCOUNT",
        "CKRV_API_JOB_NODE_SELECTOR",
        "CKRV_API_JOB_TOLERATIONS",
        "CKRV_API_JOB_PRIORITY_CLASS",
    ] {
        assert!(!env.contains_key(unset), "{unset}");
    }
    assert_eq!(
        env["CKRV_API_WORKER_IMAGE"],
        "ghcr.io/chakravarti/ckrv-orchestrator:0.2.0"
    );
    assert_eq!(
        env["CKRV_API_WORKER_API_URL"],
        format!("http://{RELEASE}-ckrv.{NAMESPACE}.svc:8080")
    );
    assert_eq!(env["CKRV_API_PUBLIC_URL"], "http://127.0.0.1:8080");
    assert_eq!(env["CKRV_API_WORKER_CPU"], "500m");
    assert_eq!(env["CKRV_API_AGENT_MEMORY"], "4Gi");
    assert_eq!(env["CKRV_API_WORKSPACE_SIZE"], "10Gi");
    assert_eq!(env["CKRV_API_JOB_TTL"], "1h");
    assert_eq!(env["CKRV_API_JOB_SCHEDULE_TIMEOUT"], "10m");
    assert_eq!(
        rendered.api_container()["image"],
        "ghcr.io/chakravarti/ckrv-api:0.2.0"
    );
    let safety_net = rendered.named("NetworkPolicy", &format!("{RELEASE}-ckrv-jobs"));
    assert_eq!(
        safety_net["spec"]["policyTypes"],
        json!(["Ingress", "Egress"])
    );
    // With no peers configured the API's port is open to anyone (job pods included).
    let api_policy = rendered.named("NetworkPolicy", &format!("{RELEASE}-ckrv-api"));
    assert!(api_policy["spec"]["ingress"][0].get("from").is_none());
}

#[test]
fn scale_out_shares_postgresql_s3_and_one_key_across_three_replicas() {
    let Some(helm) = Helm::or_skip() else { return };
    let rendered = Rendered::of_set(&helm, "scale-out");
    let deployment = rendered.deployment();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let budget = rendered.one("PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 2);
    assert_eq!(
        labels(&budget["spec"]["selector"]["matchLabels"]),
        labels(&deployment["spec"]["selector"]["matchLabels"])
    );

    assert_eq!(
        rendered.env_from_secret("DATABASE_URL"),
        Some(("ckrv-database".into(), "url".into()))
    );
    assert_eq!(
        rendered.env_from_secret("AWS_ACCESS_KEY_ID"),
        Some(("ckrv-s3".into(), "AWS_ACCESS_KEY_ID".into()))
    );
    assert_eq!(
        rendered.env_from_secret("AWS_SECRET_ACCESS_KEY"),
        Some(("ckrv-s3".into(), "AWS_SECRET_ACCESS_KEY".into()))
    );
    let env = rendered.env();
    assert_eq!(env["CKRV_API_ARTIFACTS"], "s3://ckrv-artifacts/prod/team-a");
    assert_eq!(env["AWS_REGION"], "eu-central-1");
    assert_eq!(env["AWS_ENDPOINT_URL"], "https://minio.storage.svc:9000");
    assert_eq!(
        env["CKRV_API_SECRETS_KEY_FILE"],
        "/etc/ckrv/secrets-key/keys"
    );
    assert_eq!(env["CKRV_API_AGENT_SECRETS"], "/etc/ckrv/agent-secrets");
    assert_eq!(env["CKRV_API_AGENTS"], "claude-code,codex,script");
    assert_eq!(env["CKRV_API_MAX_RUNNING"], "50");
    assert_eq!(env["CKRV_API_PUBLIC_URL"], "https://ckrv.example.com");
    assert!(
        !env.values()
            .any(|v| v.contains("secret-access") || v.contains("postgres://"))
    );
    let key = &rendered.volume("secrets-key")["secret"];
    assert_eq!(key["secretName"], "ckrv-secrets-key");
    assert_eq!(key["items"], json!([{"key": "keys", "path": "keys"}]));
    assert_eq!(
        rendered.volume("agent-secrets")["secret"]["secretName"],
        "ckrv-agent-secrets"
    );

    // Images from the private registry, for the API and for every job pod.
    assert_eq!(
        rendered.api_container()["image"],
        "registry.example.com/ckrv/ckrv-api:0.2.0"
    );
    assert_eq!(
        rendered.pod()["imagePullSecrets"],
        json!([{"name": "registry-example-com"}, {"name": "registry-mirror"}])
    );
    assert_eq!(
        env["CKRV_API_IMAGE_PULL_SECRETS"],
        "registry-example-com,registry-mirror"
    );
    assert_eq!(
        env["CKRV_API_WORKER_IMAGE"],
        "registry.example.com/ckrv/ckrv-orchestrator:0.2.0-1"
    );
    assert_eq!(
        pairs(&env["CKRV_API_AGENT_IMAGES"]),
        BTreeMap::from([
            (
                "claude-code".to_string(),
                "registry.example.com/ckrv/ckrv-agent-claude-code:0.2.0".to_string()
            ),
            (
                "codex".to_string(),
                "registry.example.com/ckrv/ckrv-agent-codex:0.2.0".to_string()
            ),
        ])
    );
    assert_eq!(env["CKRV_API_WORKER_CPU"], "1");
    assert_eq!(env["CKRV_API_AGENT_CPU"], "4");
    assert_eq!(env["CKRV_API_AGENT_MEMORY"], "8Gi");
    assert_eq!(env["CKRV_API_WORKER_SERVICE_ACCOUNT"], "ckrv-jobs");
    // Job pods' scheduling, in the syntax of --job-node-selector and --job-toleration.
    assert_eq!(
        env["CKRV_API_JOB_NODE_SELECTOR"],
        "example.com/pool=agents,kubernetes.io/arch=amd64"
    );
    assert_eq!(
        env["CKRV_API_JOB_TOLERATIONS"],
        "example.com/pool=agents:NoSchedule,example.com/spot"
    );
    assert_eq!(env["CKRV_API_JOB_PRIORITY_CLASS"], "ckrv-batch");
    assert_eq!(env["CKRV_API_JOB_SCHEDULE_TIMEOUT"], "5m");
    // The API pod's own scheduling stays its own.
    assert_eq!(rendered.pod()["priorityClassName"], "ckrv-high");

    let ingress = rendered.one("Ingress");
    let hosts: Vec<&str> = ingress["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| str(&rule["host"]))
        .collect();
    assert_eq!(hosts, ["ckrv.example.com", "ckrv.internal.example.com"]);
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], rendered.one("Service")["metadata"]["name"]);

    // Egress only to the peers given, each on its port.
    let api_policy = rendered.named("NetworkPolicy", &format!("{RELEASE}-ckrv-api"));
    let egress = api_policy["spec"]["egress"].as_array().unwrap();
    let to_port = |port: u64| {
        egress
            .iter()
            .find(|rule| rule["ports"][0]["port"] == port)
            .unwrap_or_else(|| panic!("no egress rule on {port}: {api_policy}"))
    };
    assert_eq!(
        to_port(443)["to"],
        json!([{"ipBlock": {"cidr": "172.20.0.0/28"}}])
    );
    assert_eq!(
        to_port(5432)["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "postgresql"
    );
    assert!(to_port(9000)["to"][0].get("namespaceSelector").is_some());
    assert!(egress.iter().all(|rule| rule.get("to").is_some()));
}

#[test]
fn a_single_persistent_replica_keeps_its_data_on_a_claim_behind_tls() {
    let Some(helm) = Helm::or_skip() else { return };
    let rendered = Rendered::of_set(&helm, "single-replica");
    let claim = rendered.one("PersistentVolumeClaim");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(claim["spec"]["storageClassName"], "standard");
    assert_eq!(
        rendered.volume("data")["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    assert_eq!(
        rendered.deployment()["spec"]["strategy"]["type"],
        "Recreate"
    );
    assert!(rendered.all("PodDisruptionBudget").is_empty());
    let env = rendered.env();
    assert_eq!(env["CKRV_API_PUBLIC_URL"], "https://ckrv.example.com");
    assert_eq!(env["CKRV_API_AGENTS"], "claude-code,script");
    assert_eq!(env["CKRV_API_MAX_RUNNING_PER_ACCOUNT"], "2");
    assert_eq!(env["RUST_LOG"], "info,ckrv_api=debug");
    let ingress = rendered.one("Ingress");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "ckrv-tls");
    let api_policy = rendered.named("NetworkPolicy", &format!("{RELEASE}-ckrv-api"));
    let from = api_policy["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert_eq!(from.len(), 2, "{api_policy}");
}

#[test]
fn existing_accounts_claims_and_no_policies_render_only_the_deployment_and_service() {
    let Some(helm) = Helm::or_skip() else { return };
    let rendered = Rendered::of_set(&helm, "existing-objects");
    let mut kinds: Vec<&str> = rendered.objects.iter().map(|o| str(&o["kind"])).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["Deployment", "Service"]);
    assert_eq!(rendered.pod()["serviceAccountName"], "ckrv-api");
    assert_eq!(
        rendered.volume("data")["persistentVolumeClaim"]["claimName"],
        "ckrv-data"
    );
    let service = rendered.one("Service");
    assert_eq!(service["metadata"]["name"], "chakravarti");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    let env = rendered.env();
    assert_eq!(
        env["CKRV_API_WORKER_API_URL"],
        "http://chakravarti.ckrv.svc.cluster.local:80"
    );
    assert_eq!(env["CKRV_API_ARTIFACTS"], "s3://ckrv-artifacts");
    assert!(rendered.env_from_secret("AWS_ACCESS_KEY_ID").is_none());
    assert_eq!(env["CKRV_API_PIPELINE"], "/etc/ckrv/pipeline/pipeline.toml");
}

#[test]
fn the_job_safety_net_may_leave_egress_to_each_jobs_own_policy() {
    let Some(helm) = Helm::or_skip() else { return };
    let rendered = Rendered::of_set(&helm, "network-policy");
    let safety_net = rendered.named("NetworkPolicy", &format!("{RELEASE}-ckrv-jobs"));
    assert_eq!(safety_net["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(rendered.deployment()["spec"]["replicas"], 2);
    assert!(rendered.all("PodDisruptionBudget").is_empty());
    // The database and S3 anywhere on their ports; DNS where the values say it is.
    let api_policy = rendered.named("NetworkPolicy", &format!("{RELEASE}-ckrv-api"));
    let egress = api_policy["spec"]["egress"].as_array().unwrap();
    let on = |port: u64| {
        egress
            .iter()
            .find(|rule| rule["ports"][0]["port"] == port)
            .unwrap_or_else(|| panic!("no egress rule on {port}: {api_policy}"))
    };
    assert!(on(5432).get("to").is_none(), "{api_policy}");
    let s3 = egress.last().unwrap();
    assert_eq!(
        s3["ports"],
        json!([{"port": 443, "protocol": "TCP"}]),
        "{api_policy}"
    );
    assert!(s3.get("to").is_none(), "{api_policy}");
    let env = rendered.env();
    assert_eq!(env["CKRV_API_DNS_NAMESPACE"], "dns");
    // The values' labels replace the default ones (a map would merge with them).
    assert_eq!(
        env["CKRV_API_DNS_POD_LABELS"],
        "app.kubernetes.io/name=coredns,app.kubernetes.io/component=dns"
    );
    assert_eq!(
        labels(&egress[0]["to"][0]["podSelector"]["matchLabels"]),
        pairs(&env["CKRV_API_DNS_POD_LABELS"])
    );
    assert_eq!(
        env["CKRV_API_PUBLIC_URL"],
        "http://ckrv.internal.example.com"
    );
    assert_eq!(env["CKRV_API_ARTIFACTS"], "s3://ckrv-artifacts");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert!(!env.contains_key("AWS_ENDPOINT_URL"));
}

#[test]
fn the_notes_give_the_first_admin_and_login_commands() {
    let Some(helm) = Helm::or_skip() else { return };
    let notes = helm
        .notes(&chart(), RELEASE, NAMESPACE, &ci_values("default"))
        .unwrap();
    assert!(
        notes.contains(&format!(
            "kubectl --namespace {NAMESPACE} exec deploy/{RELEASE}-ckrv -- ckrv-api users add you@example.com --admin"
        )),
        "{notes}"
    );
    assert!(
        notes.contains("CKRV_API_URL=http://127.0.0.1:8080 ckrv cloud login"),
        "{notes}"
    );
    assert!(
        notes.contains("port-forward svc/team-ckrv 8080:8080"),
        "{notes}"
    );
    assert!(
        notes.contains("lost whenever the pod is replaced"),
        "{notes}"
    );
    let notes = helm
        .notes(&chart(), RELEASE, NAMESPACE, &ci_values("scale-out"))
        .unwrap();
    assert!(
        notes.contains("CKRV_API_URL=https://ckrv.example.com ckrv cloud login"),
        "{notes}"
    );
    assert!(
        !notes.contains("port-forward") && !notes.contains("WARNING"),
        "{notes}"
    );
}

#[test]
fn values_that_would_deploy_something_broken_are_refused_naming_the_problem() {
    let Some(helm) = Helm::or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = "database: {existingSecret: db}\nartifacts: {s3: {bucket: ckrv-artifacts}}\n\
                  secretsKey: {existingSecret: key}\n";
    for (values, expected) in [
        // A typo is an unknown key, not a silently ignored one.
        ("replicaCont: 3\n", "replicaCont"),
        ("jobs:\n  agent:\n    cpu: 2\n    memroy: 4Gi\n", "memroy"),
        (
            "jobs:\n  worker: {cpu: 500mm, memory: 512Mi}\n",
            "/jobs/worker/cpu",
        ),
        (
            "imagePullSecrets: [Registry_Secret]\n",
            "/imagePullSecrets/0",
        ),
        // Several replicas need every piece of shared state, and are told which is missing.
        ("replicaCount: 3\n", "database.existingSecret"),
        ("replicaCount: 3\n", "secretsKey.existingSecret"),
        (
            "replicaCount: 3\ndatabase: {existingSecret: db}\nsecretsKey: {existingSecret: key}\n",
            "artifacts.s3.bucket",
        ),
        (
            &format!("replicaCount: 2\n{shared}podDisruptionBudget: {{minAvailable: 2}}\n"),
            "would block every node drain",
        ),
        (
            &format!("replicaCount: 2\n{shared}persistence: {{enabled: true}}\n"),
            "ReadWriteOnce",
        ),
        ("ingress: {enabled: true}\n", "ingress.hosts"),
        ("serviceAccount: {create: false}\n", "serviceAccount.name"),
        // A toleration that would mean something else than it says.
        (
            "jobs:\n  tolerations: [{key: spot, operator: Exists, value: \"yes\"}]\n",
            "/jobs/tolerations/0/value",
        ),
        (
            "jobs:\n  tolerations: [{key: spot}]\n",
            "/jobs/tolerations/0",
        ),
        (
            "jobs:\n  tolerations: [{key: spot, operator: Exists, effect: NoRun}]\n",
            "/jobs/tolerations/0/effect",
        ),
        ("jobs:\n  scheduleTimeout: soon\n", "/jobs/scheduleTimeout"),
        (
            "jobs:\n  nodeSelector: {pool: [agents]}\n",
            "/jobs/nodeSelector/pool",
        ),
    ] {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values).unwrap();
        let refusal = helm
            .render(&chart(), RELEASE, NAMESPACE, &file)
            .expect_err(values);
        assert!(
            refusal.contains(expected),
            "{values}: expected {expected:?} in\n{refusal}"
        );
    }
}
