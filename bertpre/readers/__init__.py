"""Reading what users bring: raw text corpora in any layout and format (text, JSONL, Parquet,
`datasets`, the built-in corpus), sentence splitting, and labelled tables for fine-tuning.
"""
