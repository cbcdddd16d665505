#!/usr/bin/env python3
"""Helm's own linter and renderer for the chart tests, without a cluster or a helm binary.

No cluster exists where the tests run, and the helm CLI is not packaged on PyPI; the
`helm-sdkpy` wheel (pinned in .ci/run) carries Helm's Go library instead. This script drives it:

  helm_tool.py lint CHART
      Helm's linter (helm_sdkpy.chart.Lint) on the chart with its default values. Prints one
      line per message (severity and path: the library serializes the messages' texts as `{}`)
      and exits 1 if any is an error.

  helm_tool.py render CHART RELEASE NAMESPACE VALUES.yaml [--notes]
      Renders the chart as `helm install` would, values.schema.json checks and `fail` guards
      included: it runs helm_sdkpy's Install (no waiting) against a stand-in Kubernetes API
      server that this script starts on 127.0.0.1, and prints the release's manifest (or, with
      --notes, its NOTES.txt). A refusal prints Helm's message and exits 1.

The stand-in answers what an install asks: the version, discovery documents for the kinds it
knows (KINDS below; a kind missing there fails the install as a cluster without it would),
an empty release history, 404 for every object looked up, and it echoes every object created.
Helm sends its own release record as protobuf; that is answered with a minimal JSON Secret.
Nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# (group, version) -> [(kind, plural, namespaced)]: every kind the chart renders, plus those a
# values file might reasonably add. "" is the core group.
KINDS: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("ConfigMap", "configmaps", True),
        ("Namespace", "namespaces", False),
        ("PersistentVolumeClaim", "persistentvolumeclaims", True),
        ("Pod", "pods", True),
        ("Secret", "secrets", True),
        ("Service", "services", True),
        ("ServiceAccount", "serviceaccounts", True),
    ],
    ("apps", "v1"): [("Deployment", "deployments", True)],
    ("batch", "v1"): [("Job", "jobs", True)],
    ("networking.k8s.io", "v1"): [
        ("Ingress", "ingresses", True),
        ("IngressClass", "ingressclasses", False),
        ("NetworkPolicy", "networkpolicies", True),
    ],
    ("policy", "v1"): [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    ("rbac.authorization.k8s.io", "v1"): [
        ("ClusterRole", "clusterroles", False),
        ("ClusterRoleBinding", "clusterrolebindings", False),
        ("Role", "roles", True),
        ("RoleBinding", "rolebindings", True),
    ],
}

# The Kubernetes version the stand-in reports (the chart's kubeVersion must accept it).
KUBE_VERSION = ("1", "33")

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

# Helm's lint severities (helm.sh/helm/v4/pkg/lint/support).
SEVERITIES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def resource_list(group: str, version: str) -> dict:
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": VERBS,
            }
            for kind, plural, namespaced in KINDS[(group, version)]
        ],
    }


def group_list() -> dict:
    groups = []
    for group, version in KINDS:
        if not group:
            continue
        group_version = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append(
            {"name": group, "versions": [group_version], "preferredVersion": group_version}
        )
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def not_found(path: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{path} not found",
        "reason": "NotFound",
        "code": 404,
    }


class StandIn(BaseHTTPRequestHandler):
    """The Kubernetes API server, as far as `helm install --wait=false` can tell."""

    release = "release"
    namespace = "default"
    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass  # requests are kept in `requests` and shown only when the install fails

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path.rstrip("/")
        StandIn.requests.append(f"{self.command} {self.path}")
        parts = path.strip("/").split("/")

        if self.command == "GET":
            if path == "/version":
                major, minor = KUBE_VERSION
                return self.send_json(
                    200,
                    {
                        "major": major,
                        "minor": minor,
                        "gitVersion": f"v{major}.{minor}.0",
                        "platform": "linux/amd64",
                    },
                )
            if path == "/api":
                return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                return self.send_json(200, group_list())
            if path == "/api/v1":
                return self.send_json(200, resource_list("", "v1"))
            if len(parts) == 3 and parts[0] == "apis" and (parts[1], parts[2]) in KINDS:
                return self.send_json(200, resource_list(parts[1], parts[2]))
            # A collection (Helm's release history: its Secrets by label): empty.
            if parts[-1] == "secrets" and len(parts) == 5:
                return self.send_json(
                    200,
                    {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []},
                )
            # Any object looked up: none exists yet.
            return self.send_json(404, not_found(path))

        if self.command in ("POST", "PUT", "PATCH"):
            try:
                created = json.loads(body or b"{}")
            except (UnicodeDecodeError, json.JSONDecodeError):
                # Helm's release record, in protobuf: a Secret it reads nothing back from.
                name = parts[-1] if self.command == "PUT" else f"sh.helm.release.v1.{self.release}.v1"
                created = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": self.namespace},
                }
            metadata = created.setdefault("metadata", {})
            metadata.setdefault("uid", "00000000-0000-0000-0000-000000000001")
            metadata["resourceVersion"] = "1"
            return self.send_json(201 if self.command == "POST" else 200, created)

        if self.command == "DELETE":
            return self.send_json(404, not_found(path))
        return self.send_json(405, {"kind": "Status", "status": "Failure", "code": 405})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


def start_stand_in(release: str, namespace: str) -> tuple[ThreadingHTTPServer, str]:
    """The stand-in on a free loopback port, and a kubeconfig that points at it."""
    StandIn.release = release
    StandIn.namespace = namespace
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    # helm-sdkpy tells a kubeconfig's text from a file name by its YAML keys.
    kubeconfig = f"""apiVersion: v1
