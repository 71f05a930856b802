output "names" {
  description = "The Secrets: broker (keys amqp-url, management-url) and store (key url)."
  value       = { broker = local.broker, store = local.store }
}

output "chart_values" {
  description = "The chart's secretEnv and KEDA trigger Secret, naming these Secrets."
  value = {
    secretEnv = {
      TASKQ_AMQP_URL       = { name = local.broker, key = "amqp-url" }
      TASKQ_MANAGEMENT_URL = { name = local.broker, key = "management-url" }
      TASKQ_STORE_URL      = { name = local.store, key = "url" }
    }
    scaling = { keda = { managementSecret = { name = local.broker, key = "management-url" } } }
  }
}
