"""Configuration layering: plugin defaults < a TOML file < ``--set key=value`` overrides, and
the check of every value against its type and range before any work.

The resolved configuration is one nested dict with the sections ``run``, ``detector``,
``suite``, ``eval``, ``train`` and ``analyses``; it is written into every run folder.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger("harness")

RUN_DEFAULTS: dict[str, Any] = {
    "run": {"seed": 0, "device": "auto", "out": "runs"},
    # fp32 scoring on every device, as the official evaluations do; eval.precision=bf16 on request
    "eval": {"precision": "fp32"},
    "train": {},
    "analyses": {},
}

#: The ``[run]`` settings (read by harness.runs and harness.pipeline; the harness itself fills
#: detector, suite, profile, benchmark and unknown_settings).
RUN_SETTINGS: dict[str, dict] = {
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    "device": {"type": "string", "pattern": r"^(auto|cpu|cuda(:[0-9]+)?)$", "description": "cpu, cuda, cuda:N or auto"},
    "out": {"type": "string"},
    "weights": {"type": ["string", "null"]},
    "compile": {"type": ["boolean", "null"]},
    # intra-op threads of the forward; default (unset): the CPUs the loader workers leave (harness.runs)
    "threads": {"oneOf": [{"type": "integer", "minimum": 1}, {"enum": ["auto", None]}],
                "description": "a whole number >= 1 or auto"},
    "dir": {"type": ["string", "null"]},
    "detector": {"type": ["string", "null"]},
    "suite": {"type": ["string", "null"]},
    "profile": {"type": ["string", "null"]},
    "benchmark": {"type": ["string", "null"]},
    "unknown_settings": {"type": "array"},
    # filled from --weights by harness.commands._common.apply_weights
    "weights_entry": {"type": ["string", "null"]},
    "weights_conflicts": {"type": "array"},
}

#: Top-level tables of a configuration; anything else is reported as an unknown section.
SECTIONS = ("run", "detector", "suite", "eval", "train", "analyses", "protocol", "train_suite")


def core_settings() -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    """``(defaults, declarations)`` of the sections the engine reads, each declared by the
    module that reads it."""
    from harness.pipeline import EVAL_SETTINGS
    from harness.protocols import PROTOCOL_SETTINGS
    from harness.training import TRAIN_DEFAULTS, TRAIN_SETTINGS

    return {"train": TRAIN_DEFAULTS}, {"run": RUN_SETTINGS, "eval": EVAL_SETTINGS, "train": TRAIN_SETTINGS,
                                       "protocol": PROTOCOL_SETTINGS}


# -- settings schemas -----------------------------------------------------------------------
# A section's schema is JSON Schema: each key's type follows from its default value, and a
# plugin's ``settings`` (a JSON Schema fragment per key) adds ranges and choices, or the type
# of a key whose default is None. Unknown keys stay allowed (they are warned about instead).

_TYPE_OF = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), ((list, tuple), "array"))
_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
          "array": "a list", "object": "a table of settings"}


def infer_schema(value: Any) -> dict:
    """The JSON Schema type of a default value (None: any type; a table: its keys too)."""
    if isinstance(value, dict):
        return section_schema(value)
    for types, name in _TYPE_OF:
        if isinstance(value, types):
            return {"type": name}
    return {}


def section_schema(defaults: dict | None, declared: dict | None = None) -> dict:
    """Schema of one table: keys typed by ``defaults``, then ``declared`` fragments layered on."""
    props = {key: infer_schema(value) for key, value in (defaults or {}).items()}
    for key, fragment in (declared or {}).items():
        props[key] = {**props.get(key, {}), **fragment}
    return {"type": "object", "properties": props}


def declared_settings(cls: type) -> dict[str, dict]:
    """A plugin class's ``settings``, its base classes' first (a subclass refines them)."""
    out: dict[str, dict] = {}
    for klass in reversed(cls.__mro__):
        for key, fragment in (vars(klass).get("settings") or {}).items():
            out[key] = {**out.get(key, {}), **fragment}
    return out


def plugin_settings(detector_cls: type | None, suite_cls: type | None, analyses: dict[str, type]) -> dict:
    """The ``settings`` argument of :func:`config_schema` for these plugin classes."""
    from harness.suite import Suite

    return {
        "detector": declared_settings(detector_cls) if detector_cls else {},
        "suite": declared_settings(suite_cls) if suite_cls else declared_settings(Suite),
        "analyses": {name: {"defaults": cls.defaults, "settings": declared_settings(cls)}
                     for name, cls in analyses.items()},
    }


def config_schema(known: dict, settings: dict[str, Any] | None = None) -> dict:
    """The schema of a whole configuration: every section typed by ``known`` (the configuration
    before any user layer: defaults and profile) and the engine's declarations, with
    ``settings`` ({"detector": {...}, "suite": {...}, "analyses": {name: {"defaults", "settings"}}})
    from the plugins."""
    from harness.suite import Suite

    engine_defaults, engine_settings = core_settings()
    settings = {"suite": declared_settings(Suite), **(settings or {})}  # every suite reads suite.root
    props = {}
    for section in SECTIONS:
        if section == "analyses":
            analyses = settings.get("analyses") or {}
            props[section] = {"type": "object", "properties": {
                name: section_schema(spec.get("defaults"), spec.get("settings")) for name, spec in analyses.items()}}
            continue
        base = known.get(section) if isinstance(known.get(section), dict) else {}
        schema = section_schema({**engine_defaults.get(section, {}), **base}, engine_settings.get(section))
        for key, fragment in (settings.get(section) or {}).items():
            schema["properties"][key] = {**schema["properties"].get(key, {}), **fragment}
        props[section] = schema
    return {"type": "object", "properties": props}


def _validator(schema: dict):
    return _compiled(json.dumps(schema, sort_keys=True, default=str))


@functools.lru_cache(maxsize=64)
def _compiled(schema_json: str):
    """A validator for a schema, checked against the JSON Schema metaschema once (that check
    costs far more than validating a configuration)."""
    import jsonschema

    # JSON Schema counts 2.0 as an integer; a setting read as a size or a count must be a real int.
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    schema = json.loads(schema_json)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = ".".join(str(p) for p in exc.path if p != "properties")
        raise HarnessError(f"a plugin declares an invalid settings schema at {where}: {exc.message}") from None
    return cls(schema)


def expected(schema: dict) -> str:
    """What a schema asks for, in words: "an integer >= 1", 'one of "cosine", "step"'."""
    if schema.get("description"):
        return schema["description"]
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    text = " or ".join(_WORDS[t] for t in types if t in _WORDS) or "a valid value"
    signs = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
    bounds = [f"{sign} {schema[word]}" for word, sign in signs if word in schema]
    return " ".join([text, " and ".join(bounds)]) if bounds else text


def check(config: dict, schema: dict) -> None:
    """Raise one clear :class:`HarnessError` for the first setting that does not fit ``schema``."""
    errors = sorted(_validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return
    # Name the setting (not a list element inside it), its value and what its schema asks for.
    keys, node, value = [], schema, config
    for part in errors[0].path:
        if not isinstance(part, str):
            break
        keys.append(part)
        node = node.get("properties", {}).get(part, {})
        value = value[part]
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    if not keys:
        raise HarnessError(f"the configuration must be a table of sections, got {shown}")
    raise HarnessError(f"setting {'.'.join(keys)}={shown}: expected {expected(node)}")


def check_section(name: str, values: Any, defaults: dict, declared: dict | None = None) -> None:
    """:func:`check` for one section on its own (``name`` prefixes the keys in the message)."""
    check({name: values}, {"type": "object", "properties": {name: section_schema(defaults, declared)}})


def unknown_settings(user: dict, schema: dict) -> list[str]:
    """Sections and keys set in ``user`` (a --config file or --set overrides) that ``schema``
    does not know, each with the closest known name when there is one. The ``protocol``
    table is checked by the protocol itself; a plugin's nested tables are free-form."""
    def report(given: dict, known, show) -> list[str]:
        names = sorted(known)
        out = []
        for key in sorted(set(given) - set(names)):
            close = difflib.get_close_matches(key, names, n=1)
            out.append(show(key) + (f" (did you mean {show(close[0])}?)" if close else ""))
        return out

    sections = schema["properties"]
    tables = {key: value for key, value in user.items() if isinstance(value, dict)}
    out = report(tables, sections, lambda key: f"[{key}]")
    for key in sorted(set(user) - set(tables) - set(sections)):  # a setting written above every [section]
        owners = [name for name, section in sections.items() if key in section.get("properties", {})]
        out.append(f"{key} (outside any [section]" + (f"; did you mean {owners[0]}.{key}?)" if owners else ")"))
    for section in ("run", "eval", "train", "suite", "detector"):
        if isinstance(user.get(section), dict):
            out += report(user[section], sections[section]["properties"], lambda key, s=section: f"{s}.{key}")
    analyses = user.get("analyses")
    if isinstance(analyses, dict):
        known = sections["analyses"]["properties"]
        out += report(analyses, known, lambda key: f"analyses.{key}")
        for name, given in analyses.items():
            if isinstance(given, dict) and name in known:
                out += report(given, known[name]["properties"], lambda key, n=name: f"analyses.{n}.{key}")
    return out


