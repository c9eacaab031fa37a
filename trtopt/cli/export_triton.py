"""`trtopt export-triton ENGINE_DIR... --repository DIR`: a Triton Inference Server model repository."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-triton",
        help="write a Triton model repository (config.pbtxt + 1/model.plan|model.onnx) from engine folders",
        description="For each engine folder (or folder of engines) write DIR/NAME/config.pbtxt (platform, "
        "max_batch_size and dims from the engine's profile, dynamic_batching, instance_group) and "
        "DIR/NAME/1/model.plan (TensorRT) or model.onnx (ONNX Runtime). Needs the serve extra.",
    )
    p.add_argument("engines", nargs="+", metavar="ENGINE_DIR", help="engine folders or folders of engines")
    p.add_argument("--repository", required=True, metavar="DIR", help="Triton model repository folder to write into")
    p.add_argument("--config", metavar="TOML", help="per-model batching, the same file `trtopt serve --config` reads")
    p.add_argument("--force", action="store_true", help="replace model folders that already exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.errors import UsageError

    try:
        from trtopt.serve.models import find_engines
        from trtopt.serve.settings import BatchingSettings, read_config
        from trtopt.serve.triton_export import export_repository
    except ImportError as exc:
        raise UsageError(
            f"export-triton needs the serve extra ({exc.name} is missing): pip install 'trtopt[serve]'"
        ) from exc

    defaults, models = read_config(args.config) if args.config else (BatchingSettings(), {})
    for model in export_repository(find_engines(args.engines), args.repository, defaults, models, force=args.force):
        print(f"{model.name}: {model.platform} -> {model.folder}")
    return 0
