"""Image queries against a gallery (`invedge search`): `images.py` embeds the queries and searches any
`gallery.Gallery` (an index file or a Milvus collection); `grid.py` draws queries and their
neighbours into one picture.
"""
