{{/* Chart name. */}}
{{- define "signoff.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every resource name. */}}
{{/*
The ValidatingWebhookConfiguration's name (cluster-scoped): webhook.name, else the
full name, so two releases never share one.
*/}}
{{- define "signoff.webhookName" -}}
{{- .Values.webhook.name | default (include "signoff.fullname" .) }}
{{- end }}

{{- define "signoff.fullname" -}}
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

{{- define "signoff.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signoff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "signoff.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "signoff.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "signoff.serviceAccountName" -}}
{{- default (include "signoff.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The image of the Deployment and the pre-delete hook's Job. */}}
{{- define "signoff.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "signoff.serviceName" -}}
{{- printf "%s-webhook" (include "signoff.fullname" .) }}
{{- end }}

{{- define "signoff.chartOwnsWebhook" -}}
{{- if eq .Values.webhook.managedBy "chart" }}true{{ else if eq .Values.webhook.managedBy "signoff" }}{{ else }}{{ fail "webhook.managedBy must be \"signoff\" or \"chart\"" }}{{ end }}
{{- end }}

{{/* Secret with the serving certificate when the chart owns the webhook. */}}
{{- define "signoff.tlsSecretName" -}}
{{- if eq .Values.tls.source "certManager" }}
{{- printf "%s-webhook-tls" (include "signoff.fullname" .) }}
{{- else if eq .Values.tls.source "secret" }}
{{- required "tls.secretName is required with tls.source=secret" .Values.tls.secretName }}
{{- else }}
{{- fail "tls.source must be \"certManager\" or \"secret\"" }}
{{- end }}
{{- end }}
