"""The only torch training code, shared by the scorer (``score``) and the target (``train``): device and
precision, model loading (GGUF, LoRA), batching, the scored forward, perplexity passes, the one training loop,
its checkpoint, and data parallelism (DDP) or sharding (FSDP2)."""
