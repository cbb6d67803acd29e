"""The core: what one I-JEPA, MAE or invariant training step needs, and the probes that read what it learned.

Read in this order: masks (multi-block masks) and mask_strategies (the other maskings), collate (the `Batch`),
models (ViT encoder, predictor), ema, sigreg, methods (the losses; views, the augmentations that invariant
methods need and I-JEPA does not), schedules, then the plumbing of the one loop: config, build (config ->
parts), batches (the global batch), flops, steplog, train. features and evaluate turn a trained encoder into
probe accuracies; weights writes and reads it as safetensors. The core imports nothing from the lab, the
cluster layer or the drawings: a run kept in a folder plugs into the loop through `train.RunHooks`.
"""
