{{/* The release's name prefix: the release name when it already says
wsedge, else <release>-wsedge. Components are <prefix>-envoy, -authz,
-dialer. */}}
{{- define "wsedge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains "wsedge" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-wsedge" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "authz"). */}}
{{- define "wsedge.selectorLabels" -}}
app.kubernetes.io/name: wsedge
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wsedge.labels" -}}
{{ include "wsedge.selectorLabels" . }}
app.kubernetes.io/part-of: wsedge
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ include "wsedge.tag" .ctx | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wsedge.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "wsedge.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "wsedge.tag" .) -}}
{{- end -}}

{{- define "wsedge.tokenSecret" -}}
{{- .Values.proxyToken.existingSecret | default (printf "%s-proxy-token" (include "wsedge.fullname" .)) -}}
{{- end -}}

{{/* The URLs everything depends on, checked once. */}}
{{- define "wsedge.primaryURL" -}}
{{- $u := required "coder.primaryURL is required: the URL of your Coder deployment (https://coder.example.com)" .Values.coder.primaryURL -}}
{{- if not (hasPrefix "https://" $u) -}}{{- fail (printf "coder.primaryURL %q must be an https URL" $u) -}}{{- end -}}
{{- $u -}}
{{- end -}}

{{- define "wsedge.accessURL" -}}
{{- $u := required "accessURL is required: this proxy's URL (https://proxy.example.com)" .Values.accessURL -}}
{{- if not (hasPrefix "https://" $u) -}}{{- fail (printf "accessURL %q must be an https URL" $u) -}}{{- end -}}
{{- $u -}}
{{- end -}}

{{/* Pod and container security settings shared by the wsedge pods. */}}
{{- define "wsedge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The proxy token, for authz and the dialers. */}}
{{- define "wsedge.tokenEnv" -}}
- name: WSEDGE_PROXY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "wsedge.tokenSecret" . }}
      key: {{ .Values.proxyToken.key }}
{{- end -}}

{{- define "wsedge.tracingEnv" -}}
{{- if .ctx.Values.tracing.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "tracing.otlpEndpoint is required when tracing is enabled" .ctx.Values.tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .ctx.Values.tracing.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "wsedge-%s" .component | quote }}
{{- end }}
{{- end -}}

{{/* `wsedge envoy-config` arguments: the bootstrap the init container
writes. Ports here are the ones envoy.yaml's container ports name. */}}
{{- define "wsedge.envoyConfigArgs" -}}
{{- $fn := include "wsedge.fullname" . -}}
{{- $access := urlParse (include "wsedge.accessURL" .) -}}
{{- $args := list "--listen" "0.0.0.0:8443" -}}
{{- if .Values.tls.redirectHTTP -}}
{{- $args = concat $args (list "--http-redirect-listen" "0.0.0.0:8080") -}}
{{- end -}}
{{- $args = concat $args (list "--tls-cert" "/etc/wsedge/tls/tls.crt" "--tls-key" "/etc/wsedge/tls/tls.key") -}}
{{- $args = concat $args (list "--access-url-host" $access.host "--wildcard-hostname" .Values.wildcardHostname) -}}
{{- $args = concat $args (list "--dashboard-url" (include "wsedge.primaryURL" .)) -}}
{{- $args = concat $args (list "--authz-addr" (printf "%s-authz:9001" $fn) "--authz-jwks-addr" (printf "%s-authz:9003" $fn) "--dialer-addr" (printf "%s-dialer:9002" $fn)) -}}
{{- $args = concat $args (list "--admin-addr" "0.0.0.0:9901") -}}
{{- with .Values.envoy.timeouts -}}
{{- if .authz }}{{ $args = concat $args (list "--authz-timeout" .authz) }}{{ end -}}
{{- if .route }}{{ $args = concat $args (list "--route-timeout" .route) }}{{ end -}}
{{- if .upgradeIdle }}{{ $args = concat $args (list "--upgrade-idle-timeout" .upgradeIdle) }}{{ end -}}
{{- end -}}
{{- with .Values.envoy.rateLimit -}}
{{- if .requests }}{{ $args = concat $args (list "--rate-limit" (toString (int64 .requests))) }}{{ end -}}
{{- if .burst }}{{ $args = concat $args (list "--rate-limit-burst" (toString (int64 .burst))) }}{{ end -}}
{{- if .interval }}{{ $args = concat $args (list "--rate-limit-interval" .interval) }}{{ end -}}
{{- if .beforeAuthz }}{{ $args = concat $args (list "--rate-limit-before-authz") }}{{ end -}}
{{- end -}}
{{- if .Values.envoy.xffNumTrustedHops -}}
{{- $args = concat $args (list "--xff-num-trusted-hops" (toString (int64 .Values.envoy.xffNumTrustedHops))) -}}
{{- end -}}
{{- $args = concat $args .Values.envoy.extraConfigArgs -}}
{{- toYaml $args -}}
{{- end -}}
