variable "region" {
  description = "AWS region for every resource, e.g. eu-west-1."
  type        = string
}

variable "environment" {
  description = "Environment name (staging, production); prefixes resource names."
  type        = string
  default     = "production"
}

variable "availability_zones" {
  description = "Exactly three availability zones of the region (subnets, RDS Multi-AZ, Redis replica and API pods spread over them), e.g. [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "Give exactly three availability zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created for Atrium; split into private, public and database subnets over three zones."
  type        = string
  default     = "10.40.0.0/16"
}

variable "kubernetes_version" {
  description = "EKS control-plane version."
  type        = string
  default     = "1.31"
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group running the API pods."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_min_size" {
  description = "Fewest nodes; the Deployment keeps 3 replicas spread over zones, so at least 3."
  type        = number
  default     = 3
}

variable "node_max_size" {
  description = "Most nodes the cluster autoscaler may add when the HPA scales the API out."
  type        = number
  default     = 9
}

variable "cluster_admin_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint publicly; empty keeps it private only."
  type        = list(string)
  default     = []
}

variable "database_engine" {
  description = "Database of the API: \"postgres\" (RDS PostgreSQL), \"mysql\" (RDS MySQL 8) or \"aurora-mysql\" (Aurora MySQL 3). The instance class, storage and backup variables below apply to whichever is chosen."
  type        = string
  default     = "postgres"

  validation {
    condition     = contains(["postgres", "mysql", "aurora-mysql"], var.database_engine)
    error_message = "database_engine must be postgres, mysql or aurora-mysql."
  }
}

variable "mysql_version" {
  description = "RDS MySQL engine version (database_engine = \"mysql\"); 8.0.17 or later."
  type        = string
  default     = "8.0.40"
}

variable "aurora_mysql_version" {
  description = "Aurora MySQL engine version (database_engine = \"aurora-mysql\"); version 3 is MySQL 8 compatible."
  type        = string
  default     = "8.0.mysql_aurora.3.08.0"
}

variable "aurora_mysql_instance_class" {
  description = "Instance class of the two Aurora MySQL instances (writer and reader); Aurora takes db.r* and db.t* classes."
  type        = string
  default     = "db.r6g.large"
}

variable "postgres_version" {
  description = "RDS PostgreSQL engine version."
  type        = string
  default     = "17.2"
}

variable "postgres_instance_class" {
  description = "RDS instance class of the primary (and of read replicas, when added)."
  type        = string
  default     = "db.m6g.large"
}

variable "postgres_allocated_storage_gb" {
  description = "Initial storage in GiB; grows automatically up to postgres_max_storage_gb."
  type        = number
  default     = 100
}

variable "postgres_max_storage_gb" {
  description = "Upper bound for RDS storage autoscaling, in GiB."
  type        = number
  default     = 1000
}

variable "postgres_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 14
}

variable "redis_node_type" {
  description = "ElastiCache node type for keys, limits, cache and idempotency records."
  type        = string
  default     = "cache.m6g.large"
}

variable "redis_engine_version" {
  description = "ElastiCache Redis engine version."
  type        = string
  default     = "7.1"
}

variable "backup_bucket_name" {
  description = "Name of the S3 bucket receiving HR backups (ATRIUM_BACKUP_URL=s3://NAME/atrium); globally unique."
  type        = string
}

variable "kms_key_deletion_window_days" {
  description = "Waiting period before the KMS key encrypting databases and backups can be deleted."
  type        = number
  default     = 30
}
