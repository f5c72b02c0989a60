"""Stage 2, the data: raw documents → next-sentence pairs as sharded Arrow (`prepare`), and reading
them back for training: the dataset, its typed metadata, masking, batching and the resumable data
order.
"""
