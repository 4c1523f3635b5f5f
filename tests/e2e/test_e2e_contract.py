"""The contract, on whole templates: what the templates declare is what AppStream holds.

Every test synthesizes a small app with the construct (CfnStack, CfnUser, several associations,
and an unrelated resource), rehearses it through the bundled asset the way CloudFormation plays a
deploy (every resource, in parallel where independent), and checks AppStream:

1. after a successful deploy: exactly what the templates declare, plus what nobody declares;
2. after any rollback (another resource failing, a Create cancelled in flight, a crash, a lost
   answer, an Update rolled back): exactly what it held before the deploy;
3. a user moved between associations, a renamed construct, ``shards`` raised or lowered: never
   removed while something still declares it (no disassociation call at all);
4. stale and duplicate events change nothing; 5. foreign events change nothing;
6. users created in the same deploy are waited for; 7. adoption is explicit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_appstream as appstream
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ssm as ssm

from constructs_lib import UserStackAssociation
from constructs_lib.testing import AppStreamServer, AppStreamState, Rehearsal, ResponseServer, StackOperation
from constructs_lib.testing.appstream import BATCH_DISASSOCIATE
from constructs_lib.testing.events import cloudformation_event

STACK = "Workspaces"
ALICE, BOB, CAROL, DAVE, ERIN, FRAN = (f"{n}@example.com" for n in ("alice", "bob", "carol", "dave", "erin", "fran"))
POOL = [ALICE, BOB, DAVE, ERIN, FRAN]  # carol is created by the stack (CfnUser)
ASSOCIATION = "Custom::AppStreamUserStackAssociation"
PARAMETER = "AWS::SSM::Parameter"
PROVIDER_FUNCTION = "AppStreamUserStackAssociationProviderFunction"


@dataclass(frozen=True)
class Variant:
    """One version of the app: who each association declares, and what else it holds."""

    analysts: tuple[str, ...] = (ALICE, BOB, CAROL)
    team: tuple[str, ...] = (DAVE,)
    admins: tuple[str, ...] = (ERIN,)
    admins_id: str = "Admins"
    analysts_shards: int = 1
    keep_existing: bool = False
    extra_resource: bool = False
    """A second unrelated resource (an SSM parameter a test can make fail on Create)."""
    analysts_stack: str = "analysts"
    """The name of the AppStream stack the app creates (a new name replaces it)."""
    retain_analysts_stack: bool = False


def build(variant: Variant, outdir: Path) -> Path:
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, STACK)
    analysts_stack = appstream.CfnStack(stack, "AnalystsStack", name=variant.analysts_stack)
    if variant.retain_analysts_stack:
        analysts_stack.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
    appstream.CfnUser(stack, "Carol", user_name=CAROL, authentication_type="USERPOOL")
    UserStackAssociation(
        stack,
        "Analysts",
        stack_name=analysts_stack.ref,
        user_names=list(variant.analysts),
        shards=variant.analysts_shards,
    )
    if variant.team:
        UserStackAssociation(stack, "Team", stack_name="analysts", user_names=list(variant.team))
    UserStackAssociation(
        stack,
        variant.admins_id,
        stack_name="admins",
        user_names=list(variant.admins),
        existing_associations="keep" if variant.keep_existing else "adopt",
    )
    ssm.StringParameter(stack, "Database", string_value="unrelated")
    if variant.extra_resource:
        ssm.StringParameter(stack, "Queue", string_value="also unrelated")
    return Path(app.synth().directory)


class Apps:
    """Synthesized variants, built once per module (jsii is slow)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._built: dict[Variant, Path] = {}

    def __call__(self, variant: Variant = Variant()) -> Path:
        if variant not in self._built:
            self._built[variant] = build(variant, self._root / f"v{len(self._built)}")
        return self._built[variant]


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Apps:
    return Apps(tmp_path_factory.mktemp("contract"))


@pytest.fixture(scope="module")
def cfn() -> Iterator[ResponseServer]:
    with ResponseServer() as server:
        yield server


@dataclass
class Account:
    """One AppStream account (erin already has the admins stack, outside CloudFormation) and a rehearsal."""

    appstream: AppStreamServer
    rehearsal: Rehearsal

    def associations(self) -> set[tuple[str, str]]:
        return {(stack, user) for stack, user, _ in self.appstream.state.associations()}

    def deploy(self, assembly: Path) -> StackOperation:
        [operation] = self.rehearsal.deploy(assembly)
        return operation

    def disassociated(self) -> set[str]:
        """Every user any BatchDisassociateUserStack call named."""
        return {
            str(item["UserName"])
            for call in self.appstream.calls_for(BATCH_DISASSOCIATE)
            for item in call.body.get("UserStackAssociations", [])
        }


