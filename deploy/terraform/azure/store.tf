# The job store: Azure Database for PostgreSQL flexible server, in a delegated subnet (no
# public access), TLS required, zone-redundant, geo-redundant backups.

resource "random_password" "store" {
  length  = 32
  special = false # kept plain so the DSN needs no escaping
}

resource "azurerm_postgresql_flexible_server" "store" {
  #checkov:skip=CKV2_AZURE_57:VNet-integrated (delegated subnet, public access off) is private already; a private endpoint is for servers in public access mode
  name                          = "${var.name}-store"
  resource_group_name           = var.resource_group_name
  location                      = var.location
  version                       = var.db_version
  sku_name                      = var.db_sku
  storage_mb                    = var.db_storage_mb
  delegated_subnet_id           = var.db_subnet_id
  private_dns_zone_id           = var.db_private_dns_zone_id
  public_network_access_enabled = false
  administrator_login           = "taskq"
  administrator_password        = random_password.store.result
  backup_retention_days         = var.db_backup_retention_days
  geo_redundant_backup_enabled  = true
  zone                          = "1"
  tags                          = local.tags

  high_availability {
    mode = "ZoneRedundant"
  }

  lifecycle {
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
  }
}

resource "azurerm_postgresql_flexible_server_database" "taskq" {
  name      = "taskq"
  server_id = azurerm_postgresql_flexible_server.store.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

resource "azurerm_postgresql_flexible_server_configuration" "settings" {
  for_each = {
    require_secure_transport = "on"
    log_checkpoints          = "on"
    log_connections          = "on"
    log_disconnections       = "on"
    connection_throttling    = "on"
  }
  server_id = azurerm_postgresql_flexible_server.store.id
  name      = each.key
  value     = each.value
}

locals {
  store_url = "postgresql://taskq:${random_password.store.result}@${azurerm_postgresql_flexible_server.store.fqdn}:5432/taskq?sslmode=require"
}
