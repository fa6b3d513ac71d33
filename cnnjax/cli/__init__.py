"""The `cnnjax` command: parse flags, call the library, turn user errors into one line.

    cnnjax train --config experiments/mnist1d/cnn.py [--workdir DIR] [--config.a.b=value ...]
    cnnjax eval --workdir DIR [--best]
    cnnjax models [PATTERN]
    cnnjax summary MODEL
    cnnjax visualize METHOD --workdir DIR [--out DIR] [options]   (METHOD gallery: all)
    cnnjax benchmark-data --config FILE [--config.a.b=value ...]
    cnnjax conv-benchmark
    cnnjax benchmark MODEL [--batch-size B] [--dtype float32|bfloat16] [--steps N] [--compare torch] [--json PATH]
    cnnjax sweep --config FILE --grid KEY=V1,V2 [--grid ...] [--seeds N] [--config.a.b=value ...]
    cnnjax reproduce [--filter TEXT ...] [--smoke] [--seeds N] [--list] [--config.a.b=value ...]
    cnnjax convert FILE --model NAME --out RUN [--num-classes N] [--config FILE ...] | --list
    cnnjax export --workdir RUN --format stablehlo|onnx|torch [--out PATH]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys

from cnnjax.cli import paths
from cnnjax.config.files import default_workdir  # noqa: F401 - cnnjax.cli's API
from cnnjax.errors import CnnjaxError


def _format_metrics(metrics: dict) -> str:
  parts = []
  for k, v in metrics.items():
    if isinstance(v, float) and "accuracy" in k:
      parts.append(f"{k}={100 * v:.2f}%")
    elif isinstance(v, float):
      parts.append(f"{k}={v:.4f}")
  return " ".join(parts)


def cmd_train(args, overrides: list[str]) -> int:
  from cnnjax import config as config_lib
  from cnnjax.train.loop import train_and_evaluate

  config = config_lib.load_config(args.config)
  config_lib.apply_overrides(config, overrides)
  # The workdir is checked where the run claims it (runs/run.py): empty, a
  # file, or a place where no directory can be made is one sentence there.
  workdir = args.workdir if args.workdir is not None else default_workdir(args.config)
  result = train_and_evaluate(config, workdir, config_path=args.config)
  print(f"Finished {result['num_steps']} steps in {result['wall_time_s']:.1f} s: "
        f"{_format_metrics(result['final'])}")
  ref = result.get("reference")
  if ref and "measured" in ref and ref.get("value"):
    print(f"Published {ref['metric']}: {ref['value']} ({ref['source']}); "
          f"measured: {ref['measured']:.4f}")
  print(f"Outputs in {workdir}/ (result.json, metrics.jsonl, curves.png, checkpoints/)")
  return 0


def cmd_eval(args, overrides: list[str]) -> int:
  if overrides:
    raise CnnjaxError(f"eval takes no config overrides, got {' '.join(overrides)}")
  from cnnjax.train.loop import evaluate_workdir

  result = evaluate_workdir(args.workdir, which="best" if args.best else "latest")
  print(json.dumps(result, indent=2))
  from cnnjax.runs import Run

  reference = Run.open(args.workdir).config.get("reference", {})
  metric = reference.get("metric", "")
  if metric and metric in result and reference.get("value"):
    print(f"Published {metric}: {reference['value']} ({reference.get('source', '')}); "
          f"measured: {result[metric]:.4f}", file=sys.stderr)  # stdout: JSON only
  return 0


def cmd_models(args, overrides: list[str]) -> int:
  del overrides
  import jax
  import jax.numpy as jnp

  from cnnjax.models import (create_model, list_models, model_description,
                             model_input_dtype, model_input_shape)

  names = list_models(args.pattern)
  if not names:
    raise CnnjaxError(f"no model matches '{args.pattern}'")
  rows = []
  for name in names:
    shape = model_input_shape(name)
    model = create_model(name)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.dtype(model_input_dtype(name)))
    variables = jax.eval_shape(
        lambda a, m=model: m.init(jax.random.key(0), a), x)
    params = sum(x.size for x in jax.tree.leaves(variables.get("params", {})))
    rows.append((name, "x".join(map(str, shape)), f"{params:,}",
                 model_description(name)))
  widths = [max(len(r[i]) for r in rows + [("model", "input", "params", "")])
            for i in range(3)]
  print(f"{'model':<{widths[0]}}  {'input':<{widths[1]}}  {'params':>{widths[2]}}  description")
  for r in rows:
    print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
  return 0


def _parse_shape(text: str) -> tuple[int, ...]:
  try:
    shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s)
  except ValueError:
    shape = ()
  if not shape or any(s < 1 for s in shape):
    raise CnnjaxError(f"--input-shape must be positive integers such as "
                      f"224,224,3, not '{text}'")
  return shape


def _parse_option(text: str) -> tuple[str, object]:
  import ast
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise CnnjaxError(f"--option takes FIELD=VALUE, not '{text}'")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def cmd_summary(args, overrides: list[str]) -> int:
  del overrides
  import jax.numpy as jnp

  from cnnjax.analysis.summary import summarize, write_json

  if args.json is not None:  # Before the summary, not after it.
    paths.output_file(args.json, "--json")
  if args.xla_memory_batch is not None and args.xla_memory_batch < 1:
    raise CnnjaxError(f"--xla-memory-batch must be positive, got {args.xla_memory_batch}")
  options = dict(_parse_option(o) for o in args.option)
  if args.num_classes is not None:
    options["num_classes"] = args.num_classes
  if args.dtype != "float32":
    options.setdefault("dtype", getattr(jnp, args.dtype))
  summary = summarize(
      args.model, _parse_shape(args.input_shape) if args.input_shape else None,
      xla_flops=not args.no_xla, xla_memory_batch=args.xla_memory_batch,
      **options)
  print(summary.format())
  if args.json is not None:
    write_json(summary, args.json)
  return 0


def _parse_indices(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise CnnjaxError(f"--indices takes integers such as 0,5,7, not '{text}'") from None


def cmd_visualize(args, overrides: list[str]) -> int:
  del overrides
  from cnnjax.viz import load_trained, registry
  from cnnjax.viz.gallery import main_progress, write_gallery

  names = registry.method_names() + ["gallery"]
  if args.method not in names:
    registry.get_method(args.method)  # The one-sentence error, with a hint.
  extra = dict(_parse_option(o) for o in args.option)
  if args.image is not None:  # A file to filter: the kernels method only.
    if args.method != "kernels":
      raise CnnjaxError(f"--image is read by the kernels method only, not by {args.method}")
    extra["image"] = args.image
  if args.workdir is None and args.image is None:
    raise CnnjaxError(f"visualize {args.method} needs --workdir (a cnnjax run); only "
                      "'kernels --image PATH' runs without one")
  options = registry.Options(
      split=args.split, indices=_parse_indices(args.indices) if args.indices else (),
      num_examples=args.num_examples, layer=args.layer, channel=args.channel,
      target_class=args.target_class, steps=args.steps, top_k=args.top_k,
      batch_size=args.batch_size, seed=args.seed, extra=extra)
  if options.num_examples < 1 or options.top_k < 1 or options.batch_size < 1:
    raise CnnjaxError("--num-examples, --top-k and --batch-size must be positive")
  if options.steps < 0:
    raise CnnjaxError("--steps cannot be negative")
  for flag, value in (("--class", options.target_class), ("--channel", options.channel)):
    if value < -1:  # -1 is each method's default; other negatives are typos.
      raise CnnjaxError(f"{flag} {value} is not an index; give 0 or more (or "
                        f"leave {flag} out for the method's default)")
  out = (paths.output_dir(args.out, "--out") if args.out is not None
         else os.path.join(args.workdir or ".", "viz"))
  if args.workdir is None:  # kernels --image: no run needed.
    result = registry.run_method(args.method, None, options, out, strict=True)
    print(f"{args.method}: {result['caption']}")
    print("\n".join(f"  {path}" for path in result["files"]))
    return 0
  run = load_trained(args.workdir, which="best" if args.best else "latest")
  if options.split and options.split not in run.dataset.splits:
    raise CnnjaxError(f"--split '{options.split}' is not a split of dataset "
                      f"'{run.dataset.name}' ({', '.join(run.dataset.splits)})")
  if args.method == "gallery":
    result = write_gallery(run, out, options, progress=main_progress)
    shown = sum(1 for s in result["sections"] if not s.get("error"))
    print(f"Gallery of {shown} methods: {result['page']}")
    return 0
  result = registry.run_method(args.method, run, options, out, strict=True)
  print(f"{args.method} (checkpoint step {run.step}): {result['caption']}")
  for path in result["files"]:
    print(f"  {path}")
  return 0


def cmd_benchmark_data(args, overrides: list[str]) -> int:
  from cnnjax import config as config_lib
  from cnnjax.bench.input import benchmark_input, format_result

  if args.steps < 1 or args.repeats < 1:
    raise CnnjaxError("--steps and --repeats must be positive")
  if args.json is not None:  # Before the timing, not after it.
    paths.output_file(args.json, "--json")
  config = config_lib.load_config(args.config)
  config_lib.apply_overrides(config, overrides)
  config = config_lib.apply_smoke(config)
  result = benchmark_input(config, steps=args.steps, repeats=args.repeats)
  print(format_result(result))
  if args.json is not None:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


def cmd_benchmark(args, overrides: list[str]) -> int:
  del overrides
  from cnnjax.bench import model as bench

  from cnnjax.ops import backend as conv_backend

  conv_backend.set_conv_backend(args.conv_backend)
  options = bench.Options(
      model=args.model, batch_size=args.batch_size, dtype=args.dtype,
      steps=args.steps, repeats=args.repeats, warmup=args.warmup,
      image_size=args.image_size, num_classes=args.num_classes,
      num_devices=args.devices, compare=args.compare,
      torch_process=args.torch_process)
  if args.json is not None:  # Before the timing, not after it.
    paths.output_file(args.json, "--json")
  result = bench.benchmark_model(options)
  print(bench.format_result(result))
  if args.json is not None:
    bench.write_json(result, args.json)
    print(f"wrote {args.json}")
  return 0


def cmd_conv_benchmark(args, overrides: list[str]) -> int:
  del overrides
  from cnnjax.ops.benchmark import main as benchmark_main

  return benchmark_main(args.benchmark_args)


# Subcommands whose own parser reads every argument after their name.
_PASS_THROUGH = {"conv-benchmark": cmd_conv_benchmark}


# Subcommands whose runs take the compilation cache from their config
# (config.compilation_cache) unless --compilation-cache is given.
_CONFIG_DRIVEN = ("train", "sweep", "reproduce", "benchmark-data")


class _FlagError(CnnjaxError):
  """A command line that argparse cannot read."""


class _Parser(argparse.ArgumentParser):
  """argparse, whose mistakes (a missing or unknown flag, `--steps abc`, an
  unknown --format) are one line and exit status 2 like every other user
  error, instead of its usage block and a SystemExit. The subcommands'
  parsers are of this class too (argparse makes them with the parent's)."""

  def error(self, message):
    hint = ""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:  # A typo of a subcommand or of a --format: name the closest.
      close = difflib.get_close_matches(
          choice.group(1), re.findall(r"'([^']*)'", choice.group(2)), n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ""
    raise _FlagError(f"{message}{hint} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="cnnjax", description="Convolutional neural networks in JAX/Flax.",
      allow_abbrev=False)
  common = _Parser(add_help=False)
  common.add_argument(
      "--compilation-cache", metavar="DIR",
      help="XLA's persistent compilation cache: a directory, 'auto' (the "
      "default: ~/.cache/cnnjax/xla, or config.compilation_cache for runs) "
      "or 'none'")
  sub = parser.add_subparsers(dest="command", required=True)
  add_parser = sub.add_parser

  def with_common(name, **kwargs):
    return add_parser(name, parents=[common], **kwargs)

  sub.add_parser = with_common

  p = sub.add_parser("train", help="train an experiment (resumes from its workdir)",
                     description="Overrides: --config.KEY=VALUE, e.g. "
                     "--config.optimizer.learning_rate=0.01")
  p.add_argument("--config", required=True, help="experiment file, e.g. "
                 "experiments/mnist1d/cnn.py")
  p.add_argument("--workdir", help="output directory (default: runs/<experiment>)")
  p.set_defaults(func=cmd_train, takes_overrides=True)

  p = sub.add_parser("eval", help="evaluate a run's latest or best checkpoint")
  p.add_argument("--workdir", required=True)
  p.add_argument("--best", action="store_true", help="use the best checkpoint")
  p.set_defaults(func=cmd_eval, takes_overrides=False)

  p = sub.add_parser("models", help="list registered models")
  p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*'")
  p.set_defaults(func=cmd_models, takes_overrides=False)

  p = sub.add_parser(
      "summary", help="per-layer shapes, parameters, FLOPs, memory and "
      "receptive fields of a model")
  p.add_argument("model", help="a registered model (see `cnnjax models`)")
  p.add_argument("--input-shape", help="one example without the batch axis, "
                 "e.g. 224,224,3 (default: the model's registered shape)")
  p.add_argument("--num-classes", type=int)
  p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                 default="float32", help="computation dtype of the model")
  p.add_argument("--option", action="append", default=[], metavar="FIELD=VALUE",
                 help="any other model field, e.g. --option width=2")
  p.add_argument("--xla-memory-batch", type=int, metavar="B",
                 help="also compile a training step at batch B and report "
                 "XLA's temporary memory per example (slow for big models)")
  p.add_argument("--no-xla", action="store_true",
                 help="skip XLA's FLOP count (counted FLOPs only)")
  p.add_argument("--json", help="also write the summary as JSON here")
  p.set_defaults(func=cmd_summary, takes_overrides=False)

  p = sub.add_parser(
      "visualize", help="look inside a trained run: filters, activations, "
      "saliency, Grad-CAM, class models, ... (METHOD 'gallery' writes them all)",
      description="Methods: filters, activations, neighbors, embedding, patches, "
      "saliency, smoothgrad, guided-backprop, deconvnet, gradcam, occlusion, "
      "integrated-gradients, class-model, neuron, deepdream, style-transfer, "
      "sanity-check, handcrafted, kernels (also on --image PATH without a run), "
      "and gallery (all of them, as one HTML page).")
  p.add_argument("method", help="a method name, or 'gallery'")
  p.add_argument("--workdir", help="a cnnjax run (its checkpoints); required "
                 "except for 'kernels --image PATH'")
  p.add_argument("--image", help="kernels: an image file to filter (no run needed)")
  p.add_argument("--out", help="output directory (default: WORKDIR/viz, or ./viz)")
  p.add_argument("--best", action="store_true", help="use the best checkpoint")
  p.add_argument("--split", default="", help="examples from this split "
                 "(default: test)")
  p.add_argument("--indices", default="", help="examples to explain, e.g. 0,5,7")
  p.add_argument("--num-examples", type=int, default=4,
                 help="how many examples when --indices is not given")
  p.add_argument("--layer", default="", help="a layer path, e.g. c3 or "
                 "stage2_block0/conv1 (default: the method's choice)")
  p.add_argument("--channel", type=int, default=-1, help="a channel of --layer")
  p.add_argument("--class", dest="target_class", type=int, default=-1,
                 help="the class to explain or synthesize (default: the label)")
  p.add_argument("--steps", type=int, default=0, help="optimization steps "
                 "(default: the method's)")
  p.add_argument("--top-k", type=int, default=9)
  p.add_argument("--batch-size", type=int, default=256,
                 help="memory bound for methods that run many passes")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                 help="a method-specific option, e.g. --option samples=50")
  p.set_defaults(func=cmd_visualize, takes_overrides=False)

  p = sub.add_parser(
      "benchmark-data", help="images/s of an experiment's input pipeline "
      "against its train step", description="Overrides: --config.KEY=VALUE")
  p.add_argument("--config", required=True, help="experiment file")
  p.add_argument("--steps", type=int, default=20, help="batches per timed run")
  p.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
  p.add_argument("--json", help="also write the result as JSON here")
  p.set_defaults(func=cmd_benchmark_data, takes_overrides=True)

  p = sub.add_parser(
      "benchmark", help="train-step images/s, compile time, FLOPs, memory and "
      "utilization of a model on synthetic data (--compare torch: against "
      "its PyTorch twin, side by side)")
  p.add_argument("model", help="a registered image model, e.g. resnet20, "
                 "resnet50, lenet5")
  p.add_argument("--batch-size", type=int, default=128, help="global batch")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="computation dtype (parameters stay float32)")
  p.add_argument("--steps", type=int, help="steps per timed run (default: as "
                 "many as take about a second, at least 10)")
  p.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  p.add_argument("--image-size", type=int, help="square inputs of this size "
                 "(default: the model's registered input shape)")
  p.add_argument("--num-classes", type=int, default=10)
  p.add_argument("--devices", type=int, default=0,
                 help="data-parallel over this many devices (0: all)")
  p.add_argument("--compare", choices=("torch",), help="also time the "
                 "PyTorch twin (needs the bench extra)")
  p.add_argument("--torch-process", choices=("separate", "same"), default="separate",
                 help="where the twin trains: in a process of its own, taking "
                 "turns with cnnjax's runs (default), or in this one")
  p.add_argument("--conv-backend", choices=("xla", "onednn", "auto"),
                 help="which library computes the convolutions on a CPU "
                 "(default: CNNJAX_CONV_BACKEND, else xla; onednn needs the "
                 "onednn extra)")
  p.add_argument("--json", help="also write the figures as JSON here")
  p.set_defaults(func=cmd_benchmark, takes_overrides=False)

  p = sub.add_parser(
      "conv-benchmark", add_help=False,
      help="time direct, im2col and FFT convolution against kernel size "
      "(`cnnjax conv-benchmark --help` for its options)")
  p.set_defaults(func=cmd_conv_benchmark, takes_overrides=False)

  from cnnjax.cli import sweeps, weights

  sweeps.add_commands(sub)
  weights.add_commands(sub)
  return parser


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  """(the parsed flags, the --config.KEY=VALUE overrides)."""
  if argv and argv[0] in _PASS_THROUGH:
    return argparse.Namespace(func=_PASS_THROUGH[argv[0]],
                              benchmark_args=argv[1:]), []
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  if overrides and not args.takes_overrides:
    raise _FlagError(f"cnnjax {args.command} takes no --config.KEY=VALUE "
                     f"overrides, got {' '.join(overrides)}")
  return args, overrides