@pytest.fixture
def account(cfn: ResponseServer) -> Iterator[Account]:
    state = AppStreamState.from_seed(
        {
            "stacks": ["admins"],
            "users": [{"UserName": user} for user in POOL],
            "associations": [{"StackName": "admins", "UserName": ERIN}],
        }
    )
    with AppStreamServer(state) as server, Rehearsal(server, cfn, appstream_user_delay=2.0) as rehearsal:
        yield Account(server, rehearsal)


def declared(variant: Variant) -> set[tuple[str, str]]:
    return (
        {(variant.analysts_stack, u) for u in variant.analysts}
        | {("analysts", u) for u in variant.team}
        | {("admins", u) for u in variant.admins}
    )


# 1. A successful deploy -------------------------------------------------------------------------


def test_a_deploy_holds_exactly_what_is_declared_plus_what_nobody_declares(apps: Apps, account: Account) -> None:
    account.appstream.state.add_stack("other")
    account.appstream.state.associate("other", FRAN)
    operation = account.deploy(apps())
    assert operation.status == "CREATE_COMPLETE", operation
    # carol is created by the stack and visible to AppStream only 2 s later: waited for.
    assert account.associations() == declared(Variant()) | {("other", FRAN)}


# 2. Rollbacks -------------------------------------------------------------------------------------


def test_an_unrelated_failure_on_the_first_deploy_leaves_appstream_as_before(apps: Apps, account: Account) -> None:
    before = account.associations()
    assembly = apps()
    account.rehearsal.faults.fail(_logical_id(assembly, "Database", type_=PARAMETER), reason="not allowed here")
    operation = account.deploy(assembly)
    assert operation.status == "ROLLBACK_COMPLETE", operation
    assert account.associations() == before  # erin's association existed before: it stays


def test_a_create_cancelled_in_flight_leaves_appstream_as_before(apps: Apps, account: Account) -> None:
    before = account.associations()
    assembly = apps()
    analysts = _logical_id(assembly, "Analysts")
    # The parameter fails at the moment the Analysts Create makes its second AppStream call (its
    # first batch, after the Describe): CloudFormation cancels the Create and deletes it at once.
    database = _logical_id(assembly, "Database", type_=PARAMETER)
    account.rehearsal.faults.fail(database, reason="boom", when_called=(analysts, 2))
    operation = account.deploy(assembly)
    assert operation.status == "ROLLBACK_COMPLETE", operation
    cancelled = [e for e in operation.resource(analysts) if "cancelled" in e.reason]
    assert cancelled, operation
    assert account.associations() == before


def test_a_crash_after_the_first_batch_leaves_appstream_as_before(apps: Apps, account: Account) -> None:
    before = account.associations()
    assembly = apps()
    analysts = _logical_id(assembly, "Analysts")
    account.rehearsal.faults.crash(analysts, after_calls=2)  # the batch lands, the process dies
    operation = account.deploy(assembly)
    assert operation.status == "ROLLBACK_COMPLETE", operation
    assert account.associations() == before


def test_a_lost_answer_leaves_appstream_as_before(apps: Apps, account: Account) -> None:
    before = account.associations()
    assembly = apps()
    account.rehearsal.faults.lose_answer(_logical_id(assembly, "Team"), on="Create")
    operation = account.deploy(assembly)
    assert operation.status == "ROLLBACK_COMPLETE", operation
    assert account.associations() == before


def test_an_update_rolled_back_by_another_resource_leaves_appstream_as_before(apps: Apps, account: Account) -> None:
    assert account.deploy(apps()).status == "CREATE_COMPLETE"
    before = account.associations()
    changed = Variant(analysts=(ALICE, CAROL, FRAN), team=(DAVE, BOB), extra_resource=True)
    account.rehearsal.faults.fail(_logical_id(apps(changed), "Queue", type_=PARAMETER), reason="not allowed here")
    # The old Update of Team is delivered once more after the rollback: it changes nothing.
    team = _logical_id(apps(changed), "Team")
    account.rehearsal.faults.duplicate(team, on="Update", when="end")
    operation = account.deploy(apps(changed))
    assert operation.status == "UPDATE_ROLLBACK_COMPLETE", operation
    assert account.associations() == before


# 3. Several declarations of one association ------------------------------------------------------


def test_moving_users_and_renaming_a_construct_never_removes_them(apps: Apps, account: Account) -> None:
    assert account.deploy(apps()).status == "CREATE_COMPLETE"
    moved = Variant(analysts=(ALICE, CAROL), team=(DAVE, BOB), admins_id="Administrators")
    operation = account.deploy(apps(moved))
    assert operation.status == "UPDATE_COMPLETE", operation
    assert account.associations() == declared(moved)
    assert account.disassociated() == set()  # bob (moved) and erin (renamed construct) never went


def test_raising_and_lowering_shards_in_one_deploy_each_never_removes_a_user(apps: Apps, account: Account) -> None:
    many = (ALICE, BOB, CAROL, DAVE, FRAN)
    base = Variant(analysts=many, team=())
    assert account.deploy(apps(base)).status == "CREATE_COMPLETE"
    for shards in (4, 1):
        operation = account.deploy(apps(Variant(analysts=many, team=(), analysts_shards=shards)))
        assert operation.status == "UPDATE_COMPLETE", operation
        assert account.associations() == declared(base)
    assert account.disassociated() == set()


