# The API's database: RDS PostgreSQL (default) here; RDS MySQL or Aurora MySQL in mysql.tf,
# chosen by var.database_engine. Exactly one of them is created.
locals {
  create_postgres = var.database_engine == "postgres"
}

resource "random_password" "postgres" {
  length  = 32
  special = false
}

resource "aws_security_group" "postgres" {
  count       = local.create_postgres ? 1 : 0
  name        = "${local.name}-postgres"
  description = "PostgreSQL reachable from the EKS nodes only"
  vpc_id      = module.vpc.vpc_id

  ingress {
    description     = "PostgreSQL from the API pods"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [module.eks.node_security_group_id]
  }
}

resource "aws_db_parameter_group" "postgres" {
  count  = local.create_postgres ? 1 : 0
  name   = "${local.name}-pg17"
  family = "postgres17"

  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

module "postgres" {
  source  = "terraform-aws-modules/rds/aws"
  version = "6.10.0"
  count   = local.create_postgres ? 1 : 0

  identifier = "${local.name}-postgres"

  engine               = "postgres"
  engine_version       = var.postgres_version
  family               = "postgres17"
  major_engine_version = "17"
  instance_class       = var.postgres_instance_class

  allocated_storage     = var.postgres_allocated_storage_gb
  max_allocated_storage = var.postgres_max_storage_gb
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.atrium.arn

  db_name                     = "atrium"
  username                    = "atrium"
  password                    = random_password.postgres.result
  manage_master_user_password = false
  port                        = 5432

  multi_az               = true
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  vpc_security_group_ids = [aws_security_group.postgres[0].id]

  create_db_parameter_group = false
  parameter_group_name      = aws_db_parameter_group.postgres[0].name

  backup_retention_period             = var.postgres_backup_retention_days
  deletion_protection                 = true
  skip_final_snapshot                 = false
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.atrium.arn
  monitoring_interval                 = 60
  create_monitoring_role              = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
}
