"""Commands that compose the stages: the end-to-end `quickstart`, run status and reports (`report`),
and the benchmark against transformers (`bench`).
"""
