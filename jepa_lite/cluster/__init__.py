"""Running on a cluster: what a long run needs to survive a preemption, a dead node or a second launch.

checkpoint (atomic, verified checkpoints), preempt (checkpoint-and-exit on a signal or a PREEMPT file),
runlock (one run per folder), run_folder (all three plugged into the core's one training loop as
`RunFolder`); protocols, feature_store, sgd_probe and protocol_eval run the paper's evaluation with every
process of a job.
"""
