# The claim-check bucket: private, KMS-encrypted, TLS only, payloads expired after the
# topology's retention.

resource "aws_s3_bucket" "payloads" {
  #checkov:skip=CKV_AWS_18:server access logs need a log bucket of the account's own logging setup; object access is in CloudTrail data events
  #checkov:skip=CKV_AWS_144:payloads live for days and are replaced by a resubmission; replicating them to a second region doubles cost for no recovery
  #checkov:skip=CKV2_AWS_62:no consumer of bucket events: taskq finds its payloads through the job store
  bucket = "${var.name}-payloads-${local.account_id}"
  tags   = local.tags
}

resource "aws_s3_bucket_public_access_block" "payloads" {
  bucket                  = aws_s3_bucket.payloads.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "payloads" {
  bucket = aws_s3_bucket.payloads.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "payloads" {
  bucket = aws_s3_bucket.payloads.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "payloads" {
  bucket = aws_s3_bucket.payloads.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.taskq.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "payloads" {
  bucket = aws_s3_bucket.payloads.id

  rule {
    id     = "expire-payloads"
    status = var.blob_retention_days == null ? "Disabled" : "Enabled"
    filter {
      prefix = "${var.blob_prefix}/"
    }
    expiration {
      days = coalesce(var.blob_retention_days, 36500)
    }
  }

  rule {
    id     = "clean-up"
    status = "Enabled"
    filter {}
    # A deleted payload (taskq's retention sweep) is gone a day later, not kept by versioning.
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_policy" "payloads" {
  bucket = aws_s3_bucket.payloads.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "TlsOnly"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.payloads.arn, "${aws_s3_bucket.payloads.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}
