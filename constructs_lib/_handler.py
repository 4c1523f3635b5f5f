"""The handler's package (``appstream_handler``), as the construct library and its tools see it.

The Lambda asset is built from ``lambda_src/``: ``index.py`` and the ``appstream_handler``
package, whose modules import each other relatively. The synth-time code, the testing kit and the
command line reuse some of them (AppStream's rules, the state store's schema, the decision
logic) rather than keep copies. In an installed wheel the handler tree is the subpackage
``constructs_lib._lambda_src``; in a checkout it is ``lambda_src/`` beside this package and is
loaded from there under the name ``constructs_lib._lambda_src``, so both give the same modules.

Standard library only: importing it starts neither aws-cdk-lib nor boto3 (modules of the
package that need boto3 import it themselves, when they are imported).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

_PACKAGE = "constructs_lib._lambda_src"
_HANDLER_PACKAGE = f"{_PACKAGE}.appstream_handler"


def _load_checkout_tree() -> None:
    """Register ``lambda_src/`` of the checkout as the package ``constructs_lib._lambda_src``."""
    source = Path(__file__).resolve().parent.parent / "lambda_src"
    if not (source / "appstream_handler" / "__init__.py").is_file():  # pragma: no cover - a broken install
        raise ImportError(f"the handler sources are neither packaged nor in {source}")
    spec = importlib.machinery.ModuleSpec(_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(source)]
    package = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = package


def handler_module(name: str) -> ModuleType:
    """``appstream_handler.<name>`` of the handler tree (packaged or checkout)."""
    try:
        return importlib.import_module(f"{_HANDLER_PACKAGE}.{name}")
    except ModuleNotFoundError as error:
        if error.name not in (_PACKAGE, _HANDLER_PACKAGE):
            raise
    _load_checkout_tree()
    return importlib.import_module(f"{_HANDLER_PACKAGE}.{name}")


if TYPE_CHECKING:  # mypy reads lambda_src/ through mypy_path
    from appstream_handler import rules
else:
    rules = handler_module("rules")

__all__ = ["handler_module", "rules"]
