# The single host: Ubuntu 24.04 LTS, its user data installs Docker, the Compose plugin, kubectl
# and kind, clones the project, starts the services stack and creates the kind cluster.
# Everything stateful (Docker's data root: the Postgres volume holding the MLflow registry and
# Airflow metadata, the MLflow and Airflow auth volumes, the kind node; and the stack's .env with
# its generated secrets) lives on the separate data volume below, snapshotted daily, so the root
# volume holds nothing that a replaced host would need.

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

resource "aws_key_pair" "operator" {
  key_name_prefix = "${local.name}-operator-"
  public_key      = var.ssh_public_key
}

resource "aws_instance" "host" {
  ami                         = data.aws_ssm_parameter.ami.insecure_value
  instance_type               = var.instance_type
  subnet_id                   = aws_subnet.public.id
  vpc_security_group_ids      = [aws_security_group.host.id]
  iam_instance_profile        = aws_iam_instance_profile.host.name
  key_name                    = aws_key_pair.operator.key_name
  associate_public_ip_address = true
  monitoring                  = true
  ebs_optimized               = true

  # checkov:skip=CKV_AWS_88:The operator reaches the UIs directly; the public address is reachable only from allowed_cidr through the security group.

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 1: only the host itself reaches IMDS, so no container (kind pods included) can take the
    # role's credentials; the host copies them for the two services that need S3/ECR
    # (user data, "AWS credentials for the containers"; docker/compose.aws.yml).
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
  }

  user_data = templatefile("${path.module}/templates/user_data.sh.tftpl", {
    project_repository_url = var.project_repository_url
    project_git_ref        = var.project_git_ref
    aws_region             = var.aws_region
    bucket_name            = aws_s3_bucket.project.bucket
    ecr_repository_url     = aws_ecr_repository.api.repository_url
    kind_version           = var.kind_version
    kubernetes_minor       = var.kubernetes_minor_version
    airflow_port           = var.airflow_port
    mlflow_port            = var.mlflow_port
    api_node_port          = var.api_node_port
  })
  # A change to the template or its inputs must never replace the host by itself: user data
  # runs once, at first boot; an operator upgrades a running host as the README says.
  user_data_replace_on_change = false

  # A newer AMI behind the SSM parameter must not replace a running host on the next apply.
  lifecycle {
    ignore_changes = [ami]
  }

  tags = {
    Name = "${local.name}-host"
  }

  depends_on = [aws_route.internet]
}

resource "aws_ebs_volume" "data" {
  # checkov:skip=CKV_AWS_189:Encrypted with the AWS-managed EBS key, as the root volume; a customer-managed key adds a KMS key and its policy to this single-host, cost-optimised stack (see docs/terraform_guide.md, Hardening further).
  availability_zone = local.availability_zone
  type              = "gp3"
  size              = var.data_volume_size_gb
  encrypted         = true
  snapshot_id       = var.data_volume_snapshot_id != "" ? var.data_volume_snapshot_id : null
  # Replacing or destroying the volume (a restore, terraform destroy) snapshots it first.
  final_snapshot = true

  tags = {
    Name = "${local.name}-data"
    # The snapshot policy (backup.tf) selects volumes by this tag.
    Backup = "${local.name}-data"
  }
}

resource "aws_volume_attachment" "data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data.id
  instance_id = aws_instance.host.id
  # Stop the host before detaching, so Postgres is never cut off from its disk while running.
  stop_instance_before_detaching = true
}
