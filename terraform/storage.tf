# The project bucket holds the data store (raw, processed, monitoring batches) and the MLflow
# artifacts; the ECR repository holds the model API images.

resource "aws_s3_bucket" "project" {
  bucket_prefix = "${local.name}-"
  force_destroy = var.force_destroy

  # checkov:skip=CKV_AWS_18:Server access logs would need a second bucket; object-level auditing belongs in CloudTrail data events, which an organisation configures account-wide.
  # checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost; versioning plus the lifecycle rule already protect against accidental deletes, and every object can be rebuilt by the pipeline.
  # checkov:skip=CKV2_AWS_62:No consumer reacts to bucket events; the Airflow monitoring DAG polls the data store on its own schedule.

  tags = {
    Name = "${local.name}-project"
  }
}

resource "aws_s3_bucket_ownership_controls" "project" {
  bucket = aws_s3_bucket.project.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "project" {
  bucket = aws_s3_bucket.project.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "project" {
  bucket = aws_s3_bucket.project.id

  versioning_configuration {
    status = "Enabled"
  }
}

# SSE-KMS with the AWS-managed key: no key to pay for or manage, and S3 bucket keys keep the
# KMS request count (and cost) low.
resource "aws_s3_bucket_server_side_encryption_configuration" "project" {
  bucket = aws_s3_bucket.project.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "project" {
  bucket = aws_s3_bucket.project.id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days           = var.noncurrent_version_retention_days
      newer_noncurrent_versions = 3
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.project]
}

data "aws_iam_policy_document" "project_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.project.arn, "${aws_s3_bucket.project.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.project.arn, "${aws_s3_bucket.project.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "project" {
  bucket = aws_s3_bucket.project.id
  policy = data.aws_iam_policy_document.project_bucket.json

  # A bucket policy is only accepted once the public access block is in place.
  depends_on = [aws_s3_bucket_public_access_block.project]
}

resource "aws_ecr_repository" "api" {
  name                 = var.ecr_repository_name
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }

  # KMS with the AWS-managed key for ECR: encrypted with KMS at no key cost.
  encryption_configuration {
    encryption_type = "KMS"
  }

  tags = {
    Name = var.ecr_repository_name
  }
}

resource "aws_ecr_lifecycle_policy" "api" {
  repository = aws_ecr_repository.api.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images (failed or superseded pushes) after 7 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep only the most recent model versions (rollback needs the previous ones)"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_images_to_keep
        }
        action = { type = "expire" }
      },
    ]
  })
}
