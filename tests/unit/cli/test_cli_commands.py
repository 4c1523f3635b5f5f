"""The command line as a user runs it: ``python -m constructs_lib plan | drift | report``.

One small CDK app is synthesized for the module (four stacks, one of them in a stage, two sharing a
state table). Each test plays the deployments it needs with the real handler (the state store is
moto's DynamoDB, CloudFormation the testing kit's API over a StackRegistry, AppStream the fake),
changes AppStream by hand where the test says so, and runs the command line in a separate process
whose boto3 reaches those services through ``AWS_ENDPOINT_URL_*``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_appstream as appstream
from aws_cdk import aws_ssm as ssm

from appstream_handler import rules
from constructs_lib import UserStackAssociation
from tests.helpers.world import StackDriver, World, running_world
from tests.unit.cli.cli_harness import USERS, Cli, deploy

ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GINA, ROOT = USERS.values()
ANSI = re.compile(r"\x1b\[")


@dataclass(frozen=True)
class App:
    """The synthesized app: where it is, and each stack's template by stack name."""

    outdir: Path
    templates: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    outdir = tmp_path_factory.mktemp("app") / "cdk.out"
    root = cdk.App(outdir=str(outdir))
    first = cdk.Stack(root, "CliFirst")
    UserStackAssociation(first, "Team", stack_name="lab", user_names=[ALICE, BOB, ERIN])
    UserStackAssociation(
        first,
        "Dynamic",
        stack_name=ssm.StringParameter.value_for_string_parameter(first, "/appstream/stack-name"),
        user_names=[GINA],
    )
    workspaces = cdk.Stack(root, "CliWorkspaces")
    analysts = appstream.CfnStack(workspaces, "Stack", name="analysts")
    admin_stack = cdk.CfnParameter(workspaces, "AdminStack", default="admins")
    UserStackAssociation(workspaces, "Analysts", stack_name=analysts.ref, user_names=[ALICE, BOB, CAROL, GINA])
    UserStackAssociation(
        workspaces, "Admins", stack_name=admin_stack.value_as_string, user_names=[ROOT], send_email_notification=True
    )
    stage = cdk.Stage(root, "Prod")
    shared = cdk.Stack(stage, "Shared")
    team = UserStackAssociation(shared, "Team", stack_name="training", user_names=[CAROL])
    consumer = cdk.Stack(stage, "Consumer")
    UserStackAssociation(
        consumer, "Team", stack_name="training", user_names=[CAROL, DAVE], state_table=team.state_table
    )
    root.synth()
    templates = {}
    for stack in (first, workspaces, shared, consumer):
        directory = Path(cdk.Stage.of(stack).outdir)  # type: ignore[union-attr]
        templates[stack.stack_name] = json.loads((directory / stack.template_file).read_text())
    return App(outdir, templates)


@pytest.fixture(scope="module")
def shared_world() -> Iterator[World]:
    with running_world() as world:
        yield world


@pytest.fixture
def world(shared_world: World) -> World:
    shared_world.reset()
    shared_world.seed(stacks=["lab", "analysts", "admins", "training"], users=list(USERS.values()))
    return shared_world


@pytest.fixture
def cli(world: World, app: App) -> Cli:
    return Cli(world, app.outdir.parent)


def resource(plan: dict[str, Any], stack: str, path: str) -> dict[str, Any]:
    """One resource of a ``plan --json`` document, by stack and construct path."""
    found: dict[str, Any]
    (found,) = [
        item
        for entry in plan["stacks"]
        if entry["stack"] == stack
        for item in entry["resources"]
        if item["construct_path"] == path
    ]
    return found


