output "host" {
  description = "The broker's Service host name (AMQP on 5672, the management API on 15672)."
  value       = local.host
}

output "amqp_url" {
  description = "TASKQ_AMQP_URL for taskq's user."
  value       = "amqp://taskq:${random_password.taskq.result}@${local.host}:5672/"
  sensitive   = true
}

output "management_url" {
  description = "TASKQ_MANAGEMENT_URL for taskq's user."
  value       = "http://taskq:${random_password.taskq.result}@${local.host}:15672/"
  sensitive   = true
}
