output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name …)."
  value       = module.eks.cluster_name
}

output "database_url" {
  description = "ATRIUM_DATABASE_URL for the atrium-secrets Secret."
  value       = "postgresql://atrium:${random_password.postgres.result}@${module.postgres.db_instance_endpoint}/atrium?sslmode=require"
  sensitive   = true
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
