"""AWS CDK construct that manages Amazon AppStream 2.0 user-to-stack associations.

>>> from constructs_lib import UserStackAssociation
>>> UserStackAssociation(stack, "Associations", stack_name="my-stack",
...                      user_names=["alice@example.com", "bob@example.com"])

The names below are loaded on first use, so that ``constructs_lib.testing`` (the local AppStream
and the rehearsal runner) can be imported without starting aws-cdk-lib's jsii runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from constructs_lib._version import __version__ as __version__

if TYPE_CHECKING:
    from constructs_lib._asset import AssetStagingError
    from constructs_lib._provider import PROVIDER_ID
    from constructs_lib._validation import AUTHENTICATION_TYPES, AssociationValidationError
    from constructs_lib.association import RESOURCE_TYPE, UserStackAssociation

_EXPORTS = {
    "AUTHENTICATION_TYPES": "constructs_lib._validation",
    "AssociationValidationError": "constructs_lib._validation",
    "AssetStagingError": "constructs_lib._asset",
    "PROVIDER_ID": "constructs_lib._provider",
    "RESOURCE_TYPE": "constructs_lib.association",
    "UserStackAssociation": "constructs_lib.association",
}

__all__ = [
    "AUTHENTICATION_TYPES",
    "PROVIDER_ID",
    "RESOURCE_TYPE",
    "AssetStagingError",
    "AssociationValidationError",
    "UserStackAssociation",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'constructs_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
