"""bertpre: a BERT pretraining pipeline (tokenizer → prepare → pretrain → export → finetune)."""

__version__ = "0.1.0"
