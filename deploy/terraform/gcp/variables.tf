variable "project_id" {
  description = "The Google Cloud project of the GKE cluster."
  type        = string
}

variable "region" {
  description = "Region of the database, the bucket and the key ring (the cluster's)."
  type        = string
}

variable "name" {
  description = "Prefix of every resource's name (and the bucket's, which must be globally unique)."
  type        = string
  default     = "taskq"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "network" {
  description = "Self link of the cluster's VPC network, with private services access set up (Cloud SQL gets a private IP in it)."
  type        = string
}

variable "kubernetes_namespace" {
  description = "The namespace taskq's Helm release runs in."
  type        = string
  default     = "taskq"
}

variable "service_account" {
  description = "The Kubernetes service account of taskq's pods (the chart's default is the release's full name)."
  type        = string
  default     = "taskq"
}

variable "broker_replicas" {
  description = "RabbitMQ nodes in the cluster (unless broker_urls names an external broker)."
  type        = number
  default     = 3
}

variable "broker_storage" {
  description = "Persistent volume size of each RabbitMQ node."
  type        = string
  default     = "50Gi"
}

variable "broker_urls" {
  description = "An existing broker (e.g. CloudAMQP) instead of one in the cluster: its AMQP and management API URLs with credentials. null: run RabbitMQ in the cluster through the RabbitMQ cluster and messaging topology operators."
  type = object({
    amqp_url       = string
    management_url = string
  })
  default   = null
  sensitive = true
}

variable "db_tier" {
  description = "Cloud SQL machine tier of the job store."
  type        = string
  default     = "db-custom-2-7680"
}

variable "db_version" {
  description = "Cloud SQL PostgreSQL version of the job store."
  type        = string
  default     = "POSTGRES_18"
}

variable "db_disk_size" {
  description = "Initial disk of the job store, GB (it grows on its own)."
  type        = number
  default     = 50
}

variable "blob_retention_days" {
  description = "Days after which Cloud Storage deletes a payload blob: `topology.blobRetentionDays` of `taskctl deploy render` (the longest delay, attempts and retention of a job, plus the orphan grace; 46 for the packaged topology). A backstop: taskq deletes each blob with its job. null: never expire."
  type        = number
  default     = 46
}

variable "blob_prefix" {
  description = "Object name prefix of taskq's payloads in the bucket."
  type        = string
  default     = "taskq"
}

variable "create_kubernetes_secrets" {
  description = "Create the Secrets the chart reads (broker and job store URLs) in kubernetes_namespace; needs a configured kubernetes provider."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
