"""Stage 4, pretraining: the loop on Accelerate (`pretrain`), its checkpoints, optimizers and
schedules, devices and precision, FSDP sharding, preemption signals and the word-vector
initialisation.
"""
