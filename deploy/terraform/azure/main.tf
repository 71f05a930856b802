# taskq on Azure: RabbitMQ in the AKS cluster (or an existing broker), Azure Database for
# PostgreSQL flexible server, a Blob Storage container for claim-checked payloads, and the
# managed identity taskq's pods use through workload identity.

locals {
  tags = merge({ "app.kubernetes.io/part-of" = "taskq" }, var.tags)
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
