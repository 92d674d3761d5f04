{{/*
The values every template uses, resolved once: the profile's defaults, and CERIT's own keys
mapped onto the chart's. Templates read it with
    {{- $c := include "spaceport.config" . | fromYaml }}
and never look at .Values for anything resolved here.

Why here and not in a second values file: a Rancher catalogue install and CERIT's portal pass
only their own keys (od.*, instance.*, vnc.vncPassword, master.vncPassword), no values file,
and Helm cannot tell a default from values.yaml apart from a value the user gave. So the
values that differ by profile are absent from values.yaml (README.md lists them with both
defaults), and this helper fills them in: an explicit value always wins.

Profile: "cerit" when .Values.profile says so, or when it is "" and CERIT's keys are present
(od, instance or master: every CERIT form and the portal send od.*); else "generic".

Only strings, booleans, lists and maps go through here: fromYaml turns numbers into floats,
which would print 1000000 as 1e+06.
*/}}
{{- define "spaceport.config" -}}
{{- $v := .Values }}
{{- $od := $v.od | default dict }}
{{- $inst := $v.instance | default dict }}
{{- $master := $v.master | default dict }}
{{- $vnc := $v.vnc | default dict }}
{{- $ceritKeys := or (hasKey $v "od") (hasKey $v "instance") (hasKey $v "master") }}
{{- $profile := $v.profile | default (ternary "cerit" "generic" $ceritKeys) }}
{{- $cerit := eq $profile "cerit" }}
{{- $mode := $v.onedata.mode | default (ternary "cerit" "oneclient" $cerit) }}
{{- $errors := list }}

{{- /* CERIT's options this chart does not run: refuse them rather than ignore them. */}}
{{- if eq (toString (get $vnc "useVncClient")) "true" }}
{{- $errors = append $errors "vnc.useVncClient=true (a VNC client port through a LoadBalancer) is not supported by this chart: the desktop is served over HTTPS only" }}
{{- end }}
{{- if eq (toString (get $master "useVncClient")) "true" }}
{{- $errors = append $errors "master.useVncClient=true (a VNC client port through a LoadBalancer) is not supported by this chart: the desktop is served over HTTPS only" }}
{{- end }}
{{- if eq (toString (get $inst "microk8s")) "true" }}
{{- $errors = append $errors "instance.microk8s=true is not supported: this chart uses the claims the platform creates for labelled OneData Secrets (onedata.mode cerit), or existing claims (onedata.mode pvc)" }}
{{- end }}

{{- /* The two spaces. CERIT names the source "dataset" (portal, v1.0) or "source" (the
       seed's form); one host for both (od.host) or one per space (od.<side>.host). */}}
{{- $odSides := dict "source" (get $od "dataset" | default (get $od "source") | default dict) "project" (get $od "project" | default dict) }}
{{- $work := $v.workVolumes }}
{{- $prefix := get $inst "prefix" | default $work.namePrefix | toString }}
{{- $sides := dict }}
{{- range $side := list "source" "project" }}
{{- $native := index $v.onedata $side }}
{{- $ceritSide := index $odSides $side }}
{{- $s := dict }}
{{- $_ := set $s "host" (get $native "host" | default (get $ceritSide "host") | default $v.onedata.host | default (get $od "host") | toString) }}
{{- $_ = set $s "spaceId" (get $native "spaceId" | default (get $ceritSide "spaceId") | toString) }}
{{- $_ = set $s "token" (get $native "token" | default (get $ceritSide "token") | toString) }}
{{- $_ = set $s "path" (get $native "path" | toString) }}
{{- $_ = set $s "claimName" (get $native "claimName" | toString) }}
{{- /* The space's key in names: the first 8 characters of its id, as CERIT's portal sends
       in od.<side>.spaceIdShort; in pvc mode (no id) the start of the claim name's hash. */}}
{{- $short := trunc 8 $s.spaceId | lower }}
{{- if eq $mode "pvc" }}{{ $short = sha256sum $s.claimName | trunc 8 }}{{ end }}
{{- $_ = set $s "short" $short }}
{{- $cerSide := ternary "dataset" "project" (eq $side "source") }}
{{- if eq $mode "cerit" }}
{{- /* The platform turns a Secret labelled cerit-onedata-secret: "yes" into a claim named
       pvc-<secret name>: keep the Secret at 59 characters so the claim fits 63. */}}
{{- $secretName := include "spaceport.shorten" (dict "name" (printf "%s-od-%s-%s" (include "spaceport.fullname" $) $cerSide $short) "max" 59) }}
{{- $_ = set $s "secretName" $secretName }}
{{- $_ = set $s "onedataClaim" (printf "pvc-%s" $secretName) }}
{{- if $s.path }}
{{- $errors = append $errors (printf "onedata.%s.path is not supported in onedata.mode cerit: spaceport works on the space folder inside the claim" $side) }}
{{- end }}
{{- if not $s.host }}
{{- $errors = append $errors (printf "the %s space's host is missing (onedata.host or onedata.%s.host, or CERIT's od.host or od.%s.host)" $side $side $cerSide) }}
{{- end }}
{{- range $field := list "spaceId" "token" }}
{{- if not (index $s $field) }}
{{- $errors = append $errors (printf "the %s space's %s is missing (onedata.%s.%s, or CERIT's od.%s.%s)" $side $field $side $field $cerSide $field) }}
{{- end }}
{{- end }}
{{- else if eq $mode "pvc" }}
{{- $_ = set $s "onedataClaim" $s.claimName }}
{{- end }}
{{- /* The working volume: named with the release and the space, so that a reinstall for
       the same space finds its working copy and another space never gets it. CERIT names
       its own "pvc-<prefix>-<release>-vol-<dataset|project>-<namespace>-<spaceIdShort>";
       "work" instead of "vol" keeps CERIT's kept volumes (whose copies spaceport does not
       know) out of reach. */}}
{{- $w := index $work $side }}
{{- $_ = set $s "workClaim" (include "spaceport.shorten" (dict "name" (printf "pvc-%s-%s-work-%s-%s-%s" $prefix $.Release.Name $cerSide $.Release.Namespace $short))) }}
{{- $_ = set $s "workSize" (ternary (get $w "size") (ternary "5000Gi" (ternary "500Gi" "100Gi" (eq $side "source")) $cerit) (hasKey $w "size") | toString) }}
{{- $_ = set $s "workClass" (ternary (get $w "storageClass") (ternary "nfs-csi" "" $cerit) (hasKey $w "storageClass") | toString) }}
{{- $sideKeep := ternary (get $w "keepOnUninstall") true (hasKey $w "keepOnUninstall") }}
{{- if hasKey $inst "keepVolumes" }}{{ $sideKeep = eq (toString (get $inst "keepVolumes")) "true" }}{{ end }}
{{- $_ = set $s "keep" $sideKeep }}
{{- $_ = set $s "mountPath" $w.mountPath }}
{{- $_ = set $sides $side $s }}
{{- end }}

