# The job store: Cloud SQL for PostgreSQL, private IP only, TLS required, regional (HA).

resource "random_password" "store" {
  length  = 32
  special = false # kept plain so the DSN needs no escaping
}

resource "google_sql_database_instance" "store" {
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY below refuses unencrypted connections; the check reads require_ssl, which the provider deprecated for ssl_mode
  #checkov:skip=CKV2_GCP_13:log_duration would log every query of a job store that runs thousands a second; slow queries are in Query Insights
  name                = "${var.name}-store"
  project             = var.project_id
  region              = var.region
  database_version    = var.db_version
  deletion_protection = true

  settings {
    tier              = var.db_tier
    availability_type = "REGIONAL"
    disk_size         = var.db_disk_size
    disk_autoresize   = true
    user_labels       = local.labels

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }
}

resource "google_sql_database" "taskq" {
  name     = "taskq"
  project  = var.project_id
  instance = google_sql_database_instance.store.name
}

resource "google_sql_user" "taskq" {
  name     = "taskq"
  project  = var.project_id
  instance = google_sql_database_instance.store.name
  password = random_password.store.result
}

locals {
  store_url = "postgresql://taskq:${random_password.store.result}@${google_sql_database_instance.store.private_ip_address}:5432/taskq?sslmode=require"
}
