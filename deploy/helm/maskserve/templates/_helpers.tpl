{{/* Object names: the release name, so release "maskserve" renders the names of deploy/k8s/. */}}
{{- define "maskserve.fullname" -}}
{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "maskserve.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "maskserve.labels" -}}
{{ include "maskserve.selectorLabels" . }}
app.kubernetes.io/component: server
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "maskserve.modelsClaim" -}}
{{- if .Values.models.persistentVolumeClaim.create -}}
{{ include "maskserve.fullname" . }}-models
{{- else -}}
{{ required "models.persistentVolumeClaim.existingClaim is required when create is false" .Values.models.persistentVolumeClaim.existingClaim }}
{{- end -}}
{{- end }}
