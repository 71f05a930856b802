# Workload identity: taskq's Kubernetes service account is federated with this managed
# identity, which may read, write, list and delete blobs in the payload container only.

resource "azurerm_user_assigned_identity" "pods" {
  name                = "${var.name}-pods"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_federated_identity_credential" "pods" {
  name                = "${var.name}-pods"
  resource_group_name = var.resource_group_name
  parent_id           = azurerm_user_assigned_identity.pods.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = var.oidc_issuer_url
  subject             = "system:serviceaccount:${var.kubernetes_namespace}:${var.service_account}"
}

resource "azurerm_role_assignment" "payloads" {
  scope                = azurerm_storage_container.payloads.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.pods.principal_id
}
