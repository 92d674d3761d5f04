{{/* Names, labels and the values derived from others. */}}

{{- define "spaceport.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name. Truncated to 50 so that the longest suffix added to it ("-progress",
"-project", "-desktop") still fits the 63-character limit of DNS labels and Service names.
*/}}
{{- define "spaceport.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "spaceport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spaceport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spaceport.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spaceport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "spaceport.secretName" -}}
{{ include "spaceport.fullname" . }}
{{- end }}

{{- define "spaceport.image" -}}
{{ .Values.spaceport.image.repository }}:{{ .Values.spaceport.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The pod's grace period: the final-save deadline plus the margin that pays for the desktop's
stop before it and the lock release and unmount after it (see values.yaml).
*/}}
{{- define "spaceport.terminationGracePeriodSeconds" -}}
{{ add .Values.spaceport.finalSaveDeadline .Values.spaceport.terminationMarginSeconds }}
{{- end }}

{{/* Where the OneData volumes are mounted in the spaceport container. */}}
{{- define "spaceport.onedataRoot" -}}
/onedata/{{ . }}
{{- end }}

{{/*
The oneclient mount point inside the emptyDir, one level down: a FUSE mount on a
subdirectory propagates reliably to the other container (mounting on the volume's root
would stack on the bind mount itself), and a restarted oneclient can detach a dead mount
there without touching the volume.
*/}}
{{- define "spaceport.oneclientMountpoint" -}}
{{ include "spaceport.onedataRoot" . }}/oneclient
{{- end }}

{{/*
The folder spaceport works on, for side "source" or "project". oneclient, started with
--show-space-ids, shows each space as a directory named by its id.
Call with (dict "root" $ "side" "project").
*/}}
{{- define "spaceport.primaryPath" -}}
{{- $values := .root.Values.onedata }}
{{- $space := index $values .side }}
{{- $base := include "spaceport.onedataRoot" .side }}
{{- if eq $values.mode "oneclient" }}
{{- $base = printf "%s/%s" (include "spaceport.oneclientMountpoint" .side) $space.spaceId }}
{{- end }}
{{- $sub := trimAll "/" ($space.path | default "") }}
{{- if $sub }}{{ printf "%s/%s" $base $sub }}{{ else }}{{ $base }}{{ end }}
{{- end }}

{{- define "spaceport.progressHost" -}}
{{- if .Values.ingress.progressHost }}
{{- .Values.ingress.progressHost }}
{{- else }}
{{- $parts := splitn "." 2 .Values.ingress.host }}
{{- if $parts._1 }}
{{- printf "%s-progress.%s" $parts._0 $parts._1 }}
{{- else }}
{{- printf "%s-progress" $parts._0 }}
{{- end }}
{{- end }}
{{- end }}
