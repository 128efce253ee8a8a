{{/*
Names and labels shared by every template. Every object carries the standard
app.kubernetes.io labels (the tests check it), with `component` telling the operator, the
node shim and the webhook apart.
*/}}

{{- define "dockyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix for object names; short enough to leave room for suffixes. */}}
{{- define "dockyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "dockyard.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "dockyard.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dockyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "dockyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dockyard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label: call with (dict "ctx" $ "component" "operator"). */}}
{{- define "dockyard.labels" -}}
{{ include "dockyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dockyard
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "dockyard.chart" .ctx }}
{{- end -}}

{{- define "dockyard.operatorName" -}}{{ include "dockyard.fullname" . }}-operator{{- end -}}
{{- define "dockyard.nodeName" -}}{{ include "dockyard.fullname" . }}-node{{- end -}}
{{- define "dockyard.webhookName" -}}{{ include "dockyard.fullname" . }}-webhook{{- end -}}
{{- define "dockyard.webhookSecret" -}}{{ include "dockyard.fullname" . }}-webhook-tls{{- end -}}
{{- define "dockyard.metricsName" -}}{{ include "dockyard.fullname" . }}-metrics{{- end -}}

{{/* The Secret holding the token node shims share for volume transfers. */}}
{{- define "dockyard.transferSecret" -}}
{{- .Values.shim.transfer.existingSecret | default (printf "%s-transfer" (include "dockyard.fullname" .)) -}}
{{- end -}}

{{/* `repository:tag`, the tag defaulting to the chart's appVersion. */}}
{{- define "dockyard.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}

{{/* The webhook Service's DNS names, which the serving certificate must hold. */}}
{{- define "dockyard.webhookDNSNames" -}}
{{- $svc := include "dockyard.webhookName" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain) | toJson -}}
{{- end -}}
