variable "name" {
  description = "Prefix of every resource's name (and the S3 bucket's, which must be globally unique)."
  type        = string
  default     = "taskq"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "vpc_id" {
  description = "The VPC of the EKS cluster: the broker and the database get private addresses in it."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (two or more, in different availability zones) for the broker and the database."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "give at least two private subnets in different availability zones."
  }
}

variable "client_security_group_ids" {
  description = "Security groups of the EKS nodes (or pods) allowed to reach the broker and the database."
  type        = list(string)
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA)."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider, with or without https://."
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

variable "broker_instance_type" {
  description = "Amazon MQ for RabbitMQ instance type (mq.m5.large and up for a cluster)."
  type        = string
  default     = "mq.m5.large"
}

variable "broker_engine_version" {
  description = "RabbitMQ version of the Amazon MQ broker."
  type        = string
  default     = "3.13"
}

variable "broker_cluster" {
  description = "Run the broker as a three-node cluster across availability zones (false: one instance)."
  type        = bool
  default     = true
}

variable "db_instance_class" {
  description = "RDS instance class of the job store."
  type        = string
  default     = "db.m6g.large"
}

variable "db_engine_version" {
  description = "PostgreSQL major version of the job store."
  type        = string
  default     = "16"
}

variable "db_allocated_storage" {
  description = "Initial storage of the job store, GiB (it grows up to ten times this on its own)."
  type        = number
  default     = 50
}

variable "db_backup_retention_days" {
  description = "Days of automated backups of the job store."
  type        = number
  default     = 7
}

variable "blob_retention_days" {
  description = "Days after which S3 deletes a payload blob: `topology.blobRetentionDays` of `taskctl deploy render` (the longest delay, attempts and retention of a job, plus the orphan grace; 46 for the packaged topology). A backstop: taskq deletes each blob with its job. null: never expire."
  type        = number
  default     = 46
}

variable "blob_prefix" {
  description = "Key prefix of taskq's payloads in the bucket."
  type        = string
  default     = "taskq"
}

variable "create_kubernetes_secrets" {
  description = "Create the Secrets the chart reads (broker and job store URLs) in kubernetes_namespace; needs a configured kubernetes provider."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