kind: Config
clusters:
  - name: stand-in
    cluster: {{server: "http://127.0.0.1:{port}"}}
users:
  - name: stand-in
    user: {{token: stand-in}}
contexts:
  - name: stand-in
    context: {{cluster: stand-in, user: stand-in, namespace: "{namespace}"}}
current-context: stand-in
"""
    return server, kubeconfig


def lint(chart: str) -> int:
    from helm_sdkpy import Configuration
    from helm_sdkpy.chart import Lint

    result = asyncio.run(Lint(Configuration(namespace="default")).run(chart))
    messages = result.get("Messages") or []
    errors = 0
    for message in messages:
        severity = message.get("Severity", 0)
        errors += severity >= 3
        print(f"{SEVERITIES.get(severity, severity)} {message.get('Path', '?')}")
    errors = max(errors, len(result.get("Errors") or []))
    print(f"{result.get('TotalChartsLinted', 0)} chart(s) linted, {errors} error(s)")
    if errors:
        print(
            "helm-sdkpy does not pass on the messages' texts: render the chart "
            "(helm_tool.py render) to see the error",
            file=sys.stderr,
        )
    return 1 if errors else 0


def render(chart: str, release: str, namespace: str, values_file: str, notes: bool) -> int:
    import yaml
    from helm_sdkpy import Configuration, HelmError, Install

    with open(values_file, encoding="utf-8") as file:
        values = yaml.safe_load(file) or {}
    if not isinstance(values, dict):
        print(f"{values_file}: the values are not a mapping", file=sys.stderr)
        return 1
    server, kubeconfig = start_stand_in(release, namespace)
    try:
        config = Configuration(namespace=namespace, kubeconfig=kubeconfig)
        result = asyncio.run(Install(config).run(release, chart, values=values, wait=False))
    except HelmError as error:
        print(f"helm refused the chart: {error}", file=sys.stderr)
        print("stand-in API server saw:\n  " + "\n  ".join(StandIn.requests), file=sys.stderr)
        return 1
    finally:
        server.shutdown()
    if notes:
        print((result.get("info") or {}).get("notes", ""))
    else:
        print(result.get("manifest", ""))
    return 0


USAGE = """usage:
  helm_tool.py lint CHART
  helm_tool.py render CHART RELEASE NAMESPACE VALUES.yaml [--notes]"""


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "lint":
        return lint(argv[1])
    if len(argv) in (5, 6) and argv[0] == "render" and argv[5:] in ([], ["--notes"]):
        return render(argv[1], argv[2], argv[3], argv[4], notes=len(argv) == 6)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
