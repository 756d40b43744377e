{{/* Names, labels and images shared by the templates. */}}
{{- define "elastic-df.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "elastic-df.fullname" -}}
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

{{- define "elastic-df.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "elastic-df.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: elastic-df
{{- end }}

{{- define "elastic-df.selectorLabels" -}}
app.kubernetes.io/name: {{ include "elastic-df.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "elastic-df.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "elastic-df.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: (dict "image" .Values.x.image "root" .) */}}
{{- define "elastic-df.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The operator's rules on namespaced resources (ClusterRole, or a Role per watched namespace). Every verb
     is one the code uses: kopf (watch, finalizer and progress patches, status) and elasticdf_operator.kube. */}}
{{- define "elastic-df.namespacedRules" -}}
# ElasticInferences: kopf watches them and patches finalizers/progress annotations; kube.get_ei reads one
- apiGroups: ["elasticdf.io"]
  resources: ["elasticinferences"]
  verbs: ["get", "list", "watch", "patch"]
# reconcile writes status (kube.patch_status, kopf progress); the autoscaler patches spec.replicas via scale
- apiGroups: ["elasticdf.io"]
  resources: ["elasticinferences/status", "elasticinferences/scale"]
  verbs: ["patch"]
# card pods: kopf index + event handler (list/watch), create, delete one, delete a group's set;
# gateway pods: annotated with the wiring digest (patch: the kubelet re-reads the mounted wiring now)
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "patch", "delete", "deletecollection"]
# group ConfigMaps (card reservations): kopf indexes, create, idle mark (patch), delete a group;
# the gateway's wiring and the autoscaler's history: server-side apply (patch), the history read (get)
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "deletecollection"]
# per-ElasticInference headless segment Service (create) and gateway Service (server-side apply)
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "create", "patch", "delete"]
# the gateway Deployment <name>-gateway: server-side apply (a patch; create when it is missing), deleted by
# the finalizer
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "patch", "delete"]
# reconcile and autoscaler events (InstancePlaced, Scaled, ...)
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped reads, always a ClusterRole. */}}
{{- define "elastic-df.clusterRules" -}}
# inventory: Alveo nodes (label elasticdf.io/card-types), read-only
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch"]
# the 100G fabric (switches, uplinks, QSFP address pool), read-only
- apiGroups: ["elasticdf.io"]
  resources: ["fabrics"]
  verbs: ["list", "watch"]
# kopf notices CRDs that appear or go away at runtime (read-only)
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.operator.watchNamespaces }}
# kopf run --namespace=...: kopf resolves the namespaces it serves by watching them (read-only)
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