{{- /* The VNC password: also the password of the basic auth in front of everything. */}}
{{- $password := get $vnc "password" | default (get $vnc "vncPassword") | default (get $master "vncPassword") | toString }}
{{- if and (not $password) (or $cerit (eq $mode "cerit")) }}
{{- $errors = append $errors "the noVNC password is missing (vnc.password, or CERIT's vnc.vncPassword / master.vncPassword)" }}
{{- end }}

{{- /* The desktop's resources: CERIT's form gives them as instance.min/max cpu/ram. */}}
{{- $res := dict }}
{{- range $kind, $amounts := ($v.desktop.resources | default dict) }}
{{- $out := dict }}
{{- range $name, $amount := $amounts }}{{ $_ := set $out $name (toString $amount) }}{{ end }}
{{- $_ := set $res $kind $out }}
{{- end }}
{{- $requests := get $res "requests" | default dict }}
{{- $limits := get $res "limits" | default dict }}
{{- if hasKey $inst "mincpu" }}{{ $_ := set $requests "cpu" (toString $inst.mincpu) }}{{ end }}
{{- if hasKey $inst "maxcpu" }}{{ $_ := set $limits "cpu" (toString $inst.maxcpu) }}{{ end }}
{{- if hasKey $inst "minram" }}{{ $_ := set $requests "memory" (toString $inst.minram) }}{{ end }}
{{- if hasKey $inst "maxram" }}{{ $_ := set $limits "memory" (toString $inst.maxram) }}{{ end }}
{{- /* A request above its limit: the API server refuses the pod at install ("must be less
       than or equal to … limit"), which is what `--set instance.maxram=4Gi` alone would
       render over the default request of 8Gi. The form asks "Max": "Maximum allowed". The
       desktop can never use more than its limit, so a request above it reserves nothing it
       could use; lowering the request to the limit changes nothing the desktop gets, and it
       installs. CERIT's form pre-fills Min (2 CPU, 2Gi): a user who lowers only Max below it
       has not chosen that Min, and expects the smaller desktop asked for, not an error about
       a field left as it was. So the request is lowered to the limit, and NOTES says so.
       One case the other way: a Min the user gave (instance.mincpu, instance.minram) above
       a limit the user did not give (the chart's default): the user's value wins, as
       everywhere in this helper, and the limit is raised to it. */}}
{{- $minKeys := dict "cpu" "mincpu" "memory" "minram" }}
{{- $maxKeys := dict "cpu" "maxcpu" "memory" "maxram" }}
{{- $adjusted := list }}
{{- range $name, $limit := $limits }}
{{- $request := get $requests $name }}
{{- $r := include "spaceport.quantity" $request }}
{{- $l := include "spaceport.quantity" $limit }}
{{- if and $request $r $l (gt (float64 $r) (float64 $l)) }}
{{- if and (hasKey $inst (get $minKeys $name | default "-")) (not (hasKey $inst (get $maxKeys $name | default "-"))) }}
{{- $_ := set $limits $name $request }}
{{- $adjusted = append $adjusted (printf "the desktop's %s limit (the chart's default, %s) was below the request you gave (%s): it is raised to %s" $name $limit $request $request) }}
{{- else }}
{{- $_ := set $requests $name $limit }}
{{- $adjusted = append $adjusted (printf "the desktop's %s request (%s) was above its limit (%s): it is lowered to %s" $name $request $limit $limit) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $res "requests" $requests }}
{{- $_ = set $res "limits" $limits }}

