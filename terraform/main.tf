# Health Predict on one EC2 host: Docker Compose runs Postgres, MLflow and Airflow; a kind cluster
# runs the model API. Resources are split by concern: network.tf, security.tf, iam.tf,
# storage.tf and compute.tf.

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}

locals {
  name = var.project_name

  tags = merge(var.tags, {
    Project   = var.project_name
    ManagedBy = "terraform"
  })

  # Zone a exists in every region; a fixed zone keeps the host from moving between plans.
  availability_zone = var.availability_zone != "" ? var.availability_zone : "${var.aws_region}a"

  # The Amazon-provided DNS resolver always sits at the VPC base address plus two.
  vpc_dns_resolver_cidr = "${cidrhost(var.vpc_cidr, 2)}/32"
}
