"""Render the lab's config files from the templates in tradelab/templates/.

    written = render(settings, lab)                          # into <lab>/rendered/
    render(settings, lab, out=Path("out"), runtime="local")  # 127.0.0.1 targets, no compose
    render(settings, lab, stack=stack.subset(names))         # what `up` runs (--only/--without)

The template tree mirrors the output tree: templates/prometheus/prometheus.yml
becomes <out>/prometheus/prometheus.yml. The rules, in order:

1. Every file is a Jinja template (StrictUndefined), except `*.json`, which is copied
   byte for byte (Grafana dashboards are full of `{{legend}}` and have no Jinja in them).
2. A top-level folder named after a service (promtail/, alloy/, loki/, grafana/, ...) is
   rendered only when the stack runs that service; docker-compose.yml only for the
   docker runtime.
3. The bundled locustfile(s) (tradelab/loadtest/*.py) are copied to <out>/locust/ when
   the stack runs Locust, so containers mount them from the rendered tree. When a
   service mounts <out>/locust-vendor/ (the Docker runtime's Locust containers), the
   installed pure-Python prometheus_client is copied there with its license: the
   official Locust image lacks it and an air-gapped machine cannot pip install it.
4. For the docker runtime, the app image's build context (Dockerfile, requirements,
   the installed package) is written to <out>/app-image/, so `docker compose up`
   builds the same image `tradelab up` builds (see tradelab.compose).

Templates see `settings`, `stack` (tradelab.stack.Stack), `lab` and the filters
`to_yaml` (a whole YAML block from data, sorted keys), `to_json`, `compose` (the
Stack as a compose document) and `indent`. A missing value is a one-line
TradelabError: "missing configuration value: X in <template>". Output is
deterministic (no timestamps); files whose content did not change are not
rewritten, and files a previous render wrote that are no longer produced are
removed (the list is kept in <out>/.tradelab-rendered, with each file's digest):
only a file inside <out>, reached without a symlink and still holding what the
render wrote, is ever removed. A planted or hand-edited list deletes nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

from tradelab import runbooks, slo_policy
from tradelab.app_image import build_context_files, image_label
from tradelab.const import ALL_SERVICES
from tradelab.durations import parse_duration
from tradelab.errors import TradelabError
from tradelab.files import write_atomic
from tradelab.stack import (
    APP_IMAGE,
    BUILD_CONTEXT,
    SLACK_SECRET,
    USER_DB_SECRET,
    WEBHOOK_SECRET,
    Runtime,
    Stack,
    build_stack,
)

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

MANIFEST = ".tradelab-rendered"
VENDOR = "locust-vendor"  # rendered folder of libraries for the Locust containers
VENDORED = "prometheus_client"  # pure Python, no dependencies: the master's /metrics
_VERBATIM_SUFFIXES = (".json",)


def template_root():
    return resources.files("tradelab") / "templates"


def environment(loader=None):
    """The Jinja environment templates are rendered with (strict, newline-preserving)."""
    import jinja2

    env = jinja2.Environment(
        loader=loader or jinja2.FunctionLoader(_load_template),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["to_yaml"] = to_yaml
    env.filters["to_json"] = lambda data: json.dumps(data, indent=2, sort_keys=True)
    env.filters["compose"] = _compose
    env.filters["seconds"] = lambda text: f"{parse_duration(text):g}"
    env.filters["scaled"] = _scaled
    env.globals["slo_policy"] = slo_policy
    env.globals["runbook_base_url"] = runbooks.base_url
    return env


class _Dumper(yaml.SafeDumper):
    """safe_dump, with multi-line strings (a shell script) as literal blocks."""


def _str(dumper: yaml.SafeDumper, text: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                   style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    """Data as a block of YAML (sorted keys, no trailing newline)."""
    return yaml.dump(_plain(data), Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                     width=1000).rstrip("\n")


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_plain(v) for v in data]
    if isinstance(data, Path):
        return str(data)
    return data


def _compose(stack: Stack, context_label: str | None = None) -> dict[str, Any]:
    from tradelab.compose import compose_document

    return compose_document(stack, context_label)


def _scaled(duration: str, scale: float) -> str:
    """A rule window or `for:` ("5m") times settings.slo.window_scale, as Prometheus
    writes durations: "5m" | scaled(0.1) is "30s"."""
    from tradelab.durations import prometheus_duration

    return duration if scale == 1 else prometheus_duration(parse_duration(duration) * scale)


def _load_template(name: str):
    path = template_root().joinpath(*PurePosixPath(name).parts)
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8"), None, lambda: True


def template_names() -> list[str]:
    """Every file under templates/, as posix paths relative to it, sorted."""
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, rel + "/")
            elif not child.name.endswith((".pyc", "~")):
                names.append(rel)

    walk(template_root(), "")
    return sorted(names)


def wanted(name: str, stack: Stack) -> bool:
    """Rule 2: does the stack need this template's output?"""
    top = name.split("/", 1)[0]
    if name == "docker-compose.yml":
        return stack.runtime == "docker"
    if "/" in name and top in ALL_SERVICES:
        return top in stack.services
    return True


