"""The README's pytest example of the testing kit runs, as printed, against the bundled asset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
TEST_NAME = "test_a_deploy_that_another_resource_fails_leaves_appstream_as_it_was"


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    [example] = [block for block in blocks if f"def {TEST_NAME}(" in block]
    return str(example)


def test_the_readme_names_the_example_it_runs() -> None:
    assert "tests/e2e/test_e2e_readme.py" in README.read_text(encoding="utf-8")


def test_the_readme_example_of_a_rehearsal_passes(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    namespace[TEST_NAME](tmp_path)


def test_the_readme_example_fails_when_appstream_is_not_as_it_says(tmp_path: Path) -> None:
    # The example's last assertion names alice, carol and dave: without carol's CfnUser the
    # association fails instead, so the example can fail (it is not a hard-coded pass).
    broken = readme_example().replace("carol.user_name]", '"nobody@example.com"]')
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(broken, str(README), "exec"), namespace)
    with pytest.raises(AssertionError):
        namespace[TEST_NAME](tmp_path)
