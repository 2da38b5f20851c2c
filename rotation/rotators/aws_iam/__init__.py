"""The ``aws-iam`` kind: an IAM user's access keys, two slots taking turns (``rotator``; the
target block in ``target``, the IAM and STS calls in ``iam``)."""