def _fail(e: CnnjaxError) -> int:
  """The one line a user error becomes, and its exit status."""
  print(f"cnnjax: error: {e}", file=sys.stderr)
  return getattr(e, "exit_code", 2)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    args, overrides = _parse(argv)
  except CnnjaxError as e:
    return _fail(e)
  from cnnjax import runtime

  if getattr(args, "command", None) == "train":  # Until the loop takes signals.
    import signal

    def stopped_before_training(signum, frame):
      print(f"cnnjax: stopped by signal {signum} before training started; nothing "
            "to save; run the same command again", file=sys.stderr)
      raise SystemExit(128 + signum)  # Unwinds: the workdir's claim is released.

    signal.signal(signal.SIGTERM, stopped_before_training)
  runtime.apply_xla_defaults()  # Before anything starts JAX's CPU client.
  runtime.apply_malloc_defaults()
  try:
    cache = getattr(args, "compilation_cache", None)
    if cache is not None:
      if cache.strip().lower() not in ("auto", "none", ""):  # A directory: usable?
        paths.output_dir(cache, "--compilation-cache")
      runtime.enable_compilation_cache(cache, explicit=True)
    elif getattr(args, "command", None) not in _CONFIG_DRIVEN:
      runtime.enable_compilation_cache("auto")
    return args.func(args, overrides)
  except CnnjaxError as e:
    return _fail(e)
  except KeyboardInterrupt:
    print("cnnjax: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
