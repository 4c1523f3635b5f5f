"""Every public name of the library is documented: the construct, each prop, each attribute."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import constructs_lib
from constructs_lib import UserStackAssociation
from tests.helpers.templates import REPO_ROOT

PACKAGE = REPO_ROOT / "constructs_lib"


def documented_assignments(path: Path, *, in_init_of: str | None = None) -> dict[str, bool]:
    """Public names assigned (module level, or ``self.x`` in a class's ``__init__``) -> has a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body: list[ast.stmt] = tree.body
    if in_init_of is not None:
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == in_init_of)
        init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
        body = init.body
    found: dict[str, bool] = {}
    for statement, following in zip(body, [*body[1:], None], strict=True):
        target: ast.expr | None = statement.target if isinstance(statement, ast.AnnAssign) else None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        if in_init_of is not None:
            if not (
                isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
            ):
                continue
            name = target.attr
        else:
            if not isinstance(target, ast.Name):
                continue
            name = target.id
        if name.startswith("_"):
            continue
        found[name] = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        )
    return found


def test_every_prop_is_documented_with_its_default() -> None:
    doc = inspect.getdoc(UserStackAssociation) or ""
    parameters = inspect.signature(UserStackAssociation.__init__).parameters
    props = [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert len(props) == 14, props
    for name in props:
        match = re.search(rf":param {name}:(.*?)(?=\n:(?:param|raises) |\Z)", doc, flags=re.DOTALL)
        assert match, f"prop {name} is not documented"
        if parameters[name].default is not inspect.Parameter.empty:
            assert "Default:" in match.group(1), f"prop {name} does not state its default"


def test_every_public_attribute_of_the_construct_has_a_docstring() -> None:
    attributes = documented_assignments(PACKAGE / "association.py", in_init_of="UserStackAssociation")
    assert {"resource", "resources", "function", "role", "policy", "log_group", "shards"} <= set(attributes)
    assert [name for name, documented in attributes.items() if not documented] == []


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_every_module_has_a_docstring(module: str) -> None:
    assert ast.get_docstring(ast.parse((PACKAGE / module).read_text(encoding="utf-8"))), module


def test_every_exported_name_has_a_docstring() -> None:
    constants: dict[str, bool] = {}
    for path in PACKAGE.glob("*.py"):
        constants.update(documented_assignments(path))
    for name in constructs_lib.__all__:
        value = getattr(constructs_lib, name)
        if inspect.isclass(value):
            assert inspect.getdoc(value), name
        else:
            assert constants.get(name), f"{name} has no docstring"


def test_the_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()
