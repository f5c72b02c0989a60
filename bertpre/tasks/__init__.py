"""Stage 6, downstream tasks: fine-tuning (`finetune`), prediction (`predict`), GLUE (`glue`),
comparisons over seeds and against random init (`comparison`) and the task metrics.
"""
