# The workload identity (IRSA): taskq's service account assumes this role, which may read,
# write, list and delete payloads under the prefix, and nothing else.

resource "aws_iam_role" "pods" {
  name = "${var.name}-pods"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc}:sub" = "system:serviceaccount:${var.kubernetes_namespace}:${var.service_account}"
          "${local.oidc}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })
  tags = local.tags
}

resource "aws_iam_policy" "payloads" {
  name        = "${var.name}-payloads"
  description = "taskq: claim-checked payloads under s3://${aws_s3_bucket.payloads.id}/${var.blob_prefix}/"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "Payloads"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        Resource = "${aws_s3_bucket.payloads.arn}/${var.blob_prefix}/*"
      },
      {
        # Unconditioned: taskq's health check (HeadBucket) needs it too, and sends no prefix.
        Sid      = "ListPayloads"
        Effect   = "Allow"
        Action   = "s3:ListBucket"
        Resource = aws_s3_bucket.payloads.arn
      },
      {
        Sid      = "Encryption"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
        Resource = aws_kms_key.taskq.arn
      },
    ]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "payloads" {
  role       = aws_iam_role.pods.name
  policy_arn = aws_iam_policy.payloads.arn
}
