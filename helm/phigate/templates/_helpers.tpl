{{- define "phigate.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "phigate.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "phigate.labels" -}}
app.kubernetes.io/name: {{ include "phigate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "phigate.selector" -}}
app.kubernetes.io/name: {{ include "phigate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
