"""The handler over whole CloudFormation paths, event by event, against real local services.

Each test plays one stack's deployments by hand (:class:`tests.helpers.world.StackDriver`): the
stack's phase, the resource's status, the events CloudFormation would send, in an order it can
send them. The handler runs in-process (``handle_event``) with real boto3 clients reaching the
AppStream fake, moto's DynamoDB and the testing kit's CloudFormation API. The whole-template
rehearsal (tests/e2e) plays the same paths from synthesized apps; these pin each rule on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appstream_handler import rules
from appstream_handler.handler import Environment, handle_event
from constructs_lib.testing.events import association_properties
from tests.helpers.world import StackDriver, World, running_world

ALICE, BOB, CAROL, DAVE, ERIN = (f"{name}@example.com" for name in ("alice", "bob", "carol", "dave", "erin"))
USERS = [ALICE, BOB, CAROL, DAVE, ERIN]


@pytest.fixture(scope="module")
def shared_world() -> Iterator[World]:
    with running_world() as world:
        yield world


@pytest.fixture
def world(shared_world: World) -> World:
    shared_world.reset()
    shared_world.seed(stacks=["analysts", "admins"], users=USERS)
    return shared_world


def deployed(world: World, resources: dict[str, list[str]], *, stack: str = "analysts") -> StackDriver:
    """A stack whose first deployment created ``resources`` (logical id -> users) and succeeded."""
    driver = world.stack()
    assert driver.begin().status == "SUCCESS"
    for logical_id, users in resources.items():
        assert driver.create(logical_id, stack, users).status == "SUCCESS"
    driver.phase("CREATE_COMPLETE")
    return driver


def update_begins(driver: StackDriver) -> None:
    driver.phase("UPDATE_IN_PROGRESS")
    assert driver.begin().status == "SUCCESS"


def test_a_deployment_associates_what_it_declares_and_leaves_the_rest_alone(world: World) -> None:
    world.seed(associated={"admins": [ERIN]})
    deployed(world, {"Analysts": [ALICE, BOB]})
    assert world.associations() == {("analysts", ALICE), ("analysts", BOB), ("admins", ERIN)}


def test_an_unrelated_failure_rolls_the_first_deploy_back_and_pre_existing_access_stays(world: World) -> None:
    world.seed(associated={"analysts": [CAROL]})
    driver = world.stack()
    driver.begin()
    assert driver.create("Analysts", "analysts", [ALICE, CAROL]).status == "SUCCESS"
    # Another resource fails: CloudFormation rolls the new stack back.
    driver.phase("ROLLBACK_IN_PROGRESS")
    assert driver.delete("Analysts").status == "SUCCESS"
    assert (
        driver.send(driver.event("Delete", "Deployment", {}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE)).status
        == "SUCCESS"
    )
    assert world.associations() == {("analysts", CAROL)}


@pytest.mark.parametrize("physical_id", ["Main-Analysts-MADEUPBYCFN", "appstream-user-stack-association-failed:x"])
def test_a_rollback_delete_withdraws_the_grants_whatever_physical_id_it_carries(world: World, physical_id: str) -> None:
    world.seed(associated={"analysts": [CAROL]})
    driver = world.stack()
    driver.begin()
    driver.create("Analysts", "analysts", [ALICE, BOB, CAROL])
    driver.phase("ROLLBACK_IN_PROGRESS")
    answer = driver.send(driver.event("Delete", "Analysts", physical_id=physical_id))
    assert answer.status == "SUCCESS"
    assert answer.physical_resource_id == physical_id
    assert world.associations() == {("analysts", CAROL)}


def test_a_user_moved_between_two_associations_is_never_removed_in_either_order(world: World) -> None:
    for first in ("From", "To"):
        world.reset()
        world.seed(stacks=["analysts"], users=USERS)
        driver = deployed(world, {"From": [ALICE, BOB], "To": [CAROL]})
        update_begins(driver)
        moves = {"From": [ALICE], "To": [BOB, CAROL]}
        order = ["From", "To"] if first == "From" else ["To", "From"]
        for logical_id in order:
            assert driver.update(logical_id, "analysts", moves[logical_id]).status == "SUCCESS"
            assert ("analysts", BOB) in world.associations(), f"bob removed after {logical_id}'s update"
        assert driver.commit().status == "SUCCESS"
        assert world.associations() == {("analysts", ALICE), ("analysts", BOB), ("analysts", CAROL)}


def test_a_removed_user_goes_when_the_deployment_succeeds_not_before(world: World) -> None:
    driver = deployed(world, {"Analysts": [ALICE, BOB]})
    update_begins(driver)
    driver.update("Analysts", "analysts", [ALICE])
    assert ("analysts", BOB) in world.associations()
    driver.commit()
    assert world.associations() == {("analysts", ALICE)}


def test_a_renamed_construct_keeps_its_users(world: World) -> None:
    driver = deployed(world, {"Old": [ALICE, BOB]})
    update_begins(driver)
    assert driver.create("New", "analysts", [ALICE, BOB]).status == "SUCCESS"
    driver.phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    assert driver.delete("Old").status == "SUCCESS"
    assert driver.commit().status == "SUCCESS"
    assert world.associations() == {("analysts", ALICE), ("analysts", BOB)}


def test_lowering_shards_in_one_deploy_keeps_every_user(world: World) -> None:
    driver = deployed(world, {"Resource": [ALICE, BOB], "Shard1": [CAROL, DAVE]})
    update_begins(driver)
    driver.update("Resource", "analysts", [ALICE, BOB, CAROL, DAVE])
    driver.phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    assert driver.delete("Shard1").status == "SUCCESS"
    driver.commit()
    assert world.associations() == {("analysts", user) for user in (ALICE, BOB, CAROL, DAVE)}


def test_an_update_rollback_puts_back_exactly_what_was_there(world: World) -> None:
    world.seed(associated={"analysts": [ERIN]})
    driver = deployed(world, {"Analysts": [ALICE, BOB]})
    before = world.associations()
    update_begins(driver)
    # The failed update adds carol and erin (already there, outside CloudFormation) and drops bob.
    old = dict(driver.properties["Analysts"])
    assert driver.update("Analysts", "analysts", [ALICE, CAROL, ERIN]).status == "SUCCESS"
    new = dict(driver.properties["Analysts"])
    driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
    back = driver.event("Update", "Analysts", old, old=new)
    assert driver.send(back).status == "SUCCESS"
    assert world.associations() == before


def test_a_cancelled_update_and_its_rollback_update_leave_the_old_state(world: World) -> None:
    driver = deployed(world, {"Analysts": [ALICE]})
    update_begins(driver)
    old = dict(driver.properties["Analysts"])
    new = {**old, "UserNames": [ALICE, BOB]}
    # The forward Update never answers (cancelled); its rollback Update still arrives.
    assert driver.send(driver.event("Update", "Analysts", new, old=old)).status == "SUCCESS"
    driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
    assert driver.send(driver.event("Update", "Analysts", old, old=new)).status == "SUCCESS"
    assert world.associations() == {("analysts", ALICE)}


def test_deleting_the_stack_removes_adopted_associations_too(world: World) -> None:
    world.seed(associated={"analysts": [CAROL]})
    driver = deployed(world, {"Analysts": [ALICE, CAROL]})
    update_begins(driver)  # a later deployment: the first one has succeeded
    driver.phase("UPDATE_COMPLETE").phase("DELETE_IN_PROGRESS")
    assert driver.delete("Analysts").status == "SUCCESS"
    assert world.associations() == set()


def test_existing_associations_keep_means_never_removed(world: World) -> None:
    world.seed(associated={"analysts": [CAROL]})
    driver = world.stack()
    driver.begin()
    driver.create("Analysts", "analysts", [ALICE, CAROL], ExistingAssociations="keep")
    driver.phase("CREATE_COMPLETE").phase("DELETE_IN_PROGRESS")
    assert driver.delete("Analysts").status == "SUCCESS"
    assert world.associations() == {("analysts", CAROL)}


def test_the_same_request_again_is_answered_as_before_without_calls(world: World) -> None:
    driver = world.stack()
    driver.begin()
    event = driver.event("Create", "Analysts", association_properties("analysts", [ALICE]))
    first = driver.send(event)
    world.appstream.reset_calls()
    again = driver.send(event)
    assert again == first
    assert world.appstream.calls == ()


def test_a_duplicate_of_an_old_update_after_a_rollback_changes_nothing(world: World) -> None:
    driver = deployed(world, {"Analysts": [ALICE]})
    update_begins(driver)
    old = dict(driver.properties["Analysts"])
    new = {**old, "UserNames": [ALICE, BOB]}
    forward = driver.event("Update", "Analysts", new, old=old)
    driver.send(forward)
    driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
    driver.send(driver.event("Update", "Analysts", old, old=new))
    driver.phase("UPDATE_ROLLBACK_COMPLETE")
    # Lambda delivers the forward Update once more.
    assert driver.send(forward, in_progress=False).status == "SUCCESS"  # answered as the first time
    assert world.associations() == {("analysts", ALICE)}


def test_an_update_after_its_stack_finished_is_refused_without_calls(world: World) -> None:
    driver = deployed(world, {"Analysts": [ALICE]})
    world.appstream.reset_calls()
    late = driver.event("Update", "Analysts", association_properties("analysts", [ALICE, BOB]))
    answer = driver.send(late, in_progress=False)
    assert answer.status == "FAILED"
    assert "CREATE_COMPLETE" in answer.reason
    assert world.appstream.calls == ()
    assert world.associations() == {("analysts", ALICE)}


def test_an_event_of_another_stack_is_refused_without_calls(world: World) -> None:
    driver = world.stack()
    other = world.stack("Intruder")
    other.begin()
    mallory = "mallory@example.com"
    event = other.event("Create", "Grant", association_properties("admins", [mallory]))
    world.appstream.state.add_user(mallory)
    world.appstream.reset_calls()
    # Delivered to the function of stack Main.
    answer = handle_event(
        event,
        world.clients,
        300.0,
        environment=Environment(own_stack_id=driver.stack_id, table=world.table),
        clocks=world.clock.clocks,
    )
    assert answer.status == "FAILED"
    assert "Refused" in answer.reason
    assert world.appstream.calls == ()
    assert ("admins", mallory) not in world.associations()


def test_an_event_whose_resource_is_not_in_progress_is_refused(world: World) -> None:
    driver = world.stack()
    driver.begin()
    forged = driver.event("Create", "Ghost", association_properties("admins", [ALICE]))
    answer = driver.send(forged, in_progress=False)
    assert answer.status == "FAILED"
    assert world.associations() == set()


def test_a_delete_in_an_unknown_phase_withdraws_only_its_own_grants(world: World) -> None:
    world.seed(associated={"analysts": [CAROL]})
    driver = deployed(world, {"Analysts": [ALICE, CAROL]})
    driver.phase("IMPORT_IN_PROGRESS")
    assert driver.delete("Analysts").status == "SUCCESS"
    assert world.associations() == {("analysts", CAROL)}


def test_two_stacks_sharing_the_store_keep_a_user_both_declare(world: World) -> None:
    first = deployed(world, {"Analysts": [ALICE, BOB]})
    second = world.stack("Second")
    second.begin()
    assert second.create("Team", "analysts", [BOB]).status == "SUCCESS"
    second.phase("CREATE_COMPLETE")
    first.phase("DELETE_IN_PROGRESS")
    assert first.delete("Analysts").status == "SUCCESS"
    assert world.associations() == {("analysts", BOB)}
    second.phase("DELETE_IN_PROGRESS")
    second.delete("Team")
    assert world.associations() == set()


def test_a_user_created_in_the_same_deploy_is_waited_for(world: World) -> None:
    world.appstream.state.add_user("new@example.com", visible_after=4.0)
    driver = world.stack()
    driver.begin()
    answer = driver.create("Analysts", "analysts", [ALICE, "new@example.com"], AwaitUsers=["new@example.com"])
    assert answer.status == "SUCCESS", answer.reason
    assert ("analysts", "new@example.com") in world.associations()
    assert 4.0 <= world.clock.slept < rules.NOT_FOUND_WINDOW


def test_an_awaited_user_that_never_appears_fails_after_the_window_and_nothing_stays(world: World) -> None:
    driver = world.stack()
    driver.begin()
    answer = driver.create("Analysts", "analysts", [ALICE, "ghost@example.com"], AwaitUsers=["ghost@example.com"])
    assert answer.status == "FAILED"
    assert "USER_NAME_NOT_FOUND" in answer.reason
    assert "ghost@example.com" in answer.reason
    assert rules.NOT_FOUND_WINDOW <= world.clock.slept <= rules.NOT_FOUND_WINDOW + 10
    assert world.associations() == set()
    # The rollback Delete then finds nothing to withdraw.
    driver.phase("ROLLBACK_IN_PROGRESS")
    assert driver.send(driver.event("Delete", "Analysts", physical_id="x")).status == "SUCCESS"
    assert world.associations() == set()


def test_a_user_the_deploy_does_not_create_fails_at_once(world: World) -> None:
    driver = world.stack()
    driver.begin()
    answer = driver.create("Analysts", "analysts", [ALICE, "ghost@example.com"])
    assert answer.status == "FAILED"
    assert "USER_NAME_NOT_FOUND" in answer.reason
    assert world.clock.slept < 1.0
    assert world.associations() == set()


def test_a_stack_created_in_the_same_deploy_is_waited_for(world: World) -> None:
    world.appstream.state.add_stack("fresh", visible_after=3.0)
    driver = world.stack()
    driver.begin()
    answer = driver.create("Analysts", "fresh", [ALICE], AwaitStack=True)
    assert answer.status == "SUCCESS", answer.reason
    assert ("fresh", ALICE) in world.associations()


def test_two_resources_dropping_one_user_at_once_still_withdraw_it(world: World) -> None:
    """Found by the whole-stack model: both Deletes of a stack's deletion race on one association.

    The second reads the record while the first still claims it, then finds it changed: it must
    decide again and withdraw (AppStream's earlier answer is stale), not leave the user behind.
    """
    driver = deployed(world, {"Analysts": [ALICE, BOB], "Team": [BOB]})
    driver.phase("DELETE_IN_PROGRESS")
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    from appstream_handler.clients import client_config  # noqa: PLC0415
    from appstream_handler.handler import Clients, Environment, handle_event  # noqa: PLC0415

    tagged = client_config("appstream").merge(Config(user_agent_appid="second"))  # type: ignore[call-arg]
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    clients = Clients(
        appstream=session.client("appstream", endpoint_url=world.appstream.endpoint_url, config=tagged),
        cloudformation=world.clients.cloudformation,
        dynamodb=world.clients.dynamodb,
    )
    # The first Delete runs, whole, while the second one's Describe is being answered.
    world.appstream.faults.on_call(1, app_id="second", action=lambda: driver.delete("Analysts"))
    second = driver.event("Delete", "Team")
    world.registry.set_resource(driver.stack_id, "Team", rules.RESOURCE_TYPE, "DELETE_IN_PROGRESS")
    answer = handle_event(
        second,
        clients,
        300.0,
        environment=Environment(own_stack_id=driver.stack_id, table=world.table),
        clocks=world.clock.clocks,
    )
    assert answer.status == "SUCCESS", answer.reason
    assert world.appstream.faults.crash_errors() == ()
    assert world.associations() == set()
