"""Settings of each step, validated once (pydantic) and shared by the Python API, the CLI and run configs.

Each field's type, default and description are the only statement of a setting: the CLI generates its flags
from them (``lpselect.cli.config_options``), so a flag cannot drift from its setting. Unknown keys are refused
with their name, so a typo in a YAML config never passes silently.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Every value set of a setting is stated once, here; other modules derive theirs with typing.get_args
# (tests/test_single_source.py refuses a second literal copy).
Precision = Literal["auto", "fp32", "bf16"]
Truncation = Literal["prompt", "right"]
SaveDtype = Literal["float32", "bfloat16", "float16"]
KMeansBackend = Literal["sklearn", "faiss", "minibatch"]
TestSet = Literal["vicuna", "koala", "wizardlm", "sinstruct", "lima"]  # the paper's order
JudgeBackend = Literal["openai", "local"]
Metric = Literal["lp", "lp_app", "ppl", "ifd", "confidence", "variability", "lp_online"]
MeaningBand = Literal["hardest", "easiest", "middle"]  # by the metric's direction (core.metrics.HARD_END)
LiteralBand = Literal["low", "mid", "high"]  # the parts of the ascending ranking, in order
Band = Literal[MeaningBand, LiteralBand]
Strategy = Literal["cluster", "global", "clust_rand", "random", "trajectory"]
Order = Literal["reference", "original"]
CorrelationMethod = Literal["spearman", "kendall"]  # compare --all
ReviewFormat = Literal["own", "cherry"]  # winrate: `lpselect judge` JSONL, or the Cherry-LLM study's reviews
PRECISION_HELP = ("auto: bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU with AMX-BF16 or "
                  "AVX512-BF16), fp32 elsewhere (`lpselect env` shows the choice)")
DEVICE_HELP = "auto, cpu, cuda, cuda:1 ..."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FineTuneSettings(_Strict):
    """What the scorer's training (``score``) and the target's (``train``) share: the model, its inputs, the
    optimizer step and how it runs. Defaults are the reference's."""

    model: str | None = Field(None, description="Hub id or local path (default: SmolLM2-135M-Instruct, offline)")
    gguf_file: str | None = Field(None, description="GGUF file inside --model (dequantised once, then cached)")
    max_length: int = Field(512, ge=2, description="Tokens per sample after truncation")
    truncation: Truncation = Field(
        "prompt", description="prompt: shorten the prompt, keep the response; right: cut from the right like the "
                              "reference")
    seed: int = Field(42, description="Seed of the row order, dropout and LoRA's initial weights")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW, cosine schedule with warm-up)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="Share of the schedule's steps spent warming up")
    batch_size: int = Field(4, ge=1, description="Per-device micro-batch in rows (an optimizer step takes "
                                                 "batch_size x grad_accum rows)")
    grad_accum: int = Field(8, ge=1, description="Gradient accumulation steps per optimizer step")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the gradient's norm to this (0 = no clipping)")
    precision: Precision = Field("auto", description=PRECISION_HELP)
    device: str = Field("auto", description=DEVICE_HELP)
    max_tokens_per_micro_batch: int | None = Field(
        None, ge=0, description="Padded-token budget of a training micro-batch (the update is the same for any "
                                "budget; 0 = batch_size rows); default: CPU 2048, CUDA as large as the free memory "
                                "allows, at most 16384")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (large "
                                                            "models: less memory, slower)")
    attn_implementation: str | None = Field(
        None, description="Attention kernel passed to transformers: sdpa, flash_attention_2 (variable-length "
                          "attention on padded batches; needs the flash-attn package and a GPU), eager; default: "
                          "transformers' choice")
    fsdp: bool = Field(False, description="Under torchrun/accelerate launch: shard the weights, gradients and "
                                          "optimizer state over the processes (FSDP)")
    keep_checkpoint: bool = Field(False, description="Keep the last checkpoint (weights, optimizer, position) "
                                                     "after the run finishes; score: a later --epochs N on the "
                                                     "folder then trains only the new epochs")
    save_minutes: float = Field(30, ge=0, description="Also checkpoint inside an epoch every this many minutes of "
                                                      "training (0 = off; --save-steps wins when set); a "
                                                      "checkpoint holds the weights and the optimizer's state")
    # LoRA adapters (peft) instead of full fine-tuning
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of every weight")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path")
    lora_target_modules: str = Field("all-linear", description="'all-linear' or comma-separated module names")

    @model_validator(mode="after")
    def _fsdp_or_lora(self) -> FineTuneSettings:
        if self.fsdp and self.lora:
            raise ValueError("--fsdp with --lora is not supported yet (LoRA already keeps the trained weights "
                             "small): use one or the other")
        return self


