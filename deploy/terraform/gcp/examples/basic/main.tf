# taskq on an existing GKE cluster with Workload Identity, the RabbitMQ cluster operator and
# its messaging topology operator installed. Then:
#   terraform output -json helm_values > cloud-values.json
#   helm install taskq deploy/helm/taskq -n taskq -f cloud-values.json

variable "project_id" {
  description = "The project of the cluster."
  type        = string
}

variable "region" {
  description = "The cluster's region."
  type        = string
}

variable "cluster_name" {
  description = "The GKE cluster taskq runs on."
  type        = string
}

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "this" {}

data "google_container_cluster" "this" {
  name     = var.cluster_name
  location = var.region
}

provider "kubernetes" {
  host                   = "https://${data.google_container_cluster.this.endpoint}"
  cluster_ca_certificate = base64decode(data.google_container_cluster.this.master_auth[0].cluster_ca_certificate)
  token                  = data.google_client_config.this.access_token
}

module "taskq" {
  source = "../.."

  project_id           = var.project_id
  region               = var.region
  network              = data.google_container_cluster.this.network
  kubernetes_namespace = "taskq"
  blob_retention_days  = 46
}

output "helm_values" {
  description = "Values for the taskq chart."
  value       = module.taskq.helm_values
}
