{{/* Names. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.fullname" -}}
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

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tollgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the chart creates for values given inline (redis.password, admin.token). */}}
{{- define "tollgate.secretName" -}}
{{- include "tollgate.fullname" . }}
{{- end }}

{{- define "tollgate.createSecret" -}}
{{- if or (and .Values.redis.enabled .Values.redis.password (not .Values.redis.existingSecret)) (and .Values.admin.token (not .Values.admin.existingSecret)) -}}
true
{{- end }}
{{- end }}

{{/* store.kind from redis.* */}}
{{- define "tollgate.storeKind" -}}
{{- if not .Values.redis.enabled -}}
memory
{{- else if eq .Values.redis.mode "standalone" -}}
redis
{{- else if eq .Values.redis.mode "cluster" -}}
redis-cluster
{{- else if eq .Values.redis.mode "sentinel" -}}
redis-sentinel
{{- else -}}
{{- fail (printf "redis.mode must be standalone, sentinel or cluster (got %q)" .Values.redis.mode) -}}
{{- end }}
{{- end }}

{{/* The effective failure mode (config.failure_mode, Tollgate's default open). */}}
{{- define "tollgate.failureMode" -}}
{{- default "open" (.Values.config | default dict).failure_mode -}}
{{- end }}

{{/*
Checks that are about combinations of values (types and enums are in values.schema.json).
Renders nothing; fails the install with a message naming the values to change.
*/}}
{{- define "tollgate.validate" -}}
{{- $cfg := .Values.config | default dict -}}
{{- $server := $cfg.server | default dict -}}
{{- $store := $cfg.store | default dict -}}
{{- range $k := list "grpc_addr" "admin_addr" "metrics_addr" "admin_tokens_file" "tls" }}
{{- if hasKey $server $k }}
{{- fail (printf "config.server.%s is set by the chart (ports, listenAddress, admin.*, tls.*): remove it from config" $k) }}
{{- end }}
{{- end }}
{{- range $k := list "kind" "url" "master_name" "username" "password" "tls" }}
{{- if hasKey $store $k }}
{{- fail (printf "config.store.%s is set by the chart from redis.*: remove it from config (the password goes in redis.password or redis.existingSecret)" $k) }}
{{- end }}
{{- end }}
{{- if not .Values.redis.enabled }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "the embedded memory store (redis.enabled: false) keeps its counts in each pod: with replicaCount > 1 every pod would admit the full limit. Set redis.enabled: true and redis.url (or redis.cluster / redis.sentinel), or replicaCount: 1" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "the embedded memory store (redis.enabled: false) keeps its counts in each pod: autoscaling would run several. Set redis.enabled: true and redis.url (or redis.cluster / redis.sentinel), or autoscaling.enabled: false" }}
{{- end }}
{{- else }}
{{- $mode := .Values.redis.mode }}
{{- if and (eq $mode "standalone") (not .Values.redis.url) }}
{{- fail "redis.mode standalone needs redis.url (redis://host:6379/0 or rediss://...)" }}
{{- end }}
{{- if and (eq $mode "cluster") (not .Values.redis.cluster.nodes) }}
{{- fail "redis.mode cluster needs redis.cluster.nodes (seed node URLs)" }}
{{- end }}
{{- if eq $mode "sentinel" }}
{{- if not .Values.redis.sentinel.urls }}
{{- fail "redis.mode sentinel needs redis.sentinel.urls (the sentinels' URLs)" }}
{{- end }}
{{- if not .Values.redis.sentinel.masterName }}
{{- fail "redis.mode sentinel needs redis.sentinel.masterName" }}
{{- end }}
{{- end }}
{{- if and .Values.redis.password .Values.redis.existingSecret }}
{{- fail "set one of redis.password and redis.existingSecret" }}
{{- end }}
{{- $t := .Values.redis.tls }}
{{- if and $t.existingSecret (not (eq (empty $t.certKey) (empty $t.keyKey))) }}
{{- fail "redis.tls.certKey and redis.tls.keyKey go together (a client certificate and its key)" }}
{{- end }}
{{- end }}
{{- if and .Values.admin.token .Values.admin.existingSecret }}
{{- fail "set one of admin.token and admin.existingSecret" }}
{{- end }}
{{- if and .Values.admin.existingSecretTokensFileKey (not .Values.admin.existingSecret) }}
{{- fail "admin.existingSecretTokensFileKey is a key of admin.existingSecret: set admin.existingSecret too" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret with tls.crt and tls.key, and ca.crt for tls.clientAuth)" }}
{{- end }}
{{- $ports := list (int .Values.ports.grpc) (int .Values.ports.admin) (int .Values.ports.metrics) }}
{{- if ne (len ($ports | uniq)) 3 }}
{{- fail "ports.grpc, ports.admin and ports.metrics must differ (the admin API never shares the grpc port in this chart)" }}
{{- end }}
{{- end }}

{{/* Host part of a listener address: [::] stays bracketed. */}}
{{- define "tollgate.addr" -}}
{{- printf "%s:%d" .host (int .port) -}}
{{- end }}

{{/*
The configuration file: the user's `config` tree with the keys the chart owns set from values.
*/}}
{{- define "tollgate.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $server := deepCopy ($cfg.server | default dict) -}}
{{- $store := deepCopy ($cfg.store | default dict) -}}
{{- $listen := .Values.listenAddress -}}
{{- $_ := set $server "grpc_addr" (include "tollgate.addr" (dict "host" $listen "port" .Values.ports.grpc)) -}}
{{- $adminHost := ternary $listen "127.0.0.1" .Values.service.exposeAdmin -}}
{{- if and (not .Values.service.exposeAdmin) (hasPrefix "[" $listen) -}}
{{- $adminHost = "[::1]" -}}
{{- end -}}
{{- $_ := set $server "admin_addr" (include "tollgate.addr" (dict "host" $adminHost "port" .Values.ports.admin)) -}}
{{- $_ := set $server "metrics_addr" (include "tollgate.addr" (dict "host" $listen "port" .Values.ports.metrics)) -}}
{{- if .Values.admin.existingSecretTokensFileKey -}}
{{- $_ := set $server "admin_tokens_file" "/etc/tollgate/admin/tokens" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- $tls := dict "cert_file" "/etc/tollgate/tls/tls.crt" "key_file" "/etc/tollgate/tls/tls.key" -}}
{{- if .Values.tls.clientAuth -}}
{{- $_ := set $tls "client_ca_file" "/etc/tollgate/tls/ca.crt" -}}
{{- end -}}
{{- $_ := set $server "tls" $tls -}}
{{- end -}}
{{- $kind := include "tollgate.storeKind" . -}}
{{- $_ := set $store "kind" $kind -}}
{{- if .Values.redis.enabled -}}
{{- if eq $kind "redis" -}}
{{- $_ := set $store "url" .Values.redis.url -}}
{{- else if eq $kind "redis-cluster" -}}
{{- $_ := set $store "url" .Values.redis.cluster.nodes -}}
{{- else -}}
{{- $_ := set $store "url" .Values.redis.sentinel.urls -}}
{{- $_ := set $store "master_name" .Values.redis.sentinel.masterName -}}
{{- end -}}
{{- if .Values.redis.username -}}
{{- $_ := set $store "username" .Values.redis.username -}}
{{- end -}}
{{- $t := .Values.redis.tls -}}
{{- if $t.existingSecret -}}
{{- $stls := dict -}}
{{- if $t.caKey -}}
{{- $_ := set $stls "ca_file" (printf "/etc/tollgate/redis-tls/%s" $t.caKey) -}}
{{- end -}}
{{- if and $t.certKey $t.keyKey -}}
{{- $_ := set $stls "cert_file" (printf "/etc/tollgate/redis-tls/%s" $t.certKey) -}}
{{- $_ := set $stls "key_file" (printf "/etc/tollgate/redis-tls/%s" $t.keyKey) -}}
{{- end -}}
{{- if $stls -}}
{{- $_ := set $store "tls" $stls -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "server" $server -}}
{{- $_ := set $cfg "store" $store -}}
{{- toYaml $cfg -}}
{{- end }}

{{/*
What the config checksum covers: everything (rollOnConfigChange), or only the sections that need
a restart (server, store, failure_mode: Tollgate reloads the rest from the mounted file).
*/}}
{{- define "tollgate.configChecksum" -}}
{{- $full := include "tollgate.config" . | fromYaml -}}
{{- if .Values.rollOnConfigChange -}}
{{- toYaml $full | sha256sum -}}
{{- else -}}
{{- toYaml (pick $full "server" "store" "failure_mode") | sha256sum -}}
{{- end -}}
{{- end }}

{{/* A probe's action: gRPC health on the grpc port, or a TCP connect. */}}
{{- define "tollgate.probeAction" -}}
{{- if eq .mode "grpc" -}}
grpc:
  port: {{ .port }}
  service: ""
{{- else -}}
tcpSocket:
  port: grpc
{{- end }}
{{- end }}

{{/* The probe mode of readiness ("grpc" unless TLS), liveness and startup. */}}
{{- define "tollgate.readinessMode" -}}
{{- if .Values.tls.enabled }}tcp{{ else }}grpc{{ end -}}
{{- end }}

{{- define "tollgate.livenessMode" -}}
{{- $mode := .Values.probes.liveness.mode -}}
{{- if .Values.tls.enabled -}}
tcp
{{- else if eq $mode "auto" -}}
{{- if eq (include "tollgate.failureMode" .) "closed" }}tcp{{ else }}grpc{{ end -}}
{{- else -}}
{{- $mode -}}
{{- end -}}
{{- end }}
