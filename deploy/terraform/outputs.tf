output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name …)."
  value       = module.eks.cluster_name
}

output "database_url" {
  description = "ATRIUM_DATABASE_URL for the atrium-secrets Secret (TLS required), for the chosen database_engine."
  value = {
    postgres       = local.create_postgres ? "postgresql://atrium:${random_password.postgres.result}@${module.postgres[0].db_instance_endpoint}/atrium?sslmode=require" : null
    mysql          = local.create_mysql ? "mysql://atrium:${random_password.mysql.result}@${module.mysql[0].db_instance_endpoint}/atrium?ssl_mode=REQUIRED" : null
    "aurora-mysql" = local.create_aurora_mysql ? "mysql://atrium:${random_password.mysql.result}@${module.aurora_mysql[0].cluster_endpoint}:3306/atrium?ssl_mode=REQUIRED" : null
  }[var.database_engine]
  sensitive = true
}

output "redis_url" {
  description = "ATRIUM_REDIS_URL for the atrium-secrets Secret (TLS, AUTH token)."
  value       = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.redis.primary_endpoint_address}:6379/0"
  sensitive   = true
}

output "backup_url" {
  description = "ATRIUM_BACKUP_URL for the ConfigMap / values."
  value       = "s3://${aws_s3_bucket.backups.bucket}/atrium"
}
