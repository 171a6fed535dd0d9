"""Checks of a workflow config that JSON-schema validation does not make, run before it and before any job.

:func:`check_config` reports, all at once:

- unknown keys (typos) in every section the schema closes (``additionalProperties: false``), with a did-you-mean
  hint naming the key path (``config: unknown key 'mil.epoch' (did you mean 'mil.epochs'?)``), in a dataset's
  ``simulate`` block, against the parameters of that modality's simulator, and under ``scenarios``, against the
  scenario registry (:data:`recipe_mil.scenarios.SCENARIOS`);
- method names the method registry (:data:`recipe_mil.methods.METHODS`) does not know;
- dataset and class names that are not plain names (:data:`recipe_mil.names.SAFE_NAME`): they become folders and
  file names under ``results/``, so ``../x`` would write outside the working directory;
- image encoders that would make timm reach a hub or URL (nothing is ever downloaded).

:func:`validate_rows` checks a sample sheet against its row schema, naming the file and line of every error.

Value checks (types, ranges, enums) stay with the schema, which Snakemake's ``validate`` applies next.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from recipe_mil.names import SAFE_NAME_RULE, is_safe_name
from recipe_mil.sheets import raise_problems

_JSON_TYPES = {"object": dict, "array": list, "string": str}


class ConfigError(ValueError):
    """A config has unknown keys or unsafe names; the message lists every problem with its key path."""


def _load_schema(schema: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(schema, Mapping):
        return schema
    return yaml.safe_load(Path(schema).read_text())


def _branches(schema: Mapping[str, Any], value: Any) -> Iterator[Mapping[str, Any]]:
    """Yield the schema and those of its ``oneOf``/``anyOf`` branches whose type fits the value."""
    yield schema
    for key in ("oneOf", "anyOf"):
        for branch in schema.get(key, []):
            kind = _JSON_TYPES.get(branch.get("type"))
            if kind is None or isinstance(value, kind):
                yield branch


def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every key path the schema names (``<name>`` for the entries of a map, like ``datasets.<name>``)."""
    for name, sub in schema.get("properties", {}).items():
        yield prefix + name
        yield from _all_keys(sub, f"{prefix}{name}.")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _all_keys(schema["additionalProperties"], f"{prefix}<name>.")


