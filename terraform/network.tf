# One VPC with a single public subnet: the host needs a public address for the operator's UIs
# and outbound HTTPS for packages, images and AWS APIs. No NAT gateway (it would cost more than
# the host itself).

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  # checkov:skip=CKV2_AWS_11:VPC flow logs need a log bucket or log group encrypted with a customer-managed KMS key; left out of this single-host, cost-optimised stack (see docs/terraform_guide.md, Hardening further).

  tags = {
    Name = "${local.name}-vpc"
  }
}

# The default security group of the VPC allows nothing, so nothing can fall back on it.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.main.id

  tags = {
    Name = "${local.name}-default-deny-all"
  }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id

  tags = {
    Name = "${local.name}-igw"
  }
}

resource "aws_subnet" "public" {
  vpc_id            = aws_vpc.main.id
  cidr_block        = var.public_subnet_cidr
  availability_zone = local.availability_zone

  # Only the instance that asks for one gets a public address.
  map_public_ip_on_launch = false

  tags = {
    Name = "${local.name}-public"
  }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id

  tags = {
    Name = "${local.name}-public"
  }
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.main.id
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}
