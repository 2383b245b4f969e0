{{/*
weft.image: the image of one component.
  (dict "root" $ "name" "weft-agent" "component" .Values.agent)
<component.image.repository> or <image.registry>/<name>, then
<component.image.tag> or <image.tag> or the chart's appVersion.
*/}}
{{- define "weft.image" -}}
{{- $img := (.component | default dict).image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/%s" .root.Values.image.registry .name) -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{ $repo }}:{{ $tag }}
{{- end -}}

{{/* weft.pullPolicy: the component's pull policy, or image.pullPolicy. */}}
{{- define "weft.pullPolicy" -}}
{{- ((.component | default dict).image | default dict).pullPolicy | default .root.Values.image.pullPolicy -}}
{{- end -}}

{{- define "weft.labels" -}}
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/*
weft.scheduling: nodeSelector, affinity and tolerations of a workload's pod
spec, from a values section (indent 6).
*/}}
{{- define "weft.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
