"""The installed package is the whole package: a wheel built from this tree carries every module and every file the
package reads at run time (checkpoints, the CIFAR-10 sample, the JupyterLab settings), not only what an editable
install happens to see."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_carries_every_file_of_the_package(tmp_path: Path) -> None:
    # build from a clean copy: a build/ folder left in the work tree would hand setuptools files it no longer selects
    src = tmp_path / "src"
    shutil.copytree(ROOT / "seresnet", src / "seresnet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("seresnet-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("seresnet/")}
    package = ROOT / "seresnet"
    source = {f.relative_to(ROOT).as_posix() for f in package.rglob("*")
              if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}
    assert source - packaged == set(), "files of the package that an installed copy would lack"
    assert sum(name.startswith("seresnet/sample/cifar10-test-sample/") for name in packaged) == 1000
