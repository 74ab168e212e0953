"""The Ansible playbook in deploy/, run for real: two inventory hosts that both are this machine
(ansible_connection=local) with their own lab homes, each running a bundled tiny plan, their
databases fetched and merged into one on the control side."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bundle import bundle
from lab.plan import load_plan

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "deploy" / "rightsizer.yml"


def _run_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("select id from runs where status = 'ok' and plan_step is not null")}


@pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                    reason="ansible-playbook is not installed (pip install ansible-core)")
def test_playbook_runs_the_plan_on_two_hosts_and_merges(tmp_path: Path, tiny_gguf: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(f'name = "fleet"\n[[models]]\npath = "{tiny_gguf}"\n'
                    '[[bench]]\nn_prompt = 8\nn_gen = 2\nrepetitions = 1\nthreads = 1\n')
    bundle(load_plan(plan), tmp_path / "bundle", wheels=False)
    homes = {"host-a": tmp_path / "a" / "home", "host-b": tmp_path / "b" / "home"}
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[devices]\n" + "".join(
        f"{host} ansible_connection=local ansible_python_interpreter={sys.executable} "
        f"rightsizer_home={home} rightsizer_remote_dir={home.parent / 'bundle'} rightsizer_machine_name={host}\n"
        for host, home in homes.items()))
    lab = f"{sys.executable} -m lab"
    extra = {"bundle_dir": str(tmp_path / "bundle"), "rightsizer_command": lab, "rightsizer_control_command": lab,
             "rightsizer_environment": {"PYTHONPATH": str(ROOT)}, "rightsizer_python": sys.executable,
             "rightsizer_collect_dir": str(tmp_path / "collected"), "rightsizer_merged_db": str(tmp_path / "fleet.db")}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), str(PLAYBOOK), "-e", f"@{tmp_path / 'extra.json'}"],
                          capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    per_host = {host: _run_ids(tmp_path / "collected" / f"{host}.db") for host in homes}
    assert all(len(ids) == 1 for ids in per_host.values())  # one bench run per host
    assert per_host["host-a"] != per_host["host-b"]
    for host, home in homes.items():  # the fetched file is the host's own database
        assert _run_ids(home / "rightsizer.db") == per_host[host]
    merged = tmp_path / "fleet.db"
    assert _run_ids(merged) == per_host["host-a"] | per_host["host-b"]
    with sqlite3.connect(merged) as conn:
        tests = sorted(r[0] for r in conn.execute("select test from results"))
        machines = sorted(r[0] for r in conn.execute(
            "select m.hostname from runs u join machines m on m.id = u.machine_id where u.plan_step is not null"))
    assert tests == ["pp8", "pp8", "tg2", "tg2"]
    assert machines == ["host-a", "host-b"]  # both hosts are this machine, stored under their inventory names
