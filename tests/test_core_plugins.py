"""Plugin discovery through entry points: allow-list, broken plugins, misspelled hooks."""

from __future__ import annotations

import sys
import textwrap

import pytest

from harness.errors import HarnessError
from harness.registry import Plugins, allow_list

GOOD = '''
from harness import hookimpl
from harness.detector import Detector
from harness.suite import Suite

class Alpha(Detector):
    name = "alpha-net"
    description = "first line\\nsecond line"

class Beta(Suite):
    name = "beta-suite"

@hookimpl
def register_detectors(register):
    register(Alpha)

@hookimpl
def register_suites(register):
    register(Beta)
'''

BROKEN_IMPORT = '''
import a_module_that_does_not_exist_anywhere
'''

MISSPELLED = '''
from harness import hookimpl
from harness.detector import Detector

class Gamma(Detector):
    name = "gamma"

@hookimpl
def register_detector(register):  # singular: not a hook the harness knows
    register(Gamma)
'''

RAISES = '''
from harness import hookimpl
from harness.detector import Detector

class Delta(Detector):
    name = "delta"

@hookimpl
def register_detectors(register):
    register(Delta)
    raise RuntimeError("boom while registering")
'''

DUPLICATE = '''
from harness import hookimpl
from harness.detector import Detector

class AlphaAgain(Detector):
    name = "alpha-net"

@hookimpl
def register_detectors(register):
    register(AlphaAgain)
'''


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Install plugin modules as a distribution (dist-info with entry points) on sys.path."""

    def install(modules: dict[str, str], dist: str = "fake-harness-plugins", version: str = "9.9.9"):
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "\n".join(f"{module} = {module}" for module in modules)
        (info / "entry_points.txt").write_text(f"[harness]\n{lines}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        for module in modules:
            sys.modules.pop(module, None)
        return tmp_path

    return install


def test_entry_point_plugin_is_discovered_with_its_origin(fake_plugins):
    fake_plugins({"fk_good": GOOD})
    plugins = Plugins()
    assert plugins.get("detector", "alpha-net").__name__ == "Alpha"
    assert plugins.get("suite", "beta-suite").__name__ == "Beta"
    info = plugins.owner("detector", "alpha-net")
    assert (info.name, info.distribution, info.version) == ("fk_good", "fake-harness-plugins", "9.9.9")
    assert info.location.endswith("fk_good.py")
    assert sorted(info.provides) == ["detector:alpha-net", "suite:beta-suite"]


def test_broken_import_is_reported_and_others_still_work(fake_plugins):
    fake_plugins({"fk_good": GOOD, "fk_broken": BROKEN_IMPORT})
    plugins = Plugins()
    broken = {info.name: info.error for info in plugins.broken}
    assert "fk_broken" in broken
    assert "ModuleNotFoundError" in broken["fk_broken"]
    assert "a_module_that_does_not_exist_anywhere" in broken["fk_broken"]
    assert plugins.get("detector", "alpha-net")


def test_misspelled_hook_is_an_error_not_silence(fake_plugins):
    fake_plugins({"fk_good": GOOD, "fk_misspelled": MISSPELLED})
    plugins = Plugins()
    info = plugins.info["fk_misspelled"]
    assert info.broken and "register_detector" in info.error
    assert "gamma" not in plugins.registry["detector"]
    assert plugins.manager.get_plugin("fk_misspelled") is None
    assert plugins.get("detector", "alpha-net")


def test_plugin_raising_while_registering_leaves_nothing_half_registered(fake_plugins):
    fake_plugins({"fk_good": GOOD, "fk_raises": RAISES})
    plugins = Plugins()
    assert "boom while registering" in plugins.info["fk_raises"].error
    assert "delta" not in plugins.registry["detector"]
    assert plugins.get("detector", "alpha-net")


def test_duplicate_name_from_a_second_plugin_is_refused(fake_plugins):
    fake_plugins({"fk_good": GOOD, "fk_zdup": DUPLICATE})
    plugins = Plugins()
    assert plugins.get("detector", "alpha-net").__name__ == "Alpha"
    error = plugins.info["fk_zdup"].error
    assert "registered by both" in error and "fk_good" in error


def test_a_plugin_reusing_a_built_in_name_is_the_one_refused(fake_plugins):
    fake_plugins({"aa_first": DUPLICATE.replace('"alpha-net"', '"npr"')})  # on sys.path before the built-ins
    plugins = Plugins()
    assert plugins.owner("detector", "npr").distribution == "aigi-harness"
    assert plugins.get("detector", "npr").__module__ == "harness.plugins.detectors.npr"
    assert "registered by both" in plugins.info["aa_first"].error
    assert not [info.name for info in plugins.broken if info.distribution == "aigi-harness"]


def test_allow_list_loads_only_the_named_plugins(fake_plugins, monkeypatch):
    fake_plugins({"fk_good": GOOD, "fk_broken": BROKEN_IMPORT})
    monkeypatch.setenv("HARNESS_PLUGINS", " fk_good ,")
    assert allow_list() == {"fk_good"}
    plugins = Plugins(allow_list())
    assert set(plugins.info) == {"fk_good"}
    assert plugins.broken == []
    with pytest.raises(HarnessError, match=r"Only the plugins HARNESS_PLUGINS=fk_good are loaded \(allow-list\)"):
        plugins.get("detector", "npr")  # a built-in, left out by the allow-list: the error says why
    monkeypatch.delenv("HARNESS_PLUGINS")
    assert allow_list() is None


def test_unknown_name_suggests_close_matches(fake_plugins):
    fake_plugins({"fk_good": GOOD})
    plugins = Plugins()
    with pytest.raises(HarnessError, match=r"unknown detector 'alpha-nt'.*Did you mean: alpha-net"):
        plugins.get("detector", "alpha-nt")
