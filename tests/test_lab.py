"""`python -m seresnet.lab`: JupyterLab on loopback with the package's widget settings (the server itself is
started by the browser test, which checks that the setting reaches JupyterLab)."""

import json
import os

import pytest

from seresnet import lab


def test_command_binds_loopback_unless_told_otherwise() -> None:
    assert "--ServerApp.ip=127.0.0.1" in lab.lab_command(["notebooks/"])
    told = lab.lab_command(["--ServerApp.ip=0.0.0.0"])
    assert "--ServerApp.ip=127.0.0.1" not in told and told[-1] == "--ServerApp.ip=0.0.0.0"


def test_environment_puts_package_config_first_and_keeps_the_users() -> None:
    env = lab.lab_environment({"JUPYTER_CONFIG_PATH": os.pathsep.join(["/a", str(lab.CONFIG_DIR)])})
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(lab.CONFIG_DIR), "/a"]
    overrides = json.loads((lab.CONFIG_DIR / "labconfig" / "default_setting_overrides.json").read_text())
    assert overrides[lab.WIDGET_MANAGER_PLUGIN] == {"saveState": True}


def test_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(SystemExit, match="does not exist; expected a folder or notebook"):
        lab.main([str(tmp_path / "nope")])
