# Daily snapshots of the data volume (compute.tf) by Data Lifecycle Manager: the backup of the
# MLflow registry, the Airflow metadata and the stack's secrets. Restore: README, "The AWS host".

data "aws_iam_policy_document" "dlm_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["dlm.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "dlm" {
  name_prefix        = "${local.name}-dlm-"
  assume_role_policy = data.aws_iam_policy_document.dlm_assume.json
}

data "aws_iam_policy_document" "dlm" {
  statement {
    sid       = "DescribeVolumesAndSnapshots"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:DescribeSnapshots"]
    resources = ["*"]
  }

  statement {
    sid     = "SnapshotTheDataVolume"
    actions = ["ec2:CreateSnapshot"]
    resources = [
      aws_ebs_volume.data.arn,
      "arn:aws:ec2:${var.aws_region}::snapshot/*",
    ]
  }

  statement {
    sid       = "TagAndExpireItsSnapshots"
    actions   = ["ec2:CreateTags", "ec2:DeleteSnapshot"]
    resources = ["arn:aws:ec2:${var.aws_region}::snapshot/*"]
  }
}

resource "aws_iam_role_policy" "dlm" {
  name   = "${local.name}-dlm"
  role   = aws_iam_role.dlm.id
  policy = data.aws_iam_policy_document.dlm.json
}

resource "aws_dlm_lifecycle_policy" "data" {
  description        = "${local.name} data volume, daily"
  execution_role_arn = aws_iam_role.dlm.arn
  state              = "ENABLED"

  policy_details {
    resource_types = ["VOLUME"]
    target_tags = {
      Backup = "${local.name}-data"
    }

    schedule {
      name      = "daily"
      copy_tags = true

      create_rule {
        interval      = 24
        interval_unit = "HOURS"
        times         = [var.data_snapshot_time_utc]
      }

      retain_rule {
        count = var.data_snapshots_to_keep
      }

      tags_to_add = {
        SnapshotOf = "${local.name}-data"
      }
    }
  }
}
