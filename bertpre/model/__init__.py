"""Stage 3, the model: our encoder (`bert`), its Hugging Face parameter names (`hf_format`), the
Hugging Face directory format (`hf_directory`) and FLOP counts.
"""
