# The Secrets the Helm chart reads by name (secretEnv): never inlined in its values.
module "chart_secrets" {
  source = "../modules/chart-secrets"

  namespace      = var.kubernetes_namespace
  create         = var.create_kubernetes_secrets
  amqp_url       = local.amqp_url
  management_url = local.management_url
  store_url      = local.store_url
}
