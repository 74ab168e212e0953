"""lab.hardware and ``rightsizer doctor``: real values from this machine, no mocks."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from lab import hardware, nvml
from lab.cli.doctor import collect as doctor_info
from lab.cli.doctor import doctor as doctor_command
from lab.engine.buildinfo import backends_from_system_info
from lab.store import _MACHINE_COLUMNS, Store

NO_NVML = not nvml.available()


def test_fingerprint_has_exactly_the_machine_columns() -> None:
    from lab.cost import SETTINGS

    fp = hardware.fingerprint()
    # every column but the first sighting and the cost settings the user gives (machine set)
    assert set(fp) == set(_MACHINE_COLUMNS) - {"first_seen"} - set(SETTINGS)


def test_fingerprint_id_is_stable_and_is_the_documented_hash() -> None:
    fp = hardware.fingerprint()
    assert fp["id"] == hardware.fingerprint()["id"]
    # recomputed here from the documented recipe, independently of fingerprint_id()
    stable = {
        "hostname": fp["hostname"], "os": fp["os"], "kernel": fp["kernel"], "arch": fp["arch"],
        "cpu_info": fp["cpu_info"], "cpu_cores": fp["cpu_cores"], "cpu_threads": fp["cpu_threads"],
        "ram_gib": round(psutil.virtual_memory().total / 2**30),
        "gpu_names": [g.name for g in hardware.gpus()],
        "llama_cpp_version": fp["llama_cpp_version"], "build_commit": fp["build_commit"],
        "system_info": fp["system_info"],
    }
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
    assert fp["id"] == digest
    assert len(fp["id"]) == 16 and int(fp["id"], 16) >= 0


def test_fingerprint_is_a_fresh_copy_each_call() -> None:
    fp = hardware.fingerprint()
    fp["hostname"] = "changed"
    assert hardware.fingerprint()["hostname"] != "changed"


def test_fingerprint_figures_are_this_machines() -> None:
    fp = hardware.fingerprint()
    assert fp["ram_bytes"] == psutil.virtual_memory().total == hardware.memory_total()
    assert fp["cpu_threads"] == psutil.cpu_count(logical=True)
    assert fp["cpu_cores"] is not None and fp["cpu_cores"] <= fp["cpu_threads"]
    assert 1 <= hardware.physical_cores() <= fp["cpu_threads"]
    assert fp["hostname"] and fp["arch"] == platform.machine() and fp["kernel"] == platform.release()
    assert fp["python_version"] == platform.python_version()
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            assert fp["cpu_info"] == names[0]
    assert 0 < hardware.memory_available() <= hardware.memory_total()


# What a process that does load llama.cpp reads, for comparison with the engine child's answer.
_READ_IN_A_CHILD = """
import json, llama_cpp
print(json.dumps({"version": llama_cpp.__version__,
                  "system_info": llama_cpp.llama_print_system_info().decode().strip(),
                  "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())}))
"""


def test_llama_cpp_build_is_read_from_the_library() -> None:
    direct = json.loads(subprocess.run([sys.executable, "-c", _READ_IN_A_CHILD], capture_output=True,
                                       text=True, check=True).stdout)
    info = hardware.llama_cpp_info()
    fp = hardware.fingerprint()
    assert info["error"] is None
    assert info["version"] == direct["version"] == fp["llama_cpp_version"]
    assert info["system_info"] == direct["system_info"] == fp["system_info"]
    assert info["gpu_offload"] is direct["gpu_offload"]
    assert fp["gpu_offload"] == int(info["gpu_offload"])
    assert "CPU" in info["backends"]
    assert fp["backends"] == hardware.backends_label(info["backends"])
    # the vendored llama.cpp's git short hash, from ggml_commit(); None only if not exported
    if info["build_commit"] is not None:
        assert int(info["build_commit"].split("-")[0], 16) >= 0
    assert fp["build_commit"] == info["build_commit"]
    # (that this process never loads llama.cpp to answer is checked in a fresh process, by
    # test_the_parent_never_maps_llama_cpp: other tests in this one may have imported it)


def test_build_info_is_cached_per_llama_cpp_python_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = hardware.llama_cpp_info()
    path = hardware.build_cache_path()
    cached = json.loads(path.read_text())
    install = hardware.llama_cpp_install()
    assert cached["install"] == install and install["version"] == real["version"]
    assert Path(install["library"]).name.startswith("libllama") and install["size"] == Path(install["library"]).stat().st_size
    saved = path.read_text()
    try:
        # The cache is what answers for this install (no child asked): a marked copy shows it.
        path.write_text(json.dumps({"install": install, "info": dict(cached["info"], system_info="MARK")}))
        monkeypatch.setattr(hardware, "_build_memo", {})
        assert hardware.llama_cpp_info()["system_info"] == "MARK"
        # Another install (a rebuilt library: another size) asks an engine child again.
        path.write_text(json.dumps({"install": dict(install, size=install["size"] + 1),
                                    "info": dict(cached["info"], system_info="MARK")}))
        monkeypatch.setattr(hardware, "_build_memo", {})
        assert hardware.llama_cpp_info()["system_info"] == real["system_info"]
        assert json.loads(path.read_text())["install"] == install
    finally:
        path.write_text(saved)


# Everything the CLI and the app do in their own process around a bench, then a look at what is mapped.
_PARENT_SCRIPT = """
import json, sys
from lab import hardware
from lab.bench import BenchOptions, plan, run_bench
from lab.cli.doctor import collect
from lab.store import Store
from lab.tui.data import detect_machine

outcome = run_bench(BenchOptions(models=[sys.argv[1]], n_prompt=[8], n_gen=[2], repetitions=1), Store(sys.argv[2]))
fp = hardware.fingerprint()
machine = detect_machine()
info = collect()
plan(BenchOptions(models=[sys.argv[1]]))
maps = open("/proc/self/maps").read().splitlines()
print(json.dumps({
    "status": outcome.status, "results": len(outcome.results), "system_info": fp["system_info"],
    "machine_id": machine.id, "doctor_id": info["id"], "llama_cpp_imported": "llama_cpp" in sys.modules,
    "mapped": sorted({line.split()[-1] for line in maps if "libllama" in line or "libggml" in line}),
}))
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_the_parent_never_maps_llama_cpp(tiny_gguf: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _PARENT_SCRIPT, str(tiny_gguf), str(tmp_path / "lab.db")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["status"] == "ok" and seen["results"] == 2
    assert seen["system_info"] and "CPU" in seen["system_info"]  # the build is known all the same
    assert seen["machine_id"] == seen["doctor_id"] == hardware.fingerprint()["id"]
    assert seen["mapped"] == [] and seen["llama_cpp_imported"] is False


def test_backends_follow_llama_bench_naming() -> None:
    assert hardware.backends_label(["CPU"]) == "CPU"
    assert hardware.backends_label(["CUDA", "CPU"]) == "CUDA"
    assert hardware.backends_label(["Metal", "BLAS", "CPU"]) == "Metal,BLAS"
    assert hardware.backends_label(None) is None
    cuda_info = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 | "
    assert backends_from_system_info(cuda_info, True) == ["CUDA", "CPU"]
    assert backends_from_system_info("CPU : SSE3 = 1 | AVX2 = 1 | ", True) == ["GPU", "CPU"]
    assert backends_from_system_info(None, None) is None


@pytest.mark.skipif(not NO_NVML, reason="this machine has NVML")
def test_without_nvml_gpu_figures_are_none() -> None:
    fp = hardware.fingerprint()
    assert hardware.gpus() == []
    assert fp["gpu_info"] is None and fp["gpu_count"] is None and fp["vram_bytes"] is None
    assert nvml.status().startswith("not available: ")


@pytest.mark.skipif(NO_NVML, reason="no NVML on this machine")
def test_with_nvml_gpus_are_listed() -> None:
    fp = hardware.fingerprint()
    devices = hardware.gpus()
    assert fp["gpu_count"] == len(devices)
    assert nvml.status().startswith("NVML ")
    for gpu in devices:
        assert gpu.memory_total is None or gpu.memory_total > 0


def test_the_store_accepts_the_fingerprint(tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    fp = hardware.fingerprint()
    assert store.upsert_machine(fp) == fp["id"]
    row = store.get("machines", fp["id"])
    assert row["ram_bytes"] == fp["ram_bytes"] and row["first_seen"]
    assert row["gpu_count"] == fp["gpu_count"]
    store.close()


def test_doctor_reports_paths_and_probes(lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # RAPL read from a powercap-shaped tree: one package domain that this process can read
    package = lab_home / "powercap" / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "name").write_text("package-0\n")
    (package / "max_energy_range_uj").write_text("262143328850\n")
    (package / "energy_uj").write_text("1234\n")
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(lab_home / "powercap"))
    info = doctor_info()
    assert info["lab_home"] == str(lab_home)
    assert info["db_path"] == str(lab_home / "rightsizer.db")
    assert info["models_dir"] == str(lab_home / "models")
    assert info["proc_available"] is Path("/proc/self/status").exists()
    assert info["rapl_readable"] is True
    assert info["nvml_available"] is not NO_NVML
    assert info["id"] == hardware.fingerprint()["id"]
    assert info["llama_cpp_error"] is None and info["backend_list"] == hardware.llama_cpp_info()["backends"]
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(lab_home / "no-such-tree"))
    assert doctor_info()["rapl_readable"] is False


@pytest.mark.skipif(not NO_NVML, reason="this machine has NVML")
def test_doctor_command_prints_na_for_gpu() -> None:
    result = CliRunner().invoke(doctor_command, [])
    assert result.exit_code == 0, result.output
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in result.output.splitlines()}
    assert lines["gpu"] == "n/a" and lines["vram"] == "n/a" and lines["gpu count"] == "n/a"
    assert lines["machine id"] == hardware.fingerprint()["id"]
    assert lines["nvml"].startswith("not available")


def test_doctor_command_json() -> None:
    result = CliRunner().invoke(doctor_command, ["-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["id"] == hardware.fingerprint()["id"]
    assert data["ram_bytes"] == psutil.virtual_memory().total
    if NO_NVML:
        assert data["gpu_info"] is None and data["gpu_count"] is None and data["vram_bytes"] is None
        assert data["gpus"] == []
    else:
        assert data["gpu_count"] == len(data["gpus"]) == len(hardware.gpus())


def test_doctor_is_registered_on_the_group() -> None:
    from lab.cli import cli

    assert "doctor" in cli.commands


def test_imports_stay_light() -> None:
    """``rightsizer --help`` imports lab.cli.doctor; that must not pull psutil or llama.cpp,
    and importing lab.hardware must not load llama.cpp."""
    code = ("import sys, lab.cli.doctor; a = 'psutil' in sys.modules; import lab.hardware; "
            "print(a, 'llama_cpp' in sys.modules, 'textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
