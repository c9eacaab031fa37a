"""`trtopt run ENGINE_DIR --input x.npy`: a quick look at what an engine computes."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run an engine from the repository on saved inputs and print the outputs",
        description="Load engines/NAME (checking backend version, device and file hash) and run "
        "it on inputs from .npy (single-input models) or .npz (arrays named like the inputs).",
    )
    p.add_argument("engine", help="engine folder, e.g. engines/lenet-int8")
    p.add_argument("--input", "--inputs", dest="inputs", required=True, action="append", metavar="FILE|NAME:FILE",
                   help="x.npy, NAME:x.npy (repeatable) or an .npz with one array per input")
    p.add_argument("--save-outputs", metavar="NPZ", help="also write the outputs to this .npz")
    p.add_argument("--top", type=int, default=5, help="for 2-D outputs, print the top-k classes per sample (default 5)")
    p.set_defaults(func=run)


def _read_feed(specs: list[str], input_names: list[str]) -> dict:
    import numpy as np

    from trtopt.errors import UsageError

    feed = {}
    for spec in specs:
        name, sep, path = spec.partition(":")
        if not sep:
            name, path = "", spec
        try:
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):  # lazy members: object arrays fail here, never unpickled
                feed.update({key: loaded[key] for key in loaded.files})
                continue
        except (OSError, ValueError) as exc:
            raise UsageError(f"--input {spec}: cannot read {path}: {exc}") from exc
        if name:
            feed[name] = loaded
        elif len(input_names) == 1:
            feed[input_names[0]] = loaded
        else:
            raise UsageError(
                f"--input {path}: the engine has inputs {input_names}; name them as NAME:{path} or use an .npz"
            )
    return feed


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from trtopt.fileio import atomic_write
    from trtopt.repository import load

    with load(args.engine) as runner:
        feed = _read_feed(args.inputs, [i.name for i in runner.inputs])
        outputs = runner.infer(feed)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}[{'x'.join(map(str, value.shape))}]")
        if value.ndim == 2 and args.top > 0:
            k = min(args.top, value.shape[1])
            for row, scores in enumerate(value):
                best = np.argsort(-scores)[:k]
                print(f"  [{row}] " + ", ".join(f"{int(c)}: {float(scores[c]):.4g}" for c in best))
        else:
            with np.printoptions(precision=4, threshold=40, edgeitems=4):
                print(np.array2string(value, prefix="  "))
    if args.save_outputs:
        atomic_write(args.save_outputs, lambda handle: np.savez(handle, **outputs))
        print(f"outputs written to {args.save_outputs}")
    return 0
