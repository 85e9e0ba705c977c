# RDS MySQL 8 or Aurora MySQL 3 in place of PostgreSQL (var.database_engine; database.tf has
# the default). Atrium sets utf8mb4, strict SQL mode and UTC on each connection itself; the
# parameters below make the server's own defaults agree, force TLS, and let `atrium migrate`
# create the templates trigger although binary logging is on (docs/databases.md).
locals {
  create_mysql        = var.database_engine == "mysql"
  create_aurora_mysql = var.database_engine == "aurora-mysql"
  mysql_parameters = {
    character_set_server            = "utf8mb4"
    collation_server                = "utf8mb4_0900_bin"
    time_zone                       = "UTC"
    require_secure_transport        = "ON"
    log_bin_trust_function_creators = "1"
    long_query_time                 = "0.5"
    slow_query_log                  = "1"
  }
}

resource "random_password" "mysql" {
  length  = 32
  special = false
}

resource "aws_security_group" "mysql" {
  count       = local.create_mysql || local.create_aurora_mysql ? 1 : 0
  name        = "${local.name}-mysql"
  description = "MySQL reachable from the EKS nodes only"
  vpc_id      = module.vpc.vpc_id

  ingress {
    description     = "MySQL from the API pods"
    from_port       = 3306
    to_port         = 3306
    protocol        = "tcp"
    security_groups = [module.eks.node_security_group_id]
  }
}

resource "aws_db_parameter_group" "mysql" {
  count  = local.create_mysql ? 1 : 0
  name   = "${local.name}-mysql80"
  family = "mysql8.0"

  dynamic "parameter" {
    for_each = local.mysql_parameters
    content {
      name  = parameter.key
      value = parameter.value
    }
  }
}

module "mysql" {
  source  = "terraform-aws-modules/rds/aws"
  version = "6.10.0"
  count   = local.create_mysql ? 1 : 0

  identifier = "${local.name}-mysql"

  engine               = "mysql"
  engine_version       = var.mysql_version
  family               = "mysql8.0"
  major_engine_version = "8.0"
  instance_class       = var.postgres_instance_class

  allocated_storage     = var.postgres_allocated_storage_gb
  max_allocated_storage = var.postgres_max_storage_gb
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.atrium.arn

  db_name                     = "atrium"
  username                    = "atrium"
  password                    = random_password.mysql.result
  manage_master_user_password = false
  port                        = 3306

  multi_az               = true
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  vpc_security_group_ids = [aws_security_group.mysql[0].id]

  create_db_parameter_group = false
  parameter_group_name      = aws_db_parameter_group.mysql[0].name

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
  enabled_cloudwatch_logs_exports     = ["error", "slowquery"]
}

resource "aws_rds_cluster_parameter_group" "aurora_mysql" {
  count  = local.create_aurora_mysql ? 1 : 0
  name   = "${local.name}-aurora-mysql8"
  family = "aurora-mysql8.0"

  dynamic "parameter" {
    for_each = local.mysql_parameters
    content {
      name  = parameter.key
      value = parameter.value
    }
  }
}

module "aurora_mysql" {
  source  = "terraform-aws-modules/rds-aurora/aws"
  version = "9.11.0"
  count   = local.create_aurora_mysql ? 1 : 0

  name           = "${local.name}-aurora-mysql"
  engine         = "aurora-mysql"
  engine_version = var.aurora_mysql_version
  instance_class = var.aurora_mysql_instance_class
  instances = {
    one = {}
    two = {}
  }

  database_name               = "atrium"
  master_username             = "atrium"
  master_password             = random_password.mysql.result
  manage_master_user_password = false
  port                        = 3306

  vpc_id                 = module.vpc.vpc_id
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  create_security_group  = false
  vpc_security_group_ids = [aws_security_group.mysql[0].id]

  create_db_cluster_parameter_group = false
  db_cluster_parameter_group_name   = aws_rds_cluster_parameter_group.aurora_mysql[0].name

  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.atrium.arn
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
  enabled_cloudwatch_logs_exports     = ["error", "slowquery"]
}
