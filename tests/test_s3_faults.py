"""The fault-injecting S3 proxy (tests/s3_faults.py): faithful when it injects nothing, and each fault reaching a
boto3 client (its retries off) as the real failure would, so that tests built on it test what they claim."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ResponseStreamingError,
)

from foley.storage.s3 import is_transient
from s3_faults import FAULTS, FaultyS3, S3Request

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})  # retries["max_attempts"] counts retries
BROKEN = (ConnectionClosedError, EndpointConnectionError)  # what botocore makes of a reset, with no retries
CUT = (IncompleteReadError, ResponseStreamingError)  # ... and of a body cut short, when Body is read


@pytest.fixture
def proxy(s3_endpoint):
    with FaultyS3(upstream=s3_endpoint, seed=0) as proxy:
        yield proxy
    assert not proxy.errors, proxy.errors


def client_of(url: str):
    return boto3.session.Session().client("s3", endpoint_url=url, region_name="us-east-1", config=NO_RETRIES)


def missing(s3, name: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=name, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "404"
    return False


def test_with_no_faults_every_operation_passes_through_byte_for_byte(bucket, proxy, tmp_path):
    name, storage = bucket
    s3 = client_of(proxy.url)
    s3.put_object(Bucket=name, Key="a/one.bin", Body=b"\x00one\xff")
    assert s3.get_object(Bucket=name, Key="a/one.bin")["Body"].read() == b"\x00one\xff"
    assert s3.head_object(Bucket=name, Key="a/one.bin")["ContentLength"] == 5
    s3.put_object(Bucket=name, Key="a/two words+more.bin", Body=b"two")
    listed = s3.list_objects_v2(Bucket=name, Prefix="a/")
    assert [item["Key"] for item in listed["Contents"]] == ["a/one.bin", "a/two words+more.bin"]

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # past boto3's 8 MiB threshold: a multipart upload of two parts
    s3.upload_file(str(big), name, "big.bin")
    assert storage.s3.get_object(Bucket=name, Key="big.bin")["Body"].read() == big.read_bytes()
    assert s3.get_object(Bucket=name, Key="big.bin")["Body"].read() == big.read_bytes()  # streamed back out

    s3.delete_object(Bucket=name, Key="a/one.bin")
    assert missing(storage.s3, name, "a/one.bin")
    assert proxy.requests == 11 and not proxy.injected and not proxy.log


def test_a_chunked_request_body_is_relayed_de_chunked(bucket, proxy):
    name, storage = bucket
    host, port = proxy.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("PUT", f"/{name}/chunked.bin", body=iter([b"first,", b"second"]), encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    assert storage.s3.get_object(Bucket=name, Key="chunked.bin")["Body"].read() == b"first,second"


@pytest.mark.parametrize(("fault", "status", "code"), [("503", 503, "SlowDown"), ("500", 500, "InternalError")])
def test_an_error_answer_is_s3s_and_not_forwarded(bucket, proxy, fault, status, code):
    name, storage = bucket
    s3 = client_of(proxy.url)
    proxy.add_rule(lambda r: r.method == "PUT", fault=fault)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert missing(storage.s3, name, "k")
    s3.put_object(Bucket=name, Key="k", Body=b"x")  # the rule's one time is spent; the same connection serves on
    assert proxy.log == [("PUT", f"/{name}/k", fault)]


def test_a_reset_before_forwarding_breaks_the_connection_and_writes_nothing(bucket, proxy):
    name, storage = bucket
    s3 = client_of(proxy.url)
    proxy.add_rule(lambda r: r.method == "PUT", fault="reset")
    with pytest.raises(BROKEN) as caught:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert is_transient(caught.value)
    assert missing(storage.s3, name, "k")
    assert proxy.injected == {"reset": 1}


def test_a_reset_after_a_conditional_put_leaves_the_object_written(bucket, proxy):
    name, storage = bucket
    s3 = client_of(proxy.url)
    key = "out/_foley/lease.json"
    rule = proxy.add_rule(
        lambda r: r.method == "PUT" and r.path.endswith("/_foley/lease.json") and "if-none-match" in r.headers,
        fault="reset-after",
    )
    s3.put_object(Bucket=name, Key=key, Body=b"unconditional")  # not If-None-Match: not the rule's
    s3.delete_object(Bucket=name, Key=key)
    with pytest.raises(BROKEN):
        s3.put_object(Bucket=name, Key=key, Body=b'{"owner": "me"}', IfNoneMatch="*")
    assert storage.s3.get_object(Bucket=name, Key=key)["Body"].read() == b'{"owner": "me"}'  # moto applied it
    with pytest.raises(ClientError) as caught:  # so the writer's retry finds its own write in the way
        s3.put_object(Bucket=name, Key=key, Body=b'{"owner": "me"}', IfNoneMatch="*")
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    assert (rule.matched, rule.hits) == (2, 1)


def test_a_cut_body_breaks_while_it_is_read(bucket, proxy):
    name, storage = bucket
    s3 = client_of(proxy.url)
    storage.s3.put_object(Bucket=name, Key="big.bin", Body=os.urandom(1024 * 1024))
    proxy.add_rule(lambda r: r.method == "GET" and r.key == "big.bin", fault="cut")
    response = s3.get_object(Bucket=name, Key="big.bin")  # the headers came whole
    assert response["ContentLength"] == 1024 * 1024
    with pytest.raises(CUT) as caught:
        response["Body"].read()
    assert is_transient(caught.value)
    assert len(s3.get_object(Bucket=name, Key="big.bin")["Body"].read()) == 1024 * 1024


def test_a_cut_without_a_body_cuts_the_headers(bucket, proxy):
    name, storage = bucket
    storage.s3.put_object(Bucket=name, Key="k", Body=b"x")
    proxy.add_rule(lambda r: r.method == "HEAD", fault="cut")
    with pytest.raises(BROKEN):
        client_of(proxy.url).head_object(Bucket=name, Key="k")


def test_rules_skip_count_and_come_before_rates(bucket, proxy):
    name, storage = bucket
    s3 = client_of(proxy.url)
    storage.s3.put_object(Bucket=name, Key="k", Body=b"x")
    proxy.set_rates({"GET": 1.0}, faults=("500",))
    rule = proxy.add_rule(lambda r: r.kind == "GET", fault="503", times=2, skip=1)
    codes = []
    for _ in range(4):
        with pytest.raises(ClientError) as caught:
            s3.get_object(Bucket=name, Key="k")
        codes.append(caught.value.response["Error"]["Code"])
    assert codes == ["InternalError", "SlowDown", "SlowDown", "InternalError"]
    assert (rule.matched, rule.hits, rule.spent) == (4, 2, True)
    proxy.clear()
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"x"
    assert proxy.injected == {"500": 2, "503": 2} and proxy.requests == 5


def test_a_listing_is_a_kind_of_its_own(bucket, proxy):
    name, storage = bucket
    s3 = client_of(proxy.url)
    storage.s3.put_object(Bucket=name, Key="k", Body=b"x")
    proxy.set_rates({"LIST": 1.0}, faults=("503",))
    with pytest.raises(ClientError):
        s3.list_objects_v2(Bucket=name)
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"x"
    assert S3Request("GET", f"/{name}", {"list-type": ["2"]}, {}).kind == "LIST"


def gets_under_rate(s3_endpoint: str, name: str, seed: int) -> tuple[list[bool], dict[str, int]]:
    """40 GETs through a proxy that faults half of them (any fault): which failed, and the counts it reports."""
    with FaultyS3(upstream=s3_endpoint, seed=seed) as proxy:
        proxy.set_rates({"GET": 0.5}, faults=FAULTS)
        s3 = client_of(proxy.url)
        failed = []
        for _ in range(40):
            try:
                assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"0123456789"
                failed.append(False)
            except (ClientError, *BROKEN, *CUT):
                failed.append(True)
        assert proxy.requests == 40 and not proxy.errors
        return failed, dict(proxy.injected)


def test_a_seeded_rate_faults_some_requests_the_same_ones_again(bucket, s3_endpoint):
    name, storage = bucket
    storage.s3.put_object(Bucket=name, Key="k", Body=b"0123456789")
    failed, injected = gets_under_rate(s3_endpoint, name, seed=7)
    assert 0 < sum(failed) < len(failed)
    assert sum(injected.values()) == sum(failed) and set(injected) <= set(FAULTS)
    assert gets_under_rate(s3_endpoint, name, seed=7) == (failed, injected)


def test_it_runs_as_a_script(bucket, s3_endpoint):
    name, storage = bucket
    storage.s3.put_object(Bucket=name, Key="k", Body=b"x")
    script = Path(__file__).with_name("s3_faults.py")
    command = [sys.executable, str(script), "--upstream", s3_endpoint, "--rate", "GET=1", "--faults", "503"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().strip()
            with pytest.raises(ClientError) as caught:
                client_of(url).get_object(Bucket=name, Key="k")
            assert caught.value.response["Error"]["Code"] == "SlowDown"
        finally:
            process.terminate()
        assert "injected {'503': 1}" in process.stderr.read()
