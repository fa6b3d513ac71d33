"""`cnnjax convert` (PyTorch weights in) and `cnnjax export` (a run out)."""

from __future__ import annotations

import argparse
import sys

from cnnjax.cli import paths
from cnnjax.errors import CnnjaxError

EXPORT_FORMATS = ("stablehlo", "onnx", "torch")


def cmd_convert(args, overrides: list[str]) -> int:
  from cnnjax import weights

  if args.list:
    for row in weights.twin_table():
      print(f"{row['model']:22s} {row['library']}.{row['twin']:22s} {row['weights']}")
    return 0
  if not args.file or not args.model or args.out is None:
    raise CnnjaxError("convert needs a weight FILE, --model NAME and --out RUN "
                      "(or --list)")
  if args.num_classes is not None and args.num_classes < 1:
    raise CnnjaxError(f"--num-classes must be positive, got {args.num_classes}")
  from cnnjax.weights.run import check_new_run_dir, write_converted_run

  # The output before the weights: reading a large file for nothing is slow.
  check_new_run_dir(paths.output_dir(args.out, "--out"))
  config, module, fields = None, None, {}
  if args.config:
    from cnnjax import config as config_lib

    config = config_lib.load_config(args.config)
    config_lib.apply_overrides(config, overrides)
    module = config_lib.import_experiment_file(args.config)
    if config.model.get("name") not in ("", None, args.model):
      raise CnnjaxError(f"the config's model is '{config.model.name}' but "
                        f"--model is '{args.model}'")
    # The config's model fields (other than the name) shape the model.
    fields = config_lib.model_fields(config.model)
  elif overrides:
    raise CnnjaxError("--config.KEY=VALUE overrides need a --config to apply to")
  num_classes = (args.num_classes if args.num_classes is not None
                 else fields.pop("num_classes", None))
  pretrained = weights.load_pretrained(args.model, args.file,
                                       num_classes=num_classes, **fields)
  if config is not None:
    config.model.name = args.model
    if hasattr(module, "apply_reference"):  # e.g. torchvision's published top-1.
      module.apply_reference(config)
  run = write_converted_run(args.out, pretrained, config)
  print(f"cnnjax: {pretrained.report.summary()}", file=sys.stderr)
  print(f"Wrote {run.workdir} (config.json, checkpoints/0, conversion.json); "
        f"evaluate it with: cnnjax eval --workdir {run.workdir}")
  return 0


def cmd_export(args, overrides: list[str]) -> int:
  if args.out is not None:  # An empty --out would silently mean the default.
    paths.output_file(args.out, "--out", make_parents=True)
  if args.format == "torch":
    from cnnjax.weights.run import export_run_weights

    path = export_run_weights(args.workdir, args.out, which=args.checkpoint)
  else:
    from cnnjax.export import export_run

    path = export_run(args.workdir, args.format, args.out, checkpoint=args.checkpoint)
  print(f"Wrote {path}")
  return 0


def add_commands(sub) -> None:
  """Adds `convert` and `export` to the `cnnjax` subcommands."""
  p = sub.add_parser(
      "convert", help="import torchvision/timm weights into a cnnjax run",
      description="Converts a PyTorch weight file (.pth/.pt through torch with "
      "weights_only=True, or .safetensors without torch) of a cnnjax model's "
      "torchvision/timm twin into a run directory that cnnjax eval, "
      "visualize and --config.transfer.init_from accept. Nothing is "
      "downloaded: --list shows where the official files live. Overrides: "
      "--config.KEY=VALUE, with --config.",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("file", nargs="?", help="weight file, or a torch hub / "
                 "Hugging Face cache directory holding it")
  p.add_argument("--model", help="cnnjax model name, e.g. resnet50")
  p.add_argument("--out", help="the run directory to create")
  p.add_argument("--num-classes", type=int, metavar="N",
                 help="a classifier of N classes (re-initialized when the "
                 "file's has another count)")
  p.add_argument("--config", help="the experiment the run belongs to (its "
                 "data and evaluation), e.g. experiments/imagenet/eval_torchvision.py")
  p.add_argument("--list", action="store_true",
                 help="list the models with a PyTorch twin and their weights")
  p.set_defaults(func=cmd_convert, takes_overrides=True)

  p = sub.add_parser(
      "export", help="export a run's model: stablehlo, onnx or torch",
      description="stablehlo: a serialized jax.export program with a "
      "symbolic batch size; onnx: through jax2onnx (the onnx extra); torch: "
      "the torchvision/timm twin's state dict (.safetensors, or .pth with "
      "torch), loading with strict=True.")
  p.add_argument("--workdir", required=True, help="the run to export")
  p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
  p.add_argument("--out", help="output file (default: inside RUN/export/)")
  p.add_argument("--checkpoint", default="latest",
                 help="'latest', 'best' or a step (default: latest)")
  p.set_defaults(func=cmd_export, takes_overrides=False)
