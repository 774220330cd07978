"""The index's kinds and default settings, in one numpy-free place (the CLI's defaults read them)."""

from __future__ import annotations

KINDS = ("flat", "ivf", "hnsw")
DEFAULT_K = 5  # neighbours per query

# faiss approximate indexes (faiss_engines.py)
HNSW_M = 32  # links per node
EF_SEARCH = 64  # HNSW search breadth to start from; raised until TARGET_RECALL unless given
EF_CONSTRUCTION = 80
EF_SEARCH_LIMIT = 1024  # tuning stops here
TARGET_RECALL = 0.95  # recall@10 against exact search that tuning aims for
RECALL_QUERIES = 1000  # gallery items used as queries to measure recall
