"""Stage 5, export: a pretraining checkpoint → a vanilla Hugging Face directory (`export`) with its
model card (`model_card`).
"""
