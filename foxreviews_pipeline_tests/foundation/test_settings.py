import subprocess
import sys

import pytest

from foxreviews_pipeline.lib.settings import ConfigurationError, load_settings, redact_url


def test_defaults_are_the_embedded_sample_platform():
    settings = load_settings({})
    assert settings.uses_embedded_database
    assert settings.sirene_source == "sample"
    assert settings.insee_requests_per_minute == 30
    assert settings.insee_base_url == "https://api.insee.fr/api-sirene/3.11"
    assert settings.upload_dir == settings.home / "uploads"
    assert settings.home.name == ".foxreviews"


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"FOXREVIEWS_SIRENE_SOURCE": "ftp"}, "FOXREVIEWS_SIRENE_SOURCE"),
        ({"FOXREVIEWS_DATABASE_URL": "mysql://root@localhost/x"}, "FOXREVIEWS_DATABASE_URL"),
        ({"FOXREVIEWS_DATABASE_URL": "postgresql://u@h:notaport/db"}, "FOXREVIEWS_DATABASE_URL"),
        ({"FOXREVIEWS_DATABASE_URL": "postgresql://u@h:5432"}, "FOXREVIEWS_DATABASE_URL"),
        ({"FOXREVIEWS_SIRENE_SOURCE": "api"}, "FOXREVIEWS_INSEE_API_KEY"),
        ({"FOXREVIEWS_INSEE_BASE_URL": "api.insee.fr"}, "FOXREVIEWS_INSEE_BASE_URL"),
        ({"FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE": "fast"}, "FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE"),
        ({"FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE": "0"}, "FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE"),
        ({"FOXREVIEWS_SIRENE_SOURCE": "stock"}, "FOXREVIEWS_SIRENE_STOCK_PATH"),
    ],
)
def test_wrong_values_name_the_variable(env, variable):
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(env)
    message = str(excinfo.value)
    assert variable in message
    assert "\n" not in message


def test_secrets_never_show_in_the_settings_repr():
    settings = load_settings(
        {
            "FOXREVIEWS_SIRENE_SOURCE": "api",
            "FOXREVIEWS_INSEE_API_KEY": "s3cr3t-key",
            "FOXREVIEWS_DATABASE_URL": "postgresql://app:hunter2@db.example:5432/fox",
        }
    )
    text = repr(settings)
    assert "s3cr3t-key" not in text and "hunter2" not in text
    assert redact_url("postgresql://app:hunter2@db:5432/fox") == "postgresql://app:***@db:5432/fox"


def _cli(args, env):
    return subprocess.run(
        [sys.executable, "-m", "foxreviews_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    "name, value",
    [("FOXREVIEWS_SIRENE_SOURCE", "ftp"), ("FOXREVIEWS_DATABASE_URL", "postgresql://u@h:99999999/db")],
)
def test_cli_fails_at_start_up_with_one_line_naming_the_variable(name, value, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_")}
    env[name] = value
    env["FOXREVIEWS_HOME"] = str(tmp_path)
    result = _cli(["check"], env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


def test_definitions_refuse_to_load_with_a_wrong_source(tmp_path):
    """Importing the code location reads nothing; loading it (what Dagster does) validates
    the settings and names the variable, first and last."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_")}
    env.update(FOXREVIEWS_SIRENE_SOURCE="ftp", FOXREVIEWS_HOME=str(tmp_path))
    code = "from foxreviews_pipeline.definitions import defs\nprint('imported', flush=True)\ndefs()"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode != 0
    assert result.stdout == "imported\n"
    message = "FOXREVIEWS_SIRENE_SOURCE must be one of sample, api, stock, got 'ftp'"
    assert result.stderr.splitlines()[0] == f"foxreviews: {message}"
    assert message in result.stderr.splitlines()[-1]


def test_verbatim_names_the_variables_the_environment_states_as_the_settings_hold_them(
    monkeypatch, tmp_path
):
    import os

    for name in [n for n in os.environ if n.startswith("FOXREVIEWS_")]:
        monkeypatch.delenv(name)
    env = {
        "FOXREVIEWS_HOME": str(tmp_path / "home"),
        "FOXREVIEWS_SIRENE_SOURCE": "API",  # normalized: not as stated
        "FOXREVIEWS_INSEE_API_KEY": "k",
        "FOXREVIEWS_INSEE_BASE_URL": "https://insee.example/api/",  # trailing slash dropped
        "FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE": "60",
        "FOXREVIEWS_RAW_RETENTION_DAYS": "045",
        "FOXREVIEWS_PARTITIONS_START": "2026-03-01",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings().verbatim == {
        "FOXREVIEWS_HOME", "FOXREVIEWS_INSEE_API_KEY", "FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE",
        "FOXREVIEWS_PARTITIONS_START",
    }
    # Read from a mapping, not from the environment Dagster resolves a variable from: none.
    assert load_settings(env).verbatim == frozenset()


# -- alerts: the webhook and the webserver's URL -------------------------------------------


def test_alerts_are_off_and_link_to_the_local_webserver_by_default():
    settings = load_settings({})
    assert settings.alert_webhook_url is None
    assert settings.ui_url == "http://127.0.0.1:3000"
    assert "alert_webhook=unset" in repr(settings)


def test_the_alert_settings_are_read_and_the_webhook_never_shows():
    webhook = "https://hooks.slack.com/services/T000/B000/s3cr3t?token=t0k3n"
    settings = load_settings(
        {"FOXREVIEWS_ALERT_WEBHOOK_URL": f" {webhook} ", "FOXREVIEWS_UI_URL": "https://dagster.fox.example/"}
    )
    assert settings.alert_webhook_url == webhook
    assert settings.ui_url == "https://dagster.fox.example"  # links are built under it
    text = repr(settings)
    assert "s3cr3t" not in text and "t0k3n" not in text and "hooks.slack.com" in text


@pytest.mark.parametrize(
    "variable, value",
    [
        ("FOXREVIEWS_ALERT_WEBHOOK_URL", "hooks.slack.com/services/T000/B000/s3cr3t"),
        ("FOXREVIEWS_ALERT_WEBHOOK_URL", "ftp://hooks.example/s3cr3t"),
        ("FOXREVIEWS_ALERT_WEBHOOK_URL", "https://:99999999/s3cr3t"),
        ("FOXREVIEWS_ALERT_WEBHOOK_URL", "https://hooks.example:notaport/s3cr3t"),
        ("FOXREVIEWS_UI_URL", "localhost:3000"),
    ],
)
def test_a_malformed_alert_setting_names_its_variable_in_one_line(variable, value):
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings({variable: value})
    message = str(excinfo.value)
    assert variable in message and "\n" not in message
    assert "s3cr3t" not in message  # the webhook's credential is not repeated
