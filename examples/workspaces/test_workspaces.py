"""The example app, rehearsed: what a team would write to test its own AppStream access as code.

Run with pytest from the repository (``make test`` does) or from a copy of this folder with
``pip install 'appstream-user-stack-association[testing]' pytest``.
"""

from __future__ import annotations

from pathlib import Path

from workspaces_app import build

from constructs_lib.testing import AppStreamServer, AppStreamState, Rehearsal, read_assembly

SEED = {
    "stacks": ["admins"],
    "users": [{"UserName": user} for user in ("alice@example.com", "bob@example.com", "dave@example.com")],
    "associations": [{"StackName": "admins", "UserName": "erin@example.com", "AuthenticationType": "API"}],
}


def test_a_deploy_gives_each_team_its_stack(tmp_path: Path) -> None:
    assembly = build(str(tmp_path)).synth()
    with AppStreamServer(AppStreamState.from_seed(SEED)) as appstream, Rehearsal(appstream) as rehearsal:
        [created] = rehearsal.deploy(assembly)
        assert created.status == "CREATE_COMPLETE", created
        assert appstream.state.associations() == {
            ("analysts", "alice@example.com", "USERPOOL"),
            ("analysts", "bob@example.com", "USERPOOL"),
            ("analysts", "carol@example.com", "USERPOOL"),  # created by the stack, waited for
            ("admins", "dave@example.com", "USERPOOL"),
            ("admins", "erin@example.com", "API"),  # nobody declares her: left alone
        }
        assert rehearsal.destroy("Workspaces").status == "DELETE_COMPLETE"
        assert appstream.state.associations() == {("admins", "erin@example.com", "API")}


def test_a_deploy_rolled_back_by_another_resource_leaves_appstream_as_it_was(tmp_path: Path) -> None:
    assembly = build(str(tmp_path)).synth()
    [template] = read_assembly(assembly)
    [settings] = template.of_type("AWS::SSM::Parameter")
    with AppStreamServer(AppStreamState.from_seed(SEED)) as appstream, Rehearsal(appstream) as rehearsal:
        before = appstream.state.snapshot()
        rehearsal.faults.fail(settings.logical_id, reason="parameter /workspaces/settings already exists")
        [operation] = rehearsal.deploy(assembly)
        assert operation.status == "ROLLBACK_COMPLETE", operation
        assert appstream.state.associations() == before.associations
