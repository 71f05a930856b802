# The claim-check container: a storage account reachable only through its private endpoint,
# no shared keys (Entra ID only), TLS 1.2, double encryption at rest, payloads deleted after the
# topology's retention.

resource "azurerm_storage_account" "payloads" {
  #checkov:skip=CKV2_AZURE_1:encrypted at rest twice with Microsoft-managed keys (infrastructure encryption on); a customer-managed key needs a Key Vault this module does not own
  #checkov:skip=CKV_AZURE_33:the account holds blobs only; it has no queues to log
  #checkov:skip=CKV_AZURE_206:zone-redundant (ZRS): payloads live for days and are resubmitted after a regional loss, not worth geo-replication
  name                              = var.storage_account_name
  resource_group_name               = var.resource_group_name
  location                          = var.location
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  account_kind                      = "StorageV2"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = false
  shared_access_key_enabled         = false
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  tags                              = local.tags

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 1
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  sas_policy {
    expiration_period = "00.01:00:00"
  }
}

resource "azurerm_storage_container" "payloads" {
  #checkov:skip=CKV2_AZURE_21:read logs are a diagnostic setting to the platform's own Log Analytics workspace (azurerm_monitor_diagnostic_setting on the blob service), which this module does not own
  name                  = "payloads"
  storage_account_id    = azurerm_storage_account.payloads.id
  container_access_type = "private"
}

resource "azurerm_private_endpoint" "payloads" {
  name                = "${var.name}-payloads"
  resource_group_name = var.resource_group_name
  location            = var.location
  subnet_id           = var.private_endpoint_subnet_id
  tags                = local.tags

  private_service_connection {
    name                           = "${var.name}-payloads"
    private_connection_resource_id = azurerm_storage_account.payloads.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "blob"
    private_dns_zone_ids = [var.blob_private_dns_zone_id]
  }
}

resource "azurerm_storage_management_policy" "payloads" {
  count              = var.blob_retention_days == null ? 0 : 1
  storage_account_id = azurerm_storage_account.payloads.id

  rule {
    name    = "expire-payloads"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${azurerm_storage_container.payloads.name}/${var.blob_prefix}/"]
    }
    actions {
      base_blob {
        delete_after_days_since_creation_greater_than = var.blob_retention_days
      }
    }
  }
}
