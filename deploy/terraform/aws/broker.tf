# The broker: Amazon MQ for RabbitMQ, private, TLS only (AMQPS 5671, management API on 443).

resource "random_password" "broker" {
  length  = 32
  special = false # Amazon MQ refuses commas, colons and equals signs; the URL stays plain
}

resource "aws_mq_broker" "taskq" {
  #checkov:skip=CKV_AWS_209:Amazon MQ for RabbitMQ encrypts at rest with an AWS-owned key only; a customer-managed key is an ActiveMQ-only option
  #checkov:skip=CKV_AWS_197:audit logs are an ActiveMQ-only option; RabbitMQ brokers have general logs, enabled below
  broker_name                = var.name
  engine_type                = "RabbitMQ"
  engine_version             = var.broker_engine_version
  host_instance_type         = var.broker_instance_type
  deployment_mode            = var.broker_cluster ? "CLUSTER_MULTI_AZ" : "SINGLE_INSTANCE"
  subnet_ids                 = var.broker_cluster ? var.subnet_ids : [var.subnet_ids[0]]
  security_groups            = [aws_security_group.broker.id]
  publicly_accessible        = false
  auto_minor_version_upgrade = true
  apply_immediately          = false

  user {
    username = "taskq"
    password = random_password.broker.result
  }

  logs {
    general = true
  }

  maintenance_window_start_time {
    day_of_week = "SUNDAY"
    time_of_day = "03:00"
    time_zone   = "UTC"
  }

  tags = local.tags
}

locals {
  broker_host = replace(replace(aws_mq_broker.taskq.instances[0].endpoints[0], "amqps://", ""), ":5671", "")
  amqp_url    = "amqps://taskq:${random_password.broker.result}@${local.broker_host}:5671/"
  # The management API (queue depths for the autoscaler and KEDA) answers on HTTPS 443.
  management_url = "https://taskq:${random_password.broker.result}@${local.broker_host}/"
}
