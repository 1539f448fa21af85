"""`qwenocr doctor` shows the configuration `scan` will run with, and where each value came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qwenocr.errors import ExitCode

CPU_BOX = ("--platform", "cpu", "--memory", "32")  # a described machine: same report anywhere


def doctor(*args, env_extra=None):
    script = Path(sys.executable).with_name("qwenocr")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "qwenocr"]
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env.update(env_extra or {})
    return subprocess.run(
        command + ["doctor", *args], capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL
    )


def test_json_config_lists_scans_options_with_their_sources(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[scan]\nformat = "jsonl"\nmax_tokens = 1000\n')
    done = doctor(
        "--json",
        *CPU_BOX,
        env_extra={"QWENOCR_CONFIG": str(config), "QWENOCR_MAX_TOKENS": "2048", "QWENOCR_PASSWORD": "hunter2"},
    )
    assert done.returncode in (ExitCode.OK, ExitCode.NOTHING_FITS), done.stderr
    data = json.loads(done.stdout)["config"]
    assert data["command"] == "scan"
    assert data["file"] == str(config) and data["file_found"] is True
    assert data["error"] is None
    options = {o["name"]: o for o in data["options"]}
    assert options["format"]["value"] == "jsonl" and options["format"]["source"] == f"file {config}"
    # The environment wins over the file.
    assert options["max_tokens"]["source"] == "env QWENOCR_MAX_TOKENS"
    assert str(options["max_tokens"]["value"]) == "2048"
    assert options["temperature"]["source"] == "default"
    assert options["password"]["value"] == "***"  # never shown
    assert "hunter2" not in done.stdout


def test_report_has_a_configuration_section():
    done = doctor(*CPU_BOX, env_extra={"QWENOCR_MAX_IMAGE_TOKENS": "1024"})
    assert done.returncode in (ExitCode.OK, ExitCode.NOTHING_FITS), done.stderr
    out = done.stdout
    assert "Configuration" in out
    section = out[out.index("Configuration") :]
    assert "max_image_tokens" in section and "env QWENOCR_MAX_IMAGE_TOKENS" in section
    assert "Config file:" in section


def test_a_bad_scan_setting_is_reported_not_fatal():
    done = doctor("--json", *CPU_BOX, env_extra={"QWENOCR_MAX_TOKENS": "lots"})
    assert done.returncode in (ExitCode.OK, ExitCode.NOTHING_FITS), done.stderr
    data = json.loads(done.stdout)["config"]
    assert "QWENOCR_MAX_TOKENS='lots'" in data["error"] and data["options"] == []
