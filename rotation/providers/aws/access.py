"""What the AWS principal may do, asked without writing.

- read: ``DescribeSecret`` and ``GetSecretValue`` of each secret (the value is dropped at once:
  only the call's success matters; it also proves ``kms:Decrypt``);
- list: ``ListSecrets`` (one page);
- write a pending version: ``iam:SimulatePrincipalPolicy`` for ``PutSecretValue`` and
  ``UpdateSecretVersionStage`` on the secrets, for the caller's own principal
  (``sts:GetCallerIdentity``; an assumed role is simulated as its role). Without
  ``iam:SimulatePrincipalPolicy`` (or on an endpoint that lacks it) the write cannot be checked
  and is reported as not verified, never as allowed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rotation.errors import KeyturnError
from rotation.providers.base import LIST, READ, WRITE_PENDING, AccessCheck

__all__ = ["WRITE_ACTIONS", "check_access", "principal_arn"]

WRITE_ACTIONS = ("secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage")
_ASSUMED = re.compile(r"^arn:(aws[\w-]*):sts::(\d+):assumed-role/([^/]+)/.+$")


def principal_arn(caller: str) -> str:
    """The IAM ARN to simulate for a caller ARN (an assumed-role session -> its role)."""
    found = _ASSUMED.match(caller)
    if found:
        partition, account, role = found.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return caller


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


def check_access(provider: Any, names: Sequence[str]) -> list[AccessCheck]:
    read, arns = _read(provider, names)
    return [read, _write(provider, arns), _list(provider)]


def _read(provider: Any, names: Sequence[str]) -> tuple[AccessCheck, list[str]]:
    arns: list[str] = []
    for name in names:
        try:
            with provider._translated(name):
                arns.append(provider.client.describe_secret(SecretId=provider._full(name))["ARN"])
            provider.read(name)  # the value is not kept: only that the call succeeds
        except KeyturnError as exc:
            return AccessCheck(READ, False, f"{name}: {exc.message}"), arns
    checked = f"DescribeSecret and GetSecretValue of {len(names)} secret(s)"
    return AccessCheck(READ, True, checked), arns


def _list(provider: Any) -> AccessCheck:
    try:
        with provider._translated(None):
            provider.client.list_secrets(MaxResults=1)
    except KeyturnError as exc:
        return AccessCheck(LIST, False, exc.message)
    return AccessCheck(LIST, True, "ListSecrets")


def _write(provider: Any, arns: Sequence[str]) -> AccessCheck:
    import boto3

    if not arns:
        return AccessCheck(WRITE_PENDING, None, "not checked: no secret could be described")
    meta: Any = provider.client.meta
    session = boto3.session.Session()
    # the provider's own credentials (whatever chain found them), for STS and IAM
    credentials = provider.client._request_signer._credentials
    options: dict[str, Any] = {
        "region_name": provider.region,
        "endpoint_url": None,
        "aws_access_key_id": credentials.access_key if credentials else None,
        "aws_secret_access_key": credentials.secret_key if credentials else None,
        "aws_session_token": credentials.token if credentials else None,
    }
    endpoint = meta.endpoint_url
    if not endpoint.endswith("amazonaws.com") and "amazonaws.com." not in endpoint:
        options["endpoint_url"] = endpoint  # a test or private endpoint serves IAM and STS too
    try:
        caller = session.client("sts", **options).get_caller_identity()["Arn"]
        iam = session.client("iam", **options)
        answer = iam.simulate_principal_policy(
            PolicySourceArn=principal_arn(caller),
            ActionNames=list(WRITE_ACTIONS),
            ResourceArns=list(arns),
        )
    except Exception as exc:  # refused, unknown to the endpoint, or a role with a path
        return AccessCheck(
            WRITE_PENDING,
            None,
            f"not verified: iam:SimulatePrincipalPolicy failed ({_error_code(exc)}); grant it "
            "on the worker's own principal to let doctor check writes",
        )
    denied = sorted(
        {
            f"{r['EvalActionName']} on {r.get('EvalResourceName', '*')}"
            for r in answer.get("EvaluationResults", [])
            if r.get("EvalDecision") != "allowed"
        }
    )
    if denied:
        more = f" (and {len(denied) - 1} more)" if len(denied) > 1 else ""
        return AccessCheck(WRITE_PENDING, False, f"denied: {denied[0]}{more}")
    return AccessCheck(
        WRITE_PENDING, True, f"SimulatePrincipalPolicy: {', '.join(WRITE_ACTIONS)} allowed"
    )
