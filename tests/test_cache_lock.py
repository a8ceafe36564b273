"""The lock file keeps every digest when several processes record at once (issue 14, item 7)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ("import sys\nfrom vidcls.zoo.cache import record_lock\n"
          "for i in range(50):\n    record_lock(f'{sys.argv[1]}/file{i}', f'{i:064x}')\n")


def test_four_processes_recording_50_digests_each_keep_all_200(tmp_path):
    env = {**os.environ, "VIDCLS_HOME": str(tmp_path)}
    writers = [subprocess.Popen([sys.executable, "-c", RECORD, f"writer{n}"], cwd=ROOT, env=env) for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    files = json.loads((tmp_path / "lock.json").read_text())["files"]
    assert len(files) == 200 and files["writer3/file49"] == f"{49:064x}"
