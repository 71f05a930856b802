# The Secrets the Helm chart reads by name (secretEnv): never inlined in its values.

resource "kubernetes_secret_v1" "broker" {
  count = var.create_kubernetes_secrets ? 1 : 0
  metadata {
    name      = "taskq-broker"
    namespace = var.kubernetes_namespace
    labels    = { "app.kubernetes.io/part-of" = "taskq" }
  }
  data = {
    "amqp-url"       = local.amqp_url
    "management-url" = local.management_url
  }
}

resource "kubernetes_secret_v1" "store" {
  count = var.create_kubernetes_secrets ? 1 : 0
  metadata {
    name      = "taskq-store"
    namespace = var.kubernetes_namespace
    labels    = { "app.kubernetes.io/part-of" = "taskq" }
  }
  data = {
    url = local.store_url
  }
}
