# taskq on an existing AKS cluster with the OIDC issuer and workload identity enabled, and the
# RabbitMQ cluster operator and its messaging topology operator installed. Then:
#   terraform output -json helm_values > cloud-values.json
#   helm install taskq deploy/helm/taskq -n taskq -f cloud-values.json

variable "resource_group_name" {
  description = "The resource group of the cluster and of taskq's resources."
  type        = string
}

variable "cluster_name" {
  description = "The AKS cluster taskq runs on."
  type        = string
}

variable "db_subnet_id" {
  description = "A subnet delegated to PostgreSQL flexible servers."
  type        = string
}

variable "db_private_dns_zone_id" {
  description = "The private DNS zone privatelink.postgres.database.azure.com."
  type        = string
}

variable "private_endpoint_subnet_id" {
  description = "The subnet of the storage account's private endpoint."
  type        = string
}

variable "blob_private_dns_zone_id" {
  description = "The private DNS zone privatelink.blob.core.windows.net."
  type        = string
}

provider "azurerm" {
  features {}
}

data "azurerm_kubernetes_cluster" "this" {
  name                = var.cluster_name
  resource_group_name = var.resource_group_name
}

provider "kubernetes" {
  host                   = data.azurerm_kubernetes_cluster.this.kube_config[0].host
  client_certificate     = base64decode(data.azurerm_kubernetes_cluster.this.kube_config[0].client_certificate)
  client_key             = base64decode(data.azurerm_kubernetes_cluster.this.kube_config[0].client_key)
  cluster_ca_certificate = base64decode(data.azurerm_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate)
}

module "taskq" {
  source = "../.."

  resource_group_name        = var.resource_group_name
  location                   = data.azurerm_kubernetes_cluster.this.location
  storage_account_name       = "taskqpayloads"
  db_subnet_id               = var.db_subnet_id
  db_private_dns_zone_id     = var.db_private_dns_zone_id
  private_endpoint_subnet_id = var.private_endpoint_subnet_id
  blob_private_dns_zone_id   = var.blob_private_dns_zone_id
  oidc_issuer_url            = data.azurerm_kubernetes_cluster.this.oidc_issuer_url
  kubernetes_namespace       = "taskq"
  blob_retention_days        = 46
}

output "helm_values" {
  description = "Values for the taskq chart."
  value       = module.taskq.helm_values
}