class ScoreConfig(FineTuneSettings):
    """Scorer fine-tuning and perplexity passes (docs/method.md §3–5); defaults are the reference's."""

    model: str | None = Field(None, description="Scorer model: hub id or local path (default: SmolLM2-135M-Instruct, "
                                                "offline)")
    epochs: int = Field(3, ge=0, description="Training epochs n (0 = P0 only; 1 = the LP_app(1) fast path)")
    schedule_epochs: int = Field(3, ge=1, description="The LR schedule spans max(epochs, this) epochs")
    max_tokens_per_batch: int = Field(
        0, ge=0, description="Padded-token budget of a scoring-pass batch; 0 = auto (CPU 2048, CUDA 16384)")
    pass_chunk_rows: int = Field(4096, ge=1, description="Rows per saved chunk of a pass (resume granularity)")
    ifd: bool = Field(False, description="Also score each response alone, for IFD (one extra pass per epoch)")
    save_steps: int = Field(0, ge=0, description="Also checkpoint every N optimizer steps inside an epoch (0 = "
                                                 "every --save-minutes); a re-run resumes from the last one")


class TrainConfig(FineTuneSettings):
    """Target instruction tuning (docs/method.md §9); defaults are the reference's."""

    model: str | None = Field(None, description="Target model: hub id or local path (default: SmolLM2-135M-Instruct, "
                                                "offline)")
    epochs: int = Field(3, ge=1, description="Training epochs")
    max_steps: int = Field(0, ge=0, description="Stop after this many optimizer steps (0 = all epochs); "
                                                "the LR schedule then spans max_steps, as in HF Trainer")
    save_adapter: bool = Field(False, description="LoRA: save the adapter only instead of the merged model")
    save_dtype: SaveDtype = Field("float32", description="Dtype of the saved weights: "
                                                         + ", ".join(get_args(SaveDtype)))
    save_steps: int = Field(0, ge=0, description="Checkpoint every N optimizer steps, and at each epoch end "
                                                 "(0 = every --save-minutes); a re-run resumes from the last one")


class ClusterConfig(_Strict):
    """Embedding + k-means (docs/method.md §7)."""

    k: int = Field(1000, ge=1, description="Number of k-means clusters (capped for small data)")
    min_cluster_size: int = Field(20, ge=1, description="k is capped at N // this for small data")
    embedder: str | None = Field(None, description="sentence-transformers model: hub id or local path (default: "
                                                   "all-MiniLM-L6-v2)")
    seed: int = Field(42, description="Seed of k-means")
    batch_size: int = Field(64, ge=1, description="Texts per embedding batch")
    max_seq_length: int = Field(256, ge=8, description="Tokens per text the embedder reads")
    kmeans: KMeansBackend = Field(
        "sklearn", description="k-means backend: sklearn (scikit-learn KMeans, the reference's; default), faiss "
                               "(fast for 100k+ rows, its GPU build when present; pip install faiss-cpu), "
                               "minibatch (scikit-learn MiniBatchKMeans, no extra install)")
    embed_chunk_rows: int = Field(8192, ge=1, description="Rows embedded and saved per chunk (resume granularity); "
                                                          "a multiple of batch_size keeps a one-shot encode's batches")


class BillConfig(_Strict):
    """The target a plan prices the selection against (``lpselect plan``): its training on all the rows and on
    each subset size."""

    target_model: str | None = Field(None, description="The model the subset will train (hub id, folder or "
                                                       ".gguf): its parameters are counted from its config, "
                                                       "no weights loaded")
    target_params: str | None = Field(None, description="Or its parameter count: 7e9, 7B, 360M (for a mixture "
                                                        "of experts, the active parameters per token)")
    target_epochs: int = Field(3, ge=1, description="Epochs the target trains")
    percent: list[float] = Field([10.0], description="Subset size to price, in % of the rows (repeat it: "
                                                     "--percent 5 --percent 15; default 10, select's)")

    @field_validator("target_params")
    @classmethod
    def _a_count(cls, v: str | None) -> str | None:
        from lpselect.core.costs import parse_count

        if v is not None:
            parse_count(v)  # a ValueError names the value
        return v

    @field_validator("percent")
    @classmethod
    def _percent_range(cls, v: list[float]) -> list[float]:
        for p in v:
            if not 0 < p <= 100:
                raise ValueError(f"percent {p:g} is not in (0, 100]")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> BillConfig:
        if self.target_model is not None and self.target_params is not None:
            raise ValueError("--target-model and --target-params both given: keep one")
        return self


