"""``docs/feedstream.service``: a valid systemd unit that sandboxes the server and reloads it
with SIGHUP. ``systemd-analyze verify`` checks it when installed (``make test`` installs it)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "docs" / "feedstream.service"


def unit() -> dict[str, list[str]]:
    """The ``[Service]`` section, every key with all its values in order (keys repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_the_unit_sandboxes_the_server() -> None:
    service = unit()
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "feedstream",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"][0].endswith("feedstream serve --config /etc/feedstream/feeds.toml")
    assert service["WorkingDirectory"] == ["/var/lib/feedstream"]  # the state directory


def test_the_unit_is_plain_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (make test installs Debian's systemd)")
    # verify checks that ExecStart's program exists: point it at this checkout's command.
    command = Path(sys.executable).with_name("feedstream")
    text = UNIT.read_text().replace("/usr/local/bin/feedstream", str(command))
    copy = tmp_path / "feedstream.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "feedstream.service" not in result.stderr, result.stderr  # no warning about it


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt option and a bad value are reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (make test installs Debian's systemd)")
    command = Path(sys.executable).with_name("feedstream")
    text = UNIT.read_text().replace("/usr/local/bin/feedstream", str(command))
    copy = tmp_path / "feedstream.service"
    copy.write_text(
        text.replace("ProtectHome=yes", "ProtectHome=sometimes").replace("UMask=", "UMsk=")
    )
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "protect home value" in result.stderr and "sometimes" in result.stderr
    assert "Unknown key 'UMsk'" in result.stderr
