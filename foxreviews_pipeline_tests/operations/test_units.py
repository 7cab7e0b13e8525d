"""The systemd units start the services with the commands the README documents and the
end-to-end test runs, from the project folder, and stop them with SIGINT. They are
sandboxed, the webserver and the daemon wait for the code server, and the guide that installs
them keeps the INSEE key private and checks the daemon with a stated heartbeat tolerance."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import time

import pytest

from foxreviews_pipeline.lib.settings import PROJECT_ROOT
from foxreviews_pipeline_tests.operations.conftest import bare_env, tool

UNITS = PROJECT_ROOT / "deploy" / "systemd"
GUIDE = PROJECT_ROOT / "deploy" / "README.md"
SERVICES = {
    "foxreviews-code-server.service": "dagster code-server start -m foxreviews_pipeline.definitions",
    "foxreviews-webserver.service": "dagster-webserver -w deploy/workspace.yaml",
    "foxreviews-daemon.service": "dagster-daemon run -w deploy/workspace.yaml",
}
ALL_UNITS = [*SERVICES, "foxreviews-db.service"]
WAITING_UNITS = ["foxreviews-webserver.service", "foxreviews-daemon.service"]
HEARTBEAT_TOLERANCE = "DAGSTER_DAEMON_HEARTBEAT_TOLERANCE"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


def _words(value: str) -> list[str]:
    return value.split()


def _install_block() -> str:
    """The guide's install commands (its first bash block), without their comments."""
    match = re.search(r"```bash\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert match, "deploy/README.md has no bash block"
    lines = [line.split(" #", 1)[0].rstrip() for line in match.group(1).splitlines()]
    return "".join(f"{line}\n" for line in lines if not line.startswith("#"))


def _guide_env_file() -> dict[str, str]:
    """The settings the guide writes into `.env` (its here-document)."""
    body = re.search(r"\.env' <<'ENV'\n(.*?)\nENV\n", _install_block(), re.DOTALL)
    assert body, "the guide does not write .env from a here-document"
    return dict(line.split("=", 1) for line in body.group(1).splitlines())


def _code_server_port() -> str:
    exec_start = _unit("foxreviews-code-server.service")["Service"]["ExecStart"]
    return re.search(r" -p (\d+)", exec_start).group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_dagster_service_is_its_own_unit_run_like_the_readme():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name, command in SERVICES.items():
        service = _unit(name)["Service"]
        exec_start = service["ExecStart"]
        assert exec_start.startswith("/opt/foxreviews/.venv/bin/"), name
        assert command in exec_start, name
        # The same command, in the README, run from the project folder.
        readme_line = re.search(rf"^\.venv/bin/{re.escape(command)}.*$", readme, re.MULTILINE)
        assert readme_line, f"README does not show {command!r}"
        assert exec_start.removeprefix("/opt/foxreviews/") == readme_line.group(0), name
        assert service["WorkingDirectory"] == "/opt/foxreviews", name  # its .env is read
        assert service["KillSignal"] == "SIGINT", name
        assert service["Restart"] == "always", name
        assert "foxreviews-db.service" in _unit(name)["Unit"]["After"], name


def test_the_database_unit_starts_before_the_services():
    service = _unit("foxreviews-db.service")["Service"]
    assert service["ExecStart"].endswith("foxreviews db start")
    assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"


def test_the_workspace_points_at_the_code_server_port():
    import yaml

    workspace = yaml.safe_load((PROJECT_ROOT / "deploy" / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    code_server = _unit("foxreviews-code-server.service")["Service"]["ExecStart"]
    assert f"-p {entry['grpc_server']['port']}" in code_server
    assert f"--location-name {entry['grpc_server']['location_name']}" in code_server


# -- sandbox ----------------------------------------------------------------------------------

SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    # No capability at all: the services run as an ordinary user.
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("name", ALL_UNITS)
def test_every_unit_is_sandboxed(name):
    service = _unit(name)["Service"]
    for key, value in SANDBOX.items():
        assert service.get(key) == value, f"{name}: {key}={service.get(key)!r}, expected {value!r}"
    assert service["User"] == "foxreviews", name
    # New files (landed days, uploads) are not readable by other users.
    assert int(service["UMask"], 8) & 0o007 == 0o007, name


@pytest.mark.parametrize("name", ALL_UNITS)
def test_the_only_writable_folder_is_the_guides_foxreviews_home(name):
    """ProtectSystem=strict makes everything read-only: the folder the platform writes in
    (FOXREVIEWS_HOME of the guide's .env, which holds the upload folder by default) must be
    the one the unit opens, or every write fails."""
    settings = _guide_env_file()
    home = settings["FOXREVIEWS_HOME"]
    assert "FOXREVIEWS_UPLOAD_DIR" not in settings  # else: it must be writable too
    assert _words(_unit(name)["Service"]["ReadWritePaths"]) == [home], name
    # The guide creates it before the units start (a missing path fails the sandbox set-up).
    assert re.search(rf"^sudo install -d .*-o foxreviews .*{re.escape(home)}$",
                     _install_block(), re.MULTILINE)


# -- start order --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WAITING_UNITS)
def test_the_webserver_and_the_daemon_start_once_the_code_server_answers(name):
    unit = _unit(name)
    assert "foxreviews-code-server.service" in _words(unit["Unit"]["After"]), name
    assert "foxreviews-code-server.service" in _words(unit["Unit"]["Wants"]), name
    # Not Requires=: restarting the code server (a code deployment) must not restart them.
    assert "foxreviews-code-server.service" not in _words(unit["Unit"].get("Requires", "")), name

    wait = shlex.split(unit["Service"]["ExecStartPre"])
    # A bounded wait, shorter than the unit's start timeout.
    assert wait[0] == "/usr/bin/timeout", name
    assert int(wait[1]) < int(unit["Service"]["TimeoutStartSec"]), name
    script = wait[-1]
    assert "/opt/foxreviews/.venv/bin/dagster api grpc-health-check" in script, name
    assert f"-h 127.0.0.1 -p {_code_server_port()}" in script, name
    assert "$" not in unit["Service"]["ExecStartPre"], "systemd would expand it"


def _wait_command(name: str, port: int, seconds: int) -> list[str]:
    """The unit's ExecStartPre, pointed at this venv and `port`, bounded by `seconds`."""
    wait = shlex.split(_unit(name)["Service"]["ExecStartPre"])
    wait[1] = str(seconds)
    wait[-1] = (
        wait[-1]
        .replace("/opt/foxreviews/.venv/bin/dagster", tool("dagster"))
        .replace(f"-p {_code_server_port()}", f"-p {port}")
    )
    return wait


def test_the_wait_gives_up_when_no_code_server_answers(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        _wait_command("foxreviews-daemon.service", _free_port(), seconds=3),
        cwd=tmp_path, env=bare_env(), capture_output=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_the_wait_ends_once_the_code_server_answers(tmp_path):
    port = _free_port()
    home = tmp_path / "home"
    env = bare_env(FOXREVIEWS_HOME=str(home), FOXREVIEWS_DATABASE_URL="postgresql://u:p@127.0.0.1:1/x")
    log = (tmp_path / "code_server.log").open("wb")
    server = subprocess.Popen(
        [tool("dagster"), "code-server", "start", "-m", "foxreviews_pipeline.definitions",
         "--location-name", "foxreviews", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        result = subprocess.run(
            _wait_command("foxreviews-webserver.service", port, seconds=120),
            cwd=tmp_path, env=bare_env(), capture_output=True, timeout=180, check=False,
        )
        assert result.returncode == 0, (tmp_path / "code_server.log").read_text()[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


# -- the guide: a private .env, a stated heartbeat tolerance ----------------------------------


def test_the_guide_writes_the_env_file_readable_by_its_owner_only(tmp_path):
    """The guide's commands that create `.env`, run as written (without sudo), leave it with
    mode 0600 and the key in it, even under a permissive umask and over an existing
    world-readable file."""
    block = _install_block()
    assert "tee -a" not in block
    assert "FOXREVIEWS_INSEE_API_KEY" in _guide_env_file()
    start = block.index("install -m 600")
    end = block.index("\nENV\n", start) + len("\nENV\n")
    commands = block[block.rindex("\n", 0, start) + 1:end]
    # Every write to .env is in those lines, after the file is made private.
    assert re.findall(r"\.env\b", block) == re.findall(r"\.env\b", commands)
    local = commands.replace("sudo -u foxreviews ", "").replace("sudo ", "")
    local = local.replace(" -o foxreviews -g foxreviews", "")
    env_file = tmp_path / ".env"
    env_file.write_text("FOXREVIEWS_INSEE_API_KEY=old\n")
    env_file.chmod(0o644)
    subprocess.run(["bash", "-euc", f"umask 022\n{local}"], cwd=tmp_path, check=True, timeout=30)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "FOXREVIEWS_INSEE_API_KEY=…" in env_file.read_text()
    assert "=old" not in env_file.read_text()


def _tolerance_in_guide() -> str:
    """The heartbeat tolerance the guide passes to every liveness check it recommends."""
    lines = [line for line in GUIDE.read_text().splitlines() if "liveness-check" in line]
    commands = [line for line in lines if "dagster-daemon liveness-check" in line]
    assert commands, "the guide recommends no liveness check"
    values = set()
    for line in commands:
        match = re.search(rf"{HEARTBEAT_TOLERANCE}=(\d+) \S*dagster-daemon liveness-check", line)
        assert match, f"a liveness check without a heartbeat tolerance: {line!r}"
        values.add(match.group(1))
    assert len(values) == 1, values
    return values.pop()


def test_the_daemon_and_the_guides_liveness_check_share_one_heartbeat_tolerance():
    tolerance = _tolerance_in_guide()
    # Shorter than Dagster's default (1800 s), longer than a few heartbeats (every 30 s).
    assert 120 <= int(tolerance) < 1800
    daemon = _unit("foxreviews-daemon.service")["Service"]
    assert f"{HEARTBEAT_TOLERANCE}={tolerance}" in _words(daemon["Environment"])


def test_dagster_reads_the_heartbeat_tolerance_from_that_variable(monkeypatch):
    """The guide and the units name the variable `dagster-daemon` reads; a renamed variable
    would silently bring back the default."""
    from dagster._daemon.cli import _get_heartbeat_tolerance

    monkeypatch.setenv(HEARTBEAT_TOLERANCE, _tolerance_in_guide())
    assert _get_heartbeat_tolerance() == int(_tolerance_in_guide())
    monkeypatch.delenv(HEARTBEAT_TOLERANCE)
    assert _get_heartbeat_tolerance() != int(_tolerance_in_guide())

