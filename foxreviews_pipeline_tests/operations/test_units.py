"""The systemd units start the services with the commands the README documents and the
end-to-end test runs, from the project folder, and stop them with SIGINT."""

from __future__ import annotations

import configparser
import re

from foxreviews_pipeline.lib.settings import PROJECT_ROOT

UNITS = PROJECT_ROOT / "deploy" / "systemd"
SERVICES = {
    "foxreviews-code-server.service": "dagster code-server start -m foxreviews_pipeline.definitions",
    "foxreviews-webserver.service": "dagster-webserver -w deploy/workspace.yaml",
    "foxreviews-daemon.service": "dagster-daemon run -w deploy/workspace.yaml",
}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


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
