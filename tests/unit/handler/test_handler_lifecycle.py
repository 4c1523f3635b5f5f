"""A stateful model of whole deployments (hypothesis), played event by event through ``handle_event``.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` plays CloudFormation for one stack with up
to three association resources (R1, R2, R3) on two AppStream stacks: deploys that add, remove and
move users between resources and move a resource to the other AppStream stack, in any order of
events; failures (a user that does not exist, or "another resource failed" after any event) and
CloudFormation's rollbacks (an Update back with old and new properties swapped for every resource
whose Update was sent, a Delete of every resource the deploy created with the id it answered, the
marker's new id deleted in the cleanup); commits through the deployment marker; stack deletions
(then a new stack); duplicate deliveries of earlier events, between deploys and in the middle of
one; and associations made by hand outside CloudFormation.

The model is what the templates declare plus what exists outside CloudFormation:

* after each completed deploy, AppStream holds exactly the associations the resources declare
  plus those that existed outside and no completed deploy has declared (a completed deploy that
  declares one adopts it: from then on CloudFormation manages it);
* after each rollback, exactly what it held before the deploy;
* after a stack's deletion, exactly what exists outside;
* a duplicate delivery never changes AppStream and never calls it to change anything.

The lead's whole-stack model runs the same through the rehearsal (tests/e2e); this one is
in-process and fast. Settings: ``tests.helpers.fuzzing.stateful`` (a few short histories);
the ``slow`` test runs many longer ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import event as note
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from appstream_handler import rules
from appstream_handler.handler import Answer
from constructs_lib.testing.events import association_properties
from tests.helpers.calls import changing_calls, users
from tests.helpers.fuzzing import stateful, stateful_long
from tests.helpers.world import StackDriver, World

RESOURCES = ("R1", "R2", "R3")
APPSTREAM_STACKS = ("s1", "s2")
POOL = users(6)
GHOST = "ghost@example.com"
PAIRS = [(stack, user) for stack in APPSTREAM_STACKS for user in POOL]

Pair = tuple[str, str]


@dataclass(frozen=True)
class Declared:
    """What one resource declares: its AppStream stack and users."""

    stack: str
    users: frozenset[str]

    def pairs(self) -> set[Pair]:
        return {(self.stack, user) for user in self.users if user != GHOST}

    def properties(self) -> dict[str, Any]:
        return association_properties(self.stack, sorted(self.users))


Template = Mapping[str, Declared]


def declared(template: Template) -> set[Pair]:
    return set().union(*(item.pairs() for item in template.values())) if template else set()


@dataclass
class Sent:
    """One forward event of a deploy and its answer."""

    logical_id: str
    request_type: str
    answer: Answer
    new: dict[str, Any] = field(default_factory=dict)
    old: dict[str, Any] = field(default_factory=dict)


@st.composite
def templates(draw: st.DrawFn) -> dict[str, Declared]:
    """Disjoint users over up to three resources (the construct rejects a user declared twice)."""
    owners = {user: draw(st.sampled_from([None, *RESOURCES])) for user in POOL}
    template = {}
    for logical_id in RESOURCES:
        mine = frozenset(user for user, owner in owners.items() if owner == logical_id)
        if mine:
            template[logical_id] = Declared(draw(st.sampled_from(APPSTREAM_STACKS)), mine)
    return template


class Deployments(RuleBasedStateMachine):
    """CloudFormation and the world around one stack's association resources."""

    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        self.driver: StackDriver
        self.template: dict[str, Declared] = {}
        self.outside: set[Pair] = set()
        self.history: list[tuple[dict[str, Any], str]] = []
        self.fresh_stack = True

    # -------------------------------------------------------------------------------- setup

    @initialize(existing=st.sets(st.sampled_from(PAIRS), max_size=4))
    def account(self, existing: set[Pair]) -> None:
        world = self.world
        world.reset()
        world.seed(stacks=list(APPSTREAM_STACKS), users=POOL)
        for stack, user in existing:
            world.appstream.state.associate(stack, user)
        self.outside = set(existing)
        self.new_stack()

    def new_stack(self) -> None:
        self.driver = self.world.stack()
        self.template = {}
        self.fresh_stack = True

    # ------------------------------------------------------------------------------ helpers

    def send(self, event: dict[str, Any], **options: Any) -> Answer:
        answer = self.driver.send(event, **options)
        self.history.append((event, self.driver.stack_id))
        del self.history[:-40]
        return answer

    def expect(self, expected: set[Pair], when: str) -> None:
        held = self.world.associations()
        assert held == expected, f"{when}: missing {sorted(expected - held)}, extra {sorted(held - expected)}"

    def redeliver(self, data: st.DataObject) -> None:
        """Lambda delivers an earlier event once more: nothing changes."""
        if not self.history:
            return
        event, own = data.draw(st.sampled_from(self.history), label="redelivered")
        before = self.world.associations()
        self.world.appstream.reset_calls()
        answer = self.world.handle(event, own_stack_id=own)
        note(f"duplicate: {'refused' if answer.reason.startswith('Refused') else 'answered as before'}")
        assert changing_calls(self.world.appstream.calls) == [], "a duplicate changed AppStream"
        assert self.world.associations() == before

    def deliver_again_in_flight(self, event: dict[str, Any], answer: Answer) -> None:
        """Lambda delivers the event just answered again, before CloudFormation took the answer in."""
        verb = {"Create": "CREATE", "Update": "UPDATE", "Delete": "DELETE"}[event["RequestType"]]
        registry, stack, logical_id = self.world.registry, self.driver.stack_id, event["LogicalResourceId"]
        registry.set_resource(stack, logical_id, event["ResourceType"], f"{verb}_IN_PROGRESS")
        before = self.world.associations()
        self.world.appstream.reset_calls()
        again = self.world.handle(event, own_stack_id=stack)
        outcome = "COMPLETE" if answer.status == "SUCCESS" else "FAILED"
        registry.set_resource(stack, logical_id, event["ResourceType"], f"{verb}_{outcome}")
        note("duplicate: in flight")
        assert again == answer, "a duplicate delivery must get the first delivery's answer"
        assert self.world.appstream.calls == (), "a duplicate delivery calls AppStream"
        assert self.world.associations() == before

    # -------------------------------------------------------------------------------- rules

    @rule(
        new=templates(),
        failure=st.sampled_from([None, None, "ghost", "other"]),
        data=st.data(),
    )
    def deploy(self, new: dict[str, Declared], failure: str | None, data: st.DataObject) -> None:
        """One deployment: the marker, then Creates and Updates in some order; commit or roll back."""
        old = dict(self.template)
        forward = [
            logical_id for logical_id in RESOURCES if logical_id in new and new[logical_id] != old.get(logical_id)
        ]
        removed = [logical_id for logical_id in RESOURCES if logical_id in old and logical_id not in new]
        if not forward and not removed:
            note("deploy: nothing changed")
            return  # nothing changed: CloudFormation sends no event
        forward = data.draw(st.permutations(forward), label="order")
        fail_after = len(forward)
        if failure == "ghost" and forward:
            victim = data.draw(st.sampled_from(forward), label="ghost in")
            new = {**new, victim: Declared(new[victim].stack, new[victim].users | {GHOST})}
        elif failure == "other":
            fail_after = data.draw(st.integers(0, len(forward)), label="another resource fails after")
        before = self.world.associations()
        first = self.fresh_stack
        driver = self.driver
        driver.phase("CREATE_IN_PROGRESS" if first else "UPDATE_IN_PROGRESS")
        old_marker = driver.physical_ids.get("Deployment", "")
        marker = driver.event(
            "Update" if old_marker else "Create",
            "Deployment",
            {"Generation": uuid.uuid4().hex},
            resource_type=rules.DEPLOYMENT_RESOURCE_TYPE,
        )
        assert self.send(marker).status == "SUCCESS"
        driver.previous_marker = old_marker  # what the commit deletes
        new_marker = driver.physical_ids["Deployment"]
        self.fresh_stack = False

        sent: list[Sent] = []
        failed = failure == "other" and fail_after < len(forward)
        for logical_id in forward[:fail_after]:
            request_type = "Update" if logical_id in old else "Create"
            new_properties = new[logical_id].properties()
            old_properties = dict(driver.properties.get(logical_id, {})) if request_type == "Update" else {}
            event = driver.event(request_type, logical_id, new_properties, old=old_properties or None)
            answer = self.send(event)
            sent.append(Sent(logical_id, request_type, answer, dict(event["ResourceProperties"]), old_properties))
            duplicate = data.draw(st.sampled_from([None, None, "in flight", "earlier"]), label="duplicate now")
            if duplicate == "in flight":
                self.deliver_again_in_flight(event, answer)
            elif duplicate == "earlier":
                self.redeliver(data)
            if GHOST in new[logical_id].users:
                assert answer.status == "FAILED", "a user that does not exist must fail its event"
                failed = True
                break
            assert answer.status == "SUCCESS", (logical_id, answer.reason)

        if failed:
            self.roll_back(sent, first, old_marker, new_marker, data)
            self.expect(before, "after the rollback")
            note(f"deploy: rolled back ({'first' if first else 'update'}, {failure})")
            if first:
                self.new_stack()  # ROLLBACK_COMPLETE: the stack can only be deleted and created anew
            return

        if not first:
            driver.phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
            for logical_id in data.draw(st.permutations(removed), label="cleanup order"):
                answer = self.send(driver.event("Delete", logical_id))
                assert answer.status == "SUCCESS", (logical_id, answer.reason)
            assert driver.commit().status == "SUCCESS"
        driver.phase("CREATE_COMPLETE" if first else "UPDATE_COMPLETE")
        self.template = new
        self.expect(declared(new) | self.outside, "after the deploy")
        note(f"deploy: completed ({'first' if first else 'update'}, {len(removed)} removed)")
        if self.outside & declared(new):
            note("deploy: adopted an association that existed outside")
        self.outside -= declared(new)  # adopted: managed by CloudFormation from now on

    def roll_back(self, sent: list[Sent], first: bool, old_marker: str, new_marker: str, data: st.DataObject) -> None:
        driver = self.driver
        if first:
            driver.phase("ROLLBACK_IN_PROGRESS")
            for item in reversed(sent):
                event = driver.event("Delete", item.logical_id, item.new, physical_id=item.answer.physical_resource_id)
                assert self.send(event).status == "SUCCESS"
            marker = driver.event("Delete", "Deployment", {}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE)
            assert self.send(marker).status == "SUCCESS"
            driver.phase("ROLLBACK_COMPLETE")
            return
        driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
        steps: list[Any] = [item for item in sent if item.request_type == "Update"]
        if data.draw(st.booleans(), label="marker updated back"):
            steps.append("marker")
        for step in data.draw(st.permutations(steps), label="rollback order"):
            if step == "marker":
                event = driver.event(
                    "Update", "Deployment", {"Generation": "back"}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE
                )
            else:
                event = driver.event(
                    "Update", step.logical_id, step.old, old=step.new, physical_id=step.answer.physical_resource_id
                )
            answer = self.send(event)
            assert answer.status == "SUCCESS", answer.reason
        driver.phase("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
        for item in reversed([item for item in sent if item.request_type == "Create"]):
            event = driver.event("Delete", item.logical_id, item.new, physical_id=item.answer.physical_resource_id)
            assert self.send(event).status == "SUCCESS"
        marker = driver.event(
            "Delete", "Deployment", {}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE, physical_id=new_marker
        )
        assert self.send(marker).status == "SUCCESS"
        driver.physical_ids["Deployment"] = old_marker  # CloudFormation keeps the old marker
        self.world.registry.set_resource(
            driver.stack_id, "Deployment", rules.DEPLOYMENT_RESOURCE_TYPE, "UPDATE_COMPLETE", physical_id=old_marker
        )
        driver.phase("UPDATE_ROLLBACK_COMPLETE")

    @precondition(lambda self: not self.fresh_stack)
    @rule(data=st.data())
    def delete_stack(self, data: st.DataObject) -> None:
        """The stack is deleted: every association resource, then the marker it depends on."""
        driver = self.driver
        driver.phase("DELETE_IN_PROGRESS")
        for logical_id in data.draw(st.permutations(sorted(self.template)), label="delete order"):
            answer = self.send(driver.event("Delete", logical_id))
            assert answer.status == "SUCCESS", (logical_id, answer.reason)
        marker = driver.event("Delete", "Deployment", {}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE)
        assert self.send(marker).status == "SUCCESS"
        driver.phase("DELETE_COMPLETE")
        self.expect(set(self.outside), "after the stack's deletion")
        self.new_stack()

    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        """Between deploys, Lambda delivers an earlier event again."""
        self.redeliver(data)

    @rule(pair=st.sampled_from(PAIRS))
    def associate_by_hand(self, pair: Pair) -> None:
        """Someone associates a user outside CloudFormation."""
        if pair not in self.world.associations():
            self.world.appstream.state.associate(*pair)
            self.outside.add(pair)


def run(machine_settings: settings) -> None:
    run_state_machine_as_test(Deployments, settings=machine_settings)


def test_random_deployments_keep_appstream_equal_to_the_templates_plus_what_exists_outside(shared_world: World) -> None:
    Deployments.world = shared_world
    run(stateful)


@pytest.mark.slow
def test_many_long_histories_keep_appstream_equal_to_the_templates(shared_world: World) -> None:
    Deployments.world = shared_world
    run(stateful_long)
