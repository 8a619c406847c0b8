"""The pytest plugin shipped with the package (entry point `kernel_replay` of `pytest11`,
loaded by pytest on its own once the package is installed): your tests replay their model
calls offline from cassettes.

    async def test_summary(kernel_cassette):
        kernel = kernel_cassette.kernel()          # or Kernel(): the environment says so too
        result = await kernel.invoke("writer.summarize", text=TEXT, max_words=20)
        assert result.value

A test using the `kernel_cassette` fixture has its model calls (every chat and embedding
service, streams included) go through the cassette ``cassettes/<test module>/<test>.json``
next to its file: recorded when the cassette does not exist yet, replayed when it does (a
request it does not hold fails with `ReplayMissError`, showing the closest recorded
request and the difference). `pytest --kernel-record` records them all again;
`--kernel-replay=replay` never records (a missing cassette fails: for CI). The fixture
sets `KERNEL_REPLAY` and `KERNEL_REPLAY_CASSETTE` for the test, so a kernel your code
builds from its own configuration goes through the cassette too.

Options: `kernel_cassette_dir` (ini, default ``cassettes``: the folder, relative to each
test file's folder), `@pytest.mark.kernel_cassette("name")` (this test's cassette file,
relative to that folder; tests may share one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..settings import KernelSettings
    from .cassettes import Cassette

_UNSAFE = re.compile(r"[^\w.\-]+")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kernel", "orchestration-kernel record/replay (kernel_cassette)")
    group.addoption("--kernel-record", action="store_true", default=False,
                    help="record the model calls of tests using kernel_cassette again (overwrites their cassettes)")
    group.addoption("--kernel-replay", choices=("auto", "replay", "record"), default=None,
                    help="auto (default): replay existing cassettes, record missing ones; replay: never record "
                         "(a missing cassette fails); record: same as --kernel-record")
    parser.addini("kernel_cassette_dir", "folder of the kernel_cassette files, relative to each test file's folder",
                  default="cassettes")


_OPENED = pytest.StashKey[dict[Path, "Cassette"]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel_cassette(name): the cassette file of this test (kernel_cassette)")
    config.stash[_OPENED] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    from .replay import close_cassette

    for cassette in config.stash.get(_OPENED, {}).values():
        close_cassette(cassette)


class KernelCassette:
    """What the `kernel_cassette` fixture gives a test: the cassette, and settings or a
    kernel whose model calls go through it."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette

    @property
    def path(self) -> Path:
        return self.cassette.path

    @property
    def mode(self) -> str:
        """``record`` or ``replay`` (``auto`` already decided)."""
        return self.cassette.mode

    @property
    def recording(self) -> bool:
        """True when the model calls reach the real services (start them then)."""
        return self.cassette.recording

    @property
    def interactions(self) -> list[dict[str, Any]]:
        return self.cassette.interactions

    def settings(self, **overrides: Any) -> KernelSettings:
        """`KernelSettings` through this cassette (`overrides` as in `KernelSettings(...)`)."""
        from ..settings import KernelSettings

        overrides.update(replay=self.mode, replay_cassette=self.path)
        return KernelSettings(**overrides)

    def kernel(self, settings: KernelSettings | None = None, **kwargs: Any) -> Kernel:
        """A `Kernel` through this cassette (`kwargs` as in `Kernel(...)`)."""
        from ..kernel import Kernel

        if settings is None:
            settings = self.settings()
        else:
            settings = settings.model_copy(update={"replay": self.mode, "replay_cassette": self.path})
        return Kernel(settings, **kwargs)


def cassette_path(request: pytest.FixtureRequest) -> Path:
    """``<folder of the test file>/<kernel_cassette_dir>/<module>/<test>.json``, or the
    marker's name under the cassette folder."""
    folder = request.path.parent / str(request.config.getini("kernel_cassette_dir") or "cassettes")
    marker = request.node.get_closest_marker("kernel_cassette")
    if marker is not None and marker.args:
        name = str(marker.args[0])
        return folder / (name if name.endswith(".json") else f"{name}.json")
    test = request.node.nodeid.split("::", 1)[-1].replace("::", ".")
    stem = _UNSAFE.sub("_", test).strip("_")[:150] or "test"
    return folder / request.path.stem / f"{stem}.json"


@pytest.fixture
def kernel_cassette(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> KernelCassette:
    """This test's model calls recorded to, or replayed from, its cassette."""
    from .replay import open_cassette

    config = request.config
    mode = "record" if config.getoption("kernel_record") else config.getoption("kernel_replay") or "auto"
    path = cassette_path(request).absolute()
    opened = config.stash[_OPENED]
    cassette = opened.get(path)  # a cassette shared by tests (the marker) stays open for the session
    if cassette is None:
        if mode == "record":
            path.unlink(missing_ok=True)  # recorded again from scratch, even if the test makes no call
        cassette = opened[path] = open_cassette(path, mode)
    monkeypatch.setenv("KERNEL_REPLAY", cassette.mode)
    monkeypatch.setenv("KERNEL_REPLAY_CASSETTE", str(cassette.path))
    return KernelCassette(cassette)
