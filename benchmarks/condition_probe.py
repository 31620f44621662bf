"""Can a stream's TokenLearner find what the question names, given what conditions it?

Stop 14 left the model at chance on "what shape is the small {colour} object?" while a
probe that conditioned the same map on the colour's own embedding learnt it. This
probe takes a trained model, freezes all of it, and trains only a fresh read of one
stream (a TokenLearner with the stream's pooling, then an MLP head over its tokens and
``c_0``) on a one-question subset (``python -m cotok_edge.data.subset``), the map
conditioned on:

- ``state``: ``c_0``, what the model's own maps get at the first step (the masked mean
  of the encoded, projected question);
- ``words``: a learned projection of the mean of the question's word embeddings
  (``StreamConfig.token_condition = "words"``);
- ``oracle``: a learned embedding of the question's text, one per distinct question
  (what the stop-14 probe gave: the named colour, told outright);
- ``model``: the model's own TokenLearner of the stream and its own conditioning, frozen
  (only the head trains): whether the model's map already finds what is named, i.e.
  whether what fails is the map or what reads its tokens.

``--save-model DIR`` (with ``words``) writes the model with the trained read's map in
place of the stream's, for ``train --init DIR``: the map pre-trained on the one
question, the rest of the model to learn to read it.

It also prints how much the subset's distinct questions differ at each stage of the
text path (mean word embedding, mean encoder output, ``c_0``), relative to their size:
a stage where they hardly differ is one a map cannot be conditioned through.

    python -m benchmarks.condition_probe --model runs/F/model --data data/probe_space \\
        --cache-dir data/cache --conditions state words oracle --steps 300 --out probe.json

The frozen stream features are computed once into ``--features`` (safetensors).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from cotok_edge.data.clips import StreamCache, group_by_clip
from cotok_edge.data.datasets import load_split
from cotok_edge.data.text import encode_questions, load_tokenizer
from cotok_edge.data.video import StreamSpec
from cotok_edge.model.cotokenizer import masked_mean
from cotok_edge.model.token_condition import with_token_conditions
from cotok_edge.model.tokenlearner import TokenLearner
from cotok_edge.model.vqa import CoTokVQA

CONDITIONS = ("state", "words", "oracle", "model")


@torch.no_grad()
def featurize(
    model: CoTokVQA, tokenizer: object, stream: str, clips: list, cache: StreamCache
) -> dict[str, Tensor]:
    """The first question of each clip and the clip's frozen stream features.

    Returns ``x [N, P, d]`` (fp16; P = the stream's T*H*W positions), ``c0 [N, d]``,
    ``words [N, L, D_text]`` (word embeddings), ``encoded [N, L, D_text]`` (text
    encoder output) and ``mask [N, L]``.
    """
    cfg, cot = model.config, model.cotokenizer
    out: dict[str, list[Tensor]] = {k: [] for k in ("x", "c0", "words", "encoded", "mask")}
    for i in tqdm(range(0, len(clips), 16), desc="features", unit="16 clips"):
        idx = list(range(i, min(i + 16, len(clips))))
        feats = model.stream_features(stream, torch.as_tensor(cache.arrays[stream][idx]))
        x = cot.stream_pos[stream](cot.video_proj[stream](feats.flatten(2).transpose(1, 2)))
        questions = [clips[j].questions[0] for j in idx]
        ids, mask = encode_questions(
            tokenizer, questions, cfg.text.max_question_tokens, truncate=True
        )
        mask = mask.bool()
        words = model.text_embed(ids)
        encoded = model.text_encoder(words, mask)
        out["x"].append(x.half())
        out["c0"].append(cot.start(encoded, mask, words).cond)
        out["words"].append(words)
        out["encoded"].append(encoded)
        out["mask"].append(mask)
    return {k: torch.cat(v) for k, v in out.items()}


def question_spread(part: dict[str, Tensor], question: Tensor) -> dict[str, float]:
    """Per stage: std across the distinct questions' vectors / their mean norm.

    ``question [N]`` numbers each example's distinct question text.
    """
    stages = {
        "mean word embedding": masked_mean(part["words"], part["mask"]),
        "mean encoder output": masked_mean(part["encoded"], part["mask"]),
        "c0": part["c0"],
    }
    spread = {}
    for name, v in stages.items():
        per_q = torch.stack([v[question == q][0] for q in question.unique()])
        spread[name] = float(per_q.std(0).norm() / per_q.norm(dim=1).mean())
    return spread


class Read(nn.Module):
    """A fresh TokenLearner over one stream's slices and an MLP head -> answer logits."""

    def __init__(
        self, model: CoTokVQA, stream: str, condition: str, questions: int, answers: int
    ) -> None:
        super().__init__()
        cfg = model.config
        d, s = cfg.dim, cfg.tokens_per_stream
        self.condition, self.groups = condition, cfg.time_groups_of(stream)
        stream_cfg = next(c for c in cfg.streams if c.name == stream)
        self.tl = TokenLearner(d, s, cfg.tokenlearner_hidden, d, stream_cfg.token_pool)
        self.word_proj = nn.Linear(cfg.text.dim, d)
        if condition == "model":
            # Held outside the module tree: frozen, and not the optimizer's.
            self.frozen = (model.cotokenizer.tokenlearners[stream], model.cotokenizer.word_proj)
            self.model_condition = stream_cfg.token_condition
        self.oracle = nn.Embedding(questions, d)
        self.head = nn.Sequential(
            nn.Linear(s * self.groups * d + d, d), nn.GELU(), nn.Linear(d, answers)
        )

    def condition_vector(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, d]``: what conditions the map."""
        if self.condition == "oracle":
            return self.oracle(batch["question"])
        if self.condition == "words":
            word_proj = self.word_proj
        elif self.condition == "model" and self.model_condition == "words":
            word_proj = self.frozen[1]
        else:
            return batch["c0"]
        return word_proj(masked_mean(batch["words"], batch["mask"]))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """``x [B, P, d]``, ``c0 [B, d]``, ``words [B, L, D]``, ``mask``, ``question [B]``."""
        x, c0 = batch["x"].float(), batch["c0"]
        b, d = x.shape[0], x.shape[2]
        slices = x.reshape(b * self.groups, -1, d)  # [B*G, P/G, d]
        frozen = self.condition == "model"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            cond = self.condition_vector(batch)
            tl = self.frozen[0] if frozen else self.tl
            z, _ = tl(slices, cond.repeat_interleave(self.groups, 0))  # [B*G, S, d]
        head_cond = cond if self.condition == "oracle" else c0
        return self.head(torch.cat([z.reshape(b, -1), head_cond], 1))


def run(
    model: CoTokVQA, stream: str, condition: str, train: dict, val: dict, steps: int,
    batch: int, lr: float, seed: int, eval_every: int,
) -> dict:  # fmt: skip
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    questions = int(max(train["question"].max(), val["question"].max())) + 1
    answers = int(max(train["answer"].max(), val["answer"].max())) + 1
    read = Read(model, stream, condition, questions, answers)
    opt = torch.optim.AdamW(read.parameters(), lr=lr, weight_decay=0.0)
    n = train["x"].shape[0]
    curve, losses, t0 = [], [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc=condition, leave=False):
        idx = torch.from_numpy(rng.choice(n, batch, replace=False))
        loss = F.cross_entropy(read({k: v[idx] for k, v in train.items()}), train["answer"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            read.eval()
            with torch.no_grad():
                right = (read(val).argmax(1) == val["answer"]).float().mean().item()
            read.train()
            curve.append({"step": step, "val": 100.0 * right,
                          "train_loss": float(np.mean(losses[-eval_every:]))})  # fmt: skip
            tqdm.write(f"{condition} step {step}: val {curve[-1]['val']:.1f}% "
                       f"loss {curve[-1]['train_loss']:.3f}")  # fmt: skip
    return {"condition": condition, "seed": seed, "steps": steps, "batch": batch, "lr": lr,
            "s_per_step": (time.perf_counter() - t0) / steps, "curve": curve,
            "read": read}  # fmt: skip


def with_read(model: CoTokVQA, stream: str, read: Read) -> CoTokVQA:
    """``model`` with ``stream``'s map taken from a trained ``words`` read.

    The stream is switched to ``token_condition="words"``; its TokenLearner and the word
    projection become the read's (the head is the probe's own and is left behind).
    """
    new = with_token_conditions(model, {stream: "words"})
    new.cotokenizer.tokenlearners[stream].load_state_dict(read.tl.state_dict())
    new.cotokenizer.word_proj.load_state_dict(read.word_proj.state_dict())
    return new


def plot(results: dict, png: Path) -> None:
    """Validation accuracy against steps, one line per conditioning."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in results["runs"]:
        steps = [0] + [c["step"] for c in r["curve"]]
        ax.plot(steps, [None] + [c["val"] for c in r["curve"]], marker="o", ms=3,
                label=f"{r['condition']} (seed {r['seed']})")  # fmt: skip
    ax.set_xlabel(f"steps ({results['runs'][0]['batch']} questions each)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(f"{results['stream']} map of {Path(results['model']).parent.name}: "
                 "what conditions it", fontsize=10)  # fmt: skip
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(png)


