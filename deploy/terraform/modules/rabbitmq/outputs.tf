output "host" {
  description = "The broker's Service host name (AMQP on 5672, the management API on 15672); null for an external broker."
  value       = local.create ? local.host : null
}

output "amqp_url" {
  description = "TASKQ_AMQP_URL for taskq's user."
  value       = local.create ? "amqp://taskq:${random_password.taskq[0].result}@${local.host}:5672/" : var.external.amqp_url
  sensitive   = true
}

output "management_url" {
  description = "TASKQ_MANAGEMENT_URL for taskq's user."
  value       = local.create ? "http://taskq:${random_password.taskq[0].result}@${local.host}:15672/" : var.external.management_url
  sensitive   = true
}
