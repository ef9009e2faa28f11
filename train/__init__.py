"""Training stages of the paper's recipe, run through LLaMA-Factory (and DeepSpeed)."""
