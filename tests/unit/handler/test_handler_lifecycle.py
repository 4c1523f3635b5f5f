"""Model-based lifecycle test (issue 6): random CloudFormation histories against a model of AppStream.

A hypothesis state machine plays CloudFormation and the world around it: Creates, Updates and
Deletes of two custom resources (disjoint users, as the construct requires), failures (users
that do not exist, a refused AppStream call), CloudFormation's rollbacks (a Delete of the id a
failed Create answered with; an Update with old and new swapped after a failed Update), Deletes
of ids never handed out, and drift: associations made or removed outside CloudFormation, users
and stacks deleted and created.

The model is the set of associations AppStream should hold. A resource owns what it declares:

* Create, SUCCESS: model | declared (associations that existed before are kept, and stay);
* Update old -> new, SUCCESS: (model | new) - (old - new) (an Update with unchanged
  associations makes no call at all, so does not repair drift either);
* Delete, SUCCESS: model - declared, i.e. the pre-existing associations minus those the deleted
  resource declared; a Delete of an id no successful Create returned changes nothing;
* FAILED, any event: the model is unchanged (exactly the state before the event).

A rollback is modelled as the event CloudFormation sends: after a failed Update, an Update from
the failed properties back to the old ones, which by the rule above also removes associations
that existed before and that only the failed properties declared (CloudFormation does not mark
a rollback, and withdrawing what a template no longer declares is the safe reading); that limit
is pinned by ``test_rollback_of_a_failed_update_removes_what_only_the_failed_template_declared``.

The expected status is predicted too: an event fails when one of the associations it must add
cannot be made (no such stack or user-pool user), or when the refused call is one it makes;
a Delete never fails because something was already gone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from conftest import cfn_event, properties, seed
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from constructs_lib.testing import BATCH_ASSOCIATE, BATCH_DISASSOCIATE, AppStreamServer

Assoc = tuple[str, str, str]
CREATED_PREFIX = "appstream-user-stack-association:"
FAILED_PREFIX = "appstream-user-stack-association-failed:"
STACKS = ("demo", "other")
CANDIDATES = {
    "Alpha": [
        "a1@example.com",
        "ü-a2@exämple.org",
        "o'a3@example.com",
        "a4+tag@example.com",
        "a5@例子.公司",
        "ghost-a@example.com",
    ],
    "Beta": ["b1@example.com", "b2!#$%@example.com", "b3@example.com", "ghost-b@example.com"],
}
BULK = [f"bulk{index:03d}@example.com" for index in range(30)]  # Alpha may declare these too: two batches
POOL = [name for names in CANDIDATES.values() for name in names if not name.startswith("ghost")] + BULK
EVERYONE = sorted({*POOL, "ghost-a@example.com", "ghost-b@example.com"})
REFUSED = "OperationNotPermittedException"


@dataclass
class Resource:
    physical_id: str
    props: dict[str, Any]
    declared: frozenset[Assoc]


def declared_by(props: dict[str, Any]) -> frozenset[Assoc]:
    return frozenset((props["StackName"], name, props["AuthenticationType"]) for name in props["UserNames"])


class Lifecycle(RuleBasedStateMachine):
    server: ClassVar[AppStreamServer]
    invoke: ClassVar[Any]

    def __init__(self) -> None:
        super().__init__()
        self.server.reset()
        seed(self.server, stacks=list(STACKS), users=POOL)
        self.stacks = set(STACKS)
        self.pool = set(POOL)
        self.model: set[Assoc] = set()
        self.resources: dict[str, Resource] = {}
        self.never_seen_deletes = 0

    # ---------------------------------------------------------------------- the model

    def feasible(self, association: Assoc) -> bool:
        stack, user, auth = association
        return stack in self.stacks and (auth != "USERPOOL" or user in self.pool)

    def send(
        self,
        request_type: str,
        props: dict[str, Any],
        *,
        add: frozenset[Assoc],
        remove: frozenset[Assoc],
        refuse: str | None = None,
        old: dict[str, Any] | None = None,
        physical_id: str | None = None,
        logical_id: str,
    ) -> Any:
        """Send one event; check status and calls against the model; update the model; return the answer."""
        to_add = add - self.model
        to_remove = remove & self.model
        if not all(self.feasible(association) for association in to_add):
            refuse = None  # one failure at a time: an injected refusal could hit the undo
            expected = "FAILED"
        elif (refuse == BATCH_ASSOCIATE and to_add) or (refuse == BATCH_DISASSOCIATE and to_remove):
            expected = "FAILED"
        else:
            expected = "SUCCESS"
        if refuse is not None:
            self.server.faults.fail_with(REFUSED, operation=refuse)
        self.server.reset_calls()
        try:
            answer = self.invoke(
                cfn_event(request_type, props, old=old, physical_id=physical_id, logical_id=logical_id)
            )
        finally:
            self.server.faults.clear()
        assert answer.status == expected, (request_type, answer.body, sorted(to_add), sorted(to_remove), refuse)
        if expected == "SUCCESS":
            self.model = (self.model | to_add) - to_remove
        elif refuse is not None:
            assert REFUSED in answer.reason
        assert self.server.state.associations() == self.model
        return answer

    # ------------------------------------------------------------------------- events

    def _props(self, data: st.DataObject, logical_id: str) -> dict[str, Any]:
        real = [name for name in CANDIDATES[logical_id] if not name.startswith("ghost")]
        names = data.draw(st.lists(st.sampled_from(real), min_size=1, unique=True), label="users")
        if data.draw(st.sampled_from([False] * 5 + [True]), label="with a ghost"):
            names.append(next(name for name in CANDIDATES[logical_id] if name.startswith("ghost")))
        if logical_id == "Alpha" and data.draw(st.sampled_from([False, False, False, True]), label="bulk"):
            names += BULK
        stack = data.draw(st.sampled_from(["demo", "demo", "other"]), label="stack")
        auth = data.draw(st.sampled_from(["USERPOOL", "USERPOOL", "SAML"]), label="auth")
        return properties(stack, names, auth=auth, concurrency=data.draw(st.integers(1, 4), label="concurrency"))

    refusals = st.sampled_from([None, None, None, BATCH_ASSOCIATE, BATCH_DISASSOCIATE])

    def absent(self) -> list[str]:
        return [logical_id for logical_id in sorted(CANDIDATES) if logical_id not in self.resources]

    @precondition(lambda self: self.absent())
    @rule(data=st.data(), refuse=refusals)
    def create(self, data: st.DataObject, refuse: str | None) -> None:
        logical_id = data.draw(st.sampled_from(self.absent()), label="logical id")
        props = self._props(data, logical_id)
        declared = declared_by(props)
        answer = self.send("Create", props, add=declared, remove=frozenset(), refuse=refuse, logical_id=logical_id)
        if answer.status == "SUCCESS":
            assert answer.physical_id.startswith(CREATED_PREFIX)
            self.resources[logical_id] = Resource(answer.physical_id, props, declared)
            return
        assert answer.physical_id.startswith(FAILED_PREFIX)
        # CloudFormation rolls back: a Delete of the id the failed Create answered with.
        rollback = self.send(
            "Delete", props, add=frozenset(), remove=frozenset(), physical_id=answer.physical_id, logical_id=logical_id
        )
        assert rollback.status == "SUCCESS"
        assert rollback.physical_id == answer.physical_id
        assert self.server.calls == ()

    @precondition(lambda self: self.resources)
    @rule(data=st.data(), refuse=refusals)
    def update(self, data: st.DataObject, refuse: str | None) -> None:
        logical_id = data.draw(st.sampled_from(sorted(self.resources)), label="logical id")
        resource = self.resources[logical_id]
        new = self._props(data, logical_id)
        if data.draw(st.sampled_from([False] * 4 + [True]), label="same associations"):
            new = {**resource.props, "MaxConcurrency": new["MaxConcurrency"]}
        answer = self._update(logical_id, resource, new, resource.props, refuse)
        if answer.status == "SUCCESS":
            resource.props, resource.declared = new, declared_by(new)
            return
        # CloudFormation rolls back: the same Update with old and new properties swapped.
        self._update(logical_id, resource, resource.props, new, None)

    def _update(
        self, logical_id: str, resource: Resource, new: dict[str, Any], old: dict[str, Any], refuse: str | None
    ) -> Any:
        if declared_by(new) == declared_by(old):
            answer = self.send(
                "Update",
                new,
                add=frozenset(),
                remove=frozenset(),
                refuse=refuse,
                old=old,
                physical_id=resource.physical_id,
                logical_id=logical_id,
            )
            assert answer.status == "SUCCESS"
            assert self.server.calls == ()
        else:
            answer = self.send(
                "Update",
                new,
                add=declared_by(new),
                remove=declared_by(old) - declared_by(new),
                refuse=refuse,
                old=old,
                physical_id=resource.physical_id,
                logical_id=logical_id,
            )
        assert answer.physical_id == resource.physical_id  # in place, never a replacement
        return answer

    @precondition(lambda self: self.resources)
    @rule(data=st.data(), refuse=st.sampled_from([None, None, None, BATCH_DISASSOCIATE]))
    def delete(self, data: st.DataObject, refuse: str | None) -> None:
        logical_id = data.draw(st.sampled_from(sorted(self.resources)), label="logical id")
        resource = self.resources[logical_id]
        answer = self.send(
            "Delete",
            resource.props,
            add=frozenset(),
            remove=resource.declared,
            refuse=refuse,
            physical_id=resource.physical_id,
            logical_id=logical_id,
        )
        assert answer.physical_id == resource.physical_id
        if answer.status == "SUCCESS":
            del self.resources[logical_id]

    @precondition(lambda self: self.never_seen_deletes < 2)
    @rule(
        logical_id=st.sampled_from(sorted(CANDIDATES)),
        data=st.data(),
        physical_id=st.one_of(st.just("Main_Alpha_ABCD1234"), st.uuids().map(str), st.just(FAILED_PREFIX + "0" * 24)),
    )
    def delete_never_seen_id(self, logical_id: str, data: st.DataObject, physical_id: str) -> None:
        """aws-cdk#26139: CloudFormation may delete an id it never got from this handler."""
        self.never_seen_deletes += 1
        props = self._props(data, logical_id)
        answer = self.send(
            "Delete", props, add=frozenset(), remove=frozenset(), physical_id=physical_id, logical_id=logical_id
        )
        assert answer.status == "SUCCESS"
        assert answer.physical_id == physical_id
        assert self.server.calls == ()

    # -------------------------------------------------------------------------- drift

    @rule(
        kind=st.sampled_from(
            ["associate", "associate", "disassociate", "delete user", "create user", "delete stack", "create stack"]
        ),
        stack=st.sampled_from(STACKS),
        user=st.sampled_from(EVERYONE),
        auth=st.sampled_from(["USERPOOL", "SAML"]),
        data=st.data(),
    )
    def drift(self, kind: str, stack: str, user: str, auth: str, data: st.DataObject) -> None:
        """Something changes outside CloudFormation."""
        state = self.server.state
        if kind == "associate" and self.feasible((stack, user, auth)):
            state.associate(stack, user, auth)
            self.model.add((stack, user, auth))
        elif kind == "disassociate" and self.model:
            association = data.draw(st.sampled_from(sorted(self.model)), label="association")
            state.disassociate(*association)
            self.model.discard(association)
        elif kind == "delete user":
            state.remove_user(user)
            self.pool.discard(user)
            self.model = {a for a in self.model if a[1:] != (user, "USERPOOL")}
        elif kind == "create user":
            state.add_user(user)
            self.pool.add(user)
        elif kind == "delete stack":
            state.remove_stack(stack)
            self.stacks.discard(stack)
            self.model = {a for a in self.model if a[0] != stack}
        elif kind == "create stack":
            state.add_stack(stack)
            self.stacks.add(stack)

    @invariant()
    def appstream_equals_the_model(self) -> None:
        assert self.server.state.associations() == self.model

    def teardown(self) -> None:
        self.server.faults.clear()


