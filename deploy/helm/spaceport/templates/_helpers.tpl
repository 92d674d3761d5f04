{{/* Names, labels and small helpers. The values every template uses are resolved once, in
     _config.tpl ("spaceport.config"): profile defaults and CERIT's own keys are applied there. */}}

{{- define "spaceport.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name. Truncated to 50 so that the suffixes added to it ("-od-project-…" is
shortened on its own, see spaceport.shorten) keep Service and Secret names readable.
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
A name of at most "max" characters (63 unless given), deterministic: names that fit are kept
as they are; a longer one is cut and ends in the first 8 hex digits of the SHA-256 of the whole
name, so two long names that share their beginning still differ.
Call with (dict "name" "..." "max" 63).
*/}}
{{- define "spaceport.shorten" -}}
{{- $max := .max | default 63 | int }}
{{- $name := .name | lower }}
{{- if le (len $name) $max }}
{{- $name }}
{{- else }}
{{- printf "%s-%s" ($name | trunc (sub $max 9 | int) | trimSuffix "-" | trimSuffix ".") (sha256sum $name | trunc 8) }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity ("500m", "2", "0.5", "4Gi", "8192Mi", "1.5G", "4.294967296e+09") as a
number of its unit (cores, bytes), to compare two quantities of one resource; "" for anything
that is not a quantity (the API server then says what is wrong with it).
*/}}
{{- define "spaceport.quantity" -}}
{{- $q := toString . | trim }}
{{- $suffix := regexFind "(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)$" $q }}
{{- $number := trimSuffix $suffix $q }}
{{- $factors := dict "" 1.0 "n" 1e-9 "u" 1e-6 "m" 1e-3 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- if regexMatch "^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$" $number }}
{{- mulf (float64 $number) (index $factors $suffix) }}
{{- end }}
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
The folder spaceport is pointed at, for side "source" or "project":
  oneclient - oneclient, started with --show-space-ids, shows the space as a folder named by
              its id inside the mount point;
  pvc       - the claim's root (or onedata.<side>.path inside it);
  cerit     - the claim's root: it holds one folder named after the space (CERIT's
              csi-onedata runs oneclient without --show-space-ids), and spaceport, told so by
              SPACEPORT_SPACE_FOLDER=1, works on that single folder.
Call with (dict "config" $c "side" "project").
*/}}
{{- define "spaceport.primaryPath" -}}
{{- $space := index .config.sides .side }}
{{- $base := include "spaceport.onedataRoot" .side }}
{{- if eq .config.mode "oneclient" }}
{{- $base = printf "%s/%s" (include "spaceport.oneclientMountpoint" .side) $space.spaceId }}
{{- end }}
{{- $sub := trimAll "/" ($space.path | default "") }}
{{- if $sub }}{{ printf "%s/%s" $base $sub }}{{ else }}{{ $base }}{{ end }}
{{- end }}

{{/*
The desktop's command: wait until spaceport's ready signal says "ok", then hand over to the
image's own entrypoint (passed as the arguments after the script's name). POSIX sh on purpose:
the test runs it with dash and a stand-in entrypoint. CERIT's controller writes "ok" without a
newline; "ok" followed by a newline is accepted too ($(...) drops trailing newlines).
PID 1 ignores SIGTERM unless it traps it: without the trap, deleting the pod during the wait
would cost the whole grace period before the final save could start.
*/}}
{{- define "spaceport.desktopWrapper" -}}
ready="${READY_FILE:-/mnt/shared/instance-status}"
trap 'exit 143' TERM
trap 'exit 130' INT
echo "desktop: waiting for spaceport to write ok to $ready"
while :; do
  state=
  if [ -f "$ready" ]; then state=$(cat "$ready" 2>/dev/null) || state=; fi
  if [ "$state" = ok ]; then break; fi
  sleep "${READY_POLL_SECONDS:-2}"
done
echo "desktop: ready, starting $*"
exec "$@"
{{- end }}
