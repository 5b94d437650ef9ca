"""experiments/download_size.py adds up what `uv run` downloads from uv.lock: the packages uv installs on
this machine (markers, extras and the dev group followed) and, for each, the wheel it would pick."""

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.markers import default_environment  # noqa: E402
from packaging.tags import sys_tags  # noqa: E402

from experiments import download_size  # noqa: E402

BEST_TAG = next(iter(sys_tags()))  # the most specific wheel tag this interpreter takes
LOCK = f"""
[[package]]
name = "tinygpt"
version = "0.1.0"
dependencies = [
    {{ name = "torch" }},
    {{ name = "numpy", version = "1.0", marker = "python_version < '3'" }},
    {{ name = "numpy", version = "2.0", marker = "python_version >= '3'" }},
]

[package.dev-dependencies]
dev = [{{ name = "pytest" }}]

[[package]]
name = "torch"
version = "2.0"
dependencies = [{{ name = "toolkit", extra = ["blas"] }}, {{ name = "winlib", marker = "sys_platform == 'nowhere'" }}]
wheels = [
    {{ url = "https://x/torch-2.0-py3-none-any.whl", size = 100 }},
    {{ url = "https://x/torch-2.0-{BEST_TAG.interpreter}-{BEST_TAG.abi}-{BEST_TAG.platform}.whl", size = 500 }},
    {{ url = "https://x/torch-2.0-cp27-cp27m-win32.whl", size = 9000 }},
]

[[package]]
name = "toolkit"
version = "1.0"
sdist = {{ url = "https://x/toolkit-1.0.tar.gz", size = 7 }}

[package.optional-dependencies]
blas = [{{ name = "nvidia-blas" }}]

[[package]]
name = "nvidia-blas"
version = "1.0"
wheels = [{{ url = "https://x/nvidia_blas-1.0-py3-none-any.whl", size = 40 }}]

[[package]]
name = "numpy"
version = "1.0"
wheels = [{{ url = "https://x/numpy-1.0-py3-none-any.whl", size = 1000 }}]

[[package]]
name = "numpy"
version = "2.0"
wheels = [{{ url = "https://x/numpy-2.0-py3-none-any.whl", size = 20 }}]

[[package]]
name = "pytest"
version = "8.0"
wheels = [{{ url = "https://x/pytest-8.0-py3-none-any.whl", size = 3 }}]

[[package]]
name = "winlib"
version = "1.0"
wheels = [{{ url = "https://x/winlib-1.0-py3-none-any.whl", size = 60000 }}]
"""


def sizes(groups: tuple[str, ...]) -> dict[str, int]:
    lock = tomllib.loads(LOCK)
    packages = download_size.installed_packages(lock, groups, {**default_environment(), "extra": ""})
    return {package["name"]: download_size.download_bytes(package) for package in packages}


def test_markers_extras_and_groups_decide_what_is_installed_and_the_best_wheel_its_size():
    core = {"torch": 500, "toolkit": 7, "nvidia-blas": 40, "numpy": 20}  # the platform wheel, sdist, extra, marker
    assert sizes(()) == core
    assert sizes(("dev",)) == {**core, "pytest": 3}
