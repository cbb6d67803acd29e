"""The course's lab: the experiments built on the core, run in folders by the cluster layer.

experiments, grid and tables (the experiment grid, run and summarised), gap (why MAE leads here), pretrained
and retrain (the course checkpoints: loading them, training them again), decoder and blue_box (what the
predictor knows, drawn), collapse_lab (what keeps a JEPA from collapse, watched in a minute).
"""
