"""Every private TorchRL name the replay uses still exists on the installed TorchRL: an
upgrade that renames one fails here, naming it, not inside a training run."""

from __future__ import annotations

import pytest
import torchrl

from replay import SequenceReplay
from replay.torchrl_private import PRIVATE_NAMES


@pytest.mark.parametrize(("cls", "name"), PRIVATE_NAMES,
                         ids=[f"{c.__name__}.{n}" for c, n in PRIVATE_NAMES])
def test_private_name_exists(cls, name):
    replay = SequenceReplay(16, 2, seed=0)
    buffer = replay._buffer
    live = {type(buffer.storage): buffer.storage, type(buffer): buffer,
            type(buffer._sampler): buffer._sampler}
    instance = next((obj for kind, obj in live.items() if issubclass(kind, cls)), None)
    assert instance is not None, f"no live {cls.__name__} in the replay"
    assert hasattr(instance, name), (
        f"torchrl {torchrl.__version__}: {cls.__name__}.{name} is gone; replay/"
        "torchrl_private.py (or the sampler's overrides) must follow the new API")
