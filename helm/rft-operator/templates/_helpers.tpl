{{/* Names, labels and shared snippets of the rft-operator chart. */}}

{{- define "rft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rft-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "rft.selector" (list . "operator") */}}
{{- define "rft.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "rft.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "rft.componentLabels" -}}
{{- $ := index . 0 -}}
{{ include "rft.labels" $ }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "rft.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "rft.trainerImage" -}}
{{- printf "%s:%s" .Values.trainerImage.repository (default .Chart.AppVersion .Values.trainerImage.tag) -}}
{{- end -}}

{{- define "rft.natsName" -}}{{ include "rft.fullname" . }}-nats{{- end -}}

{{/*
NATS URL(s) as pods reach them. Ours: one server is addressed by its stable StatefulSet pod DNS name (the
headless Service gives it), three by the client Service. An existing NATS: nats.url.
*/}}
{{- define "rft.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- $n := include "rft.natsName" . -}}
{{- if eq (int .Values.nats.replicas) 1 -}}
nats://{{ $n }}-0.{{ $n }}-headless.{{ .Release.Namespace }}.svc:{{ .Values.nats.clientPort }}
{{- else -}}
nats://{{ $n }}.{{ .Release.Namespace }}.svc:{{ .Values.nats.clientPort }}
{{- end -}}
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* Namespaces where trainer pods run (for their NetworkPolicy and namespaced RBAC). */}}
{{- define "rft.trainerNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- toJson .Values.watchNamespaces -}}
{{- else -}}
{{- toJson .Values.networkPolicy.trainerNamespaces -}}
{{- end -}}
{{- end -}}

{{- define "rft.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "rft.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{- define "rft.ledgerSecretName" -}}
{{- default (printf "%s-ledger-key" (include "rft.fullname" .)) .Values.ledger.signingKey.existingSecret -}}
{{- end -}}

{{- define "rft.ledgerTokenSecretName" -}}
{{- default (printf "%s-ledger-token" (include "rft.fullname" .)) .Values.ledger.apiToken.existingSecret -}}
{{- end -}}

{{- define "rft.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "rft.fullname" .)) .Values.api.apiKeys.existingSecret -}}
{{- end -}}

{{/* The namespaces of api.projects, each once (the API's Roles are there). */}}
{{- define "rft.apiNamespaces" -}}
{{- $out := list -}}
{{- range $p, $t := .Values.api.projects -}}
{{- $out = append $out $t.namespace -}}
{{- end -}}
{{- toJson ($out | uniq | sortAlpha) -}}
{{- end -}}

{{/* Cross-value checks the JSON schema cannot express. */}}
{{- define "rft.validate" -}}
{{- if and (not .Values.nats.enabled) (not .Values.nats.url) -}}
{{- fail "nats.url: set it to your NATS (with JetStream) when nats.enabled is false" -}}
{{- end -}}
{{- if and .Values.nats.enabled .Values.nats.url -}}
{{- fail "nats.url: leave it empty when nats.enabled is true (the chart runs NATS), or set nats.enabled=false" -}}
{{- end -}}
{{- if .Values.api.enabled -}}
{{- if not .Values.api.projects -}}
{{- fail "api.projects: name at least one project and its namespace and model claim when api.enabled is true" -}}
{{- end -}}
{{- if not .Values.api.models -}}
{{- fail "api.models: name at least one base model (its directory on the model claims) when api.enabled is true" -}}
{{- end -}}
{{- if and (not .Values.api.apiKeys.existingSecret) (not (hasKey .Values.api.projects .Values.api.apiKeys.generatedProject)) -}}
{{- fail (printf "api.apiKeys.generatedProject: %q is not in api.projects (the generated key could create no job)" .Values.api.apiKeys.generatedProject) -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail "operator.leaderElection.enabled: must be true with operator.replicas 2 (two leaders would fight over every job)" -}}
{{- end -}}
{{- end -}}

{{/* The admission webhook's Service and its kubernetes.io/tls Secret. */}}
{{- define "rft.webhookServiceName" -}}{{ include "rft.fullname" . }}-operator-webhook{{- end -}}
{{- define "rft.webhookSecretName" -}}{{ include "rft.fullname" . }}-operator-webhook-tls{{- end -}}

{{/* Our NATS speaks TLS on its client port (nats.tls.enabled, with our NATS only). */}}
{{- define "rft.natsTls" -}}
{{- if and .Values.nats.enabled .Values.nats.tls.enabled -}}true{{- end -}}
{{- end -}}
{{- define "rft.natsTlsSecretName" -}}{{ include "rft.fullname" . }}-nats-tls{{- end -}}
