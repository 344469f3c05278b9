"""`bosun dev`'s instance home: the project's dagster.yaml, and `.env` for plain `dagster dev`."""

import os

from orchestration.cli.dev import prepare_dagster_home


def test_the_project_home_links_the_projects_dagster_yaml_and_dotenv_points_dagster_dev_at_it(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (project / ".env").write_text("SOMETHING_ELSE=1\n")
    monkeypatch.setenv("DAGSTER_HOME", "placeholder")  # restored after the test
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    home = prepare_dagster_home(project)
    assert home == (project / ".dagster_home").resolve() and os.environ["DAGSTER_HOME"] == str(home)
    assert (home / "dagster.yaml").resolve() == (project / "dagster.yaml").resolve()  # a link: never stale
    assert (project / ".env").read_text().splitlines()[0] == "SOMETHING_ELSE=1"
    assert f"DAGSTER_HOME={home}" in (project / ".env").read_text().splitlines()
    prepare_dagster_home(project)  # again: nothing added twice
    assert (project / ".env").read_text().count("DAGSTER_HOME=") == 1


def test_a_home_given_elsewhere_leaves_the_project_dotenv_alone(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    prepare_dagster_home(project)
    assert not (project / ".env").exists()
