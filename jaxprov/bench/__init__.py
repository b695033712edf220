"""Benchmarks that jaxprov builds and scores itself (`jaxprov bench ...`).

The reuse benchmark, one concept per module, each importing only those above it in this list:
  presets     what a run is: groups, reuse types, per-preset models, training stages, method configs
  protocol    a preset as a zoo recipe (jaxprov.training.recipe), and the ground truth of a pair
  scoring     every (reference, suspect) pair under every method, and its evidence against the null
  evaluation  AUC / TPR at 1 % FPR / correctness per reuse type, and the default verdict's fit on val
  report      the files of a run (reuse.json, reuse.md, ROC curves, heatmaps)
  reuse       `run`: build, score, fit, evaluate, write
"""
