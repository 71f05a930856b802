variable "namespace" {
  description = "The namespace of taskq's Helm release, where the Secrets go."
  type        = string
}

variable "create" {
  description = "Create the Secrets (false: only name them, for Secrets made some other way)."
  type        = bool
  default     = true
}

variable "amqp_url" {
  description = "TASKQ_AMQP_URL, with credentials."
  type        = string
  sensitive   = true
}

variable "management_url" {
  description = "TASKQ_MANAGEMENT_URL, with credentials (KEDA's trigger reads it too)."
  type        = string
  sensitive   = true
}

variable "store_url" {
  description = "TASKQ_STORE_URL: the PostgreSQL DSN, with credentials."
  type        = string
  sensitive   = true
}
