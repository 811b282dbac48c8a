"""Paths only the defaults take (issue 14.4): settings whose default lies in the source tree
(`ROOT/...`) do not exist where the package is installed, as in the Kubernetes image
(`pip install .`), so the deployment must set each of them. The rules file was one it
missed: every pod would have stopped at start on `site-packages/deploy/rules.toml`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from models.rules import RulesError, RulesFile
from streams.settings import ROOT, Settings
from tests.unit.test_deploy_configs import K8S, env_of, one, worker_container


def source_tree_settings() -> dict[str, str]:
    """Settings whose default is a path inside the source tree."""
    default = Settings()
    return {
        f.name: str(getattr(default, f.name))
        for f in fields(Settings)
        if str(getattr(default, f.name)).startswith(str(ROOT) + os.sep)
    }


def installed_copy(folder: Path) -> Path:
    """The packages as a wheel of this project holds them (pyproject: streams*, models*)."""
    site = folder / "site"
    for package in ("streams", "models"):
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, site / package, ignore=skip)
    return site


def test_the_source_tree_defaults_are_known() -> None:
    assert set(source_tree_settings()) == {"model_dir", "data_dir", "rules"}


def test_installed_the_source_tree_defaults_point_at_nothing(tmp_path: Path) -> None:
    site = installed_copy(tmp_path)
    (tmp_path / "cwd").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "from streams.settings import Settings; print(Settings().rules)"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(site)},
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        check=True,
    )
    rules = Path(done.stdout.strip())
    assert rules.is_relative_to(site) and not rules.exists()


def test_the_deployment_sets_every_setting_that_defaults_into_the_source_tree() -> None:
    env = env_of(worker_container())
    unset = {n for n in source_tree_settings() if "PARCEL_RISK_" + n.upper() not in env}
    assert not unset, f"the image has no source tree: deploy/k8s must set {unset}"


def test_the_rules_configmap_is_deploy_rules_toml_mounted_where_the_worker_reads_it() -> None:
    configmap = yaml.safe_load((K8S / "rules-configmap.yaml").read_text())
    assert configmap["data"]["rules.toml"] == (ROOT / "deploy" / "rules.toml").read_text()
    path = Path(env_of(worker_container())["PARCEL_RISK_RULES"])
    assert path.name == "rules.toml"
    mount = next(
        m for m in worker_container()["volumeMounts"] if m["mountPath"] == str(path.parent)
    )
    assert "subPath" not in mount, "a subPath mount never sees edits: no reload"
    volumes = {v["name"]: v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]


def test_a_missing_rules_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"rules.toml: cannot read .*PARCEL_RISK_RULES"):
        RulesFile(tmp_path / "deploy" / "rules.toml")


def test_the_web_server_binds_where_the_settings_say_and_serves_no_table_views(
    tmp_path: Path,
) -> None:
    """Faust binds to `web_bind` (every interface by default), not to `web_host`: the
    default worker listened on 0.0.0.0, with /table views of names and addresses."""
    from streams.app import create_app

    for host in ("127.0.0.1", "0.0.0.0"):  # the default, and deploy/k8s's
        s = Settings(web_host=host, store="memory://", data_dir=tmp_path)
        app = create_app(s, server=None)  # type: ignore[arg-type]  # only used while running
        assert app.conf.web_bind == host
        assert not app.conf.web_tables_enabled and not app.conf.web_router_enabled
    assert Settings().web_host == "127.0.0.1"