def _labels(parts: list[tuple[list, dict]]) -> None:
    """Number the distinct question texts and answers across every split, in place."""
    q_ids: dict[str, int] = {}
    a_ids: dict[str, int] = {}
    for clips, part in parts:
        part["question"] = torch.tensor([q_ids.setdefault(c.questions[0], len(q_ids))
                                         for c in clips])  # fmt: skip
        part["answer"] = torch.tensor([a_ids.setdefault(c.answers[0][0], len(a_ids))
                                       for c in clips])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.condition_probe", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint folder")
    p.add_argument("--data", type=Path, required=True, help="a one-question subset (msrvtt-qa)")
    p.add_argument("--stream", default="s3")
    p.add_argument("--train-clips", type=int, default=1500)
    p.add_argument("--val-clips", type=int, default=300)
    p.add_argument("--cache-dir", type=Path, required=True, help="the train CLI's clip cache")
    p.add_argument("--features", type=Path, help="frozen features (safetensors), made if absent")
    p.add_argument(
        "--conditions", nargs="+", default=["state", "words", "oracle"], choices=CONDITIONS
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--out", type=Path, required=True, help="JSON results")
    p.add_argument("--png", type=Path, help="plot the validation curves here")
    p.add_argument(
        "--save-model", type=Path, metavar="DIR",
        help="with --conditions words alone: write the model with the stream's map (its "
        "TokenLearner and the word projection) taken from the trained read, for train --init",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.save_model is not None and args.conditions != ["words"]:
        raise SystemExit("--save-model needs --conditions words (the read it keeps)")
    if args.save_model is not None and args.save_model.exists():
        raise SystemExit(f"--save-model {args.save_model}: exists; choose a new folder")
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"--model {args.model}: not a checkpoint folder (no config.json)")
    model = CoTokVQA.from_pretrained(args.model).eval()
    if args.stream not in model.stream_names:
        raise SystemExit(f"--stream {args.stream}: the model's streams are {model.stream_names}")
    tokenizer = load_tokenizer(args.model / "tokenizer.json")
    specs = [StreamSpec(s.name, s.frames, s.size) for s in model.config.streams]
    splits = []
    for split, limit in (("train", args.train_clips), ("val", args.val_clips)):
        try:
            clips = group_by_clip(load_split("msrvtt-qa", args.data, split))
        except FileNotFoundError as e:
            raise SystemExit(f"--data {args.data}: {e}") from None
        splits.append((split, clips, limit))
    features = args.features or args.out.with_suffix(".features.safetensors")
    parts: list[dict[str, Tensor]] = []
    for split, clips, limit in splits:
        file = features.with_suffix(f".{split}.safetensors")
        # Features belong to one model, stream and data: a file made for others is refused.
        made_for = {
            "model": str(args.model.resolve()),
            "stream": args.stream,
            "data": str(args.data.resolve()),
            "clips": str(min(limit, len(clips))),
        }
        if file.is_file():
            with safe_open(str(file), "pt") as f:
                found = f.metadata() or {}
            if found != made_for:
                raise SystemExit(
                    f"--features {file}: made for {found}, not {made_for}; remove it or "
                    "choose another --features"
                )
            parts.append(load_file(str(file)))
            continue
        cache = StreamCache(clips, specs, args.cache_dir)  # built once, as train builds it
        part = featurize(model, tokenizer, args.stream, clips[:limit], cache)
        tmp = file.with_suffix(".tmp")
        save_file(part, str(tmp), metadata=made_for)
        tmp.rename(file)
        parts.append(part)
    _labels([(clips[:limit], part) for (_, clips, limit), part in zip(splits, parts, strict=True)])
    train, val = parts
    spread = question_spread(train, train["question"])
    print("how much the distinct questions differ (std / norm):",
          {k: round(v, 4) for k, v in spread.items()})  # fmt: skip
    results = {"model": str(args.model), "data": str(args.data), "stream": args.stream,
               "question_spread": spread, "runs": []}  # fmt: skip
    for condition in args.conditions:
        r = run(model, args.stream, condition, train, val, args.steps, args.batch, args.lr,
                args.seed, args.eval_every)  # fmt: skip
        read = r.pop("read")
        results["runs"].append(r)
        if args.save_model is not None:
            out = with_read(model, args.stream, read)
            tmp = args.save_model.with_name(args.save_model.name + ".tmp")
            out.save_pretrained(tmp)
            shutil.copyfile(args.model / "tokenizer.json", tmp / "tokenizer.json")
            tmp.rename(args.save_model)
            print(f"{args.model} with this read's map on {args.stream}: {args.save_model}")
    if args.png is not None:
        plot(results, args.png)
        print(f"{condition}: val {r['curve'][-1]['val']:.1f}% after {args.steps} steps "
              f"({r['s_per_step']:.3f} s a step)")  # fmt: skip
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.rename(args.out)


if __name__ == "__main__":
    main()
