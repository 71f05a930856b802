# RabbitMQ inside the cluster, through the RabbitMQ cluster operator and its messaging topology
# operator (both must be installed first: their CRDs are read when this is planned).
# taskq gets a user of its own with a generated password, tagged `management` so that the
# autoscaler and KEDA can read its queue depths. With `external` set, nothing is created.

locals {
  create = var.external == null
  host   = "${var.name}.${var.namespace}.svc"
}

resource "random_password" "taskq" {
  count = local.create ? 1 : 0
  length  = 32
  special = false # kept plain so the URLs need no escaping
}

resource "kubernetes_secret_v1" "credentials" {
  count = local.create ? 1 : 0
  metadata {
    name      = "${var.name}-taskq-user"
    namespace = var.namespace
    labels    = { "app.kubernetes.io/part-of" = "taskq" }
  }
  data = {
    username = "taskq"
    password = random_password.taskq[0].result
  }
}

resource "kubernetes_manifest" "cluster" {
  count = local.create ? 1 : 0
  manifest = {
    apiVersion = "rabbitmq.com/v1beta1"
    kind       = "RabbitmqCluster"
    metadata = {
      name      = var.name
      namespace = var.namespace
      labels    = { "app.kubernetes.io/part-of" = "taskq" }
    }
    spec = {
      replicas = var.replicas
      persistence = merge(
        { storage = var.storage },
        var.storage_class == null ? {} : { storageClassName = var.storage_class },
      )
      resources = {
        requests = { cpu = var.cpu, memory = var.memory }
        limits   = { cpu = var.cpu, memory = var.memory }
      }
      rabbitmq = {
        additionalConfig = "consumer_timeout = 1800000\n"
      }
    }
  }
}

resource "kubernetes_manifest" "user" {
  count = local.create ? 1 : 0
  manifest = {
    apiVersion = "rabbitmq.com/v1beta1"
    kind       = "User"
    metadata   = { name = "${var.name}-taskq", namespace = var.namespace }
    spec = {
      tags                     = ["management"]
      rabbitmqClusterReference = { name = var.name }
      importCredentialsSecret  = { name = kubernetes_secret_v1.credentials[0].metadata[0].name }
    }
  }
  depends_on = [kubernetes_manifest.cluster]
}

resource "kubernetes_manifest" "permission" {
  count = local.create ? 1 : 0
  manifest = {
    apiVersion = "rabbitmq.com/v1beta1"
    kind       = "Permission"
    metadata   = { name = "${var.name}-taskq", namespace = var.namespace }
    spec = {
      vhost                    = "/"
      user                     = "taskq"
      permissions              = { configure = ".*", write = ".*", read = ".*" }
      rabbitmqClusterReference = { name = var.name }
    }
  }
  depends_on = [kubernetes_manifest.user]
}
