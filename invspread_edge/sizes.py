"""The range of image sizes the toolkit trains at, and draws views and previews at.

A leaf: the run's settings (`config`) and the augmentation text (`augment_spec`, whose `size=S`
takes the same range) both read it.
"""

from __future__ import annotations

MIN_IMAGE_SIZE = 8  # the smallest training size (three stride-2 stages leave 1 pixel)
# the largest side for training, views and previews: at 1024 px a two-view step of 128 images is
# already 3 GB of float32 input
MAX_IMAGE_SIZE = 1024
