"""The bundled game-day scenarios (experiments/*.json) and a user's own experiment files.

    list_scenarios()                  # [{"scenario", "fault", "expected_alert", "title", "path"}]
    name, experiment = load_scenario("db-outage")        # or a path: "./my-experiment.json"
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from tradelab.errors import TradelabError


def experiments_dir():
    return resources.files("tradelab.gameday") / "experiments"


def bundled() -> dict[str, Any]:
    """Scenario name -> its packaged file."""
    return {p.name.removesuffix(".json"): p for p in sorted(experiments_dir().iterdir(),
                                                            key=lambda p: p.name)
            if p.name.endswith(".json")}


def list_scenarios() -> list[dict[str, Any]]:
    rows = []
    for name, path in bundled().items():
        experiment = json.loads(path.read_text())
        config = experiment.get("configuration", {})
        rows.append({"scenario": name, "fault": config.get("fault"),
                     "expected_alert": config.get("expected_alert"),
                     "title": experiment.get("title", ""), "path": str(path)})
    return rows


def load_scenario(ref: str) -> tuple[str, dict[str, Any]]:
    """(name, experiment) for a bundled scenario's name or an experiment file's path,
    checked: valid for Chaos Toolkit, a catalogued fault and an expected alert."""
    scenarios = bundled()
    if ref in scenarios:
        name, text = ref, scenarios[ref].read_text()
        source = f"bundled scenario {ref}"
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise TradelabError(f"no scenario {ref!r}: use one of {', '.join(scenarios)} "
                                "(`tradelab gameday list`) or the path of an experiment file")
        name, source = path.stem, str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise TradelabError(f"cannot read {path}: {exc.strerror}") from None
    experiment = _parse(text, source)
    check_experiment(experiment, source)
    return name, experiment


def _parse(text: str, source: str) -> dict[str, Any]:
    import yaml

    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise TradelabError(f"{source} is not a JSON or YAML experiment: {first}") from None
    if not isinstance(data, dict):
        raise TradelabError(f"{source} must hold one experiment (a mapping)")
    return data


def check_experiment(experiment: dict[str, Any], source: str) -> None:
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    from tradelab.faults import check_fault

    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as exc:
        raise TradelabError(f"{source} is not a valid Chaos Toolkit experiment: {exc}") from None
    config = experiment.get("configuration") or {}
    for key in ("fault", "expected_alert"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise TradelabError(f"{source}: its configuration needs {key!r} "
                                "(the fault to inject and the alert that must detect it)")
    check_fault(config["fault"])

