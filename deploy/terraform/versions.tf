# Atrium's managed infrastructure on AWS: EKS (Kubernetes), RDS PostgreSQL, ElastiCache Redis,
# an S3 bucket for HR backups. Modules and providers are pinned to exact versions.
#
#   terraform init && terraform apply -var-file=production.tfvars
#   then: aws eks update-kubeconfig --name "$(terraform output -raw cluster_name)"
#         and deploy/helm/atrium (or deploy/k8s/overlays/production) with the outputs below.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.82.2"
    }
    random = {
      source  = "hashicorp/random"
      version = "3.6.3"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "atrium"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
