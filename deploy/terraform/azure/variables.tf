variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "taskq"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "resource_group_name" {
  description = "The resource group that holds taskq's resources."
  type        = string
}

variable "location" {
  description = "Azure region of the resources (the AKS cluster's)."
  type        = string
}

variable "storage_account_name" {
  description = "Name of the payload storage account: 3-24 lowercase letters and digits, globally unique."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name must be 3-24 lowercase letters and digits."
  }
}

variable "db_subnet_id" {
  description = "A subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers, in the cluster's virtual network."
  type        = string
}

variable "db_private_dns_zone_id" {
  description = "The private DNS zone (privatelink.postgres.database.azure.com) linked to the cluster's virtual network."
  type        = string
}

variable "private_endpoint_subnet_id" {
  description = "The subnet of the storage account's private endpoint, reachable from the cluster."
  type        = string
}

variable "blob_private_dns_zone_id" {
  description = "The private DNS zone privatelink.blob.core.windows.net linked to the cluster's virtual network."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The AKS cluster's OIDC issuer URL (oidc_issuer_url of azurerm_kubernetes_cluster), for workload identity."
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

variable "db_sku" {
  description = "SKU of the PostgreSQL flexible server."
  type        = string
  default     = "GP_Standard_D2ds_v5"
}

variable "db_version" {
  description = "PostgreSQL major version of the job store."
  type        = string
  default     = "16"
}

variable "db_storage_mb" {
  description = "Storage of the job store, MB."
  type        = number
  default     = 65536
}

variable "db_backup_retention_days" {
  description = "Days of automated backups of the job store."
  type        = number
  default     = 7
}

variable "blob_retention_days" {
  description = "Days after which the lifecycle policy deletes a payload blob: `topology.blobRetentionDays` of `taskctl deploy render` (the longest delay, attempts and retention of a job, plus the orphan grace; 46 for the packaged topology). A backstop: taskq deletes each blob with its job. null: never expire."
  type        = number
  default     = 46
}

variable "blob_prefix" {
  description = "Blob name prefix of taskq's payloads in the container."
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
