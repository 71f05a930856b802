# taskq on Google Cloud: RabbitMQ in the GKE cluster (or an existing broker), Cloud SQL for
# PostgreSQL, a Cloud Storage bucket for claim-checked payloads, and the Google service account
# taskq's pods act as through Workload Identity.

locals {
  labels = merge({ "app-kubernetes-io-part-of" = "taskq" }, var.labels)
}

module "broker" {
  source = "../modules/rabbitmq"

  name      = "${var.name}-rabbitmq"
  namespace = var.kubernetes_namespace
  replicas  = var.broker_replicas
  storage   = var.broker_storage
  external  = var.broker_urls
}

locals {
  amqp_url       = module.broker.amqp_url
  management_url = module.broker.management_url
}

resource "google_kms_key_ring" "taskq" {
  name     = var.name
  project  = var.project_id
  location = var.region
}

resource "google_kms_crypto_key" "payloads" {
  name            = "${var.name}-payloads"
  key_ring        = google_kms_key_ring.taskq.id
  rotation_period = "7776000s" # 90 days
  lifecycle {
    prevent_destroy = true
  }
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "gcs" {
  crypto_key_id = google_kms_crypto_key.payloads.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}
