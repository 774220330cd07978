"""Measuring embeddings against labels: the one protocol training, export and the benchmark share.

One job per module:
- `datasets.py`: the labelled image sets (Fashion-MNIST, folders of class folders) and the fixed rule
  that selects their images;
- `protocol.py`: the kNN and retrieval protocol (which images, k, T) and its metrics;
- `accuracy.py`: the numpy kernels (weighted kNN, Recall@K, NMI, cosine and top-1 agreement between
  two embeddings of the same images).
"""
