"""What the three packages agree on, and the small helpers all of them use.

The dataset contract (SPEC 2-3): the camera and ring conventions (cameras), the shard format
(schema), writing and reading shards (shard_writer, shard_reader), the folder's index
(dataset_index), where files live (storage: local paths and fsspec URLs) and how they are written
(atomic). Beside it: synthetic_shards (schema-valid rings made without Blender, for tests and
benchmarks), hydra_compose (composing conf/ outside an entry point) and wandb_config (the W&B
settings every tool shares).

Direction (`make lint`, .importlinter): contract <- data_pipeline <- training <- evaluation <- bench.
Nothing here imports the other packages.
"""
