"""benchmarks/suite.py: it reads pytest's --durations=0 output into the figures it prints."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("suite", ROOT / "benchmarks" / "suite.py")
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)

LOG = """\
============================= slowest durations ==============================
40.20s setup    tests/test_deploy.py::test_saved_model_serves_raw_files_like_keras
11.50s call     tests/test_deploy.py::test_saved_model_serves_raw_files_like_keras
3.00s call     tests/test_data.py::test_learns_from_files[csv]
0.25s teardown tests/test_data.py::test_learns_from_files[csv]
(120 durations < 0.005s hidden.  Use -vv to show these durations.)
470 passed, 6 warnings in 40.00s (0:00:40)
"""


def test_setup_call_and_teardown_add_up_per_test_and_module():
    wall, per_test = suite.parse(LOG)
    assert wall == 40.0
    assert per_test["tests/test_deploy.py::test_saved_model_serves_raw_files_like_keras"] == 51.7
    assert per_test["tests/test_data.py::test_learns_from_files[csv]"] == 3.25
    text = suite.report(wall, per_test)
    assert "test time summed over the workers: 55 s" in text
    assert "workers busy: 69% of 2 x wall" in text  # 54.95 / 80
    lines = text.splitlines()
    modules = lines[lines.index("modules by summed time (top 15):") + 1:][:2]
    assert modules[0].split() == ["51.7", "s", "tests/test_deploy.py"] and modules[1].split()[-1] == "tests/test_data.py"


def test_a_log_without_a_summary_line_has_no_wall_time():
    wall, per_test = suite.parse("1.00s call     tests/test_x.py::test_y\n")
    assert wall is None and dict(per_test) == {"tests/test_x.py::test_y": 1.0}
    assert "wall" not in suite.report(wall, per_test)


def test_a_missing_or_empty_log_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty.log").write_text("nothing here\n")
    for log, message in ((tmp_path / "none.log", "No such file or directory"),
                         (tmp_path / "empty.log", "no test durations in it")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--log", str(log)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and f"--log {log}: {message}" in proc.stderr and "Traceback" not in proc.stderr