def test_a_new_name_for_the_appstream_stack_moves_the_users_and_leaves_the_old_stack_empty(
    apps: Apps, account: Account
) -> None:
    # The stack name is a token (CfnStack.ref) and the old stack is retained: the users must be
    # disassociated from it when the deploy succeeds (its batch policy, replaced rather than
    # updated, still allows that in the cleanup phase).
    before = Variant(team=(), retain_analysts_stack=True)
    assert account.deploy(apps(before)).status == "CREATE_COMPLETE"
    after = Variant(team=(), retain_analysts_stack=True, analysts_stack="analysts-two")
    operation = account.deploy(apps(after))
    assert operation.status == "UPDATE_COMPLETE", operation
    assert "analysts" in account.appstream.state.stacks()  # retained by CloudFormation
    assert account.associations() == declared(after)
    assert account.disassociated() == {ALICE, BOB, CAROL}
    # In the cleanup phase: the marker's Delete (which disassociates) before the old policy's.
    cleanup = [
        event.resource_type
        for event in operation.events
        if event.status == "DELETE_COMPLETE"
        and event.resource_type in ("AWS::IAM::RolePolicy", "Custom::AppStreamUserStackAssociationDeployment")
    ]
    assert cleanup == ["Custom::AppStreamUserStackAssociationDeployment", "AWS::IAM::RolePolicy"]


# 5. Foreign events ------------------------------------------------------------------------------


def test_an_event_of_another_stack_is_refused_and_changes_nothing(apps: Apps, account: Account) -> None:
    assembly = apps()
    assert account.deploy(assembly).status == "CREATE_COMPLETE"
    function = account.rehearsal.function(
        STACK, _logical_id(assembly, PROVIDER_FUNCTION, type_="AWS::Lambda::Function")
    )
    assert function is not None
    before = account.associations()
    account.appstream.reset_calls()
    event = cloudformation_event(
        "Create",
        {"StackName": "admins", "UserNames": [FRAN], "AuthenticationType": "USERPOOL"},
        stack="arn:aws:cloudformation:us-east-1:123456789012:stack/Intruder/00000000-0000-4000-8000-000000000000",
        logical_id="Grant",
    )
    invocation = account.rehearsal.process.invoke(function, event)
    assert invocation.response is not None
    assert invocation.response["Status"] == "FAILED"
    assert "Refused" in str(invocation.response["Reason"])
    assert account.associations() == before
    assert account.appstream.calls == ()


# 7. Adoption -------------------------------------------------------------------------------------


def test_deleting_the_stack_removes_what_it_adopted_unless_told_to_keep_it(apps: Apps, account: Account) -> None:
    assert account.deploy(apps()).status == "CREATE_COMPLETE"
    assert account.rehearsal.destroy(STACK).status == "DELETE_COMPLETE"
    assert account.associations() == set()  # erin was adopted: the stack managed her from then on
    account.appstream.state.associate("admins", ERIN)
    assert account.deploy(apps(Variant(keep_existing=True))).status == "CREATE_COMPLETE"
    assert account.rehearsal.destroy(STACK).status == "DELETE_COMPLETE"
    assert account.associations() == {("admins", ERIN)}


# Across stacks -----------------------------------------------------------------------------------


def test_two_stacks_sharing_a_state_store_keep_a_user_both_declare(tmp_path: Path, account: Account) -> None:
    app = cdk.App(outdir=str(tmp_path / "shared"))
    shared = cdk.Stack(app, "Shared")
    table = dynamodb.Table(
        shared,
        "State",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    for name, users in (("TeamA", [ALICE, BOB]), ("TeamB", [BOB, DAVE])):
        stack = cdk.Stack(app, name)
        UserStackAssociation(stack, "Users", stack_name="admins", user_names=users, state_table=table)
    assembly = Path(app.synth().directory)
    operations = account.rehearsal.deploy(assembly)
    assert [operation.status for operation in operations] == ["CREATE_COMPLETE"] * 3, operations
    assert account.rehearsal.destroy("TeamA").status == "DELETE_COMPLETE"
    # alice goes with TeamA; bob stays (TeamB declares him); erin existed before and nobody declares her.
    assert account.associations() == {("admins", BOB), ("admins", DAVE), ("admins", ERIN)}


def _logical_id(assembly: Path, construct: str, *, type_: str = ASSOCIATION) -> str:
    from constructs_lib.testing import read_assembly  # noqa: PLC0415

    [template] = [t for t in read_assembly(assembly) if t.stack_name == STACK]
    found = sorted(r.logical_id for r in template.of_type(type_) if r.logical_id.startswith(construct))
    assert found, (construct, type_)
    return found[0]
