"""Making sense of unlabelled images from their embeddings: near-duplicates, clusters, a 2-D map,
uniqueness, outliers and a diverse pick to label first. NumPy and faiss, torch-free (the runtime's
verbs dedup, cluster, map, select and outliers)."""
