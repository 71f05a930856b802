output "blob_url" {
  description = "TASKQ_BLOB_URL: the chart's blob.url."
  value       = "s3://${aws_s3_bucket.payloads.id}/${var.blob_prefix}"
}

output "broker_host" {
  description = "The broker's host name (AMQPS on 5671, the management API on 443)."
  value       = local.broker_host
}

output "store_host" {
  description = "The job store's host name (PostgreSQL on 5432, TLS required)."
  value       = aws_db_instance.store.address
}

output "kubernetes_secrets" {
  description = "The Secrets the chart's secretEnv names: broker (keys amqp-url, management-url) and store (key url)."
  value       = module.chart_secrets.names
}

output "service_account_annotations" {
  description = "The chart's serviceAccount.annotations: the IRSA role."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.pods.arn }
}

output "pod_labels" {
  description = "The chart's podLabels (none needed on AWS)."
  value       = {}
}

output "helm_values" {
  description = "Values for the chart: `terraform output -json helm_values > cloud-values.json`, then `helm install -f cloud-values.json`."
  value = merge(module.chart_secrets.chart_values, {
    blob           = { url = "s3://${aws_s3_bucket.payloads.id}/${var.blob_prefix}", s3EndpointUrl = "", s3Region = data.aws_region.current.name }
    serviceAccount = { create = true, name = var.service_account, annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.pods.arn } }
    podLabels      = {}
  })
}
