# taskq on Azure: RabbitMQ in the AKS cluster (or an existing broker), Azure Database for
# PostgreSQL flexible server, a Blob Storage container for claim-checked payloads, and the
# managed identity taskq's pods use through workload identity.

locals {
  tags = merge({ "app.kubernetes.io/part-of" = "taskq" }, var.tags)
}

module "broker" {
  source = "../modules/rabbitmq"
  count  = var.create_broker ? 1 : 0

  name      = "${var.name}-rabbitmq"
  namespace = var.kubernetes_namespace
  replicas  = var.broker_replicas
  storage   = var.broker_storage
}

locals {
  amqp_url       = var.create_broker ? module.broker[0].amqp_url : var.broker_urls.amqp_url
  management_url = var.create_broker ? module.broker[0].management_url : var.broker_urls.management_url
}