def test_random_lifecycles_keep_appstream_equal_to_the_model(appstream: AppStreamServer, invoke: Any) -> None:
    Lifecycle.server = appstream
    Lifecycle.invoke = staticmethod(invoke)
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# ---------------------------------------------------------------------- rollbacks, pinned


def test_rollback_of_a_failed_create_keeps_pre_existing_associations(appstream: AppStreamServer, invoke: Any) -> None:
    seed(appstream, stacks=["demo"], users=["x@example.com"], associated={"demo": ["x@example.com"]})
    before = appstream.state.associations()
    props = properties("demo", ["x@example.com", "ghost@example.com"])

    failed = invoke(cfn_event("Create", props))
    rollback = invoke(cfn_event("Delete", props, physical_id=failed.physical_id))

    assert failed.status == "FAILED"
    assert rollback.status == "SUCCESS"
    assert appstream.state.associations() == before


def test_rollback_of_a_failed_update_removes_what_only_the_failed_template_declared(
    appstream: AppStreamServer, invoke: Any
) -> None:
    """A documented limit: CloudFormation does not mark a rollback Update as one.

    x@example.com was associated outside CloudFormation. The resource declares a@example.com; an
    Update declaring x and a user that does not exist fails and changes nothing (checked). The
    rollback Update, from the failed properties back to the old ones, looks exactly like an Update
    that withdraws x from a template that had been applied, and withdrawing access a template
    no longer declares is the safe reading: x is removed. README, "Known limits", says so.
    """
    seed(appstream, stacks=["demo"], users=["a@example.com", "x@example.com"], associated={"demo": ["x@example.com"]})
    old = properties("demo", ["a@example.com"])
    failing = properties("demo", ["a@example.com", "x@example.com", "ghost@example.com"])
    created = invoke(cfn_event("Create", old))
    before = appstream.state.associations()

    failed = invoke(cfn_event("Update", failing, old=old, physical_id=created.physical_id))
    assert failed.status == "FAILED"
    assert appstream.state.associations() == before
    rollback = invoke(cfn_event("Update", old, old=failing, physical_id=created.physical_id))

    assert rollback.status == "SUCCESS"
    assert appstream.state.associations() == {("demo", "a@example.com", "USERPOOL")}


