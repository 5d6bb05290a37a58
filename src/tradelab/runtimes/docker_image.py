"""Images for the Docker runtime: pull what is missing, build the app image from the package.

    needs = [Need("postgres:16.6-bookworm", "images.postgres", "postgres")]
    missing = unobtainable(client, needs)      # [(need, why)]: neither here nor pullable
    image_id = ensure_image(client, "postgres:16.6-bookworm", "postgres", echo)
    app_id = ensure_app_image(client, "tradelab:0.1.0", "python:3.12-slim-bookworm",
                              build=True, echo=echo)
    remove_replaced_app_images(client)   # after `up` recreated the containers of old images

The app image is built from the *installed* package, not from a source checkout: the
package directory (wherever Python imports `tradelab` from: site-packages after a wheel
install, src/ in an editable checkout) is copied into a build context with a minimal
pyproject.toml made from the distribution's metadata, next to the Dockerfile shipped as
package data. Both kinds of install therefore build the same way. `tradelab up` builds
from the context `render` writes to <lab>/rendered/app-image/, which the compose file
builds from too; without one, a temporary context is written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tradelab.app_image import build_context_files, image_label
from tradelab.const import LABEL_CONTEXT_HASH
from tradelab.errors import TradelabError


def image_present(client, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


@dataclass(frozen=True)
class Need:
    """An image `up` must have: its reference, the setting it comes from, who uses it."""

    ref: str
    setting: str  # "images.postgres", "build.base_image"
    used_by: str  # "postgres", "the app image's base"


def why_not_here(client, ref: str) -> str | None:
    """None when image `ref` is here or a registry has it (asked, not pulled); else why not."""
    from docker.errors import DockerException

    if image_present(client, ref):
        return None
    try:
        client.images.get_registry_data(ref)
        return None
    except DockerException as exc:
        return _first_line(exc)


def unobtainable(client, needs: list[Need]) -> list[tuple[Need, str]]:
    """Each image of `needs` that is neither here nor pullable, with why: every one is
    asked once, before anything is pulled, built or created."""
    return [(need, why) for need in needs if (why := why_not_here(client, need.ref))]


def unobtainable_error(missing: list[tuple[Need, str]]) -> str:
    """One line naming every image that cannot be had, and both ways out."""
    reasons = {why for _, why in missing}
    shared = f" ({reasons.pop()})" if len(reasons) == 1 else ""
    listed = ", ".join(f"{need.ref} for {need.used_by} ({need.setting})"
                       + ("" if shared else f": {why}") for need, why in missing)
    count = f"{len(missing)} images" if len(missing) > 1 else "an image"
    kinds = dict.fromkeys("images.KEY" if need.setting.startswith("images.") else need.setting
                          for need, _ in missing)
    return (f"Docker cannot get {count} the lab needs{shared}: {listed}; set "
            f"{' and '.join(kinds)} in tradelab.yaml to a mirror or an image built here, "
            "or run without Docker: `tradelab up --runtime local`")


def app_image_needs_base(client, ref: str, base_image: str, build: bool,
                         context: Path | None) -> bool:
    """Whether getting the app image `ref` builds it (and so needs `base_image`): it is
    missing, or `build` and it was not built from this context on this base."""
    if not image_present(client, ref):
        return True
    if not build:
        return False
    files = (_read_context(context) if context is not None and context.is_dir()
             else build_context_files())
    return (client.images.get(ref).labels or {}).get(LABEL_CONTEXT_HASH) != image_label(
        files, base_image)


def ensure_image(client, ref: str, key: str, echo: Callable[[str], None]) -> str:
    """The id of image `ref`, pulled (with progress) when missing."""
    from docker.errors import DockerException, ImageNotFound

    try:
        return client.images.get(ref).id
    except ImageNotFound:
        pass
    echo(f"pulling {ref}")
    repo, tag = _split_ref(ref)
    shown: dict[str, str] = {}
    try:
        for event in client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise TradelabError(_pull_error(ref, key, event["error"]))
            layer, status = event.get("id"), event.get("status", "")
            # One line per layer and phase, not one per progress tick.
            if layer and status not in ("", "Downloading", "Extracting") \
                    and shown.get(layer) != status:
                shown[layer] = status
                echo(f"  {ref} {layer}: {status}")
        return client.images.get(ref).id
    except DockerException as exc:
        raise TradelabError(_pull_error(ref, key, _first_line(exc))) from None


def ensure_app_image(client, ref: str, base_image: str, build: bool,
                     echo: Callable[[str], None], context: Path | None = None) -> str:
    """The id of the app image `ref`; built from the installed package when asked or missing.

    `context` is a folder already holding build_context_files() (the rendered
    app-image/ the compose file builds from too); without it a temporary one is written.
    With the build cache a rebuild of unchanged code takes seconds and yields the same
    image id, so containers are only recreated when the code really changed.
    """
    if not build and image_present(client, ref):
        return client.images.get(ref).id
    if context is not None:
        image_id = _ensure_built(client, context, _read_context(context), ref, base_image, echo)
    else:
        with tempfile.TemporaryDirectory(prefix="tradelab-build-") as tmp:
            files = build_context_files()
            _write_context(Path(tmp), files)
            image_id = _ensure_built(client, Path(tmp), files, ref, base_image, echo)
    remove_replaced_app_images(client)
    return image_id


def _ensure_built(client, context: Path, files: dict[str, bytes], ref: str,
                  base_image: str, echo: Callable[[str], None]) -> str:
    """The image `ref` if its label says it was built from `files` on `base_image`, else
    a new build of `context`."""
    label = image_label(files, base_image)
    try:
        current = client.images.get(ref)
        if (current.labels or {}).get(LABEL_CONTEXT_HASH) == label:
            return current.id
    except Exception:  # noqa: BLE001 - missing: build it
        pass
    echo(f"building {ref} on {base_image}")
    return _build(client, context, ref, base_image, label, echo)


def remove_replaced_app_images(client) -> int:
    """Remove app images a rebuild left untagged, unless a container still uses them.

    Each rebuild of changed code moves the tag and leaves the old image behind as
    <none>. One still used by a container (the lab's own, until `up` recreates it) is
    refused by Docker and stays until a later call: call this again after that `up`.
    """
    from docker.errors import DockerException

    try:
        stale = client.images.list(filters={"dangling": True, "label": LABEL_CONTEXT_HASH})
    except DockerException:
        return 0
    removed = 0
    for image in stale:
        try:
            client.images.remove(image.id)  # no force: an image in use is refused
            removed += 1
        except DockerException:
            pass
    return removed


def _build(client, context: Path, ref: str, base_image: str, context_hash: str,
           echo: Callable[[str], None]) -> str:
    from docker.errors import DockerException

    last: list[str] = []
    try:
        stream = client.api.build(
            path=str(context), tag=ref, buildargs={"BASE_IMAGE": base_image}, rm=True,
            forcerm=True, decode=True, labels={LABEL_CONTEXT_HASH: context_hash})
        for event in stream:
            if "error" in event:
                raise TradelabError(_build_error(ref, base_image, event["error"], last))
            text = (event.get("stream") or "").rstrip()
            if text:
                last = (last + text.splitlines())[-15:]
                if text.startswith("Step "):
                    echo(f"  {text}")
    except DockerException as exc:
        raise TradelabError(_build_error(ref, base_image, _first_line(exc), last)) from None
    return client.images.get(ref).id


def _write_context(dest: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _read_context(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _split_ref(ref: str) -> tuple[str, str]:
    if "@" in ref:
        return ref, None  # type: ignore[return-value]
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        return ref, "latest"
    return repo, tag


def _pull_error(ref: str, key: str, reason: str) -> str:
    return (f"cannot pull image {ref}: {reason.strip().splitlines()[0] if reason.strip() else ''}; "
            f"set images.{key} in tradelab.yaml to a mirror or a local image")


def _build_error(ref: str, base_image: str, reason: str, last: list[str]) -> str:
    if "pull access denied" in reason or "manifest unknown" in reason or \
            "not found" in reason and base_image.split(":")[0] in reason:
        return (f"cannot build {ref}: base image {base_image} cannot be pulled ({reason.strip()}); "
                "set build.base_image in tradelab.yaml to a mirror or a local image")
    tail = "\n".join(last[-10:])
    more = f"; last build output:\n{tail}" if tail else ""
    return f"cannot build {ref}: {reason.strip()}{more}"


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
