{{/* Chart name. */}}
{{- define "regate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name, the prefix of every object. Truncated to 53 characters so suffixed names
("-webhook-tls", ...) stay within 63.
*/}}
{{- define "regate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "regate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "regate.labels" -}}
helm.sh/chart: {{ include "regate.chart" . }}
{{ include "regate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: regate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "regate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "regate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository:tag, plus @digest when given. Never "latest". */}}
{{- define "regate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must not be \"latest\": pin a version (regate's workload-best-practices policy warns on latest)" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the webhook Service, and the DNS names of the serving certificate. */}}
{{- define "regate.serviceName" -}}
{{- include "regate.fullname" . }}
{{- end }}

{{- define "regate.dnsNames" -}}
{{- $svc := include "regate.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- range .Values.extraDnsNames }}
{{- $names = append $names . }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* The certificate mode: certManager, existingSecret or generated. */}}
{{- define "regate.certMode" -}}
{{- if and .Values.certManager.enabled .Values.tls.existingSecret }}
{{- fail "choose one certificate mode: certManager.enabled or tls.existingSecret, not both" }}
{{- end }}
{{- if .Values.certManager.enabled }}certManager
{{- else if .Values.tls.existingSecret }}existingSecret
{{- else }}generated
{{- end }}
{{- end }}

{{/* Name of the Secret the pods mount (tls.crt, tls.key). */}}
{{- define "regate.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-webhook-tls" (include "regate.fullname" .) }}
{{- end }}
{{- end }}

{{- define "regate.certificateName" -}}
{{- printf "%s-webhook" (include "regate.fullname" .) }}
{{- end }}

{{/*
Generated certificates, computed once per render and shared by the Secret and both webhook
configurations (memoised on the root context).

The existing Secret is looked up and reused on `helm upgrade`, so the CA, the certificate and the
webhooks' caBundle stay the same across upgrades. A new pair is generated on first install, when
the Secret is missing or incomplete, when the DNS names changed, when the certificate expires
within tls.generate.renewBeforeDays, or when tls.generate.regenerate is true. On such a renewal
over an existing CA the caBundle holds the new and the old CA, so the apiserver trusts both the
old certificate (still mounted in the running pods for up to a minute) and the new one.

`lookup` returns nothing under `helm template` and client-side dry runs: there every render
generates a fresh pair.
*/}}
{{- define "regate.generatedCerts" -}}
{{- if not (hasKey .Values "__regateGeneratedCerts") }}
{{- $secretName := include "regate.tlsSecretName" . }}
{{- $dnsNames := include "regate.dnsNames" . | fromJsonArray }}
{{- $dnsKey := join "," $dnsNames }}
{{- $nowUnix := now | unixEpoch | int64 }}
{{- $renewBefore := mul (int64 .Values.tls.generate.renewBeforeDays) 86400 }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $result := dict }}
{{- $reuse := false }}
{{- $oldCA := "" }}
{{- if $existing }}
{{- $data := $existing.data | default dict }}
{{- $ann := $existing.metadata.annotations | default dict }}
{{- $oldCA = index $data "ca.crt" | default "" }}
{{- $notAfter := index $ann "regate.dev/not-after" | default "0" | int64 }}
{{- if and (index $data "tls.crt") (index $data "tls.key") (index $data "ca.crt") (eq (index $ann "regate.dev/dns-names" | default "") $dnsKey) (gt (sub $notAfter $nowUnix) $renewBefore) (not .Values.tls.generate.regenerate) }}
{{- $reuse = true }}
{{- $_ := set $result "caCrt" (index $data "ca.crt") }}
{{- $_ := set $result "tlsCrt" (index $data "tls.crt") }}
{{- $_ := set $result "tlsKey" (index $data "tls.key") }}
{{- $_ := set $result "notAfter" (toString $notAfter) }}
{{- $_ := set $result "caBundle" (index $data "ca.crt") }}
{{- end }}
{{- end }}
{{- if not $reuse }}
{{- $caKey := genPrivateKey "ecdsa" }}
{{- $ca := genCAWithKey "regate-webhook-ca" (int .Values.tls.generate.caValidityDays) $caKey }}
{{- $certKey := genPrivateKey "ecdsa" }}
{{- $cert := genSignedCertWithKey (index $dnsNames 2) nil $dnsNames (int .Values.tls.generate.certValidityDays) $ca $certKey }}
{{- $caCrt := $ca.Cert | b64enc }}
{{- $_ := set $result "caCrt" $caCrt }}
{{- $_ := set $result "tlsCrt" ($cert.Cert | b64enc) }}
{{- $_ := set $result "tlsKey" ($cert.Key | b64enc) }}
{{- $_ := set $result "notAfter" (toString (add $nowUnix (mul (int64 .Values.tls.generate.certValidityDays) 86400))) }}
{{- if and $oldCA (ne $oldCA $caCrt) }}
{{- $_ := set $result "caBundle" (printf "%s%s" $ca.Cert ($oldCA | b64dec) | b64enc) }}
{{- else }}
{{- $_ := set $result "caBundle" $caCrt }}
{{- end }}
{{- end }}
{{- $_ := set $result "dnsNames" $dnsKey }}
{{- $_ := set .Values "__regateGeneratedCerts" $result }}
{{- end }}
{{- toJson (get .Values "__regateGeneratedCerts") }}
{{- end }}

{{/* caBundle for the webhook configurations ("" in cert-manager mode: the CA injector fills it). */}}
{{- define "regate.caBundle" -}}
{{- $mode := include "regate.certMode" . }}
{{- if eq $mode "existingSecret" }}
{{- required "tls.caBundle (base64 PEM of the CA that signed tls.existingSecret) is required with tls.existingSecret" .Values.tls.caBundle }}
{{- else if eq $mode "generated" }}
{{- (include "regate.generatedCerts" . | fromJson).caBundle }}
{{- end }}
{{- end }}

{{/* Annotations of the webhook configurations. */}}
{{- define "regate.webhookAnnotations" -}}
{{- if .Values.certManager.enabled }}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "regate.certificateName" .) }}
{{- end }}
{{- end }}