class GenerateConfig(_Strict):
    """Answering the evaluation test sets with the training template (docs/method.md §10)."""

    testsets: str = Field(",".join(get_args(TestSet)),
                          description="Comma-separated test sets: " + ", ".join(get_args(TestSet)))
    testset_dir: Path | None = Field(None, description="Folder of *_test_set.jsonl files (default: "
                                                       "$LPSELECT_TESTSET_DIR or ../shared/data/testsets)")
    limit: int | None = Field(None, ge=1, description="At most this many questions per test set")
    max_new_tokens: int = Field(512, ge=1, description="Most new tokens of an answer")
    temperature: float = Field(0.0, ge=0, description="0 = greedy; > 0 = sampling, seeded per batch")
    seed: int = Field(42, description="Seed of the sampling (temperature > 0)")
    batch_size: int = Field(8, ge=1, description="Questions per generate call (left padding)")
    precision: Precision = Field("auto", description=PRECISION_HELP)
    device: str = Field("auto", description="Device of the answering model, and in eval of a local judge too: "
                                            + DEVICE_HELP)


class JudgeConfig(_Strict):
    """The pairwise judge (docs/method.md §10): an OpenAI-compatible endpoint, or a local transformers chat model."""

    backend: JudgeBackend = Field(
        "openai", description="openai: an OpenAI-compatible endpoint; local: a transformers chat model")
    base_url: str = Field("https://api.openai.com/v1",
                          description="Endpoint root; requests go to {base-url}/chat/completions")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable holding the API key "
                                                           "(the key itself is never written anywhere)")
    concurrency: int = Field(4, ge=1, description="Requests in flight at most")
    max_retries: int = Field(6, ge=0, description="Retries of a request on 429/5xx/connection errors "
                                                  "(exponential backoff, Retry-After)")
    parse_retries: int = Field(2, ge=0, description="Extra requests when a reply's first line has no two grades; "
                                                    "then it counts as unparsed")
    timeout: float = Field(600.0, gt=0, description="Seconds to wait for a reply; one that does not come is not "
                                                    "asked again (the server may still be working on it): it "
                                                    "counts as failed and a rerun asks again")
    temperature: float = Field(0.0, ge=0, description="The judge's sampling temperature, not the answers' "
                                                      "(0 = greedy)")
    max_tokens: int = Field(512, ge=1, description="Most tokens of a judge reply")
    device: str = Field("auto", description="Device of the local judge: auto, cpu, cuda ...")


BAND_HELP = ("hardest (the method), easiest, middle: by the metric's direction (docs/metrics.md); low, mid, high: "
             "the literal parts of the ascending ranking")


class _SubsetRule(_Strict):
    """How rows are picked, once the metric, epoch, percent and band are fixed (one subset or a grid)."""

    strategy: Strategy = Field(
        "cluster", description="cluster: the band of every cluster (the method); global: of the whole ranking; "
                               "clust_rand / random: at random within clusters / overall; trajectory: S2L over "
                               "the loss trajectories")
    order: Order = Field(
        "reference", description="reference: cluster by cluster, ascending metric; original: input order")
    seed: int = Field(42, description="Seed of the random strategies")
    max_value: float | None = Field(None, description="Leave out rows whose metric is above this (Cherry LLM's "
                                                      "IFD policy: 1.0); counted")
    trajectory_k: int = Field(100, ge=1, description="Strategy trajectory (S2L): k-means clusters of the loss "
                                                     "trajectories, capped at the rows with a finite trajectory")
    exact: bool = Field(False, description="Take exactly round(N x p / 100) of the N rows with a score, shared "
                                           "over the clusters by size (largest remainder), instead of the "
                                           "paper's round(100/p) parts of every cluster")
    n: int | None = Field(None, ge=1, description="Take exactly this many rows (shared over the clusters like "
                                                  "--exact); replaces --percent")
    dedup: str | None = Field(None, description="Before selecting, drop rows within each cluster whose "
                                                "embedding's cosine similarity to an earlier kept row (id order) "
                                                "is at least this, e.g. 0.95; exact: only exact duplicates. "
                                                "Only rows with a value take part, and --percent / --exact "
                                                "count the rows left")

    @field_validator("dedup", mode="before")
    @classmethod
    def _dedup_text(cls, v: object) -> object:
        """YAML reads ``dedup: 0.95`` as a number; the setting keeps the text the CLI would give."""
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


