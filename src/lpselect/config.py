"""Settings of each step, validated once (pydantic) and shared by the Python API, the CLI and run configs.

Unknown keys are refused with their name, so a typo in a YAML config never passes silently.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    """LoRA adapters (peft) instead of full fine-tuning: the scorer's and the target's shared options."""

    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str = Field("all-linear", description="'all-linear' or comma-separated module names")


class FineTuneSettings(LoraSettings):
    """What the scorer's training (``score``) and the target's (``train``) share: the model, its inputs, the
    optimizer step and how it runs. Defaults are the reference's."""

    model: str | None = Field(None, description="hub id or local path; None = SmolLM2-135M-Instruct (offline)")
    gguf_file: str | None = None
    max_length: int = Field(512, ge=2)
    truncation: Literal["prompt", "right"] = "prompt"
    seed: int = 42
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(8, ge=1)
    max_grad_norm: float = Field(1.0, ge=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    max_tokens_per_micro_batch: int | None = Field(
        None, ge=0, description="padded-token budget of a training micro-batch (same update; 0 = batch_size rows; "
                                "None = auto: CPU 2048, CUDA what the free memory allows, at most 16384)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory")
    attn_implementation: str | None = Field(None, description="transformers attention kernel: sdpa, "
                                                              "flash_attention_2 (varlen on GPUs), eager; "
                                                              "None = transformers' default")
    fsdp: bool = Field(False, description="under torchrun/accelerate launch: shard the weights, gradients and "
                                          "optimizer state over the processes (FSDP)")
    keep_checkpoint: bool = Field(False, description="keep the last checkpoint after the run finishes")

    @model_validator(mode="after")
    def _fsdp_or_lora(self) -> FineTuneSettings:
        if self.fsdp and self.lora:
            raise ValueError("--fsdp with --lora is not supported yet (LoRA already keeps the trained weights "
                             "small): use one or the other")
        return self


class ScoreConfig(FineTuneSettings):
    """Scorer fine-tuning and perplexity passes (SPEC §3–5); defaults are the reference's."""

    epochs: int = Field(3, ge=0, description="0 = P0 only; 1 = the LP_app(1) fast path")
    schedule_epochs: int = Field(3, ge=1, description="the LR schedule spans max(epochs, this) epochs")
    max_tokens_per_batch: int = Field(
        0, ge=0, description="padded-token budget of a scoring-pass batch; 0 = auto (CPU 2048, CUDA 16384)")
    pass_chunk_rows: int = Field(4096, ge=1, description="rows per saved chunk of a pass (resume granularity)")
    ifd: bool = Field(False, description="also score each response alone, for IFD (one extra pass per epoch)")
    save_steps: int = Field(0, ge=0, description="also checkpoint every N optimizer steps inside an epoch (0 = at "
                                                 "epoch ends only); a re-run resumes from the last one")


class ClusterConfig(_Strict):
    """Embedding + k-means (SPEC §7)."""

    k: int = Field(1000, ge=1)
    min_cluster_size: int = Field(20, ge=1, description="k is capped at N // this for small data")
    embedder: str | None = None
    seed: int = 42
    batch_size: int = Field(64, ge=1)
    max_seq_length: int = Field(256, ge=8)
    kmeans: Literal["sklearn", "faiss", "minibatch"] = Field(
        "sklearn", description="k-means backend: sklearn (scikit-learn KMeans, the reference's; default), faiss "
                               "(fast for 100k+ rows, its GPU build when present; pip install faiss-cpu), "
                               "minibatch (scikit-learn MiniBatchKMeans, no extra install)")
    embed_chunk_rows: int = Field(8192, ge=1, description="rows embedded and saved per chunk (resume granularity); "
                                                          "a multiple of batch_size keeps a one-shot encode's batches")


class SelectSpec(_Strict):
    """One or more subsets: every combination of metrics x epochs x percents x bands."""

    metrics: list[Literal["lp", "lp_app", "ppl", "ifd", "confidence", "variability", "lp_online"]] = ["lp_app"]
    epochs: list[int] = [1]
    percents: list[float] = [10]
    bands: list[Literal["low", "mid", "high"]] = ["low"]
    strategy: Literal["cluster", "global", "clust_rand", "random", "trajectory"] = "cluster"
    order: Literal["reference", "original"] = "reference"
    seed: int = 42
    max_value: float | None = Field(None, description="leave out rows whose metric is above (IFD: 1.0)")
    trajectory_k: int = Field(100, ge=1, description="strategy trajectory (S2L): k-means clusters of the loss "
                                                     "trajectories, capped at the rows with a finite trajectory")

    @field_validator("percents")
    @classmethod
    def _percent_range(cls, v: list[float]) -> list[float]:
        for p in v:
            if not 0 < p <= 100:
                raise ValueError(f"percent {p} is not in (0, 100]")
        return v


class RunConfig(_Strict):
    """A whole pipeline: ``lpselect run CONFIG.yaml``."""

    data: str
    out: str
    score: ScoreConfig = ScoreConfig()
    cluster: ClusterConfig | None = ClusterConfig()
    select: list[SelectSpec] = [SelectSpec()]
