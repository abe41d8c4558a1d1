{{- define "deepinfra-serve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "deepinfra-serve.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "deepinfra-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The card's YAML text: inline `card`, else the shipped file named by `modelCard`. */}}
{{- define "deepinfra-serve.cardText" -}}
{{- if .Values.card -}}
{{- .Values.card -}}
{{- else -}}
{{- $text := .Files.Get (printf "cards/%s" .Values.modelCard) -}}
{{- if not $text -}}
{{- fail (printf "modelCard %q is not a file under cards/" .Values.modelCard) -}}
{{- end -}}
{{- $text -}}
{{- end -}}
{{- end -}}

{{/* GPUs per pod: the card's tensor-parallel size. */}}
{{- define "deepinfra-serve.gpus" -}}
{{- $card := include "deepinfra-serve.cardText" . | fromYaml -}}
{{- $engine := $card.engine | default dict -}}
{{- $engine.tensor_parallel_size | default 1 -}}
{{- end -}}
