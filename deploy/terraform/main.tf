data "aws_caller_identity" "current" {}

locals {
  name = "atrium-${var.environment}"
  azs  = var.availability_zones
}

resource "aws_kms_key" "atrium" {
  description             = "${local.name}: RDS, ElastiCache, S3 backups and EKS secrets"
  deletion_window_in_days = var.kms_key_deletion_window_days
  enable_key_rotation     = true

  # The account administers the key; the services use it through their IAM roles.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministers"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.16.0"

  name = local.name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets  = [for i in range(3) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets   = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 48 + i)]
  database_subnets = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 52 + i)]

  create_database_subnet_group = true
  enable_nat_gateway           = true
  one_nat_gateway_per_az       = true
  enable_dns_hostnames         = true

  enable_flow_log                      = true
  create_flow_log_cloudwatch_log_group = true
  create_flow_log_cloudwatch_iam_role  = true

  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "20.31.6"

  cluster_name    = local.name
  cluster_version = var.kubernetes_version

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  cluster_endpoint_private_access      = true
  cluster_endpoint_public_access       = length(var.cluster_admin_cidrs) > 0
  cluster_endpoint_public_access_cidrs = var.cluster_admin_cidrs

  create_kms_key = false
  cluster_encryption_config = {
    provider_key_arn = aws_kms_key.atrium.arn
    resources        = ["secrets"]
  }

  cluster_addons = {
    coredns                = {}
    kube-proxy             = {}
    vpc-cni                = {}
    eks-pod-identity-agent = {}
  }

  eks_managed_node_groups = {
    api = {
      instance_types = var.node_instance_types
      min_size       = var.node_min_size
      max_size       = var.node_max_size
      desired_size   = var.node_min_size
      subnet_ids     = module.vpc.private_subnets
    }
  }

  enable_cluster_creator_admin_permissions = true
}
