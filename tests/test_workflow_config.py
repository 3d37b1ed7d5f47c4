"""The workflow service's configuration: ``--check-config`` accepts the example config and a
workflow section, refuses unknown keys with a hint, and the group / alias rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from supie_common.settings import WorkflowSection, load_settings
from supie_workflow import WorkflowSettings
from supie_workflow.groups import normalise_group, resolve_listing, sender_group

ROOT = Path(__file__).resolve().parents[1]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supie_workflow", "--check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_the_example_and_refuses_typos(tmp_path: Path) -> None:
    assert check(ROOT / "config.example.yaml").returncode == 0
    good = tmp_path / "good.yaml"
    good.write_text(
        "workflow:\n  device_groups: {'aa:bb:cc:dd': Team-A}\n  snapshot_debounce_ms: 800\n"
    )
    assert check(good).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow:\n  max_task_per_group: 3\n")
    out = check(bad)
    assert out.returncode == 2
    assert "workflow.max_task_per_group: unknown key" in out.stderr
    assert "did you mean workflow.max_tasks_per_group" in out.stderr


def test_settings_load_the_workflow_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("workflow:\n  device_alias: {dev-1: Ann}\n  max_tasks_per_group: 7\n")
    settings = load_settings(WorkflowSettings, path)
    assert settings.workflow.alias_of("dev-1") == "Ann"
    assert settings.workflow.alias_of("dev-2") == "dev-2"
    assert settings.workflow.max_tasks_per_group == 7


def test_group_rules() -> None:
    cfg = WorkflowSection(device_groups={"badge-007": "Team-Alpha"})
    assert sender_group("aa:bb:cc:dd:ee:ff", None, cfg) == "aa:bb:cc"
    assert sender_group("badge-007", "", cfg) == "Team-Alpha"
    assert sender_group("badge-007", "from-gw", cfg) == "from-gw"  # the gateway's word wins
    assert normalise_group("TEAM-ALPHA", cfg) == "Team-Alpha"  # configured: its spelling
    assert normalise_group(" AA:BB:CC:DD:EE:FF ", cfg) == "aa:bb:cc"
    assert normalise_group("  ", cfg) is None and normalise_group(None, cfg) is None
    known = {"aa:bb:cc", "Team-Alpha"}
    assert resolve_listing("aa:bb:cc:dd:ee:ff", known, cfg) == "aa:bb:cc"
    assert resolve_listing("Team-Alpha", known, cfg) == "Team-Alpha"
    assert resolve_listing("zz:yy:xx:ww", known, cfg) == "zz:yy:xx"