def render_text(env, name: str, context: dict[str, Any]) -> str:
    """One template rendered; Jinja's errors become one-line TradelabErrors."""
    import jinja2

    try:
        return env.get_template(name).render(context)
    except jinja2.UndefinedError as exc:
        raise TradelabError(f"missing configuration value: {_missing(exc)} in {name}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TradelabError(f"template error in {name} line {exc.lineno}: {exc.message}") from None


def _missing(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"has no attribute '([^']+)'", text) or re.search(r"'([^']+)' is undefined",
                                                                     text)
    if m:
        return m.group(1)
    m = re.search(r"no element for key\s*'?([^']+)'?", text)
    return m.group(1) if m else text.splitlines()[0]


def render_files(settings: Settings, lab: Lab, stack: Stack) -> dict[str, bytes]:
    """Output path (relative, posix) -> content, for every file the stack needs."""
    env = environment()
    files: dict[str, bytes] = {}
    label = None
    if stack.runtime == "docker" and any(svc.app for svc in stack.services.values()):
        # Rule 4: the app image's build context, for the compose file's `build:`.
        context_files = build_context_files()
        label = image_label(context_files, stack.base_image)
        files.update({f"{BUILD_CONTEXT}/{rel}": data for rel, data in context_files.items()})
    context = {"settings": settings, "stack": stack, "lab": lab, "app_image": APP_IMAGE,
               "app_context_label": label}
    for name in template_names():
        if not wanted(name, stack):
            continue
        if name.endswith(_VERBATIM_SUFFIXES):
            files[name] = template_root().joinpath(*name.split("/")).read_bytes()
        else:
            files[name] = render_text(env, name, context).encode("utf-8")
    if "locust-master" in stack.services or "locust-worker" in stack.services:
        folder = resources.files("tradelab") / "loadtest"
        if folder.is_dir():
            for child in folder.iterdir():
                if child.name.endswith(".py") and child.is_file():
                    files[f"locust/{child.name}"] = child.read_bytes()
    if any(m.kind == "config" and m.source == VENDOR for svc in stack.services.values()
           for m in svc.mounts):
        files.update(vendored_files(VENDORED, VENDOR))
    return dict(sorted(files.items()))


def vendored_files(distribution: str, prefix: str) -> dict[str, bytes]:
    """The installed files of a pure-Python `distribution` ({prefix}/<path>: content):
    its packages and its license files (under <name>-<version>.dist-info/)."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise TradelabError(f"{distribution} is not installed here, but the lab's Locust "
                            f"containers get it from this installation: "
                            f"pip install {distribution}") from None
    out: dict[str, bytes] = {}
    for item in dist.files or []:
        parts = PurePosixPath(str(item)).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or item.suffix == ".pyc":
            continue  # console scripts live outside site-packages; caches are per machine
        if parts[0].endswith(".dist-info") and not any(
                word in item.name.upper() for word in ("LICENSE", "NOTICE", "METADATA")):
            continue  # RECORD, INSTALLER, ... describe this machine's install, not the code
        path = Path(str(item.locate()))
        if path.is_file():
            out[f"{prefix}/{item}"] = path.read_bytes()
    return out


def render(settings: Settings, lab: Lab, out: Path | None = None, runtime: Runtime = "docker",
           stack: Stack | None = None) -> list[Path]:
    """Write the rendered tree to `out` (default <lab>/rendered); return the files written."""
    stack = stack or build_stack(settings, lab, runtime)
    out = Path(out) if out is not None else stack.rendered_dir
    from tradelab.db_url import split_password

    user_db_password = split_password(settings.database_url)[1] if settings.database_url \
        else None
    for name, value in ((SLACK_SECRET, settings.alerting.slack_webhook_url),
                        (WEBHOOK_SECRET, settings.alerting.webhook_url),
                        (USER_DB_SECRET, user_db_password)):
        if value and any(s.name == name for svc in stack.services.values()
                         for s in svc.secrets):
            lab.write_secret(name, value)  # referenced by file, never inline
    files = render_files(settings, lab, stack)
    inline = _inline_secrets(settings)
    try:
        if stack.runtime == "docker":  # ready for `docker compose up` too
            stack.prepare_host_folders(writable_only=True)
        out.mkdir(parents=True, exist_ok=True)
        previous = _read_manifest(out)
        written = []
        for rel, content in files.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            # Read by containers' other users, unless it holds a credential inline.
            mode = 0o600 if any(v in content for v in inline) else 0o644
            if path.is_symlink() or not path.is_file() or path.read_bytes() != content:
                write_atomic(path, content, mode=mode)
            elif path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)
            written.append(path)
        for rel in sorted(set(previous) - set(files)):
            _remove_stale(out, rel, previous[rel])
        write_atomic(out / MANIFEST, "".join(
            f"{_digest(content)} {rel}\n" for rel, content in files.items()).encode())
    except OSError as exc:
        raise TradelabError(f"cannot write rendered files to {out}: {exc.strerror or exc}; "
                            "choose another folder with --out") from None
    return written


def _inline_secrets(settings: Settings) -> list[bytes]:
    """Credentials a rendered file may still hold verbatim (a tool that cannot read them
    from a file): any file holding one is written 0600, readable by its owner only."""
    from tradelab.db.connect import redact

    values = [settings.alerting.webhook_url]
    if settings.database_url and redact(settings.database_url) != settings.database_url:
        values.append(settings.database_url)
    return [v.encode() for v in values if v]


def render_stack(stack: Stack, settings: Settings, lab: Lab, out: Path) -> list[Path]:
    """render() for a given Stack (a runtime's selection) into `out`."""
    return render(settings, lab, out=out, stack=stack)


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _read_manifest(out: Path) -> dict[str, str]:
    """What the last render wrote: relative path -> sha256 of the content it wrote."""
    path = out / MANIFEST
    if not path.is_file() or path.is_symlink():
        return {}
    entries = {}
    for line in path.read_text(errors="replace").splitlines():
        digest, _, rel = line.partition(" ")
        if len(digest) == 64 and rel:
            entries[rel] = digest
    return entries


def _owned_path(out: Path, rel: str) -> Path | None:
    """out/rel if `rel` names a regular file inside `out` reached without a symlink
    (no absolute path, no `..`), else None."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".", "") for p in parts):
        return None
    path = out
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    return path if path.is_file() else None


def _remove_stale(out: Path, rel: str, digest: str) -> None:
    """Remove a file a previous render wrote and nobody changed since; then its
    emptied folders. Anything else the manifest names is left alone."""
    path = _owned_path(out, rel)
    if path is None or _digest(path.read_bytes()) != digest:
        return
    path.unlink()
    parent = path.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