{{/*
Namespaces regate never judges: config.exemptNamespaces, plus kube-system and the release
namespace, which are always exempt (so the cluster and regate itself can always be repaired).
*/}}
{{- define "regate.exemptNamespaces" -}}
{{- $ns := list }}
{{- range .Values.config.exemptNamespaces }}
{{- $ns = append $ns . }}
{{- end }}
{{- $ns = append $ns "kube-system" }}
{{- $ns = append $ns .Release.Namespace }}
{{- toJson (uniq $ns) }}
{{- end }}

{{/* namespaceSelector of both webhooks. */}}
{{- define "regate.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range (include "regate.exemptNamespaces" . | fromJsonArray) }}
        - {{ . | quote }}
        {{- end }}
    {{- with .Values.webhook.namespaceSelectorExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Whether the background audit is on. */}}
{{- define "regate.auditEnabled" -}}
{{- if and .Values.config.audit .Values.config.audit.interval }}true{{- end }}
{{- end }}

{{/* regate.yaml, rendered from .Values.config (only the keys regate knows; empty ones left out). */}}
{{- define "regate.configYaml" -}}
{{- $c := .Values.config }}
{{- $out := dict "mode" $c.mode "policyFailure" $c.policyFailure }}
{{- $envs := dict }}
{{- range $k, $v := ($c.environments | default dict) }}
{{- if $v }}
{{- $_ := set $envs $k $v }}
{{- end }}
{{- end }}
{{- if $envs }}
{{- $_ := set $out "environments" $envs }}
{{- end }}
{{- $_ := set $out "exemptNamespaces" (include "regate.exemptNamespaces" . | fromJsonArray) }}
{{- if $c.policies }}
{{- $_ := set $out "policies" $c.policies }}
{{- end }}
{{- if $c.exceptions }}
{{- $_ := set $out "exceptions" $c.exceptions }}
{{- end }}
{{- if $c.limits }}
{{- $_ := set $out "limits" $c.limits }}
{{- end }}
{{- if include "regate.auditEnabled" . }}
{{- $audit := dict "interval" $c.audit.interval }}
{{- if $c.audit.pageSize }}
{{- $_ := set $audit "pageSize" $c.audit.pageSize }}
{{- end }}
{{- with $c.audit.reports }}
{{- $_ := set $audit "reports" . }}
{{- end }}
{{- $_ := set $out "audit" $audit }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Policy files: ConfigMap keys cannot hold "/", so "lib/x.rego" is stored as "lib__x.rego". */}}
{{- define "regate.policyKey" -}}
{{- . | replace "/" "__" }}
{{- end }}

{{- define "regate.policiesHaveSubdirs" -}}
{{- range $name, $_ := .Values.policies.files }}
{{- if contains "/" $name }}true{{- end }}
{{- end }}
{{- end }}

{{/*
The rules of the validating webhook: webhook.validating.rules, or with webhook.allResources
Gatekeeper's approach (every resource on CREATE and UPDATE; regate skips the kinds no policy
judges), plus kubectl debug's pods/ephemeralcontainers.
*/}}
{{- define "regate.validatingRules" -}}
{{- if .Values.webhook.allResources -}}
- apiGroups: ["*"]
  apiVersions: ["*"]
  operations: [CREATE, UPDATE]
  resources: ["*"]
  scope: "*"
- apiGroups: [""]
  apiVersions: [v1]
  operations: [UPDATE]
  resources: [pods/ephemeralcontainers]
  scope: Namespaced
{{- else -}}
{{ toYaml .Values.webhook.validating.rules }}
{{- end -}}
{{- end -}}

{{/* The rules of the mutating webhook: webhook.mutating.rules, or every resource. */}}
{{- define "regate.mutatingRules" -}}
{{- if .Values.webhook.allResources -}}
- apiGroups: ["*"]
  apiVersions: ["*"]
  operations: [CREATE, UPDATE]
  resources: ["*"]
  scope: "*"
{{- else -}}
{{ toYaml .Values.webhook.mutating.rules }}
{{- end -}}
{{- end -}}

{{/*
REGATE_WEBHOOK_RULES: what the two webhooks send (none when one is disabled), so that regate
names the loaded policies on kinds they leave out (startup log, /readyz?verbose).
*/}}
{{- define "regate.webhookRulesJson" -}}
{{- $v := list -}}
{{- if .Values.webhook.validating.enabled -}}
{{- $v = include "regate.validatingRules" . | fromYamlArray -}}
{{- end -}}
{{- $m := list -}}
{{- if .Values.webhook.mutating.enabled -}}
{{- $m = include "regate.mutatingRules" . | fromYamlArray -}}
{{- end -}}
{{- dict "validating" $v "mutating" $m | toJson -}}
{{- end -}}