def _suggest(key: str, siblings: list[str], prefix: str, everywhere: list[str]) -> str:
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    elsewhere = [path for path in everywhere if path.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f" (it belongs under '{elsewhere[0].rsplit('.', 1)[0]}': '{elsewhere[0]}')"
    return f" (known keys here: {', '.join(sorted(siblings))})" if siblings else ""


def unknown_keys(
    value: Any, schema: Mapping[str, Any], *, path: str = "", everywhere: list[str] | None = None
) -> list[str]:
    """Messages for the keys of ``value`` that a closed section of ``schema`` does not define.

    Parameters
    ----------
    value
        The config (or a part of it).
    schema
        Its JSON schema (or the matching part). A section is closed where it says
        ``additionalProperties: false``; ``additionalProperties: {...}`` (a map such as ``datasets``)
        checks every entry against that schema.
    path
        Key path of ``value`` in the config, ``""`` at the top.
    everywhere
        Every key path of the whole schema (for hints when a key is at the wrong level); computed if None.

    Returns
    -------
    list[str]
        One ``config: unknown key '<path>' (did you mean '<path>'?)`` per unknown key.
    """
    everywhere = list(_all_keys(schema)) if everywhere is None else everywhere
    problems: list[str] = []
    for branch in _branches(schema, value):
        if isinstance(value, dict) and ("properties" in branch or "additionalProperties" in branch):
            props = branch.get("properties", {})
            extra = branch.get("additionalProperties", True)
            for key, sub in value.items():
                where = f"{path}{key}"
                if key in props:
                    problems += unknown_keys(sub, props[key], path=f"{where}.", everywhere=everywhere)
                elif isinstance(extra, dict):
                    problems += unknown_keys(sub, extra, path=f"{where}.", everywhere=everywhere)
                elif extra is False:
                    hint = _suggest(str(key), list(props), path, everywhere)
                    problems.append(f"config: unknown key '{where}'{hint}")
        elif isinstance(value, list) and isinstance(branch.get("items"), dict):
            for i, item in enumerate(value):
                problems += unknown_keys(item, branch["items"], path=f"{path.rstrip('.')}[{i}].", everywhere=everywhere)
    return problems


def _simulate_problems(name: str, ds: Mapping[str, Any]) -> list[str]:
    from recipe_mil.modalities import MODALITIES, simulated_modalities
    from recipe_mil.simulate.dataset import simulator_keys

    sim, modality = ds.get("simulate"), ds.get("modality")
    if not isinstance(sim, dict) or not isinstance(modality, str) or modality not in MODALITIES:
        return []  # no block, or a type/modality error the schema reports
    where = f"datasets.{name}.simulate"
    simulators = simulated_modalities()
    if modality not in simulators:
        return [f"config: '{where}': modality {modality!r} cannot be simulated (simulators: {', '.join(simulators)})"]
    target, external = simulator_keys(modality)
    problems = []
    for keys, block, prefix in ((target, sim, where), (external, sim.get("external"), f"{where}.external")):
        if isinstance(block, dict):
            for key in block:
                if key not in keys:
                    hint = _suggest(str(key), sorted(keys), f"{prefix}.", [])
                    problems.append(f"config: unknown key '{prefix}.{key}' for the {modality} simulator{hint}")
    return problems


def _name_problems(datasets: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, ds in datasets.items():
        if not is_safe_name(name):
            problems.append(
                f"config: dataset name {name!r} is not a plain name ({SAFE_NAME_RULE}); "
                "it becomes a folder under results/"
            )
        classes = ds.get("classes") if isinstance(ds, dict) else None
        for cls in classes if isinstance(classes, list) else []:
            if isinstance(cls, str) and not is_safe_name(cls):
                problems.append(
                    f"config: datasets.{name}.classes: class name {cls!r} is not a plain name ({SAFE_NAME_RULE}); "
                    "it becomes part of file and scenario names"
                )
    return problems


def _encoder_problems(name: str, ds: Mapping[str, Any]) -> list[str]:
    image = ds.get("image")
    encoder = image.get("encoder") if isinstance(image, dict) else None
    if not isinstance(encoder, str):
        return []
    from recipe_mil.embed.image import check_encoder_name, encoder_uses_gpu

    try:
        check_encoder_name(encoder)
    except ValueError as exc:
        return [f"config: datasets.{name}.image.encoder: {exc}"]
    if ds.get("modality") == "image" and encoder_uses_gpu(encoder) and not image.get("weights"):
        return [
            f"config: datasets.{name}.image.encoder {encoder!r} needs image.weights, a local weights file "
            "(nothing is downloaded); use encoder: morphology to run without weights"
        ]
    return []


def _registry_problems(config: Mapping[str, Any]) -> list[str]:
    """Methods and scenario families the registries do not know (the schema leaves both to them)."""
    from recipe_mil.methods import METHODS
    from recipe_mil.scenarios import SCENARIOS

    problems = []
    methods = config.get("methods")
    for i, name in enumerate(methods if isinstance(methods, list) else []):
        if isinstance(name, str) and name not in METHODS:
            close = difflib.get_close_matches(name, list(METHODS), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known methods: {', '.join(METHODS)})"
            problems.append(f"config: methods[{i}]: unknown method '{name}'{hint}")
    scenarios = config.get("scenarios")
    for key in scenarios if isinstance(scenarios, dict) else []:
        if key not in SCENARIOS:
            problems.append(
                f"config: unknown key 'scenarios.{key}'{_suggest(str(key), list(SCENARIOS), 'scenarios.', [])}"
            )
    return problems


def config_problems(config: Mapping[str, Any], schema: Mapping[str, Any] | str | os.PathLike[str]) -> list[str]:
    """Every problem :func:`check_config` reports, as a list of messages (empty: the config passes)."""
    schema = _load_schema(schema)
    problems = unknown_keys(dict(config), schema) + _registry_problems(config)
    datasets = config.get("datasets")
    if isinstance(datasets, dict):
        problems += _name_problems(datasets)
        for name, ds in datasets.items():
            if isinstance(ds, dict):
                problems += _simulate_problems(name, ds) + _encoder_problems(name, ds)
    return problems


def check_config(config: Mapping[str, Any], schema: Mapping[str, Any] | str | os.PathLike[str]) -> None:
    """Refuse a config with unknown keys, unsafe dataset or class names, or a hub image encoder.

    Run it on the config as given (before schema validation fills defaults), before any job.

    Parameters
    ----------
    config
        The workflow config.
    schema
        Its JSON schema (a mapping, or the path of ``workflow/schemas/config.schema.yaml``).

    Raises
    ------
    ConfigError
        Listing every problem, one per line, each naming its key path.
    """
    problems = config_problems(config, schema)
    if problems:
        raise ConfigError("\n".join(problems))


def validate_rows(sheet: pd.DataFrame, schema: Mapping[str, Any], *, source: str) -> None:
    """Validate every row of a sheet against a JSON schema; errors name the file's line and the patient.

    Parameters
    ----------
    sheet
        Output of :func:`load_sheet` (row ``i`` is line ``i + 2`` of the file).
    schema
        A JSON schema (draft 2020-12) of one row, e.g. ``workflow/schemas/samples.schema.yaml``.
    source
        Name used in messages (the sheet's path).

    Raises
    ------
    recipe_mil.sheets.SampleSheetError
        Listing every row that does not match, as ``line N (patient): column: reason``.
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    problems = []
    for i, row in zip(sheet.index, sheet.to_dict("records"), strict=True):
        for err in sorted(validator.iter_errors(row), key=lambda e: list(map(str, e.absolute_path))):
            column = ".".join(map(str, err.absolute_path)) or "row"
            problems.append(f"line {i + 2} ({row.get('patient', '')}): {column}: {err.message}")
    raise_problems(source, problems)
