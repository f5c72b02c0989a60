"""Stage 1, the tokenizer: WordPiece training from scratch (`train`) and reading, checking and copying
tokenizer directories (`files`).
"""
