"""LocalAws: moto's server mode for a rehearsal, and CloudFormation-style provisioning on it.

Everything goes through real boto3 clients against the running moto server (botocore's real
serializers and parsers); the separate-process tests run a tiny ``python -c`` child with only
the environment from ``client_env()``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from constructs_lib.testing.aws_services import (
    ACCOUNT_ID,
    PROVISIONED_TYPES,
    LocalAws,
    ProvisioningError,
    UnsupportedResourceType,
)
from constructs_lib.testing.cloudformation_api import CloudFormationApi
from constructs_lib.testing.stack_registry import StackRegistry

REPO_ROOT = Path(__file__).resolve().parents[3]
TABLE = "AWS::DynamoDB::Table"

# The properties CDK's ``dynamodb.TableV2``/``Table`` synthesize, and more (numbers and booleans
# as strings too: CloudFormation accepts both).
STATE_TABLE: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "owner", "AttributeType": "S"},
    ],
    "BillingMode": "PROVISIONED",
    "ProvisionedThroughput": {"ReadCapacityUnits": "5", "WriteCapacityUnits": 3},
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "byOwner",
            "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
            "ContributorInsightsSpecification": {"Enabled": True},
        }
    ],
    "LocalSecondaryIndexes": [
        {
            "IndexName": "byPkOwner",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "owner", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "TimeToLiveSpecification": {"AttributeName": "expires", "Enabled": "true"},
    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    "SSESpecification": {"SSEEnabled": True},
    "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
    "Tags": [{"Key": "owner", "Value": "rehearsal"}],
    "KinesisStreamSpecification": {"StreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"},
}
ON_DEMAND: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    """One moto server for the module; ``aws`` empties it for each test."""
    with LocalAws(seed=7) as server:
        yield server


@pytest.fixture
def aws(local_aws: LocalAws) -> LocalAws:
    """The running server with every backend empty."""
    local_aws.reset()
    return local_aws


def child_env(*envs: dict[str, str]) -> dict[str, str]:
    """This process's environment without any AWS settings, plus ``envs``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    for extra in envs:
        env.update(extra)
    return env


