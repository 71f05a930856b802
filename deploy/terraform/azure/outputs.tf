output "blob_url" {
  description = "TASKQ_BLOB_URL: the chart's blob.url."
  value       = "azblob://${azurerm_storage_account.payloads.name}/${azurerm_storage_container.payloads.name}/${var.blob_prefix}"
}

output "broker_host" {
  description = "The broker's host name (in the cluster: AMQP on 5672, the management API on 15672); null for an external broker."
  value       = module.broker.host
}

output "store_host" {
  description = "The job store's host name (PostgreSQL on 5432, TLS required)."
  value       = azurerm_postgresql_flexible_server.store.fqdn
}

output "kubernetes_secrets" {
  description = "The Secrets the chart's secretEnv names: broker (keys amqp-url, management-url) and store (key url)."
  value       = module.chart_secrets.names
}

output "service_account_annotations" {
  description = "The chart's serviceAccount.annotations: the managed identity's client id."
  value       = { "azure.workload.identity/client-id" = azurerm_user_assigned_identity.pods.client_id }
}

output "pod_labels" {
  description = "The chart's podLabels: the label that has the workload identity webhook inject the token."
  value       = { "azure.workload.identity/use" = "true" }
}

output "helm_values" {
  description = "Values for the chart: `terraform output -json helm_values > cloud-values.json`, then `helm install -f cloud-values.json`."
  value = merge(module.chart_secrets.chart_values, {
    blob           = { url = "azblob://${azurerm_storage_account.payloads.name}/${azurerm_storage_container.payloads.name}/${var.blob_prefix}", s3EndpointUrl = "", s3Region = "" }
    serviceAccount = { create = true, name = var.service_account, annotations = { "azure.workload.identity/client-id" = azurerm_user_assigned_identity.pods.client_id } }
    podLabels      = { "azure.workload.identity/use" = "true" }
  })
}
