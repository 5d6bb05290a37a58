"""`tradelab config show|set|unset|path`: the effective settings and where they come from.

    tradelab config show               # key, value, source (default, file:…, env:…)
    tradelab config show ports --json
    tradelab config set ports.api 8001 # written to <lab>/tradelab.yaml (mode 0600)
    tradelab config unset ports.api    # back to the default
    tradelab config path secrets       # where the lab keeps its generated passwords

Passwords in URLs are shown as *** (by show and set alike); tradelab.yaml is written
0600, as it may hold a database URL with its password or a webhook URL; the generated
secrets stay in <lab>/secrets/.
"""

from __future__ import annotations

import enum
import os
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from tradelab.cli.common import command_group, lab_from, print_json, print_table, settings_from

config_app = command_group(help="Show and change the lab's settings.", no_args_is_help=True)


class LabPath(enum.StrEnum):
    settings = "settings"
    lab = "lab"
    secrets = "secrets"
    state = "state"
    rendered = "rendered"
    data = "data"


def effective_settings(settings: Any, prefix: str | None = None) -> dict[str, dict[str, Any]]:
    """Dotted key -> {"value", "source"}, secrets in URLs masked; only `prefix` if given."""
    out = {}
    for key, value in settings.flat().items():
        if prefix and key != prefix and not key.startswith(prefix + "."):
            continue
        out[key] = {"value": _masked(key, value), "source": settings.sources.get(key, "default")}
    return out


@config_app.command("show")
def show_cli(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Argument(help="Only this key or group, e.g. ports.",
                                              show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every effective setting and where its value came from."""
    from tradelab.errors import TradelabError

    values = effective_settings(settings_from(ctx), key)
    if key and not values:
        raise TradelabError(f"unknown setting {key!r}: `tradelab config show` lists them")
    if as_json:
        print_json(values)
        return
    print_table([{"key": k, "value": _text(v["value"]), "source": v["source"]}
                 for k, v in values.items()])


@config_app.command("set")
def set_cli(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. ports.api.")],
    value: Annotated[str, typer.Argument(help="New value (YAML for numbers and lists).")],
) -> None:
    """Write one setting to <lab>/tradelab.yaml, keeping the others."""
    from tradelab.settings import write_setting

    lab = lab_from(ctx)
    write_setting(lab, key, value)
    typer.echo(f"set {key} = {_text(_masked(key, value))} in {lab.config_file}")
    _note_env_override(key)


@config_app.command("unset")
def unset_cli(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key (or a group, e.g. ports).")],
) -> None:
    """Remove one setting from <lab>/tradelab.yaml: it goes back to its default."""
    from tradelab.settings import unset_setting

    lab = lab_from(ctx)
    removed = unset_setting(lab, key)
    default = effective_settings(_defaults(), key)
    shown = (f" ({_text(default[key]['value']) or 'none'})" if key in default else "")
    if removed:
        typer.echo(f"unset {key} in {lab.config_file}: back to the default{shown}")
    else:
        typer.echo(f"{key} is not set in {lab.config_file}; it already has the default{shown}")
    _note_env_override(key)


def _defaults() -> Any:
    from tradelab.settings import load_settings

    return load_settings(None, env={})


def _note_env_override(key: str) -> None:
    from tradelab.settings import ENV_PREFIX

    env_name = ENV_PREFIX + key.upper().replace(".", "__")
    if env_name in os.environ:
        typer.echo(f"note: {env_name} is set in the environment and overrides the file")


@config_app.command("path")
def path_cli(
    ctx: typer.Context,
    what: Annotated[LabPath, typer.Argument(help="Which path.")] = LabPath.settings,
) -> None:
    """Print where the lab keeps its settings file (or another part of the lab)."""
    lab = lab_from(ctx)
    paths = {"settings": lab.config_file, "lab": lab.root, "secrets": lab.secrets_dir,
             "state": lab.state_dir, "rendered": lab.rendered_dir, "data": lab.data_dir}
    typer.echo(str(paths[what.value]))


def _masked(key: str, value: Any) -> Any:
    if not isinstance(value, str) or "url" not in key.rsplit(".", 1)[-1]:
        return value
    if "password" in value.lower():  # ?password=… or a key=value connection string
        from tradelab.db.connect import redact

        value = redact(value)
    try:
        parts = urlsplit(value)
    except ValueError:
        return "***"
    if parts.password is not None:
        return urlunsplit(parts._replace(
            netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    if "webhook" in key and parts.path not in ("", "/"):
        return urlunsplit(parts._replace(path="/***", query=""))  # the path is the secret
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