def run_child(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` with ``env``; fail with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


# --------------------------------------------------------------------------- DynamoDB


def test_a_table_from_template_properties_has_its_keys_billing_indexes_ttl_and_pitr(aws: LocalAws) -> None:
    created = aws.create_resource(TABLE, "StateTable", STATE_TABLE, stack_name="Main")
    dynamodb = aws.client("dynamodb")
    table = dynamodb.describe_table(TableName=created.physical_id)["Table"]

    assert re.fullmatch(r"Main-StateTable-[A-Z0-9]{13}", created.physical_id)
    assert table["KeySchema"] == STATE_TABLE["KeySchema"]
    assert table["AttributeDefinitions"] == STATE_TABLE["AttributeDefinitions"]
    assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
    assert (
        table["ProvisionedThroughput"]["ReadCapacityUnits"],
        table["ProvisionedThroughput"]["WriteCapacityUnits"],
    ) == (5, 3)
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["byOwner"]
    assert [index["IndexName"] for index in table["LocalSecondaryIndexes"]] == ["byPkOwner"]
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}

    ttl = dynamodb.describe_time_to_live(TableName=created.physical_id)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    backups = dynamodb.describe_continuous_backups(TableName=created.physical_id)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    tags = dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    assert tags == [{"Key": "owner", "Value": "rehearsal"}]

    assert created.attributes == {"Arn": table["TableArn"], "StreamArn": table["LatestStreamArn"]}
    assert created.attributes["Arn"] == f"arn:aws:dynamodb:us-east-1:{ACCOUNT_ID}:table/{created.physical_id}"
    assert created.ignored == (
        "GlobalSecondaryIndexes[0].ContributorInsightsSpecification",
        "KinesisStreamSpecification",
    )


def test_an_on_demand_table_keeps_its_name_and_conditional_writes_work_through_it(aws: LocalAws) -> None:
    created = aws.create_resource(TABLE, "StateTable", {**ON_DEMAND, "TableName": "assoc-state"}, stack_name="Main")
    assert created.physical_id == "assoc-state"
    assert "StreamArn" not in created.attributes
    dynamodb = aws.client("dynamodb")
    table = dynamodb.describe_table(TableName="assoc-state")["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    item = {"pk": {"S": "stack#analysts"}, "sk": {"S": "user#alice"}, "owner": {"S": "Main/Analysts"}}
    new_only = "attribute_not_exists(pk)"
    dynamodb.put_item(TableName="assoc-state", Item=item, ConditionExpression=new_only)
    with pytest.raises(ClientError) as raised:
        dynamodb.put_item(TableName="assoc-state", Item=item, ConditionExpression=new_only)
    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"

    dynamodb.update_item(
        TableName="assoc-state",
        Key={"pk": item["pk"], "sk": item["sk"]},
        UpdateExpression="SET #o = :new",
        ConditionExpression="#o = :old",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":old": {"S": "Main/Analysts"}, ":new": {"S": "Main/Renamed"}},
    )
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": "assoc-state",
                        "Item": {**item, "sk": {"S": "user#bob"}},
                        "ConditionExpression": new_only,
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": "assoc-state",
                        "Key": {"pk": item["pk"], "sk": item["sk"]},
                        "ConditionExpression": "#o = :old",
                        "ExpressionAttributeNames": {"#o": "owner"},
                        "ExpressionAttributeValues": {":old": {"S": "Main/Analysts"}},
                    }
                },
            ]
        )
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    found = dynamodb.query(
        TableName="assoc-state",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": item["pk"]},
    )["Items"]
    assert [(i["sk"]["S"], i["owner"]["S"]) for i in found] == [("user#alice", "Main/Renamed")]


def test_deleting_a_table_and_deletion_protection(aws: LocalAws) -> None:
    protected = aws.create_resource(
        TABLE, "Protected", {**ON_DEMAND, "DeletionProtectionEnabled": "true"}, stack_name="Main"
    )
    with pytest.raises(ProvisioningError) as raised:
        aws.delete_resource(TABLE, protected.physical_id)
    assert raised.value.code == "ValidationException"
    assert "DeletionProtectionEnabled" in raised.value.reason

    plain = aws.create_resource(TABLE, "Plain", ON_DEMAND, stack_name="Main")
    aws.delete_resource(TABLE, plain.physical_id)
    aws.delete_resource(TABLE, plain.physical_id)  # already gone counts as deleted, as in CloudFormation
    assert aws.client("dynamodb").list_tables()["TableNames"] == [protected.physical_id]


def test_invalid_table_properties_fail_the_create_like_cloudformation(aws: LocalAws) -> None:
    with pytest.raises(ProvisioningError) as raised:
        aws.create_resource(TABLE, "Bad", {**ON_DEMAND, "DeletionProtectionEnabled": "maybe"}, stack_name="Main")
    assert (raised.value.code, raised.value.name) == ("ValidationError", "Bad")
    assert "DeletionProtectionEnabled" in str(raised.value)

    aws.create_resource(TABLE, "Once", {**ON_DEMAND, "TableName": "taken"}, stack_name="Main")
    with pytest.raises(ProvisioningError) as raised:
        aws.create_resource(TABLE, "Twice", {**ON_DEMAND, "TableName": "taken"}, stack_name="Main")
    assert raised.value.code == "ResourceInUseException"

    with pytest.raises(ProvisioningError, match="AttributeName is required"):
        aws.create_resource(
            TABLE, "NoTtlName", {**ON_DEMAND, "TimeToLiveSpecification": {"Enabled": True}}, stack_name="Main"
        )

    # A step failing after CreateTable leaves no table behind (protected or not).
    half_made = {
        **ON_DEMAND,
        "TableName": "half",
        "DeletionProtectionEnabled": True,
        # botocore rejects a period below its minimum of 1 day, after the table exists
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True, "RecoveryPeriodInDays": 0},
    }
    with pytest.raises(ProvisioningError, match="RecoveryPeriodInDays") as raised:
        aws.create_resource(TABLE, "HalfMade", half_made, stack_name="Main")
    assert raised.value.code == "ValidationError"
    assert aws.client("dynamodb").list_tables()["TableNames"] == ["taken"]


def test_reset_empties_every_backend(aws: LocalAws) -> None:
    aws.create_resource(TABLE, "StateTable", ON_DEMAND, stack_name="Main")
    aws.create_resource("AWS::SSM::Parameter", "Param", {"Type": "String", "Value": "v"}, stack_name="Main")
    assert aws.client("dynamodb").list_tables()["TableNames"]
    aws.reset()
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
    assert aws.client("ssm").describe_parameters()["Parameters"] == []


# --------------------------------------------------------------------------- SSM and S3


def test_ssm_parameters_named_or_generated(aws: LocalAws) -> None:
    ssm = aws.client("ssm")
    named = aws.create_resource(
        "AWS::SSM::Parameter",
        "Version",
        {"Name": "/assoc/version", "Type": "String", "Value": "3", "Tags": {"team": "euc"}, "Tier": "Standard"},
        stack_name="Main",
    )
    assert named.physical_id == "/assoc/version"
    assert named.attributes == {"Type": "String", "Value": "3"}
    assert ssm.get_parameter(Name="/assoc/version")["Parameter"]["Value"] == "3"
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/assoc/version")["TagList"]
    assert tags == [{"Key": "team", "Value": "euc"}]

    generated = aws.create_resource("AWS::SSM::Parameter", "Flag", {"Type": "String", "Value": "on"}, stack_name="Main")
    assert re.fullmatch(r"CFN-Flag-[A-Za-z]{12}", generated.physical_id)

    aws.delete_resource("AWS::SSM::Parameter", "/assoc/version")
    aws.delete_resource("AWS::SSM::Parameter", "/assoc/version")
    assert [p["Name"] for p in ssm.describe_parameters()["Parameters"]] == [generated.physical_id]

    with pytest.raises(ProvisioningError, match="Type and Value are required"):
        aws.create_resource("AWS::SSM::Parameter", "Empty", {"Type": "String"}, stack_name="Main")


def test_s3_buckets_named_like_cloudformation_and_not_deleted_while_full(aws: LocalAws) -> None:
    s3 = aws.client("s3")
    bucket = aws.create_resource(
        "AWS::S3::Bucket",
        "Artifacts",
        {
            "Tags": [{"Key": "k", "Value": "v"}],
            "VersioningConfiguration": {"Status": "Enabled"},
            "ObjectLockEnabled": False,
        },
        stack_name="Main-Stack",
    )
    name = bucket.physical_id
    assert re.fullmatch(r"main-stack-artifacts-[a-z0-9]{12}", name)
    assert bucket.attributes["Arn"] == f"arn:aws:s3:::{name}"
    assert bucket.attributes["RegionalDomainName"] == f"{name}.s3.us-east-1.amazonaws.com"
    assert bucket.ignored == ("ObjectLockEnabled",)
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert s3.get_bucket_tagging(Bucket=name)["TagSet"] == [{"Key": "k", "Value": "v"}]

    long = aws.create_resource("AWS::S3::Bucket", "B" * 80, {}, stack_name="S" * 80)
    assert len(long.physical_id) == 63

    s3.put_object(Bucket=name, Key="asset.zip", Body=b"zip")
    with pytest.raises(ProvisioningError) as raised:
        aws.delete_resource("AWS::S3::Bucket", name)
    assert raised.value.code == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="asset.zip")
    for version in s3.list_object_versions(Bucket=name).get("DeleteMarkers", []) + s3.list_object_versions(
        Bucket=name
    ).get("Versions", []):
        s3.delete_object(Bucket=name, Key=version["Key"], VersionId=version["VersionId"])
    aws.delete_resource("AWS::S3::Bucket", name)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [long.physical_id]


def test_unknown_resource_types_are_named_in_the_error(aws: LocalAws) -> None:
    assert sorted(PROVISIONED_TYPES) == ["AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SSM::Parameter"]
    assert LocalAws.provisions("AWS::S3::Bucket")
    assert not LocalAws.provisions("AWS::SQS::Queue")
    with pytest.raises(UnsupportedResourceType, match=r"'AWS::SQS::Queue'") as raised:
        aws.create_resource("AWS::SQS::Queue", "Queue", {}, stack_name="Main")
    assert raised.value.resource_type == "AWS::SQS::Queue"
    with pytest.raises(UnsupportedResourceType, match=r"'AWS::Lambda::Function'"):
        aws.delete_resource("AWS::Lambda::Function", "fn")


# --------------------------------------------------------------------------- the server


def test_requests_leave_no_werkzeug_request_log(aws: LocalAws, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="werkzeug")
    aws.client("dynamodb").list_tables()
    with pytest.raises(ClientError):
        aws.client("dynamodb").describe_table(TableName="missing")
    assert [r for r in caplog.records if r.name == "werkzeug"] == []


def test_client_env_sends_a_separate_process_to_moto_with_service_endpoints_winning(aws: LocalAws) -> None:
    aws.create_resource(TABLE, "StateTable", {**ON_DEMAND, "TableName": "from-parent"}, stack_name="Main")
    registry = StackRegistry()
    stack_id = "arn:aws:cloudformation:us-east-1:123456789012:stack/Main/1"
    registry.create_stack(stack_id, "Main")
    env = aws.client_env()
    assert env["AWS_ENDPOINT_URL"] == aws.endpoint_url
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    code = """if True:
        import boto3, sys
        dynamodb = boto3.client("dynamodb")
        dynamodb.put_item(TableName="from-parent", Item={"pk": {"S": "child"}, "sk": {"S": "1"}})
        print(dynamodb.list_tables()["TableNames"])
        print(boto3.client("sts").get_caller_identity()["Account"])
        print(boto3.client("cloudformation").describe_stacks(StackName=sys.argv[1])["Stacks"][0]["StackStatus"])
    """
    with CloudFormationApi(registry) as cloudformation:
        result = run_child(code, child_env(env, cloudformation.client_env()), stack_id)
    assert result.stdout.splitlines() == ["['from-parent']", ACCOUNT_ID, "CREATE_IN_PROGRESS"]
    item = aws.client("dynamodb").get_item(TableName="from-parent", Key={"pk": {"S": "child"}, "sk": {"S": "1"}})
    assert "Item" in item


def test_importing_needs_no_moto_and_a_missing_moto_names_the_extra() -> None:
    code = """if True:
        import sys
        import constructs_lib.testing.aws_services as aws_services
        assert "moto" not in sys.modules, "moto imported eagerly"
        sys.modules["moto"] = None  # as if moto were not installed
        try:
            aws_services.LocalAws().start()
        except ImportError as error:
            print(error)
    """
    result = run_child(code, child_env())
    assert "pip install 'appstream-user-stack-association[testing]'" in result.stdout


def test_lifecycle_errors(local_aws: LocalAws) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        local_aws.start()
    stopped = LocalAws()
    stopped.stop()  # stopping a server never started is harmless
    with pytest.raises(RuntimeError, match="not running"):
        _ = stopped.endpoint_url
