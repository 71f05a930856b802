# The claim-check bucket: private (public access prevented, uniform access), encrypted with the
# key above, payloads deleted after the topology's retention.

resource "google_storage_bucket" "payloads" {
  #checkov:skip=CKV_GCP_62:access logs go to Cloud Audit Logs (data access logs), not to a second bucket
  #checkov:skip=CKV_GCP_78:versioning would keep payloads that taskq's retention sweep deleted; they expire instead
  name                        = "${var.name}-payloads-${var.project_id}"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.payloads.id
  }

  dynamic "lifecycle_rule" {
    for_each = var.blob_retention_days == null ? [] : [var.blob_retention_days]
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["${var.blob_prefix}/"]
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs]
}
