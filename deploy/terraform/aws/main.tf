# taskq on AWS: Amazon MQ for RabbitMQ, RDS for PostgreSQL, an S3 bucket for claim-checked
# payloads, and the IAM role (IRSA) taskq's pods use to reach the bucket.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  tags       = merge({ "app.kubernetes.io/part-of" = "taskq" }, var.tags)
  oidc       = replace(var.oidc_provider_url, "https://", "")
  account_id = data.aws_caller_identity.current.account_id
}

# One customer-managed key for the bucket, the database and its Performance Insights.
resource "aws_kms_key" "taskq" {
  description             = "${var.name}: taskq payloads and job store"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministers"
      Effect    = "Allow"
      Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${local.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
  tags = local.tags
}

resource "aws_kms_alias" "taskq" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.taskq.key_id
}

resource "aws_security_group" "broker" {
  name        = "${var.name}-broker"
  description = "taskq: AMQPS and the management API of the broker, from the cluster only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "broker" {
  for_each = { for pair in setproduct(var.client_security_group_ids, [5671, 443]) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id            = aws_security_group.broker.id
  description                  = "taskq pods to the broker (port ${each.value[1]})"
  referenced_security_group_id = each.value[0]
  ip_protocol                  = "tcp"
  from_port                    = each.value[1]
  to_port                      = each.value[1]
}

resource "aws_security_group" "store" {
  name        = "${var.name}-store"
  description = "taskq: PostgreSQL of the job store, from the cluster only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "store" {
  for_each = toset(var.client_security_group_ids)

  security_group_id            = aws_security_group.store.id
  description                  = "taskq pods to PostgreSQL"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}
