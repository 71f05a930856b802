output "blob_url" {
  description = "TASKQ_BLOB_URL: the chart's blob.url."
  value       = "gs://${google_storage_bucket.payloads.name}/${var.blob_prefix}"
}

output "broker_host" {
  description = "The broker's host name (in the cluster: AMQP on 5672, the management API on 15672); null for an external broker."
  value       = module.broker.host
}

output "store_host" {
  description = "The job store's private IP address (PostgreSQL on 5432, TLS required)."
  value       = google_sql_database_instance.store.private_ip_address
}

output "kubernetes_secrets" {
  description = "The Secrets the chart's secretEnv names: broker (keys amqp-url, management-url) and store (key url)."
  value       = module.chart_secrets.names
}

output "service_account_annotations" {
  description = "The chart's serviceAccount.annotations: the Google service account of Workload Identity."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.pods.email }
}

output "pod_labels" {
  description = "The chart's podLabels (none needed on GKE)."
  value       = {}
}

output "helm_values" {
  description = "Values for the chart: `terraform output -json helm_values > cloud-values.json`, then `helm install -f cloud-values.json`."
  value = merge(module.chart_secrets.chart_values, {
    blob           = { url = "gs://${google_storage_bucket.payloads.name}/${var.blob_prefix}", s3EndpointUrl = "", s3Region = "" }
    serviceAccount = { create = true, name = var.service_account, annotations = { "iam.gke.io/gcp-service-account" = google_service_account.pods.email } }
    podLabels      = {}
  })
}
