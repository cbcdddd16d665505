{{/*
Names, labels and the values several templates derive, in one place.
*/}}

{{- define "ckrv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name every object is called by: RELEASE-ckrv, or the release name alone when it already
contains the chart's name.
*/}}
{{- define "ckrv.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ckrv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object the chart makes.
*/}}
{{- define "ckrv.labels" -}}
helm.sh/chart: {{ include "ckrv.chart" . }}
app.kubernetes.io/name: {{ include "ckrv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The labels that select the API's pods: the Deployment's and the Service's selector, the PDB's, and
(as --api-pod-label) the egress rule of each job pod's NetworkPolicy. The component label keeps
them apart from job pods, which the dispatcher labels app.kubernetes.io/name: ckrv as well.
*/}}
{{- define "ckrv.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ckrv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end }}

{{/*
The labels that select this release's job pods: the dispatcher's component label and the instance
label the chart asks it to add (--job-label).
*/}}
{{- define "ckrv.jobSelectorLabels" -}}
app.kubernetes.io/component: job
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ckrv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ckrv.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing service account when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ckrv.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ckrv.workerImage" -}}
{{- printf "%s:%s" .Values.jobs.workerImage.repository (default .Chart.AppVersion .Values.jobs.workerImage.tag) }}
{{- end }}

{{/*
The port the API listens on inside its pod. Fixed: the dispatcher's job NetworkPolicies name the
pod's port, and --listen carries it.
*/}}
{{- define "ckrv.apiPort" -}}
8080
{{- end }}

{{/*
The URL people reach the API at: publicUrl, else the first ingress host, else what
`kubectl port-forward` gives.
*/}}
{{- define "ckrv.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := first .Values.ingress.hosts }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}
{{- if has $host (.hosts | default list) }}
{{- $tls = true }}
{{- end }}
{{- end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else }}
{{- printf "http://127.0.0.1:%v" .Values.service.port }}
{{- end }}
{{- end }}

{{/*
How job pods reach the API: its Service, inside the cluster.
*/}}
{{- define "ckrv.workerApiUrl" -}}
{{- if .Values.jobs.workerApiUrl }}
{{- .Values.jobs.workerApiUrl | trimSuffix "/" }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" (include "ckrv.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}
{{- end }}

{{/*
KEY=VALUE,KEY=VALUE from a YAML map of labels (rendered by another template), sorted.
*/}}
{{- define "ckrv.labelList" -}}
{{- $pairs := list }}
{{- range $key, $value := (fromYaml .) }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," (sortAlpha $pairs) }}
{{- end }}

{{/*
Job pods' tolerations as --job-toleration takes them: KEY[=VALUE][:EFFECT], comma-separated
(the schema makes Equal carry a value and Exists none, so nothing is lost on the way).
*/}}
{{- define "ckrv.tolerationList" -}}
{{- $items := list }}
{{- range . }}
{{- $item := .key }}
{{- if ne (.operator | default "Equal") "Exists" }}{{ $item = printf "%s=%s" $item .value }}{{ end }}
{{- with .effect }}{{ $item = printf "%s:%s" $item . }}{{ end }}
{{- $items = append $items $item }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/*
Whether the API keeps state only in its data directory (SQLite): then one pod at a time.
*/}}
{{- define "ckrv.sqlite" -}}
{{- if not .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/*
Refusals of values that would deploy something broken. Included by the Deployment, so every
render checks them.
*/}}
{{- define "ckrv.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if gt $replicas 1 }}
{{- $missing := list }}
{{- if not .Values.database.existingSecret }}
{{- $missing = append $missing "database.existingSecret (a PostgreSQL URL; SQLite lives in one pod's data directory)" }}
{{- end }}
{{- if not .Values.artifacts.s3.bucket }}
{{- $missing = append $missing "artifacts.s3.bucket (artifacts in one pod's data directory are invisible to the others)" }}
{{- end }}
{{- if not .Values.secretsKey.existingSecret }}
{{- $missing = append $missing "secretsKey.existingSecret (each pod would make its own key and could not read the others' credentials)" }}
{{- end }}
{{- if $missing }}
{{- fail (printf "replicaCount %d needs state shared by every replica; set %s" $replicas (join ", " $missing)) }}
{{- end }}
{{- end }}
{{- if and .Values.persistence.enabled (gt $replicas 1) (not .Values.persistence.existingClaim) (has "ReadWriteOnce" .Values.persistence.accessModes) }}
{{- fail (printf "persistence.enabled with replicaCount %d: a ReadWriteOnce volume mounts on one node only; with PostgreSQL and S3 the replicas need no persistence (set persistence.enabled=false)" $replicas) }}
{{- end }}
{{- if and .Values.artifacts.s3.existingSecret (not .Values.artifacts.s3.bucket) }}
{{- fail "artifacts.s3.existingSecret is set but artifacts.s3.bucket is not: name the bucket" }}
{{- end }}
{{- if and .Values.artifacts.s3.endpoint (not .Values.artifacts.s3.bucket) }}
{{- fail "artifacts.s3.endpoint is set but artifacts.s3.bucket is not: name the bucket" }}
{{- end }}
{{- $minAvailable := .Values.podDisruptionBudget.minAvailable }}
{{- if and .Values.podDisruptionBudget.enabled (gt $replicas 1) (not (kindIs "string" $minAvailable)) }}
{{- if ge (int $minAvailable) $replicas }}
{{- fail (printf "podDisruptionBudget.minAvailable %d with replicaCount %d would block every node drain; give fewer than replicaCount" (int $minAvailable) $replicas) }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one host in ingress.hosts" }}
{{- end }}
{{- end }}

{{/*
One egress rule of the API's NetworkPolicy from {to, ports}: to the peers given, or anywhere when
there are none, on those TCP ports.
*/}}
{{- define "ckrv.egressRule" }}
    - ports:
        {{- range .ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with .to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