def test_delete_after_drift_and_deleted_users_and_stacks_succeeds(appstream: AppStreamServer, invoke: Any) -> None:
    """A stack's Delete never fails because something was already gone."""
    names = [f"u{index}@example.com" for index in range(30)]
    seed(appstream, stacks=["demo", "other"], users=names)
    on_demo = invoke(cfn_event("Create", properties("demo", names), logical_id="OnDemo"))
    on_other = invoke(cfn_event("Create", properties("other", names[:3]), logical_id="OnOther"))
    appstream.state.disassociate("demo", names[0])
    appstream.state.remove_user(names[1])
    appstream.state.remove_stack("other")

    deleted = [
        invoke(cfn_event("Delete", properties("demo", names), physical_id=on_demo.physical_id, logical_id="OnDemo")),
        invoke(
            cfn_event("Delete", properties("other", names[:3]), physical_id=on_other.physical_id, logical_id="OnOther")
        ),
    ]

    assert [answer.status for answer in deleted] == ["SUCCESS", "SUCCESS"]
    assert appstream.state.associations() == frozenset()


def test_a_delete_for_an_unknown_id_touches_nothing(appstream: AppStreamServer, invoke: Any) -> None:
    seed(appstream, stacks=["demo"], users=["a@example.com"], associated={"demo": ["a@example.com"]})
    before = appstream.state.associations()

    answer = invoke(cfn_event("Delete", properties("demo", ["a@example.com"]), physical_id=str(uuid.uuid4())))

    assert answer.status == "SUCCESS"
    assert appstream.state.associations() == before
    assert appstream.calls == ()
