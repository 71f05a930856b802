# Workload Identity: taskq's Kubernetes service account acts as this Google service account,
# which may create, read, list and delete objects in the payload bucket, and nothing else.

resource "google_service_account" "pods" {
  account_id   = "${var.name}-pods"
  project      = var.project_id
  display_name = "taskq pods (${var.kubernetes_namespace}/${var.service_account})"
}

resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.pods.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kubernetes_namespace}/${var.service_account}]"
}

resource "google_storage_bucket_iam_member" "payloads" {
  bucket = google_storage_bucket.payloads.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.pods.email}"
}