class SubsetSpec(_SubsetRule):
    """One subset: ``lpselect select``."""

    metric: Metric = Field("lp_app", description="lp, lp_app (docs/method.md §6) or a rival signal: ppl, ifd, "
                                                 "confidence, "
                                                 "variability, lp_online (docs/metrics.md); rows are ranked "
                                                 "ascending")
    epoch: int = Field(1, ge=0, description="Epoch i of LP(i) / LP_app(i) / ppl_i / ifd_i")
    percent: float = Field(10, gt=0, le=100, description="Percentage p: each cluster is cut into round(100/p) "
                                                         "parts, the paper's rule (the share taken is printed); "
                                                         "--exact takes p % exactly")
    band: Band = Field("hardest", description=BAND_HELP)


class SelectSpec(_SubsetRule):
    """One or more subsets: every combination of metrics x epochs x percents x bands."""

    metrics: list[Metric] = ["lp_app"]
    epochs: list[int] = [1]
    percents: list[float] = [10]
    bands: list[Band] = ["hardest"]

    @field_validator("percents")
    @classmethod
    def _percent_range(cls, v: list[float]) -> list[float]:
        for p in v:
            if not 0 < p <= 100:
                raise ValueError(f"percent {p} is not in (0, 100]")
        return v

    def subsets(self) -> list[SubsetSpec]:
        """Every subset of the grid, metrics varying slowest."""
        rule = _SubsetRule.model_fields
        return [SubsetSpec(metric=m, epoch=e, percent=p, band=b, **{k: getattr(self, k) for k in rule})
                for m, e, p, b in itertools.product(self.metrics, self.epochs, self.percents, self.bands)]


class _OverlapRule(_Strict):
    """The selections that ``compare`` and ``stability`` overlap (each run's band, ranked afresh)."""

    epoch: int = Field(1, ge=0, description="Epoch i of the metric")
    percent: float = Field(10, gt=0, le=100, description="Size of the compared selections, in %")
    band: Band = Field("hardest", description="Band of the compared selections: hardest, easiest, middle (each "
                                              "side's metric direction), or low, mid, high")


class CompareSpec(_OverlapRule):
    """``lpselect compare``: how far two scorers agree on one metric."""

    metric: Metric | None = Field(None, description="Metric of both sides (lp, lp_app, ...); default: lp when every "
                                                    "run trained 2+ epochs, else lp_app")
    metric_b: Metric | None = Field(None, description="Metric of the second side, if it differs (e.g. lp vs lp_app)")
    epoch_b: int | None = Field(None, ge=0, description="Epoch of the second side")
    method: CorrelationMethod = Field("spearman", description="--all matrix: spearman or kendall")


class StabilitySpec(_OverlapRule):
    """``lpselect stability``: how much a selection depends on the scorer's run."""

    metric: Metric = Field("lp_app", description="Metric of every run (lp, lp_app, ...)")


class RunConfig(_Strict):
    """A whole pipeline: ``lpselect run CONFIG.yaml``."""

    data: str
    out: str
    fields: dict[str, str] | None = Field(None, description="The data's own column names, e.g. {output: answer} "
                                                            "(as --fields)")
    score: ScoreConfig = ScoreConfig()
    cluster: ClusterConfig | None = ClusterConfig()
    select: list[SelectSpec] = [SelectSpec()]
    baselines: bool = Field(True, description="Beside every subset whose strategy is not random or clust_rand, "
                                              "also write a random and a clust_rand subset of exactly its size "
                                              "and seed (<name>.random, <name>.clust_rand)")

    @field_validator("fields")
    @classmethod
    def _canonical_fields(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        from lpselect.data.formats import CANONICAL_FIELDS

        unknown = [n for n in v or {} if n not in CANONICAL_FIELDS]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not a field name; the names are {', '.join(CANONICAL_FIELDS)}")
        return v or None
