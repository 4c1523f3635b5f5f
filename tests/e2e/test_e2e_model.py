"""A stateful model of whole-stack deploys: random templates, random failures, the contract as invariant.

Hypothesis draws a sequence of deploys of one CloudFormation stack (templates that add, remove and
move users between associations, rename a construct, raise and lower ``shards``, drop an
association), each with a drawn misfortune: another resource failing on Create or Update, a Create
cancelled in flight at a drawn AppStream call, a crash of the function after a drawn call, a lost
answer, a duplicate delivery (right after, at the end of the deploy, or during the next one); and
stack deletions. AppStream starts with associations made outside CloudFormation. After every
operation AppStream must hold exactly what the model says:

* after a successful deploy: what the template declares, plus what existed outside and nobody
  declares (an association that existed and is declared is adopted: managed from then on);
* after a deploy that rolled back: exactly what it held before the deploy;
* after the stack's deletion: what existed outside and was never adopted.

Every operation is played by the rehearsal in parallel mode (independent resources at once), so
races between the associations' events and the rollback's are real. ``HYPOTHESIS_PROFILE=long``
runs many more and longer sequences than ``make test`` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ssm as ssm
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from constructs_lib import UserStackAssociation
from constructs_lib.testing import AppStreamServer, AppStreamState, Rehearsal, ResponseServer, read_assembly

STACK = "Modelled"
APPSTREAM = "shared"
USERS = tuple(f"u{n}@example.com" for n in range(6))
OUTSIDE = frozenset({USERS[1], USERS[4]})
"""Associated before anything was deployed, outside CloudFormation."""
ASSOCIATION = "Custom::AppStreamUserStackAssociation"
PARAMETER = "AWS::SSM::Parameter"


@dataclass(frozen=True)
class Template:
    """Which users each association declares (construct id -> users, shards)."""

    associations: tuple[tuple[str, tuple[str, ...], int], ...]

    def declared(self) -> frozenset[str]:
        return frozenset(user for _, users, _ in self.associations for user in users)


u = USERS
TEMPLATES = (
    Template((("A", (u[0], u[1]), 1), ("B", (u[2],), 1))),
    Template((("A", (u[0],), 1), ("B", (u[1], u[2]), 1))),  # u1 moves A -> B
    Template((("A", (u[0], u[1], u[2], u[3]), 4), ("B", (u[2],), 1))),  # shards raised, u2 in both
    Template((("C", (u[0], u[1]), 1), ("B", (u[2], u[4]), 1))),  # A renamed C, u4 (outside) declared
    Template((("A", (u[3], u[5]), 2), ("B", (u[0], u[2]), 1))),  # shards lowered to 2, moves
    Template((("A", (u[0], u[1], u[3]), 1),)),  # B removed
)


def build(index: int, outdir: Path) -> Path:
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, STACK)
    for construct_id, users, shards in TEMPLATES[index].associations:
        UserStackAssociation(stack, construct_id, stack_name=APPSTREAM, user_names=list(users), shards=shards)
    # Changes with every template, so a test can make it fail on Update too.
    ssm.StringParameter(stack, "Other", string_value=f"template {index}")
    return Path(app.synth().directory)


@pytest.fixture(scope="module")
def assemblies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("model")
    return [build(index, root / str(index)) for index in range(len(TEMPLATES))]


@pytest.fixture(scope="module")
def cfn() -> Iterator[ResponseServer]:
    with ResponseServer() as server:
        yield server


settings.register_profile("default-model", max_examples=2, stateful_step_count=4, deadline=None)
settings.register_profile("long-model", max_examples=40, stateful_step_count=12, deadline=None)
PROFILE = "long-model" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "default-model"

MISFORTUNES = (
    "none",
    "fail-other",
    "cancel",
    "crash",
    "lose-answer",
    "duplicate-after",
    "duplicate-end",
    "duplicate-next",
)


@pytest.mark.slow
def test_whole_stack_deploys_keep_appstream_equal_to_the_templates(assemblies: list[Path], cfn: ResponseServer) -> None:
    class Deploys(RuleBasedStateMachine):
        """One CloudFormation stack deployed again and again, with misfortunes."""

        @initialize()
        def start(self) -> None:
            seed = {
                "stacks": [APPSTREAM],
                "users": [{"UserName": user} for user in USERS],
                "associations": [{"StackName": APPSTREAM, "UserName": user} for user in sorted(OUTSIDE)],
            }
            self.server = AppStreamServer(AppStreamState.from_seed(seed)).start()
            self.rehearsal = Rehearsal(self.server, cfn).start()
            self.outside = set(OUTSIDE)
            """Associated and managed by nobody."""
            self.managed: frozenset[str] = frozenset()
            self.deployed = False
            self.steps: list[str] = []

        def teardown(self) -> None:
            self.rehearsal.close()
            self.server.stop()

        def holds(self) -> set[str]:
            return {user for stack, user, _ in self.server.state.associations() if stack == APPSTREAM}

        @invariant()
        def appstream_is_what_the_model_says(self) -> None:
            if hasattr(self, "server"):
                assert self.holds() == set(self.managed) | self.outside, self.steps

        @rule(index=st.integers(0, len(TEMPLATES) - 1), misfortune=st.sampled_from(MISFORTUNES), data=st.data())
        def deploy(self, index: int, misfortune: str, data: st.DataObject) -> None:
            assembly = assemblies[index]
            [template] = read_assembly(assembly)
            customs = sorted(resource.logical_id for resource in template.of_type(ASSOCIATION))
            [other] = [resource.logical_id for resource in template.of_type(PARAMETER)]
            faults = self.rehearsal.faults
            faults.clear()
            target = data.draw(st.sampled_from(customs), label="target")
            on = "Update" if self.deployed else "Create"
            if misfortune == "fail-other":
                faults.fail(other, on=on, reason="modelled failure")
            elif misfortune == "cancel":
                calls = data.draw(st.integers(1, 3), label="calls")
                faults.fail(other, on=on, reason="modelled failure", when_called=(target, calls))
            elif misfortune == "crash":
                faults.crash(target, on=None, after_calls=data.draw(st.integers(1, 3), label="calls"))
            elif misfortune == "lose-answer":
                faults.lose_answer(target, on=None)
            elif misfortune.startswith("duplicate"):
                faults.duplicate(target, on=None, when=misfortune.removeprefix("duplicate-"))
            self.steps.append(f"deploy template {index} with {misfortune} on {target}")
            [operation] = self.rehearsal.deploy(assembly)
            assert operation.status in (
                "CREATE_COMPLETE",
                "UPDATE_COMPLETE",
                "ROLLBACK_COMPLETE",
                "UPDATE_ROLLBACK_COMPLETE",
            ), (
                str(operation),
                self.steps,
            )
            if operation.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
                declared = TEMPLATES[index].declared()
                self.outside -= declared  # adopted: managed from now on
                self.managed = declared
                self.deployed = True
            elif operation.status == "ROLLBACK_COMPLETE":
                self.deployed = False  # a failed first deploy leaves nothing managed
                self.managed = frozenset()

        @precondition(lambda self: self.deployed)
        @rule()
        def destroy(self) -> None:
            self.rehearsal.faults.clear()
            self.steps.append("destroy")
            operation = self.rehearsal.destroy(STACK)
            assert operation.status == "DELETE_COMPLETE", (str(operation), self.steps)
            self.managed = frozenset()
            self.deployed = False

    Deploys.TestCase.settings = settings(
        settings.get_profile(PROFILE), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    Deploys.TestCase().runTest()
