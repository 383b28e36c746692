"""The suite (dataset) contract."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any, ClassVar, Iterator

from harness.config import merge

REAL, FAKE = 0, 1


@dataclass(frozen=True)
class Sample:
    """One image of a suite.

    ``path`` is absolute. ``generator`` names the generator a fake comes from; a real image
    belongs to the generator subset it is listed under (GenImage's ``nature`` folders),
    so that per-generator metrics always have both classes. ``pair`` is the path of the real
    image a fake was reconstructed from, or of a real image's reconstruction, when known.
    """

    path: str
    label: int
    generator: str
    split: str
    pair: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def portable_key(self) -> str:
        """Names the image the same way wherever the suite lies on disk (generator, split,
        label and the last three parts of its path, so ``airplane/0_real/00002.png`` and
        ``bicycle/0_real/00002.png`` stay apart): what seeded subsets and masks hash, so
        that two machines pick the same images and the same masks."""
        tail = "/".join(PurePath(self.path).parts[-3:])
        return f"{self.generator}/{self.split}/{self.label}/{tail}"


class Suite:
    """Base class of every suite plugin.

    ``config`` is the run's ``[suite]`` section layered on ``defaults``; ``root`` comes from
    ``suite.root`` or the environment variable named by ``root_env``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    #: JSON Schema per key of ``defaults`` where its default value does not tell the type and range
    #: (harness.config checks the run's values against it before any work).
    settings: ClassVar[dict[str, dict]] = {"root": {"type": ["string", "null"]}}
    #: Environment variable giving the default root, e.g. ``HARNESS_GENIMAGE_ROOT``.
    root_env: ClassVar[str | None] = None
    #: Facts per generator, where known: ``family`` (gan, diffusion, closed, other) and
    #: ``released`` (ISO date); what time-ordered protocols split on.
    generator_facts: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = merge(copy.deepcopy(self.defaults), config or {})

    def generators(self) -> list[str]:
        """Generator names in the order tables show them."""
        raise NotImplementedError

    def generator_info(self) -> dict[str, dict[str, str]]:
        """``{generator: {"family": ..., "released": "YYYY-MM-DD"}}`` for the generators with known facts."""
        return {name: dict(facts) for name, facts in self.generator_facts.items()}

    def splits(self) -> list[str]:
        return ["train", "val", "test"]

    def scan(self) -> Iterator[Sample]:
        """Walk the dataset on disk and yield every sample (the manifest caches this)."""
        raise NotImplementedError
