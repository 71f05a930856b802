{{/* The release's full name: the release name, with "-taskq" unless it already says taskq. */}}
{{- define "taskq.fullname" -}}
{{- if contains "taskq" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-taskq" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "taskq.labels" -}}
app.kubernetes.io/name: taskq
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskq
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "taskq.selector" -}}
app.kubernetes.io/name: taskq
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "taskq.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}{{ .Values.serviceAccount.name }}{{- else -}}{{ include "taskq.fullname" . }}{{- end -}}
{{- end -}}

{{- define "taskq.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The environment every taskq container gets: the topology, plain settings, secret references. */}}
{{- define "taskq.env" -}}
- name: TASKQ_TOPOLOGY
  value: /etc/taskq/topology.yaml
- name: TASKQ_DATA_DIR
  value: /tmp/taskq
{{- if .Values.blob.url }}
- name: TASKQ_BLOB_URL
  value: {{ .Values.blob.url | quote }}
{{- else }}
- name: TASKQ_CLAIM_CHECK_BYTES
  value: "0"
{{- end }}
{{- with .Values.blob.s3EndpointUrl }}
- name: TASKQ_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.blob.s3Region }}
- name: TASKQ_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $name, $ref := .Values.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{/* The Redis of the stream sources, for their readers and the autoscaler: by reference only. */}}
{{- define "taskq.redisEnv" -}}
- name: TASKQ_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.readers.redisUrl.name }}
      key: {{ .Values.readers.redisUrl.key }}
{{- end -}}

{{/* Pod-level settings shared by every taskq pod. */}}
{{- define "taskq.podSpec" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The volumes of a taskq container: the topology file and a writable /tmp. */}}
{{- define "taskq.volumeMounts" -}}
- name: topology
  mountPath: /etc/taskq
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "taskq.volumes" -}}
- name: topology
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "taskq.podAnnotations" -}}
checksum/topology: {{ .Values.topology.file | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}
