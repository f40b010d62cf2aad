# Inbound: SSH, the Airflow UI, the MLflow UI and the model API NodePort, each only from
# var.allowed_cidr. Outbound: only what the host needs (see docs/terraform_guide.md):
#   TCP 443 - Docker Hub/GHCR images, GitHub, apt signing keys, kind, PyPI, S3, ECR, STS
#   TCP 80  - Ubuntu apt mirrors (packages are signed, so plain HTTP is safe for them)
#   53      - DNS, only to the VPC's own resolver
# Instance metadata (169.254.169.254) and time sync (169.254.169.123) are link-local and not
# subject to security groups.

resource "aws_security_group" "host" {
  name_prefix = "${local.name}-host-"
  description = "Health Predict host: operator access from allowed_cidr only, restricted egress"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "SSH from the operator network"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr]
  }

  ingress {
    description = "Airflow UI and REST API from the operator network"
    from_port   = var.airflow_port
    to_port     = var.airflow_port
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr]
  }

  ingress {
    description = "MLflow UI and tracking API from the operator network"
    from_port   = var.mlflow_port
    to_port     = var.mlflow_port
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr]
  }

  ingress {
    description = "Model API (kind NodePort) from the operator network"
    from_port   = var.api_node_port
    to_port     = var.api_node_port
    protocol    = "tcp"
    cidr_blocks = [var.allowed_cidr]
  }

  egress {
    description = "HTTPS: container images, packages, GitHub, S3, ECR and other AWS APIs"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: Ubuntu apt mirrors (signed packages)"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "DNS over UDP to the VPC resolver only"
    from_port   = 53
    to_port     = 53
    protocol    = "udp"
    cidr_blocks = [local.vpc_dns_resolver_cidr]
  }

  egress {
    description = "DNS over TCP to the VPC resolver only"
    from_port   = 53
    to_port     = 53
    protocol    = "tcp"
    cidr_blocks = [local.vpc_dns_resolver_cidr]
  }

  lifecycle {
    create_before_destroy = true
  }

  tags = {
    Name = "${local.name}-host"
  }
}
