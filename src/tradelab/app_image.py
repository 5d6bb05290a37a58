"""The app image's build context: what `render` writes to app-image/ and `up` builds from.

    files = build_context_files()            # relative path -> bytes: Dockerfile, pkg/, ...
    image_label(files, "python:3.12-slim")   # the context-hash label either tool builds with

The context is the installed tradelab package with a minimal pyproject.toml, the
Dockerfile shipped as package data and a requirements.txt; an image labelled with
`image_label` of the same files and base image is the same image, whoever built it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

# Run by other processes than the app containers (local runtime, load generator):
# leaving them out keeps the image small and its build quick.
IMAGE_EXCLUDED_DEPS = {"pgserver", "locust", "supervisor"}


def build_context_files() -> dict[str, bytes]:
    """The app image's build context (relative posix path -> content): the Dockerfile
    shipped as package data, requirements.txt and pkg/ (the installed package with a
    minimal pyproject.toml). Also rendered beside the compose file (`tradelab render`)."""
    import tradelab

    dist = importlib.metadata.distribution("tradelab")
    pkg_dir = Path(tradelab.__file__).resolve().parent
    deps = [r for r in (dist.requires or []) if "extra ==" not in r]
    # setuptools + wheel so the package installs with --no-build-isolation (no second fetch).
    reqs = ["setuptools>=68", "wheel"] + [r for r in deps if _dist_name(r) not in
                                           IMAGE_EXCLUDED_DEPS]
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    files = {
        "Dockerfile": (pkg_dir / "Dockerfile").read_bytes(),
        "requirements.txt": ("\n".join(reqs) + "\n").encode(),
        "pkg/pyproject.toml": _pyproject(dist.version, deps, scripts).encode(),
    }
    for path in sorted(pkg_dir.rglob("*")):
        rel = path.relative_to(pkg_dir)
        if path.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info")
                                       for part in rel.parts) and path.suffix != ".pyc":
            files[f"pkg/tradelab/{rel.as_posix()}"] = path.read_bytes()
    return dict(sorted(files.items()))


def context_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel, content in sorted(files.items()):
        digest.update(rel.encode() + b"\0" + content)
    return digest.hexdigest()[:16]


def image_label(files: dict[str, bytes], base_image: str) -> str:
    """The value of LABEL_CONTEXT_HASH for an app image built from `files` on `base_image`."""
    return _hash_with(context_hash(files), base_image)


def _pyproject(version: str, deps: list[str], scripts: dict[str, str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    return "\n".join([
        "[build-system]", 'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"', "",
        "[project]", 'name = "tradelab"', f'version = "{version}"',
        'requires-python = ">=3.11"', f"dependencies = {toml_list(deps)}", "",
        "[project.scripts]", *(f'{k} = "{v}"' for k, v in sorted(scripts.items())), "",
        "[tool.setuptools.packages.find]", 'where = ["."]', 'include = ["tradelab*"]', "",
        "[tool.setuptools.package-data]", 'tradelab = ["**/*"]', "",
    ])


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def _hash_with(context_hash: str, base_image: str) -> str:
    return hashlib.sha256(f"{context_hash}:{base_image}".encode()).hexdigest()[:16]
