# taskq on an existing EKS cluster. Then:
#   terraform output -json helm_values > cloud-values.json
#   helm install taskq deploy/helm/taskq -n taskq -f cloud-values.json

variable "cluster_name" {
  description = "The EKS cluster taskq runs on."
  type        = string
}

variable "vpc_id" {
  description = "The cluster's VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets of the VPC, in two or more availability zones."
  type        = list(string)
}

provider "aws" {}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_eks_cluster_auth" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.this.token
}

module "taskq" {
  source = "../.."

  name                      = "taskq"
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [data.aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]
  oidc_provider_arn         = data.aws_iam_openid_connect_provider.this.arn
  oidc_provider_url         = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
  kubernetes_namespace      = "taskq"
  blob_retention_days       = 46
}

output "helm_values" {
  description = "Values for the taskq chart."
  value       = module.taskq.helm_values
}
