"""Running the scorer: perplexity passes, scorer fine-tuning, and the score job that records P0..Pn."""
