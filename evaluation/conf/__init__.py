"""Evaluation presets (`eval_experiment/`), found through hydra.searchpath in conf/eval.yaml.

They live here, not in conf/experiment/, because that group holds the training presets: the
same `experiment=NAME` on the command line selects `eval_experiment/NAME` for evaluation.
"""
