# The job store: RDS for PostgreSQL, private, encrypted, TLS required, Multi-AZ.

resource "random_password" "store" {
  length  = 32
  special = false # kept plain so the DSN needs no escaping
}

resource "aws_db_subnet_group" "store" {
  name       = "${var.name}-store"
  subnet_ids = var.subnet_ids
  tags       = local.tags
}

resource "aws_db_parameter_group" "store" {
  name   = "${var.name}-store"
  family = "postgres${var.db_engine_version}"
  tags   = local.tags

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  # Statements slower than a second are logged: the job store's queries take milliseconds.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${var.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "store" {
  identifier                            = "${var.name}-store"
  engine                                = "postgres"
  engine_version                        = var.db_engine_version
  instance_class                        = var.db_instance_class
  allocated_storage                     = var.db_allocated_storage
  max_allocated_storage                 = var.db_allocated_storage * 10
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = aws_kms_key.taskq.arn
  db_name                               = "taskq"
  username                              = "taskq"
  password                              = random_password.store.result
  db_subnet_group_name                  = aws_db_subnet_group.store.name
  vpc_security_group_ids                = [aws_security_group.store.id]
  parameter_group_name                  = aws_db_parameter_group.store.name
  publicly_accessible                   = false
  multi_az                              = true
  backup_retention_period               = var.db_backup_retention_days
  deletion_protection                   = true
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${var.name}-store-final"
  copy_tags_to_snapshot                 = true
  auto_minor_version_upgrade            = true
  iam_database_authentication_enabled   = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.taskq.arn
  performance_insights_retention_period = 7
  tags                                  = local.tags
}

locals {
  store_url = "postgresql://taskq:${random_password.store.result}@${aws_db_instance.store.address}:${aws_db_instance.store.port}/taskq?sslmode=require"
}