def actions(item: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(action, stage) -> users, from a resource of ``plan --json --show-users``."""
    found: dict[tuple[str, str], list[str]] = {}
    for action in item["actions"]:
        found.setdefault((action["action"], action["stage"]), []).extend(action["users"])
    return found


def other_stack_claims(world: World, users: list[str], appstream_stack: str = "analysts") -> StackDriver:
    """Another CloudFormation stack, outside the app, that shares the table and declares ``users``."""
    other = world.stack("CliOther")
    assert other.begin().status == "SUCCESS"
    assert other.create("Team", appstream_stack, users, ConstructPath="CliOther/Team").status == "SUCCESS"
    other.phase("CREATE_COMPLETE")
    return other


# -- plan ----------------------------------------------------------------------------------------


def test_plan_of_a_first_deployment_associates_adopts_and_says_what_it_cannot_resolve(world: World, cli: Cli) -> None:
    world.seed(associated={"lab": [ERIN]})
    ran = cli.run("plan", "CliFirst", "--json", "--show-users")
    assert ran.code == 0, ran.err
    plan = ran.json()
    (stack,) = plan["stacks"]
    assert (stack["deployed"], stack["state_table"]["name"]) == (False, None)
    team = resource(plan, "CliFirst", "CliFirst/Team")
    assert (team["event"], team["appstream_stack"], team["authentication_type"]) == ("create", "lab", "USERPOOL")
    assert actions(team) == {("associate", "deploy"): [ALICE, BOB], ("adopt", "deploy"): [ERIN]}
    assert [a["email"] for a in team["actions"] if a["action"] == "associate"] == [False]
    dynamic = resource(plan, "CliFirst", "CliFirst/Dynamic")
    assert dynamic["event"] == "unresolved"
    assert dynamic["actions"] == []
    assert "an SSM parameter" in dynamic["notes"][0]
    assert world.associations() == {("lab", ERIN), *()}, "plan changed AppStream"


def test_plan_of_an_update_adds_adopts_moves_removes_and_keeps_what_another_stack_claims(
    world: World, cli: Cli, app: App
) -> None:
    world.seed(associated={"analysts": [BOB]})  # associated by hand, before anything declared it
    deploy(
        world,
        app.templates["CliWorkspaces"],
        "CliWorkspaces",
        {"CliWorkspaces/Analysts": [ALICE, DAVE]},
        extra={"OldTeam": ("analysts", [CAROL, FRANK])},  # a construct since removed from the app
    )
    other_stack_claims(world, [DAVE])
    before = world.associations()
    items_before = world.items()
    world.appstream.reset_calls()
    world.cloudformation.reset_calls()

    ran = cli.run("plan", "CliWorkspaces", "--json", "--show-users")
    assert ran.code == 0, ran.err
    plan = ran.json()
    (stack,) = plan["stacks"]
    assert (stack["deployed"], stack["status"], stack["state_table"]["name"]) == (True, "CREATE_COMPLETE", "state")
    assert stack["epoch"] == {"from": 1, "to": 2}
    analysts = resource(plan, "CliWorkspaces", "CliWorkspaces/Analysts")
    assert (analysts["event"], analysts["appstream_stack"]) == ("update", "analysts")  # Ref of the CfnStack
    assert actions(analysts) == {
        ("associate", "deploy"): [GINA],
        ("adopt", "deploy"): [BOB],
        ("shared", "deploy"): [CAROL],  # moves in from OldTeam: never removed in between
        ("stays", "commit"): [DAVE],  # dropped here, still declared by the other stack
    }
    assert analysts["unchanged"] == 1  # alice
    stays = next(a for a in analysts["actions"] if a["action"] == "stays")
    assert stays["declared_by"] == ["stack CliOther (CliOther/Team)"]
    admins = resource(plan, "CliWorkspaces", "CliWorkspaces/Admins")
    assert (admins["event"], admins["appstream_stack"]) == ("create", "admins")  # the parameter's default
    assert actions(admins) == {("associate", "deploy"): [ROOT]}
    assert [a["email"] for a in admins["actions"]] == [True]
    old = resource(plan, "CliWorkspaces", "CliWorkspaces/OldTeam")
    assert old["event"] == "delete"
    assert actions(old) == {("disassociate", "cleanup"): [FRANK], ("stays", "cleanup"): [CAROL]}
    assert plan["totals"]["associate"] == 2
    assert plan["totals"]["emails"] == 1
    assert plan["totals"]["disassociate"] == 1

    # Read-only: AppStream and the store are as they were.
    assert world.associations() == before
    assert world.items() == items_before
    assert {call.operation for call in world.appstream.calls} == {"DescribeUserStackAssociations"}
    assert {call.operation for call in world.cloudformation.calls} == {"DescribeStacks", "ListStackResources"}


def test_plan_text_shows_counts_and_hides_names_unless_asked(world: World, cli: Cli) -> None:
    world.seed(associated={"lab": [ERIN]})
    ran = cli.run("plan", "CliFirst")
    assert ran.code == 0, ran.err
    assert "CliFirst/Team → lab (USERPOOL): created" in ran.out
    assert re.search(r"associate\s+2\s+now\s+no e-mail", ran.out), ran.out
    assert re.search(r"adopt\s+1\s+now", ran.out), ran.out
    assert not any(user in ran.out for user in USERS.values())
    assert "--show-users" in ran.out
    assert not ANSI.search(ran.out + ran.err), "colour or progress codes on a pipe"
    assert ran.err == ""

    shown = cli.run("plan", "CliFirst", "--show-users")
    assert f"{ALICE}, {BOB}" in shown.out
    assert ERIN in shown.out

    document = cli.run("plan", "CliFirst", "--json")
    assert not any(user in document.out for user in USERS.values())
    assert all("users" not in action for action in resource(document.json(), "CliFirst", "CliFirst/Team")["actions"])


def test_plan_of_a_stack_that_shares_another_stacks_table_reads_it_through_the_import(
    world: World, cli: Cli, app: App
) -> None:
    deploy(world, app.templates["Prod-Shared"], "Prod-Shared", {"Prod/Shared/Team": [CAROL]})
    ran = cli.run("plan", "Prod/Consumer", "--json", "--show-users")
    assert ran.code == 0, ran.err
    (stack,) = ran.json()["stacks"]
    assert stack["display_name"] == "Prod/Consumer"  # found in the stage's nested assembly
    assert stack["state_table"] == {"name": "state", "source": "shared, from stack Prod-Shared"}
    team = resource(ran.json(), "Prod-Consumer", "Prod/Consumer/Team")
    assert actions(team) == {("associate", "deploy"): [DAVE], ("shared", "deploy"): [CAROL]}
    shared = next(a for a in team["actions"] if a["action"] == "shared")
    assert shared["declared_by"] == ["stack Prod-Shared (Prod/Shared/Team)"]


def test_plan_of_an_unchanged_stack_sends_no_event_and_says_what_stays_missing(
    world: World, cli: Cli, app: App
) -> None:
    deploy(
        world,
        app.templates["CliWorkspaces"],
        "CliWorkspaces",
        {"CliWorkspaces/Analysts": [ALICE, BOB, CAROL, GINA], "CliWorkspaces/Admins": [ROOT]},
    )
    world.appstream.state.disassociate("analysts", GINA)  # by hand
    ran = cli.run("plan", "CliWorkspaces", "--json")
    assert ran.code == 0, ran.err
    (stack,) = ran.json()["stacks"]
    assert stack["changes"] is False
    assert stack["epoch"] is None
    analysts = resource(ran.json(), "CliWorkspaces", "CliWorkspaces/Analysts")
    assert (analysts["event"], analysts["actions"], analysts["unchanged"]) == ("none", [], 3)
    assert "1 declared association missing in AppStream" in analysts["notes"][0]
    assert GINA not in ran.out

    text = cli.run("plan", "CliWorkspaces")
    assert "no change: CloudFormation sends the associations no event" in text.out


def test_after_a_rollback_plan_settles_the_leftovers_first_and_drift_names_them(
    world: World, cli: Cli, app: App
) -> None:
    template = app.templates["CliWorkspaces"]
    driver = deploy(world, template, "CliWorkspaces", {"CliWorkspaces/Analysts": [ALICE, DAVE]})
    (logical_id,) = [
        lid
        for lid, item in template["Resources"].items()
        if item.get("Properties", {}).get("ConstructPath") == "CliWorkspaces/Analysts"
    ]
    # An update adds frank and drops dave; another resource fails; the marker's rollback runs, but the
    # association's own rollback Update never arrives (lost): frank stays associated, recorded as rolled back.
    driver.phase("UPDATE_IN_PROGRESS")
    assert driver.begin().status == "SUCCESS"
    assert (
        driver.update(logical_id, "analysts", [ALICE, FRANK], ConstructPath="CliWorkspaces/Analysts").status
        == "SUCCESS"
    )
    driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
    back = driver.event("Update", "Deployment", {"Generation": "before"}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE)
    assert driver.send(back).status == "SUCCESS"
    driver.phase("UPDATE_ROLLBACK_COMPLETE")
    assert ("analysts", FRANK) in world.associations()

    drift = cli.run("drift", "CliWorkspaces", "--json", "--show-users")
    assert drift.code == 1, drift.err
    (finding,) = drift.json()["tables"][0]["findings"]
    assert (finding["kind"], finding["users"]) == ("undeclared", [FRANK])
    assert "left by a rolled-back deployment" in finding["note"]

    plan = cli.run("plan", "CliWorkspaces", "--json", "--show-users")
    assert plan.code == 0, plan.err
    analysts = resource(plan.json(), "CliWorkspaces", "CliWorkspaces/Analysts")
    assert actions(analysts) == {
        ("disassociate", "leftover"): [FRANK],  # the rolled-back addition, withdrawn when the next deployment begins
        ("associate", "deploy"): [BOB, CAROL, GINA],
        ("disassociate", "commit"): [DAVE],  # the rolled-back removal was taken back; this deployment removes it again
    }


# -- drift ---------------------------------------------------------------------------------------


def test_drift_is_0_when_clean_and_1_for_removed_added_and_other_auth_type(world: World, cli: Cli, app: App) -> None:
    deploy(
        world,
        app.templates["CliWorkspaces"],
        "CliWorkspaces",
        {"CliWorkspaces/Analysts": [ALICE, BOB, CAROL, GINA], "CliWorkspaces/Admins": [ROOT]},
    )
    world.appstream.reset_calls()
    world.cloudformation.reset_calls()
    clean = cli.run("drift", "CliWorkspaces")
    assert clean.code == 0, clean.err + clean.out
    assert "No drift" in clean.out
    assert {call.operation for call in world.appstream.calls} == {"DescribeUserStackAssociations"}
    assert {call.operation for call in world.cloudformation.calls} == {"DescribeStacks", "ListStackResources"}

    world.appstream.state.disassociate("analysts", GINA)  # removed by hand
    world.appstream.state.associate("analysts", FRANK)  # granted by hand
    world.appstream.state.disassociate("analysts", CAROL)
    world.appstream.state.associate("analysts", CAROL, "SAML")  # declared USERPOOL, associated as SAML
    ran = cli.run("drift", "CliWorkspaces", "--json", "--show-users")
    assert ran.code == 1, ran.err
    document = ran.json()
    assert (document["drift"], document["findings"]) == (True, 3)
    (table,) = document["tables"]
    assert (table["state_table"], table["appstream_stacks"]) == ("state", ["admins", "analysts"])
    findings = {(f["kind"], f["authentication_type"], tuple(f["users"])): f for f in table["findings"]}
    assert set(findings) == {
        ("missing", "USERPOOL", (GINA,)),
        ("undeclared", "USERPOOL", (FRANK,)),
        ("auth-type", "USERPOOL", (CAROL,)),
    }
    assert findings["missing", "USERPOOL", (GINA,)]["declared_by"] == ["CliWorkspaces/Analysts"]
    assert findings["auth-type", "USERPOOL", (CAROL,)]["present_authentication_type"] == "SAML"

    text = cli.run("drift", "CliWorkspaces")
    assert text.code == 1
    assert re.search(r"missing in AppStream\s+1\s+declared by CliWorkspaces/Analysts", text.out), text.out
    assert re.search(r"not declared\s+1", text.out), text.out
    assert re.search(r"other auth type\s+1\s+associated as SAML, declared as USERPOOL by", text.out), text.out
    assert "Drift: 3 findings." in text.out
    assert not any(user in text.out for user in USERS.values())


def test_drift_through_the_assembly_finds_the_shared_table_and_every_claim(world: World, cli: Cli, app: App) -> None:
    deploy(world, app.templates["Prod-Shared"], "Prod-Shared", {"Prod/Shared/Team": [CAROL]})
    consumer = deploy(world, app.templates["Prod-Consumer"], "Prod-Consumer", {"Prod/Consumer/Team": [CAROL, DAVE]})
    ran = cli.run("drift", "--app", str(cli.cwd / "cdk.out"), "Prod/*")
    assert ran.code == 0, ran.err + ran.out
    assert "State table state (stacks Prod-Shared, Prod-Consumer)" in ran.out

    # The consumer's resource is deleted with its stack: carol stays (Prod-Shared still declares her), dave goes.
    consumer.phase("DELETE_IN_PROGRESS")
    assert consumer.delete(next(iter(consumer.physical_ids.keys() - {"Deployment"}))).status == "SUCCESS"
    assert world.associations() >= {("training", CAROL)}
    assert ("training", DAVE) not in world.associations()


@pytest.mark.slow
def test_drift_and_plan_errors_are_one_line_and_exit_2(world: World, cli: Cli, app: App) -> None:
    deploy(world, app.templates["CliWorkspaces"], "CliWorkspaces", {"CliWorkspaces/Admins": [ROOT]}, table="gone")
    cases: list[tuple[tuple[str, ...], dict[str, str | None], str]] = [
        (("drift", "CliWorkspaces"), {}, "state table gone not found in us-east-1: pass --table NAME"),
        (("drift", "NoSuchStack"), {}, "CloudFormation stack NoSuchStack does not exist in us-east-1"),
        (
            ("drift", "CliWorkspaces"),
            {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None},
            "no AWS credentials found",
        ),
        (  # AWS_REGION alone is honoured (boto3 by itself reads only AWS_DEFAULT_REGION)
            ("drift", "NoSuchStack"),
            {"AWS_DEFAULT_REGION": None, "AWS_REGION": "eu-west-1"},
            "CloudFormation stack NoSuchStack does not exist in eu-west-1",
        ),
        (("drift", "NoSuchStack"), {"AWS_DEFAULT_REGION": None, "AWS_REGION": None}, "no AWS region: set AWS_REGION"),
        (("plan", "--app", "missing.out"), {}, "no cloud assembly at missing.out: run `cdk synth` first"),
    ]
    for args, env, expected in cases:
        ran = cli.run(*args, env=cli.env(**env))
        assert ran.code == 2, (args, ran.out, ran.err)
        assert ran.err.count("\n") == 1, ran.err
        assert ran.err.startswith("appstream-associations: error: "), ran.err
        assert expected in ran.err, ran.err
        assert "Traceback" not in ran.err

    world.cloudformation.faults.fail_with("AccessDenied", status=403, operation="ListStackResources")
    denied = cli.run("drift", "CliWorkspaces")
    assert denied.code == 2
    assert "access denied: cloudformation:ListStackResources on CliWorkspaces in us-east-1" in denied.err
    assert denied.err.count("\n") == 1


# -- report --------------------------------------------------------------------------------------


def test_report_lists_every_user_with_what_manages_it_as_table_json_and_csv(world: World, cli: Cli, app: App) -> None:
    world.seed(associated={"analysts": [ERIN]})
    deploy(
        world,
        app.templates["CliWorkspaces"],
        "CliWorkspaces",
        {"CliWorkspaces/Analysts": [ALICE, ERIN]},  # erin existed before: adopted
    )
    world.appstream.state.associate("analysts", FRANK)  # by hand: unmanaged

    table = cli.run("report", "CliWorkspaces", env=cli.env(COLUMNS="200"))
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["AppStream", "stack", "User", "Auth", "Managed", "by", "Construct", "path", "Origin"]
    assert [line.split() for line in lines[1:4]] == [
        ["analysts", ALICE, "USERPOOL", "CliWorkspaces", "CliWorkspaces/Analysts", "created"],
        ["analysts", ERIN, "USERPOOL", "CliWorkspaces", "CliWorkspaces/Analysts", "adopted"],
        ["analysts", FRANK, "USERPOOL", "unmanaged"],
    ]
    assert "3 associations on 1 AppStream stack: 2 managed (1 adopted), 1 unmanaged." in table.out

    document = cli.run("report", "CliWorkspaces", "--json").json()
    (analysts,) = document["appstream_stacks"]
    users = {entry["user_name"]: entry for entry in analysts["users"]}
    assert (users[ALICE]["managed"], users[ALICE]["origin"]) == (True, "created")
    assert users[ERIN]["origin"] == "adopted"
    assert users[ERIN]["managed_by"] == [
        {
            "cloudformation_stack": "CliWorkspaces",
            "construct_path": "CliWorkspaces/Analysts",
            "logical_id": users[ERIN]["managed_by"][0]["logical_id"],
            "standing": "held",
        }
    ]
    assert (users[FRANK]["managed"], users[FRANK]["managed_by"]) == (False, [])

    csv_text = cli.run("report", "CliWorkspaces", "--csv").out
    csv = csv_text.splitlines()
    assert (
        csv[0]
        == "appstream_stack,user_name,authentication_type,managed,cloudformation_stack,construct_path,logical_id,origin"
    )
    assert csv[3] == f"analysts,{FRANK},USERPOOL,no,,,,"
    assert csv[2].startswith(f"analysts,{ERIN},USERPOOL,yes,CliWorkspaces,CliWorkspaces/Analysts,")
    assert csv[2].endswith(",adopted")

    # An AppStream stack named outright, read with the table alone (no CloudFormation stack named).
    alone = cli.run("report", "--table", "state", "--appstream-stack", "analysts", "--csv")
    assert alone.code == 0, alone.err
    assert alone.out == csv_text


def test_report_fits_the_terminal_width_and_summarises_long_lists(world: World, cli: Cli, app: App) -> None:
    many = [f"user{index:03d}@example.com" for index in range(25)]
    for name in many:
        world.appstream.state.add_user(name)
    deploy(world, app.templates["CliWorkspaces"], "CliWorkspaces", {"CliWorkspaces/Analysts": many})
    ran = cli.run("report", "CliWorkspaces", env=cli.env(COLUMNS="60"))
    assert ran.code == 0, ran.err
    assert max(len(line) for line in ran.out.splitlines()) <= 60, ran.out
    assert "user000@example.com" in ran.out  # names give way last
    assert "… 5 more" in ran.out
    assert "5 rows not shown: --full shows every row" in ran.out
    full = cli.run("report", "CliWorkspaces", "--full", env=cli.env(COLUMNS="60"))
    assert sum("example.com" in line for line in full.out.splitlines()) == 25


# -- terminals ------------------------------------------------------------------------------------


def test_colours_and_the_progress_line_only_on_a_terminal_and_never_with_no_color(
    world: World, cli: Cli, app: App
) -> None:
    deploy(world, app.templates["CliWorkspaces"], "CliWorkspaces", {"CliWorkspaces/Analysts": [ALICE]})
    world.appstream.state.associate("analysts", FRANK)
    coloured = cli.run_on_terminal("report", "CliWorkspaces")
    assert coloured.code == 0, coloured.err
    assert "\x1b[33munmanaged\x1b[0m" in coloured.out
    assert "\r\x1b[K" in coloured.err  # the progress line, erased
    assert "CloudFormation: reading stack CliWorkspaces …" in coloured.err

    plain = cli.run_on_terminal("report", "CliWorkspaces", env=cli.env(TERM="xterm", NO_COLOR="1"))
    assert plain.code == 0
    assert not ANSI.search(plain.out)
    assert "unmanaged" in plain.out

    piped = cli.run("report", "CliWorkspaces")
    assert not ANSI.search(piped.out + piped.err)
    assert piped.err == ""
