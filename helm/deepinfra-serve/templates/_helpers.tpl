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

{{/*
The models of the release, one entry per card: {key, name, card, values}. Without `models`,
the one card of `modelCard` / `card`, named as a single-card release always was; with `models`,
one entry per item, named <release>-<key>, its values the top-level ones with the item's
overrides merged in.
*/}}
{{- define "deepinfra-serve.models" -}}
{{- $fullname := include "deepinfra-serve.fullname" . -}}
{{- $entries := list -}}
{{- if not .Values.models -}}
{{- $entries = append $entries (dict "key" "" "name" $fullname "card" (include "deepinfra-serve.cardText" .) "values" .Values) -}}
{{- else -}}
{{- range $i, $m := .Values.models -}}
{{- $text := $m.card | default "" -}}
{{- if not $text -}}
{{- $text = $.Files.Get (printf "cards/%s" ($m.modelCard | default "")) -}}
{{- if not $text -}}
{{- fail (printf "models[%d].modelCard %q is not a file under cards/" $i ($m.modelCard | default "")) -}}
{{- end -}}
{{- end -}}
{{- $key := $m.name | default (trimSuffix ".yaml" ($m.modelCard | default "")) -}}
{{- if not $key -}}
{{- fail (printf "models[%d] needs a name when its card is given inline" $i) -}}
{{- end -}}
{{- $overrides := omit $m "modelCard" "card" "name" -}}
{{- $values := mergeOverwrite (deepCopy (omit $.Values "models")) $overrides -}}
{{- $entries = append $entries (dict "key" $key "name" (printf "%s-%s" $fullname $key | trunc 63 | trimSuffix "-") "card" $text "values" $values) -}}
{{- end -}}
{{- end -}}
{{- toYaml $entries -}}
{{- end -}}

{{/* A model's pod labels: the release's, and with several models which one it is. */}}
{{- define "deepinfra-serve.modelSelectorLabels" -}}
{{- include "deepinfra-serve.selectorLabels" .root }}
{{- if .model.key }}
app.kubernetes.io/component: model
deepinfra-serve/model: {{ .model.key }}
{{- end }}
{{- end -}}

{{/* GPUs per pod of a model: its card's tensor-parallel size. */}}
{{- define "deepinfra-serve.modelGpus" -}}
{{- $card := .card | fromYaml -}}
{{- $engine := $card.engine | default dict -}}
{{- $engine.tensor_parallel_size | default 1 -}}
{{- end -}}

{{/* The front door runs when asked for, and always in front of several models. */}}
{{- define "deepinfra-serve.frontDoor" -}}
{{- if or .Values.frontDoor.enabled (gt (len .Values.models) 0) -}}true{{- end -}}
{{- end -}}

{{/* Front-door pods: a name of their own, so that no model Service selects them. */}}
{{- define "deepinfra-serve.frontDoorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-front-door
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: front-door
{{- end -}}

{{/* The front door's health checks of replicas (lines of haproxy.cfg inside the ConfigMap):
loading, draining and dead replicas fail them; a refused connection marks one down at once. */}}
{{- define "deepinfra-serve.frontDoorChecks" }}
        option httpchk GET /health/ready
        http-check expect status 200
        default-server check inter 1s fastinter 500ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down resolvers cluster init-addr none
{{- end }}
