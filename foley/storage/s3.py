"""The one S3 client configuration: endpoint, region and retries, for boto3 and pyarrow alike.

Both clients are built from `S3Settings`, so a setting (an S3-compatible endpoint, the adaptive retry budget)
reaches every S3 call, Ray Data's Parquet reads included. Credentials come from the standard AWS chain and are
never logged.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pyarrow import fs

from foley.config import StorageConfig
from foley.storage.uris import StorageError

DEFAULT_REGION = "us-east-1"
T = TypeVar("T")


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None
    region: str
    max_attempts: int

    @classmethod
    def from_config(cls, config: StorageConfig) -> S3Settings:
        """The config's values, else the standard AWS environment variables, else S3's defaults."""
        env = os.environ
        return cls(
            endpoint_url=config.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region=config.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            max_attempts=config.max_attempts,
        )

    def boto3_client(self):
        import boto3  # noqa: PLC0415 - boto3 and botocore load only in processes that touch S3
        from botocore.config import Config  # noqa: PLC0415

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(retries={"mode": "adaptive", "max_attempts": self.max_attempts}),
        )

    def arrow_filesystem(self):
        """A pyarrow S3FileSystem (for readers such as Ray Data's read_parquet) with the same endpoint, region
        and retry budget as the boto3 client."""
        options = {
            "region": self.region,
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
        }
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            options.update(endpoint_override=host, scheme=scheme)
        return fs.S3FileSystem(**options)


@contextlib.contextmanager
def s3_errors(what: str, uri: str) -> Iterator[None]:
    """Turn botocore's errors into a StorageError that says what was done to which object, without secrets."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - only where S3 is used

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise StorageError(
            f"{what} {uri} failed: {error.get('Code', '?')} {error.get('Message', '')}".strip()
        ) from None
    except BotoCoreError as exc:
        raise StorageError(f"{what} {uri} failed: {exc}") from None


def is_missing(exc: Exception) -> bool:
    """A ClientError that means 'no such object'."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def is_transient(exc: BaseException) -> bool:
    """A broken exchange that the same request may not meet again: a reset or timed-out connection, a response
    body cut short. (S3's own 5xx and throttling answers are ClientErrors that botocore has retried already.)"""
    from botocore.exceptions import (  # noqa: PLC0415 - only where S3 is used
        ConnectionClosedError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    broken = (ConnectionClosedError, EndpointConnectionError, IncompleteReadError, ReadTimeoutError)
    return isinstance(exc, (*broken, ResponseStreamingError, BotoConnectionError, HTTPError, ConnectionError))


def retried(call: Callable[[], T], attempts: int, base_delay_s: float) -> T:
    """`call()`, again after a transient failure (is_transient), at most `attempts` times in all, waiting with
    exponential backoff and full jitter. botocore retries a request, but not the reading of a streamed body
    (get_object's Body), nor a whole exchange such as a conditional write and its check."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(random.uniform(0, base_delay_s * 2**attempt))
    raise AssertionError("unreachable")
