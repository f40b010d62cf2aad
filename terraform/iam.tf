# The host's role may read and write the project bucket, push and pull the project's ECR
# repository, and fetch an ECR login token (an action that has no resource scope). Nothing else.

data "aws_iam_policy_document" "ec2_assume_role" {
  statement {
    sid     = "Ec2AssumesRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "host" {
  statement {
    sid       = "ListProjectBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.project.arn]
  }

  statement {
    sid = "ReadWriteProjectObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.project.arn}/*"]
  }

  statement {
    sid       = "EcrLoginToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushPullProjectRepository"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload",
      "ecr:PutImage",
      "ecr:DescribeImages",
      "ecr:DescribeRepositories",
      "ecr:ListImages",
    ]
    resources = [aws_ecr_repository.api.arn]
  }
}

resource "aws_iam_role" "host" {
  name_prefix        = "${local.name}-host-"
  description        = "Health Predict EC2 host: project bucket and ECR repository only"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume_role.json
}

resource "aws_iam_policy" "host" {
  name_prefix = "${local.name}-host-"
  description = "Least-privilege access of the Health Predict host to its bucket and ECR repository"
  policy      = data.aws_iam_policy_document.host.json
}

resource "aws_iam_role_policy_attachment" "host" {
  role       = aws_iam_role.host.name
  policy_arn = aws_iam_policy.host.arn
}

resource "aws_iam_instance_profile" "host" {
  name_prefix = "${local.name}-host-"
  role        = aws_iam_role.host.name
}
