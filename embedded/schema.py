"""The keys of the embedded world (configs/hydra/world/)."""

from stagekit.schema import keys

SCHEMA = {"world": keys("enabled", "n_train", "n_sft", "sft_rounds", "n_bench", "bench_questions", "seed",
                        "vocab_size", "vit_text_hidden", "llm_hidden", "llm_layers", "llm_pretrain_chats",
                        "llm_pretrain_steps", "vit_pretrain_images", "vit_pretrain_steps", "table1_benchmarks",
                        "qwen3vl_sources")}
