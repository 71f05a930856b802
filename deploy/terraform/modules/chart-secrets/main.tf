# The Secrets the Helm chart reads by name (secretEnv): never inlined in its values.

locals {
  broker = "taskq-broker"
  store  = "taskq-store"
  labels = { "app.kubernetes.io/part-of" = "taskq" }
}

resource "kubernetes_secret_v1" "broker" {
  count = var.create ? 1 : 0
  metadata {
    name      = local.broker
    namespace = var.namespace
    labels    = local.labels
  }
  data = {
    "amqp-url"       = var.amqp_url
    "management-url" = var.management_url
  }
}

resource "kubernetes_secret_v1" "store" {
  count = var.create ? 1 : 0
  metadata {
    name      = local.store
    namespace = var.namespace
    labels    = local.labels
  }
  data = {
    url = var.store_url
  }
}
