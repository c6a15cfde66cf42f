{{/* Chart name, overridable. */}}
{{- define "l3.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-l3, or the release name when it already contains the chart name. */}}
{{- define "l3.fullname" -}}
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

{{- define "l3.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "l3.labels" -}}
helm.sh/chart: {{ include "l3.chart" . }}
{{ include "l3.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: l3
{{- end }}

{{/* Labels the Deployment, PDB and Service select on; never change them (selectors are immutable). */}}
{{- define "l3.selectorLabels" -}}
app.kubernetes.io/name: {{ include "l3.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "l3.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "l3.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "l3.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the metrics Service; a ServiceMonitor's job label defaults to it. */}}
{{- define "l3.metricsServiceName" -}}
{{- printf "%s-metrics" (include "l3.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* PromQL matchers selecting l3's own series in alerts. */}}
{{- define "l3.metricSelector" -}}
{{- default (printf "job=%q" (include "l3.metricsServiceName" .)) .Values.prometheusRule.metricSelector }}
{{- end }}

{{/* The enabled target kinds as `--target-kinds` spells them, comma-separated. */}}
{{- define "l3.targetKinds" -}}
{{- $kinds := list }}
{{- if .Values.targets.trafficSplit }}{{ $kinds = append $kinds "TrafficSplit" }}{{ end }}
{{- if .Values.targets.httpRoute }}{{ $kinds = append $kinds "HTTPRoute" }}{{ end }}
{{- if .Values.targets.grpcRoute }}{{ $kinds = append $kinds "GRPCRoute" }}{{ end }}
{{- if .Values.targets.linkerdHTTPRoute }}{{ $kinds = append $kinds "HTTPRoute.policy.linkerd.io" }}{{ end }}
{{- if not $kinds }}{{ fail "targets: enable at least one kind (trafficSplit, httpRoute, grpcRoute, linkerdHTTPRoute)" }}{{ end }}
{{- join "," $kinds }}
{{- end }}