{{- /* The desktop's URL. With no host given, CERIT's: scipion.<release>.<namespace>.<domain>
       (its v2.0 chart), scipion.<namespace>.<domain> (hostStyle namespace: the seed's, one
       release per namespace) or scipion-<release>-<namespace>.<domain> (hostStyle flat: one
       label, for a gateway whose wildcard covers one label). Every label fits 63. */}}
{{- $ing := $v.ingress }}
{{- $domain := $ing.domain | default (ternary "dyn.cloud.e-infra.cz" "" $cerit) }}
{{- $host := $ing.host | default "" }}
{{- if and (not $host) $domain }}
{{- $first := $ing.hostPrefix | default "scipion" }}
{{- $labels := list }}
{{- if eq $ing.hostStyle "flat" }}
{{- $labels = list (printf "%s-%s-%s" $first (replace "." "-" $.Release.Name) $.Release.Namespace) }}
{{- else if eq $ing.hostStyle "namespace" }}
{{- $labels = list $first $.Release.Namespace }}
{{- else }}
{{- $labels = concat (list $first) (splitList "." $.Release.Name) (list $.Release.Namespace) }}
{{- end }}
{{- $short := list }}
{{- range $labels }}{{ $short = append $short (include "spaceport.shorten" (dict "name" .)) }}{{ end }}
{{- $host = printf "%s.%s" (join "." $short) $domain }}
{{- end }}
{{- if and $ing.enabled (not $host) }}
{{- $errors = append $errors "ingress.host is missing (or set ingress.domain to derive it)" }}
{{- end }}
{{- $tls := $ing.tls | default dict }}
{{- $tlsOn := ternary (get $tls "enabled") $cerit (hasKey $tls "enabled") }}
{{- $annotations := dict }}
{{- if $cerit }}
{{- /* kube-docs expose.mdx: these two get a Let's Encrypt certificate and DNS for
       *.dyn.cloud.e-infra.cz. noVNC's WebSocket idles longer than nginx's 60 s default. */}}
{{- if $tlsOn }}
{{- $_ := set $annotations "kubernetes.io/tls-acme" "true" }}
{{- end }}
{{- $_ := set $annotations "nginx.ingress.kubernetes.io/proxy-read-timeout" "3600" }}
{{- $_ = set $annotations "nginx.ingress.kubernetes.io/proxy-send-timeout" "3600" }}
{{- end }}
{{- $issuer := get $tls "clusterIssuer" | default (ternary "letsencrypt-prod" "" $cerit) }}
{{- if and $tlsOn $issuer }}
{{- $_ := set $annotations "cert-manager.io/cluster-issuer" $issuer }}
{{- end }}
{{- $annotations = merge (deepCopy ($ing.annotations | default dict)) $annotations }}
{{- $className := ternary $ing.className (ternary "nginx" "" $cerit) (hasKey $ing "className") }}
{{- $tlsSecret := get $tls "secretName" | default (include "spaceport.shorten" (dict "name" (printf "%s-tls" (replace "." "-" $host)) "max" 253)) }}
{{- $ingress := dict "enabled" $ing.enabled "host" $host "className" ($className | toString) "annotations" $annotations "tls" (dict "enabled" $tlsOn "secretName" $tlsSecret) }}

{{- $interval := ternary $v.spaceport.interval (ternary 120 300 $cerit) (hasKey $v.spaceport "interval") }}

{{- if $errors }}
{{- fail (printf "\n  - %s" (join "\n  - " $errors)) }}
{{- end }}

{{- $c := dict "profile" $profile "cerit" $cerit "mode" $mode "sides" $sides "password" $password }}
{{- $_ := set $c "accessMode" ($work.accessMode | default (ternary "ReadWriteMany" "ReadWriteOnce" $cerit)) }}
{{- $_ = set $c "interval" (toString $interval) }}
{{- $_ = set $c "desktopResources" $res }}
{{- $_ = set $c "desktopAdjusted" $adjusted }}
{{- $_ = set $c "ingress" $ingress }}
{{- $_ = set $c "oneclientOptions" ($v.onedata.cerit.oneclientOptions | toString) }}
{{- $_ = set $c "ceritLock" (ternary $v.spaceport.ceritLock $cerit (hasKey $v.spaceport "ceritLock")) }}
{{- $_ = set $c "sourceInBackground" ($v.spaceport.sourceInBackground | default false) }}
{{- toYaml $c }}
{{- end }}