def merge(base: dict, override: dict) -> dict:
    """Recursive dictionary merge: ``override`` wins, nested tables merge."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_value(text: str) -> Any:
    """A ``--set`` value read as TOML (numbers, booleans, lists, quoted strings), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise HarnessError(f"--set expects key=value with a dotted key such as detector.lr=1e-4, got '{item}'")
    node: dict = {}
    out = node
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = parse_value(value.strip())
    return out


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise HarnessError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    detector_defaults: dict | None = None,
    suite_defaults: dict | None = None,
    file_config: dict | None = None,
    overrides: list[str] | None = None,
    training_defaults: dict | None = None,
    profile: dict | None = None,
    report_unknown: bool = True,
    settings: dict[str, Any] | None = None,
    flags: dict | None = None,
) -> dict:
    """Layer the configuration: plugin defaults < detector profile < file < overrides < flags,
    and check every value against the settings' types and ranges before anything uses it.

    ``training_defaults`` is the detector's published recipe (the ``train`` section);
    ``profile`` is a named scaled-down overlay (for example the ``mini`` profile) holding
    ``detector`` and ``train`` sections. ``settings``: the plugins' declarations
    (:func:`config_schema`); ``flags``: explicit command-line values, which win over all.
    ``report_unknown``: warn about (and record in ``run.unknown_settings``) settings that
    nothing reads; only meaningful when the plugins' defaults are given.
    """
    config = copy.deepcopy(RUN_DEFAULTS)
    config["detector"] = copy.deepcopy(detector_defaults or {})
    config["suite"] = copy.deepcopy(suite_defaults or {})
    config["train"] = merge(config["train"], copy.deepcopy(training_defaults or {}))
    if profile:
        config = merge(config, copy.deepcopy(profile))
    schema = config_schema(config, settings)
    if file_config:
        config = merge(config, file_config)
    user: dict = copy.deepcopy(file_config or {})
    for item in overrides or []:
        parsed = parse_override(item)
        config = merge(config, parsed)
        user = merge(user, parsed)
    if flags:
        config = merge(config, flags)
    unknown = unknown_settings(user, schema) if report_unknown else []
    if unknown:
        log.warning("settings no plugin or engine reads (typos?): %s", "; ".join(unknown))
    check(config, schema)
    if report_unknown:
        config["run"]["unknown_settings"] = unknown
    return config
