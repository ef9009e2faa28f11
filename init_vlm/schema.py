"""The keys of a backbone (configs/hydra/backbone/)."""

from stagekit.schema import keys

SCHEMA = {"backbone": keys("name", "label", "vit_source", "llm_source", "vit_revision", "llm_revision",
                           "projector_init", "dtype", "template", "eval_model", "patch_size", "system_prompt",
                           params=keys("llm", "vit", "projector"), pixels=keys("min_pixels", "max_pixels"))}
