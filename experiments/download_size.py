"""
What the first `uv run` downloads on this machine, read from uv.lock (no network needed).

    uv run python -m experiments.download_size

uv.lock pins every package for every platform and records the size of each wheel. This walks the
dependencies from the project (with and without the dev group) for this machine's Python, OS and
processor, picks the wheel uv would install, and adds up the sizes: for `uv run` (the project and the
dev group: tests, linting, plots, export checks) and `uv run --no-dev` (torch and numpy alone), and
the part that only a GPU uses (PyTorch's CUDA libraries and Triton). Writes
experiments/results/download_size.json, then regenerates docs/results.md and the README's figures.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import tomllib  # in the standard library from Python 3.11
from packaging.markers import Marker, default_environment
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

if __package__ in (None, ""):  # run as `uv run experiments/download_size.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, report  # noqa: E402
from machinery.results import RESULTS_DIR, ROOT, git_commit  # noqa: E402

LOCK_FILE = ROOT / "uv.lock"
PROJECT = "tinygpt"
GPU_ONLY_PREFIXES = ("nvidia-", "cuda-", "triton")  # PyTorch's CUDA libraries and its GPU kernel compiler


def find_package(packages: list[dict], name: str, version: str | None) -> dict:
    """The lock entry of a dependency: named, and pinned to a version where the lock holds several."""
    matches = [p for p in packages if p["name"] == name and version in (None, p["version"])]
    if len(matches) != 1:
        raise ValueError(f"uv.lock has {len(matches)} entries for {name} {version or ''}")
    return matches[0]


def installed_packages(lock: dict, groups: tuple[str, ...], environment: dict) -> list[dict]:
    """Every package uv installs for the project and the given dependency groups on this environment."""
    packages = lock["package"]
    project = find_package(packages, PROJECT, None)
    pending = list(project.get("dependencies", []))
    for group in groups:
        pending += project.get("dev-dependencies", {}).get(group, [])
    chosen: dict[tuple[str, str], dict] = {}
    while pending:
        dependency = pending.pop()
        if "marker" in dependency and not Marker(dependency["marker"]).evaluate(environment):
            continue
        package = find_package(packages, dependency["name"], dependency.get("version"))
        key = (package["name"], package["version"])
        extras = package.get("optional-dependencies", {})
        pending += [d for extra in dependency.get("extra", []) for d in extras.get(extra, [])]
        if key not in chosen:
            chosen[key] = package
            pending += package.get("dependencies", [])
    return sorted(chosen.values(), key=lambda p: p["name"])


def download_bytes(package: dict) -> int:
    """The size of the file uv downloads for package here: the wheel with the most specific tag this
    interpreter supports (sys_tags lists them best first), else the source archive."""
    rank = {str(tag): i for i, tag in enumerate(sys_tags())}
    ranked = []
    for wheel in package.get("wheels", []):
        _, _, _, tags = parse_wheel_filename(wheel["url"].rsplit("/", 1)[1])
        best = min((rank[str(tag)] for tag in tags if str(tag) in rank), default=None)
        if best is not None:
            ranked.append((best, wheel["size"]))
    if ranked:
        return min(ranked)[1]
    return package["sdist"]["size"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Add up what the first `uv run` downloads here, from uv.lock.")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where download_size.json goes (default: experiments/results)")
    parser.add_argument("--docs-dir", type=Path, default=common.DOCS_DIR,
                        help="where results.md goes (default: docs)")
    args = parser.parse_args(argv)
    lock_text = LOCK_FILE.read_text()
    lock = tomllib.loads(lock_text)
    environment = {**default_environment(), "extra": ""}
    with_dev = installed_packages(lock, ("dev",), environment)
    core = {p["name"] for p in installed_packages(lock, (), environment)}
    packages = [{"name": p["name"], "version": p["version"], "bytes": download_bytes(p),
                 "dev_only": p["name"] not in core, "gpu_only": p["name"].startswith(GPU_ONLY_PREFIXES)}
                for p in with_dev]
    commit, dirty = git_commit()
    result = {"name": "download_size", "kind": "download_size",
              "title": "what the first `uv run` downloads",
              "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
              "uv_run_bytes": sum(p["bytes"] for p in packages),
              "no_dev_bytes": sum(p["bytes"] for p in packages if not p["dev_only"]),
              "gpu_only_bytes": sum(p["bytes"] for p in packages if p["gpu_only"]),
              "packages": packages,
              "provenance": {"uv_lock_sha256": hashlib.sha256(lock_text.encode("utf-8")).hexdigest(),
                             "git_commit": commit, "git_dirty": dirty,
                             "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "command": " ".join(["python", "-m", "experiments.download_size", *argv])}}  # as run
    common.write_result(result, args.results_dir)
    report.build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
