"""Open the notebooks in JupyterLab with the settings they need: ``python -m seresnet.lab [FOLDER] [jupyter lab args]``.

Why not plain ``jupyter lab``: by default JupyterLab does not save the state of ipywidgets into a notebook, so a
notebook saved with its widget outputs and opened again shows "Error displaying widget: model not found" where the
explorers were. This launcher turns the widget manager's ``saveState`` on (a default, layered below your own
settings: change it in Settings > Widget Manager) through a Jupyter config folder shipped in the package, and binds
the server to 127.0.0.1. Everything after the folder goes to ``jupyter lab`` unchanged.

Reopened explorers show their last figure and controls; moving a control needs the cell run again (the explorer's
data lives in the kernel, not in the notebook).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"
WIDGET_MANAGER_PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"


def lab_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the package's Jupyter config folder first on
    ``JUPYTER_CONFIG_PATH``, where JupyterLab reads ``labconfig/default_setting_overrides.json``."""
    env = dict(os.environ if base is None else base)
    paths = [str(CONFIG_DIR), *[p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def lab_command(args: list[str]) -> list[str]:
    """The ``jupyter lab`` command line: loopback only unless the caller names another ``--ip``."""
    cmd = [sys.executable, "-m", "jupyter", "lab"]
    if not any(a.startswith(("--ip", "--ServerApp.ip")) for a in args):
        cmd.append("--ServerApp.ip=127.0.0.1")
    return cmd + args


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and not Path(args[0]).exists():
        raise SystemExit(f"seresnet.lab: {args[0]!r} does not exist; expected a folder or notebook to open "
                         "(e.g. notebooks/), then any jupyter lab options")
    if not (CONFIG_DIR / "labconfig" / "default_setting_overrides.json").is_file():
        raise SystemExit(f"seresnet.lab: the package's Jupyter settings are missing from {CONFIG_DIR}; reinstall "
                         "seresnet (pip install -e .)")
    cmd = lab_command(args)
    os.execve(cmd[0], cmd, lab_environment())


if __name__ == "__main__":
    main()
