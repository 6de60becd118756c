"""Our GR d64 tokenizer against the official code (``taming/`` of github ApexGen-X/MergeVQ), side by side in one
process: encode, decode and one generator-side training step, same config, same weights, same images.

The official code is imported from a checkout given with ``--official`` (never vendored here)::

    git --git-dir=<mirror of ApexGen-X/MergeVQ> archive HEAD | tar -x -C /tmp/official   # or: git clone
    python benchmarks/bench_official_tokenizer.py --official /tmp/official [--device cpu] [--batch 4]
        [--resolution 256] [--repeats 5] [--variants ours,ours-channels-last,ours-compile]
        [--num-tokens K] [--no-source-recovery] [--output runs/bench-official.json]

Both sides are built from the official GR d64 config (``configs/gpu_s1/imagenet_mergevq_256_GR_d64_8gpu_200ep.yaml``,
``--official-config``): ours is the ``mergevq-gr-d64`` preset (checked against that YAML through our converter's
reader), the official side is ``MergeVQEncoder`` / ``MergeVQDecoder`` / ``SourceRecovery`` / ``LFQ`` /
``VQLPIPSWithDiscriminator`` with the YAML's arguments, called the way ``taming/models/lfqgan_rep.py`` calls them
(that file needs ``lightning`` and the repository's ``main.py``, so its ``encode`` / ``decode`` / generator loss call
are replicated below, not imported). K defaults to the YAML's (L - merge_num = 144 at 256 px). The official random
tokenizer and discriminator weights are copied into ours and our random LPIPS weights into the official LPIPS, so
both compute the same function; the script prints the largest decoded difference and the loss difference.

Stages (each variant called once per round, variants interleaved call by call, ``--repeats`` rounds after
``--warmup`` untimed ones; median and interquartile range; ratios are per-round ours/official speed):
- encode: pixels -> K codes (+ source), eval mode, ``torch.inference_mode``;
- decode: K codes + source -> pixels (unmerging included on both sides), eval mode, ``torch.inference_mode``;
- train: one generator-side step in train mode: forward, L1 + LPIPS + 0.1 non-saturating GAN generator term (the
  official loss always runs the discriminator here) + 0.1 entropy + 0.25 commitment, backward, grads set to None.
  Ours also trains source recovery (paper weight 0.5; the official GR config has ``learn_source: False``, so the
  official side has nothing to train there): ``--no-source-recovery`` for identical work. Neither side runs the
  DINOv2 alignment term (the teacher would be downloaded) nor an optimizer step. As in the official training
  (Lightning manual optimisation, model in train mode) the official LPIPS dropout is active and the official
  discriminator's weight gradients are computed in this backward; ours freezes the discriminator for the
  generator step as ``examples/train_tokenizer.py`` does.
Peak memory: the first warm-up call of each stage and variant, after an untimed same-function check has run every
code path once (``ours-compile`` compiles before that) (``timing.peak_memory``: CPU, growth of the resident set
during the call; CUDA, the allocator's peak above what was allocated before).

Variants of ours: ``ours`` (eager), ``ours-channels-last`` (model and images in channels-last),
``ours-compile`` (encode / decode of a channels-last copy through ``torch.compile`` with Inductor freezing; the
training step through ``torch.compile(model)``; a minute or more per function to compile on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import types
import warnings
from pathlib import Path
from unittest import mock

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mergevq_hf import MergeVQConfig, MergeVQModel, SourceRecoveryConfig, SourceRecoveryModel  # noqa: E402
from mergevq_hf.convert.official import config_from_official_yaml  # noqa: E402
from mergevq_hf.training.losses import MergeVQLoss, MergeVQLossConfig  # noqa: E402
from mergevq_hf.training.lpips import LPIPS  # noqa: E402
from timing import interleaved, peak_memory, ratio_spread, summary, synchronize  # noqa: E402

PRESET = "mergevq-gr-d64"
OFFICIAL_CONFIG = "configs/gpu_s1/imagenet_mergevq_256_GR_d64_8gpu_200ep.yaml"
VARIANTS = ("ours", "ours-channels-last", "ours-compile")
STAGES = ("encode", "decode", "train")
# official lossconfig params -> MergeVQLossConfig fields (codebook_weight / commit_weight go to MergeVQConfig)
LOSS_FIELDS = {
    "disc_start": "disc_start",
    "disc_weight": "disc_weight",
    "gen_loss_weight": "gen_loss_weight",
    "lecam_loss_weight": "lecam_weight",
    "codebook_enlarge_ratio": "entropy_enlarge_ratio",
    "codebook_enlarge_steps": "entropy_enlarge_steps",
    "perceptual_weight": "perceptual_weight",
    "disc_factor": "disc_factor",
    "gen_adv_loss": "gen_adv_loss",
}


# ---------------------------------------------------------------------------------------------- official side
def import_official(root: Path) -> types.SimpleNamespace:
    """The official modules, imported from the checkout at ``root``."""
    sys.path.insert(0, str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm.models.layers is deprecated
        from taming.modules.diffusionmodules import model_mergevq
        from taming.modules.losses import lpips as official_lpips
        from taming.modules.losses import vqperceptual
        from taming.modules.vqvae.lookup_free_quantize import LFQ
    return types.SimpleNamespace(
        Encoder=model_mergevq.MergeVQEncoder,
        Decoder=model_mergevq.MergeVQDecoder,
        SourceRecovery=model_mergevq.SourceRecovery,
        LFQ=LFQ,
        Loss=vqperceptual.VQLPIPSWithDiscriminator,
        lpips=official_lpips,
    )


@contextlib.contextmanager
def official_lpips_without_download(official):
    """The official LPIPS asks torchvision for pretrained VGG16 weights and then loads its lin layers from a
    download; build it with random VGG weights and skip the lin download (the weights are replaced afterwards)."""
    import torchvision

    no_download = types.SimpleNamespace(vgg16=lambda pretrained=False, **_: torchvision.models.vgg16(weights=None))
    with (
        mock.patch.object(official.lpips, "models", no_download),
        mock.patch.object(official.lpips.LPIPS, "load_from_pretrained", lambda self, name="vgg_lpips": None),
    ):
        yield


class OfficialTokenizer(torch.nn.Module):
    """The modules of the official ``lfqgan_rep.MergeVQModel`` (no EMA, no DINOv2 teacher), with its ``encode``,
    ``decode`` and generator-loss call replicated line for line."""

    def __init__(self, official, init_args: dict, resolution: int, num_tokens: int):
        super().__init__()
        dd = dict(init_args["ddconfig"])
        dd.pop("model_path", None)  # would download DINOv2 weights for weight-selection init
        dd.pop("cand_distribution", None)  # training-time K sampling; K is fixed here
        grid = resolution // 2 ** (len(dd["ch_mult"]) - 1)
        dd["resolution"] = resolution
        dd["merge_num"] = grid * grid - num_tokens
        self.ddconfig = dd
        self.encoder = official.Encoder(**dd)
        self.decoder = official.Decoder(**dd)
        self.recovery = official.SourceRecovery(**(init_args.get("k2lconfig") or {}))
        embed_dim = init_args.get("embed_dim", 18)
        self.quantize = official.LFQ(
            dim=embed_dim,
            codebook_size=init_args.get("n_embed", 2**embed_dim),
            sample_minimization_weight=init_args.get("sample_minimization_weight", 1.0),
            batch_maximization_weight=init_args.get("batch_maximization_weight", 1.0),
            token_factorization=False,
        )
        with official_lpips_without_download(official):
            self.loss = official.Loss(**init_args["lossconfig"]["params"])

    def encode(self, x):  # lfqgan_rep.MergeVQModel.encode
        h = self.encoder(x)
        (quant, emb_loss, info), loss_breakdown = self.quantize(h, return_loss_breakdown=True)
        return quant, emb_loss, info, loss_breakdown

    def current_source(self):
        """The source matrix [B, K, L] (CLS stripped) the last encoder call left in ``_tome_info``."""
        source = self.encoder.attn._tome_info["source"]
        if self.encoder.attn._tome_info["class_token"] and source is not None:
            source = source[:, 1:, 1:]
        return source

    def decode(self, quant, source):  # lfqgan_rep.MergeVQModel.decode, with the encoder's source passed in
        quant = torch.flatten(quant, start_dim=2)
        quant = quant.permute(0, 2, 1)
        rec_tokens = self.recovery(quant, source)  # learn_source False: token_unmerge
        rec_tokens = rec_tokens.permute(0, 2, 1)
        B, D, L = rec_tokens.shape
        rec_tokens = rec_tokens.reshape(B, D, int(L**0.5), -1)
        return self.decoder(rec_tokens)

    def generator_loss(self, x):  # lfqgan_rep training_step, generator part (no teacher: cls_loss None)
        quant, eloss, _, loss_break = self.encode(x)
        xrec = self.decode(quant, self.current_source())
        aeloss, _ = self.loss(
            eloss, loss_break, x, xrec, 0, 0, cls_loss=None, last_layer=self.decoder.conv_out.weight, split="train"
        )
        return aeloss


# ---------------------------------------------------------------------------------------------- our side
def our_configs(init_args: dict, yaml_path: Path, resolution: int, num_tokens: int):
    config = MergeVQConfig.from_preset(PRESET, resolution=resolution, num_tokens=num_tokens)
    from_yaml = config_from_official_yaml(yaml_path, resolution=resolution, num_tokens=num_tokens).to_dict()
    mismatch = {k: (v, from_yaml.get(k)) for k, v in config.to_dict().items() if from_yaml.get(k) != v}
    mismatch.pop("transformers_version", None)
    if mismatch:
        raise SystemExit(f"preset {PRESET} differs from {yaml_path.name}: {mismatch}")
    params = init_args["lossconfig"]["params"]
    loss = {ours: params[theirs] for theirs, ours in LOSS_FIELDS.items() if theirs in params}
    loss.update(alignment_weight=0.0)
    return config, loss


def copy_official_weights(official: OfficialTokenizer, ours: MergeVQModel, ours_loss: MergeVQLoss) -> None:
    """Official tokenizer + discriminator weights into ours (same names), our LPIPS weights into the official one."""
    state = {f"encoder.{k}": v for k, v in official.encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in official.decoder.state_dict().items()})
    ours.load_state_dict(state, strict=True)
    ours_loss.discriminator.load_state_dict(official.loss.discriminator.state_dict(), strict=True)
    theirs = official.loss.perceptual_loss
    slices = [theirs.net.slice1, theirs.net.slice2, theirs.net.slice3, theirs.net.slice4, theirs.net.slice5]
    mine = ours_loss.perceptual.state_dict()
    with torch.no_grad():
        for piece in slices:
            for index, layer in piece.named_children():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.copy_(mine[f"features.{index}.weight"])
                    layer.bias.copy_(mine[f"features.{index}.bias"])
        for j in range(5):
            getattr(theirs, f"lin{j}").model[-1].weight.copy_(mine[f"lins.{j}.weight"])


# ---------------------------------------------------------------------------------------------- calls
def official_calls(model: OfficialTokenizer, pixels: torch.Tensor):
    def encode():
        model.eval()
        with torch.inference_mode():
            return model.encode(pixels)

    with torch.inference_mode():
        quant = encode()[0]
        source = model.current_source()

    def decode():
        model.eval()
        with torch.inference_mode():
            return model.decode(quant, source)

    params = [p for p in model.parameters() if p.requires_grad]

    def train():
        model.train()  # Lightning's fit puts the whole module (loss included) in train mode
        model.generator_loss(pixels).backward()
        for p in params:
            p.grad = None

    return {"encode": encode, "decode": decode, "train": train}


def our_calls(model, loss_fn, recovery, pixels, num_tokens, compiled: bool):
    # compiled: encode / decode of a channels-last copy through torch.compile with Inductor freezing (weights folded
    # as constants, so oneDNN convolutions are prepacked once), the training forward through torch.compile(model)
    if compiled:
        frozen = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        pixels_cl = pixels.contiguous(memory_format=torch.channels_last)
        encode_compiled = torch.compile(frozen.encode, options={"freezing": True})
        decode_fn = torch.compile(frozen.decode, options={"freezing": True})

        def encode_fn(_pixels, num_tokens):
            return encode_compiled(pixels_cl, num_tokens=num_tokens)

    else:
        encode_fn, decode_fn = model.encode, model.decode
    forward_fn = torch.compile(model) if compiled else model

    def encode():
        model.eval()
        with torch.inference_mode():
            return encode_fn(pixels, num_tokens=num_tokens)

    with torch.inference_mode():
        model.eval()
        enc = model.encode(pixels, num_tokens=num_tokens)
    indices, source = enc.indices, enc.source

    def decode():
        model.eval()
        with torch.inference_mode():
            return decode_fn(indices, source=source)

    params = [p for p in model.parameters() if p.requires_grad]
    if recovery is not None:
        params += list(recovery.parameters())

    def step_loss():
        model.train()
        out = forward_fn(pixels, num_tokens=num_tokens)
        logits = None
        if recovery is not None:  # as examples/train_tokenizer.py: positions = first position of each group
            positions = model.representative_positions(out.source, out.quantized.shape[1])
            logits = recovery(out.quantized, positions=positions).logits
        return loss_fn.generator_loss(out, pixels, 0, last_layer=model.decoder.conv_out.weight, source_logits=logits)

    def train():
        step_loss()[0].backward()
        for p in params:
            p.grad = None

    return {"encode": encode, "decode": decode, "train": train}, step_loss


# ---------------------------------------------------------------------------------------------- checks
@contextlib.contextmanager
def true_fp32():
    """No TF32 on CUDA while checking that both sides compute the same function."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def same_function_check(official, ours, ours_step_loss, ours_step_loss_weight, pixels, num_tokens):
    """Decoded images, per-position codes and the generator loss of both sides on the same images."""
    with true_fp32(), torch.inference_mode():
        official.eval()
        ours.eval()
        quant, _, indices, _ = official.encode(pixels)
        source = official.current_source()
        theirs_image = official.decode(quant, source)
        batch = pixels.shape[0]
        owner = (
            source.argmax(1) if source is not None else torch.arange(num_tokens, device=pixels.device).expand(batch, -1)
        )
        theirs_codes = indices.view(batch, -1).gather(1, owner)
        enc = ours.encode(pixels, num_tokens=num_tokens)
        ours_image = ours.decode(enc.indices, source=enc.source)
        ours_codes = ours.unmerge(enc.indices, enc.source)
        # the same decoder on the official codes: separates decoder differences from flipped code bits
        ours_on_theirs = ours.decode(theirs_codes)
    with true_fp32():
        official.train()
        official.loss.perceptual_loss.eval()  # dropout off for the comparison only
        theirs_loss = float(official.generator_loss(pixels).detach())
        ours_loss, logs = ours_step_loss()
        source_term = float(ours_step_loss_weight * logs["source"])
    return {
        "decode_max_abs_diff": float((theirs_image - ours_image).abs().max()),
        "decode_max_abs_diff_same_codes": float((theirs_image - ours_on_theirs).abs().max()),
        "codes_L_equal_fraction": float((theirs_codes == ours_codes).float().mean()),
        "official_generator_loss": theirs_loss,
        "ours_generator_loss_without_source": float(ours_loss.detach()) - source_term,
        "ours_source_term": source_term,
    }


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="checkout of github ApexGen-X/MergeVQ (holds taming/)")
    parser.add_argument("--official-config", default=OFFICIAL_CONFIG, help="relative to --official, or a path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--num-tokens", type=int, default=None, help="K (default: the config's, scaled to L)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (>= 1; the first measures memory)")
    parser.add_argument("--variants", default="ours", help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {','.join(STAGES)}")
    parser.add_argument("--no-source-recovery", dest="source_recovery", action="store_false")
    parser.add_argument("--output", default="runs/bench-official.json")
    args = parser.parse_args(argv)
    root = Path(args.official)
    if not (root / "taming").is_dir():
        print(f"--official {args.official}: no taming/ folder there (expected a checkout of ApexGen-X/MergeVQ)")
        raise SystemExit(2)
    args.official = root
    args.variants = [v for v in args.variants.split(",") if v]
    args.stages = [s for s in args.stages.split(",") if s]
    bad = [v for v in args.variants if v not in VARIANTS] + [s for s in args.stages if s not in STAGES]
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1")
    if bad or not args.variants or not args.stages:
        parser.error(f"unknown or empty --variants/--stages {bad}; allowed {VARIANTS} and {STAGES}")
    return args


def default_num_tokens(init_args: dict, resolution: int) -> tuple[int, int]:
    """(L, K): the config's K = L - merge_num at its resolution, scaled to ``resolution`` (kept a square)."""
    dd = init_args["ddconfig"]
    factor = 2 ** (len(dd["ch_mult"]) - 1)
    config_positions = (dd.get("resolution", 256) // factor) ** 2
    positions = (resolution // factor) ** 2
    config_k = config_positions - (dd.get("merge_num") or 0)
    side = max(1, round(math.sqrt(config_k * positions / config_positions)))
    return positions, side * side


def img_per_s(batch, seconds):
    stats = summary(seconds)
    return {"median": batch / stats["median"], "iqr": [batch / stats["q3"], batch / stats["q1"]]}


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    yaml_path = Path(args.official_config)
    if not yaml_path.is_absolute():
        yaml_path = args.official / yaml_path
    init_args = yaml.safe_load(yaml_path.read_text())["model"]["init_args"]
    positions, num_tokens = default_num_tokens(init_args, args.resolution)
    if args.num_tokens is not None:
        num_tokens = args.num_tokens
    if not (1 <= num_tokens <= positions and math.isqrt(num_tokens) ** 2 == num_tokens):
        raise SystemExit(f"--num-tokens {num_tokens}: must be a square in 1..{positions} (L; the official reshape)")

    official_modules = import_official(args.official)
    torch.manual_seed(0)
    official = OfficialTokenizer(official_modules, init_args, args.resolution, num_tokens).to(device)
    config, loss_overrides = our_configs(init_args, yaml_path, args.resolution, num_tokens)
    loss_overrides["source_weight"] = 0.5 if args.source_recovery else 0.0
    ours = MergeVQModel(config)
    loss_fn = MergeVQLoss(MergeVQLossConfig.from_dict(loss_overrides), perceptual=LPIPS(), tokenizer_config=config)
    copy_official_weights(official, ours, loss_fn)
    ours, loss_fn = ours.to(device), loss_fn.to(device)
    loss_fn.discriminator.requires_grad_(False)  # generator step only (examples/train_tokenizer.py)
    recovery = None
    if args.source_recovery:
        recovery = SourceRecoveryModel(
            SourceRecoveryConfig(code_dim=config.code_dim, num_positions=config.num_positions, use_positions=True)
        ).to(device)

    torch.manual_seed(1)
    pixels = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device) * 2 - 1
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} config={yaml_path.name} "
        f"resolution={args.resolution} L={positions} K={num_tokens} batch={args.batch} repeats={args.repeats} "
        f"source_recovery(ours)={args.source_recovery}"
    )

    calls = {"official": official_calls(official, pixels)}
    ours_calls, ours_step_loss = our_calls(ours, loss_fn, recovery, pixels, num_tokens, compiled=False)
    check = same_function_check(official, ours, ours_step_loss, loss_fn.config.source_weight, pixels, num_tokens)
    print("same-function check: " + json.dumps(check))
    for variant in args.variants:
        if variant == "ours":
            calls[variant] = ours_calls
        elif variant == "ours-channels-last":
            model = copy.deepcopy(ours).to(memory_format=torch.channels_last)
            cl_pixels = pixels.contiguous(memory_format=torch.channels_last)
            calls[variant] = our_calls(model, loss_fn, recovery, cl_pixels, num_tokens, compiled=False)[0]
        else:  # ours-compile
            calls[variant] = our_calls(ours, loss_fn, recovery, pixels, num_tokens, compiled=True)[0]

    names = list(calls)
    flat = {f"{stage}/{name}": calls[name][stage] for stage in args.stages for name in names}
    for key, fn in flat.items():  # compilation, before anything is measured
        if "compile" in key:
            fn()
    peaks = {}  # peak memory: measured on the first warm-up call of each (the check already ran every code path)
    for key, fn in flat.items():
        peaks[key] = peak_memory(fn, device)[1] / 2**20
        synchronize(device)
    seconds = interleaved(flat, args.repeats, device, warmup=args.warmup - 1)

    results = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "official_config": yaml_path.name,
        "resolution": args.resolution,
        "num_positions": positions,
        "num_tokens": num_tokens,
        "batch": args.batch,
        "repeats": args.repeats,
        "source_recovery_ours": args.source_recovery,
        "check": check,
        "stages": {},
    }
    print(
        "\n| stage | official img/s (median, IQR) | variant | img/s (median, IQR) | ratio ours/official "
        "(median, IQR) | official peak MB | ours peak MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for stage in args.stages:
        base = seconds[f"{stage}/official"]
        row = {
            "official": {"img_s": img_per_s(args.batch, base), "peak_mb": peaks[f"{stage}/official"], "seconds": base}
        }
        for name in names[1:]:
            mine = seconds[f"{stage}/{name}"]
            ratio = ratio_spread(base, mine)  # official seconds / ours seconds = ours speed / official speed
            row[name] = {
                "img_s": img_per_s(args.batch, mine),
                "peak_mb": peaks[f"{stage}/{name}"],
                "seconds": mine,
                "speed_ratio_vs_official": ratio,
            }
            a, b = row["official"]["img_s"], row[name]["img_s"]
            print(
                f"| {stage} | {a['median']:.3f} ({a['iqr'][0]:.3f}-{a['iqr'][1]:.3f}) | {name} | {b['median']:.3f} "
                f"({b['iqr'][0]:.3f}-{b['iqr'][1]:.3f}) | {ratio['median']:.2f}x ({ratio['q1']:.2f}-{ratio['q3']:.2f})"
                f" | {row['official']['peak_mb']:.0f} | {row[name]['peak_mb']:.0f} |"
            )
        results["stages"][stage] = row
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
